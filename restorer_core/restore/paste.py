"""Pasting restored faces back into the original image without seams or colour shifts.

Per face, everything happens inside the region of the image the face's crop covers: the
restored crop is colour-corrected against the original crop, warped back with the inverse
alignment, and blended through a soft mask that is exactly 0 near the crop border. Faces are
composited one after another, each over the result of the previous ones, so overlaps blend
smoothly. Pixels no mask touches are returned bit-identical; alpha is never changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from ..faces.align import landmarks_in_crop, source_roi, template_landmarks, warp_affine
from .color import COLOR_FIX_MODES, apply_color_fix
from ..faces.records import AlignedFace
from ..io.imageio import dtype_max
from ..options import MASK_SHAPES as MASK_MODES

ParserFn = Callable[[np.ndarray], np.ndarray]  # [S, S, 3] float 0..1 -> [S, S] float 0..1
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601, as in PIL's "L"


@dataclass(frozen=True)
class PasteConfig:
    """How faces are blended back.

    mask: "landmarks" (ellipse fitted to the face's own eyes and mouth), "ellipse" (fixed
    ellipse on the template face) or "box" (the whole crop minus a border).
    erosion / feather: pixels of a 512 crop (scaled for other crop sizes) by which the mask
    is shrunk, then softened. color_fix: "wavelet" | "meanstd" | "none". strength: 0 keeps
    the original, 1 uses the restored face fully. parser: optional callable giving a face
    parsing mask [S, S] in 0..1 for the crop; it replaces the geometric shape.
    """

    mask: str = "landmarks"
    erosion: float = 8.0
    feather: float = 24.0
    color_fix: str = "wavelet"
    strength: float = 1.0
    parser: Optional[ParserFn] = None

    def __post_init__(self) -> None:
        if self.mask not in MASK_MODES:
            raise ValueError(f"mask must be one of {', '.join(MASK_MODES)}, got {self.mask!r}")
        if self.color_fix not in COLOR_FIX_MODES:
            raise ValueError(f"color_fix must be one of {', '.join(COLOR_FIX_MODES)}, got {self.color_fix!r}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in 0..1, got {self.strength}")
        if self.erosion < 0 or self.feather < 0:
            raise ValueError("erosion and feather must be >= 0 pixels")


# ----------------------------------------------------------------------------- masks


def _face_ellipse(landmarks: np.ndarray) -> tuple[tuple[float, float], tuple[float, float], float]:
    """(centre, semi-axes, angle in degrees) of an ellipse covering the face from 5 points."""
    eyes = (landmarks[0] + landmarks[1]) / 2.0
    mouth = (landmarks[3] + landmarks[4]) / 2.0
    eye_dist = float(np.linalg.norm(landmarks[1] - landmarks[0]))
    eye_mouth = float(np.linalg.norm(mouth - eyes))
    centre = eyes + 0.35 * (mouth - eyes)
    axes = (1.25 * eye_dist, 1.45 * eye_mouth)
    angle = float(np.degrees(np.arctan2(*(landmarks[1] - landmarks[0])[::-1])))
    return (float(centre[0]), float(centre[1])), axes, angle


def face_mask(
    crop_size: int,
    config: PasteConfig = PasteConfig(),
    landmarks_in_crop: Optional[np.ndarray] = None,
    crop: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Soft blend mask [S, S] float32 in 0..1, exactly 0 within `feather` px of the border.

    landmarks_in_crop: the face's 5 points in crop coordinates (mode "landmarks"; the template
    is used when missing). crop: the image given to config.parser, if one is set.
    """
    s = int(crop_size)
    unit = s / 512.0
    feather = int(round(config.feather * unit))
    erosion = config.erosion * unit
    if config.parser is not None:
        if crop is None:
            raise ValueError("a parser mask needs the crop image; pass crop=")
        shape = np.clip(np.asarray(config.parser(crop), dtype=np.float32), 0.0, 1.0)
        if shape.shape != (s, s):
            shape = cv2.resize(shape, (s, s), interpolation=cv2.INTER_LINEAR)
        if erosion >= 0.5:
            k = 2 * int(round(erosion)) + 1
            shape = cv2.erode(shape, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    else:
        shape = np.zeros((s, s), dtype=np.float32)
        if config.mask == "box":
            m = int(round(erosion))
            shape[m : s - m, m : s - m] = 1.0
        else:
            points = template_landmarks(s)
            if config.mask == "landmarks" and landmarks_in_crop is not None:
                points = np.asarray(landmarks_in_crop, dtype=np.float64).reshape(5, 2)
            centre, axes, angle = _face_ellipse(points)
            axes = (max(axes[0] - erosion, 1.0), max(axes[1] - erosion, 1.0))
            shift = 4  # sub-pixel precision for cv2.ellipse
            cv2.ellipse(
                shape,
                (int(round(centre[0] * 2**shift)), int(round(centre[1] * 2**shift))),
                (int(round(axes[0] * 2**shift)), int(round(axes[1] * 2**shift))),
                angle, 0, 360, 1.0, -1, cv2.LINE_AA, shift,
            )
    # Keep the soft edge inside the crop: the blur spreads `feather` px, so clear a frame of
    # 2 * feather + 1 px first; the outer `feather` + 1 pixels then stay exactly 0.
    frame = 2 * feather + 1
    shape[:frame] = 0.0
    shape[-frame:] = 0.0
    shape[:, :frame] = 0.0
    shape[:, -frame:] = 0.0
    if feather > 0:
        k = 2 * feather + 1
        shape = cv2.GaussianBlur(shape, (k, k), sigmaX=feather / 2.0, borderType=cv2.BORDER_CONSTANT)
    return np.clip(shape, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- paste


def _prepare_restored(face: AlignedFace, config: PasteConfig) -> np.ndarray:
    """Restored crop at the crop size, colour-fixed against the original crop, float32 RGB."""
    restored = np.asarray(face.restored, dtype=np.float32)
    if restored.ndim != 3 or restored.shape[2] != 3:
        raise ValueError(f"restored face must be [S, S, 3] float, got shape {restored.shape}")
    s = face.crop_size
    if restored.shape[:2] != (s, s):
        interp = cv2.INTER_AREA if restored.shape[0] > s else cv2.INTER_CUBIC
        restored = cv2.resize(restored, (s, s), interpolation=interp)
    restored = np.clip(restored, 0.0, 1.0)
    return apply_color_fix(restored, face.crop.astype(np.float32), config.color_fix).astype(np.float32)


def paste_faces(
    original_pixels: np.ndarray,
    faces: Sequence[AlignedFace],
    config: PasteConfig = PasteConfig(),
    inplace: bool = False,
    return_mask: bool = True,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Blend each face's `.restored` into the image.

    original_pixels: uint8/uint16/float32, HxW, HxWx1, HxWx3 or HxWx4 (alpha kept as is).
    Faces without `.restored`, and faces restored with strength 0 (info["strength"]: left exactly
    as they are, not even resampled), are skipped. Returns (pixels like the input, mask HxW float32:
    the combined blend weight 1 - prod(1 - w_i), or None when return_mask is False).
    inplace=True writes into original_pixels instead of a copy; with return_mask=False
    nothing image-sized is allocated at all (for very large photos).
    """
    image = np.asarray(original_pixels)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected HxW or HxWx(1|3|4) pixels, got shape {image.shape}")
    if inplace and not image.flags.writeable:
        raise ValueError("inplace paste needs a writeable array; pass inplace=False")
    peak = dtype_max(image.dtype)
    is_float = image.dtype.kind == "f"
    h, w = image.shape[:2]
    out = image if inplace else image.copy()
    total = np.zeros((h, w), dtype=np.float32) if return_mask else None
    for face in faces:
        if face.restored is None or face.info.get("strength") == 0.0:
            continue
        restored = _prepare_restored(face, config)
        s = face.crop_size
        weights = face_mask(s, config, landmarks_in_crop(face), crop=restored) * np.float32(config.strength)
        x0, y0, x1, y1 = source_roi(face.matrix, (s, s), (h, w))
        if x1 <= x0 or y1 <= y0:
            continue
        # crop -> ROI matrix: crop -> image, then shift by the ROI origin
        to_roi = face.inverse.copy()
        to_roi[:, 2] -= (x0, y0)
        size = (x1 - x0, y1 - y0)
        alpha = warp_affine(weights, to_roi, size, border="constant")
        if not np.any(alpha > 0):
            continue
        face_px = warp_affine(restored, to_roi, size, border="replicate")
        region = out[y0:y1, x0:x1]
        region_f = region.astype(np.float32) / np.float32(peak)
        a = alpha[..., None]
        if image.ndim == 2:
            blended = region_f * (1.0 - alpha) + (face_px @ _LUMA) * alpha
        elif image.shape[2] == 1:
            blended = region_f * (1.0 - a) + (face_px @ _LUMA)[..., None] * a
        else:
            blended = region_f.copy()
            blended[..., :3] = region_f[..., :3] * (1.0 - a) + face_px * a
        if is_float:
            new = blended.astype(image.dtype)
        else:
            new = np.clip(np.rint(blended * np.float32(peak)), 0, peak).astype(image.dtype)
        touched = alpha > 0
        if image.ndim == 3:
            touched3 = np.broadcast_to(touched[..., None], region.shape).copy()
            if image.shape[2] == 4:
                touched3[..., 3] = False  # alpha channel untouched
            np.copyto(region, new, where=touched3)
        else:
            np.copyto(region, new, where=touched)
        if total is not None:
            t = total[y0:y1, x0:x1]
            t[...] = 1.0 - (1.0 - t) * (1.0 - alpha)
    return out, total
