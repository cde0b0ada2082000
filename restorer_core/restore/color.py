"""Colour correction of a restored face against the original crop.

Wavelet fix (as in StableSR/OSDFace post-processing): split both images into high and low
frequencies with a stack of dilated 3x3 binomial blurs (dilation 1, 2, 4, 8, 16, replicate
border); keep the restored image's high frequencies (detail) and the original's low
frequencies (colour and shading). Mean/std transfer matches per-channel statistics instead.

numpy arrays are HxWxC (or HxW) float; torch tensors are [B, C, H, W] or [C, H, W].
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from ..options import COLOR_FIXES as COLOR_FIX_MODES

_BINOMIAL = (0.25, 0.5, 0.25)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


# ----------------------------------------------------------------------------- numpy


def _dilated_kernel(radius: int) -> np.ndarray:
    k = np.zeros(2 * radius + 1, dtype=np.float32)
    k[0], k[radius], k[2 * radius] = _BINOMIAL
    return k


def wavelet_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """3x3 binomial blur with taps `radius` pixels apart, replicate border (numpy)."""
    k = _dilated_kernel(radius)
    return cv2.sepFilter2D(
        np.asarray(image, dtype=np.float32), -1, k, k, borderType=cv2.BORDER_REPLICATE
    )


def wavelet_decompose(image: np.ndarray, levels: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) with high + low == image; low is the image after `levels` blurs."""
    low = np.asarray(image, dtype=np.float32)
    high = np.zeros_like(low)
    for level in range(levels):
        blurred = wavelet_blur(low, 2**level)
        if blurred.ndim < low.ndim:  # cv2 drops a trailing singleton channel
            blurred = blurred.reshape(low.shape)
        high += low - blurred
        low = blurred
    return high, low


def _meanstd_np(restored: np.ndarray, original: np.ndarray, eps: float) -> np.ndarray:
    axes = (0, 1)
    r = restored.astype(np.float32)
    o = original.astype(np.float32)
    r_mean, r_std = r.mean(axis=axes, keepdims=True), r.std(axis=axes, keepdims=True)
    o_mean, o_std = o.mean(axis=axes, keepdims=True), o.std(axis=axes, keepdims=True)
    return (r - r_mean) / (r_std + eps) * o_std + o_mean


# ----------------------------------------------------------------------------- torch


def _binomial_blur_shifted(x: Any, radius: int) -> Any:
    """wavelet_blur on a [B, C, H, W] tensor as shifted sums of the replicate-padded image (the
    cheaper form on the CPU)."""
    import torch.nn.functional as F

    r = radius
    k0, k1, k2 = _BINOMIAL
    p = F.pad(x, (r, r, r, r), mode="replicate")
    h, w = x.shape[-2:]
    rows = k0 * p[..., : h, :] + k1 * p[..., r : r + h, :] + k2 * p[..., 2 * r : 2 * r + h, :]
    return k0 * rows[..., : w] + k1 * rows[..., r : r + w] + k2 * rows[..., 2 * r : 2 * r + w]


def _binomial_blur_conv(x: Any, radius: int) -> Any:
    """wavelet_blur on a [B, C, H, W] tensor as one dilated depthwise 3x3 convolution of the
    replicate-padded image: two operations (kernel launches on a GPU) instead of eleven
    (benchmarks/results/paste_ops_cpu.md); the form for a GPU, where the paste thread's launches
    hold the interpreter lock."""
    import torch.nn.functional as F

    c, r = x.shape[1], radius
    kernel = _binomial_kernel(x.device, x.dtype, c)
    return F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), kernel, dilation=r, groups=c)


@lru_cache(maxsize=32)
def _binomial_kernel(device: Any, dtype: Any, channels: int) -> Any:
    """The [C, 1, 3, 3] binomial kernel on a device, made once (a fresh copy to the GPU per blur
    would wait for it)."""
    import torch

    taps = torch.tensor(_BINOMIAL, dtype=dtype)
    return (taps[:, None] * taps[None, :]).expand(channels, 1, 3, 3).contiguous().to(device)


def _binomial_blur_torch(x: Any, radius: int) -> Any:
    """wavelet_blur on a [B, C, H, W] tensor: shifted sums on the CPU, a convolution elsewhere."""
    blur = _binomial_blur_shifted if x.device.type == "cpu" else _binomial_blur_conv
    return blur(x, radius)


def _wavelet_low_torch(image: Any, levels: int) -> Any:
    """The low-frequency part of wavelet_decompose on a tensor ([C, H, W] or [B, C, H, W]): the
    image blurred by every level in turn (the high part is not needed here)."""
    low = image[None] if image.dim() == 3 else image
    for level in range(levels):
        low = _binomial_blur_torch(low, 2**level)
    return low[0] if image.dim() == 3 else low


def _meanstd_torch(restored: Any, original: Any, eps: float) -> Any:
    dims = (-2, -1)
    r_mean = restored.mean(dim=dims, keepdim=True)
    r_std = restored.std(dim=dims, keepdim=True, unbiased=False)
    o_mean = original.mean(dim=dims, keepdim=True)
    o_std = original.std(dim=dims, keepdim=True, unbiased=False)
    return (restored - r_mean) / (r_std + eps) * o_std + o_mean


# ----------------------------------------------------------------------------- public


def wavelet_color_fix(restored: Any, original: Any, levels: int = 5, clip: bool = True) -> Any:
    """Detail of `restored` with the colour/shading (low frequencies) of `original`."""
    if restored.shape != original.shape:
        raise ValueError(
            f"shape mismatch: restored {tuple(restored.shape)} vs original {tuple(original.shape)}"
        )
    if _is_torch(restored):
        # the blur stack is linear: high(r) + low(o) = r + low(o - r), one decomposition for two
        low = _wavelet_low_torch(original.to(restored.dtype) - restored, levels)
        out = restored + low
        return out.clamp(0.0, 1.0) if clip else out
    high, _ = wavelet_decompose(restored, levels)
    _, low = wavelet_decompose(original, levels)
    out = high + low
    return np.clip(out, 0.0, 1.0) if clip else out


def meanstd_color_fix(restored: Any, original: Any, eps: float = 1e-5, clip: bool = True) -> Any:
    """Per-channel mean/std of `restored` matched to `original` (AdaIN on pixels)."""
    if _is_torch(restored):
        out = _meanstd_torch(restored, original.to(restored.dtype), eps)
        return out.clamp(0.0, 1.0) if clip else out
    out = _meanstd_np(np.asarray(restored), np.asarray(original), eps)
    return np.clip(out, 0.0, 1.0) if clip else out


def apply_color_fix(restored: Any, original: Any, mode: str = "wavelet") -> Any:
    """Dispatch on mode: "wavelet" | "meanstd" | "none"."""
    if mode == "wavelet":
        return wavelet_color_fix(restored, original)
    if mode == "meanstd":
        return meanstd_color_fix(restored, original)
    if mode == "none":
        return restored
    raise ValueError(f"color_fix must be one of {', '.join(COLOR_FIX_MODES)}, got {mode!r}")
