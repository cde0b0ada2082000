"""Command line: restore photos, build and inspect reference banks, convert official weights.

    python -m restorer_core restore INPUT... --out DIR [--refs FOLDER|BANK.safetensors] ...
    python -m restorer_core bank build PHOTOS...|FOLDER --out BANK.safetensors
    python -m restorer_core bank info BANK.safetensors
    python -m restorer_core convert ...

`restore` runs in five named steps: validate (arguments and every path it will write, before
anything is loaded), open_resources (detector, bank, restorer -> pipeline), shard (torchrun),
run_restore (per image: resume check, load, restore, write), summarize (report and exit code).

Exit codes: 0 success; 1 some image failed; 2 bad usage or a setup error found before any
file was written (missing model, unwritable output folder, empty reference folder...); 130 cancelled.
Outputs never replace an existing file: `photo.jpg` becomes `photo_restored.jpg`, or
`photo_restored_1.jpg`, `_2`... when that name is taken; a re-run skips inputs already restored
with the same settings (restorer_core.outputs). Every file is written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

from .options import COLOR_FIXES, DETECTORS, IMAGE_EXTENSIONS, MASK_SHAPES, MODES, SPEEDS
from .outputs import free_path, write_no_clobber

if TYPE_CHECKING:  # the collaborators' types; their modules import torch, so not at start-up
    from .bank import ReferenceBank
    from .detect.base import FaceDetector
    from .distributed import DistContext
    from .imageio import LoadedImage
    from .models.restorer import OneStepRestorer
    from .pipeline import FaceRestorePipeline, ImageResult, RestoreOptions
    from .report import RunReport
    from .select import FaceSelection

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp", ".bmp")
_NO_ALPHA = (".jpg", ".jpeg", ".bmp")
OUTPUT_FORMATS = ("keep", "png", "jpg", "webp", "tif")


class UsageError(Exception):
    """Bad arguments or setup, found before anything was written (exit code 2)."""


# ----------------------------------------------------------------------------- parsing helpers


def parse_faces(text: str) -> "FaceSelection":
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


def _is_image_file(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path):
            return True
    except Exception:  # noqa: BLE001 - whatever Pillow says, it is not an image it can open
        return False


def collect_inputs(specs: Sequence[str], skipped: Optional[list] = None) -> list:
    """Files as given, folders as their images (sorted by name). UsageError for missing paths.

    This tool's own outputs are never inputs (see restorer_core.outputs), and a file named like an
    output (`*_restored*`) that is not an image at all is left out too (so a stray one does not
    fail every run); each file left out is appended to `skipped` as {"input", "reason"}.
    """
    from .outputs import PreviousOutputs, looks_like_output, own_output_reason

    skipped = [] if skipped is None else skipped
    out: list = []
    reports: dict = {}  # folder -> PreviousOutputs, read once

    def previous_in(folder: Path) -> PreviousOutputs:
        if folder not in reports:
            reports[folder] = PreviousOutputs.read(folder)
        return reports[folder]

    def keep(p: Path, siblings: list, into: list) -> None:
        """p goes to `into`, or to `skipped` with the reason it is not an input."""
        reason = own_output_reason(p, siblings, previous_in(p.parent))
        if reason is None and looks_like_output(p) and not _is_image_file(p):
            reason = "named like an output of this tool but not an image"
        if reason is None:
            into.append(p)
        else:
            skipped.append({"input": str(p), "reason": reason})

    given_by_folder: dict = {}  # files named one by one (a shell glob), by folder: the siblings to compare
    for spec in specs:
        if Path(spec).is_file():
            given_by_folder.setdefault(Path(spec).parent, []).append(Path(spec))
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in IMAGE_EXTENSIONS)
            kept: list = []
            for p in found:
                keep(p, found, kept)
            if not kept:
                what = "no images to restore" if found else "no images (PNG, JPEG, WEBP, BMP, TIFF)"
                raise UsageError(f"folder {path} has {what}")
            out.extend(kept)
        elif path.is_file():
            keep(path, given_by_folder.get(path.parent, []), out)
        else:
            raise UsageError(f"input not found: {path}")
    if not out:
        raise UsageError("nothing to restore: every input is an output of an earlier run "
                         f"({skipped[0]['input']}: {skipped[0]['reason']})")
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


# ----------------------------------------------------------------------------- restore runner


@dataclass
class RunSettings:
    """What run_restore needs besides the pipeline: where to write and how.

    resume: skip an input whose output an earlier run wrote from the same bytes with the same
    settings (`settings_digest`). rotate: try the other three rotations when no face is found.
    debug: print the traceback of a failing image (the run goes on either way).
    """

    out_dir: Path
    output_format: str = "keep"
    save_faces: bool = False
    report_path: Optional[Path] = None
    images_per_chunk: int = 8
    show_progress: bool = True
    resume: bool = True
    rotate: bool = True
    settings_digest: str = ""
    debug: bool = False


def _progress_bars(total_images: int, enabled: bool):
    from tqdm import tqdm

    images = tqdm(total=total_images, desc="images", unit="img", position=0, disable=not enabled,
                  dynamic_ncols=True)
    faces = tqdm(total=0, desc="faces ", unit="face", position=1, disable=not enabled, dynamic_ncols=True)
    return images, faces


@contextlib.contextmanager
def warnings_into(report: "RunReport") -> Iterator[None]:
    """Library warnings (Pillow, torch...) during the block become report notes, not log noise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                parts = Path(str(w.filename)).parts
                source = (parts[parts.index("site-packages") + 1] if "site-packages" in parts
                          else Path(str(w.filename)).stem)
                report.note(f"warning ({source} {w.category.__name__}): {str(w.message).splitlines()[0]}")


