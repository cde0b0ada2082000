"""The batch CLI under torchrun: shards, devices, merged reports, and a real 2-process CPU run
that must write the files and pixels a single-process run writes."""

from __future__ import annotations

import datetime
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from restorer_core.cli.distributed import (DistContext, context_from_env, merge_reports, rank_device,
                                       rank_report_path, shard_indices)
from restorer_core.io.report import FAILED, RESTORED, ImageRecord, RunReport

REPO = Path(__file__).resolve().parents[1]
TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                "MASTER_PORT", "TORCHELASTIC_RUN_ID")


# ----------------------------------------------------------------------------- pure helpers


def test_context_from_env():
    assert not context_from_env({}).enabled and context_from_env({}).is_main
    assert not context_from_env({"WORLD_SIZE": "1", "RANK": "0"}).enabled
    ctx = context_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (ctx.enabled, ctx.is_main, ctx.rank, ctx.world_size, ctx.local_rank) == (True, False, 3, 4, 1)
    for bad in ({"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "2"}, {"WORLD_SIZE": "two", "RANK": "0"},
                {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "-1"}):
        with pytest.raises(ValueError, match="torchrun"):
            context_from_env(bad)


def test_rank_device():
    single, second = DistContext(), DistContext(rank=1, world_size=2, local_rank=1)
    assert rank_device("cuda:3", single, 0) == "cuda:3"  # outside torchrun: untouched
    assert rank_device("auto", second, 0) == "cpu"
    assert rank_device("cpu", second, 2) == "cpu"
    assert rank_device("auto", second, 2) == rank_device("cuda", second, 2) == "cuda:1"
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
        rank_device("cuda:0", second, 2)  # another rank's GPU
    with pytest.raises(ValueError, match="nproc_per_node 1"):
        rank_device("auto", second, 1)  # more processes than GPUs


def test_shards_are_whole_chunks_and_keep_equal_stems_together():
    rng = random.Random(0)
    for trial in range(200):
        n, world, chunk = rng.randint(0, 30), rng.randint(1, 5), rng.randint(1, 4)
        names = [f"{rng.choice('abcdefghijklmnop')}/{rng.choice(['x', 'y', 'Z', 'z', 'w', str(trial)])}"
                 f"{rng.randint(0, 12)}.{rng.choice(['png', 'jpg'])}" for _ in range(n)]
        shards = [shard_indices(names, r, world, chunk) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(n))  # each input exactly once
        chunks = [list(range(s, min(s + chunk, n))) for s in range(0, n, chunk)]
        for shard in shards:
            assert shard == sorted(shard)
            # run_restore re-chunks a shard into exactly the single-process chunks
            assert all(shard[k:k + chunk] in chunks for k in range(0, len(shard), chunk))
        owner = {i: r for r, s in enumerate(shards) for i in s}
        stems: dict = {}
        for i, name in enumerate(names):
            stems.setdefault(Path(name).stem.lower(), set()).add(owner[i])
        assert all(len(ranks) == 1 for ranks in stems.values())
    unique = [f"img{i}.png" for i in range(7)]
    assert [shard_indices(unique, r, 3, 1) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    with pytest.raises(ValueError):
        shard_indices(unique, 3, 3, 1)


def test_merge_reports_orders_images_and_recomputes_status():
    inputs = ["a.png", "b.png", "c.png"]
    main, other = RunReport(settings={"seed": 1}, notes=["n"]), RunReport(notes=["n", "m"])
    main.images = [ImageRecord("c.png", status=RESTORED), ImageRecord("a.png", status=RESTORED)]
    other.images = [ImageRecord("b.png", status=FAILED)]
    main.finish(), other.finish()
    other.started = main.started - 5
    other.reference_cache = {"status": "hit"}
    merged = merge_reports([main, other], inputs, note="shared")
    assert [im.input for im in merged.images] == inputs
    assert merged.status == "failed" and merged.settings == {"seed": 1}
    assert merged.notes == ["n", "m", "shared"] and merged.reference_cache == {"status": "hit"}
    assert merged.started == other.started and merged.totals()["images"] == 3
    assert [im.input for im in main.images] == ["c.png", "a.png"]  # the parts are left alone


def test_rank_report_path_never_overwrites(tmp_path):
    ctx = DistContext(rank=1, world_size=2, local_rank=1)
    assert rank_report_path(tmp_path / "r.json", ctx) == tmp_path / "r.rank1.json"
    (tmp_path / "r.rank1.json").write_text("{}")
    assert rank_report_path(tmp_path / "r.json", ctx) == tmp_path / "r.rank1_1.json"


# ----------------------------------------------------------------------------- two CPU processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gloo_problem() -> str:
    """Why a local gloo process group cannot start here ("" when it can)."""
    dist = torch.distributed
    if not dist.is_available() or not dist.is_gloo_available():
        return "this torch has no gloo backend"
    if dist.is_initialized():
        return "a process group is already running in the test process"
    try:
        store = dist.TCPStore("127.0.0.1", _free_port(), 1, True, timeout=datetime.timedelta(seconds=20))
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        dist.barrier()
    except Exception as exc:  # any failure to start means: skip, with the reason
        return f"local gloo backend cannot start on 127.0.0.1 ({type(exc).__name__}: {exc})"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return ""


@pytest.fixture(scope="module")
def inputs(real_lq_dir, tmp_path_factory) -> list:
    """Three small real photos (two share the stem Blake_Lively) and a broken file, in an order
    where inputs[rank::2] would split both the shared stem and the batch-size-2 chunks."""
    from restorer_core.io.imageio import load_image, save_image

    root = tmp_path_factory.mktemp("inputs")
    (root / "a").mkdir()
    (root / "b").mkdir()

    def half(path: Path) -> np.ndarray:
        im = load_image(path).rgb8
        return cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2), interpolation=cv2.INTER_AREA)

    files = [save_image(root / "a" / "Blake_Lively.png", half(real_lq_dir / "gfpgan/whole_imgs/Blake_Lively.jpg")),
             save_image(root / "b" / "Blake_Lively.png", load_image(real_lq_dir / "codeformer/whole_imgs/04.jpg").rgb8),
             root / "a" / "broken.png",
             save_image(root / "a" / "example.png", half(real_lq_dir / "vqfr/whole_imgs/example.jpg"))]
    files[2].write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return files


