"""Geometry from the project's FFHQ-aligned crops to the ArcFace 112x112 recognition framing.

Recognition networks trained on InsightFace data (MS1M, `faces_ms1m_112x112`) see faces
aligned to the ArcFace 5-point template at 112 px. The project aligns to the FFHQ template
(restorer_core.faces.align). One fixed similarity, the least-squares fit from the FFHQ template to the
ArcFace template, maps a crop of any size to the 112 px input; it is applied with
F.affine_grid + F.grid_sample so gradients flow back to the crop.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..faces.align import compose_affine, invert_affine, similarity_transform, template_landmarks

# InsightFace's 112x112 template (arcface_torch / insightface.utils.face_align), detector order:
# image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def ffhq_to_arcface_matrix(crop_size: int, out_size: int = 112) -> np.ndarray:
    """2x3 matrix: pixel coordinates of an FFHQ-aligned crop_size crop -> the ArcFace out_size crop."""
    return similarity_transform(template_landmarks(crop_size), ARCFACE_TEMPLATE_112 * (out_size / 112.0))


def prescale_size(crop_size: int, out_size: int = 112) -> int:
    """Size to area-resize a large crop to first, so the final warp magnifies by ~1 (no aliasing).

    The warp shrinks an FFHQ crop by ~3.6x at 512 px; bilinear sampling alone would alias.
    Crops at or below 1.5x the 1:1 size are warped directly.
    """
    scale = float(np.sqrt(abs(np.linalg.det(ffhq_to_arcface_matrix(crop_size, out_size)[:, :2]))))
    one_to_one = int(round(crop_size * scale))
    return one_to_one if crop_size > 1.5 * one_to_one else crop_size


def affine_theta(matrix: np.ndarray, in_size: int, out_size: int) -> np.ndarray:
    """F.affine_grid theta (align_corners=False) for a source -> output pixel matrix.

    Pixel centres sit at integer coordinates (cv2.warpAffine's convention, as in faces/align.py);
    normalised coordinates u = (2 p + 1) / size - 1.
    """
    inv = np.vstack([invert_affine(matrix), [0.0, 0.0, 1.0]])  # output pixel -> source pixel
    to_pix = np.array([[out_size / 2.0, 0, out_size / 2.0 - 0.5], [0, out_size / 2.0, out_size / 2.0 - 0.5], [0, 0, 1]])
    to_norm = np.array([[2.0 / in_size, 0, 1.0 / in_size - 1], [0, 2.0 / in_size, 1.0 / in_size - 1], [0, 0, 1]])
    return (to_norm @ inv @ to_pix)[:2]


def warp_ffhq_to_arcface(crops: torch.Tensor, out_size: int = 112) -> torch.Tensor:
    """FFHQ-aligned crops [B, C, S, S] -> ArcFace-aligned [B, C, out_size, out_size], differentiable.

    Border pixels are replicated (the ArcFace framing reaches slightly outside small FFHQ crops).
    """
    if crops.ndim != 4 or crops.shape[-1] != crops.shape[-2]:
        raise ValueError(f"expected square crops [B, C, S, S], got {tuple(crops.shape)}")
    size = int(crops.shape[-1])
    matrix = ffhq_to_arcface_matrix(size, out_size)
    target = prescale_size(size, out_size)
    if target != size:
        crops = F.interpolate(crops, size=(target, target), mode="bilinear", align_corners=False, antialias=True)
        r = target / size  # pixel centres: q = (p + 0.5) * r - 0.5
        matrix = compose_affine(invert_affine(np.array([[r, 0.0, 0.5 * r - 0.5], [0.0, r, 0.5 * r - 0.5]])), matrix)
        size = target
    theta = torch.as_tensor(affine_theta(matrix, size, out_size), dtype=crops.dtype, device=crops.device)
    grid = F.affine_grid(theta.expand(crops.shape[0], 2, 3), [crops.shape[0], crops.shape[1], out_size, out_size],
                         align_corners=False)
    return F.grid_sample(crops, grid, mode="bilinear", padding_mode="border", align_corners=False)