def _save_face_crops(result: "ImageResult", input_path: Path, folder: Path, marker: dict) -> list:
    from .imageio import ImageWriteError, save_image

    folder.mkdir(exist_ok=True)
    written = []
    for face in result.faces:
        for kind, pixels in (("input", face.crop), ("restored", face.restored)):
            stem = f"{input_path.stem}_face{face.face_index}_{kind}"
            path = write_no_clobber(lambda stem=stem: free_path(folder, stem, ".png"),
                                    lambda p, px=pixels: save_image(p, px, marker=marker),
                                    (ImageWriteError, FileExistsError))
            written.append(str(path))
    return written


def _save_result(result: "ImageResult", loaded: "LoadedImage", settings: RunSettings, marker: dict,
                 same: Callable[[Path], bool]) -> Path:
    """Write one image: restored pixels with the input's metadata and our marker, or the input's
    own bytes when nothing changed. When another run writes the same output under the name
    meanwhile (same(path)), that file is the result and nothing more is written."""
    from .imageio import ImageWriteError, keep_gray, save_image
    from .outputs import copy_no_clobber

    src = loaded.path
    stem = f"{src.stem}_restored"
    if result.record.status == "unchanged" and settings.output_format == "keep":
        suffix = src.suffix if src.suffix.lower() in IMAGE_EXTENSIONS else ".png"
        return write_no_clobber(lambda: free_path(settings.out_dir, stem, suffix),
                                lambda p: copy_no_clobber(src, p), same=same)
    suffix = output_suffix(src, settings.output_format, loaded.bit_depth, loaded.alpha is not None)
    pixels = keep_gray(result.pixels, loaded.pixels)
    return write_no_clobber(lambda: free_path(settings.out_dir, stem, suffix),
                            lambda p: save_image(p, pixels, metadata=loaded.metadata, marker=marker),
                            (ImageWriteError, FileExistsError), same=same)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_restore(inputs: Sequence[Path], pipeline: "FaceRestorePipeline", bank: "Optional[ReferenceBank]",
                options: "RestoreOptions", settings: RunSettings, report: "Optional[RunReport]" = None,
                should_cancel: Optional[Callable[[], bool]] = None) -> "RunReport":
    """Restore files into settings.out_dir, batching faces across up to `images_per_chunk` images.

    A failing image (unreadable, failing to restore or to write, for any reason) is one failed
    line in the report and the run goes on. With settings.resume an input already restored by
    an earlier run (same bytes, same settings: see restorer_core.outputs) is recorded as "done"
    and not written again. Returns the RunReport (also written to settings.report_path, or the
    next free name when that appeared meanwhile). Raises CancelledError (after writing the
    report) when should_cancel() turns true; finished images stay, nothing half-written is left.
    """
    from .atomic import remove_stale_temp_files
    from .errors import CancelledError
    from .imageio import load_image
    from .orientation import restore_any_rotation
    from .outputs import PreviousOutputs, file_sha256, find_done_output, is_output_of, output_marker
    from .report import CANCELLED, DONE, FAILED, ImageRecord, RunReport

    report = report or RunReport()
    report.settings_digest = report.settings_digest or settings.settings_digest
    digest = report.settings_digest
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    for folder in (settings.out_dir, settings.out_dir / "faces"):
        for stale in remove_stale_temp_files(folder):
            report.note(f"removed a temp file left by a killed run: {stale.name}")
    previous = PreviousOutputs.read(settings.out_dir)
    pending = [Path(p) for p in inputs]
    bar_images, bar_faces = _progress_bars(len(pending), settings.show_progress)
    faces_before = 0

    def on_progress(done: int, total: int) -> None:
        bar_faces.total = faces_before + total
        bar_faces.n = faces_before + done
        bar_faces.refresh()

    def fail(path: Path, exc: BaseException, sha: str = "") -> None:
        if settings.debug:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        report.images.append(ImageRecord(str(path), status=FAILED, error=_error_text(exc), input_sha256=sha))
        bar_images.update(1)

    def done_before(path: Path, sha: str) -> Optional[Path]:
        if not settings.resume:
            return None
        return find_done_output(path, sha, digest, settings.out_dir, previous)

    def restore_group(group: list) -> list:
        results = pipeline.restore_images([im.pixels for im, _, _ in group], bank, options, on_progress,
                                          should_cancel, [str(im.path) for im, _, _ in group])
        if not settings.rotate:
            return results
        out = []
        for (image, _, _), result in zip(group, results):
            def one(pixels, name=str(image.path)):
                return pipeline.restore_images([pixels], bank, options, None, should_cancel, [name])[0]
            out.append(restore_any_rotation(one, image.pixels, result))
        return out

    def note_cache() -> None:
        info = getattr(pipeline, "last_cache_info", None)
        if info is not None:
            report.reference_cache = info.to_dict()
        order = {str(p): i for i, p in enumerate(inputs)}  # report images in input order
        report.images.sort(key=lambda im: order.get(im.input, len(order)))

    try:
        with warnings_into(report):
            while pending:
                if should_cancel is not None and should_cancel():
                    raise CancelledError("cancelled between images")
                chunk, pending = pending[:settings.images_per_chunk], pending[settings.images_per_chunk:]
                loaded = []
                for path in chunk:
                    sha = ""
                    try:
                        t0 = time.perf_counter()
                        sha = file_sha256(path)
                        earlier = done_before(path, sha)
                        if earlier is not None:
                            report.images.append(ImageRecord(
                                str(path), output=str(earlier), status=DONE, input_sha256=sha,
                                note="restored by an earlier run with the same settings; kept (--force redoes it)"))
                            bar_images.update(1)
                            continue
                        image = load_image(path)
                        loaded.append((image, sha, time.perf_counter() - t0))
                    except Exception as exc:  # noqa: BLE001 - one bad file is one failed line
                        fail(path, exc, sha)
                if not loaded:
                    continue
                groups = [loaded]
                try:
                    results = [restore_group(loaded)]
                except CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    if len(loaded) == 1:
                        fail(loaded[0][0].path, exc, loaded[0][1])
                        continue
                    groups, results = [], []  # retry one by one so one bad image does not sink the rest
                    for item in loaded:
                        try:
                            results.append(restore_group([item]))
                            groups.append([item])
                        except CancelledError:
                            raise
                        except Exception as one_exc:  # noqa: BLE001
                            fail(item[0].path, one_exc, item[1])
                for group, group_results in zip(groups, results):
                    for (image, sha, load_s), result in zip(group, group_results):
                        record = result.record
                        record.input_sha256 = sha
                        record.add_time("load", load_s)
                        try:
                            t0 = time.perf_counter()
                            earlier = done_before(image.path, sha)  # a run beside this one finished it
                            if earlier is not None:
                                record.status, record.output = DONE, str(earlier)
                                record.note = "written meanwhile by another run with the same settings; kept"
                            else:
                                marker = output_marker(image.path, sha, digest)
                                same = (lambda p, path=image.path, sha=sha: settings.resume
                                        and is_output_of(p, path, sha, digest))
                                record.output = str(_save_result(result, image, settings, marker, same))
                                if settings.save_faces and result.faces:
                                    record.saved_faces = _save_face_crops(result, image.path,
                                                                          settings.out_dir / "faces", marker)
                            record.add_time("save", time.perf_counter() - t0)
                        except Exception as exc:  # noqa: BLE001
                            if settings.debug:
                                traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
                            record.status, record.error = FAILED, _error_text(exc)
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
            _save_report(report, settings)
        raise
    finally:
        bar_faces.close()
        bar_images.close()
    report.finish()
    note_cache()
    if settings.report_path is not None:
        _save_report(report, settings)
    return report


