"""Persisted compiled code (restorer_core.models.compile_cache), the compile-or-fall-back runner, the
speed policy and batch padding.

torch.compile itself takes minutes on these 2 CPU cores, so the runner tests put a stand-in in
place of the compiled function (`fast.compiled_step`) and of torch's two cache-artefact calls;
everything of this project around them runs for real. The real compile + save + load round trip
(a fresh process loading what another one saved) is `benchmarks/gpu_speed_cold.py --tiny` on the
CPU and without --tiny on a GPU; only the GPU run measures the time it saves.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os

import numpy as np
import pytest
import torch

from tiny_models import tiny_config
from restorer_core.models import compile_cache as cc
from restorer_core.models import fast
from restorer_core.models.restorer import OneStepRestorer


def _model(seed: int = 0, **cfg_changes) -> OneStepRestorer:
    cfg = tiny_config(noisy=True)
    for k, v in cfg_changes.items():
        setattr(cfg, k, v) if not isinstance(v, dict) else getattr(cfg, k).update(v)
    torch.manual_seed(seed)
    return OneStepRestorer(cfg).eval()


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def refs(model):
    with torch.no_grad():
        return model.encode_references(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5)),
                                       generator=torch.Generator().manual_seed(2))


def _sig(batch: int = 8, refs: int = 2) -> tuple:
    return (("x", ((batch, 3, 64, 64), torch.float32)), ("refs", refs))


def _key(model, batch: int = 8, sig=None, label: str = "compile[default]") -> cc.CompileKey:
    return cc.make_key(model, label, sig or _sig(batch), batch)


# ----------------------------------------------------------------------------- the key
def test_key_is_equal_for_equal_inputs_and_ignores_weight_values(model):
    twin = _model(seed=0)
    other_values = _model(seed=1)  # same architecture, other weights: compiled code is shared
    assert _key(model) == _key(twin) == _key(other_values)
    assert _key(model).file_name() == _key(twin).file_name()
    assert model.weight_hash() != other_values.weight_hash()


def test_key_differs_for_everything_the_compiled_code_depends_on(model, monkeypatch):
    base = _key(model)
    seen = {base.file_name()}

    def differs(key: cc.CompileKey, what: str) -> None:
        assert key != base and key.file_name() not in seen, what
        seen.add(key.file_name())

    differs(_key(model, batch=1), "batch")
    differs(cc.make_key(model, "compile[default]", _sig(8, refs=4), 8), "input signature (reference count)")
    differs(_key(model, label="compile[default,coordinate_descent_tuning]"), "speed config")
    differs(_key(copy.deepcopy(model).to(torch.bfloat16)), "dtype")
    wider = _model(unet=dict(block_out_channels=(32, 64, 64)))
    differs(_key(wider), "another architecture (two different models)")
    differs(_key(_model(resolution=128)), "resolution")
    cl = copy.deepcopy(model)
    cl.set_channels_last(True)
    differs(_key(cl), "weights layout (memory format)")
    with monkeypatch.context() as m:
        m.setattr(torch, "__version__", "2.11.0+cu130")
        differs(_key(model), "torch version")
    with monkeypatch.context() as m:
        m.setattr(cc, "device_name", lambda device: "NVIDIA H100 80GB HBM3 (sm90)")
        h100 = _key(model)
        differs(h100, "GPU")
        m.setattr(cc, "device_name", lambda device: "NVIDIA H200 (sm90)")
        differs(_key(model), "another GPU of the same architecture")
    with monkeypatch.context() as m:
        m.setattr(cc, "_triton_version", lambda: "3.5.0")
        differs(_key(model), "triton version")
    assert base.resolution == 64 and base.batch == 8 and base.dtype == "float32"


def test_default_folder_follows_env_and_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv(cc.CACHE_ENV, str(tmp_path / "mine"))
    assert cc.default_compile_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(cc.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cc.default_compile_cache_dir() == tmp_path / "xdg" / "onestep-face-restore" / "compiled"


# ----------------------------------------------------------------------------- the store
def test_store_and_load_round_trip(model, tmp_path):
    cache = cc.CompileCache(tmp_path / "compiled")
    key = _key(model)
    payload = os.urandom(5000)
    path = cache.store(key, payload)
    assert path == tmp_path / "compiled" / key.file_name()
    assert cache.load(key) == payload
    assert cache.load(_key(model, batch=1)) is None  # nothing stored for that one


def test_failed_write_leaves_no_partial_file_and_keeps_the_good_one(model, tmp_path, monkeypatch):
    cache = cc.CompileCache(tmp_path)
    key = _key(model)
    good = b"good artefact" * 100
    cache.store(key, good)

    def dies(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", dies)  # the bytes are written, the file is not yet in place
    with pytest.raises(OSError, match="No space"):
        cache.store(key, b"new artefact" * 100)
    with pytest.raises(OSError, match="No space"):
        cache.store(_key(model, batch=1), b"other" * 100)
    assert sorted(p.name for p in tmp_path.iterdir()) == [key.file_name()]  # no temp file, no new file
    monkeypatch.undo()
    assert cache.load(key) == good


def _tamper(path, how: str, other=None) -> None:
    blob = path.read_bytes()
    if how == "flip":
        path.write_bytes(blob[:-10] + bytes([blob[-10] ^ 0xFF]) + blob[-9:])
    elif how == "truncate":
        path.write_bytes(blob[: len(blob) - 100])
    elif how == "cut_header":
        path.write_bytes(blob[: len(cc.MAGIC) + 20])
    elif how == "foreign":
        path.write_bytes(other.read_bytes())
    elif how == "wrong_hash":
        path.write_bytes(blob.replace(b'"sha256": "', b'"sha256": "0', 1))
    elif how == "not_ours":
        path.write_bytes(b"\x80\x04\x95 a pickle, say" + blob[len(cc.MAGIC):])


@pytest.mark.parametrize("how, said", [("flip", "damaged"), ("truncate", "truncated"),
                                       ("cut_header", "truncated"), ("foreign", "another key"),
                                       ("wrong_hash", "damaged"), ("not_ours", "not a compiled-code file")])
def test_bad_artefacts_are_reported_removed_and_never_reach_torch(model, tmp_path, monkeypatch, caplog, how, said):
    cache = cc.CompileCache(tmp_path)
    key, other_key = _key(model), _key(model, batch=1)
    cache.store(key, b"P" * 4000)
    other = cache.store(other_key, b"Q" * 4000)  # a real artefact, of another key
    _tamper(cache.path(key), how, other)
    handed = []
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda data: handed.append(data) or object())
    with caplog.at_level(logging.WARNING, logger=cc.__name__):
        assert cc.PersistedCompile(cache).load(key) is False
    assert handed == []
    lines = [r.getMessage() for r in caplog.records if r.name == cc.__name__]
    assert len(lines) == 1 and said in lines[0] and "removed" in lines[0]
    assert not cache.path(key).exists() and other.exists()
    assert cc.PersistedCompile(cache).load(other_key) is True and handed == [b"Q" * 4000]


# ----------------------------------------------------------------------------- the runner
class _FakeTorchCache:
    """torch.compiler.save/load_cache_artifacts as the runner sees them: records what it gets."""

    def __init__(self):
        self.loaded: list = []
        self.saves = 0

    def save(self):
        self.saves += 1
        return (f"compiled-code-{self.saves}".encode() * 50, None)

    def load(self, data):
        self.loaded.append(data)
        return object()


@pytest.fixture
def torch_cache(monkeypatch):
    fake = _FakeTorchCache()
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", fake.save)
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", fake.load)
    return fake


@pytest.fixture
def compiles(monkeypatch):
    """fast.compiled_step -> the plain step (torch.compile's stand-in), counting the calls."""
    calls = []

    def fake_compiled_step(mode, inductor=()):
        def step(restorer, **inputs):
            calls.append(inputs["x"].shape[0])
            return fast.run_step(restorer, **inputs)
        return step
    monkeypatch.setattr(fast, "compiled_step", fake_compiled_step)
    return calls


def _gens(n: int, seed: int = 0) -> list:
    return [torch.Generator().manual_seed(seed) for _ in range(n)]


def test_first_compile_is_announced_and_saved_later_runners_load_it(model, refs, tmp_path, torch_cache,
                                                                    compiles, caplog):
    from restorer_core.restore.pipeline import make_runner

    lq = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with caplog.at_level(logging.WARNING):
        first = make_runner(copy.deepcopy(model), "compile", compile_cache=tmp_path)
        out1 = first(lq, refs, generator=_gens(2))
        first(lq, refs, generator=_gens(2))  # same shape: no second compile, no second line
    said = [r.getMessage() for r in caplog.records]
    assert sum("compiling the restore step" in s for s in said) == 1
    assert any("compiling the restore step" in s and str(tmp_path) in s and "batch 2" in s for s in said)
    assert sum("saved" in s for s in said) == 1 and torch_cache.saves == 1
    files = list(tmp_path.glob("*" + cc.SUFFIX))
    assert len(files) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # "a new process": a fresh runner with the file present
        second = make_runner(copy.deepcopy(model), "compile", compile_cache=tmp_path)
        out2 = second(lq, refs, generator=_gens(2))
    assert torch_cache.loaded == [b"compiled-code-1" * 50] and torch_cache.saves == 1
    assert not [r for r in caplog.records if "compiling" in r.getMessage()]
    assert torch.equal(out1, out2)
    # a damaged file is reported, not handed to torch, compiled again and saved again
    _tamper(files[0], "flip")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third = make_runner(copy.deepcopy(model), "compile", compile_cache=tmp_path)
        third(lq, refs, generator=_gens(2))
    said = [r.getMessage() for r in caplog.records]
    assert len(torch_cache.loaded) == 1 and torch_cache.saves == 2
    assert any("damaged" in s for s in said) and any("compiling the restore step" in s for s in said)
    assert cc.CompileCache(tmp_path).load(cc.make_key(third.restorer, third.speed.label(), next(iter(
        third.fast._compiled)), 2)) == b"compiled-code-2" * 50  # (no offloading on the CPU: same label)


def test_compile_failure_falls_back_to_the_graph_path_with_one_line_and_the_same_faces(model, refs, tmp_path,
                                                                                      monkeypatch, caplog):
    from restorer_core.restore.pipeline import make_runner

    def broken_compiled_step(mode, inductor=()):
        def step(restorer, **inputs):
            raise RuntimeError("Cannot find a working triton installation.\nmore detail")
        return step
    monkeypatch.setattr(fast, "compiled_step", broken_compiled_step)
    lq = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    graph = make_runner(copy.deepcopy(model), "graph")
    with torch.inference_mode():
        expected = graph(lq, refs, generator=_gens(3, seed=7))
    runner = make_runner(copy.deepcopy(model), "compile", compile_cache=tmp_path)
    assert runner.compiles and runner.restorer.speed_settings()["channels_last"]
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        got = runner(lq, refs, generator=_gens(3, seed=7))  # noisy model: the generators are rewound
        again = runner(lq, refs, generator=_gens(3, seed=7))
    failed = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(failed) == 1 and "triton" in failed[0] and "\n" not in failed[0]
    assert runner.speed == graph.speed and not runner.compiles
    assert not runner.restorer.speed_settings()["channels_last"]  # the graph path's layout
    assert torch.equal(got, expected) and torch.equal(again, expected)
    assert list(tmp_path.iterdir()) == []  # nothing saved for a failed compile


# ----------------------------------------------------------------------------- the policy
def test_auto_compiles_on_cuda_only_and_graph_keeps_the_old_default(model):
    from restorer_core.restore.pipeline import speed_config

    cpu = speed_config(model, "auto")
    assert cpu.cuda_graph and cpu.fuse_upsample and not cpu.compile_mode and not cpu.channels_last
    gpu = speed_config(model, "auto", device="cuda")  # where it will run (a host moves it there)
    assert gpu.compile_mode == "default" and gpu.cuda_graph and gpu.channels_last and gpu.wide_head_attention
    assert speed_config(model, "graph", device="cuda") == cpu
    assert speed_config(model, "compile") == gpu
    assert speed_config(model, "eager", device="cuda") is None


# ----------------------------------------------------------------------------- padding
def test_noise_of_a_face_does_not_depend_on_its_batch(model):
    x8 = torch.zeros(8, 3, 64, 64)
    n8 = model.draw_noise(x8, _gens(8, seed=3))
    n3 = model.draw_noise(x8[:3], _gens(3, seed=3))
    assert torch.equal(n8.sample[:3], n3.sample) and torch.equal(n8.time[:3], n3.time)


def test_padding_never_changes_the_real_faces(model, refs):
    lq = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    other = lq.clone()
    other[3:] = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(9))  # other padding
    runner = fast.FastRestorer(model)
    with torch.inference_mode():
        alone = runner(lq[:3], refs, generator=_gens(3))
        padded = runner(lq, refs, generator=_gens(8))[:3]
        padded_other = runner(other, refs, generator=_gens(8))[:3]
    assert torch.equal(padded, padded_other)  # what pads the batch does not reach the real rows
    assert (padded - alone).abs().max() < 1e-5  # batch 8 vs 3: the same faces (float rounding)


