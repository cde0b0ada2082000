"""Command line: restore photos, build and inspect reference banks, convert official weights.

    python -m restorer_core restore INPUT... --out DIR [--refs FOLDER|BANK.safetensors] ...
    python -m restorer_core bank build PHOTOS...|FOLDER --out BANK.safetensors
    python -m restorer_core bank info BANK.safetensors
    python -m restorer_core convert ...

Exit codes: 0 success; 1 some image failed; 2 bad usage or a setup error found before any
file was written (missing model, empty reference folder...); 130 cancelled.
Outputs never replace an existing file: `photo.jpg` becomes `photo_restored.jpg`, or
`photo_restored_1.jpg`, `_2`... when that name is taken. Every file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp", ".bmp")
_NO_ALPHA = (".jpg", ".jpeg", ".bmp")
OUTPUT_FORMATS = ("keep", "png", "jpg", "webp", "tif")


class UsageError(Exception):
    """Bad arguments or setup, found before anything was written (exit code 2)."""


# ----------------------------------------------------------------------------- parsing helpers


def parse_faces(text: str) -> Any:
    """--faces value -> FaceSelection: all | largest[:N] | index:0,2 | min-size:PX | similar[:THRESHOLD]."""
    from .select import FaceSelection, parse_indices

    name, _, arg = str(text).strip().lower().partition(":")
    name = name.replace("_", "-")
    try:
        if name == "all" and not arg:
            return FaceSelection("all")
        if name == "largest":
            return FaceSelection("largest", count=int(arg) if arg else 1)
        if name == "index" and arg:
            return FaceSelection("index", indices=parse_indices(arg))
        if name == "min-size" and arg:
            return FaceSelection("all", min_size=float(arg))
        if name == "similar":
            return FaceSelection("similar", threshold=float(arg) if arg else 0.4, fallback_best=False)
    except ValueError as exc:
        raise UsageError(f"--faces {text!r}: {exc}") from exc
    raise UsageError(f"--faces {text!r} not understood; use all, largest:N, index:0,2, min-size:PX "
                     "or similar[:THRESHOLD]")


def collect_inputs(specs: Sequence[str]) -> list:
    """Files as given, folders as their images (sorted by name). UsageError for missing paths."""
    out: list = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise UsageError(f"folder {path} has no images (PNG, JPEG, WEBP, BMP, TIFF)")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise UsageError(f"input not found: {path}")
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def output_suffix(input_path: Path, output_format: str, bit_depth: int, has_alpha: bool) -> str:
    """The output extension: the input's where it can hold the pixels, else .png."""
    if output_format != "keep":
        ext = "." + output_format
    else:
        ext = input_path.suffix.lower()
        if ext not in IMAGE_EXTENSIONS:
            ext = ".png"
    if (bit_depth > 8 and ext in _EIGHT_BIT_ONLY) or (has_alpha and ext in _NO_ALPHA):
        ext = ".png"
    return ext


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """folder/stem+suffix, or stem_1, stem_2... : the first name that does not exist yet."""
    candidate = folder / f"{stem}{suffix}"
    n = 0
    while candidate.exists():
        n += 1
        candidate = folder / f"{stem}_{n}{suffix}"
    return candidate


def _write_no_clobber(target_for: Callable[[], Path], write: Callable[[Path], None]) -> Path:
    """Call write(path) for the next free path; retry with the next name if one appears meanwhile."""
    from .imageio import ImageWriteError

    for _ in range(1000):
        path = target_for()
        try:
            write(path)
            return path
        except (ImageWriteError, FileExistsError):
            if not path.exists():
                raise
    raise ImageWriteError("could not find a free output file name")


def copy_no_clobber(src: Path, dst: Path) -> None:
    """Copy file bytes to dst atomically; FileExistsError if dst exists."""
    from .atomic import atomic_path

    with atomic_path(dst, overwrite=False) as tmp:
        shutil.copyfile(src, tmp)


# ----------------------------------------------------------------------------- restore runner


@dataclass
class RunSettings:
    """What run_restore needs besides the pipeline: where to write and how."""

    out_dir: Path
    output_format: str = "keep"
    save_faces: bool = False
    report_path: Optional[Path] = None
    images_per_chunk: int = 8
    show_progress: bool = True


def _progress_bars(total_images: int, enabled: bool):
    from tqdm import tqdm

    images = tqdm(total=total_images, desc="images", unit="img", position=0, disable=not enabled,
                  dynamic_ncols=True)
    faces = tqdm(total=0, desc="faces ", unit="face", position=1, disable=not enabled, dynamic_ncols=True)
    return images, faces