def _save_report(report: "RunReport", settings: RunSettings) -> None:
    """Write the report; when that fails (disk full, folder removed meanwhile) say so and set
    settings.report_path to None instead of losing the summary to a traceback."""
    try:
        settings.report_path = write_run_report(report, settings.report_path)
    except OSError as exc:
        print(f"error: could not write the report {settings.report_path}: {exc}", file=sys.stderr)
        settings.report_path = None


def write_run_report(report: "RunReport", path: Path) -> Path:
    """Write the report at `path`, or at the next free name (`_1`, `_2`...) when a file of that
    name exists, also one another run wrote meanwhile. Returns where it went."""
    from .report import write_report

    path = Path(path)
    return write_no_clobber(lambda: free_path(path.parent, path.stem, path.suffix or ".json"),
                            lambda p: write_report(report, p))


# ----------------------------------------------------------------------------- restore, step by step


@dataclass
class RestorePlan:
    """What `validate` settles from the arguments, before any model, bank or detector is opened."""

    args: argparse.Namespace
    inputs: list
    skipped_inputs: list
    options: "RestoreOptions"
    selection: "FaceSelection"
    out_dir: Path
    report_path: Path
    cache_dir: Optional[Path]
    settings_digest: str
    images_per_chunk: int


@dataclass
class Resources:
    """What `open_resources` loads: the collaborators of a run."""

    detector: "FaceDetector"
    bank: "Optional[ReferenceBank]"
    restorer: "OneStepRestorer"
    pipeline: "FaceRestorePipeline"


