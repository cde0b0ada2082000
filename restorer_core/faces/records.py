"""The face records passed between detection, alignment, restoration and paste-back."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class DetectedFace:
    """One detector hit in image pixel coordinates.

    box: [x0, y0, x1, y1]; landmarks: [5, 2] as (x, y) in the order
    right eye, left eye, nose tip, right mouth corner, left mouth corner
    (the subject's right/left, i.e. image-left eye first), the insightface/YuNet order.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """Face size in pixels: the larger side of the box."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass
class AlignedFace:
    """A face warped onto the FFHQ-style template, with everything needed to paste it back.

    crop: [S, S, 3] float32 RGB in 0..1 (S = crop_size).
    matrix: 2x3 affine, image -> crop. inverse: 2x3 affine, crop -> image.
    image_index: which image of a batch it came from; face_index: its left-to-right rank there.
    """

    crop: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray
    detection: DetectedFace
    image_index: int = 0
    face_index: int = 0
    restored: Optional[np.ndarray] = None  # [S', S', 3] float32 0..1, set by the restorer
    info: dict = field(default_factory=dict)  # e.g. similarity to a bank, skip reasons

    @property
    def crop_size(self) -> int:
        return int(self.crop.shape[0])

    @property
    def landmarks(self) -> np.ndarray:
        return self.detection.landmarks

    @property
    def box(self) -> np.ndarray:
        return self.detection.box

    @property
    def score(self) -> float:
        return self.detection.score

    def with_restored(self, restored: np.ndarray) -> "AlignedFace":
        return replace(self, restored=restored, info=dict(self.info))
