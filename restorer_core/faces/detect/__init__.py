"""Face detectors behind one protocol: `detect(rgb_uint8) -> list[DetectedFace]`.

Backends: "yunet" (default, shipped; OpenCV on the CPU, the same network in torch on a CUDA
device: detect_device decides), "scrfd" (user's insightface .onnx,
needs onnxruntime), "facexlib" (RetinaFace, needs facexlib + torchvision and its weights).
Landmarks always come in the order image-left eye, image-right eye, nose,
image-left mouth corner, image-right mouth corner.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional, Union

from ...errors import DetectorError
from .base import (
    BaseDetector,
    DetectorConfig,
    DetectorModelNotFoundError,
    FaceDetector,
    box_iou,
    nms,
)

from ...options import DETECTORS as DETECTOR_NAMES

__all__ = [
    "BaseDetector",
    "DETECTOR_NAMES",
    "DetectorConfig",
    "DetectorModelNotFoundError",
    "FaceDetector",
    "box_iou",
    "cached_detector",
    "create_detector",
    "detect_device",
    "nms",
]


# Score scales differ per backend: YuNet scores a stair-post knob in a GFPGAN demo photo 0.69,
# while SCRFD-500M scores real but small faces about 0.65 (insightface's own default is 0.5).
DEFAULT_THRESHOLDS = {"yunet": 0.7, "scrfd": 0.5, "facexlib": 0.6}
# Second-pass threshold when the first pass finds no face (detect/retry.py); only where measured
# (benchmarks/results/detection_rate.md): YuNet on held-out photos degraded x8 / x16.
RETRY_THRESHOLDS = {"yunet": 0.5}
# Backends with a torch implementation that runs batched on the restorer's device (yunet_torch.py).
TORCH_BACKENDS = ("yunet",)


def detect_device(name: str, device=None):
    """Where backend `name` runs for a pipeline on `device`: that CUDA device for a backend with a
    torch implementation (frames detected batched there, no CPU threads), else None (the CPU
    backend). The one place that decides it."""
    import torch

    if device is None or name.strip().lower() not in TORCH_BACKENDS:
        return None
    dev = torch.device(device)
    return dev if dev.type == "cuda" else None


def create_detector(
    name: str = "yunet",
    model_path: Optional[Union[str, Path]] = None,
    score_threshold: Optional[float] = None,
    nms: float = 0.3,
    max_side: int = 1600,
    retry: bool = True,
    device=None,
) -> FaceDetector:
    """Build a detector by backend name; model_path overrides the backend's default weights.
    device: the pipeline's device; detect_device says whether the backend runs there.

    score_threshold None takes the backend's default (DEFAULT_THRESHOLDS). retry: where the
    backend has a RETRY_THRESHOLDS entry, images in which nothing is found get a second pass
    (min(score_threshold, that threshold), also on a half-size copy; see detect/retry.py).
    """
    key = name.strip().lower()
    if score_threshold is None:
        score_threshold = DEFAULT_THRESHOLDS.get(key, 0.6)
    if retry and key in RETRY_THRESHOLDS:
        from .retry import RetryConfig, RetryDetector

        primary = create_detector(key, model_path, score_threshold, nms, max_side, retry=False, device=device)
        low = min(float(score_threshold), RETRY_THRESHOLDS[key])
        permissive = create_detector(key, model_path, low, nms, max_side, retry=False, device=device)
        return RetryDetector(primary, permissive, RetryConfig(threshold=low))
    config = DetectorConfig(score_threshold=score_threshold, nms_threshold=nms, max_side=max_side)
    path = Path(model_path) if model_path not in (None, "") else None
    on = detect_device(key, device) if path is None else None  # the torch net has the shipped weights
    if key == "yunet" and on is not None:
        from .yunet_torch import YuNetTorchDetector

        return YuNetTorchDetector(config, on)
    if key == "yunet":
        from .yunet import YuNetDetector

        return YuNetDetector(config, path)
    if key == "scrfd":
        from .scrfd import SCRFDDetector

        return SCRFDDetector(config, path)
    if key == "facexlib":
        from .facexlib_backend import FacexlibDetector

        return FacexlibDetector.from_path(config, path)
    raise DetectorError(f"unknown detector '{name}'; choose one of {', '.join(DETECTOR_NAMES)}.")


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def cached_detector(name: str = "yunet", model_path: Optional[Union[str, Path]] = None,
                    score_threshold: Optional[float] = None, device=None) -> FaceDetector:
    """create_detector, made once per (backend, weights file, threshold, device) per process and
    then reused (ONNX sessions are slow to create); safe to call from several threads at once: a
    DetectorPool (each thread detects with its own instance) or a thread-safe device detector.
    Detectors keep no state between images."""
    from .pool import DetectorPool

    path = str(Path(model_path).resolve()) if model_path not in (None, "") else None
    threshold = None if score_threshold is None else round(float(score_threshold), 4)
    on = detect_device(name, device) if path is None else None
    key = (name.strip().lower(), path, threshold, str(on))
    with _CACHE_LOCK:
        if key not in _CACHE:
            first = create_detector(name, path, score_threshold=threshold, device=on)  # errors here, in the caller
            _CACHE[key] = first if getattr(first, "thread_safe", False) else DetectorPool(
                lambda: create_detector(name, path, score_threshold=threshold), first=first)
        return _CACHE[key]