# Arguments that decide an output's pixels: equal values give equal outputs, so resume compares them.
_PIXEL_SETTINGS = ("model", "base", "refs", "mode", "faces", "dtype", "seed", "max_refs", "color_fix", "mask",
                   "feather", "erosion", "strength", "crop_size", "detail_transfer", "format", "detector",
                   "detector_model", "rotate", "video")


def _pixel_settings(args: argparse.Namespace) -> dict:
    """The values resume compares: the pixel-deciding arguments, with the model, base and
    reference files standing for their contents (restorer_core.outputs.file_identity)."""
    from .model_zoo import DEFAULT_MODEL_PATH
    from .outputs import file_identity

    values = {k: getattr(args, k, None) for k in _PIXEL_SETTINGS}
    model = DEFAULT_MODEL_PATH if str(args.model or "").strip().lower() in ("", "default") else args.model
    values.update(model=file_identity(model), base=file_identity(args.base), refs=file_identity(args.refs))
    return values


def validate(args: argparse.Namespace) -> RestorePlan:
    """Step 1: every check that needs no model. Raises UsageError; writes nothing."""
    from .outputs import check_folder_writable, settings_digest
    from .paste import PasteConfig
    from .pipeline import RestoreOptions

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a folder")
    selection = parse_faces(args.faces)
    skipped: list = []
    inputs = collect_inputs(args.inputs, skipped)
    if args.video:
        from .temporal import frame_order

        inputs = frame_order(inputs)
    from .conditioning import check_references_given

    try:
        check_references_given(args.mode, bool(args.refs))
    except ValueError as exc:
        raise UsageError(f"--mode {args.mode}: {exc} (--refs FOLDER or BANK.safetensors)") from exc
    try:
        paste = PasteConfig(mask=args.mask, erosion=args.erosion, feather=args.feather, color_fix=args.color_fix)
        options = RestoreOptions(mode=args.mode, max_refs=args.max_refs, batch_size=args.batch_size,
                                 seed=args.seed, strength=args.strength, paste=paste, selection=selection,
                                 detector=args.detector, detector_model=args.detector_model,
                                 crop_size=args.crop_size, detail_transfer=args.detail_transfer,
                                 cache_dir=args.cache_dir, use_cache=not args.no_cache)
        if args.video:
            from .temporal import LandmarkSmoother

            options.temporal = LandmarkSmoother()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    report_path = Path(args.report) if args.report else out_dir / "restore_report.json"
    if report_path.is_dir():
        raise UsageError(f"--report {report_path} is a folder; give a file name such as report.json")
    cache_dir = Path(args.cache_dir) if args.cache_dir and not args.no_cache else None
    for folder, what in ((out_dir, "output folder"), (report_path.parent, "report folder"),
                         (cache_dir, "--cache-dir")):
        problem = check_folder_writable(folder, what) if folder is not None else None
        if problem:
            raise UsageError(f"{problem}; choose another folder")
    digest = settings_digest(_pixel_settings(args))
    return RestorePlan(args, inputs, skipped, options, selection, out_dir, report_path, cache_dir, digest,
                       images_per_chunk=max(1, args.batch_size))


