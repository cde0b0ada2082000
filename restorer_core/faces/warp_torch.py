"""The CPU path's OpenCV resampling as torch ops, on whatever device the tensors are on.

Same functions, same conventions (pixel centres at integer coordinates), so the pipeline runs
them where the restorer is and gets the CPU path's pixels within float rounding:

* `warp_affine`: cv2.warpAffine with INTER_LINEAR, through the same WarpPlan as
  restorer_core.faces.align.warp_affine (source box, area pre-shrink, matrix), sampling at the
  exact source point as OpenCV 5 does for float images; borders "replicate",
  "reflect" (OpenCV's REFLECT_101) and "constant" are applied per tap, as OpenCV does.
* `resize`: cv2.resize INTER_AREA (shrinking) / INTER_CUBIC (growing, a = -0.75, replicated
  border) as two small weight matrices, one per axis.
* `gaussian_blur`: cv2.GaussianBlur with cv2.getGaussianKernel's taps, zero border.

Images are float tensors [C, H, W] (or [B, C, H, W] for resize and blur).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch

from .align import invert_affine, warp_plan

_CUBIC_A = -0.75  # OpenCV's bicubic coefficient


# ----------------------------------------------------------------------------- resize


@lru_cache(maxsize=64)
def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of cv2.resize INTER_AREA shrinking n_in samples to n_out: each output
    averages the input cells it overlaps, by overlap."""
    if n_out > n_in:
        raise ValueError(f"area weights shrink; got {n_in} -> {n_out}")
    scale = n_in / n_out
    lo = np.arange(n_out)[:, None] * scale
    hi = np.minimum(lo + scale, n_in)
    cells = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def _cubic_taps(t: np.ndarray) -> np.ndarray:
    """OpenCV's 4 cubic coefficients for fractional positions t: [N] -> [N, 4]."""
    a = _CUBIC_A
    c0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    c1 = ((a + 2) * t - (a + 3)) * t * t + 1
    c2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return np.stack([c0, c1, c2, 1.0 - c0 - c1 - c2], axis=1)


@lru_cache(maxsize=64)
def cubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of cv2.resize INTER_CUBIC from n_in samples to n_out (taps past the
    edge read the edge sample)."""
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(pos)
    taps = _cubic_taps(pos - base)
    out = np.zeros((n_out, n_in))
    rows = np.repeat(np.arange(n_out), 4)
    cols = np.clip(base[:, None].astype(np.int64) + np.arange(-1, 3)[None, :], 0, n_in - 1).ravel()
    np.add.at(out, (rows, cols), taps.ravel())
    return out


def resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """The weight matrix resize uses along one axis: area when shrinking, cubic when growing."""
    if n_in == n_out:
        return np.eye(n_in)
    return area_weights(n_in, n_out) if n_in > n_out else cubic_weights(n_in, n_out)


_WEIGHTS = {"area": area_weights, "cubic": cubic_weights, "auto": resize_weights}


@lru_cache(maxsize=64)
def _on_device(make, args: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """make(*args) (a weight matrix) as a tensor on device, made and uploaded once."""
    return torch.as_tensor(make(*args), dtype=dtype, device=device)


def _axis_weights(n_in: int, n_out: int, mode: str, like: torch.Tensor) -> torch.Tensor:
    if mode not in _WEIGHTS:
        raise ValueError(f"resize mode must be area, cubic or auto, got {mode!r}")
    return _on_device(_WEIGHTS[mode], (n_in, n_out), like.device, like.dtype)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "auto") -> torch.Tensor:
    """[..., H, W] float -> [..., h, w] for size = (h, w): cv2.resize with INTER_AREA ("area"),
    INTER_CUBIC ("cubic"), or area when shrinking and cubic when growing ("auto", per axis)."""
    h, w = int(size[0]), int(size[1])
    if x.shape[-2:] == (h, w):
        return x
    wy = _axis_weights(x.shape[-2], h, mode, x)
    wx = _axis_weights(x.shape[-1], w, mode, x)
    return torch.matmul(torch.matmul(wy, x), wx.transpose(0, 1))


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """[..., S, S] float -> [..., size, size] clipped to 0..1, as pipeline.resize_square does
    (area when shrinking, cubic when growing)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return resize(x, (size, size)).clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------- blur


@lru_cache(maxsize=32)
def _gaussian_taps(ksize: int, sigma: float) -> np.ndarray:
    return cv2.getGaussianKernel(ksize, sigma).ravel()


@lru_cache(maxsize=32)
def _blur_band(n: int, ksize: int, sigma: float) -> np.ndarray:
    """[n, n] banded matrix of a 1-D Gaussian blur with a zero border."""
    taps = _gaussian_taps(ksize, sigma)
    r = ksize // 2
    out = np.zeros((n, n))
    for k, t in enumerate(taps):
        out += t * np.eye(n, k=k - r)
    return out


