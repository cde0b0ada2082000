"""The reference-identity channel: the references' face-ID embeddings as extra prompt tokens."""

import dataclasses

import torch

from restorer_core.loaders.project_format import load_restorer, save_restorer
from restorer_core.models.ref_identity import pooled_identity
from restorer_core.models.reference_kv import ReferenceKV
from restorer_core.models.restorer import OneStepRestorer
from tiny_models import tiny_config


def _model(seed=0, tokens=2):
    torch.manual_seed(seed)
    cfg = tiny_config()
    cfg.ref_id = {"tokens": tokens}
    m = OneStepRestorer(cfg).eval()
    with torch.no_grad():  # a visible channel: a fresh projection is small but not zero
        m.ref_id_proj.proj.weight.mul_(50)
    return m


def test_pooled_identity_ignores_padded_references():
    emb = torch.nn.functional.normalize(torch.randn(2, 3, 8), dim=-1)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    pooled = pooled_identity(emb, mask)
    want = torch.nn.functional.normalize(emb[0, [0, 2]].mean(0), dim=-1)
    assert torch.allclose(pooled[0], want, atol=1e-6)
    assert torch.count_nonzero(pooled[1]) == 0  # nobody valid: no identity at all
    assert torch.allclose(pooled_identity(emb, None)[1], torch.nn.functional.normalize(emb[1].mean(0), dim=-1))


def test_references_carry_their_identity_and_it_steers_the_output():
    m = _model()
    refs = torch.rand(3, 3, 64, 64)
    lq = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        kv = m.encode_references(refs)
        assert kv.identity.shape == (1, 3, m.ref_id_proj.proj.in_features)
        want = m.face_id(refs)
        assert torch.allclose(kv.identity[0], want, atol=1e-5)
        base = m(lq, kv, mode="both")
        other = dataclasses.replace(kv, identity=-kv.identity)  # same K/V, another identity
        moved = m(lq, other, mode="both")
        no_id = m(lq, dataclasses.replace(kv, identity=None), mode="both")
        none = m(lq, None, mode="visual_prompt")
        none_again = m(lq, kv, mode="visual_prompt")  # references not used: no identity tokens either
    assert (base - moved).abs().max() > 1e-3
    assert (base - no_id).abs().max() > 1e-3
    assert torch.equal(none, none_again)


def test_the_face_id_network_stays_frozen_in_training_mode():
    m = _model().train()
    assert not m.face_id.training and m.unet.training
    assert not any(p.requires_grad for p in m.face_id.parameters())


def test_a_restorer_without_the_channel_ignores_identity():
    torch.manual_seed(0)
    m = OneStepRestorer(tiny_config()).eval()
    assert m.face_id is None and m.ref_id_proj is None
    with torch.no_grad():
        kv = m.encode_references(torch.rand(2, 3, 64, 64))
        lq = torch.rand(1, 3, 64, 64)
        fake = ReferenceKV(kv.layers, kv.keys, kv.values, None, torch.randn(1, 2, 192))
        assert kv.identity is None
        assert torch.equal(m(lq, kv, mode="both"), m(lq, fake, mode="both"))


def test_the_channel_survives_save_and_load(tmp_path):
    m = _model(tokens=3)
    path = tmp_path / "r.safetensors"
    save_restorer(path, m, dtype=torch.float32)
    back = load_restorer(path)
    assert back.config.ref_id == {"tokens": 3}
    refs, lq = torch.rand(2, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = m(lq, m.encode_references(refs), mode="both")
        b = back(lq, back.encode_references(refs), mode="both")
    assert torch.allclose(a, b, atol=1e-5)


def test_identity_round_trips_through_the_reference_state_dict():
    kv = ReferenceKV(["a"], [torch.randn(1, 2, 4, 8)], [torch.randn(1, 2, 4, 8)], None, torch.randn(1, 2, 5))
    back = ReferenceKV.from_state_dict(["a"], kv.state_dict())
    assert torch.equal(back.identity, kv.identity)
    assert ReferenceKV.from_state_dict(["a"], {k: v for k, v in kv.state_dict().items()
                                              if k != "identity"}).identity is None
