#!/usr/bin/env python
"""The speed users get in a NEW process (issue 12): compile once, then load the compiled code.

Full-size InstantRestore architecture (random weights), 512x512 faces, 4 cached references,
one dtype (default fp16). Steps, each in its own fresh Python process with an EMPTY Inductor /
Triton cache folder of its own (so only this project's compile cache can carry compiled code
from one process to the next), the compile cache folder shared:

1. compile  speed "auto" (pipeline.make_runner: compile + CUDA graph with the persisted cache)
            for every batch size: the cold compile, saved into the compile cache;
2. load     one new process per batch size with the artefact present: time to first face
            (from process start: imports, model build, reference K/V, load + trace, capture)
            and steady ms/face; other weights than step 1 (same layout): the compiled code
            does not depend on the values (checked against this process's own eager output);
3. nodes    the ComfyUI nodes' path through the comfy stand-in (tests/comfy_stub): Load Face
            Restorer with the default speed ("auto") and precision fp16, then the restore op on
            16 faces (2 batches of 8; the model file read is replaced by the built model, the
            reference K/V by the same cached K/V; strength 1, i.e. auto_strength off, so that
            every face runs through the restorer); ms/face per node run, CUDA graphs captured
            per run as in ComfyUI;
4. rows     in this process: the official-style path and today's CUDA-graph path ("graph"),
            gpu_speed.py's code, same dtype and batches.

    python benchmarks/gpu_speed_cold.py --out "$OUT"                  # H100: ~7-8 min
    python benchmarks/gpu_speed_cold.py --tiny --out /tmp/cold_tiny   # CPU: every code path

Writes gpu_speed_cold.json / .md (after every step, so a timeout keeps the rows) and each
step's log under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

CACHE_SUBDIR = ("models", "face_restore_onestep_cache", "compiled")  # = the nodes' folder under the stub base
COST_S = {"compile": 110, "load": 45, "nodes": 70, "rows": 120}  # per step (H100, fp16, per batch for compile)


# ----------------------------------------------------------------------------------- child side
def _build(dev, dtype, tiny: bool, seed: int):
    import torch

    from gpu_speed import tiny_architectures
    from restorer_core.models import sd_configs
    from restorer_core.models.config import RestorerConfig
    from restorer_core.models.restorer import OneStepRestorer

    d = sd_configs.full_size_config("instantrestore")
    if tiny:
        arch = tiny_architectures(64)
        d.update(unet=arch["unet"], vae=arch["vae"], resolution=64)
    torch.manual_seed(seed)
    with torch.device(dev):
        restorer = OneStepRestorer(RestorerConfig(**d))
    return restorer.to(dtype).eval()


def _inputs(dev, res: int, batch: int, refs: int):
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, res, res, generator=g).to(dev), torch.rand(refs, 3, res, res, generator=g).to(dev)


def _counters() -> dict:
    from torch._dynamo.utils import counters

    return {f"{k}.{n}": v for k in ("inductor", "aot_autograd") for n, v in counters[k].items()
            if "cache" in n or n == "ok"}


def child_restore(a) -> dict:
    """Steps 1 and 2: make_runner(speed) on a fresh model; per batch: first call, steady ms/face."""
    import torch

    from gpu_speed import DTYPES, Bench, BenchSettings, gen, rel_l2
    from restorer_core.restore.pipeline import make_runner

    t_import = time.time() - a.t0
    dev = torch.device("cpu" if a.tiny else "cuda")
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    dtype = DTYPES[a.dtype]
    res = 64 if a.tiny else 512
    b = Bench(BenchSettings(tiny=a.tiny, device=str(dev), dtypes=[a.dtype], batches=a.batches, refs=a.refs,
                            resolution=res, warmup=1 if a.tiny else 3, iters=a.iters, official_iters=1,
                            compile_mode=None, compile_dtypes=[], budget_s=1e9, seed=0, out=a.out, paths=[]))
    restorer = _build(dev, dtype, a.tiny, a.seed)
    lq, ref_imgs = _inputs(dev, res, max(a.batches), a.refs)
    with torch.no_grad():
        refs = restorer.encode_references(ref_imgs, generator=gen(dev, 2))
        eager = {n: restorer(lq[:n], refs, generator=gen(dev, 1)).float().cpu() for n in a.batches}
    runner = make_runner(restorer, a.speed, compile_cache=a.cache)
    out = dict(role=a.role, speed=a.speed, seed=a.seed, import_s=t_import, batches=[])
    for n in a.batches:
        before = _counters()
        b.sync()
        t = time.time()
        y = runner(lq[:n], refs, generator=gen(dev, 1)).float().cpu()
        first_call = time.time() - t
        entry = dict(batch=n, time_to_first_face_s=time.time() - a.t0, first_call_s=first_call,
                     rel_err_vs_eager=rel_l2(y, eager[n]), label=runner.speed.label(),
                     fell_back=getattr(runner, "failure", None),
                     cache_counters={k: v - before.get(k, 0) for k, v in _counters().items()})
        b.reset_memory()
        times = b.time_ms(lambda: runner(lq[:n], refs, generator=gen(dev, 1)), b.s.warmup, a.iters)
        entry.update(ms_per_face=statistics.median(times) / n, peak_gib=b.peak_gib())
        out["batches"].append(entry)
        print(f"[{a.role}] {json.dumps(entry)}", flush=True)
        if hasattr(runner, "release_graphs"):
            runner.release_graphs()
    out["artefacts"] = {p.name: p.stat().st_size for p in Path(a.cache).glob("*.compiled")}
    return out


def child_nodes(a) -> dict:
    """Step 3: the nodes' path through the comfy stand-in."""
    os.environ["COMFY_STUB_BASE_DIR"] = a.stub_base
    stub = REPO / "tests" / "comfy_stub"
    sys.path.insert(0, str(stub))
    import numpy as np
    import torch

    from gpu_speed import gen
    from harness import load_pack

    t_import = time.time() - a.t0
    pack = load_pack()
    loader_mod = sys.modules[f"{pack.__name__}.nodes.loader"]
    ops = sys.modules[f"{pack.__name__}.nodes.ops"]
    types = sys.modules[f"{pack.__name__}.nodes.types"]
    cb = sys.modules[f"{pack.__name__}.nodes.comfy_bridge"]
    faces_mod = sys.modules[f"{pack.__name__}.restorer_core.faces.records"]
    pipeline_mod = sys.modules[f"{pack.__name__}.restorer_core.restore.pipeline"]
    dev = torch.device("cpu" if a.tiny else "cuda")
    model = _build(dev, torch.float32, a.tiny, a.seed).cpu()  # the loader loads on the CPU in fp32
    res = int(model.config.resolution)
    name = "bench_full_size.safetensors"
    folder = Path(cb.restorer_dir())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"")  # listed by the loader; its read is replaced below
    loader_mod.load_any_restorer = lambda *args, **kw: model
    handle = loader_mod.load_face_restorer(name, "none", "cpu" if a.tiny else "auto",
                                           "fp32" if a.tiny else a.dtype, False, speed=a.speed)[0]
    cb.load_on_device(handle.patcher)
    _lq, ref_imgs = _inputs(handle.pipeline.device, res, 1, a.refs)
    with torch.no_grad():
        refs = handle.pipeline.restorer.encode_references(ref_imgs, generator=gen(handle.pipeline.device, 2))
    handle.pipeline.reference_kv = lambda bank, options: refs  # the cached bank's K/V (a cache hit)
    rng = np.random.default_rng(0)
    det = faces_mod.DetectedFace(np.array([0, 0, res, res], np.float32), 0.9, np.zeros((5, 2), np.float32))
    faces = [faces_mod.AlignedFace(crop=rng.random((res, res, 3), dtype=np.float32), matrix=np.eye(2, 3),
                                   inverse=np.eye(2, 3), detection=det, image_index=i, face_index=0)
             for i in range(a.faces)]
    faceset = types.FaceSet(faces, [(res, res)] * a.faces, res)
    # the restore node's batch size 8 (tiny: the compile step's largest batch, whose code it then loads);
    # strength 1 (the node with auto_strength off): random crops may count as sharp, and a kept face is
    # never run through the restorer
    options = pipeline_mod.RestoreOptions(batch_size=max(a.batches), max_refs=a.refs, seed=0, strength=1.0)
    bank = [None] * a.refs  # stands for a bank of a.refs faces (only its length is read: K/V above)
    runs = []
    for i in range(a.node_runs):
        t = time.time()
        ops.restore(handle, faceset, bank, options)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        runs.append(time.time() - t)
        if i == 0:
            first_result = time.time() - a.t0
        print(f"[nodes] run {i}: {runs[-1]:.2f} s for {a.faces} faces", flush=True)
    steady = runs[1:] or runs
    runner = handle.pipeline.runner
    return dict(role="nodes", import_s=t_import, time_to_first_face_s=first_result, first_run_s=runs[0],
                ms_per_face=statistics.median(steady) * 1000 / a.faces, faces=a.faces, runs_s=runs,
                label=runner.speed.label(), fell_back=getattr(runner, "failure", None),
                dtype=str(handle.pipeline.dtype), cache_counters=_counters(),
                note="per node run: CPU resize + restore + blend, strength 1 (CUDA graphs captured per run, as in ComfyUI)")