def gaussian_blur(x: torch.Tensor, ksize: int, sigma: float) -> torch.Tensor:
    """cv2.GaussianBlur(x, (ksize, ksize), sigma) with a zero border, [..., H, W] float; two
    banded matrix products (fast on a GPU and on the CPU alike for crop-sized images)."""
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"ksize must be odd and positive, got {ksize}")
    h, w = x.shape[-2:]
    by = _on_device(_blur_band, (h, ksize, float(sigma)), x.device, x.dtype)
    bx = _on_device(_blur_band, (w, ksize, float(sigma)), x.device, x.dtype)
    return torch.matmul(torch.matmul(by, x), bx.transpose(0, 1))


# ----------------------------------------------------------------------------- warp


_PADDING = {"replicate": "border", "reflect": "reflection", "constant": "zeros"}


def _sample_grid(matrix: np.ndarray, out_w: int, out_h: int, src_w: int, src_h: int,
                 device: torch.device) -> torch.Tensor:
    """grid_sample's grid [1, h, w, 2] float64 for align_corners=True (-1 and 1 are the centres of the
    first and last source pixels): the source point of every output pixel centre, as OpenCV 5
    computes it for float images. One affine_grid of the map composed on the host in float64:
    output grid (affine_grid's pixel-centre one, defined for one-pixel outputs too) -> output pixels
    -> source pixels -> source grid."""
    to_pixels = np.array([[out_w / 2.0, 0.0, (out_w - 1) / 2.0],
                          [0.0, out_h / 2.0, (out_h - 1) / 2.0], [0.0, 0.0, 1.0]])
    to_grid = np.array([[2.0 / (src_w - 1), 0.0, -1.0], [0.0, 2.0 / (src_h - 1), -1.0], [0.0, 0.0, 1.0]])
    inverse = np.vstack([invert_affine(matrix), [0.0, 0.0, 1.0]])  # output pixels -> source pixels
    theta = torch.as_tensor((to_grid @ inverse @ to_pixels)[None, :2], dtype=torch.float64, device=device)
    return torch.nn.functional.affine_grid(theta, [1, 1, out_h, out_w], align_corners=False)


def _bilinear(src: torch.Tensor, matrix: np.ndarray, out_w: int, out_h: int, border: str,
              border_value: float) -> torch.Tensor:
    """cv2.warpAffine(src, matrix, (out_w, out_h), INTER_LINEAR, border) of [C, H, W] float, in one
    grid_sample in float64. Its padding modes match OpenCV's borders per tap with corner-aligned
    coordinates: "border" is REPLICATE, "reflection" is REFLECT_101, "zeros" is CONSTANT 0 (a
    constant v is sampled as zeros around src - v, plus v). A source one pixel wide or high gets
    a second column / row (a copy, or the border value) so that the coordinates are defined."""
    if border not in _PADDING:
        raise ValueError(f"border must be one of {', '.join(_PADDING)}, got {border!r}")
    x = src.to(torch.float64)
    if border == "constant" and border_value:
        x = x - border_value
    for dim in (1, 2):
        if x.shape[dim] == 1:  # the second sample sits where OpenCV's outside tap would read
            x = torch.cat([x, x if border != "constant" else torch.zeros_like(x)], dim=dim)
    grid = _sample_grid(matrix, out_w, out_h, x.shape[2], x.shape[1], x.device)
    out = torch.nn.functional.grid_sample(x[None], grid, mode="bilinear", padding_mode=_PADDING[border],
                                          align_corners=True)[0]
    if border == "constant" and border_value:
        out = out + border_value
    return out.to(src.dtype)


def warp_affine(image: torch.Tensor, matrix: np.ndarray, out_size: tuple[int, int], border: str = "replicate",
                antialias: bool = True, border_value: float = 0.0) -> torch.Tensor:
    """Warp a [C, H, W] float tensor with a source -> output 2x3 matrix into out_size = (w, h):
    restorer_core.faces.align.warp_affine on a tensor (float result, not rounded to the source's
    integer type)."""
    if image.dim() != 3:
        raise ValueError(f"expected a [C, H, W] tensor, got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        image = image.float()
    plan = warp_plan(matrix, out_size, tuple(image.shape[1:]), border, antialias)
    x0, y0, x1, y1 = plan.box
    src = image[:, y0:y1, x0:x1]
    if plan.shrink_to is not None:
        new_w, new_h = plan.shrink_to
        src = resize(src, (new_h, new_w), "area")
    return _bilinear(src, plan.local, int(out_size[0]), int(out_size[1]), border, border_value)
