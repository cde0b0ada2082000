"""Step 1 of `restore`: every check that needs no model, settled into a RestorePlan."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .args import parse_faces
from .inputs import collect_inputs
from .resume import pixel_settings
from .usage import UsageError

if TYPE_CHECKING:
    from ..faces.select import FaceSelection
    from ..restore.pipeline import RestoreOptions


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


def validate(args: argparse.Namespace) -> RestorePlan:
    """Step 1: every check that needs no model. Raises UsageError; writes nothing."""
    from ..io.outputs import check_folder_writable, settings_digest
    from ..restore.paste import PasteConfig
    from ..restore.identity_gate import option_fields
    from ..restore.pipeline import RestoreOptions

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a folder")
    selection = parse_faces(args.faces)
    skipped: list = []
    inputs = collect_inputs(args.inputs, skipped)
    if args.video:
        from ..faces.temporal import frame_order

        inputs = frame_order(inputs)
    from ..restore.conditioning import check_references_given

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
                                 cache_dir=args.cache_dir, use_cache=not args.no_cache,
                                 **({} if getattr(args, "no_refs_strength", None) is None
                                    else {"no_refs_strength": args.no_refs_strength}),
                                 no_refs_structure_gate=getattr(args, "no_refs_structure_gate", True),
                                 **option_fields(getattr(args, "identity_gate", None)))
        if args.video:
            from ..faces.temporal import LandmarkSmoother

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
    digest = settings_digest(pixel_settings(args))
    return RestorePlan(args, inputs, skipped, options, selection, out_dir, report_path, cache_dir, digest,
                       images_per_chunk=max(1, args.batch_size))
