"""Frame-to-frame face identity: which of this frame's boxes continues which earlier track.

Shared by restorer_core.faces.locate (face numbers that follow people through a video) and
restorer_core.faces.temporal (landmark smoothing along each track).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .detect.base import box_iou


@dataclass(frozen=True)
class TrackConfig:
    """Frame-to-frame identity matching.

    min_iou: boxes overlapping at least this much are the same face; otherwise a face whose
    centre moved less than max_centre_shift x its size still matches. max_gap: frames a face
    may be missing before its index is retired.
    """

    min_iou: float = 0.3
    max_centre_shift: float = 0.5
    max_gap: int = 5


def match_to_tracks(
    boxes: np.ndarray, tracks: Sequence, config: TrackConfig
) -> dict[int, int]:
    """Greedy one-to-one matching of new boxes to tracks (anything with a `.box`): {box position: track position}."""
    if len(boxes) == 0 or len(tracks) == 0:
        return {}
    prev = np.stack([t.box for t in tracks])
    iou = box_iou(boxes, prev)
    cb = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    cp = (prev[:, :2] + prev[:, 2:]) / 2.0
    dist = np.linalg.norm(cb[:, None, :] - cp[None, :, :], axis=2)
    size = np.maximum(prev[:, 2] - prev[:, 0], prev[:, 3] - prev[:, 1])[None, :]
    shift = dist / np.maximum(size, 1e-6)
    ok = (iou >= config.min_iou) | (shift <= config.max_centre_shift)
    # rank candidate pairs: overlap first, closeness second
    score = np.where(ok, iou + (1.0 - np.minimum(shift, 1.0)) * 1e-3, -np.inf)
    matches: dict[int, int] = {}
    used_tracks: set[int] = set()
    for flat in np.argsort(-score, axis=None, kind="stable"):
        b, t = np.unravel_index(flat, score.shape)
        if not np.isfinite(score[b, t]):
            break
        if b in matches or t in used_tracks:
            continue
        matches[int(b)] = int(t)
        used_tracks.add(int(t))
    return matches
