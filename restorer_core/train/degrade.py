"""Synthetic degradation for blind face restoration training (first-order, Real-ESRGAN/GFPGAN style).

A clean face crop goes through blur (isotropic / anisotropic Gaussian or motion), downsampling
by x2..x16, Gaussian and Poisson noise and JPEG, in a mostly canonical but sometimes shuffled
order, and is resized back to its input size. Every random choice comes from the caller's
``numpy.random.Generator``, so a seed reproduces the exact same output.

Pixel sizes in the config (blur sigmas, motion lengths) are given for a ``base_size`` image
and scaled with the actual image size, so one config serves 128 px and 512 px crops alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

_INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
}


@dataclass(frozen=True)
class DegradationConfig:
    """Ranges and probabilities of every degradation step (all ranges inclusive, low..high)."""

    base_size: int = 128  # sizes below are pixels of a base_size image
    # blur
    blur_prob: float = 0.9
    motion_prob: float = 0.1  # share of blurs that are motion blur
    anisotropic_prob: float = 0.3  # share of Gaussian blurs that are anisotropic
    blur_sigma: tuple[float, float] = (0.2, 2.5)
    motion_length: tuple[float, float] = (2.0, 8.0)
    # downsampling (scale factor sampled log-uniformly)
    downsample_prob: float = 1.0
    scale: tuple[float, float] = (2.0, 16.0)
    down_interpolations: tuple[str, ...] = ("area", "linear", "cubic")
    up_interpolations: tuple[str, ...] = ("linear", "cubic")
    # noise (values in 0..255 units)
    gaussian_noise_prob: float = 0.5
    gaussian_sigma: tuple[float, float] = (1.0, 12.0)
    gray_noise_prob: float = 0.3
    poisson_noise_prob: float = 0.25
    poisson_scale: tuple[float, float] = (0.05, 1.0)
    # JPEG
    jpeg_prob: float = 0.9
    jpeg_quality: tuple[int, int] = (30, 95)
    # order: canonical blur -> down -> noise -> jpeg, shuffled with this probability
    shuffle_prob: float = 0.2


def _to_float(img: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return float32 RGB in 0..1 and whether the input was uint8."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"degrade expects an [H, W, 3] RGB image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0, True
    return np.clip(img.astype(np.float32), 0.0, 1.0), False


def _from_float(img: np.ndarray, as_uint8: bool) -> np.ndarray:
    img = np.clip(img, 0.0, 1.0)
    if as_uint8:
        return np.round(img * 255.0).astype(np.uint8)
    return img.astype(np.float32)


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


# ----------------------------------------------------------------------------- kernels


def gaussian_kernel(sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """Normalised 2D Gaussian kernel with principal axes rotated by ``theta`` radians."""
    sigma_x, sigma_y = max(sigma_x, 1e-3), max(sigma_y, 1e-3)
    radius = int(math.ceil(3.0 * max(sigma_x, sigma_y)))
    radius = max(1, min(radius, 20))
    ax = np.arange(-radius, radius + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).astype(np.float32)


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """Normalised line kernel of ``length`` pixels at ``angle`` radians (anti-aliased)."""
    radius = max(1, int(math.ceil(length / 2.0)))
    size = 2 * radius + 1
    dx, dy = math.cos(angle) * length / 2.0, math.sin(angle) * length / 2.0
    # draw with 8x supersampling for a sub-pixel accurate line
    scale = 8
    big = np.zeros((size * scale, size * scale), np.float32)
    centre = (size * scale) / 2.0
    p0 = (int(round(centre - dx * scale)), int(round(centre - dy * scale)))
    p1 = (int(round(centre + dx * scale)), int(round(centre + dy * scale)))
    cv2.line(big, p0, p1, 1.0, thickness=scale, lineType=cv2.LINE_AA)
    k = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    total = float(k.sum())
    if total <= 0:
        k[radius, radius] = 1.0
        total = 1.0
    return k / total


# ----------------------------------------------------------------------------- steps


def _apply_blur(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig, px: float, info: dict) -> np.ndarray:
    if rng.random() < cfg.motion_prob:
        length = rng.uniform(*cfg.motion_length) * px
        angle = rng.uniform(0.0, math.pi)
        kernel = motion_kernel(length, angle)
        info["blur"] = ("motion", round(length, 3), round(angle, 3))
    elif rng.random() < cfg.anisotropic_prob:
        sx = rng.uniform(*cfg.blur_sigma) * px
        sy = rng.uniform(*cfg.blur_sigma) * px
        theta = rng.uniform(0.0, math.pi)
        kernel = gaussian_kernel(sx, sy, theta)
        info["blur"] = ("anisotropic", round(sx, 3), round(sy, 3), round(theta, 3))
    else:
        sigma = rng.uniform(*cfg.blur_sigma) * px
        kernel = gaussian_kernel(sigma, sigma, 0.0)
        info["blur"] = ("gaussian", round(sigma, 3))
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def _apply_downsample(img: np.ndarray, scale: float, interpolation: str, info: dict) -> np.ndarray:
    h, w = img.shape[:2]
    nh, nw = max(1, int(round(h / scale))), max(1, int(round(w / scale)))
    info["downsample"] = (round(scale, 3), interpolation)
    return cv2.resize(img, (nw, nh), interpolation=_INTERPOLATIONS[interpolation])


def _apply_gaussian_noise(img: np.ndarray, rng: np.random.Generator, sigma255: float, gray: bool, info: dict) -> np.ndarray:
    sigma = sigma255 / 255.0
    if gray:
        noise = rng.standard_normal(img.shape[:2], dtype=np.float32)[..., None] * sigma
    else:
        noise = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    info["gaussian_noise"] = (round(sigma255, 3), gray)
    return img + noise


def _apply_poisson_noise(img: np.ndarray, rng: np.random.Generator, scale: float, gray: bool, info: dict) -> np.ndarray:
    """Shot noise at 256 photon levels (Real-ESRGAN style), its strength multiplied by ``scale``."""
    levels = 256.0
    base = np.clip(img, 0.0, 1.0)
    if gray:
        lum = base @ np.array([0.299, 0.587, 0.114], np.float32)
        noisy = rng.poisson(lum * levels).astype(np.float32) / levels
        noise = (noisy - lum)[..., None]
    else:
        noisy = rng.poisson(base * levels).astype(np.float32) / levels
        noise = noisy - base
    info["poisson_noise"] = (round(scale, 3), gray)
    return img + noise * scale


def _apply_jpeg(img: np.ndarray, quality: int, info: dict) -> np.ndarray:
    u8 = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - cv2 only fails on empty images
        raise RuntimeError("JPEG encoding failed during degradation")
    dec = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    info["jpeg"] = int(quality)
    return dec.astype(np.float32) / 255.0


# ----------------------------------------------------------------------------- public


def degrade_with_info(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DegradationConfig()
) -> tuple[np.ndarray, dict[str, Any]]:
    """Degrade an RGB image ([H, W, 3], uint8 or float 0..1); return it (same dtype/size) and the choices made."""
    x, as_uint8 = _to_float(img)
    h, w = x.shape[:2]
    info: dict[str, Any] = {}

    # Draw every decision up front in a fixed order so the stream of random numbers stays aligned.
    do_blur = rng.random() < cfg.blur_prob
    do_down = rng.random() < cfg.downsample_prob
    scale = _loguniform(rng, *cfg.scale)
    down_interp = cfg.down_interpolations[int(rng.integers(len(cfg.down_interpolations)))]
    up_interp = cfg.up_interpolations[int(rng.integers(len(cfg.up_interpolations)))]
    do_gauss = rng.random() < cfg.gaussian_noise_prob
    gauss_sigma = rng.uniform(*cfg.gaussian_sigma)
    gauss_gray = rng.random() < cfg.gray_noise_prob
    do_poisson = rng.random() < cfg.poisson_noise_prob
    poisson_scale = rng.uniform(*cfg.poisson_scale)
    poisson_gray = rng.random() < cfg.gray_noise_prob
    do_jpeg = rng.random() < cfg.jpeg_prob
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))

    steps: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = []
    if do_blur:
        # blur strength follows the current resolution of the image it is applied to
        steps.append(("blur", lambda a: _apply_blur(a, rng, cfg, min(a.shape[:2]) / float(cfg.base_size), info)))
    if do_down:
        steps.append(("down", lambda a: _apply_downsample(a, scale, down_interp, info)))
    if do_gauss or do_poisson:

        def noise(a: np.ndarray) -> np.ndarray:
            if do_gauss:
                a = _apply_gaussian_noise(a, rng, gauss_sigma, gauss_gray, info)
            if do_poisson:
                a = _apply_poisson_noise(a, rng, poisson_scale, poisson_gray, info)
            return a

        steps.append(("noise", noise))
    if do_jpeg:
        steps.append(("jpeg", lambda a: _apply_jpeg(a, quality, info)))

    if rng.random() < cfg.shuffle_prob:
        order = rng.permutation(len(steps))
        steps = [steps[i] for i in order]
    info["order"] = tuple(name for name, _ in steps)

    for _, step in steps:
        x = np.clip(step(x), 0.0, 1.0)
    if x.shape[:2] != (h, w):
        x = cv2.resize(x, (w, h), interpolation=_INTERPOLATIONS[up_interp])
    return _from_float(x, as_uint8), info


def degrade(img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DegradationConfig()) -> np.ndarray:
    """Randomly degrade an RGB face crop; same dtype and size out as in. Deterministic for a seeded ``rng``."""
    return degrade_with_info(img, rng, cfg)[0]


def degrade_fixed(img: np.ndarray, scale: float, seed: int, upscale: bool = True) -> np.ndarray:
    """Validation degradation at a fixed ``scale`` (e.g. 4 or 8): moderate blur, area downsampling,
    light Gaussian noise and JPEG 60..85, canonical order, everything else drawn from ``seed``.

    ``upscale=False`` returns the small degraded image (size / scale, same dtype) instead of its
    bicubic resize back, so benchmarks can upsample the very same image another way. It is the
    JPEG-decoded image, so uint8 output is lossless: resizing it (as float 0..1) with
    cv2.INTER_CUBIC and rounding reproduces the default output exactly.
    """
    rng = np.random.default_rng(int(seed))
    x, as_uint8 = _to_float(img)
    h, w = x.shape[:2]
    px = min(h, w) / 128.0
    info: dict[str, Any] = {}
    sigma = rng.uniform(0.5, 1.5) * px
    x = cv2.filter2D(x, -1, gaussian_kernel(sigma, sigma, 0.0), borderType=cv2.BORDER_REFLECT_101)
    x = _apply_downsample(x, float(scale), "area", info)
    x = np.clip(_apply_gaussian_noise(x, rng, rng.uniform(2.0, 8.0), False, info), 0.0, 1.0)
    x = _apply_jpeg(x, int(rng.integers(60, 86)), info)
    if upscale:
        x = cv2.resize(x, (w, h), interpolation=cv2.INTER_CUBIC)
    return _from_float(x, as_uint8)
