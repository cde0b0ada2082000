"""Step 2 of `restore`: open the detector, reference bank and restorer into a pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from .usage import UsageError

if TYPE_CHECKING:
    from ..faces.detect.base import FaceDetector
    from ..io.report import RunReport
    from ..models.restorer import OneStepRestorer
    from ..restore.bank import ReferenceBank
    from ..restore.pipeline import FaceRestorePipeline, RestoreOptions
    from .distributed import DistContext
    from .plan import RestorePlan


@dataclass
class Resources:
    """What `open_resources` loads: the collaborators of a run."""

    detector: "FaceDetector"
    bank: "Optional[ReferenceBank]"
    restorer: "OneStepRestorer"
    pipeline: "FaceRestorePipeline"


def _identity_network(choice: Optional[str], device: Any) -> Any:
    """The identity network: the shipped embedder (choice None or "shipped"), or ArcFace from an
    insightface .onnx (choice: the file, or an insightface models folder holding one)."""
    from pathlib import Path

    from ..errors import ModelNotFoundError
    from ..face_id.arcface_onnx import KNOWN_FILES, ArcFaceOnnx, find_arcface
    from ..faces.identity import load_identity_embedder

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
    from ..errors import CheckpointError

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


def open_resources(plan: RestorePlan, ctx: "DistContext", report: "RunReport") -> Resources:
    """Step 2: detector, reference bank, restorer (and identity embedder) -> a pipeline.
    Raises UsageError for a missing or bad model, bank or detector; writes nothing."""
    from . import distributed
    from ..restore.bank import open_bank
    from ..faces.detect import create_detector
    from ..errors import BankError, CheckpointError, DetectorError
    from ..model_zoo import describe_model, load_any_restorer, pick_device_dtype
    from ..io.outputs import check_folder_writable
    from ..restore.pipeline import FaceRestorePipeline
    from ..restore.reference_cache import default_cache_dir

    args = plan.args
    try:
        device, dtype = pick_device_dtype(distributed.rank_device(args.device, ctx), args.dtype)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        detector = create_detector(args.detector, args.detector_model, device=device)
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
    pipeline.add_detector(plan.options, detector, factory=lambda: create_detector(args.detector, args.detector_model))
    _check_conditioning(pipeline, bank, plan.options, report)
    report.model = describe_model(restorer)
    if bank is not None:
        report.bank = bank.summary()
    return Resources(detector, bank, restorer, pipeline)
