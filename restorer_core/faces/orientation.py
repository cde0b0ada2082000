"""Faces that are sideways or upside down as displayed: try the other three rotations.

EXIF orientation is applied when an image is read (imageio). A scan turned by 90 degrees, or a
photo whose orientation tag is wrong, still shows its faces sideways, and detectors trained on
upright faces find none. `restore_any_rotation` then restores the image turned by 90, 180 and
270 degrees (counter-clockwise) until faces are found, and turns the result back, so the output
keeps the input's orientation and the report says which rotation was used.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

ROTATIONS = (90, 180, 270)  # degrees counter-clockwise, tried in this order


def rotate(pixels: np.ndarray, degrees: int) -> np.ndarray:
    """Turn an HxW[xC] image counter-clockwise by a multiple of 90 degrees (a contiguous copy)."""
    return np.ascontiguousarray(np.rot90(pixels, k=(degrees // 90) % 4))


def box_to_original(box: Sequence[float], degrees: int, rotated_shape: Sequence[int]) -> list:
    """[x0, y0, x1, y1] in an image turned counter-clockwise by `degrees` -> the same box in the
    unturned image. rotated_shape: (height, width) of the turned image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    height = float(rotated_shape[0])
    width = float(rotated_shape[1])
    for _ in range((degrees // 90) % 4):
        # undo one counter-clockwise quarter turn: x = H' - y', y = x'; the image was H' tall
        x0, y0, x1, y1 = height - y1, x0, height - y0, x1
        height, width = width, height
    return [x0, y0, x1, y1]


def restore_any_rotation(restore: Callable[[np.ndarray], object], pixels: np.ndarray,
                         first: object, rotations: Sequence[int] = ROTATIONS,
                         confident: float = 0.7) -> object:
    """`first` (the upright ImageResult) when it found a face the detector is confident of
    (score >= `confident`, the first detection pass's threshold); else the first of `rotations`
    whose restore(rotated pixels) finds a face scoring higher than any upright one, turned back
    (pixels, mask, face boxes, record size) with `record.rotation` set; `first` when none does.
    So a sideways face found only by the permissive second detection pass still gets the
    rotation that shows it upright.

    restore: one image -> pipeline.ImageResult (e.g. a FaceRestorePipeline.restore_images call).
    """
    best_first = max((f.score for f in first.record.faces), default=0.0)
    if best_first >= confident:
        return first
    for degrees in rotations:
        turned = rotate(pixels, degrees)
        result = restore(turned)
        if max((f.score for f in result.record.faces), default=0.0) <= best_first:
            continue
        back = (360 - degrees) % 360
        result.pixels = rotate(result.pixels, back)
        result.mask = rotate(result.mask, back)
        record = result.record
        for face in record.faces:
            face.box = box_to_original(face.box, degrees, turned.shape[:2])
        record.width, record.height = int(pixels.shape[1]), int(pixels.shape[0])
        record.rotation = degrees
        return result
    return first
