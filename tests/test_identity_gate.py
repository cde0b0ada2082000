"""The identity gate: a no-reference restore that drifts from the input's identity is pulled back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiny_models import tiny_config
from restorer_core.faces.records import AlignedFace, DetectedFace
from restorer_core.restore.identity_gate import gate_applies, gate_strengths
from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions


class ColourEmbedder:
    """Stand-in identity network: the unit vector of a crop's mean colour minus mid-grey, so
    inverting a face's colours makes it 'another person' (cosine -1) and keeping it the same one."""

    def embed_hwc(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        v = np.asarray(crops, np.float32).reshape(len(crops), -1, 3).mean(1) - 0.5
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def tinted(n: int, size: int = 32) -> torch.Tensor:
    """[n, 3, size, size] faces of a clear colour each (so the stand-in embedding is well defined)."""
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([[0.8, 0.5, 0.3], [0.3, 0.7, 0.6], [0.7, 0.3, 0.7]])[:n]
    return (base.view(n, 3, 1, 1) + 0.02 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)


def test_a_drifting_restore_is_pulled_back_and_says_why():
    x = tinted(3)
    decisions = gate_strengths(ColourEmbedder(), x, 1.0 - x, [1.0, 1.0, 0.6], threshold=0.8)
    for d in decisions:
        assert d.cosine_full < 0.0 and d.strength < 0.6 and "identity gate" in d.reason
        assert d.cosine_chosen >= 0.8


def test_a_restore_that_keeps_identity_is_left_alone():
    x = tinted(3)
    sharper = (x + 0.05 * (x - x.mean(dim=(2, 3), keepdim=True))).clamp(0, 1)  # same colour, more contrast
    decisions = gate_strengths(ColourEmbedder(), x, sharper, [1.0, 0.7, 0.4], threshold=0.8)
    assert [d.strength for d in decisions] == [1.0, 0.7, 0.4]
    assert all(d.reason == "" for d in decisions)


def test_partial_drift_gets_an_intermediate_strength():
    x = tinted(1)
    grey = torch.full_like(x, 0.5) + 0.2 * (torch.tensor([0.3, 0.7, 0.6]).view(1, 3, 1, 1) - 0.5)
    d = gate_strengths(ColourEmbedder(), x, grey, [1.0], threshold=0.9)[0]
    assert 0.0 < d.strength < 1.0 and d.cosine_chosen >= 0.9 > d.cosine_full


def test_policy_needs_no_references_and_an_embedder():
    assert gate_applies(True, False, object())
    assert not gate_applies(True, True, object())
    assert not gate_applies(False, False, object())
    assert not gate_applies(True, False, None)


# ----------------------------------------------------------------------------- in the pipeline


@pytest.fixture(scope="module")
def pipe():
    from restorer_core.models.restorer import OneStepRestorer

    torch.manual_seed(0)
    p = FaceRestorePipeline(OneStepRestorer(tiny_config()).eval(), identity=ColourEmbedder(), speed="eager")
    return p


def face(k: int, size: int = 64) -> AlignedFace:
    crop = tinted(3, size)[k].permute(1, 2, 0).numpy().astype(np.float32)
    det = DetectedFace(np.array([0, 0, size, size], np.float32), 0.9, np.zeros((5, 2), np.float32))
    m = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    return AlignedFace(crop, m, m, det, face_index=k)


def with_runner(pipe, runner):
    old, pipe.runner = pipe.runner, runner
    return old


def test_pipeline_gate_keeps_a_face_the_restorer_turns_into_someone_else(pipe):
    old = with_runner(pipe, lambda x, refs, mode, generator=None: 1.0 - x)
    try:
        faces = [face(0), face(1)]
        on = pipe.restore_faces(faces, None, RestoreOptions(strength=1.0, identity_gate=True))
        off = pipe.restore_faces(faces, None, RestoreOptions(strength=1.0))
    finally:
        pipe.runner = old
    for f, src in zip(on, faces):
        assert f.info["strength"] < 1.0 and "identity gate" in f.info["lowered_reason"]
        assert f.info["identity_gate"]["lowered"] is True
        if f.info["strength"] == 0.0:
            assert "identity gate" in f.info["kept"] and np.array_equal(f.restored, src.crop)
    for f in off:  # the option off: the old behaviour, full strength and no gate record
        assert f.info["strength"] == 1.0 and "identity_gate" not in f.info and "kept" not in f.info


def test_pipeline_gate_leaves_a_face_that_keeps_its_identity(pipe):
    old = with_runner(pipe, lambda x, refs, mode, generator=None: x)
    try:
        out = pipe.restore_faces([face(2)], None, RestoreOptions(strength=1.0, identity_gate=True))[0]
    finally:
        pipe.runner = old
    assert out.info["strength"] == 1.0 and "lowered_reason" not in out.info
    assert out.info["identity_gate"]["lowered"] is False


def test_pipeline_gate_does_nothing_with_references(pipe, monkeypatch):
    from dataclasses import replace

    cond = replace(pipe.conditioning(None, RestoreOptions()), use_references=True)
    monkeypatch.setattr(pipe, "conditioning", lambda bank, options: cond)
    old = with_runner(pipe, lambda x, refs, mode, generator=None: 1.0 - x)
    try:
        out = pipe.restore_faces([face(0)], None, RestoreOptions(strength=1.0, identity_gate=True), refs=object())[0]
    finally:
        pipe.runner = old
    assert out.info["strength"] == 1.0 and "identity_gate" not in out.info


def test_bad_thresholds_are_refused_with_a_clear_message():
    from restorer_core.cli.args import parse_identity_gate
    from restorer_core.cli.usage import UsageError

    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        RestoreOptions(identity_gate=True, identity_gate_threshold=0.0)
    with pytest.raises(UsageError, match="off, on or a cosine threshold"):
        parse_identity_gate("sometimes")
    assert parse_identity_gate("off") is None and parse_identity_gate("0.7") == 0.7


def test_cli_flag_reaches_the_restore_options(tmp_path):
    from restorer_core.cli.app import build_parser
    from restorer_core.cli.args import check_numbers
    from restorer_core.cli.plan import validate

    image = tmp_path / "in.png"
    import cv2

    cv2.imwrite(str(image), np.full((32, 32, 3), 128, np.uint8))
    plans = {}
    for flag in ("off", "on", "0.7"):
        args = build_parser().parse_args(["restore", str(image), "--out", str(tmp_path / flag), "--identity-gate", flag])
        check_numbers(args)
        plans[flag] = validate(args).options
    assert plans["off"].identity_gate is False
    assert plans["on"].identity_gate is True and plans["on"].identity_gate_threshold == 0.6
    assert plans["0.7"].identity_gate is True and plans["0.7"].identity_gate_threshold == 0.7


# ----------------------------------------------------------------------------- no-references strength


def _auto_at(pipe, monkeypatch, value: float) -> None:
    """The automatic strength measure says `value` for every face (no DetailEstimate)."""
    monkeypatch.setattr(pipe, "_strength", lambda f, options: (value, None))


def test_automatic_strength_without_references_is_scaled(pipe, monkeypatch):
    from restorer_core.restore.identity_gate import NO_REFS_STRENGTH, no_refs_scale

    old = with_runner(pipe, lambda x, refs, mode, generator=None: 1.0 - x)
    try:
        _auto_at(pipe, monkeypatch, 0.8)
        scaled = pipe.restore_faces([face(0)], None, RestoreOptions(no_refs_strength=0.75))[0]
        _auto_at(pipe, monkeypatch, 0.6)
        unscaled = pipe.restore_faces([face(0)], None, RestoreOptions(no_refs_strength=1.0))[0]
    finally:
        pipe.runner = old
    assert scaled.info["strength"] == pytest.approx(0.6) and scaled.info["no_refs_scale"] == 0.75
    assert "no_refs_scale" not in unscaled.info
    np.testing.assert_allclose(scaled.restored, unscaled.restored, atol=1e-6)  # 0.8 x 0.75 blends as 0.6
    assert RestoreOptions().no_refs_strength == NO_REFS_STRENGTH
    assert no_refs_scale(False, False, 0.75) == 1.0 and no_refs_scale(True, True, 0.75) == 1.0


def test_structure_gate_scales_down_and_keeps_faces_too_blurred_without_references(pipe, monkeypatch):
    """Without references an automatic strength falls with the face's structure, to 0 (kept, the
    input's pixels, the reason said) at STRUCTURE_KEEP; off, or with references, it does not."""
    from dataclasses import replace

    from restorer_core.restore.detail import DetailEstimate
    from restorer_core.restore.identity_gate import (KEPT_STRUCTURELESS, NO_REFS_STRENGTH, STRUCTURE_FULL,
                                                     STRUCTURE_KEEP)

    middle = (STRUCTURE_KEEP + STRUCTURE_FULL) / 2  # smoothstep(0.5) = 0.5
    structure = {0: STRUCTURE_FULL + 0.1, 1: middle, 2: STRUCTURE_KEEP - 0.05}
    monkeypatch.setattr(pipe, "_strength", lambda f, options: (
        0.8, DetailEstimate(0.1, 0.1, 0.1, 60.0, 64, 0.8, 0.0, 0.8, structure[f.face_index])))
    faces = [face(k) for k in range(3)]
    old = with_runner(pipe, lambda x, refs, mode, generator=None: 1.0 - x)
    try:
        gated = pipe.restore_faces(faces, None, RestoreOptions())
        off = pipe.restore_faces(faces, None, RestoreOptions(no_refs_structure_gate=False))
        cond = replace(pipe.conditioning(None, RestoreOptions()), use_references=True)
        monkeypatch.setattr(pipe, "conditioning", lambda bank, options: cond)
        with_refs = pipe.restore_faces(faces, None, RestoreOptions(), refs=object())
    finally:
        pipe.runner = old
    by = {f.face_index: f for f in gated}
    assert by[0].info["strength"] == pytest.approx(0.8 * NO_REFS_STRENGTH) and "kept" not in by[0].info
    assert by[1].info["strength"] == pytest.approx(0.4 * NO_REFS_STRENGTH)
    assert by[1].info["no_refs_scale"] == NO_REFS_STRENGTH and by[1].info["structure_factor"] == pytest.approx(0.5)
    assert "structure_factor" not in by[0].info
    assert by[2].info["strength"] == 0.0 and by[2].info["kept"] == KEPT_STRUCTURELESS
    np.testing.assert_array_equal(by[2].restored, faces[2].crop.astype(np.float32))
    assert not np.allclose(by[1].restored, faces[1].crop)
    assert [f.info["strength"] for f in off] == pytest.approx([0.8 * NO_REFS_STRENGTH] * 3)
    assert [f.info["strength"] for f in with_refs] == [0.8] * 3
    assert all("no_refs_scale" not in f.info and "structure_factor" not in f.info for f in with_refs)


def test_manual_strength_and_references_are_not_scaled(pipe, monkeypatch):
    from dataclasses import replace

    old = with_runner(pipe, lambda x, refs, mode, generator=None: 1.0 - x)
    try:
        manual = pipe.restore_faces([face(1)], None, RestoreOptions(strength=1.0))[0]
        cond = replace(pipe.conditioning(None, RestoreOptions()), use_references=True)
        monkeypatch.setattr(pipe, "conditioning", lambda bank, options: cond)
        _auto_at(pipe, monkeypatch, 0.8)
        with_refs = pipe.restore_faces([face(1)], None, RestoreOptions(), refs=object())[0]
    finally:
        pipe.runner = old
    assert manual.info["strength"] == 1.0 and "no_refs_scale" not in manual.info
    assert with_refs.info["strength"] == 0.8 and "no_refs_scale" not in with_refs.info


def test_no_refs_strength_option_is_checked_and_reaches_the_cli(tmp_path):
    import cv2

    from restorer_core.cli.app import build_parser
    from restorer_core.cli.args import check_numbers
    from restorer_core.cli.plan import validate
    from restorer_core.cli.usage import UsageError

    with pytest.raises(ValueError, match="from 0 to 1"):
        RestoreOptions(no_refs_strength=1.5)
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.full((32, 32, 3), 128, np.uint8))
    parse = build_parser().parse_args
    args = parse(["restore", str(image), "--out", str(tmp_path / "a"), "--no-refs-strength", "1"])
    check_numbers(args)
    assert validate(args).options.no_refs_strength == 1.0
    args = parse(["restore", str(image), "--out", str(tmp_path / "b")])
    check_numbers(args)
    from restorer_core.restore.identity_gate import NO_REFS_STRENGTH

    assert args.no_refs_strength == NO_REFS_STRENGTH and validate(args).options.no_refs_strength == NO_REFS_STRENGTH
    assert validate(args).options.no_refs_structure_gate is True
    args = parse(["restore", str(image), "--out", str(tmp_path / "d"), "--no-structure-gate"])
    check_numbers(args)
    assert validate(args).options.no_refs_structure_gate is False
    args = parse(["restore", str(image), "--out", str(tmp_path / "c"), "--no-refs-strength", "2"])
    check_numbers(args)
    with pytest.raises(UsageError, match="no-references strength"):
        validate(args)
