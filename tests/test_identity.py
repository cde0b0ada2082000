"""Identity embedder: embeddings, file format, loading errors, the trainer (CPU, tiny data) and the identity loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from restorer_core.errors import CheckpointError, ModelNotFoundError
from restorer_core.faces.identity import (
    DEFAULT_EMBEDDER_PATH,
    IdentityConfig,
    IdentityEmbedder,
    cosine_similarity,
    embed_faces,
    load_identity_embedder,
)
from restorer_core.train.identity_train import (
    EXPORT_NAME,
    IdentityTrainConfig,
    MarginHead,
    export_embedder,
    train,
    verification_metrics,
)
from restorer_core.train.losses import IdentityLoss, IdentityLossConfig, random_views
from restorer_core.train.prepare import PrepareConfig, encode_image, pack_cache, write_cache

TINY = IdentityConfig(embedding_dim=16, input_size=32, stem_channels=8, stages=((16, 2, 1), (16, 2, 1), (32, 2, 1)),
                      head_channels=32)


def test_embeddings_are_unit_norm_for_any_crop_size():
    torch.manual_seed(0)
    model = IdentityEmbedder(TINY).eval()
    for size in (48, 64, 128):
        e = model(torch.rand(3, 3, size, size))
        assert e.shape == (3, 16)
        assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError):
        model(torch.rand(2, 1, 64, 64))


def test_default_architecture_is_small():
    model = IdentityEmbedder()
    fp16_bytes = 2 * sum(t.numel() for t in model.state_dict().values())
    assert fp16_bytes < 5 * 2**20


def test_cosine_similarity_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 8)), rng.normal(size=(3, 8))
    n = cosine_similarity(a, b)
    t = cosine_similarity(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert n.shape == (4, 3) and np.allclose(n, t)
    assert np.allclose(np.diag(cosine_similarity(a, 2.5 * a)), 1.0)
    assert np.allclose(cosine_similarity(a, -a).diagonal(), -1.0)


def test_export_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = IdentityEmbedder(TINY)
    model.train()
    model(torch.rand(8, 3, 64, 64))  # move BatchNorm statistics away from their init
    model.eval()
    path = tmp_path / "emb.safetensors"
    export_embedder(model, path, {"threshold": "0.3"})
    loaded = load_identity_embedder(path)
    assert loaded.config == TINY and loaded.metadata["threshold"] == "0.3"
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    crops = (np.random.default_rng(1).random((5, 64, 64, 3)) * 255).astype(np.uint8)
    with torch.no_grad():
        ref = model(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255)
    got = embed_faces(loaded, crops, batch_size=2)
    assert np.allclose(got, ref.numpy(), atol=2e-2)


def test_load_errors_tell_what_to_do(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_identity_embedder(tmp_path / "missing.safetensors")
    if not DEFAULT_EMBEDDER_PATH.exists():
        with pytest.raises(ModelNotFoundError, match="identity_train"):
            load_identity_embedder()
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "something-else"})
    with pytest.raises(CheckpointError, match="not an identity embedder"):
        load_identity_embedder(other)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError):
        load_identity_embedder(garbage)


def test_margin_makes_the_loss_harder():
    torch.manual_seed(0)
    emb, labels = torch.randn(16, 8), torch.randint(0, 5, (16,))
    for kind, m in (("cosface", 0.35), ("arcface", 0.4)):
        with_margin = MarginHead(8, 5, kind, m)
        without = MarginHead(8, 5, kind, 0.0)
        without.load_state_dict(with_margin.state_dict())
        with torch.no_grad():
            assert float(with_margin(emb, labels)) > float(without(emb, labels))


def test_verification_metrics_separate_perfect_from_random():
    labels = np.repeat(np.arange(6), 4)
    perfect = np.eye(6)[labels] + 0.01 * np.random.default_rng(0).normal(size=(24, 6))
    m = verification_metrics(perfect, labels)
    assert m["auc"] > 0.999 and m["balanced_acc"] > 0.99 and m["eer"] < 0.01 and m["neg_mean"] < m["threshold"] < m["pos_mean"]
    rand = verification_metrics(np.random.default_rng(1).normal(size=(24, 16)), labels)
    assert rand["auc"] < 0.8 and rand["eer"] > 0.2


def _tiny_cache(path, people=6, per_person=5, size=48):
    """Each synthetic person: its own colour and stripe frequency, so identities are learnable."""
    rng = np.random.default_rng(0)
    blobs, ids, lms = [], [], []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for p in range(people):
        colour = rng.uniform(0.2, 0.9, size=3)
        for _ in range(per_person):
            stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (p + 2) * (xx + rng.uniform(-0.03, 0.03)))
            img = colour * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 0.02, (size, size, 3))
            blobs.append(encode_image(np.clip(img * 255, 0, 255).astype(np.uint8), 95, "jpeg"))
            ids.append(f"lfw/p{p}")
            lms.append(np.array([[17, 22], [31, 22], [24, 29], [19, 36], [29, 36]], np.float32))
    cfg = PrepareConfig(val_fraction=0.34, val_min_images=5, split_seed=0)
    write_cache(path, pack_cache(blobs, ids, ["lfw"] * len(ids), np.stack(lms), size, cfg))


def test_trainer_runs_on_cpu_resumes_and_exports(tmp_path):
    data = tmp_path / "tiny.npz"
    _tiny_cache(data)
    out = tmp_path / "run"
    cfg = IdentityTrainConfig(data=str(data), out=str(out), minutes=1.0, total_steps=8, max_steps=3, batch_size=8,
                              model=TINY, eval_every_s=1e9, device="cpu", num_threads=1)
    first = train(cfg)
    assert first["step"] == 3 and not first["done"]
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 3
    second = train(cfg)
    assert second["step"] == 6 and second["steps_this_run"] == 3
    third = train(cfg)
    assert third["step"] == 8 and third["done"]  # the schedule ends at total_steps
    emb = load_identity_embedder(out / EXPORT_NAME)
    assert emb.metadata["final"] == "true" and emb.config.embedding_dim == 16
    assert "clean" in json.loads(emb.metadata["metrics"])
    log = (out / "train.log").read_text()
    assert "resumed from" in log and "step 8" in log


def test_identity_loss_is_zero_for_identical_and_frozen():
    torch.manual_seed(0)
    loss_fn = IdentityLoss(IdentityEmbedder(TINY))
    loss_fn.train()
    assert not loss_fn.embedder.training
    x = torch.rand(2, 3, 64, 64)
    assert float(loss_fn(x, x)) == pytest.approx(0.0, abs=1e-5)
    pred = torch.rand(2, 3, 64, 64, requires_grad=True)
    loss = loss_fn(pred, x)
    loss.backward()
    assert float(loss.detach()) > 0 and pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.embedder.parameters())


def test_random_views_first_is_the_crop_and_others_move_it():
    theta = random_views(3, 4, max_shift=0.04, max_zoom=0.06, generator=torch.Generator().manual_seed(1))
    assert theta.shape == (12, 2, 3)
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.equal(theta[:3], eye.expand(3, 2, 3))
    moved = theta[3:]
    assert not torch.allclose(moved, eye.expand(9, 2, 3))
    # zoom within +-6 %, shift within +-4 % of the crop (grid units are half-crops), mirror allowed
    assert (moved[:, 0, 0].abs() - 1).abs().max() <= 1 / 0.94 - 1 + 1e-6
    assert moved[:, :, 2].abs().max() <= 0.08 + 1e-6


def test_identity_loss_views_and_features_are_zero_only_for_the_same_face():
    torch.manual_seed(0)
    net = IdentityEmbedder(TINY)
    loss_fn = IdentityLoss(net, IdentityLossConfig(views=3, features=True))
    x = torch.rand(2, 3, 64, 64)
    same = loss_fn.terms(x, x, generator=torch.Generator().manual_seed(0))
    assert set(same) == {"identity", "identity_features"}
    assert float(same["identity"]) == pytest.approx(0.0, abs=1e-5)
    assert float(same["identity_features"]) == pytest.approx(0.0, abs=1e-5)
    pred = (x + 0.3 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    other = loss_fn.terms(pred, x, generator=torch.Generator().manual_seed(0))
    assert other["identity"].item() > 1e-3 and other["identity_features"].item() > 1e-3
    (other["identity"] + other["identity_features"]).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_identity_features_need_a_network_with_stages():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 4)

        def forward(self, x):
            return torch.nn.functional.normalize(self.lin(x.mean((2, 3))), dim=-1)

    with pytest.raises(ValueError, match="face-perceptual"):
        IdentityLoss(Plain(), IdentityLossConfig(features=True))
    assert float(IdentityLoss(Plain())(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))) >= 0
