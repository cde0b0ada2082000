"""The soft blend mask a restored face is pasted back through, and how pasting is configured.

The mask is a hard shape at crop size (an ellipse fitted to the face, a fixed ellipse, a box, or
a face parser's output), cleared near the crop border and softened by a Gaussian feather, so
that it is exactly 0 within `feather` px of the border.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import cv2
import numpy as np
import torch

from ..faces.align import template_landmarks
from ..faces.warp_torch import gaussian_blur
from ..options import COLOR_FIXES as COLOR_FIX_MODES
from ..options import MASK_SHAPES as MASK_MODES

ParserFn = Callable[[np.ndarray], np.ndarray]  # [S, S, 3] float 0..1 -> [S, S] float 0..1


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


def mask_shape(
    crop_size: int,
    config: PasteConfig = PasteConfig(),
    landmarks_in_crop: Optional[np.ndarray] = None,
    crop: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, int]:
    """(hard blend shape [S, S] float32 in 0..1, feather px): what face_mask softens.

    The shape is cleared within 2 * feather + 1 px of the border, so that the blur (which
    spreads `feather` px) leaves the outer feather + 1 pixels exactly 0. landmarks_in_crop: the
    face's 5 points in crop coordinates (mode "landmarks"; the template is used when missing).
    crop: the image given to config.parser, if one is set.
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
    frame = 2 * feather + 1
    shape[:frame] = 0.0
    shape[-frame:] = 0.0
    shape[:, :frame] = 0.0
    shape[:, -frame:] = 0.0
    return shape, feather


def feather_mask(shape: torch.Tensor, feather: int) -> torch.Tensor:
    """A hard shape [S, S] (tensor, any device) softened by a Gaussian of `feather` px
    (kernel 2 * feather + 1, sigma feather / 2, zero border), clipped to 0..1."""
    if feather > 0:
        shape = gaussian_blur(shape, 2 * feather + 1, feather / 2.0)
    return shape.clamp(0.0, 1.0)


def face_mask(
    crop_size: int,
    config: PasteConfig = PasteConfig(),
    landmarks_in_crop: Optional[np.ndarray] = None,
    crop: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Soft blend mask [S, S] float32 in 0..1, exactly 0 within `feather` px of the border
    (mask_shape, then feather_mask; see both)."""
    shape, feather = mask_shape(crop_size, config, landmarks_in_crop, crop)
    return feather_mask(torch.from_numpy(shape), feather).numpy()