# ----------------------------------------------------------------------------------- parent side
class Run:
    def __init__(self, a):
        self.a = a
        self.t0 = time.time()
        self.result = dict(settings=vars(a).copy(), steps=[], rows=[], summary=[])
        self.out = Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.a.budget_s - (time.time() - self.t0)

    def child(self, role: str, extra: list, work: Path, seed: int, batches: list, need_s: float) -> dict:
        if self.left() < need_s:
            step = dict(role=role, batches=batches, skipped=f"{self.left():.0f} s of budget left, needs ~{need_s:.0f}")
            self.result["steps"].append(step)
            self.write()
            return step
        if self.a.keep_local_cache:  # a user's next start: Inductor's own cache folder survives too
            inductor = work / "inductor_shared"
            inductor.mkdir(exist_ok=True)
        else:  # only our saved file carries compiled code between processes
            inductor = Path(tempfile.mkdtemp(prefix=f"inductor_{role}_", dir=work))
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(inductor), TRITON_CACHE_DIR=str(inductor / "triton"),
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        if self.a.tiny:
            env.setdefault("OMP_NUM_THREADS", "1")
        res_file = work / f"{role}_{'_'.join(map(str, batches))}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", role, "--result", str(res_file),
               "--t0", "0", "--seed", str(seed), "--batches", ",".join(map(str, batches)),
               "--dtype", self.a.dtype, "--refs", str(self.a.refs), "--iters", str(self.a.iters),
               "--cache", str(self.a.cache), "--stub-base", str(self.a.stub_base), "--speed", self.a.speed,
               "--out", str(self.out)] + (["--tiny"] if self.a.tiny else []) + \
            (["--cudnn-benchmark"] if self.a.cudnn_benchmark else []) + extra
        log_path = self.out / f"gpu_speed_cold_{role}_{'_'.join(map(str, batches))}_log.txt"
        print(f"[{time.time() - self.t0:6.1f}s] start {role} batches {batches}", flush=True)
        launched = time.time()
        cmd[cmd.index("--t0") + 1] = repr(launched)
        try:
            with open(log_path, "w") as log:
                proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=max(30.0, self.left() - 5))
            step = json.loads(res_file.read_text()) if res_file.exists() else dict(role=role)
            if proc.returncode:
                step["error"] = f"exit {proc.returncode}; see {log_path.name}"
        except subprocess.TimeoutExpired:
            step = dict(role=role, error=f"stopped at the time budget; see {log_path.name}")
        step["process_wall_s"] = time.time() - launched
        step["log"] = log_path.name
        self.result["steps"].append(step)
        print(f"[{time.time() - self.t0:6.1f}s] {role}: {json.dumps(step)[:600]}", flush=True)
        shutil.rmtree(inductor, ignore_errors=True)
        self.write()
        return step

    def rows(self) -> None:
        """Official-style and today's CUDA-graph path, gpu_speed.py's code, in this process."""
        import torch

        import gpu_speed as gs
        from restorer_core.restore.pipeline import speed_config

        a = self.a
        if self.left() < COST_S["rows"] * (0.2 if a.tiny else 1):
            self.result["rows_skipped"] = f"{self.left():.0f} s of budget left"
            return
        s = gs.BenchSettings(tiny=a.tiny, device="cpu" if a.tiny else "cuda", dtypes=[a.dtype], batches=a.batches,
                             refs=a.refs, resolution=64 if a.tiny else 512, warmup=1 if a.tiny else 3,
                             iters=a.iters, official_iters=1 if a.tiny else 3, compile_mode=None, compile_dtypes=[],
                             budget_s=self.left(), seed=0, out=a.out, paths=["official_style", "project"])
        b = gs.Bench(s)
        if b.cuda:
            torch.backends.cudnn.benchmark = a.cudnn_benchmark
        self.bench = b
        try:
            b.measure_matmul()
            arch = gs.architectures(s)
            inputs = gs.Inputs(b, s.resolution)
            parts, _checks = gs.run_official(b, arch, inputs)
            self._keep_rows(b)
            restorer = gs.build_project(b, arch, parts, gs.DTYPES[a.dtype])
            with torch.no_grad():
                bank = restorer.encode_references(inputs.refs, generator=gs.gen(b.dev, 2))
                eager = {n: restorer(inputs.lq[:n], bank, generator=gs.gen(b.dev, 1)).float().cpu() for n in a.batches}
            gs._fast_rows(b, "project", restorer, speed_config(restorer, "graph"), inputs, bank, eager, a.dtype,
                          None)
        finally:
            self._keep_rows(b)

    def _keep_rows(self, b) -> None:
        from dataclasses import asdict

        self.result["rows"] = [asdict(r) for r in b.rows]
        self.result["bf16_matmul_tflops"] = b.matmul_tflops
        self.write()

    def write(self) -> None:
        from restorer_core.io.atomic import write_text_atomic

        self.result["total_s"] = time.time() - self.t0
        self.result["summary"] = summary(self.result, self.a)
        write_text_atomic(self.out / f"{self.stem()}.json", json.dumps(self.result, indent=1, default=str))
        write_text_atomic(self.out / f"{self.stem()}.md", markdown(self.result, self.a))

    def stem(self) -> str:
        return "gpu_speed_cold_tiny" if self.a.tiny else "gpu_speed_cold"


