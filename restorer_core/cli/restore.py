"""`restore`: validate -> open resources -> shard -> run -> summarize.

Steps 1 and 2 live in plan.py and resources.py, step 4 (the per-image loop) in run.py, step 5
in summary.py; this module joins them, and the torchrun job (distributed.py) around them.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..options import COLOR_FIXES, MASK_SHAPES, MODES, SPEEDS
from .args import OUTPUT_FORMATS, add_detector_args
from .plan import RestorePlan, validate
from .resources import Resources, open_resources
from .resume import all_done_before
from .run import RunSettings, run_restore
from .summary import summarize, warnings_into, write_run_report
from .usage import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, UsageError

if TYPE_CHECKING:
    from .distributed import DistContext


def shard(plan: RestorePlan, ctx: "DistContext") -> list:
    """Step 3: the inputs this process restores (all of them outside torchrun)."""
    from . import distributed

    if not ctx.enabled:
        return list(plan.inputs)
    indices = distributed.shard_indices(plan.inputs, ctx.rank, ctx.world_size, plan.images_per_chunk)
    return [plan.inputs[i] for i in indices]


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """The one place the CLI sets torch's global cuDNN autotuner, restored afterwards.

    Off by default: cuDNN then picks convolution kernels by heuristics, the same in every
    process and on every GPU; timing them can pick others, which moves pixels by 1-3/255."""
    import torch

    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _join_job(plan: RestorePlan, res: Resources, ctx: "DistContext") -> None:
    """Under torchrun: join the process group; rank 0 computes and caches the reference K/V
    first, the other ranks then read the cache. Nothing outside torchrun."""
    from . import distributed
    from ..errors import RestorerError

    if not ctx.enabled:
        return
    distributed.start(ctx, res.restorer.device)
    if res.pipeline.conditioning(res.bank, plan.options).use_references:
        with distributed.main_first(ctx):
            try:
                res.pipeline.reference_kv(res.bank, plan.options)
            except (RestorerError, RuntimeError, ValueError):
                pass  # run_restore meets the same error and records it per image, as in one process


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore; under torchrun one process per GPU, each on a shard (see restorer_core.cli.distributed)."""
    from . import distributed

    try:
        ctx = distributed.context_from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        return _restore_command(args, ctx)
    finally:
        distributed.stop(ctx)


