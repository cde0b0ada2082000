"""Which files a run restores: files as given, folders as their images, never this tool's outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..options import IMAGE_EXTENSIONS
from .usage import UsageError


def _is_image_file(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path):
            return True
    except Exception:  # noqa: BLE001 - whatever Pillow says, it is not an image it can open
        return False


def collect_inputs(specs: Sequence[str], skipped: Optional[list] = None) -> list:
    """Files as given, folders as their images (sorted by name). UsageError for missing paths.

    This tool's own outputs are never inputs (see restorer_core.io.outputs), and a file named like an
    output (`*_restored*`) that is not an image at all is left out too (so a stray one does not
    fail every run); each file left out is appended to `skipped` as {"input", "reason"}.
    """
    from ..io.outputs import PreviousOutputs, looks_like_output, own_output_reason

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
