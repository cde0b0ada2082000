"""Landmark smoothing over video frames (restorer_core.faces.temporal): steadies a still face, follows
real motion, starts afresh on a cut or a new face, keeps faces apart, and reaches the pipeline;
automatic strengths follow the same tracks so a face does not flip between kept and restored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from restorer_core.faces.records import DetectedFace
from restorer_core.faces.temporal import (FrameTrack, LandmarkSmoother, SmoothingConfig, StrengthSmoother,
                                    StrengthSmoothing, face_scale, is_cut, smooth_frames)

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
    from restorer_core.faces.align import align_face

    image = np.zeros((300, 300, 3), np.uint8)
    rng = np.random.default_rng(4)
    frames = [[align_face(image, det(FACE + rng.normal(0, 1, FACE.shape)), 64, k, 0)] for k in range(12)]
    out = smooth_frames(frames)
    raw = np.stack([f[0].landmarks for f in frames]).astype(np.float64)
    smooth = np.stack([f[0].landmarks for f in out]).astype(np.float64)
    assert np.abs(np.diff(smooth[4:], axis=0)).mean() < 0.5 * np.abs(np.diff(raw[4:], axis=0)).mean()
    assert [f[0].face_index for f in out] == [0] * 12
    np.testing.assert_array_equal(out[0][0].landmarks, frames[0][0].landmarks)  # first frame raw
    assert [f[0].info["track"].start for f in out] == [True] + [False] * 11
    assert "track" not in frames[0][0].info  # the caller's faces are not changed


def test_pipeline_aligns_frames_at_smoothed_landmarks():
    """RestoreOptions.temporal: restore_images re-cuts each frame's faces at the smoothed
    landmarks, with the state carried across calls (the CLI sends frames in chunks)."""
    import torch

    from restorer_core.models.restorer import OneStepRestorer
    from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions
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
    from restorer_core.faces.temporal import frame_order

    a, b = tmp_path / "shot_b", tmp_path / "shot_a"
    names = [b / "f10.png", b / "f2.png", b / "f1.png", a / "x_3.png", a / "x_20.png"]
    assert frame_order(names) == [b / "f1.png", b / "f2.png", b / "f10.png", a / "x_3.png", a / "x_20.png"]


def test_cli_video_restores_frames_in_order_with_smoothing(tmp_path, model_file, monkeypatch):
    """--video: frames come in numeric order and the pipeline gets a smoother; one report line per
    frame, every frame written."""
    import cv2

    from restorer_core import cli
    from restorer_core.restore.pipeline import FaceRestorePipeline

    photo = cv2.imread(str(Path(__file__).resolve().parents[1] / "example_workflows" / "inputs" / "blake_lively.jpg"))
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in (1, 2, 10):
        shifted = np.roll(photo[:, 350:], k, axis=1)
        cv2.imwrite(str(frames / f"frame_{k}.png"), shifted)
    seen = []
    original = FaceRestorePipeline.locate_images

    def spy(self, images, bank=None, options=None, names=None):
        seen.append((options.temporal is not None, list(names)))
        return original(self, images, bank, options, names)

    monkeypatch.setattr(FaceRestorePipeline, "locate_images", spy)
    out = tmp_path / "out"
    code = cli.main(["restore", str(frames), "--out", str(out), "--model", str(model_file), "--quiet",
                     "--video", "--crop-size", "128"])
    assert code == 0
    assert seen and all(flag for flag, _ in seen)
    order = [Path(n).name for _, names in seen for n in names]
    assert order == ["frame_1.png", "frame_2.png", "frame_10.png"]
    assert sorted(p.name for p in out.glob("*_restored.png")) == sorted(
        f"frame_{k}_restored.png" for k in (1, 2, 10))


# ----------------------------------------------------------------------------- automatic strength

ALTERNATING = [0.0, 0.6] * 10  # a face whose detail sits at the threshold: kept, restored, kept, ...


def flips(strengths) -> int:
    """Changes between kept (strength 0) and restored (> 0) from frame to frame."""
    kept = [s <= 0.0 for s in strengths]
    return sum(a != b for a, b in zip(kept, kept[1:]))


def follow_one_track(raw, config=None, starts=()):
    sm = StrengthSmoother(config)
    return [sm(FrameTrack("a", k, k == 0 or k in starts), s) for k, s in enumerate(raw)]


def test_alternating_strength_stays_restored_after_the_first_restored_frame():
    out = follow_one_track(ALTERNATING)
    assert flips(ALTERNATING) == 19
    assert out[0] == 0.0 and all(s > 0.0 for s in out[1:])  # one change, kept -> restored, then none
    assert all(s >= r for s, r in zip(out, ALTERNATING))  # never less restoration than the frame asks
    assert max(abs(a - b) for a, b in zip(out[1:], out[2:])) <= 0.1 + 1e-9  # 0.6 <-> 0.5: no pumping


def test_strength_rises_at_once_falls_slowly_and_is_kept_after_several_sharp_frames():
    cfg = StrengthSmoothing(fall=0.1, keep_after=6)
    raw = [0.0, 0.9] + [0.0] * 12 + [0.7]
    out = follow_one_track(raw, cfg)
    assert out[1] == 0.9 and out[-1] == 0.7  # a blurred frame is restored on that frame
    falling = out[1:14]
    assert all(0.0 <= a - b <= 0.1 + 1e-9 for a, b in zip(falling, falling[1:]))  # at most `fall` a frame
    assert out[10] > 0.0 and out[11] == 0.0  # 9 sharp frames bring 0.9 to 0 (10th frame: 0)
    short = follow_one_track([0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], cfg)
    assert short[1:6] == pytest.approx([0.2, 0.1, 0.1, 0.1, 0.1])  # held until 6 sharp frames ...
    assert short[6] == 0.0  # ... then kept
    assert follow_one_track(ALTERNATING, StrengthSmoothing(fall=1.0, keep_after=0)) == ALTERNATING
    with pytest.raises(ValueError):
        StrengthSmoothing(fall=0.0)


def test_strength_starts_afresh_on_a_cut_a_new_face_and_a_retried_frame():
    assert follow_one_track([0.8, 0.0, 0.0], starts=(2,)) == [0.8, pytest.approx(0.7), 0.0]
    sm = LandmarkSmoother()
    elsewhere = FACE * 1.3 + [150.0, 40.0]
    newcomer = FACE + [300.0, 0.0]
    plan = [([FACE], [0.8]), ([FACE], [0.8]), ([FACE, newcomer], [0.0, 0.0]),
            ([elsewhere, newcomer], [0.0, 0.0])]
    got = []
    for k, (marks, raw) in enumerate(plan):
        _, tags = sm.smooth_tracked([det(m) for m in marks], [0, 1][:len(marks)], frame_key=f"f{k}")
        got.append([sm.strengths(t, s) for t, s in zip(tags, raw)])
    assert got[2][0] == pytest.approx(0.7) and got[2][1] == 0.0  # the old face held, the new one as read
    assert sm.resets == 1 and got[3][0] == 0.0  # the cut: as read, not held
    assert got[3][1] == 0.0
    _, tags = sm.smooth_tracked([det(elsewhere), det(newcomer)], [0, 1], frame_key="f3")  # a retry of the last frame
    assert sm.strengths(tags[0], 0.5) == 0.5 and sm.strengths(tags[0], 0.0) == 0.0  # from the state before it


class ScriptedStrength:
    """The pipeline's per-face strength decision with scripted automatic strengths (one per face,
    in the order the pipeline asks), so that the temporal rule is the subject."""

    def __init__(self, raw):
        self.raw = list(raw)
        self.asked = 0

    def __call__(self, strength, crop, matrix, resolution, config=None):
        from restorer_core.restore.detail import AUTO, DetailEstimate

        if strength != AUTO:
            return float(strength), None
        s = self.raw[self.asked]
        self.asked += 1
        return s, DetailEstimate(0.2, 0.1, 0.2, 200.0, 64, s, 0.0, s)


def tiny_pipeline():
    import torch

    from restorer_core.models.restorer import OneStepRestorer
    from restorer_core.restore.pipeline import FaceRestorePipeline
    from tiny_models import tiny_config

    torch.manual_seed(0)
    pipe = FaceRestorePipeline(OneStepRestorer(tiny_config()).eval())
    pipe.runner = lambda x, refs, mode, generator=None: 1.0 - x  # restored != input, cheaply
    return pipe


def test_pipeline_follows_automatic_strength_only_with_the_temporal_option(monkeypatch):
    """restore_images in chunks of 4: with RestoreOptions.temporal the kept/restored decision does
    not flip; without it the strengths are the frame's own; a manual strength is never changed."""
    from restorer_core.restore import pipeline as pipeline_module
    from restorer_core.restore.pipeline import RestoreOptions

    class Detector:
        def detect(self, image):
            return [det(FACE)]

    pipe = tiny_pipeline()
    frames = [np.full((300, 300, 3), 100, np.uint8) for _ in range(12)]
    raw = ALTERNATING[:12]
    results = {}
    for name, strength, temporal in (("per frame", "auto", False), ("temporal", "auto", True),
                                     ("manual", 0.4, True), ("manual 0", 0.0, True)):
        monkeypatch.setattr(pipeline_module, "face_strength", ScriptedStrength(raw))
        options = RestoreOptions(detector="fake", crop_size=64, strength=strength, no_refs_strength=1.0,
                                 temporal=LandmarkSmoother() if temporal else None)
        pipe.add_detector(options, Detector())
        faces = []
        for start in range(0, 12, 4):
            names = [f"frame{start + k}" for k in range(4)]
            faces += [r.faces[0] for r in pipe.restore_images(frames[start:start + 4], None, options, names=names)]
        results[name] = faces
    per_frame = [f.info["strength"] for f in results["per frame"]]
    assert per_frame == raw and flips(per_frame) == 11
    assert [bool(f.info.get("kept")) for f in results["per frame"]] == [s == 0.0 for s in raw]
    followed = [f.info["strength"] for f in results["temporal"]]
    assert followed[0] == 0.0 and all(s > 0.0 for s in followed[1:])
    assert [bool(f.info.get("kept")) for f in results["temporal"]] == [True] + [False] * 11
    assert [f.info["detail"]["strength"] for f in results["temporal"]] == raw  # the frame's own estimate
    restored = results["temporal"][2]  # raw 0, followed 0.5: blended, not the input
    assert not np.allclose(restored.restored, restored.crop.astype(np.float32))
    assert [f.info["strength"] for f in results["manual"]] == [0.4] * 12
    assert all(f.info.get("kept") for f in results["manual 0"])