def _restore_command(args: argparse.Namespace, ctx: "DistContext") -> int:
    """validate -> open resources -> shard -> run -> report."""
    from . import distributed
    from ..errors import CancelledError
    from ..io.report import RunReport, write_report

    report = RunReport(command="restore")
    report.settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    with warnings_into(report):
        if args.video and ctx.enabled:
            raise UsageError("--video smooths faces over consecutive frames: run it in one process, not "
                             "under torchrun (each process would see only some of the frames)")
        plan = validate(args)
        report.settings_digest, report.skipped_inputs = plan.settings_digest, list(plan.skipped_inputs)
        done = all_done_before(plan)
        if done is not None:  # nothing left to do: report it without loading anything
            report.images = done
            report.note("every input was restored by an earlier run with the same settings")
            report.finish()
            return summarize(report, write_run_report(report, plan.report_path)) if ctx.is_main else EXIT_OK
        res = open_resources(plan, ctx, report)
    inputs = shard(plan, ctx)
    _join_job(plan, res, ctx)
    settings = RunSettings(plan.out_dir, args.format, args.save_faces, None if ctx.enabled else plan.report_path,
                           images_per_chunk=plan.images_per_chunk,
                           show_progress=not args.quiet and ctx.is_main and sys.stderr.isatty(),
                           resume=not args.force, rotate=args.rotate, settings_digest=plan.settings_digest,
                           debug=args.debug)
    report_path = plan.report_path
    try:
        with cudnn_benchmark(args.cudnn_benchmark):
            run_restore(inputs, res.pipeline, res.bank, plan.options, settings, report)
        report_path = settings.report_path if not ctx.enabled else report_path
    except (CancelledError, KeyboardInterrupt):
        if ctx.enabled:  # no merge while the job is going down: each rank writes its own part
            report_path = write_report(report, distributed.rank_report_path(report_path, ctx))
        else:
            report_path = settings.report_path or report_path
        print(f"cancelled; report: {report_path}", file=sys.stderr)
        return EXIT_CANCELLED
    if ctx.enabled:  # torchrun: every rank gets the merged report; rank 0 writes it
        report = distributed.gather_reports(ctx, report, plan.inputs)
        if ctx.is_main:
            report_path = write_run_report(report, report_path)
    code = summarize(report, report_path) if ctx.is_main else (EXIT_FAILED if report.status == "failed" else EXIT_OK)
    distributed.barrier(ctx)  # a rank exiting 1 makes torchrun stop the rest: rank 0 writes first
    return code


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """The `restore` sub-command and its arguments."""
    r = sub.add_parser("restore", help="restore the faces in photos",
                       description="Restore every selected face in the input images and paste it back.")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    r.add_argument("--out", required=True, help="output folder (created if missing)")
    r.add_argument("--refs", default=None, help="reference photos of the person: a folder, an image, or a bank "
                   ".safetensors made with `bank build`")
    r.add_argument("--model", default="default", help="restorer: default | FILE.safetensors | InstantRestore .pt "
                   "| OSDFace folder | instantrestore | osdface (official weights in --models-dir)")
    r.add_argument("--base", default=None, help="Stable Diffusion 2.1-base folder or file (OSDFace models; "
                   "default: sd21-base in --models-dir)")
    r.add_argument("--models-dir", default=None, help="folder of official weights by name (default: "
                   "$ONESTEP_FACE_RESTORE_MODELS or ~/.cache/onestep-face-restore/models)")
    r.add_argument("--allow-download", action="store_true",
                   help="fetch missing official weights from the Hugging Face Hub")
    r.add_argument("--mode", "--method", dest="mode", default="auto",
                   choices=MODES,
                   help="conditioning: auto uses references when given and the model was trained with "
                   "them, and the visual prompt when the model has one")
    r.add_argument("--faces", default="all", help="all | largest:N | index:0,2 | min-size:PX | similar[:T]")
    r.add_argument("--identity", default=None, metavar="ONNX|DIR",
                   help="identity network for --faces similar and the report's similarities: the shipped "
                        "embedder (default, offline), or ArcFace from insightface: a w600k_r50.onnx / "
                        "glintr100.onnx, or an insightface models folder holding one (e.g. "
                        "ComfyUI/models/insightface; needs onnxruntime)")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    r.add_argument("--dtype", default="auto", help="auto | fp32 | fp16 | bf16")
    r.add_argument("--batch-size", type=int, default=8, help="faces per network pass (default 8)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--speed", choices=SPEEDS, default="auto",
                   help="speed-ups computing the same function. auto (default): compile on a GPU, graph "
                        "on the CPU. compile: graph + channels-last + torch.compile; the first run per "
                        "GPU, dtype, batch size and model compiles for 1-2 minutes (it says so) and saves "
                        "the compiled code in --compile-cache, later runs load it; a partial last batch is "
                        "padded to --batch-size, so one compile serves a whole run; if compiling fails, "
                        "graph is used and one line says why. graph: upsampling convs at low resolution, "
                        "and on a GPU CUDA graphs and the VAE's wide attention head as matmuls, no compile. "
                        "eager: the plain model")
    r.add_argument("--compile-cache", default=None, metavar="DIR",
                   help="folder for compiled code (--speed auto/compile; default: "
                        "$ONESTEP_FACE_RESTORE_COMPILE_CACHE or ~/.cache/onestep-face-restore/compiled); "
                        "none: do not save or load it")
    r.add_argument("--cudnn-benchmark", action="store_true",
                   help="let cuDNN time its convolution kernels (a little faster on a GPU; runs and "
                        "GPUs may then differ by a few 1/255; off: reproducible pixels)")
    r.add_argument("--max-refs", type=int, default=4, help="reference faces used (default 4)")
    r.add_argument("--color-fix", default="wavelet", choices=COLOR_FIXES)
    r.add_argument("--mask", default="landmarks", choices=MASK_SHAPES,
                   help="region pasted back: landmarks (default) the face oval; ellipse a fixed oval; box the "
                        "whole crop, hair and ears too (old photos; may show an edge on textured backgrounds)")
    r.add_argument("--feather", type=float, default=24.0, help="mask softening, px of a 512 crop")
    r.add_argument("--erosion", type=float, default=8.0, help="mask shrink, px of a 512 crop")
    r.add_argument("--strength", default="auto",
                   help="auto (default): per face, from the detail and noise it has (sharp or large faces are "
                        "kept exactly as they are, blurred, grainy or small ones fully restored; the report "
                        "lists each face's strength, and kept faces as 'kept'); or a number: 0 keeps the "
                        "input face, 1 the restored one")
    r.add_argument("--identity-gate", default="off", metavar="off|on|T",
                   help="without references, lower a face's strength where the restored face drifts from the "
                        "input's identity (the pack's embedder: cosine below T, 'on' = the tuned default); off "
                        "(default): the measured held-out gain is not there yet (README, Benchmarks). Does "
                        "nothing with references")
    r.add_argument("--no-refs-strength", type=float, default=None, metavar="F",
                   help="without references, scale the automatic strength by F (default 0.6: a full-strength "
                        "guess of a blurred face's identity moves it further from the person; README, Benchmarks). "
                        "1: full strength. Manual --strength values are used as given")
    r.add_argument("--no-structure-gate", dest="no_refs_structure_gate", action="store_false",
                   help="without references, restore faces too blurred to guess who they are as well (by default "
                        "their automatic strength falls to 0 with their remaining structure and they are kept, "
                        "since at 16x blur every strength tried lowered identity: dlib, training people; references "
                        "restore them)")
    r.add_argument("--crop-size", type=int, default=None,
                   help="aligned crop size (default: max(model resolution, 512))")
    r.add_argument("--no-detail-transfer", dest="detail_transfer", action="store_false",
                   help="do not keep the input's detail finer than the model's resolution")
    r.add_argument("--format", default="keep", choices=OUTPUT_FORMATS,
                   help="output format (keep: the input's, PNG when it cannot hold 16 bits or alpha)")
    r.add_argument("--save-faces", action="store_true", help="also write each face crop before/after")
    r.add_argument("--report", default=None, help="JSON report file (default: OUT/restore_report.json)")
    r.add_argument("--cache-dir", default=None, help="reference K/V cache folder (default: next to the bank)")
    r.add_argument("--no-cache", action="store_true", help="do not read or write the reference K/V cache")
    r.add_argument("--quiet", action="store_true", help="no progress bars (never shown when stderr is not "
                   "a terminal)")
    r.add_argument("--force", action="store_true",
                   help="restore every input again, even one an earlier run restored with the same settings "
                        "(written under a new name; nothing is overwritten)")
    r.add_argument("--no-rotate", dest="rotate", action="store_false",
                   help="do not try the image turned by 90/180/270 degrees when no face is found")
    r.add_argument("--debug", action="store_true", help="print tracebacks (of failing images too)")
    r.add_argument("--video", action="store_true",
                   help="the inputs are the frames of one video (a folder of frames; numbers in names in "
                        "numeric order): each face's landmarks are smoothed over the frames so restored "
                        "faces do not jitter, and with --strength auto its strength follows the face "
                        "so it does not flip between kept and restored")
    add_detector_args(r)
    r.set_defaults(func=cmd_restore)
