"""Face alignment geometry: the FFHQ 5-point template, similarity fits and warps.

Pure functions. A face is aligned by the least-squares similarity (rotation, uniform scale,
translation; never a reflection) that carries its five detected landmarks onto the FFHQ
template, the same template GFPGAN/CodeFormer/facexlib use, so crops match what face
restoration models were trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from .records import AlignedFace, DetectedFace
from ..io.imageio import to_float01

# Landmarks of the FFHQ-aligned 512x512 face (facexlib/GFPGAN constants), in the detector order:
# image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)

_BORDERS = {
    "replicate": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT_101,
    "constant": cv2.BORDER_CONSTANT,
}


def template_landmarks(crop_size: int) -> np.ndarray:
    """The FFHQ template scaled to a crop of crop_size pixels: [5, 2] float64."""
    if crop_size < 8:
        raise ValueError(f"crop_size must be at least 8 px, got {crop_size}")
    return FFHQ_TEMPLATE_512 * (crop_size / 512.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991, reflection excluded) mapping src -> dst.

    src, dst: [N, 2] points (N >= 2). Returns the 2x3 matrix [s R | t].
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need matching [N>=2, 2] point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mu_s, dst - mu_d
    var_s = (src_c**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("source points are all identical; cannot fit a similarity transform")
    cov = dst_c.T @ src_c / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0  # best proper rotation instead of a reflection
    rot = u @ np.diag(d) @ vt
    scale = float((sigma * d).sum() / var_s)
    trans = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, trans[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def compose_affine(first: np.ndarray, then: np.ndarray) -> np.ndarray:
    """2x3 matrix applying `first`, then `then`."""
    a = np.vstack([np.asarray(first, dtype=np.float64), [0, 0, 1]])
    b = np.vstack([np.asarray(then, dtype=np.float64), [0, 0, 1]])
    return (b @ a)[:2]


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to [N, 2] points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def affine_scale(matrix: np.ndarray) -> float:
    """Linear magnification of a similarity/affine matrix (sqrt of |det|)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, dtype=np.float64)[:, :2]))))


def alignment_matrices(landmarks: np.ndarray, crop_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(image -> crop, crop -> image) 2x3 matrices for a face's 5 landmarks."""
    matrix = similarity_transform(landmarks, template_landmarks(crop_size))
    return matrix, invert_affine(matrix)


def _preimage_box(
    matrix: np.ndarray, out_size: tuple[int, int], margin: int
) -> tuple[int, int, int, int]:
    """Unclipped integer box (x0, y0, x1, y1) of the source points a warp into out_size reads."""
    w, h = out_size
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64) - 0.5
    pts = transform_points(corners, invert_affine(matrix))
    return (
        int(np.floor(pts[:, 0].min())) - margin,
        int(np.floor(pts[:, 1].min())) - margin,
        int(np.ceil(pts[:, 0].max())) + margin + 1,
        int(np.ceil(pts[:, 1].max())) + margin + 1,
    )


def source_roi(
    matrix: np.ndarray, out_size: tuple[int, int], src_shape: tuple[int, int], margin: int = 2
) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1), clipped to a source of shape (h, w), of the source pixels
    that a warp with `matrix` (source -> output) into out_size = (w, h) can read."""
    x0, y0, x1, y1 = _preimage_box(matrix, out_size, margin)
    sh, sw = src_shape
    return max(0, x0), max(0, y0), min(sw, x1), min(sh, y1)


def _reflect_safe_roi(
    roi: tuple[int, int, int, int], wanted: tuple[int, int, int, int], shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Grow a clipped ROI so that mirrored reads past the image edge stay inside it."""
    x0, y0, x1, y1 = roi
    wx0, wy0, wx1, wy1 = wanted
    h, w = shape
    if wx0 < 0:
        x1 = max(x1, min(w, -wx0 + 2))
    if wx1 > w:
        x0 = min(x0, max(0, 2 * w - wx1 - 2))
    if wy0 < 0:
        y1 = max(y1, min(h, -wy0 + 2))
    if wy1 > h:
        y0 = min(y0, max(0, 2 * h - wy1 - 2))
    return x0, y0, x1, y1


@dataclass(frozen=True)
class WarpPlan:
    """How a warp reads its source: the source box (x0, y0, x1, y1) it cuts, the size
    (width, height) that box is area-shrunk to first (None: not shrunk) and the 2x3 matrix
    from the (shrunk) box to the output. The CPU and torch warps both follow it."""

    box: tuple
    shrink_to: Optional[tuple]
    local: np.ndarray


