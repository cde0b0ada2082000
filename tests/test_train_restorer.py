"""The restorer training loop: time-boxed chunks that checkpoint, resume and export."""

import json

import pytest
import torch

from restorer_core.loaders.project_format import load_restorer
from restorer_core.train.prepare import write_cache
from restorer_core.train.train_restorer import TrainConfig, lr_at, train
from test_train_data import _synthetic


def _config(tmp_path, cache):
    return TrainConfig(data=str(cache), out=str(tmp_path / "run"), minutes=0.0, batch_size=2,
                       num_workers=0, resolution=64, val_samples=2, log_every=1, warmup_steps=1,
                       total_steps=10)


def test_chunks_resume_from_the_checkpoint_and_export_a_loadable_restorer(tmp_path):
    cache = tmp_path / "faces.npz"
    write_cache(cache, _synthetic()[0])
    cfg = _config(tmp_path, cache)

    first = train(cfg)  # minutes=0: exactly one step, then checkpoint + export
    assert first["step"] == 1
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)  # tensors only
    assert state["step"] == 1 and set(state) >= {"model", "ema", "opt"}

    cfg.identity_views = 2  # the resumed chunk also trains the face-perceptual term
    cfg.weights.identity_features = 0.5
    second = train(cfg)  # a new call resumes where the first stopped
    assert second["step"] == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    rows = [r for r in log if "l1" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert "identity_features" not in rows[0] and rows[1]["identity_features"] > 0

    model = load_restorer(tmp_path / "run" / "restorer.safetensors")
    assert model.config.resolution == 64 and model.source.info["training"]["step"] == 2
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


def test_learning_rate_schedule_warms_up_then_decays():
    cfg = TrainConfig(data="", out="", lr=1e-3, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) < lr_at(9, cfg) == 1e-3
    assert abs(lr_at(10, cfg) - 1e-3) < 1e-12
    assert abs(lr_at(110, cfg) - 1e-4) < 1e-12 and lr_at(60, cfg) < 1e-3


def test_discriminator_comes_back_in_float16_and_starts_a_later_run(tmp_path):
    from safetensors.torch import load_file, save_file

    from restorer_core.train.gan import MultiScaleDiscriminator
    from restorer_core.train.train_restorer import DISCRIMINATOR_FILE, load_discriminator

    cache = tmp_path / "faces.npz"
    write_cache(cache, _synthetic()[0])
    cfg = _config(tmp_path, cache)
    train(cfg)
    saved = tmp_path / "run" / DISCRIMINATOR_FILE
    tensors = load_file(saved)
    assert tensors and all(t.dtype == torch.float16 for t in tensors.values())
    trained = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["disc"]
    fresh = MultiScaleDiscriminator()
    load_discriminator(fresh, str(saved))
    for k, v in fresh.state_dict().items():  # the checkpoint's weights, to float16 precision
        assert torch.allclose(v, trained[k].float(), rtol=1e-3, atol=1e-4), k

    bad = tmp_path / "other.safetensors"
    save_file({k: v for k, v in list(tensors.items())[1:]}, str(bad))
    other = _config(tmp_path / "b", cache)
    other.init_discriminator = str(bad)
    with pytest.raises(ValueError, match="does not hold this discriminator"):
        train(other)  # a new run reads the file it is given, and refuses one that does not fit


def test_identity_loss_network_is_the_file_given(tmp_path):
    from restorer_core.errors import ModelNotFoundError

    cache = tmp_path / "faces.npz"
    write_cache(cache, _synthetic()[0])
    cfg = _config(tmp_path, cache)
    cfg.identity_loss_network = str(tmp_path / "missing_face_id.safetensors")
    with pytest.raises(ModelNotFoundError, match="missing_face_id"):
        train(cfg)  # read before any step: a wrong path fails at once
