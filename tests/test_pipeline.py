"""FaceRestorePipeline: batching, ordering, seeds, strength, cancel, references, paste-back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tiny_models import tiny_config
from restorer_core.errors import CancelledError
from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions


@pytest.fixture(scope="module")
def restorer():
    from restorer_core.models.restorer import OneStepRestorer

    torch.manual_seed(0)
    return OneStepRestorer(tiny_config(noisy=True)).eval()


@pytest.fixture(scope="module")
def pipeline(restorer):
    return FaceRestorePipeline(restorer)


@pytest.fixture(scope="module")
def group_photo(real_lq_dir: Path) -> np.ndarray:
    """GFPGAN's 10045.png (several faces), downscaled to stay fast."""
    from restorer_core.io.imageio import load_image

    rgb = load_image(real_lq_dir / "gfpgan" / "whole_imgs" / "10045.png").rgb8
    return cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def bank(real_lq_dir, yunet):
    from restorer_core.restore.bank import build_bank

    return build_bank([real_lq_dir / "lfw_references" / "Eliane_Karp"], yunet, align_size=96)


@pytest.fixture(scope="module")
def faces(group_photo, yunet, real_lq_dir):
    """Faces of two images (a group photo and a portrait), image_index 1 and 0."""
    from restorer_core.io.imageio import load_image
    from restorer_core.faces.locate import locate_faces

    portrait = load_image(real_lq_dir / "codeformer" / "whole_imgs" / "04.jpg").rgb8
    a = locate_faces(group_photo, yunet, 64, image_index=1)
    b = locate_faces(portrait, yunet, 64, image_index=0)
    assert len(a) >= 3 and len(b) == 1
    return a + b


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("ONESTEP_FACE_RESTORE_CACHE", str(tmp_path / "cache"))


def _stack(faces):
    return np.stack([f.restored for f in faces])


def test_batches_keep_order_and_do_not_change_results(pipeline, faces):
    one = pipeline.restore_faces(faces, options=RestoreOptions(batch_size=1, seed=3))
    many = pipeline.restore_faces(list(reversed(faces)), options=RestoreOptions(batch_size=3, seed=3))
    keys = [(f.image_index, f.face_index) for f in one]
    assert keys == sorted(keys) and len(one) == len(faces)
    assert keys == [(f.image_index, f.face_index) for f in many]
    np.testing.assert_allclose(_stack(one), _stack(many), atol=2e-4)
    assert all(f.restored.shape == f.crop.shape for f in one)
    assert all(f.restored is None for f in faces)  # inputs are not modified


def test_seed_is_deterministic_and_matters(pipeline, faces):
    a = pipeline.restore_faces(faces[:2], options=RestoreOptions(seed=7))
    b = pipeline.restore_faces(faces[:2], options=RestoreOptions(seed=7))
    c = pipeline.restore_faces(faces[:2], options=RestoreOptions(seed=8))
    assert np.array_equal(_stack(a), _stack(b))
    assert not np.allclose(_stack(a), _stack(c), atol=1e-3)


def test_strength_blends_with_the_input_crop(pipeline, faces):
    full = pipeline.restore_faces(faces[:2], options=RestoreOptions(strength=1.0))
    none = pipeline.restore_faces(faces[:2], options=RestoreOptions(strength=0.0))
    half = pipeline.restore_faces(faces[:2], options=RestoreOptions(strength=0.5))
    for f, n in zip(faces[:2], none):
        np.testing.assert_allclose(n.restored, f.crop, atol=1e-6)
    for f, r, h in zip(faces[:2], full, half):
        np.testing.assert_allclose(h.restored, 0.5 * (r.restored + f.crop), atol=1e-5)
        assert np.abs(r.restored - f.crop).mean() > 0.01


def test_cancel_between_batches_and_progress(pipeline, faces):
    calls, seen = [], []

    def should_cancel():
        calls.append(1)
        return len(calls) > 1  # let the first batch run, stop before the second

    with pytest.raises(CancelledError, match="1 of"):
        pipeline.restore_faces(faces, options=RestoreOptions(batch_size=1), should_cancel=should_cancel,
                               progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, len(faces))]
    pipeline.restore_faces(faces, options=RestoreOptions(batch_size=2),
                           progress=lambda done, total: seen.append((done, total)))
    n = len(faces)
    assert seen[1:] == [(min(i, n), n) for i in range(2, n + 2, 2)]