def warp_plan(matrix: np.ndarray, out_size: tuple[int, int], src_shape: tuple[int, int],
              border: str = "replicate", antialias: bool = True) -> WarpPlan:
    """The WarpPlan of a source -> output warp into out_size = (w, h) from a source of shape (h, w).

    Only the source region the output can see is read, so a crop from a 12000 px photo costs
    the same as from a small one. When the warp shrinks by more than 2x and antialias is on,
    that region is area-resized first, so fine detail averages instead of aliasing.
    """
    if border not in _BORDERS:
        raise ValueError(f"border must be one of {sorted(_BORDERS)}, got {border!r}")
    matrix = np.asarray(matrix, dtype=np.float64)
    h, w = src_shape
    roi = source_roi(matrix, out_size, (h, w))
    if border == "reflect":
        roi = _reflect_safe_roi(roi, _preimage_box(matrix, out_size, 2), (h, w))
    x0, y0, x1, y1 = roi
    if x1 <= x0 or y1 <= y0:  # the output sees only border: any 1-pixel source will do
        x0, y0, x1, y1 = 0, 0, min(1, w), min(1, h)
    local = compose_affine(np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]]), matrix)
    shrink_to = None
    if antialias and affine_scale(local) < 0.5:
        factor = affine_scale(local) * 1.5  # keep some oversampling for the final warp
        bw, bh = x1 - x0, y1 - y0
        new_w, new_h = max(1, int(round(bw * factor))), max(1, int(round(bh * factor)))
        sx, sy = new_w / bw, new_h / bh
        # pixel centres: x_small = (x + 0.5) * sx - 0.5
        to_small = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
        local = compose_affine(invert_affine(to_small), local)
        shrink_to = (new_w, new_h)
    return WarpPlan((x0, y0, x1, y1), shrink_to, local)


def warp_affine(
    image: np.ndarray,
    matrix: np.ndarray,
    out_size: tuple[int, int],
    border: str = "replicate",
    antialias: bool = True,
    border_value: float = 0.0,
) -> np.ndarray:
    """Warp image (uint8/uint16/float; HxW or HxWx1/3/4) with a source -> output 2x3 matrix
    (OpenCV, bilinear; see warp_plan for what is read). out_size is (width, height); dtype and
    channel count are kept. restorer_core.faces.warp_torch.warp_affine is the same warp on tensors."""
    if image.dtype.kind == "f" and image.dtype != np.float32:
        image = image.astype(np.float32)
    squeeze = image.ndim == 3 and image.shape[2] == 1
    if squeeze:
        image = image[..., 0]
    plan = warp_plan(matrix, out_size, image.shape[:2], border, antialias)
    x0, y0, x1, y1 = plan.box
    src = image[y0:y1, x0:x1]
    if plan.shrink_to is not None:
        src = cv2.resize(src, plan.shrink_to, interpolation=cv2.INTER_AREA)
    channels = 1 if src.ndim == 2 else src.shape[2]
    out = cv2.warpAffine(
        np.ascontiguousarray(src),
        plan.local,
        (int(out_size[0]), int(out_size[1])),
        flags=cv2.INTER_LINEAR,
        borderMode=_BORDERS[border],
        borderValue=(border_value,) * channels,
    )
    if squeeze:
        out = out[..., None]
    return out


def warp_to_crop(
    image: np.ndarray, matrix: np.ndarray, size: int, border: str = "replicate",
    antialias: bool = True,
) -> np.ndarray:
    """Cut the size x size aligned crop out of image with an image -> crop matrix."""
    return warp_affine(image, matrix, (size, size), border=border, antialias=antialias)


def align_face(
    image_rgb: np.ndarray,
    detection: DetectedFace,
    crop_size: int = 512,
    image_index: int = 0,
    face_index: int = 0,
    border: str = "replicate",
) -> AlignedFace:
    """Warp one detected face onto the template; crop is float32 RGB 0..1, [S, S, 3]."""
    if image_rgb.ndim == 3 and image_rgb.shape[2] == 4:
        image_rgb = image_rgb[..., :3]
    matrix, inverse = alignment_matrices(detection.landmarks, crop_size)
    crop = warp_to_crop(image_rgb, matrix, crop_size, border=border)
    if crop.ndim == 2:
        crop = np.repeat(crop[..., None], 3, axis=2)
    elif crop.shape[2] == 1:
        crop = np.repeat(crop, 3, axis=2)
    return AlignedFace(
        crop=to_float01(crop),
        matrix=matrix.astype(np.float64),
        inverse=inverse.astype(np.float64),
        detection=detection,
        image_index=image_index,
        face_index=face_index,
    )


def landmarks_in_crop(face: AlignedFace) -> np.ndarray:
    """The face's detected landmarks in its crop's coordinates."""
    return transform_points(face.landmarks, face.matrix)

