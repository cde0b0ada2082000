#!/usr/bin/env python
"""GPU speed benchmark (issue 5): official-style InstantRestore vs this project's pipeline.

Full-size architectures with random weights (SD-Turbo UNet, sd-vae-ft-mse; SD 2.1-base + VRE for
OSDFace), 512x512 faces, 4 references, fp16 and bf16, batch 1 and 8. Timed paths:

1. official_style  benchmarks/official_style.py: two UNets, references recomputed per face,
                   materialised attention, unfused rank-32 LoRA, FreeU, fp32 weights + autocast.
2. project         OneStepRestorer with the same weights (LoRA fused), reference K/V from the
                   bank cache, SDPA; then restorer_core.models.fast variants (channels_last,
                   CUDA graph, torch.compile), each timed and checked against the eager output.
3. osdface         OneStepRestorer, OSDFace config (visual prompt, no references).
4. bank            encode_references of 4 faces (building a reference bank's K/V).

Per row: median ms per face (CUDA events, after warm-up), peak GPU memory (reset per row, with
only that path's networks resident), GFLOP per face (FlopCounterMode, eager), achieved TFLOP/s
and its fraction of a measured 8192^3 bf16 matmul, relative L2 error of the output (project vs
official-style on the same inputs/weights/generators; speed-up variants vs the eager restorer).
The markdown table is printed last and written with the JSON to $OUT (default ./bench_out).

    python benchmarks/gpu_speed.py                 # the real run (CUDA, < 8 min on an H100)
    python benchmarks/gpu_speed.py --tiny          # tiny configs on the CPU: exercises every path
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402

from official_style import (OfficialStyleConfig, OfficialStyleInstantRestore,  # noqa: E402
                            fused_state_dicts, load_into_restorer, project_config_dict)
from restorer_core.io.atomic import write_text_atomic  # noqa: E402
from restorer_core.models.config import RestorerConfig  # noqa: E402
from restorer_core.models.fast import SpeedConfig, speed_up  # noqa: E402
from restorer_core.models.restorer import OneStepRestorer  # noqa: E402
from restorer_core.models import sd_configs  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
GIB = 1024**3
COMPILE_COST_S = 100  # rough cost of one compile of the full core on an H100 (cold cache: 91 s)


# ----------------------------------------------------------------------------------- settings
@dataclass
class BenchSettings:
    tiny: bool
    device: str
    dtypes: list
    batches: list
    refs: int
    resolution: int
    warmup: int
    iters: int
    official_iters: int
    compile_mode: Optional[str]
    compile_dtypes: list
    budget_s: float
    seed: int
    out: str
    paths: list


def tiny_architectures(res: int) -> dict:
    """Small stand-ins with the same block structure (CPU runs of every code path)."""
    unet = dict(sample_size=res // 4, in_channels=4, out_channels=4,
                down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                block_out_channels=[32, 64, 64], layers_per_block=1, attention_head_dim=[2, 4, 4],
                cross_attention_dim=64, use_linear_projection=True, norm_num_groups=8)
    vae = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
               up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=[16, 32, 32],
               layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=res,
               scaling_factor=0.18215)
    vre = dict(resolution=res, in_channels=3, ch=8, ch_mult=[1, 2, 2], num_res_blocks=1,
               codebook_size=32, codebook_dim=16, out_dim=64, tokens=77)
    return dict(unet=unet, vae=vae, vre=vre)


def architectures(s: BenchSettings) -> dict:
    if s.tiny:
        return tiny_architectures(s.resolution)
    return dict(unet=copy.deepcopy(sd_configs.SD_TURBO_UNET), vae=copy.deepcopy(sd_configs.SD_VAE_FT_MSE),
                osd_unet=copy.deepcopy(sd_configs.SD21_BASE_UNET), osd_vae=copy.deepcopy(sd_configs.SD21_BASE_VAE),
                vre=copy.deepcopy(sd_configs.OSDFACE_VRE))


# ----------------------------------------------------------------------------------- measuring
@dataclass
class Row:
    path: str
    variant: str
    dtype: str
    batch: int
    ms_per_face: Optional[float] = None
    ms_per_call: Optional[float] = None
    peak_gib: Optional[float] = None
    weights_gib: Optional[float] = None
    gflop_per_face: Optional[float] = None
    tflops: Optional[float] = None
    frac_matmul: Optional[float] = None
    rel_err: Optional[float] = None
    rel_err_vs: str = ""
    note: str = ""
    error: str = ""


class Bench:
    """Device helpers: timing with CUDA events, memory peaks, FLOP counts, time budget."""

    def __init__(self, s: BenchSettings):
        self.s = s
        self.dev = torch.device(s.device)
        self.cuda = self.dev.type == "cuda"
        self.t0 = time.time()
        self.rows: list = []
        self.matmul_tflops: Optional[float] = None
        self.gflop_project: Optional[float] = None
        self.compiled: set = set()  # (compile mode, dtype, batch) already compiled

    def left_s(self) -> float:
        return self.s.budget_s - (time.time() - self.t0)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.dev)

    def reset_memory(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.dev)

    def peak_gib(self) -> Optional[float]:
        return torch.cuda.max_memory_allocated(self.dev) / GIB if self.cuda else None

    def time_ms(self, fn: Callable, warmup: int, iters: int) -> list:
        """Per-call milliseconds of `iters` calls after `warmup` calls."""
        for _ in range(warmup):
            fn()
        self.sync()
        if not self.cuda:
            out = []
            for _ in range(iters):
                t = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t) * 1000)
            return out
        events = []
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
        self.sync()
        return [a.elapsed_time(b) for a, b in events]

    @staticmethod
    def gflop(fn: Callable) -> float:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 1e9

    def measure_matmul(self) -> float:
        n = 8192 if self.cuda else 1024
        a = torch.randn(n, n, device=self.dev, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=self.dev, dtype=torch.bfloat16)
        ms = statistics.median(self.time_ms(lambda: a @ b, 3, 20 if self.cuda else 3))
        self.matmul_tflops = 2 * n**3 / (ms * 1e-3) / 1e12
        return self.matmul_tflops

    def record(self, row: Row, times_ms: Optional[list] = None) -> Row:
        if times_ms:
            row.ms_per_call = statistics.median(times_ms)
            row.ms_per_face = row.ms_per_call / row.batch
        if row.gflop_per_face and row.ms_per_face:
            row.tflops = row.gflop_per_face / row.ms_per_face  # GFLOP/ms = TFLOP/s
            if self.matmul_tflops:
                row.frac_matmul = row.tflops / self.matmul_tflops
        self.rows.append(row)
        status = f"{row.ms_per_face:.2f} ms/face" if row.ms_per_face else (row.error or row.note)
        print(f"[{time.time() - self.t0:6.1f}s] {row.path:<15} {row.variant:<44} {row.dtype} "
              f"b{row.batch}: {status}", flush=True)
        return row

    def guarded(self, row: Row, body: Callable[[Row], Optional[list]]) -> Row:
        """Run one variant; any failure becomes the row's error instead of ending the run."""
        try:
            self.reset_memory()
            times = body(row)
            row.peak_gib = row.peak_gib if row.peak_gib is not None else self.peak_gib()
            return self.record(row, times)
        except Exception as exc:  # noqa: BLE001 - one variant must not lose the table
            row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            traceback.print_exc(limit=3)
            if self.cuda:
                torch.cuda.empty_cache()
            return self.record(row)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def weights_gib(*modules) -> Optional[float]:
    """GiB of parameters and buffers resident on a GPU (None on the CPU)."""
    if not torch.cuda.is_available():
        return None
    total = 0
    for m in modules:
        if m is None:
            continue
        for t in list(m.parameters()) + list(m.buffers()):
            if t.device.type == "cuda":
                total += t.numel() * t.element_size()
    return total / GIB


