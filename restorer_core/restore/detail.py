"""Do no harm: how much real detail an aligned face already has, and the restoration strength
that follows from it.

A restorer working at `resolution` px can only add detail up to that resolution. Three things
say whether a face needs it:

* its **size**: the number of image pixels its aligned crop really spans (`native_px`: crop size
  divided by the alignment's magnification). A face spanning fewer pixels than the restorer's
  resolution is an upscale; one spanning half of it or less always gets the full restoration.
* its **sharpness at its own scale**: the crop is brought to `min(native_px, resolution)` px
  (area), and in the face's centre the energy of the finest band (image minus a 1 px Gaussian
  blur), less its noise energy, is compared with a middle band (1 px minus 3 px blur). The
  square root of that ratio (`detail`) does not depend on contrast or lighting; blur,
  downsampling and JPEG at a coarser scale all lower it.
* its **noise relative to its structure** (`noise`): the fine band's noise level (its median
  absolute value, Donoho's MAD estimate: noise fills the band everywhere, detail only along
  edges) over the middle band's RMS. Grain, sensor noise, halftone dots and compression noise on
  a soft or faded face make it high; clean photos stay low. The level is also read at up to
  `noise_check` times the analysis size and the smaller reading counts: dense texture (hair,
  a beard) squeezed by a strong downsampling looks like noise only at the smaller size.

A noisy face is a degraded face (the restorer is trained to remove noise): the noise beyond
`noise_free` lowers the effective detail, `detail - noise_weight * max(noise - noise_free, 0)`,
so a soft face under grain, or a sharp face under heavy noise, is restored, while noise alone
does not make a face read as *blurred* (`detail` itself stays noise-discounted, and blur lowers
`detail` without raising `noise`). The effective detail is mapped to a strength with a
smoothstep between `sharp` (strength 0: at least as clear as ~90 % of clean photos) and
`blurred` (strength 1: as soft as most x2-degraded ones), calibrated by
benchmarks/detail_calibration.py on training people's photos; the final strength is the larger
of the size and sharpness terms. A face at strength 0 is kept exactly as it was (`kept_reason`).
A fourth reading, **structure**, says how much of the face's mid-scale shape survives (a
band ratio at a coarse scale, where blur beyond the restorer's finest band still shows): it does
not change the strength here; without references the pipeline uses it to keep faces too far gone
for the restorer to guess who they are (restorer_core.restore.identity_gate).
Pure numpy/OpenCV, no model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import cv2
import numpy as np

from ..faces.align import affine_scale

AUTO = "auto"
KEPT_SHARP = "already sharp (automatic strength 0)"
KEPT_MANUAL = "strength 0 keeps the input face"


@dataclass(frozen=True)
class DetailConfig:
    """Constants of the detail measure and of its mapping to a strength.

    sharp / blurred: effective-detail values that map to strength 0 / 1 (smoothstep in between).
    noise_free / noise_weight: `noise` (fine-band noise over middle-band RMS) up to noise_free is
    what clean photos have; beyond it, each unit lowers the effective detail by noise_weight.
    noise_check: the noise level is also read at up to this multiple of the analysis size (the
    smaller reading counts), so that texture squeezed by downsampling is not taken for noise.
    full_below: faces spanning at most this share of the restorer's resolution get strength 1;
    at the full resolution the size term is 0. region: the face centre measured, as fractions of
    the aligned crop (x0, y0, x1, y1); the FFHQ template puts eyes, nose and mouth inside it.
    fine_sigma / mid_sigma: Gaussian sigmas (px at the analysis size) splitting the bands.
    min_analysis_px: the smallest analysis size (a smaller face centre has too few pixels for the
    band statistics; such faces get strength 1 from the size term anyway).
    structure_px / structure_sigmas (s1, s2, s3): `structure` is sqrt(energy of the s1..s2 band /
    energy of the s2..s3 band) in the face centre at structure_px (Gaussian sigmas in px there).
    """

    sharp: float = 0.26
    blurred: float = 0.19
    noise_free: float = 0.25
    noise_weight: float = 2.0
    noise_check: float = 2.0
    full_below: float = 0.5
    region: tuple = (0.25, 0.30, 0.75, 0.85)
    fine_sigma: float = 1.0
    mid_sigma: float = 3.0
    min_analysis_px: int = 64
    discount_noise: bool = True
    structure_px: int = 64
    structure_sigmas: tuple = (1.0, 3.0, 8.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.blurred < self.sharp:
            raise ValueError(f"need 0 <= blurred < sharp, got blurred={self.blurred}, sharp={self.sharp}")
        if not 0.0 < self.full_below < 1.0:
            raise ValueError(f"full_below must be in (0, 1), got {self.full_below}")
        if self.noise_free < 0.0 or self.noise_weight < 0.0:
            raise ValueError(f"noise_free and noise_weight must be >= 0, got {self.noise_free}, {self.noise_weight}")
        if self.noise_check < 1.0:
            raise ValueError(f"noise_check must be >= 1, got {self.noise_check}")


DEFAULT_DETAIL = DetailConfig()


@dataclass(frozen=True)
class DetailEstimate:
    """What the estimate saw and decided: detail (contrast-free, noise-discounted band ratio at
    analysis_px), noise (fine-band noise over middle-band RMS), effective (detail lowered by the
    noise beyond what clean photos have), the face's native_px, the sharpness and size terms,
    and the strength (their maximum)."""

    detail: float
    noise: float
    effective: float
    native_px: float
    analysis_px: int
    sharpness_term: float
    size_term: float
    strength: float
    structure: Optional[float] = None

    def to_dict(self) -> dict:
        out = {"detail": round(self.detail, 4), "noise": round(self.noise, 4),
               "effective": round(self.effective, 4), "native_px": round(self.native_px, 1),
               "analysis_px": self.analysis_px, "sharpness_term": round(self.sharpness_term, 3),
               "size_term": round(self.size_term, 3), "strength": round(self.strength, 3)}
        if self.structure is not None:
            out["structure"] = round(self.structure, 4)
        return out


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


def _centre_bands(gray: np.ndarray, size: int, config: DetailConfig) -> tuple:
    """(fine, middle) band of the face centre of `gray` brought to size x size px (float64)."""
    if gray.shape[0] != size or gray.shape[1] != size:
        interp = cv2.INTER_AREA if gray.shape[0] > size else cv2.INTER_CUBIC
        gray = cv2.resize(gray, (size, size), interpolation=interp)
    b1 = cv2.GaussianBlur(gray, (0, 0), config.fine_sigma, borderType=cv2.BORDER_REFLECT_101)
    b2 = cv2.GaussianBlur(gray, (0, 0), config.mid_sigma, borderType=cv2.BORDER_REFLECT_101)
    x0, y0, x1, y1 = (int(round(v * size)) for v in config.region)
    return (gray - b1)[y0:y1, x0:x1].astype(np.float64), (b1 - b2)[y0:y1, x0:x1].astype(np.float64)


def _mad_sigma(band: np.ndarray) -> float:
    """Noise level of a band from its median absolute value (Donoho's MAD estimate): noise fills
    the band everywhere, real detail only along edges."""
    return float(np.median(np.abs(band))) / 0.6745


def band_measures(crop: np.ndarray, analysis_px: int, config: DetailConfig = DEFAULT_DETAIL,
                  native_px: Optional[float] = None) -> tuple:
    """(detail, noise) of the face centre at analysis_px (see module doc): detail = sqrt(fine-band
    energy less its MAD noise energy / middle-band energy), noise = the fine band's noise level /
    the middle band's RMS. For `noise` the level is the smaller of the fine band's MAD level at
    analysis_px and at up to `noise_check` times that size (never beyond the face's own
    native_px): grain and noise show at both, while dense texture (hair, beard) squeezed by a
    strong downsampling looks like noise only at the smaller size."""
    gray = _gray(crop)
    size = max(int(analysis_px), config.min_analysis_px)
    fine, mid = _centre_bands(gray, size, config)
    e_mid = float(np.mean(mid ** 2))
    if e_mid < 1e-10:  # a flat patch: nothing to judge, nothing lost by restoring
        return 0.0, 0.0
    sigma = _mad_sigma(fine)
    discount = sigma * sigma if config.discount_noise else 0.0
    detail = float(np.sqrt(max(float(np.mean(fine ** 2)) - discount, 0.0) / e_mid))
    if native_px is not None:
        check = int(round(min(float(native_px), config.noise_check * size, gray.shape[0])))
        if check > size:
            sigma = min(sigma, _mad_sigma(_centre_bands(gray, check, config)[0]))
    return detail, sigma / float(np.sqrt(e_mid))


def structure_measure(crop: np.ndarray, config: DetailConfig = DEFAULT_DETAIL) -> float:
    """How much mid-scale shape the face centre keeps (DetailConfig.structure_*); contrast-free.
    Medians on training people (benchmarks/results/norefs_structure_train.md): x4 0.81, x8 0.71,
    x16 0.47; clean photos about 0.9. Noise at the face's own scale raises it. A flat patch: 0."""
    gray = _gray(crop)
    size = int(config.structure_px)
    if gray.shape[0] != size or gray.shape[1] != size:
        interp = cv2.INTER_AREA if gray.shape[0] > size else cv2.INTER_CUBIC
        gray = cv2.resize(gray, (size, size), interpolation=interp)
    b1, b2, b3 = (cv2.GaussianBlur(gray, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
                  for sigma in config.structure_sigmas)
    x0, y0, x1, y1 = (int(round(v * size)) for v in config.region)
    inner = float(np.mean(((b1 - b2)[y0:y1, x0:x1]).astype(np.float64) ** 2))
    outer = float(np.mean(((b2 - b3)[y0:y1, x0:x1]).astype(np.float64) ** 2))
    return float(np.sqrt(inner / outer)) if outer > 1e-12 else 0.0


def detail_measure(crop: np.ndarray, analysis_px: int, config: DetailConfig = DEFAULT_DETAIL) -> float:
    """sqrt(fine-band energy / middle-band energy) in the face centre at analysis_px, noise discounted."""
    return band_measures(crop, analysis_px, config)[0]


def effective_detail(detail: float, noise: float, config: DetailConfig = DEFAULT_DETAIL) -> float:
    """detail lowered by the noise beyond what clean photos have (module doc)."""
    return float(detail) - config.noise_weight * max(float(noise) - config.noise_free, 0.0)


def smoothstep(x: float) -> float:
    x = min(max(float(x), 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def estimate_detail(crop: np.ndarray, matrix: np.ndarray, resolution: int,
                    config: DetailConfig = DEFAULT_DETAIL) -> DetailEstimate:
    """The detail of an aligned crop (cut with the image -> crop `matrix`) for a restorer working at
    `resolution` px, and the automatic strength that follows."""
    gray = _gray(crop)  # once for both readings (band_measures and structure_measure take it as it is)
    native = native_size(gray.shape[0], matrix)
    analysis = int(round(min(native, float(resolution))))
    detail, noise = band_measures(gray, analysis, config, native)
    effective = effective_detail(detail, noise, config)
    sharpness = smoothstep((config.sharp - effective) / (config.sharp - config.blurred))
    full = config.full_below * resolution
    size = smoothstep((resolution - native) / (resolution - full))
    return DetailEstimate(detail, noise, effective, native, max(analysis, config.min_analysis_px), sharpness, size,
                          max(sharpness, size), structure_measure(gray, config))


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


def kept_reason(strength: float, estimate: Optional[DetailEstimate]) -> str:
    """Why a face is kept exactly as it was ("" when it is restored): strength 0, decided by the
    automatic estimate (already sharp) or set by hand. Kept faces skip the restorer and paste-back."""
    if float(strength) > 0.0:
        return ""
    return KEPT_SHARP if estimate is not None else KEPT_MANUAL