def _save_face_crops(result: Any, input_path: Path, folder: Path) -> list:
    from .imageio import save_image

    folder.mkdir(exist_ok=True)
    written = []
    for face in result.faces:
        for kind, pixels in (("input", face.crop), ("restored", face.restored)):
            stem = f"{input_path.stem}_face{face.face_index}_{kind}"
            path = _write_no_clobber(lambda stem=stem: free_path(folder, stem, ".png"),
                                     lambda p, px=pixels: save_image(p, px))
            written.append(str(path))
    return written


def _save_result(result: Any, loaded: Any, settings: RunSettings) -> Path:
    """Write one image (restored pixels, or the input's bytes when nothing changed)."""
    from .imageio import save_image

    src = loaded.path
    if result.record.status == "unchanged":
        suffix = src.suffix if src.suffix.lower() in IMAGE_EXTENSIONS else ".png"
        if settings.output_format == "keep":
            return _write_no_clobber(lambda: free_path(settings.out_dir, f"{src.stem}_restored", suffix),
                                     lambda p: copy_no_clobber(src, p))
    suffix = output_suffix(src, settings.output_format, loaded.bit_depth, loaded.alpha is not None)
    return _write_no_clobber(lambda: free_path(settings.out_dir, f"{src.stem}_restored", suffix),
                             lambda p: save_image(p, result.pixels))


def run_restore(inputs: Sequence[Path], pipeline: Any, bank: Any, options: Any, settings: RunSettings,
                report: Any = None, should_cancel: Optional[Callable[[], bool]] = None) -> Any:
    """Restore files into settings.out_dir, batching faces across up to `images_per_chunk` images.

    A failing image is recorded and the run goes on. Returns the RunReport (also written to
    settings.report_path). Raises CancelledError (after writing the report) when should_cancel()
    turns true; finished images stay, nothing half-written is left.
    """
    from .errors import CancelledError, RestorerError
    from .imageio import load_image
    from .report import CANCELLED, FAILED, ImageRecord, RunReport, write_report

    report = report or RunReport()
    pending = [Path(p) for p in inputs]
    bar_images, bar_faces = _progress_bars(len(pending), settings.show_progress)
    faces_before = 0

    def on_progress(done: int, total: int) -> None:
        bar_faces.total = faces_before + total
        bar_faces.n = faces_before + done
        bar_faces.refresh()

    def fail(path: Path, exc: BaseException) -> None:
        report.images.append(ImageRecord(str(path), status=FAILED, error=f"{type(exc).__name__}: {exc}"))
        bar_images.update(1)

    def note_cache() -> None:
        info = getattr(pipeline, "last_cache_info", None)
        if info is not None:
            report.reference_cache = info.to_dict()
        order = {str(p): i for i, p in enumerate(inputs)}  # report images in input order
        report.images.sort(key=lambda im: order.get(im.input, len(order)))

    try:
        while pending:
            if should_cancel is not None and should_cancel():
                raise CancelledError("cancelled between images")
            chunk, pending = pending[:settings.images_per_chunk], pending[settings.images_per_chunk:]
            loaded = []
            for path in chunk:
                try:
                    t0 = time.perf_counter()
                    image = load_image(path)
                    loaded.append((image, time.perf_counter() - t0))
                except (RestorerError, OSError) as exc:
                    fail(path, exc)
            if not loaded:
                continue
            groups = [loaded]
            try:
                results = [pipeline.restore_images([im.pixels for im, _ in loaded], bank, options,
                                                   on_progress, should_cancel, [str(im.path) for im, _ in loaded])]
            except CancelledError:
                raise
            except (RestorerError, RuntimeError, ValueError, MemoryError) as exc:
                if len(loaded) == 1:
                    fail(loaded[0][0].path, exc)
                    continue
                groups, results = [], []  # retry one by one so one bad image does not sink the rest
                for item in loaded:
                    try:
                        results.append(pipeline.restore_images([item[0].pixels], bank, options, on_progress,
                                                               should_cancel, [str(item[0].path)]))
                        groups.append([item])
                    except CancelledError:
                        raise
                    except (RestorerError, RuntimeError, ValueError, MemoryError) as one_exc:
                        fail(item[0].path, one_exc)
            for group, group_results in zip(groups, results):
                for (image, load_s), result in zip(group, group_results):
                    record = result.record
                    record.add_time("load", load_s)
                    try:
                        t0 = time.perf_counter()
                        record.output = str(_save_result(result, image, settings))
                        record.add_time("save", time.perf_counter() - t0)
                        if settings.save_faces and result.faces:
                            record.saved_faces = _save_face_crops(result, image.path, settings.out_dir / "faces")
                    except (RestorerError, OSError) as exc:
                        record.status, record.error = FAILED, f"{type(exc).__name__}: {exc}"
                    report.images.append(record)
                    bar_images.update(1)
            faces_before = bar_faces.total or faces_before
    except (CancelledError, KeyboardInterrupt):
        done = {im.input for im in report.images}
        for path in list(inputs):
            if str(path) not in done:
                report.images.append(ImageRecord(str(path), status=CANCELLED))
        report.finish("cancelled")
        note_cache()
        if settings.report_path is not None:
            write_report(report, settings.report_path)
        raise
    finally:
        bar_faces.close()
        bar_images.close()
    report.finish()
    note_cache()
    if settings.report_path is not None:
        write_report(report, settings.report_path)
    return report