def _identity_network(choice: Optional[str], device: Any) -> Any:
    """The identity network: the shipped embedder (choice None or "shipped"), or ArcFace from an
    insightface .onnx (choice: the file, or an insightface models folder holding one)."""
    from .errors import ModelNotFoundError
    from .face_id.arcface_onnx import KNOWN_FILES, ArcFaceOnnx, find_arcface
    from .identity import load_identity_embedder

    if choice is None or choice.strip().lower() == "shipped":
        return load_identity_embedder(device=device)
    path = Path(choice).expanduser()
    if path.is_dir():
        found = find_arcface([path])
        if found is None:
            raise ModelNotFoundError(f"--identity {choice}: no ArcFace model in that folder (looked for "
                                     f"{', '.join(KNOWN_FILES[:2])})")
        path = found
    return ArcFaceOnnx(path)


def _identity_or_note(report: "RunReport", needed: bool, device: Any, choice: Optional[str] = None) -> Any:
    """The identity network when it can run; otherwise None and a note in the report (an
    --identity the user gave that cannot run is an error)."""
    from .errors import CheckpointError

    try:
        model = _identity_network(choice, device)
        report.identity = {"available": True, "network": getattr(model, "name", "identity_embedder")}
        if getattr(model, "path", None) is not None:
            report.identity["path"] = str(model.path)
        return model
    except (CheckpointError, ImportError, OSError) as exc:
        report.identity = {"available": False, "reason": str(exc)}
        if choice is not None and choice.strip().lower() != "shipped":
            raise UsageError(f"--identity: {exc}") from exc
        if needed:
            raise UsageError(f"--faces similar needs the identity embedder: {exc}") from exc
        report.note("identity similarity not computed: identity embedder unavailable")
        return None