def autocast_for(dev: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=dtype)


def gen(dev: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=dev).manual_seed(seed)


# ----------------------------------------------------------------------------------- paths
class Inputs:
    """Deterministic faces and references in 0..1 on the device."""

    def __init__(self, b: Bench, res: int):
        g = torch.Generator().manual_seed(b.s.seed)
        maxb = max(max(b.s.batches), 2)
        self.lq = torch.rand(maxb, 3, res, res, generator=g).to(b.dev)
        self.refs = torch.rand(b.s.refs, 3, res, res, generator=g).to(b.dev)


def run_official(b: Bench, arch: dict, inputs: Inputs) -> tuple:
    """Official-style timings for every dtype/batch; returns (fused weights on CPU, check outputs)."""
    s = b.s
    cfg = OfficialStyleConfig(unet=arch["unet"], vae=arch["vae"])
    torch.manual_seed(s.seed)
    with torch.device(b.dev):
        model = OfficialStyleInstantRestore(cfg, generator=torch.Generator().manual_seed(s.seed)).eval()
        with torch.no_grad():
            model.caption_enc.normal_()
    print(f"official-style: {model.n_unet_lora} UNet + {model.n_vae_lora} VAE LoRA adapters (rank "
          f"{cfg.lora_rank}), {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters", flush=True)
    checks, gflop = {}, None
    for dname in s.dtypes:
        dtype = DTYPES[dname]
        with torch.no_grad():
            try:  # output for the correctness check: 2 faces, each with the same 4 references
                lq2 = inputs.lq[:2] * 2 - 1
                conds = (inputs.refs * 2 - 1).expand(2, -1, -1, -1, -1)
                with autocast_for(b.dev, dtype):
                    out = model(lq2, conds, generator=gen(b.dev, 1), ref_generator=gen(b.dev, 2))
                checks[dname] = ((out.float() + 1) / 2).cpu()
            except Exception as exc:  # noqa: BLE001
                print(f"official-style check output failed ({dname}): {exc}", flush=True)
            if gflop is None and "official_style" in s.paths:
                try:
                    with autocast_for(b.dev, dtype):
                        gflop = b.gflop(lambda: model(inputs.lq[:1] * 2 - 1, (inputs.refs * 2 - 1)[None],
                                                      generator=gen(b.dev, 1), ref_generator=gen(b.dev, 2)))
                except Exception as exc:  # noqa: BLE001
                    print(f"official-style FLOP count failed: {exc}", flush=True)
        if "official_style" not in s.paths:
            continue
        for batch in s.batches:
            def body(row, batch=batch, dtype=dtype):
                lq = inputs.lq[:batch] * 2 - 1
                conds = (inputs.refs * 2 - 1).expand(batch, -1, -1, -1, -1)
                g1, g2 = gen(b.dev, 1), gen(b.dev, 2)

                def call():
                    with torch.no_grad(), autocast_for(b.dev, dtype):
                        model(lq, conds, generator=g1, ref_generator=g2)
                row.weights_gib = weights_gib(model)
                iters = s.official_iters if batch > 1 else s.iters
                return b.time_ms(call, max(1, s.warmup // 2), iters)
            b.guarded(Row("official_style", "materialised+unfused LoRA+ref recompute, fp32 weights+autocast",
                          dname, batch, gflop_per_face=gflop,
                          note=f"{s.refs} refs recomputed per face (+ decoded, as official)"), body)
    parts = fused_state_dicts(model)
    parts = {k: ({n: t.detach().to("cpu") for n, t in v.items()} if isinstance(v, dict) else v.to("cpu"))
             for k, v in parts.items()}
    del model
    b.reset_memory()
    return parts, checks


def build_project(b: Bench, arch: dict, parts: dict, dtype: torch.dtype) -> OneStepRestorer:
    cfg = RestorerConfig(resolution=b.s.resolution, **project_config_dict(
        OfficialStyleConfig(unet=arch["unet"], vae=arch["vae"])))
    with torch.device(b.dev):
        restorer = OneStepRestorer(cfg)
    load_into_restorer(restorer, parts)
    return restorer.to(dtype).eval()


def project_variants(b: Bench, dname: str, with_compile: bool) -> list:
    """The fast.py configurations timed: a plain CUDA graph, then what make_runner gives for
    speed "graph" (fused upsampling, wide-head attention as matmuls, CUDA graph; the reference
    networks stay resident here, for comparison) and "compile" = "auto" on a GPU (+ channels_last
    + torch.compile, reference networks offloaded to the CPU as the CLI does on a GPU; compiled
    in this process, without the persisted cache: gpu_speed_cold.py times that).
    Each variant sets the restorer's speed-up methods (SpeedConfig.apply_to); the offloaded
    reference networks stay offloaded, so that variant comes last."""
    s = b.s
    out = [SpeedConfig(cuda_graph=True)] if b.cuda else []
    out.append(SpeedConfig(fuse_upsample=True, wide_head_attention=True, cuda_graph=b.cuda))
    if with_compile and s.compile_mode:
        graph = b.cuda and s.compile_mode not in ("reduce-overhead", "max-autotune")
        out.append(SpeedConfig(fuse_upsample=True, wide_head_attention=True, channels_last=True,
                               compile_mode=s.compile_mode, cuda_graph=graph, offload_references=b.cuda))
    return out


def run_project(b: Bench, arch: dict, parts: dict, inputs: Inputs, checks: dict, compile_phase: bool) -> None:
    """Path 2 (and path 4, the bank): eager restorer, then fast.py variants."""
    s = b.s
    for dname in (s.compile_dtypes if compile_phase else s.dtypes):
        dtype = DTYPES[dname]
        if compile_phase and b.left_s() < COMPILE_COST_S:
            b.record(Row("project", f"compile[{s.compile_mode}]", dname, 0,
                         note=f"skipped: {b.left_s():.0f} s of the time budget left"))
            continue
        try:
            b.reset_memory()
            restorer = build_project(b, arch, parts, dtype)
        except Exception as exc:  # noqa: BLE001
            b.record(Row("project", "build", dname, 0, error=f"{type(exc).__name__}: {exc}"))
            continue
        with torch.no_grad():
            bank = restorer.encode_references(inputs.refs, generator=gen(b.dev, 2))
        eager_out = {}
        if not compile_phase:
            _project_checks(b, restorer, inputs, checks, dname)
            if "bank" in s.paths:
                _bank_rows(b, restorer, inputs, dname)
            if "project" not in s.paths:
                del restorer, bank
                b.reset_memory()
                continue
            if b.gflop_project is None:
                try:
                    with torch.no_grad():
                        b.gflop_project = b.gflop(
                            lambda: restorer(inputs.lq[:1], bank, generator=gen(b.dev, 1)))
                except Exception as exc:  # noqa: BLE001
                    print(f"project FLOP count failed: {exc}", flush=True)
            gflop = b.gflop_project
            for batch in s.batches:
                def body(row, batch=batch):
                    lq = inputs.lq[:batch]
                    with torch.no_grad():
                        eager_out[batch] = restorer(lq, bank, generator=gen(b.dev, 1)).float().cpu()

                    def call():
                        with torch.no_grad():
                            restorer(lq, bank, generator=gen(b.dev, 1))
                    row.weights_gib = weights_gib(restorer)
                    return b.time_ms(call, s.warmup, s.iters)
                b.guarded(Row("project", "sdpa (restorer.forward, refs cached)", dname, batch,
                              gflop_per_face=gflop, note="LoRA fused"), body)
        else:
            with torch.no_grad():
                for batch in s.batches:
                    eager_out[batch] = restorer(inputs.lq[:batch], bank, generator=gen(b.dev, 1)).float().cpu()
        variants = project_variants(b, dname, compile_phase)
        if compile_phase:
            variants = [v for v in variants if v.compile_mode]
        else:
            variants = [v for v in variants if not v.compile_mode]
        for speed in variants:
            _fast_rows(b, "project", restorer, speed, inputs, bank, eager_out, dname, b.gflop_project)
        del restorer, bank
        b.reset_memory()


def _fast_rows(b: Bench, path: str, restorer, speed: SpeedConfig, inputs: Inputs, refs, eager_out: dict,
               dname: str, gflop: Optional[float]) -> None:
    s = b.s
    try:
        fast = speed_up(restorer, speed)  # sets the restorer's speed-up methods as the variant says
    except Exception as exc:  # noqa: BLE001
        b.record(Row(path, speed.label(), dname, 0, error=f"{type(exc).__name__}: {exc}"))
        return
    for batch in s.batches:
        key = (speed.compile_mode, dname, batch)
        if speed.compile_mode and key not in b.compiled and b.left_s() < COMPILE_COST_S:
            b.record(Row(path, speed.label(), dname, batch,
                         note=f"skipped: a compile needs ~{COMPILE_COST_S} s, {b.left_s():.0f} s of budget left"))
            continue
        def body(row, batch=batch):
            lq = inputs.lq[:batch]
            t = time.time()
            out = fast(lq, refs, generator=gen(b.dev, 1)).float().cpu()  # first call: compile/capture
            first_s = time.time() - t
            b.compiled.add((speed.compile_mode, dname, batch))
            if batch in eager_out:
                row.rel_err, row.rel_err_vs = rel_l2(out, eager_out[batch]), "eager restorer"
            row.note = f"first call {first_s:.1f} s"
            row.weights_gib = weights_gib(restorer)
            times = b.time_ms(lambda: fast(lq, refs, generator=gen(b.dev, 1)), s.warmup, s.iters)
            if speed.offload_references:  # a bank build brings the networks over and back
                with torch.no_grad():
                    kv = restorer.encode_references(inputs.refs, generator=gen(b.dev, 2))
                err = max(rel_l2(x, y) for x, y in zip(kv.keys + kv.values, refs.keys + refs.values))
                again = rel_l2(fast(lq, refs, generator=gen(b.dev, 1)).float().cpu(), out)
                row.note += (f"; ref nets on {restorer.ref_unet.conv_in.weight.device.type}, bank rebuilt "
                             f"with them: K/V rel err {err:.1e}, restore after it {again:.1e}")
            return times
        b.guarded(Row(path, speed.label(), dname, batch, gflop_per_face=gflop), body)
    fast.release_graphs()


def _project_checks(b: Bench, restorer, inputs: Inputs, checks: dict, dname: str) -> None:
    """Project (LoRA fused, SDPA) vs official-style on the same faces, weights and generators."""
    if dname not in checks:
        return
    try:
        with torch.no_grad():
            refs = inputs.refs.expand(2, -1, -1, -1, -1)  # per face, drawn like the official
            kv = restorer.encode_references(refs, generator=gen(b.dev, 2))
            out = restorer(inputs.lq[:2], kv, generator=gen(b.dev, 1)).float().cpu()
        err = rel_l2(out, checks[dname])
        sat = float(((checks[dname] <= 0.0) | (checks[dname] >= 1.0)).float().mean())
        b.record(Row("check", "project vs official_style (2 faces)", dname, 2, rel_err=err,
                     rel_err_vs="official_style", note=f"{sat:.1%} of official pixels clipped"))
    except Exception as exc:  # noqa: BLE001
        b.record(Row("check", "project vs official_style", dname, 2, error=f"{type(exc).__name__}: {exc}"))


def _bank_rows(b: Bench, restorer, inputs: Inputs, dname: str) -> None:
    s = b.s
    gflop = None
    try:
        with torch.no_grad():
            gflop = b.gflop(lambda: restorer.encode_references(inputs.refs, generator=gen(b.dev, 2)))
    except Exception as exc:  # noqa: BLE001
        print(f"bank FLOP count failed: {exc}", flush=True)

    def body(row):
        def call():
            with torch.no_grad():
                restorer.encode_references(inputs.refs, generator=gen(b.dev, 2))
        row.weights_gib = weights_gib(restorer)
        return b.time_ms(call, s.warmup, s.iters)
    row = Row("bank", f"encode_references ({s.refs} refs, early stop)", dname, 1,
              gflop_per_face=gflop, note=f"per bank of {s.refs} references (one call)")
    b.guarded(row, body)


def run_osdface(b: Bench, arch: dict, inputs: Inputs) -> None:
    s = b.s
    d = sd_configs.full_size_config("osdface")
    if s.tiny:
        d.update(unet=arch["unet"], vae=arch["vae"], vre=arch["vre"], resolution=s.resolution)
    cfg = RestorerConfig(**d)
    for dname in s.dtypes:
        dtype = DTYPES[dname]
        try:
            b.reset_memory()
            torch.manual_seed(s.seed)
            with torch.device(b.dev):
                restorer = OneStepRestorer(cfg)
            restorer = restorer.to(dtype).eval()
        except Exception as exc:  # noqa: BLE001
            b.record(Row("osdface", "build", dname, 0, error=f"{type(exc).__name__}: {exc}"))
            continue
        gflop = None
        try:
            with torch.no_grad():
                gflop = b.gflop(lambda: restorer(inputs.lq[:1], generator=gen(b.dev, 1)))
        except Exception as exc:  # noqa: BLE001
            print(f"osdface FLOP count failed: {exc}", flush=True)
        eager_out = {}
        for batch in s.batches:
            def body(row, batch=batch):
                lq = inputs.lq[:batch]
                with torch.no_grad():
                    eager_out[batch] = restorer(lq, generator=gen(b.dev, 1)).float().cpu()

                def call():
                    with torch.no_grad():
                        restorer(lq, generator=gen(b.dev, 1))
                row.weights_gib = weights_gib(restorer)
                return b.time_ms(call, s.warmup, s.iters)
            b.guarded(Row("osdface", "sdpa (restorer.forward)", dname, batch, gflop_per_face=gflop,
                          note="VRE prompt, x0 in float64"), body)
        speeds = [SpeedConfig(fuse_upsample=True, wide_head_attention=True, cuda_graph=b.cuda)]
        for speed in speeds:
            _fast_rows(b, "osdface", restorer, speed, inputs, None, eager_out, dname, gflop)
        del restorer
        b.reset_memory()


# ----------------------------------------------------------------------------------- report
COLUMNS = [("path", "path"), ("variant", "variant"), ("dtype", "dtype"), ("batch", "batch"),
           ("ms_per_face", "ms/face"), ("peak_gib", "peak GiB"), ("weights_gib", "weights GiB"),
           ("gflop_per_face", "GFLOP/face"), ("tflops", "TFLOP/s"), ("frac_matmul", "of bf16 mm"),
           ("rel_err", "rel L2 err"), ("note", "note")]


def _fmt(key: str, value) -> str:
    if value is None or value == "":
        return ""
    if key == "frac_matmul":
        return f"{value:.0%}"
    if key == "rel_err":
        return f"{value:.2e}"
    if key in ("ms_per_face", "peak_gib", "weights_gib", "tflops"):
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    if key == "gflop_per_face":
        return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"
    return str(value)


def summary_lines(b: Bench) -> list:
    """Speed-ups vs official-style and the issue's targets."""
    lines = []
    ok = [r for r in b.rows if r.ms_per_face and not r.error]
    for dname in b.s.dtypes:
        for batch in b.s.batches:
            off = [r for r in ok if r.path == "official_style" and r.dtype == dname and r.batch == batch]
            proj = [r for r in ok if r.path == "project" and r.dtype == dname and r.batch == batch]
            if not proj:
                continue
            best = min(proj, key=lambda r: r.ms_per_face)
            line = f"- {dname} batch {batch}: best project variant `{best.variant}` {best.ms_per_face:.2f} ms/face"
            if off:
                line += f", {off[0].ms_per_face / best.ms_per_face:.1f}x the official-style path ({off[0].ms_per_face:.1f} ms/face)"
            if best.peak_gib is not None:
                line += f", peak {best.peak_gib:.2f} GiB"
            if not b.s.tiny:
                target = 10.0 if batch >= 8 else 40.0 if batch == 1 else None
                if target is not None:
                    gap = best.ms_per_face - target
                    line += f"; target <= {target:.0f} ms/face: " + (
                        "met" if gap <= 0 else f"MISSED by {gap:.1f} ms ({gap / target:.0%})")
                if batch >= 8 and best.peak_gib is not None:
                    over = best.peak_gib - 8
                    line += "; memory <= 8 GiB: " + ("met" if over <= 0 else f"MISSED by {over:.2f} GiB")
                if off:
                    line += f"; >= 3x: {'met' if off[0].ms_per_face / best.ms_per_face >= 3 else 'MISSED'}"
            lines.append(line)
    return lines


def markdown(b: Bench) -> str:
    head = "| " + " | ".join(h for _, h in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = []
    for r in b.rows:
        cells = [_fmt(k, getattr(r, k)) for k, _ in COLUMNS]
        if r.error:
            cells[-1] = (cells[-1] + " ERROR " + r.error).strip().replace("|", "/")
        body.append("| " + " | ".join(cells) + " |")
    env = environment(b)
    info = (f"device: {env['device_name']}, torch {env['torch']}, diffusers {env['diffusers']}; "
            f"bf16 matmul {b.matmul_tflops or 0:.3g} TFLOP/s; {b.s.refs} references; "
            f"{b.s.resolution}x{b.s.resolution} faces; {'TINY configs' if b.s.tiny else 'full-size, random weights'}; "
            f"total {time.time() - b.t0:.0f} s")
    return "\n".join([f"### GPU speed ({info})", "", head, sep, *body, "", *summary_lines(b), ""])


def environment(b: Bench) -> dict:
    import diffusers

    name = torch.cuda.get_device_name(b.dev) if b.cuda else platform.processor() or "cpu"
    return dict(device_name=name, torch=torch.__version__, diffusers=diffusers.__version__,
                cuda=torch.version.cuda, python=platform.python_version())


def write_outputs(b: Bench) -> tuple:
    out = Path(b.s.out)
    md = markdown(b)
    payload = dict(settings=asdict(b.s), environment=environment(b), matmul_bf16_tflops=b.matmul_tflops,
                   total_s=time.time() - b.t0, rows=[asdict(r) for r in b.rows], summary=summary_lines(b))
    stem = "gpu_speed_tiny" if b.s.tiny else "gpu_speed"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"{stem}.json", json.dumps(payload, indent=1))
    write_text_atomic(out / f"{stem}.md", md)
    return md, out


# ----------------------------------------------------------------------------------- main
ALL_PATHS = ("official_style", "project", "osdface", "bank", "compile")


def parse_args(argv=None) -> BenchSettings:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (tests every code path)")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    ap.add_argument("--dtypes", default=None, help="comma list of fp16,bf16,fp32 (default fp16,bf16; tiny: fp32,bf16)")
    ap.add_argument("--batches", default=None, help="comma list (default 1,8; tiny: 1,2)")
    ap.add_argument("--refs", type=int, default=None, help="references per face (default 4; tiny: 2)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode for the compile variants: default | max-autotune-no-cudagraphs | "
                         "reduce-overhead | none (default: 'default' on CUDA, none with --tiny)")
    ap.add_argument("--compile-dtypes", default=None, help="dtypes that get compile variants (default: first dtype)")
    ap.add_argument("--budget-s", type=float, default=None, help="no compile is started when less than ~120 s of this budget is left (default 420)")
    ap.add_argument("--paths", default=",".join(ALL_PATHS), help=f"subset of {','.join(ALL_PATHS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.environ.get("OUT", "./bench_out"))
    a = ap.parse_args(argv)
    tiny = a.tiny
    device = a.device or ("cpu" if tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("CUDA is not available; run with --tiny on the CPU")
    dtypes = (a.dtypes or ("fp32,bf16" if tiny else "fp16,bf16")).split(",")
    for d in dtypes:
        if d not in DTYPES:
            ap.error(f"unknown dtype {d!r}; use {','.join(DTYPES)}")
    compile_mode = a.compile_mode if a.compile_mode is not None else (None if tiny else "default")
    if compile_mode in ("none", ""):
        compile_mode = None
    paths = [p for p in a.paths.split(",") if p]
    unknown = sorted(set(paths) - set(ALL_PATHS))
    if unknown:
        ap.error(f"unknown paths {unknown}; choose from {ALL_PATHS}")
    return BenchSettings(
        tiny=tiny, device=device, dtypes=dtypes,
        batches=[int(x) for x in (a.batches or ("1,2" if tiny else "1,8")).split(",")],
        refs=a.refs or (2 if tiny else 4), resolution=64 if tiny else 512,
        warmup=a.warmup if a.warmup is not None else (1 if tiny else 3),
        iters=a.iters or (2 if tiny else 10), official_iters=2 if tiny else 3,
        compile_mode=compile_mode,
        compile_dtypes=(a.compile_dtypes.split(",") if a.compile_dtypes else dtypes[:1]),
        budget_s=a.budget_s if a.budget_s is not None else (1e9 if tiny else 420.0),
        seed=a.seed, out=a.out, paths=paths)


def main(argv=None) -> int:
    s = parse_args(argv)
    if s.tiny:
        torch.set_num_threads(1)  # tiny ops: extra threads only add contention (timings are not the point)
    b = Bench(s)
    if b.cuda:
        torch.backends.cudnn.benchmark = True  # the official inference sets it too
        dyn = torch._dynamo.config  # one compiled entry per (dtype, batch, refs/no refs)
        name = "recompile_limit" if hasattr(dyn, "recompile_limit") else "cache_size_limit"
        setattr(dyn, name, max(getattr(dyn, name), 32))
    arch = architectures(s)
    print(f"settings: {asdict(s)}", flush=True)
    print(f"bf16 matmul: {b.measure_matmul():.3g} TFLOP/s", flush=True)
    inputs = Inputs(b, s.resolution)
    parts, checks = {}, {}
    try:
        if any(p in s.paths for p in ("official_style", "project", "bank", "compile")):
            parts, checks = run_official(b, arch, inputs)
        if parts and any(p in s.paths for p in ("project", "bank")):
            run_project(b, arch, parts, inputs, checks, compile_phase=False)
        if "osdface" in s.paths:
            run_osdface(b, arch, inputs)
        if parts and "compile" in s.paths and s.compile_mode:
            run_project(b, arch, parts, inputs, checks, compile_phase=True)
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", flush=True)
    finally:
        md, out = write_outputs(b)
        print(f"wrote {out}/", flush=True)
        print(md, flush=True)
    return 0 if not any(r.error for r in b.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
