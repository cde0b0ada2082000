"""A second, more permissive detection pass for images where the first pass finds no face.

Heavily degraded faces (x8-x16 blur and downsampling) score below the default threshold, so a
photo of one blurred person passes through unrestored. When the first pass finds nothing, the
second looks again with a lower score threshold, on the image and on a copy half its size (a
blurred face shrunk looks like a sharp small one, which detectors score higher), and keeps the
merged candidates after NMS. Images where the first pass finds a face are never touched by the
second, so false faces at the lower threshold (YuNet scores a stair-post knob in a GFPGAN demo
photo 0.69) cannot join real ones. Measured by benchmarks/detection_rate.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from ..records import DetectedFace
from .base import nms


@dataclass(frozen=True)
class RetryConfig:
    """threshold: the second pass's score threshold. downscale: the extra copy's size factor
    (0 or 1: no extra copy). min_side: copies smaller than this (either side) are not searched.
    max_inside: a candidate lying more than this share inside a better one is dropped."""

    threshold: float = 0.5
    downscale: float = 0.5
    min_side: int = 32
    max_inside: float = 0.4


def _drop_contained(boxes: np.ndarray, order: np.ndarray, max_inside: float) -> list:
    """Indices of `order` (best first) without boxes lying mostly (> max_inside of their area)
    inside a better one: at low thresholds a blurred face's chin or forehead scores as a face."""
    kept: list = []
    for i in order:
        b = boxes[i]
        area = max((b[2] - b[0]) * (b[3] - b[1]), 1e-9)
        inside = False
        for j in kept:
            k = boxes[j]
            w = max(0.0, min(b[2], k[2]) - max(b[0], k[0]))
            h = max(0.0, min(b[3], k[3]) - max(b[1], k[1]))
            inside = inside or w * h / area > max_inside
        if not inside:
            kept.append(int(i))
    return kept


class RetryDetector:
    """Any FaceDetector (`primary`) plus a permissive one (same backend, lower threshold) that
    runs only when the primary finds no face."""

    def __init__(self, primary: Any, permissive: Any, config: RetryConfig = RetryConfig()):
        self.primary = primary
        self.permissive = permissive
        self.retry = config
        self.name = primary.name
        self.config = primary.config
        self.thread_safe = bool(getattr(primary, "thread_safe", False) and getattr(permissive, "thread_safe", False))

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        return self.primary.detect(rgb) or self._second_pass(rgb)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[DetectedFace]]:
        """detect() of every image, the first pass batched where the primary detector batches."""
        batch = getattr(self.primary, "detect_batch", None)
        first = batch(images) if batch is not None else [self.primary.detect(im) for im in images]
        return [faces or self._second_pass(im) for faces, im in zip(first, images)]

    def _second_pass(self, rgb: np.ndarray) -> list[DetectedFace]:
        found = list(self.permissive.detect(rgb))
        f = float(self.retry.downscale)
        h, w = rgb.shape[:2]
        if 0.0 < f < 1.0 and min(h, w) * f >= self.retry.min_side:
            size = (max(1, round(w * f)), max(1, round(h * f)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            scale = np.array([size[0] / w, size[1] / h], np.float32)
            for d in self.permissive.detect(small):
                found.append(DetectedFace(box=np.asarray(d.box, np.float32) / np.tile(scale, 2), score=d.score,
                                          landmarks=np.asarray(d.landmarks, np.float32) / scale))
        if len(found) < 2:
            return found
        boxes = np.stack([np.asarray(d.box, np.float64) for d in found])
        keep = nms(boxes, np.array([d.score for d in found]), self.config.nms_threshold)
        return [found[i] for i in _drop_contained(boxes, keep, self.retry.max_inside)]

    def __repr__(self) -> str:
        return f"RetryDetector({self.primary!r}, retry={self.retry})"