def _check_conditioning(pipeline: "FaceRestorePipeline", bank: "Optional[ReferenceBank]",
                        options: "RestoreOptions", report: "RunReport") -> None:
    """The requested conditioning and face selection can work with this model and bank; the
    report notes which conditioning the core decided on, and why."""
    try:
        cond = pipeline.conditioning(bank, options)
        report.note(f"conditioning: {cond.describe()} ({cond.reason})")
        if options.selection.mode == "similar":
            pipeline.similarity_fn(bank, options)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def all_done_before(plan: RestorePlan) -> Optional[list]:
    """Resume shortcut: when an earlier run already restored every input with these settings,
    their "done" records (so no model is loaded for nothing); else None."""
    from .outputs import PreviousOutputs, file_sha256, find_done_output
    from .report import DONE, ImageRecord

    if plan.args.force:
        return None
    previous = PreviousOutputs.read(plan.out_dir)
    records = []
    for path in plan.inputs:
        try:
            sha = file_sha256(path)
        except OSError:
            return None
        earlier = find_done_output(path, sha, plan.settings_digest, plan.out_dir, previous)
        if earlier is None:
            return None
        records.append(ImageRecord(str(path), output=str(earlier), status=DONE, input_sha256=sha,
                                   note="restored by an earlier run with the same settings; kept (--force redoes it)"))
    return records


def open_resources(plan: RestorePlan, ctx: "DistContext", report: "RunReport") -> Resources:
    """Step 2: detector, reference bank, restorer (and identity embedder) -> a pipeline.
    Raises UsageError for a missing or bad model, bank or detector; writes nothing."""
    from . import distributed
    from .bank import open_bank
    from .detect import create_detector
    from .errors import BankError, CheckpointError, DetectorError
    from .model_zoo import describe_model, load_any_restorer, pick_device_dtype
    from .outputs import check_folder_writable
    from .pipeline import FaceRestorePipeline
    from .reference_cache import default_cache_dir

    args = plan.args
    try:
        device, dtype = pick_device_dtype(distributed.rank_device(args.device, ctx), args.dtype)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        detector = create_detector(args.detector, args.detector_model)
        bank = open_bank(args.refs, detector) if args.refs else None
        restorer = load_any_restorer(args.model, args.base, device, dtype, args.models_dir, args.allow_download)
    except (BankError, CheckpointError, DetectorError) as exc:
        raise UsageError(str(exc)) from exc
    if bank is not None and plan.cache_dir is None and not args.no_cache:
        problem = check_folder_writable(default_cache_dir(bank), "reference cache folder")
        if problem:  # the cache is optional: the run works, but recomputes every time
            report.note(f"{problem}: reference keys/values are recomputed each run (--cache-dir to choose one)")
    identity = None
    if bank is not None:  # similarity is measured against the bank's person
        identity = _identity_or_note(report, plan.selection.mode == "similar", device, args.identity)
    compile_cache = False if str(args.compile_cache).lower() == "none" else args.compile_cache
    pipeline = FaceRestorePipeline(restorer, identity=identity, speed=args.speed, compile_cache=compile_cache)
    persist = getattr(getattr(pipeline.runner, "fast", None), "persist", None)
    if persist is not None:  # optional: without it every run compiles again
        problem = check_folder_writable(persist.cache.folder, "compile cache folder")
        if problem:
            report.note(f"{problem}: the compiled code is not saved, each run compiles again "
                        "(--compile-cache DIR to choose one)")
    pipeline.add_detector(plan.options, detector)
    _check_conditioning(pipeline, bank, plan.options, report)
    report.model = describe_model(restorer)
    if bank is not None:
        report.bank = bank.summary()
    return Resources(detector, bank, restorer, pipeline)


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
    from .errors import RestorerError

    if not ctx.enabled:
        return
    distributed.start(ctx, res.restorer.device)
    if res.pipeline.conditioning(res.bank, plan.options).use_references:
        with distributed.main_first(ctx):
            try:
                res.pipeline.reference_kv(res.bank, plan.options)
            except (RestorerError, RuntimeError, ValueError):
                pass  # run_restore meets the same error and records it per image, as in one process