def _f(v, spec=".2f") -> str:
    return "" if v is None else format(v, spec)


def summary(r: dict, a) -> list:
    lines = []
    official = {x["batch"]: x["ms_per_face"] for x in r["rows"] if x["path"] == "official_style" and x["ms_per_face"]}
    graph = {x["batch"]: x["ms_per_face"] for x in r["rows"] if x["path"] == "project" and x["ms_per_face"]}
    for step in r["steps"]:
        if step.get("role") != "load":
            continue
        for e in step.get("batches", []):
            if not isinstance(e, dict) or "ms_per_face" not in e:
                continue
            n, ms = e["batch"], e["ms_per_face"]
            line = (f"- batch {n}, new process with the artefact: first face after {e['time_to_first_face_s']:.1f} s "
                    f"(of which load + trace + capture {e['first_call_s']:.1f} s), {ms:.2f} ms/face")
            if n in graph:
                line += f" vs {graph[n]:.2f} with CUDA graphs only"
            if n in official:
                line += f", {official[n] / ms:.1f}x the official-style path ({official[n]:.0f} ms/face)"
            if not a.tiny:
                target = 12.0 if n >= 8 else 20.0
                line += f"; target <= {target:.0f} ms/face: {'met' if ms <= target else f'MISSED by {ms - target:.1f} ms'}"
                line += f"; one-time cost <= ~15 s: {'met' if e['first_call_s'] <= 15 else 'MISSED'} ({e['first_call_s']:.1f} s)"
            if e.get("fell_back"):
                line += f"; FELL BACK: {e['fell_back']}"
            lines.append(line)
    return lines


