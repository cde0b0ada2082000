"""Images located side by side (FaceRestorePipeline.locate_workers): one detector per thread,
the same faces, crops, strengths and frame order as one at a time."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from restorer_core.faces.detect.pool import DetectorPool
from restorer_core.threads import cpu_workers
from restorer_core.faces.records import DetectedFace
from restorer_core.restore.pipeline import MEASURED_AHEAD, FaceRestorePipeline, RestoreOptions
from tiny_models import tiny_config


class _OneThreadDetector:
    """Fails when one instance is used from two threads; detections follow the image content
    (a bright square's position), with noise fixed by that position, so any thread finds the same."""

    name = "fake"

    def __init__(self, made: list):
        self.thread = None
        made.append(self)

    def detect(self, rgb):
        me = threading.get_ident()
        assert self.thread in (None, me), "a detector was used from two threads"
        self.thread = me
        ys, xs = np.nonzero(rgb[..., 0] > 200)
        cx, cy = xs.mean(), ys.mean()
        noise = np.random.default_rng(int(cx * 1000 + cy)).normal(0, 1.5, (5, 2))
        lm = (np.array([[-20, -20], [20, -20], [0, 5], [-16, 25], [16, 25]], np.float64) + [cx, cy] + noise)
        lm = lm.astype(np.float32)
        box = np.concatenate([lm.min(0) - 30, lm.max(0) + 30]).astype(np.float32)
        return [DetectedFace(box=box, score=0.9, landmarks=lm)]


def _frames(n: int) -> list:
    out = []
    for k in range(n):
        img = np.full((240, 320, 3), 60, np.uint8)
        x, y = 110 + 5 * k, 90 + (k % 3) * 4
        img[y:y + 60, x:x + 60] = 230
        img[y + 20:y + 25, x + 10:x + 20] = 20  # texture, so crops differ between frames
        out.append(img)
    return out


def _pipeline(workers: int, made: list) -> tuple:
    torch.manual_seed(0)
    from restorer_core.models.restorer import OneStepRestorer

    pipe = FaceRestorePipeline(OneStepRestorer(tiny_config()).eval(), cpu_workers=workers)
    options = RestoreOptions(detector="fake", crop_size=64)
    pipe.add_detector(options, _OneThreadDetector(made), factory=lambda: _OneThreadDetector(made))
    return pipe, options


def _located(pipe, options, frames, chunk=4):
    faces = []
    for start in range(0, len(frames), chunk):
        names = [f"f{start + k}" for k in range(chunk)]
        faces += pipe.locate_images(frames[start:start + chunk], None, options, names).faces
    return faces


def test_side_by_side_finds_what_one_at_a_time_finds():
    frames = _frames(8)
    made_1, made_4 = [], []
    one, options = _pipeline(1, made_1)
    four, _ = _pipeline(4, made_4)
    assert one.locate_workers(4, options) == 1 and four.locate_workers(4, options) == 4
    a, b = _located(one, options, frames), _located(four, options, frames)
    assert len(made_1) == 1 and len(made_4) >= 2  # each locating thread made its own detector
    assert len(a) == len(b) == 8
    for fa, fb in zip(a, b):
        assert (fa.image_index, fa.face_index) == (fb.image_index, fb.face_index)
        np.testing.assert_array_equal(fa.landmarks, fb.landmarks)
        np.testing.assert_array_equal(fa.crop, fb.crop)
        assert fa.info[MEASURED_AHEAD][1][0] == fb.info[MEASURED_AHEAD][1][0]  # same automatic strength


def test_tracked_frames_are_realigned_in_frame_order():
    """With temporal smoothing, detection runs side by side but the smoother sees frames in order:
    the smoothed landmarks equal those of one-at-a-time locating (and differ from the raw ones)."""
    from restorer_core.faces.temporal import LandmarkSmoother

    frames = _frames(12)
    out = {}
    for workers in (1, 4):
        pipe, options = _pipeline(workers, [])
        options.temporal = LandmarkSmoother()
        out[workers] = np.stack([f.landmarks for f in _located(pipe, options, frames)])
    pipe, options = _pipeline(1, [])
    raw = np.stack([f.landmarks for f in _located(pipe, options, frames)])
    np.testing.assert_allclose(out[4], out[1], atol=1e-6)
    assert np.abs(out[1][3:] - raw[3:]).max() > 0.1


def test_a_detector_without_factory_or_similar_selection_locates_one_at_a_time():
    pipe, options = _pipeline(4, [])
    single = RestoreOptions(detector="single", crop_size=64)
    pipe.add_detector(single, _OneThreadDetector([]))
    assert pipe.locate_workers(8, single) == 1
    assert pipe.locate_workers(1, options) == 1
    from restorer_core.faces.select import FaceSelection

    similar = RestoreOptions(detector="fake", crop_size=64, selection=FaceSelection(mode="similar"))
    assert pipe.locate_workers(8, similar) == 1
    assert len(_located(pipe, single, _frames(4))) == 4  # the lock keeps the one detector safe


@pytest.mark.parametrize("cpus, items, expected", [(2, 8, 1), (16, 8, 4), (16, 2, 2), (64, 32, 8), (1, 1, 1)])
def test_cpu_workers_policy(cpus, items, expected):
    assert cpu_workers(items, cpus) == expected


def test_pool_gives_each_thread_its_own_detector_and_the_first_to_one():
    made = []
    first = _OneThreadDetector(made)
    pool = DetectorPool(lambda: _OneThreadDetector(made), first=first)
    got = {}

    def grab(k):
        got[k] = pool.get()

    threads = [threading.Thread(target=grab, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(d) for d in got.values()}) == 3 and first in got.values() and pool.made == 2


def test_frames_of_a_clip_are_detected_side_by_side_and_tracked_in_order():
    """locate_faces_batch (the nodes' Detect Faces): frames detected on several threads, each with
    its own detector, then tracked in order: the same indices, landmarks and crops as one thread."""
    from restorer_core.faces.locate import locate_faces_batch

    frames = _frames(10)
    made = []
    pool = DetectorPool(lambda: _OneThreadDetector(made))
    side = locate_faces_batch(frames, pool, 64, workers=4)
    one = locate_faces_batch(frames, _OneThreadDetector([]), 64, workers=4)  # not thread-safe: one thread
    assert len(made) >= 2
    assert [[f.face_index for f in fr] for fr in side] == [[f.face_index for f in fr] for fr in one] == [[0]] * 10
    for a, b in zip(side, one):
        np.testing.assert_array_equal(a[0].landmarks, b[0].landmarks)
        np.testing.assert_array_equal(a[0].crop, b[0].crop)


def test_float_frames_are_converted_and_recut_side_by_side_with_the_same_crops():
    """locate_in_images on float frames (a ComfyUI IMAGE batch): the 8-bit copies for detection and
    the full-precision re-cuts run on several threads and give the one-thread crops exactly."""
    from restorer_core.faces.locate import locate_in_images

    frames = [f.astype(np.float32) / 255.0 for f in _frames(6)]
    pool = DetectorPool(lambda: _OneThreadDetector([]))
    side = locate_in_images(frames, pool, 64, workers=3)
    one = locate_in_images(frames, pool, 64, workers=1)
    assert [len(f) for f in side] == [1] * 6
    for a, b in zip(side, one):
        assert a[0].crop.dtype == np.float32
        np.testing.assert_array_equal(a[0].crop, b[0].crop)


def test_reading_a_pools_name_makes_no_detector():
    made = []
    pool = DetectorPool(lambda: _OneThreadDetector(made), first=_OneThreadDetector(made))
    assert pool.name == "fake" and "DetectorPool" in repr(pool)
    assert len(made) == 1 and pool.made == 0  # only the first, made by the caller