def summarize(report: "RunReport", report_path: Optional[Path]) -> int:
    """Step 5: the per-image summary on stderr; the exit code the report calls for (1 also when
    the report could not be written: report_path None)."""
    totals = report.totals()
    done = f", {totals['images_done_before']} done by an earlier run" if totals["images_done_before"] else ""
    kept = ""
    if totals["faces_kept"]:
        from .detail import AUTO

        why = "already sharp" if str(report.settings.get("strength", AUTO)).strip().lower() == AUTO else "strength 0"
        kept = f", {totals['faces_kept']} kept as they were ({why})"
    print(f"{totals['images']} image(s): {totals['images_restored']} restored, "
          f"{totals['images_unchanged']} unchanged (no face restored), {totals['images_failed']} failed{done}; "
          f"{totals['faces_restored']} face(s) restored{kept}. Report: {report_path or 'NOT WRITTEN (see above)'}",
          file=sys.stderr)
    for im in report.images:
        if im.status == "failed":
            print(f"  failed: {im.input}: {im.error}", file=sys.stderr)
        elif im.rotation:
            print(f"  {im.input}: faces found with the image turned {im.rotation} degrees", file=sys.stderr)
    if report.skipped_inputs:
        first = report.skipped_inputs[0]
        more = f" and {len(report.skipped_inputs) - 1} more (listed in the report)" if len(report.skipped_inputs) > 1 else ""
        print(f"  not taken as input: {first['input']} ({first['reason']}){more}", file=sys.stderr)
    return EXIT_FAILED if report.status == "failed" or report_path is None else EXIT_OK


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


def _restore_command(args: argparse.Namespace, ctx: "DistContext") -> int:
    """validate -> open resources -> shard -> run -> report."""
    from . import distributed
    from .errors import CancelledError
    from .report import RunReport, write_report

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


def cmd_bank_build(args: argparse.Namespace) -> int:
    from .atomic import remove_stale_temp_files
    from .bank import build_bank, save_bank
    from .errors import BankError, DetectorError
    from .outputs import check_folder_writable

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
    problem = check_folder_writable(out.parent, "bank folder")
    if problem:
        raise UsageError(f"{problem}; choose another --out")
    try:
        from .detect import create_detector

        detector = create_detector(args.detector, args.detector_model)
        bank = build_bank(args.sources, detector, args.align_size, ambiguity_ratio=args.ambiguity,
                          name=args.name or out.stem)
    except (BankError, DetectorError) as exc:
        raise UsageError(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out.parent)
    try:
        save_bank(bank, out)
    except BankError as exc:  # another build wrote the file meanwhile: keep theirs, say so
        print(f"error: {exc} (another run wrote it while this one was building; nothing was replaced)",
              file=sys.stderr)
        return EXIT_FAILED
    print(f"bank {out}: {len(bank)} reference face(s), {len(bank.rejected)} rejected")
    for r in bank.rejected:
        print(f"  rejected {r.source}: {r.reason}")
    return EXIT_OK


def cmd_bank_info(args: argparse.Namespace) -> int:
    from .bank import load_bank
    from .errors import BankError
    from .reference_cache import default_cache_dir

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
    p.add_argument("--detector", default="yunet", choices=DETECTORS,
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
    bb.add_argument("--debug", action="store_true", help="print tracebacks")
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
    if hasattr(args, "strength"):
        from .detail import check_strength

        try:
            args.strength = check_strength(args.strength)
        except ValueError:
            raise UsageError(f"--strength must be 'auto' or a number from 0 to 1, got {args.strength!r}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:  # everything after it, --help included, belongs to the converter
        return cmd_convert(argparse.Namespace(convert_args=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with code 2 on bad usage
    debug = bool(getattr(args, "debug", False))
    try:
        _check_numbers(args)
        if args.command == "restore":  # its warnings go into the report
            return int(args.func(args))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = int(args.func(args))
        for line in sorted({f"note: {w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught}):
            print(line, file=sys.stderr)
        return code
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen setup problem: say so, briefly
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {exc}\n(unexpected; run again with --debug for the traceback "
              "and report it)", file=sys.stderr)
        return EXIT_FAILED
