"""Do no harm: how much real detail an aligned face already has, and the restoration strength
that follows from it.

A restorer working at `resolution` px can only add detail up to that resolution. Two things say
whether a face needs it:

* its **size**: the number of image pixels its aligned crop really spans (`native_px`: crop size
  divided by the alignment's magnification). A face spanning fewer pixels than the restorer's
  resolution is an upscale; one spanning half of it or less always gets the full restoration.
* its **sharpness at its own scale**: the crop is brought to `min(native_px, resolution)` px
  (area), and in the face's centre the energy of the finest band (image minus a 1 px Gaussian
  blur) is compared with a middle band (1 px minus 3 px blur). The square root of that ratio
  (`detail`) does not depend on contrast or lighting; blur, downsampling and JPEG at a coarser
  scale all lower it.

`detail` is mapped to a strength with a smoothstep between `sharp` (strength 0: a face at least
as sharp as most clean photos) and `blurred` (strength 1: as soft as most x4-degraded ones),
calibrated by benchmarks/detail_calibration.py on training people's photos; the final
strength is the larger of the size and sharpness terms. Pure numpy/OpenCV, no model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import cv2
import numpy as np

from .align import affine_scale

AUTO = "auto"


@dataclass(frozen=True)
class DetailConfig:
    """Constants of the detail measure and of its mapping to a strength.

    sharp / blurred: `detail` values that map to strength 0 / 1 (smoothstep in between).
    full_below: faces spanning at most this share of the restorer's resolution get strength 1;
    at the full resolution the size term is 0. region: the face centre measured, as fractions of
    the aligned crop (x0, y0, x1, y1); the FFHQ template puts eyes, nose and mouth inside it.
    fine_sigma / mid_sigma: Gaussian sigmas (px at the analysis size) splitting the bands.
    min_analysis_px: the smallest analysis size (a smaller face centre has too few pixels for the
    band statistics; such faces get strength 1 from the size term anyway).
    """

    sharp: float = 0.26
    blurred: float = 0.19
    full_below: float = 0.5
    region: tuple = (0.25, 0.30, 0.75, 0.85)
    fine_sigma: float = 1.0
    mid_sigma: float = 3.0
    min_analysis_px: int = 64
    discount_noise: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.blurred < self.sharp:
            raise ValueError(f"need 0 <= blurred < sharp, got blurred={self.blurred}, sharp={self.sharp}")
        if not 0.0 < self.full_below < 1.0:
            raise ValueError(f"full_below must be in (0, 1), got {self.full_below}")


DEFAULT_DETAIL = DetailConfig()


@dataclass(frozen=True)
class DetailEstimate:
    """What the estimate saw and decided: detail (contrast-free band ratio at analysis_px),
    the face's native_px, the sharpness and size terms, and the strength (their maximum)."""

    detail: float
    native_px: float
    analysis_px: int
    sharpness_term: float
    size_term: float
    strength: float

    def to_dict(self) -> dict:
        return {"detail": round(self.detail, 4), "native_px": round(self.native_px, 1),
                "analysis_px": self.analysis_px, "sharpness_term": round(self.sharpness_term, 3),
                "size_term": round(self.size_term, 3), "strength": round(self.strength, 3)}


def _gray(crop: np.ndarray) -> np.ndarray:
    """[S, S, 3] (or [S, S]) float 0..1 or uint8 -> [S, S] float32 luma 0..1."""
    arr = np.asarray(crop)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 3:
        arr = arr[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return arr


def native_size(crop_size: int, matrix: np.ndarray) -> float:
    """Image pixels spanned by an aligned crop's side: crop size / magnification of image -> crop."""
    return float(crop_size) / max(affine_scale(matrix), 1e-6)


def detail_measure(crop: np.ndarray, analysis_px: int, config: DetailConfig = DEFAULT_DETAIL) -> float:
    """sqrt(fine-band energy / middle-band energy) in the face centre at analysis_px (see module doc)."""
    gray = _gray(crop)
    size = max(int(analysis_px), config.min_analysis_px)
    if gray.shape[0] != size or gray.shape[1] != size:
        interp = cv2.INTER_AREA if gray.shape[0] > size else cv2.INTER_CUBIC
        gray = cv2.resize(gray, (size, size), interpolation=interp)
    b1 = cv2.GaussianBlur(gray, (0, 0), config.fine_sigma, borderType=cv2.BORDER_REFLECT_101)
    b2 = cv2.GaussianBlur(gray, (0, 0), config.mid_sigma, borderType=cv2.BORDER_REFLECT_101)
    x0, y0, x1, y1 = (int(round(v * size)) for v in config.region)
    fine = (gray - b1)[y0:y1, x0:x1]
    mid = (b1 - b2)[y0:y1, x0:x1]
    fine = fine.astype(np.float64)
    e_mid = float(np.mean(mid.astype(np.float64) ** 2))
    if e_mid < 1e-10:  # a flat patch: nothing to judge, nothing lost by restoring
        return 0.0
    # noise fills the fine band everywhere, real detail only along edges: the band's median
    # absolute value estimates the noise (Donoho's MAD estimate), whose energy is not detail
    noise = (float(np.median(np.abs(fine))) / 0.6745) ** 2 if config.discount_noise else 0.0
    return float(np.sqrt(max(float(np.mean(fine ** 2)) - noise, 0.0) / e_mid))


def smoothstep(x: float) -> float:
    x = min(max(float(x), 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def estimate_detail(crop: np.ndarray, matrix: np.ndarray, resolution: int,
                    config: DetailConfig = DEFAULT_DETAIL) -> DetailEstimate:
    """The detail of an aligned crop (cut with the image -> crop `matrix`) for a restorer working at
    `resolution` px, and the automatic strength that follows."""
    native = native_size(np.asarray(crop).shape[0], matrix)
    analysis = int(round(min(native, float(resolution))))
    detail = detail_measure(crop, analysis, config)
    sharpness = smoothstep((config.sharp - detail) / (config.sharp - config.blurred))
    full = config.full_below * resolution
    size = smoothstep((resolution - native) / (resolution - full))
    return DetailEstimate(detail, native, max(analysis, config.min_analysis_px), sharpness, size,
                          max(sharpness, size))


def check_strength(strength: Union[str, float]) -> Union[str, float]:
    """"auto" or a number in 0..1 (a manual override); anything else is a ValueError saying so."""
    if isinstance(strength, str):
        text = strength.strip().lower()
        if text == AUTO:
            return AUTO
        try:
            strength = float(text)
        except ValueError:
            raise ValueError(f"strength must be 'auto' or a number from 0 to 1, got {strength!r}") from None
    value = float(strength)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"strength must be 'auto' or a number from 0 to 1, got {value}")
    return value


def face_strength(strength: Union[str, float], crop: np.ndarray, matrix: np.ndarray, resolution: int,
                  config: DetailConfig = DEFAULT_DETAIL) -> tuple:
    """(strength to blend with, DetailEstimate or None): the estimate's for "auto", else the number."""
    if strength == AUTO:
        est = estimate_detail(crop, matrix, resolution, config)
        return est.strength, est
    return float(strength), None
