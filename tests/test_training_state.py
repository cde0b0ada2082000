"""Training state carried between sessions: 8-bit codes, chunked files, hashes, and a resume that
continues the optimiser as the uninterrupted run would."""

import copy
import json

import pytest
import torch
from torch import nn

from restorer_core.train.quant import dequantize_log, dequantize_signed, quantize_log, quantize_signed
from restorer_core.train.training_state import (TIERS, PartialReport, StateError, entry_tier, export_state,
                                                import_state, main)


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.GELU(), nn.Conv2d(16, 8, 3), nn.Flatten(), nn.LazyLinear(4))


def _steps(model, opt, n, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(4, 3, 12, 12, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture()
def run():
    """A small restorer + EMA + discriminator with AdamW states after a few real steps."""
    model, disc = _net(0), _net(1)
    model(torch.zeros(1, 3, 12, 12)), disc(torch.zeros(1, 3, 12, 12))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    d_opt = torch.optim.AdamW(disc.parameters(), lr=2e-4, betas=(0.5, 0.99))
    ema = copy.deepcopy(model)
    for i in range(20):
        _steps(model, opt, 1, i)
        _steps(disc, d_opt, 1, 100 + i)
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 0.1)
    ckpt = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
            "disc": disc.state_dict(), "d_opt": d_opt.state_dict(), "step": 20, "elapsed": 12.5,
            "config": json.dumps({"lr": 1e-3})}
    return model, opt, ckpt


def test_signed_codes_within_half_a_step_per_block():
    t = torch.randn(1000) * torch.logspace(-6, 0, 1000)
    codes, scale = quantize_signed(t)
    back = dequantize_signed(codes, scale)
    step = scale.repeat_interleave(256)[:1000]
    assert codes.dtype == torch.int8 and codes.shape == t.shape
    assert bool(((back - t).abs() <= step / 2 + 1e-12).all())


def test_log_codes_keep_relative_precision_and_never_decode_zero():
    t = torch.rand(2000).pow(8) * 1e-6 + 1e-14  # second moments over 8 decades
    t[512:768] = 0  # a block of parameters that never had a gradient
    codes, bounds = quantize_log(t)
    back = dequantize_log(codes, bounds)
    assert bool((back[512:768] == 0).all())
    live = t > 0
    assert bool((back[live] > 0).all())
    ratio = back[live] / t[live]
    assert float(ratio.max()) < 1.06 and float(ratio.min()) > 1 / 1.06
    with pytest.raises(ValueError):
        quantize_log(torch.tensor([-1.0, 2.0]))


def test_round_trip_within_the_codes_precision(run, tmp_path):
    _, _, ckpt = run
    manifest = export_state(ckpt, tmp_path / "s", max_file_bytes=96 * 1024)
    assert len(manifest["files"]) > 1
    assert all(f["bytes"] <= 96 * 1024 for f in manifest["files"])
    back = import_state(tmp_path / "s")
    assert back["step"] == 20 and back["elapsed"] == 12.5 and back["config"] == ckpt["config"]
    for k, v in ckpt["model"].items():
        assert back["model"][k].dtype == v.dtype
        assert torch.allclose(back["model"][k], v, rtol=1e-3, atol=1e-6)
    for k, v in ckpt["ema"].items():  # an 8-bit delta to the float16 weights
        base = ckpt["model"][k].half().float()
        bound = (v - base).abs().max() / 254 + 1e-7
        assert float((back["ema"][k] - v).abs().max()) <= float(bound) + float((base - ckpt["model"][k]).abs().max())
    assert back["opt"]["param_groups"] == json.loads(json.dumps(ckpt["opt"]["param_groups"]))
    for idx, st in ckpt["opt"]["state"].items():
        got = back["opt"]["state"][idx]
        assert torch.equal(got["step"], st["step"])
        m_err = (got["exp_avg"] - st["exp_avg"]).abs().max()
        assert float(m_err) <= float(st["exp_avg"].abs().max()) / 254 + 1e-12
        rel = (got["exp_avg_sq"] / st["exp_avg_sq"].clamp_min(1e-30))[st["exp_avg_sq"] > 0]
        assert float((rel - 1).abs().max()) < 0.1
    assert set(back["d_opt"]["state"]) == set(ckpt["d_opt"]["state"])


