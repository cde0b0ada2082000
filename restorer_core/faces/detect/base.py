"""What every face detector backend shares: the protocol, its config, resizing and NMS.

Backends only implement `_detect_raw` on an image that is already small enough; the base class
validates input, downscales big images (detectors are trained on ~640 px and get slow and no
better on 12000 px photos), maps results back to full-resolution coordinates and returns
`DetectedFace` records sorted by score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from ...errors import DetectorError, ModelNotFoundError
from ..records import DetectedFace


class DetectorModelNotFoundError(DetectorError, ModelNotFoundError):
    """The detector's weights file is missing (catchable as either parent)."""


@runtime_checkable
class FaceDetector(Protocol):
    """Anything with a name that turns an HxWx3 uint8 RGB image into detected faces."""

    name: str

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]: ...


@dataclass(frozen=True)
class DetectorConfig:
    """Knobs shared by all backends.

    score_threshold: minimum confidence kept. nms_threshold: IoU above which the weaker of two
    overlapping boxes is dropped. max_side: long side the image is downscaled to before
    detection. min_side: images smaller than this (either side) have no detectable face.
    top_k: cap on candidates before NMS.
    """

    score_threshold: float = 0.6
    nms_threshold: float = 0.3
    max_side: int = 1600
    min_side: int = 8
    top_k: int = 5000

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise DetectorError(f"score_threshold must be in 0..1, got {self.score_threshold}")
        if not 0.0 < self.nms_threshold <= 1.0:
            raise DetectorError(f"nms_threshold must be in (0, 1], got {self.nms_threshold}")
        if self.max_side < 64:
            raise DetectorError(f"max_side must be at least 64 px, got {self.max_side}")


def check_rgb8(rgb: np.ndarray) -> np.ndarray:
    """Validate detector input: HxWx3 uint8 RGB (use imageio.to_rgb8 for anything else)."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise DetectorError(
            f"detectors take an HxWx3 uint8 RGB array, got {dtype} {shape}; "
            "convert with restorer_core.io.imageio.to_rgb8 first."
        )
    return rgb


def detection_size(hw: tuple[int, int], max_side: int) -> tuple[tuple[int, int], np.ndarray]:
    """(width, height) an image of size hw = (h, w) is detected at (long side at most max_side),
    and scale = [sx, sy] = that size / original size per axis (the realised ratios after rounding,
    so coordinates map back exactly)."""
    h, w = hw
    if max(h, w) <= max_side:
        return (w, h), np.ones(2, dtype=np.float32)
    factor = max_side / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return size, np.array([size[0] / w, size[1] / h], dtype=np.float32)


def downscale_for_detection(
    rgb: np.ndarray, max_side: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shrink so the long side is at most max_side (area averaging): (image, scale) as
    detection_size gives them."""
    size, scale = detection_size(rgb.shape[:2], max_side)
    if size == (rgb.shape[1], rgb.shape[0]):
        return rgb, scale
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a [N, 4] and b [M, 4] (x0, y0, x1, y1) -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        ious = box_iou(boxes[best : best + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class BaseDetector:
    """Template for backends: validation, tiny-image guard, downscale, map back, sort."""

    name = "base"

    def __init__(self, config: DetectorConfig):
        self.config = config

    def _detect_raw(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detect on a small RGB image -> (boxes [N, 4], scores [N], landmarks [N, 5, 2])."""
        raise NotImplementedError

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        rgb = check_rgb8(rgb)
        h, w = rgb.shape[:2]
        if min(h, w) < self.config.min_side:
            return []
        small, scale = downscale_for_detection(rgb, self.config.max_side)
        boxes, scores, landmarks = self._detect_raw(np.ascontiguousarray(small))
        return self._to_faces(boxes, scores, landmarks, scale, w, h)

    @staticmethod
    def _to_faces(boxes, scores, landmarks, scale: np.ndarray, w: int, h: int) -> list[DetectedFace]:
        """Raw detections at detection size -> DetectedFace records in image pixels, best first."""
        if len(scores) == 0:
            return []
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / np.tile(scale, 2)
        landmarks = np.asarray(landmarks, dtype=np.float32).reshape(-1, 5, 2) / scale
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
        return [
            DetectedFace(box=boxes[i].copy(), score=float(scores[i]), landmarks=landmarks[i].copy())
            for i in np.argsort(-np.asarray(scores), kind="stable")
            if boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]
        ]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