def markdown(r: dict, a) -> str:
    head = (f"### New-process speed with persisted compiled code ({'TINY configs, CPU' if a.tiny else 'full-size, random weights'}; "
            f"{a.dtype}; {a.refs} cached references; speed {a.speed}; cuDNN benchmark "
            f"{'on' if a.cudnn_benchmark else 'off (the CLI default)'}; total {r.get('total_s', 0):.0f} s)")
    lines = [head, "", "| step | batch | time to first face s | first call s | ms/face | peak GiB | rel L2 vs eager "
             "| Inductor/AOT cache | variant | note |", "|---|---|---|---|---|---|---|---|---|---|"]
    for step in r["steps"]:
        role = step.get("role")
        if step.get("skipped") or step.get("error") and not step.get("batches"):
            lines.append(f"| {role} | {step.get('batches', '')} | | | | | | | | {step.get('skipped') or step.get('error')} |")
            continue
        if role == "nodes":
            lines.append(f"| nodes (Load Face Restorer + restore, {step.get('faces')} faces, {step.get('dtype')}) | "
                         f"{max(a.batches)} | {_f(step.get('time_to_first_face_s'), '.1f')} | "
                         f"{_f(step.get('first_run_s'), '.1f')} (first node run) | {_f(step.get('ms_per_face'))} | | | "
                         f"{json.dumps(step.get('cache_counters', {}))} | `{step.get('label')}` | {step.get('note', '')}"
                         f"{'; FELL BACK: ' + step['fell_back'] if step.get('fell_back') else ''} |")
            continue
        for e in step.get("batches", []):
            lines.append(f"| {role} (seed {step.get('seed')}) | {e['batch']} | {_f(e.get('time_to_first_face_s'), '.1f')} | "
                         f"{_f(e.get('first_call_s'), '.1f')} | {_f(e.get('ms_per_face'))} | {_f(e.get('peak_gib'))} | "
                         f"{_f(e.get('rel_err_vs_eager'), '.2e')} | {json.dumps(e.get('cache_counters', {}))} | "
                         f"`{e.get('label')}` | {'FELL BACK: ' + e['fell_back'] if e.get('fell_back') else ''}"
                         f"{step.get('error', '')} |")
    if r["rows"]:
        lines += ["", "Beside it, in the parent process (gpu_speed.py's code):", "",
                  "| path | variant | batch | ms/face | peak GiB | note |", "|---|---|---|---|---|---|"]
        for x in r["rows"]:
            lines.append(f"| {x['path']} | {x['variant']} | {x['batch']} | {_f(x['ms_per_face'])} | {_f(x['peak_gib'])} | "
                         f"{(x['note'] + (' ERROR ' + x['error'] if x['error'] else '')).replace('|', '/')} |")
    if r.get("rows_skipped"):
        lines.append(f"\nofficial-style / graph rows skipped: {r['rows_skipped']}")
    arts = [s.get("artefacts") for s in r["steps"] if s.get("artefacts")]
    if arts:
        lines.append("\nCompiled-code files: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in arts[-1].items()))
    return "\n".join(lines + [""] + r.get("summary", []) + [""])


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (every code path, speed compile)")
    ap.add_argument("--dtype", default=None, help="fp16 (default) | bf16 | fp32 (tiny default)")
    ap.add_argument("--batches", default="1,8", help="comma list (default 1,8; tiny: 1,2)")
    ap.add_argument("--refs", type=int, default=None, help="cached references (default 4; tiny 2)")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--speed", default=None, help="the speed choice timed (default auto; tiny: compile)")
    ap.add_argument("--steps", default="compile,load,nodes,rows", help="subset of compile,load,nodes,rows")
    ap.add_argument("--faces", type=int, default=16, help="faces per node run (nodes step)")
    ap.add_argument("--node-runs", type=int, default=3)
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="cuDNN autotuning in every step (default off, as in the CLI and the nodes)")
    ap.add_argument("--budget-s", type=float, default=None, help="wall-clock budget (default 560; tiny: none)")
    ap.add_argument("--keep-local-cache", action="store_true",
                    help="every step shares one Inductor/Triton cache folder (a user's restart on the same "
                         "machine, where Inductor's own cache survives beside ours)")
    ap.add_argument("--work", default=None, help="folder for caches and results (default: a temp folder)")
    ap.add_argument("--out", default=os.environ.get("OUT", "./bench_out"))
    # child-process arguments
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--stub-base", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.dtype = a.dtype or ("fp32" if a.tiny else "fp16")
    a.batches = [int(x) for x in (("1,2" if a.tiny and a.batches == "1,8" else a.batches).split(","))]
    a.refs = a.refs or (2 if a.tiny else 4)
    a.iters = a.iters or (2 if a.tiny else 20)
    a.speed = a.speed or ("compile" if a.tiny else "auto")
    a.budget_s = a.budget_s if a.budget_s is not None else (1e9 if a.tiny else 560.0)
    a.node_runs = a.node_runs if not a.tiny else min(a.node_runs, 2)
    a.faces = a.faces if not a.tiny else min(a.faces, 3)
    return a


