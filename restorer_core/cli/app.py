"""The `python -m restorer_core` parser and entry point: one sub-command per module of this package."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Optional, Sequence

from . import bank, convert, restore
from .args import check_numbers
from .usage import EXIT_CANCELLED, EXIT_FAILED, EXIT_USAGE, UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m restorer_core",
        description="One-step, reference-based face restoration.",
        epilog="exit codes: 0 ok, 1 some image failed, 2 usage/setup error (nothing written), 130 cancelled")
    sub = parser.add_subparsers(dest="command", required=True)
    restore.add_parser(sub)
    bank.add_parser(sub)
    convert.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:  # everything after it, --help included, belongs to the converter
        return convert.cmd_convert(argparse.Namespace(convert_args=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with code 2 on bad usage
    debug = bool(getattr(args, "debug", False))
    try:
        check_numbers(args)
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
