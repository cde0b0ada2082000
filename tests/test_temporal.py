"""Landmark smoothing over video frames (restorer_core.temporal): steadies a still face, follows
real motion, starts afresh on a cut or a new face, keeps faces apart, and reaches the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from restorer_core.faces import DetectedFace
from restorer_core.temporal import LandmarkSmoother, SmoothingConfig, face_scale, is_cut, smooth_frames

# a 100 px face: eyes 40 px apart, mouth 45 px below them
FACE = np.array([[80.0, 100.0], [120.0, 100.0], [100.0, 125.0], [84.0, 145.0], [116.0, 145.0]])


def det(landmarks: np.ndarray) -> DetectedFace:
    lm = np.asarray(landmarks, dtype=np.float32)
    x0, y0 = lm.min(axis=0) - 30
    x1, y1 = lm.max(axis=0) + 30
    return DetectedFace(box=np.array([x0, y0, x1, y1], np.float32), score=0.9, landmarks=lm)


def run(frames, config=None, keys=None):
    sm = LandmarkSmoother(config)
    out = [np.asarray(sm.smooth([det(f)], None if keys is None else [keys[k]])[0].landmarks, np.float64)
           for k, f in enumerate(frames)]
    return np.stack(out), sm


def test_still_face_is_held_steady():
    rng = np.random.default_rng(0)
    noisy = [FACE + rng.normal(0, 1.0, FACE.shape) for _ in range(80)]
    out, sm = run(noisy)
    raw_step = np.abs(np.diff(np.stack(noisy)[20:], axis=0)).mean()
    smooth_step = np.abs(np.diff(out[20:], axis=0)).mean()
    assert smooth_step < 0.35 * raw_step  # frame-to-frame wobble cut by more than 65%
    assert np.abs(out[20:] - FACE).mean() < 0.6 * np.abs(np.stack(noisy)[20:] - FACE).mean()
    assert sm.resets == 0


def test_moving_face_is_followed_without_drifting_behind():
    """A face panning 3 px (3% of its size) per frame: after the filter settles the smoothed
    landmarks stay within a few pixels of the truth, and the lag does not grow."""
    truth = [FACE + [3.0 * k, 0.5 * k] for k in range(60)]
    out, sm = run(truth)
    lag = np.linalg.norm(out - np.stack(truth), axis=2).mean(axis=1)
    assert lag[30:].max() < 6.0 and abs(lag[59] - lag[40]) < 0.5
    assert sm.resets == 0


def test_cut_starts_the_filter_afresh():
    rng = np.random.default_rng(1)
    frames = [FACE + rng.normal(0, 0.5, FACE.shape) for _ in range(20)]
    elsewhere = FACE * 1.3 + [150.0, 40.0]  # another shot: moved and larger
    frames += [elsewhere + rng.normal(0, 0.5, FACE.shape) for _ in range(5)]
    out, sm = run(frames, keys=[0] * len(frames))  # same track id: the cut, not matching, resets
    assert sm.resets == 1
    np.testing.assert_allclose(out[20], frames[20], atol=1e-4)  # the first frame after the cut is raw
    assert np.abs(out[21:] - elsewhere).mean() < 1.5
    assert is_cut(FACE, elsewhere, SmoothingConfig()) and not is_cut(FACE, FACE + 2.0, SmoothingConfig())


def test_two_faces_keep_their_own_filters_and_a_new_face_starts_raw():
    rng = np.random.default_rng(2)
    other = FACE + [300.0, 0.0]
    sm = LandmarkSmoother()
    for _ in range(10):
        a, b = sm.smooth([det(FACE + rng.normal(0, 1, FACE.shape)), det(other + rng.normal(0, 1, FACE.shape))])
    assert np.abs(np.asarray(a.landmarks) - FACE).mean() < 1.5
    assert np.abs(np.asarray(b.landmarks) - other).mean() < 1.5
    newcomer = FACE + [150.0, 200.0]
    *_, c = sm.smooth([det(FACE), det(other), det(newcomer)])
    np.testing.assert_allclose(np.asarray(c.landmarks), newcomer, atol=1e-4)


def test_a_repeated_frame_gives_the_same_result_and_box_follows_landmarks():
    rng = np.random.default_rng(3)
    sm = LandmarkSmoother()
    for k in range(5):
        first = sm.smooth([det(FACE + rng.normal(0, 1, FACE.shape))], frame_key=f"f{k}")
    again = sm.smooth([det(FACE + 40.0)], frame_key="f4")  # a retry of the last frame
    np.testing.assert_array_equal(again[0].landmarks, first[0].landmarks)
    assert sm.frame == 4
    d = det(FACE)
    moved = sm.smooth([d])[0]
    shift = (np.asarray(moved.landmarks, np.float64) - FACE).mean(axis=0)
    np.testing.assert_allclose(np.asarray(moved.box, np.float64) - np.asarray(d.box, np.float64),
                               np.tile(shift, 2), atol=1e-3)


def test_face_scale_and_config_checks():
    assert face_scale(FACE) == pytest.approx((40.0 + 45.0) / 2)
    assert face_scale(FACE * 2) == pytest.approx(2 * face_scale(FACE))
    with pytest.raises(ValueError):
        SmoothingConfig(min_cutoff=0)


def test_smooth_frames_uses_face_numbers_as_tracks():
    from restorer_core.align import align_face

    image = np.zeros((300, 300, 3), np.uint8)
    rng = np.random.default_rng(4)
    frames = [[align_face(image, det(FACE + rng.normal(0, 1, FACE.shape)), 64, k, 0)] for k in range(12)]
    out = smooth_frames(frames)
    raw = np.stack([f[0].landmarks for f in frames]).astype(np.float64)
    smooth = np.stack([f[0].landmarks for f in out]).astype(np.float64)
    assert np.abs(np.diff(smooth[4:], axis=0)).mean() < 0.5 * np.abs(np.diff(raw[4:], axis=0)).mean()
    assert [f[0].face_index for f in out] == [0] * 12 and out[0][0] is frames[0][0]  # first frame raw


def test_pipeline_aligns_frames_at_smoothed_landmarks():
    """RestoreOptions.temporal: restore_images re-cuts each frame's faces at the smoothed
    landmarks, with the state carried across calls (the CLI sends frames in chunks)."""
    import torch

    from restorer_core.models.restorer import OneStepRestorer
    from restorer_core.pipeline import FaceRestorePipeline, RestoreOptions
    from tiny_models import tiny_config

    class Detector:
        def __init__(self):
            self.rng = np.random.default_rng(5)

        def detect(self, image):
            return [det(FACE + self.rng.normal(0, 1.5, FACE.shape))]

    torch.manual_seed(0)
    pipe = FaceRestorePipeline(OneStepRestorer(tiny_config()).eval())
    pipe.runner = lambda x, refs, mode, generator=None: x  # an identity restorer: alignment is the subject
    frames = [np.full((300, 300, 3), 100, np.uint8) for _ in range(16)]
    seen = {}
    for smoothing in (False, True):
        options = RestoreOptions(detector="fake", crop_size=64, temporal=LandmarkSmoother() if smoothing else None)
        pipe.add_detector(options, Detector())  # the same noisy detections for both runs
        marks = []
        for start in range(0, 16, 4):
            names = [f"frame{start + k}" for k in range(4)]
            for result in pipe.restore_images(frames[start:start + 4], None, options, names=names):
                (face,) = result.faces
                assert face.crop.shape == (64, 64, 3) and face.restored is not None
                marks.append(np.asarray(face.landmarks, np.float64))
        seen[smoothing] = np.stack(marks)
    wobble = {s: np.abs(np.diff(m[6:], axis=0)).mean() for s, m in seen.items()}
    assert wobble[True] < 0.5 * wobble[False]
    np.testing.assert_allclose(seen[True][0], seen[False][0], atol=1e-5)  # the first frame is raw


def test_frame_order_is_numeric_within_each_folder(tmp_path):
    from restorer_core.temporal import frame_order

    a, b = tmp_path / "shot_b", tmp_path / "shot_a"
    names = [b / "f10.png", b / "f2.png", b / "f1.png", a / "x_3.png", a / "x_20.png"]
    assert frame_order(names) == [b / "f1.png", b / "f2.png", b / "f10.png", a / "x_3.png", a / "x_20.png"]


def test_cli_video_restores_frames_in_order_with_smoothing(tmp_path, model_file, monkeypatch):
    """--video: frames come in numeric order and the pipeline gets a smoother; one report line per
    frame, every frame written."""
    import cv2

    from restorer_core import cli
    from restorer_core.pipeline import FaceRestorePipeline

    photo = cv2.imread(str(Path(__file__).resolve().parents[1] / "example_workflows" / "inputs" / "blake_lively.jpg"))
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in (1, 2, 10):
        shifted = np.roll(photo[:, 350:], k, axis=1)
        cv2.imwrite(str(frames / f"frame_{k}.png"), shifted)
    seen = []
    original = FaceRestorePipeline.restore_images

    def spy(self, images, bank=None, options=None, *a, **k):
        seen.append((options.temporal is not None, list(k.get("names") or a[2])))
        return original(self, images, bank, options, *a, **k)

    monkeypatch.setattr(FaceRestorePipeline, "restore_images", spy)
    out = tmp_path / "out"
    code = cli.main(["restore", str(frames), "--out", str(out), "--model", str(model_file), "--quiet",
                     "--video", "--crop-size", "128"])
    assert code == 0
    assert seen and all(flag for flag, _ in seen)
    order = [Path(n).name for _, names in seen for n in names]
    assert order == ["frame_1.png", "frame_2.png", "frame_10.png"]
    assert sorted(p.name for p in out.glob("*_restored.png")) == sorted(
        f"frame_{k}_restored.png" for k in (1, 2, 10))
