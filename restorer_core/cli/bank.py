"""`bank build` and `bank info`: make a reference bank file from photos, and show one."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .args import add_detector_args
from .usage import EXIT_FAILED, EXIT_OK, UsageError


def cmd_bank_build(args: argparse.Namespace) -> int:
    from ..io.atomic import remove_stale_temp_files
    from ..restore.bank import build_bank, save_bank
    from ..errors import BankError, DetectorError
    from ..io.outputs import check_folder_writable

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
        from ..faces.detect import create_detector

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
    from ..restore.bank import load_bank
    from ..errors import BankError
    from ..restore.reference_cache import default_cache_dir

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


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """The `bank build` and `bank info` sub-commands."""
    b = sub.add_parser("bank", help="reference banks").add_subparsers(dest="bank_command", required=True)
    bb = b.add_parser("build", help="detect and align one face per photo into a bank file")
    bb.add_argument("sources", nargs="+", metavar="PHOTO_OR_FOLDER")
    bb.add_argument("--out", required=True, help="bank file to write (.safetensors; never overwritten)")
    bb.add_argument("--align-size", type=int, default=512)
    bb.add_argument("--ambiguity", type=float, default=0.8,
                    help="reject a photo whose second face is at least this fraction of the largest")
    bb.add_argument("--name", default=None)
    bb.add_argument("--debug", action="store_true", help="print tracebacks")
    add_detector_args(bb)
    bb.set_defaults(func=cmd_bank_build)
    bi = b.add_parser("info", help="show a bank's faces, rejects and caches")
    bi.add_argument("bank")
    bi.add_argument("--json", action="store_true")
    bi.set_defaults(func=cmd_bank_info)