def test_references_are_encoded_once_per_bank(restorer, bank, faces, tmp_path, monkeypatch):
    calls = []
    original = restorer.encode_references

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(restorer, "encode_references", counting)
    faces = faces[:2]
    opts = RestoreOptions(batch_size=1, max_refs=2, cache_dir=str(tmp_path / "kv"), strength=1.0)
    pipe = FaceRestorePipeline(restorer)
    with_refs = pipe.restore_faces(faces, bank, opts)
    assert len(calls) == 1  # one encode for all batches
    pipe.restore_faces(faces, bank, opts)
    assert len(calls) == 1  # memoised in the pipeline
    again = FaceRestorePipeline(restorer).restore_faces(faces, bank, opts)
    assert len(calls) == 1  # a new pipeline reads the disk cache
    assert np.array_equal(_stack(with_refs), _stack(again))
    no_refs = pipe.restore_faces(faces, bank, RestoreOptions(mode="visual_prompt", strength=1.0))
    assert len(calls) == 1  # modes without references do not encode them
    assert not np.allclose(_stack(with_refs), _stack(no_refs), atol=1e-3)


def test_reference_mode_without_bank_is_a_clear_error(pipeline, faces):
    with pytest.raises(ValueError, match="needs reference faces"):
        pipeline.restore_faces(faces, None, RestoreOptions(mode="references"))