def test_resumed_optimiser_continues_like_the_uninterrupted_run(run, tmp_path):
    model, opt, ckpt = run
    export_state(ckpt, tmp_path / "s")
    back = import_state(tmp_path / "s")
    start = {k: v.clone() for k, v in model.state_dict().items()}

    _steps(model, opt, 10, 999)  # the run as it would have gone on
    goal = torch.cat([p.detach().flatten() for p in model.parameters()])

    def resumed(with_moments: bool):
        m = _net(0)
        m(torch.zeros(1, 3, 12, 12))
        m.load_state_dict(back["model"])
        o = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.99))
        if with_moments:
            o.load_state_dict(back["opt"])
        _steps(m, o, 10, 999)
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    moved = (goal - torch.cat([start[k].flatten() for k, _ in model.named_parameters()])).abs().mean()
    carried = (resumed(True) - goal).abs().mean()
    fresh = (resumed(False) - goal).abs().mean()
    assert float(carried) < 0.02 * float(moved)
    assert float(carried) < 0.2 * float(fresh)  # carrying the moments is what keeps the trajectory


def test_files_come_in_tiers_weights_first(run, tmp_path):
    _, _, ckpt = run
    m = export_state(ckpt, tmp_path / "s", max_file_bytes=96 * 1024)
    tiers = [f["tier"] for f in m["files"]]
    assert tiers == sorted(tiers) and set(tiers) == set(range(len(TIERS)))
    for f in m["files"]:  # a file holds one tier only
        assert {entry_tier(t.split(":")[0]) for t in f["tensors"]} == {f["tier"]}
    first = m["files"][0]["tensors"]
    assert any(t.startswith("model/") for t in first)


def test_partial_state_resumes_with_the_weights_and_what_moments_came_back(run, tmp_path):
    model, opt, ckpt = run
    m = export_state(ckpt, tmp_path / "s", max_file_bytes=96 * 1024)
    for f in m["files"]:
        if f["tier"] >= 2:  # restorer first moments and the discriminator's moments did not come back
            (tmp_path / "s" / f["name"]).unlink()
    with pytest.raises(StateError, match="allow-partial"):
        import_state(tmp_path / "s")
    report = PartialReport()
    back = import_state(tmp_path / "s", allow_partial=True, report=report)
    assert report.missing_files and report.zeroed_first_moments == {"opt": len(ckpt["opt"]["state"])}
    assert report.fresh_parameters == {"d_opt": len(ckpt["d_opt"]["state"])} and back["d_opt"]["state"] == {}
    for k, v in ckpt["model"].items():
        assert torch.allclose(back["model"][k], v, atol=2e-3, rtol=2e-3)
    for idx, st in back["opt"]["state"].items():
        assert float(st["exp_avg"].abs().max()) == 0.0
        assert torch.allclose(st["exp_avg_sq"], ckpt["opt"]["state"][idx]["exp_avg_sq"], rtol=0.06, atol=0)
        assert int(st["step"]) == 20

    # both optimisers load, and the restorer goes on close to the uninterrupted run: nearer than
    # with no moments at all (Adam's first fresh steps move every weight by about lr)
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    _steps(model, opt, 10, 999)
    goal = torch.cat([p.detach().flatten() for p in model.parameters()])

    def resumed(state):
        net = _net(0)
        net(torch.zeros(1, 3, 12, 12))
        net.load_state_dict(back["model"])
        o = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.99))
        if state is not None:
            o.load_state_dict(state)
        _steps(net, o, 10, 999)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    d_net = _net(1)
    d_net(torch.zeros(1, 3, 12, 12))
    d_net.load_state_dict(back["disc"])
    torch.optim.AdamW(d_net.parameters(), lr=2e-4, betas=(0.5, 0.99)).load_state_dict(back["d_opt"])
    partial = (resumed(back["opt"]) - goal).abs().mean()
    fresh = (resumed(None) - goal).abs().mean()
    assert float(partial) < float(fresh)
    assert float(partial) < 0.6 * float(fresh)  # measured: about half

    (tmp_path / "s" / m["files"][0]["name"]).unlink()  # a weights file lost: nothing to resume
    with pytest.raises(StateError, match="weight tensors"):
        import_state(tmp_path / "s", allow_partial=True)