def main(argv=None) -> int:
    a = parse(argv)
    if a.child:
        a.role = a.child
        if a.tiny:
            import torch

            torch.set_num_threads(1)
        result = child_nodes(a) if a.child == "nodes" else child_restore(a)
        Path(a.result).write_text(json.dumps(result, default=str))
        return 0
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="gpu_speed_cold_"))
    work.mkdir(parents=True, exist_ok=True)
    a.stub_base = str(work / "comfy")
    a.cache = str(Path(a.stub_base).joinpath(*CACHE_SUBDIR))  # the nodes find the same artefacts
    a.out = str(Path(a.out).resolve())
    run = Run(a)
    steps = a.steps.split(",")
    print(f"settings: {vars(a)}", flush=True)
    try:
        if "compile" in steps:
            run.child("compile", [], work, 0, a.batches,
                      COST_S["compile"] * (0.3 if a.tiny else len(a.batches)))
        if "load" in steps:
            for n in a.batches:  # one new process per batch size: its time to first face
                run.child("load", [], work, 1, [n], COST_S["load"])
        if "nodes" in steps:
            run.child("nodes", ["--faces", str(a.faces), "--node-runs", str(a.node_runs)], work, 2, [max(a.batches)],
                      COST_S["nodes"] * (0.3 if a.tiny else 1))
        if "rows" in steps:
            run.rows()
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", flush=True)
    finally:
        run.write()
        print((run.out / f"{run.stem()}.md").read_text(), flush=True)
    failed = any(s.get("error") for s in run.result["steps"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