def test_video_option_takes_sixteen_bit_and_grey_frames():
    """RestoreOptions.temporal re-cuts each frame's faces from its own pixels whatever their layout
    (16-bit RGB, grey): outputs keep the frames' dtype and shape, and the faces are restored."""
    from restorer_core.restore.pipeline import RestoreOptions

    class Detector:
        def detect(self, image):
            return [det(FACE)]

    pipe = tiny_pipeline()
    texture = np.random.default_rng(0).integers(40, 200, (300, 300))
    for frame in (np.repeat(texture[..., None], 3, axis=2).astype(np.uint16) * 257, texture.astype(np.uint8)):
        options = RestoreOptions(detector="fake", crop_size=64, strength=1.0, temporal=LandmarkSmoother())
        pipe.add_detector(options, Detector())
        results = pipe.restore_images([frame, frame.copy()], None, options, names=["f0", "f1"])
        for r in results:
            assert r.pixels.dtype == frame.dtype and r.pixels.shape == frame.shape
            assert r.record.status == "restored" and not np.array_equal(r.pixels, frame)


def test_structure_gate_is_smoothed_with_the_track_not_after_it(monkeypatch):
    """Without references a face whose structure reading sits at the gate flips between kept and
    restored frame by frame; with the temporal option the gate's factor goes through the track's
    smoothing, so the clip does not flicker."""
    from restorer_core.restore import pipeline as pipeline_module
    from restorer_core.restore.detail import AUTO, DetailEstimate
    from restorer_core.restore.identity_gate import KEPT_STRUCTURELESS, STRUCTURE_FULL, STRUCTURE_KEEP
    from restorer_core.restore.pipeline import RestoreOptions

    structures = [STRUCTURE_FULL + 0.1, STRUCTURE_KEEP - 0.1] * 6

    class Scripted:
        asked = 0

        def __call__(self, strength, crop, matrix, resolution, config=None):
            assert strength == AUTO
            value = structures[self.asked]
            self.asked += 1
            return 1.0, DetailEstimate(0.05, 0.1, 0.05, 200.0, 64, 1.0, 0.0, 1.0, value)

    class Detector:
        def detect(self, image):
            return [det(FACE)]

    pipe = tiny_pipeline()
    frames = [np.full((300, 300, 3), 100, np.uint8) for _ in range(12)]
    results = {}
    for name, temporal in (("per frame", False), ("temporal", True)):
        monkeypatch.setattr(pipeline_module, "face_strength", Scripted())
        options = RestoreOptions(detector="fake", crop_size=64, no_refs_strength=1.0,
                                 temporal=LandmarkSmoother() if temporal else None)
        pipe.add_detector(options, Detector())
        names = [f"frame{k}" for k in range(12)]
        results[name] = [r.faces[0] for r in pipe.restore_images(frames, None, options, names=names)]
    per_frame = [f.info.get("kept", "") for f in results["per frame"]]
    assert per_frame == ["", KEPT_STRUCTURELESS] * 6
    assert [f.info["structure_factor"] for f in results["per frame"][1::2]] == [0.0] * 6
    followed = [f.info["strength"] for f in results["temporal"]]
    assert followed[0] == 1.0 and min(followed) >= 0.9 and not any(f.info.get("kept") for f in results["temporal"])


def test_faces_tracked_by_smooth_frames_follow_their_strength_in_one_call(monkeypatch):
    """The nodes' path: Detect Faces with smooth_landmarks tags each face with its track, and one
    restore_faces call over the clip follows them; untracked faces keep their own strengths."""
    from restorer_core.restore import pipeline as pipeline_module
    from restorer_core.faces.align import align_face
    from restorer_core.restore.pipeline import RestoreOptions

    image = np.full((300, 300, 3), 100, np.uint8)
    frames = [[align_face(image, det(FACE), 64, k, 0)] for k in range(10)]
    pipe = tiny_pipeline()
    raw = ALTERNATING[:10]
    for tracked in (False, True):
        faces = [f for per in (smooth_frames(frames) if tracked else frames) for f in per]
        monkeypatch.setattr(pipeline_module, "face_strength", ScriptedStrength(raw))
        out = pipe.restore_faces(faces, None, RestoreOptions(crop_size=64, no_refs_strength=1.0))
        strengths = [f.info["strength"] for f in out]
        if tracked:
            assert strengths[0] == 0.0 and all(s > 0.0 for s in strengths[1:])
        else:
            assert strengths == raw
