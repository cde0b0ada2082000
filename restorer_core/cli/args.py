"""Argument helpers shared by the commands: --faces parsing, detector arguments, number checks."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..options import DETECTORS
from .usage import UsageError

if TYPE_CHECKING:
    from ..faces.select import FaceSelection

OUTPUT_FORMATS = ("keep", "png", "jpg", "webp", "tif")


def parse_faces(text: str) -> "FaceSelection":
    """--faces value -> FaceSelection: all | largest[:N] | index:0,2 | min-size:PX | similar[:THRESHOLD]."""
    from ..faces.select import FaceSelection, parse_indices

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


def add_detector_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", default="yunet", choices=DETECTORS,
                   help="face detector backend (default: the shipped YuNet)")
    p.add_argument("--detector-model", default=None, help="weights file for the detector backend")


def check_numbers(args: argparse.Namespace) -> None:
    if getattr(args, "batch_size", 1) < 1:
        raise UsageError("--batch-size must be at least 1")
    if getattr(args, "max_refs", 1) < 1:
        raise UsageError("--max-refs must be at least 1")
    if hasattr(args, "strength"):
        from ..restore.detail import check_strength

        try:
            args.strength = check_strength(args.strength)
        except ValueError:
            raise UsageError(f"--strength must be 'auto' or a number from 0 to 1, got {args.strength!r}") from None
    if hasattr(args, "identity_gate"):
        args.identity_gate = parse_identity_gate(args.identity_gate)
    if getattr(args, "no_refs_strength", 0.0) is None:  # the library's default, named in the report's settings
        from ..restore.identity_gate import NO_REFS_STRENGTH

        args.no_refs_strength = NO_REFS_STRENGTH


def parse_identity_gate(value) -> "float | None":
    """--identity-gate: off -> None, on -> the default threshold, a number in (0, 1] -> itself;
    UsageError saying what is allowed otherwise."""
    from ..restore.identity_gate import DEFAULT_THRESHOLD, check_threshold

    if value is None or isinstance(value, float):
        return value
    text = str(value).strip().lower()
    if text == "off":
        return None
    if text == "on":
        return DEFAULT_THRESHOLD
    try:
        return check_threshold(text)
    except ValueError:
        raise UsageError(f"--identity-gate must be off, on or a cosine threshold in (0, 1], got {value!r}") from None