def test_restore_image_changes_faces_only(pipeline, group_photo, yunet):
    expected = len(yunet.detect(group_photo))
    out, mask, report = pipeline.restore_image(group_photo, options=RestoreOptions(batch_size=2, strength=1.0))
    assert out.shape == group_photo.shape and out.dtype == group_photo.dtype
    assert report["faces_found"] == expected == report["faces_restored"]
    assert [f["index"] for f in report["faces"]] == list(range(expected))
    lefts = [f["box"][0] + f["box"][2] for f in report["faces"]]
    assert lefts == sorted(lefts)  # index = left-to-right rank
    untouched = mask == 0
    assert untouched.mean() > 0.5
    assert np.array_equal(out[untouched], group_photo[untouched])
    for f in report["faces"]:
        x0, y0, x1, y1 = (int(round(v)) for v in f["box"])
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        r = max(2, (x1 - x0) // 4)
        core = (slice(cy - r, cy + r), slice(cx - r, cx + r))
        assert mask[core].min() > 0.5
        assert np.abs(out[core].astype(int) - group_photo[core].astype(int)).max() > 0


def test_selection_and_sixteen_bit_alpha_input(pipeline, group_photo):
    from restorer_core.faces.select import FaceSelection

    rgba16 = np.concatenate([group_photo.astype(np.uint16) * 257,
                             np.full(group_photo.shape[:2] + (1,), 40000, np.uint16)], axis=2)
    opts = RestoreOptions(selection=FaceSelection("index", indices=(1,)))
    out, mask, report = pipeline.restore_image(rgba16, options=opts)
    assert out.dtype == np.uint16 and out.shape == rgba16.shape
    assert np.array_equal(out[..., 3], rgba16[..., 3])  # alpha untouched
    assert report["faces_restored"] == 1
    skipped = [f for f in report["faces"] if f["status"] == "skipped"]
    assert len(skipped) == report["faces_found"] - 1 and all("not in selected" in f["reason"] for f in skipped)
    changed = np.argwhere(np.any(out[..., :3] != rgba16[..., :3], axis=2))
    x0, y0, x1, y1 = next(f["box"] for f in report["faces"] if f["index"] == 1)
    centre = changed.mean(axis=0)  # (y, x) of the changed pixels: around face 1
    assert x0 <= centre[1] <= x1 and y0 - (y1 - y0) <= centre[0] <= y1 + (y1 - y0)


def test_image_without_face_passes_through(pipeline):
    gray = np.full((90, 120, 3), 100, np.uint8)
    out, mask, report = pipeline.restore_image(gray)
    assert np.array_equal(out, gray) and not mask.any()
    assert report["status"] == "unchanged" and report["faces_found"] == 0 and "no face" in report["note"]


def test_similarity_selection_uses_the_identity_embedder(restorer, bank, group_photo):
    from restorer_core.faces.identity import IdentityConfig, IdentityEmbedder
    from restorer_core.faces.select import FaceSelection

    torch.manual_seed(0)
    embedder = IdentityEmbedder(IdentityConfig(stages=((32, 2, 1), (32, 2, 1)), head_channels=64)).eval()
    pipe = FaceRestorePipeline(restorer, identity=embedder)
    with pytest.raises(ValueError, match="reference"):
        pipe.restore_image(group_photo, None, RestoreOptions(selection=FaceSelection("similar")))
    keep_all = RestoreOptions(mode="visual_prompt", selection=FaceSelection("similar", threshold=-1.0),
                              strength=1.0)  # selection alone decides (no automatic keeps)
    _, _, report = pipe.restore_image(group_photo, bank, keep_all)
    assert report["faces_restored"] == report["faces_found"] > 0
    for f in report["faces"]:
        assert -1.0 <= f["similarity_before"] <= 1.0 and -1.0 <= f["similarity_after"] <= 1.0
    keep_none = RestoreOptions(mode="visual_prompt", selection=FaceSelection("similar", threshold=1.01))
    out, _, report = pipe.restore_image(group_photo, bank, keep_none)
    assert report["faces_restored"] == 0 and report["status"] == "unchanged"
    assert all("similarity" in f["reason"] for f in report["faces"])
    assert np.array_equal(out, group_photo)
    # without an embedder, "similar" says what is missing
    with pytest.raises(ValueError, match="identity embedder"):
        FaceRestorePipeline(restorer).restore_image(group_photo, bank, keep_all)


def test_speed_runner_choice_and_same_output(tmp_path):
    """make_runner: eager on CPU for "auto"; a FastRestorer (any speed) restores exactly the same."""
    import torch

    from restorer_core.models.config import small_default_config
    from restorer_core.models.fast import FastRestorer, SpeedConfig
    from restorer_core.models.restorer import OneStepRestorer
    from restorer_core.restore.pipeline import make_runner

    cfg = small_default_config(64)
    torch.manual_seed(0)
    model = OneStepRestorer(cfg).eval()
    assert make_runner(model, "eager") is model
    auto = make_runner(model, "auto")  # on the CPU: fused upsampling, no CUDA graph to capture
    assert isinstance(auto, FastRestorer) and auto.speed.fuse_upsample and auto.speed.cuda_graph
    fast = make_runner(model, SpeedConfig(channels_last=True))
    assert isinstance(fast, FastRestorer)
    with pytest.raises(ValueError, match="speed must be"):
        make_runner(model, "turbo")
    x = torch.rand(2, 3, 64, 64)
    refs = model.encode_references(torch.rand(2, 3, 64, 64))
    with torch.inference_mode():
        a = model(x, refs, "both", generator=torch.Generator().manual_seed(3))
        b = fast(x, refs, "both", generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-5)


class _IdentityRestorer(torch.nn.Module):
    """Returns its input: isolates what the pipeline does around the network."""

    def __init__(self, resolution: int):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = type("Cfg", (), {"resolution": resolution, "method": "osdface", "vre": None, "ref_id": None})()

    @property
    def device(self):
        return self.anchor.device

    @property
    def dtype(self):
        return self.anchor.dtype

    def forward(self, x, refs=None, mode="auto", generator=None):
        return x


def test_detail_transfer_keeps_large_faces_sharp():
    """With a 64 px restorer and 256 px crops, an identity network gives the crop back exactly
    with detail transfer, and a blurred crop without it."""
    from restorer_core.faces.records import AlignedFace, DetectedFace
    from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions

    rng = np.random.default_rng(0)
    crop = rng.random((256, 256, 3), dtype=np.float32)  # full of detail finer than 64 px
    det = DetectedFace(np.array([0, 0, 256, 256], np.float32), 0.9, np.zeros((5, 2), np.float32))
    face = AlignedFace(crop=crop, matrix=np.eye(2, 3), inverse=np.eye(2, 3), detection=det)
    pipe = FaceRestorePipeline(_IdentityRestorer(64), speed="eager")
    sharp = pipe.restore_faces([face], options=RestoreOptions())[0].restored
    blurred = pipe.restore_faces([face], options=RestoreOptions(detail_transfer=False))[0].restored
    assert np.abs(sharp - crop).max() < 1e-4
    assert np.abs(blurred - crop).mean() > 0.1
    small = AlignedFace(crop=crop[:64, :64].copy(), matrix=np.eye(2, 3), inverse=np.eye(2, 3), detection=det)
    out = pipe.restore_faces([small], options=RestoreOptions())[0].restored
    assert np.abs(out - small.crop).max() < 1e-5  # at the native size nothing is added


def test_paste_without_mask_gives_the_same_pixels(pipeline, group_photo):
    """The CLI pastes with mask=False (it writes no mask): same pixels, no frame-sized mask."""
    options = RestoreOptions(batch_size=2, strength=1.0)
    located = pipeline.locate_images([group_photo], options=options)
    with_mask, without = (pipeline.finish_images(located, options=options, paste=False)[0] for _ in range(2))
    pipeline.paste_result(with_mask, options)
    pipeline.paste_result(without, options, mask=False)
    assert without.pasted and without.mask is None and without.record.status == with_mask.record.status == "restored"
    assert with_mask.mask.max() > 0.5
    assert np.array_equal(without.pixels, with_mask.pixels)
    assert not np.array_equal(without.pixels, group_photo)