def _arguments(files, out: Path, model: Path, refs: Path) -> list:
    return ["restore", *map(str, files), "--out", str(out), "--model", str(model), "--refs", str(refs),
            "--batch-size", "2", "--quiet"]


def test_two_cpu_processes_match_a_single_process_run(inputs, model_file, real_lq_dir, tmp_path, monkeypatch):
    from restorer_core.cli import main
    from restorer_core.io.imageio import load_image

    problem = _gloo_problem()
    if problem:
        pytest.skip(problem)
    refs = real_lq_dir / "lfw_references" / "Eliane_Karp"

    # one process, in this one, one intra-op thread like each torchrun worker
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ONESTEP_FACE_RESTORE_CACHE", str(tmp_path / "cache_single"))
    single, threads = tmp_path / "single", torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_arguments(inputs, single, model_file, refs)) == 1  # the broken file
    finally:
        torch.set_num_threads(threads)
    assert not torch.distributed.is_initialized()  # no WORLD_SIZE: no process group

    # two processes through torchrun, on 127.0.0.1 only
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", ONESTEP_FACE_RESTORE_CACHE=str(tmp_path / "cache_multi"))
    multi = tmp_path / "multi"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "restorer_core",
           *_arguments(inputs, multi, model_file, refs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 1, proc.stderr[-4000:]  # some image failed, as in one process

    names = sorted(p.name for p in single.iterdir())
    assert names == ["Blake_Lively_restored.png", "Blake_Lively_restored_1.png", "example_restored.png",
                     "restore_report.json"]
    assert sorted(p.name for p in multi.iterdir()) == names  # one report, no part files, no temp files
    for name in names[:-1]:
        a, b = load_image(single / name).pixels, load_image(multi / name).pixels
        assert a.shape == b.shape and np.array_equal(a, b), name

    one = json.loads((single / "restore_report.json").read_text())
    merged = json.loads((multi / "restore_report.json").read_text())
    assert [im["input"] for im in merged["images"]] == [str(p) for p in inputs]  # each once, in order
    for a, b in zip(one["images"], merged["images"]):
        assert (a["status"], a["faces_restored"], a["faces_kept"], a["error"]) == \
            (b["status"], b["faces_restored"], b["faces_kept"], b["error"])
        assert (Path(a["output"]).name if a["output"] else None) == (Path(b["output"]).name if b["output"] else None)
        assert b["output"] is None or Path(b["output"]).parent == multi
    assert merged["status"] == one["status"] == "failed"
    assert merged["totals"]["faces_restored"] == one["totals"]["faces_restored"] >= 3
    assert merged["totals"]["faces_kept"] == one["totals"]["faces_kept"]
    assert one["totals"]["faces_restored"] + one["totals"]["faces_kept"] >= 5
    assert any("2 processes" in n for n in merged["notes"])
    assert merged["reference_cache"]["status"] == "miss"  # rank 0 computed the K/V; the other read them
    assert len(list((tmp_path / "cache_multi").glob("kv-*.safetensors"))) == 1