def test_broken_or_missing_files_are_clear_errors(run, tmp_path):
    _, _, ckpt = run
    m = export_state(ckpt, tmp_path / "s", max_file_bytes=96 * 1024)
    with pytest.raises(StateError, match="already holds"):
        export_state(ckpt, tmp_path / "s")
    victim = tmp_path / "s" / m["files"][1]["name"]
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(StateError, match="sha256"):
        import_state(tmp_path / "s")
    victim.unlink()
    with pytest.raises(StateError, match="missing"):
        import_state(tmp_path / "s")
    with pytest.raises(StateError, match="manifest.json"):
        import_state(tmp_path)


def test_cli_round_trip_refuses_to_overwrite(run, tmp_path, capsys):
    _, _, ckpt = run
    src = tmp_path / "checkpoint.pt"
    torch.save(ckpt, src)
    assert main(["export", "--checkpoint", str(src), "--out", str(tmp_path / "s")]) == 0
    dest = tmp_path / "run" / "checkpoint.pt"
    assert main(["import", "--state", str(tmp_path / "s"), "--checkpoint", str(dest)]) == 0
    loaded = torch.load(dest, map_location="cpu", weights_only=True)
    assert loaded["step"] == 20 and set(loaded) >= {"model", "ema", "opt", "disc", "d_opt"}
    before = dest.read_bytes()
    assert main(["import", "--state", str(tmp_path / "s"), "--checkpoint", str(dest)]) == 2
    assert "exists" in capsys.readouterr().err and dest.read_bytes() == before


def test_a_real_runs_state_becomes_the_restorer_the_run_exported(tmp_path, capsys):
    """`restorer` rebuilds the EMA restorer from the state files alone (its config travels in them)."""
    from restorer_core.loaders.project_format import load_restorer
    from restorer_core.train.prepare import write_cache
    from restorer_core.train.train_restorer import TrainConfig, train
    from test_train_data import _synthetic

    cache = tmp_path / "faces.npz"
    write_cache(cache, _synthetic()[0])
    cfg = TrainConfig(data=str(cache), out=str(tmp_path / "run"), minutes=0.0, batch_size=2,
                      num_workers=0, resolution=64, val_samples=2, log_every=1, warmup_steps=1,
                      total_steps=10)
    train(cfg)
    assert main(["export", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"),
                 "--out", str(tmp_path / "s")]) == 0
    dest = tmp_path / "candidate.safetensors"
    assert main(["restorer", "--state", str(tmp_path / "s"), "--out", str(dest)]) == 0
    got = load_restorer(dest)
    exported = load_restorer(tmp_path / "run" / "restorer.safetensors")
    assert got.config == exported.config and got.source.info["training"]["step"] == 1
    ema = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["ema"]
    for k, v in got.state_dict().items():
        want = ema[k].float()
        # float16 file of an 8-bit delta to the float16 weights: within a few codes of the EMA
        assert float((v - want).abs().max()) <= 2e-3 * float(want.abs().max()) + 1e-4, k
    before = dest.read_bytes()
    assert main(["restorer", "--state", str(tmp_path / "s"), "--out", str(dest)]) == 2
    assert "never overwritten" in capsys.readouterr().err and dest.read_bytes() == before
