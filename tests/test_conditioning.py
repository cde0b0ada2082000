"""One decision of conditioning (restorer_core.restore.conditioning), asked by everything that restores
or reports: a table over (model kind x mode x references present), and the callers following it.

The table is written out by hand from the rules: auto uses references only when the model was
trained with them and some are given, and its visual prompt when it has one; a forced mode that
the model or the inputs cannot satisfy is an error that says what to do.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restorer_core.restore.conditioning import Capabilities, decide
from restorer_core.models.config import small_default_config
from tiny_models import tiny_config

KINDS = {  # what each kind was trained with: (references, visual prompt)
    "instantrestore": (True, False),
    "osdface": (False, True),
    "hybrid": (True, True),
}
NEEDS_REFS, NO_VP, NOT_TRAINED = "needs reference faces", "no visual-prompt embedder", "trained without reference"
# (kind, mode, references present) -> (use references, use visual prompt) or the error's words
TABLE = {
    ("instantrestore", "auto", False): (False, False), ("instantrestore", "auto", True): (True, False),
    ("instantrestore", "references", False): NEEDS_REFS, ("instantrestore", "references", True): (True, False),
    ("instantrestore", "visual_prompt", False): NO_VP, ("instantrestore", "visual_prompt", True): NO_VP,
    ("instantrestore", "both", False): NEEDS_REFS, ("instantrestore", "both", True): NO_VP,
    ("instantrestore", "none", False): (False, False), ("instantrestore", "none", True): (False, False),
    ("osdface", "auto", False): (False, True), ("osdface", "auto", True): (False, True),
    ("osdface", "references", False): NOT_TRAINED, ("osdface", "references", True): NOT_TRAINED,
    ("osdface", "visual_prompt", False): (False, True), ("osdface", "visual_prompt", True): (False, True),
    ("osdface", "both", False): NOT_TRAINED, ("osdface", "both", True): NOT_TRAINED,
    ("osdface", "none", False): (False, False), ("osdface", "none", True): (False, False),
    ("hybrid", "auto", False): (False, True), ("hybrid", "auto", True): (True, True),
    ("hybrid", "references", False): NEEDS_REFS, ("hybrid", "references", True): (True, False),
    ("hybrid", "visual_prompt", False): (False, True), ("hybrid", "visual_prompt", True): (False, True),
    ("hybrid", "both", False): NEEDS_REFS, ("hybrid", "both", True): (True, True),
    ("hybrid", "none", False): (False, False), ("hybrid", "none", True): (False, False),
}


def caps_of(kind: str) -> Capabilities:
    cfg = small_default_config(64)
    cfg.method = kind
    if not KINDS[kind][1]:
        cfg.vre = None
    return Capabilities.of(cfg)


@pytest.mark.parametrize("kind,mode,have_refs", sorted(TABLE))
def test_decision_table(kind, mode, have_refs):
    caps = caps_of(kind)
    assert (caps.references, caps.visual_prompt) == KINDS[kind]
    expected = TABLE[(kind, mode, have_refs)]
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            decide(caps, mode, have_refs)
        return
    cond = decide(caps, mode, have_refs)
    assert (cond.use_references, cond.use_visual_prompt) == expected
    assert cond.reason.startswith(f"{mode}:")
    if kind == "osdface" and mode == "auto" and have_refs:
        assert "trained without references" in cond.reason and "not used" in cond.reason


def test_reference_identity_channel_follows_the_references():
    caps = Capabilities("hybrid", True, True, reference_identity=True)
    assert decide(caps, "auto", True).describe() == "references + reference identity + visual prompt"
    assert not decide(caps, "auto", False).use_reference_identity
    assert not decide(caps, "visual_prompt", True).use_reference_identity
    assert not decide(caps_of("hybrid"), "auto", True).use_reference_identity


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        decide(caps_of("hybrid"), "fastest", False)


def _osdface_type(seed: int = 0):
    """The tiny hybrid config as an OSDFace-type model: trained without references."""
    from restorer_core.models.restorer import OneStepRestorer

    cfg = tiny_config()
    cfg.method = "osdface"
    torch.manual_seed(seed)
    return OneStepRestorer(cfg).eval()


def test_osdface_type_model_ignores_references_in_auto():
    """The model's forward asks the same decision: references given to a model trained without
    them change nothing in auto, and forcing them is the decision's error."""
    model = _osdface_type()
    lq = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        kv = model.encode_references(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)))
        with_refs = model(lq, kv, "auto")
        without = model(lq, None, "auto")
        with model.references_installed(kv):  # what injecting them would have given
            injected = model.model_output(model.restore_step(
                model.model_input(lq), None, None, model.prompt(model.model_input(lq), True),
                model.timestep_tensor(model.device)), lq.dtype)
    assert torch.equal(with_refs, without)
    assert not torch.allclose(injected, without, atol=1e-4)  # so the test could fail
    with pytest.raises(ValueError, match=NOT_TRAINED):
        model(lq, kv, "references")


def test_pipeline_with_a_bank_follows_the_decision(tmp_path):
    """An OSDFace-type restorer with a bank in auto: no reference pass, the same faces as without
    the bank, and the reason says why; a hybrid restorer does use the bank."""
    from restorer_core.restore.bank import ReferenceBank, BankEntry
    from restorer_core.faces.records import AlignedFace, DetectedFace
    from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions

    rng = np.random.default_rng(0)
    crops = torch.from_numpy((rng.random((2, 3, 96, 96)) * 255).astype(np.uint8))
    bank = ReferenceBank(crops, [BankEntry(f"r{i}", "0" * 64, [0, 0, 96, 96], 0.9) for i in range(2)], align_size=96)
    det = DetectedFace(np.array([0, 0, 64, 64], np.float32), 0.9, np.zeros((5, 2), np.float32))
    face = AlignedFace(crop=rng.random((64, 64, 3), dtype=np.float32), matrix=np.eye(2, 3),
                       inverse=np.eye(2, 3), detection=det)
    options = RestoreOptions(cache_dir=str(tmp_path))

    osd = FaceRestorePipeline(_osdface_type(), speed="eager")
    calls = []
    encode = osd.restorer.encode_references
    osd.restorer.encode_references = lambda *a, **k: calls.append(1) or encode(*a, **k)
    cond = osd.conditioning(bank, options)
    assert not cond.use_references and "trained without references" in cond.reason
    a = osd.restore_faces([face], bank, options)[0].restored
    b = osd.restore_faces([face], None, options)[0].restored
    assert calls == [] and np.array_equal(a, b)
    with pytest.raises(ValueError, match=NOT_TRAINED):
        osd.restore_faces([face], bank, RestoreOptions(mode="references", cache_dir=str(tmp_path)))

    from restorer_core.models.restorer import OneStepRestorer

    torch.manual_seed(0)
    hybrid = FaceRestorePipeline(OneStepRestorer(tiny_config()).eval(), speed="eager")
    assert hybrid.conditioning(bank, options).use_references
    c = hybrid.restore_faces([face], bank, options)[0].restored
    d = hybrid.restore_faces([face], None, options)[0].restored
    assert not np.allclose(c, d, atol=1e-4)