def test_pipeline_pads_partial_batches_while_compiled_only(model, tmp_path, torch_cache, compiles):
    from restorer_core.faces.records import AlignedFace, DetectedFace
    from restorer_core.restore.pipeline import FaceRestorePipeline, RestoreOptions

    rng = np.random.default_rng(0)
    det = DetectedFace(np.array([0, 0, 64, 64], np.float32), 0.9, np.zeros((5, 2), np.float32))
    faces = [AlignedFace(crop=rng.random((64, 64, 3), dtype=np.float32), matrix=np.eye(2, 3), inverse=np.eye(2, 3),
                         detection=det, image_index=0, face_index=i) for i in range(5)]
    options = RestoreOptions(batch_size=4, strength=1.0, detail_transfer=False)
    compiled = FaceRestorePipeline(copy.deepcopy(model), speed="compile", compile_cache=tmp_path)
    graph = FaceRestorePipeline(copy.deepcopy(model), speed="graph")
    a = compiled.restore_faces(faces, options=options)
    b = graph.restore_faces(faces, options=options)
    assert compiles[0] == 4 and set(compiles) == {4}  # 4 + 1 faces ran as two batches of 4
    assert len(list(tmp_path.glob("*" + cc.SUFFIX))) == 1  # one batch shape, one compile
    assert [f.face_index for f in a] == list(range(5))
    for fa, fb in zip(a, b):
        assert np.abs(fa.restored - fb.restored).max() < 2e-5
    assert graph.batch_shape(1, options) == 1 and compiled.batch_shape(1, options) == 4


def test_stored_code_that_torch_does_not_take_is_said_and_stored_anew(model, refs, tmp_path, torch_cache,
                                                                     compiles, monkeypatch, caplog):
    """A verified artefact whose entries Inductor still misses on (its own keys differ) means a
    full compile: said in one line and saved again, so the next start gets code that fits."""
    from torch._dynamo.utils import counters

    from restorer_core.restore.pipeline import make_runner

    lq = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    make_runner(copy.deepcopy(model), "compile", compile_cache=tmp_path)(lq, refs, generator=_gens(2))
    assert torch_cache.saves == 1

    def missing_compiled_step(mode, inductor=()):
        def step(restorer, **inputs):
            counters["inductor"]["fxgraph_cache_miss"] += 1  # what Inductor counts when it compiles
            return fast.run_step(restorer, **inputs)
        return step
    monkeypatch.setattr(fast, "compiled_step", missing_compiled_step)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_runner(copy.deepcopy(model), "compile", compile_cache=tmp_path)(lq, refs, generator=_gens(2))
    said = [r.getMessage() for r in caplog.records]
    assert len(torch_cache.loaded) == 1 and torch_cache.saves == 2
    assert sum("did not fit" in s for s in said) == 1 and sum("saved" in s for s in said) == 1
