#!/usr/bin/env python
"""Where the batch-8 time goes (issue 5): speed-up variants, a per-part split and a kernel profile.

Full-size InstantRestore architecture (SD-Turbo UNet + sd-vae-ft-mse, separate reference UNet),
random weights, 512x512 faces, 4 cached references, one dtype and batch size (default fp16, 8).

1. variants: FastRestorer configs, each compiled once, timed (median of CUDA-event times after
   warm-up), checked against the eager restorer (relative L2), peak memory;
2. parts: VAE encode, UNet (with reference attention), VAE decode, each compiled and captured
   on its own, timed, with its FLOPs: the split of the end-to-end time;
3. kernels: torch.profiler over a few calls of the best compiled variant (without the CUDA
   graph, so kernels are visible), CUDA time grouped by kind (convolution, matmul, attention,
   Triton-fused pointwise/norm, copies) and the top kernels.

    python benchmarks/gpu_profile.py --out "$OUT"
    python benchmarks/gpu_profile.py --variants base,fused,fused_cdt --out "$OUT"
    python benchmarks/gpu_profile.py --tiny              # CPU smoke run of every code path

Writes gpu_profile.json, gpu_profile.md and the profiler's kernel table under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402

from gpu_speed import (DTYPES, Bench, BenchSettings, gen, rel_l2,  # noqa: E402
                       tiny_architectures)
from restorer_core.models import sd_configs  # noqa: E402
from restorer_core.models.config import RestorerConfig  # noqa: E402
from restorer_core.models.fast import SpeedConfig, speed_up  # noqa: E402
from restorer_core.models.restorer import OneStepRestorer  # noqa: E402

CDT = (("coordinate_descent_tuning", True),)
BLOG = (("conv_1x1_as_mm", True), ("coordinate_descent_tuning", True), ("epilogue_fusion", False),
        ("coordinate_descent_check_all_directions", True))
VARIANTS = {  # name -> SpeedConfig
    "base": SpeedConfig(channels_last=True, compile_mode="default", cuda_graph=True),
    "fused": SpeedConfig(channels_last=True, fuse_upsample=True, compile_mode="default", cuda_graph=True),
    "fused_freezing": SpeedConfig(channels_last=True, fuse_upsample=True, compile_mode="default",
                                  inductor=(("freezing", True),), cuda_graph=True),
    "fused_cdt": SpeedConfig(channels_last=True, fuse_upsample=True, compile_mode="default",
                             inductor=CDT, cuda_graph=True),
    "fused_autotune": SpeedConfig(channels_last=True, fuse_upsample=True,
                                  compile_mode="max-autotune-no-cudagraphs", inductor=BLOG, cuda_graph=True),
    "fused_eager_graph": SpeedConfig(fuse_upsample=True, cuda_graph=True),
    # issue 12: the default GPU path (pipeline.speed_config(restorer, "auto") on CUDA) and b8 variants of it
    "auto": SpeedConfig(channels_last=True, fuse_upsample=True, wide_head_attention=True, compile_mode="default",
                        cuda_graph=True, offload_references=True),
    "auto_cdt": SpeedConfig(channels_last=True, fuse_upsample=True, wide_head_attention=True, compile_mode="default",
                            inductor=CDT, cuda_graph=True, offload_references=True),
    "auto_autotune": SpeedConfig(channels_last=True, fuse_upsample=True, wide_head_attention=True,
                                 compile_mode="max-autotune-no-cudagraphs", cuda_graph=True, offload_references=True),
    "graph": SpeedConfig(fuse_upsample=True, wide_head_attention=True, cuda_graph=True, offload_references=True),
}
KINDS = (  # kernel-name substrings -> kind (first match wins)
    ("attention", ("flash", "fmha", "attention", "sdpa", "efficient_attention")),
    ("convolution", ("conv", "implicit_gemm", "xmma_fprop", "fprop", "dgrad", "winograd", "cudnn")),
    ("matmul", ("gemm", "cutlass", "sm90_xmma", "matmul", "ampere_", "hopper", "nvjet", "cublas", "addmm", "aten::mm", "bmm")),
    ("triton fused (norm/pointwise)", ("triton",)),
    ("fft", ("fft",)),
    ("copy/layout", ("copy", "memcpy", "memset", "transpose", "nchwtonhwc", "nhwctonchw", "cat")),
)


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def build(dev: torch.device, dtype: torch.dtype, tiny: bool) -> OneStepRestorer:
    d = sd_configs.full_size_config("instantrestore")
    if tiny:
        arch = tiny_architectures(64)
        d.update(unet=arch["unet"], vae=arch["vae"], resolution=64)
    torch.manual_seed(0)
    with torch.device(dev):
        restorer = OneStepRestorer(RestorerConfig(**d))
    return restorer.to(dtype).eval()


# ------------------------------------------------------------------------------ the three parts
# the restorer's own steps (restore_step = encode -> denoise -> decode), timed one by one
def part_encode(restorer, x, sample_noise):
    return restorer.encode(x, sample_noise)[0]


def part_unet(restorer, z, time_noise, context, timestep):
    return restorer.denoise(z, time_noise, context, timestep)


def part_decode(restorer, x0):
    return restorer.decode(x0, None)


def graphed(fn, args: tuple, restorer, refs):
    """Capture fn(restorer, *args) with the reference K/V installed; returns a replay callable."""
    def run():
        with restorer.references_installed(refs):
            return fn(restorer, *args)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            run()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = run()
    return g.replay, out


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--dtype", default="fp16", choices=sorted(DTYPES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--refs", type=int, default=4)
    ap.add_argument("--variants", default="base,fused,fused_cdt,fused_freezing,fused_autotune",
                    help=f"comma list of {','.join(VARIANTS)}")
    ap.add_argument("--parts-variant", default="fused", help="variant whose compile settings the parts use")
    ap.add_argument("--skip", default="", help="comma list of parts,profile to skip")
    ap.add_argument("--budget-s", type=float, default=540, help="a variant is not started with under 150 s left")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--cudnn-benchmark", default="on", choices=("on", "off"),
                    help="off: cuDNN's heuristic kernel choice (the CLI's reproducible default)")
    ap.add_argument("--compile-cache", default=None, metavar="DIR",
                    help="load/save each variant's compiled code there (restorer_core.models.compile_cache; e.g. "
                         "max-autotune results then cost their minutes once)")
    ap.add_argument("--out", default=os.environ.get("OUT", "./bench_out"))
    a = ap.parse_args(argv)
    persist = None
    if a.compile_cache:
        from restorer_core.models.compile_cache import CompileCache, PersistedCompile

        persist = PersistedCompile(CompileCache(a.compile_cache))

    dev = torch.device("cpu" if a.tiny or not torch.cuda.is_available() else "cuda")
    cuda = dev.type == "cuda"
    res = 64 if a.tiny else 512
    iters = a.iters or (30 if cuda else 2)
    dtype = DTYPES[a.dtype]
    settings = BenchSettings(tiny=a.tiny, device=str(dev), dtypes=[a.dtype], batches=[a.batch], refs=a.refs,
                             resolution=res, warmup=3 if cuda else 1, iters=iters, official_iters=iters,
                             compile_mode=None, compile_dtypes=[], budget_s=a.budget_s, seed=0, out=a.out,
                             paths=[])
    b = Bench(settings)
    os.makedirs(a.out, exist_ok=True)
    if cuda:
        torch.backends.cudnn.benchmark = a.cudnn_benchmark == "on"
        dyn = torch._dynamo.config
        setattr(dyn, "recompile_limit" if hasattr(dyn, "recompile_limit") else "cache_size_limit", 64)
    device_name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    print(f"device {device_name}, torch {torch.__version__}, {a.dtype}, batch {a.batch}", flush=True)
    result = {"cudnn_benchmark": a.cudnn_benchmark, "device": device_name, "torch": torch.__version__, "dtype": a.dtype, "batch": a.batch,
              "refs": a.refs, "resolution": res, "arch": "tiny stand-in" if a.tiny else "full-size InstantRestore", "variants": [], "parts": [], "kernels": {}}
    if cuda:
        result["bf16_matmul_tflops"] = b.measure_matmul()
        n = 1 << 28  # 512 MiB of fp16 copied: read + write bytes over time
        src, dst = torch.empty(n, dtype=torch.float16, device=dev).normal_(), torch.empty(n, dtype=torch.float16, device=dev)
        ms = statistics.median(b.time_ms(lambda: dst.copy_(src), 3, 20))
        result["copy_tb_s"] = 2 * n * 2 / (ms * 1e-3) / 1e12
        del src, dst
        print(f"bf16 matmul {result['bf16_matmul_tflops']:.0f} TFLOP/s, copy {result['copy_tb_s']:.2f} TB/s", flush=True)

    g = torch.Generator().manual_seed(0)
    lq = torch.rand(a.batch, 3, res, res, generator=g).to(dev)
    ref_imgs = torch.rand(a.refs, 3, res, res, generator=g).to(dev)
    restorer = build(dev, dtype, a.tiny)
    with torch.no_grad():
        refs = restorer.encode_references(ref_imgs, generator=gen(dev, 2))
        eager = restorer(lq, refs, generator=gen(dev, 1)).float().cpu()
        gflop = b.gflop(lambda: restorer(lq[:1], refs, generator=gen(dev, 1)))
    result["gflop_per_face_unfused"] = gflop
    restorer.fuse_upsample()  # FLOPs of the fused model (the variants below use it when asked)
    with torch.no_grad():
        gflop_fused = b.gflop(lambda: restorer(lq[:1], refs, generator=gen(dev, 1)))
    result["gflop_per_face_fused"] = gflop_fused
    print(f"GFLOP/face: {gflop:.0f} (upsampling convs fused: {gflop_fused:.0f})", flush=True)
    del restorer
    b.reset_memory()

    # 1. variants (each on a fresh model: speed_up sets its speed-up methods, offloading included)
    for name in [v for v in a.variants.split(",") if v]:
        speed = VARIANTS[name]
        if not cuda:
            speed = SpeedConfig(channels_last=speed.channels_last, fuse_upsample=speed.fuse_upsample,
                                wide_head_attention=speed.wide_head_attention,
                                compile_mode=speed.compile_mode, inductor=speed.inductor)
        if b.left_s() < 150:
            result["variants"].append(dict(name=name, label=speed.label(), note=f"skipped: {b.left_s():.0f} s left"))
            print(f"skip {name}: {b.left_s():.0f} s left", flush=True)
            continue
        entry = dict(name=name, label=speed.label())
        try:
            b.reset_memory()
            restorer = build(dev, dtype, a.tiny)
            with torch.no_grad():
                refs = restorer.encode_references(ref_imgs, generator=gen(dev, 2))
            fast = speed_up(restorer, speed, persist)
            t = time.time()
            out = fast(lq, refs, generator=gen(dev, 1)).float().cpu()
            entry["first_call_s"] = time.time() - t
            entry["rel_err_vs_eager"] = rel_l2(out, eager)
            times = b.time_ms(lambda: fast(lq, refs, generator=gen(dev, 1)), settings.warmup, iters)
            entry["ms_per_face"] = statistics.median(times) / a.batch
            entry["spread_ms_per_face"] = (min(times) / a.batch, max(times) / a.batch)
            entry["peak_gib"] = b.peak_gib()
            entry["tflops"] = gflop_fused / entry["ms_per_face"] if speed.fuse_upsample else gflop / entry["ms_per_face"]
            fast.release_graphs()
            del fast, restorer
        except Exception as exc:  # noqa: BLE001 - one variant must not lose the others
            traceback.print_exc(limit=4)
            entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        result["variants"].append(entry)
        print(f"[{time.time() - b.t0:6.1f}s] {name:<18} {json.dumps({k: v for k, v in entry.items() if k not in ('name',)}, default=str)}",
              flush=True)
        _write(a.out, result)

    # 2. parts and 3. kernels, with the parts variant's compile settings
    pv = VARIANTS[a.parts_variant]
    skip = set(a.skip.split(","))
    if "parts" not in skip and b.left_s() > 120:
        try:
            _parts(b, a, result, pv, dev, dtype, lq, ref_imgs, cuda)
        except Exception:  # noqa: BLE001
            traceback.print_exc(limit=4)
        _write(a.out, result)
    if "profile" not in skip and b.left_s() > 60:
        try:
            _profile(b, a, result, pv, dev, dtype, lq, ref_imgs)
        except Exception:  # noqa: BLE001
            traceback.print_exc(limit=4)
    _write(a.out, result)
    print(_markdown(result), flush=True)
    return 0


def _parts(b, a, result, pv: SpeedConfig, dev, dtype, lq, ref_imgs, cuda: bool) -> None:
    restorer = build(dev, dtype, a.tiny)
    with torch.no_grad():
        refs = restorer.encode_references(ref_imgs, generator=gen(dev, 2))
    fast = speed_up(restorer, SpeedConfig(channels_last=pv.channels_last, fuse_upsample=pv.fuse_upsample,
                                          wide_head_attention=pv.wide_head_attention))
    inputs = fast.prepare(lq, False, gen(dev, 1))
    shape = restorer.latent_shape(inputs["x"])
    z = torch.randn(shape, device=dev, dtype=dtype)
    fns = {"vae_encode": (part_encode, (inputs["x"], inputs["sample_noise"])),
           "unet (ref attention)": (part_unet, (z, inputs["time_noise"], inputs["context"], inputs["timestep"])),
           "vae_decode": (part_decode, (z,))}
    for name, (fn, args) in fns.items():
        if pv.compile_mode:
            opts = dict(pv.inductor)
            fn_c = (torch.compile(fn, options={"max_autotune": pv.compile_mode.startswith("max-autotune"), **opts},
                                  dynamic=False) if opts else torch.compile(fn, mode=pv.compile_mode, dynamic=False))
        else:
            fn_c = fn
        with torch.no_grad():
            with restorer.references_installed(refs):
                part_gflop = b.gflop(lambda: fn(restorer, *args)) / a.batch
                t = time.time()
                fn_c(restorer, *args)
                first = time.time() - t
            if cuda:
                replay, _ = graphed(fn_c, args, restorer, refs)
            else:
                def replay(fn_c=fn_c, args=args):
                    with restorer.references_installed(refs):
                        fn_c(restorer, *args)
            b.reset_memory()
            times = b.time_ms(replay, 3, b.s.iters)
        ms = statistics.median(times) / a.batch
        entry = dict(part=name, ms_per_face=ms, gflop_per_face=part_gflop, tflops=part_gflop / ms,
                     first_call_s=first, peak_gib=b.peak_gib())
        result["parts"].append(entry)
        print(f"[{time.time() - b.t0:6.1f}s] part {json.dumps(entry)}", flush=True)
    del fast, restorer
    b.reset_memory()


def _profile(b, a, result, pv: SpeedConfig, dev, dtype, lq, ref_imgs) -> None:
    from torch.profiler import ProfilerActivity, profile

    restorer = build(dev, dtype, a.tiny)
    with torch.no_grad():
        refs = restorer.encode_references(ref_imgs, generator=gen(dev, 2))
    speed = SpeedConfig(channels_last=pv.channels_last, fuse_upsample=pv.fuse_upsample,
                        wide_head_attention=pv.wide_head_attention,
                        compile_mode=pv.compile_mode, inductor=pv.inductor)  # same compiled code, no graph
    fast = speed_up(restorer, speed)
    for _ in range(3):
        fast(lq, refs, generator=gen(dev, 1))
    b.sync()
    calls = 3
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(calls):
            fast(lq, refs, generator=gen(dev, 1))
        b.sync()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA" or dev.type != "cuda"]
    attr = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    rows = sorted(((e.key, getattr(e, attr, 0) or 0, e.count) for e in events), key=lambda r: -r[1])
    if dev.type != "cuda":
        rows = [r for r in rows if r[0].startswith("aten::")]
    per_face = a.batch * calls * 1000.0  # us -> ms per face
    kinds: dict = {}
    for key, us, _ in rows:
        kinds[kind_of(key)] = kinds.get(kind_of(key), 0.0) + us / per_face
    result["kernels"] = dict(by_kind_ms_per_face=dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
                             total_ms_per_face=sum(kinds.values()),
                             top=[dict(kernel=k[:160], ms_per_face=us / per_face, calls_per_face=n / calls / a.batch)
                                  for k, us, n in rows[:30]])
    with open(os.path.join(a.out, "gpu_profile_kernels.txt"), "w") as f:
        f.write(prof.key_averages().table(sort_by="self_cuda_time_total" if dev.type == "cuda"
                                          else "self_cpu_time_total", row_limit=60, max_name_column_width=120))
    print(f"kernel time by kind (ms/face): {json.dumps(result['kernels']['by_kind_ms_per_face'])}", flush=True)


def _write(out: str, result: dict) -> None:
    with open(os.path.join(out, "gpu_profile.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    with open(os.path.join(out, "gpu_profile.md"), "w") as f:
        f.write(_markdown(result))


def _fmt(v, spec=".2f") -> str:
    return "" if v is None else format(v, spec)


def _markdown(r: dict) -> str:
    lines = [f"### GPU profile ({r['device']}, torch {r['torch']}, {r['dtype']}, batch {r['batch']}, "
             f"{r['refs']} cached references, {r['resolution']}x{r['resolution']}, {r['arch']}, random weights)", ""]
    if "bf16_matmul_tflops" in r:
        lines.append(f"Measured ceilings: bf16 matmul {r['bf16_matmul_tflops']:.0f} TFLOP/s, device copy "
                     f"{r['copy_tb_s']:.2f} TB/s. GFLOP per face: {r['gflop_per_face_unfused']:,.0f} "
                     f"({r['gflop_per_face_fused']:,.0f} with the upsampling convs at low resolution).")
        lines.append("")
    lines += ["| variant | ms/face | spread | TFLOP/s | peak GiB | first call s | rel L2 vs eager | note |",
              "|---|---|---|---|---|---|---|---|"]
    for v in r["variants"]:
        spread = v.get("spread_ms_per_face")
        lines.append(f"| `{v['label']}` | {_fmt(v.get('ms_per_face'))} | "
                     f"{'' if not spread else f'{spread[0]:.2f}-{spread[1]:.2f}'} | {_fmt(v.get('tflops'), '.0f')} | "
                     f"{_fmt(v.get('peak_gib'))} | {_fmt(v.get('first_call_s'), '.0f')} | "
                     f"{_fmt(v.get('rel_err_vs_eager'), '.2e')} | {v.get('error') or v.get('note') or ''} |")
    if r["parts"]:
        lines += ["", "| part (compiled + CUDA graph, alone) | ms/face | GFLOP/face | TFLOP/s |", "|---|---|---|---|"]
        for p in r["parts"]:
            lines.append(f"| {p['part']} | {p['ms_per_face']:.2f} | {p['gflop_per_face']:,.0f} | {p['tflops']:.0f} |")
        lines.append(f"| sum | {sum(p['ms_per_face'] for p in r['parts']):.2f} | "
                     f"{sum(p['gflop_per_face'] for p in r['parts']):,.0f} | |")
    k = r.get("kernels") or {}
    if k:
        lines += ["", f"Kernel time by kind (profiler, compiled without CUDA graph; total "
                      f"{k['total_ms_per_face']:.2f} ms/face):", "", "| kind | ms/face | share |", "|---|---|---|"]
        for kind, ms in k["by_kind_ms_per_face"].items():
            lines.append(f"| {kind} | {ms:.2f} | {ms / k['total_ms_per_face']:.0%} |")
        lines += ["", "| top kernels | ms/face | calls/face |", "|---|---|---|"]
        for t in k["top"][:15]:
            lines.append(f"| `{t['kernel'][:90]}` | {t['ms_per_face']:.3f} | {t['calls_per_face']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