# ----------------------------------------------------------------------------- commands


def _identity_or_note(report: Any, needed: bool, device: Any) -> Any:
    """The identity embedder when its weights exist; otherwise None and a note in the report."""
    from .errors import CheckpointError

    try:
        from .identity import load_identity_embedder

        model = load_identity_embedder(device=device)
        report.identity = {"available": True}
        return model
    except (CheckpointError, ImportError, OSError) as exc:
        report.identity = {"available": False, "reason": str(exc)}
        if needed:
            raise UsageError(f"--faces similar needs the identity embedder: {exc}") from exc
        report.notes.append("identity similarity not computed: identity embedder unavailable")
        return None


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore; under torchrun one process per GPU, each on a shard (see restorer_core.distributed)."""
    from . import distributed

    try:
        ctx = distributed.context_from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        return _restore_command(args, ctx)
    finally:
        distributed.stop(ctx)


def _restore_command(args: argparse.Namespace, ctx: Any) -> int:
    from . import distributed
    from .bank import open_bank
    from .errors import BankError, CancelledError, CheckpointError, DetectorError, RestorerError
    from .model_zoo import describe_model, load_any_restorer, pick_device_dtype
    from .paste import PasteConfig
    from .pipeline import FaceRestorePipeline, RestoreOptions
    from .report import RunReport

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a folder")
    selection = parse_faces(args.faces)
    inputs = collect_inputs(args.inputs)
    if args.video:
        from .temporal import frame_order

        inputs = frame_order(inputs)
        if ctx.enabled:
            raise UsageError("--video smooths faces over consecutive frames: run it in one process, not "
                             "under torchrun (each process would see only some of the frames)")
    if args.mode in ("references", "both") and not args.refs:
        raise UsageError(f"--mode {args.mode} needs reference photos: add --refs FOLDER or BANK.safetensors")
    try:
        paste = PasteConfig(mask=args.mask, erosion=args.erosion, feather=args.feather, color_fix=args.color_fix)
        options = RestoreOptions(mode=args.mode, max_refs=args.max_refs, batch_size=args.batch_size,
                                 seed=args.seed, strength=args.strength, paste=paste, selection=selection,
                                 detector=args.detector, detector_model=args.detector_model,
                                 crop_size=args.crop_size, detail_transfer=getattr(args, "detail_transfer", True),
                                 cache_dir=args.cache_dir,
                                 use_cache=not args.no_cache)
        if args.video:
            from .temporal import LandmarkSmoother

            options.temporal = LandmarkSmoother()
        device, dtype = pick_device_dtype(distributed.rank_device(args.device, ctx), args.dtype)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    # torchrun: join the job and keep this rank's shard (whole chunks; see distributed.py)
    images_per_chunk = max(1, args.batch_size)
    all_inputs = inputs
    if ctx.enabled:
        distributed.start(ctx, device)
        inputs = [all_inputs[i] for i in distributed.shard_indices(all_inputs, ctx.rank, ctx.world_size,
                                                                     images_per_chunk)]

    report = RunReport(command="restore")
    report.settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                       if k not in ("func",)}
    try:
        from .detect import create_detector

        detector = create_detector(args.detector, args.detector_model)
        bank = open_bank(args.refs, detector) if args.refs else None
        restorer = load_any_restorer(args.model, args.base, device, dtype, args.models_dir, args.allow_download)
    except (BankError, CheckpointError, DetectorError) as exc:
        raise UsageError(str(exc)) from exc
    identity = None
    if bank is not None:  # similarity is measured against the bank's person
        identity = _identity_or_note(report, selection.mode == "similar", device)
    # cuDNN picks convolution kernels by heuristics unless asked to time them: timing can pick
    # other kernels in another process (or on another GPU), which moves pixels by 1-3/255.
    import torch

    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    pipeline = FaceRestorePipeline(restorer, identity=identity, speed=args.speed)
    pipeline.add_detector(options, detector)
    try:
        pipeline.uses_references(bank, options)
        if selection.mode == "similar":
            pipeline.similarity_fn(bank, options)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    report.model = describe_model(restorer)
    if bank is not None:
        report.bank = bank.summary()
    if ctx.enabled and pipeline.uses_references(bank, options):
        with distributed.main_first(ctx):  # rank 0 computes and caches the K/V; the others read the cache
            try:
                pipeline.reference_kv(bank, options)
            except (RestorerError, RuntimeError, ValueError):
                pass  # run_restore meets the same error and records it per image, as in one process

    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = Path(args.report) if args.report else None
    if report_path is None:
        report_path = free_path(out_dir, "restore_report", ".json")
    elif report_path.exists():
        report_path = free_path(report_path.parent, report_path.stem, report_path.suffix or ".json")
    settings = RunSettings(out_dir, args.format, args.save_faces, None if ctx.enabled else report_path,
                           images_per_chunk=images_per_chunk, show_progress=not args.quiet and ctx.is_main)
    try:
        run_restore(inputs, pipeline, bank, options, settings, report)
    except (CancelledError, KeyboardInterrupt):
        if ctx.enabled:  # no merge while the job is going down: each rank writes its own part
            from .report import write_report

            report_path = write_report(report, distributed.rank_report_path(report_path, ctx))
        print(f"cancelled; report: {report_path}", file=sys.stderr)
        return EXIT_CANCELLED
    if ctx.enabled:  # torchrun: every rank gets the merged report; rank 0 writes it
        report = distributed.gather_reports(ctx, report, all_inputs)
        if ctx.is_main:
            from .report import write_report

            write_report(report, report_path)
    if ctx.is_main:
        totals = report.totals()
        print(f"{totals['images']} image(s): {totals['images_restored']} restored, "
              f"{totals['images_unchanged']} unchanged (no face selected), {totals['images_failed']} failed; "
              f"{totals['faces_restored']} face(s) restored. Report: {report_path}", file=sys.stderr)
        for im in report.images:
            if im.status == "failed":
                print(f"  failed: {im.input}: {im.error}", file=sys.stderr)
    distributed.barrier(ctx)  # a rank exiting 1 makes torchrun stop the rest: rank 0 writes first
    return EXIT_FAILED if report.status == "failed" else EXIT_OK


def cmd_bank_build(args: argparse.Namespace) -> int:
    from .bank import build_bank, save_bank
    from .errors import BankError, DetectorError

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UsageError(f"--out must end in .safetensors, got {out.name}")
    if out.exists():
        raise UsageError(f"{out} already exists; choose another name (banks are never overwritten)")
    if not 64 <= args.align_size <= 2048:
        raise UsageError(f"--align-size must be between 64 and 2048 px, got {args.align_size}")
    for spec in args.sources:
        if not Path(spec).exists():
            raise UsageError(f"reference source not found: {spec}")
    try:
        from .detect import create_detector

        detector = create_detector(args.detector, args.detector_model)
        bank = build_bank(args.sources, detector, args.align_size, ambiguity_ratio=args.ambiguity,
                          name=args.name or out.stem)
    except (BankError, DetectorError) as exc:
        raise UsageError(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    save_bank(bank, out)
    print(f"bank {out}: {len(bank)} reference face(s), {len(bank.rejected)} rejected")
    for r in bank.rejected:
        print(f"  rejected {r.source}: {r.reason}")
    return EXIT_OK


def cmd_bank_info(args: argparse.Namespace) -> int:
    from .bank import default_cache_dir, load_bank
    from .errors import BankError

    try:
        bank = load_bank(args.bank)
    except BankError as exc:
        raise UsageError(str(exc)) from exc
    info = bank.summary()
    cache = default_cache_dir(bank)
    info["cache_dir"] = str(cache)
    info["cached_models"] = sorted(p.name for p in cache.glob("kv-*.safetensors")) if cache.is_dir() else []
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"bank {args.bank} ({info['name'] or 'unnamed'}): {len(bank)} face(s) at {bank.align_size}px, "
          f"hash {info['hash'][:16]}")
    for i, e in enumerate(bank.entries):
        print(f"  [{i}] {e.source}  face {e.face_size:.0f}px  score {e.score:.2f}")
    for r in bank.rejected:
        print(f"  rejected {r.source}: {r.reason}")
    print(f"  reference K/V caches in {cache}: {len(info['cached_models'])}")
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    """Delegates to restorer_core.loaders.convert (official weights -> project .safetensors)."""
    from .loaders.convert import main as convert_main

    return int(convert_main(list(args.convert_args)) or 0)


# ----------------------------------------------------------------------------- parser


def _add_detector_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", default="yunet", choices=("yunet", "scrfd", "facexlib"),
                   help="face detector backend (default: the shipped YuNet)")
    p.add_argument("--detector-model", default=None, help="weights file for the detector backend")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m restorer_core",
        description="One-step, reference-based face restoration.",
        epilog="exit codes: 0 ok, 1 some image failed, 2 usage/setup error (nothing written), 130 cancelled")
    sub = parser.add_subparsers(dest="command", required=True)

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
                   choices=("auto", "references", "visual_prompt", "both", "none"),
                   help="conditioning: auto uses references when given and the visual prompt when the "
                   "model has one")
    r.add_argument("--faces", default="all", help="all | largest:N | index:0,2 | min-size:PX | similar[:T]")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    r.add_argument("--dtype", default="auto", help="auto | fp32 | fp16 | bf16")
    r.add_argument("--batch-size", type=int, default=8, help="faces per network pass (default 8)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--speed", choices=["auto", "eager", "graph", "compile"], default="auto",
                   help="speed-ups computing the same function: auto = upsampling convs at low "
                        "resolution (+ CUDA graphs on a GPU); compile adds torch.compile (about a "
                        "minute of compiling per batch shape); eager = the plain model")
    r.add_argument("--cudnn-benchmark", action="store_true",
                   help="let cuDNN time its convolution kernels (a little faster on a GPU; runs and "
                        "GPUs may then differ by a few 1/255; off: reproducible pixels)")
    r.add_argument("--max-refs", type=int, default=4, help="reference faces used (default 4)")
    r.add_argument("--color-fix", default="wavelet", choices=("wavelet", "meanstd", "none"))
    r.add_argument("--mask", default="landmarks", choices=("landmarks", "ellipse", "box"))
    r.add_argument("--feather", type=float, default=24.0, help="mask softening, px of a 512 crop")
    r.add_argument("--erosion", type=float, default=8.0, help="mask shrink, px of a 512 crop")
    r.add_argument("--strength", type=float, default=1.0, help="0 keeps the input face, 1 the restored one")
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
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--video", action="store_true",
                   help="the inputs are the frames of one video (a folder of frames; numbers in names in "
                        "numeric order): each face's landmarks are smoothed over the frames so restored "
                        "faces do not jitter")
    _add_detector_args(r)
    r.set_defaults(func=cmd_restore)

    b = sub.add_parser("bank", help="reference banks").add_subparsers(dest="bank_command", required=True)
    bb = b.add_parser("build", help="detect and align one face per photo into a bank file")
    bb.add_argument("sources", nargs="+", metavar="PHOTO_OR_FOLDER")
    bb.add_argument("--out", required=True, help="bank file to write (.safetensors; never overwritten)")
    bb.add_argument("--align-size", type=int, default=512)
    bb.add_argument("--ambiguity", type=float, default=0.8,
                    help="reject a photo whose second face is at least this fraction of the largest")
    bb.add_argument("--name", default=None)
    _add_detector_args(bb)
    bb.set_defaults(func=cmd_bank_build)
    bi = b.add_parser("info", help="show a bank's faces, rejects and caches")
    bi.add_argument("bank")
    bi.add_argument("--json", action="store_true")
    bi.set_defaults(func=cmd_bank_info)

    c = sub.add_parser("convert", help="convert official weights to this project's .safetensors "
                       "(convert {instantrestore,osdface,auto} SOURCE OUT [--base SD21] [--dtype])",
                       add_help=False, description="Arguments are passed to restorer_core.loaders.convert.")
    c.add_argument("convert_args", nargs=argparse.REMAINDER)
    c.set_defaults(func=cmd_convert)
    return parser


def _check_numbers(args: argparse.Namespace) -> None:
    if getattr(args, "batch_size", 1) < 1:
        raise UsageError("--batch-size must be at least 1")
    if getattr(args, "max_refs", 1) < 1:
        raise UsageError("--max-refs must be at least 1")
    if not 0.0 <= getattr(args, "strength", 1.0) <= 1.0:
        raise UsageError("--strength must be between 0 and 1")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:  # everything after it, --help included, belongs to the converter
        return cmd_convert(argparse.Namespace(convert_args=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with code 2 on bad usage
    try:
        _check_numbers(args)
        return int(args.func(args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
