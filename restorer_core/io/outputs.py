"""Output files of a restore run: their names, how a re-run recognises them, and where they may go.

Names: `photo.jpg` -> `photo_restored.jpg`, or `photo_restored_1.jpg`, `_2`... when taken; an
existing file is never replaced.

Recognising our own outputs (for resume, and so that a re-run never restores its own outputs):
  1. a PNG or JPEG output carries a marker (a PNG text chunk / JPEG comment, see
     imageio.OUTPUT_MARKER) naming the input's SHA-256 and the run's settings digest;
  2. every output, in any format, is listed in the run's JSON report with the same two values
     (the report is written at the end of a run, so this covers TIFF/WEBP/BMP outputs of runs
     that were not killed);
  3. an image without a face is copied through byte for byte: a file named like its output
     whose bytes equal the input's is that copy.
Only files named `<stem>_restored[_N].<ext>` are ever taken for outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from .atomic import atomic_path
from ..options import IMAGE_EXTENSIONS

OUTPUT_TAG = "_restored"
_OUTPUT_STEM = re.compile(r"^(?P<stem>.+)" + OUTPUT_TAG + r"(?:_(?P<n>\d+))?$")
REPORT_GLOB = "restore_report*.json"


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """folder/stem+suffix, or stem_1, stem_2... : the first name that does not exist yet."""
    candidate = folder / f"{stem}{suffix}"
    n = 0
    while candidate.exists():
        n += 1
        candidate = folder / f"{stem}_{n}{suffix}"
    return candidate


def write_no_clobber(target_for: Callable[[], Path], write: Callable[[Path], object],
                     exists_errors: tuple = (FileExistsError,),
                     same: Optional[Callable[[Path], bool]] = None) -> Path:
    """Call write(path) for the next free path; when another process takes the name meanwhile
    (write raises one of `exists_errors` and the path now exists), return that path if
    same(path) says it holds what we were writing, else retry with the next name."""
    for _ in range(1000):
        path = target_for()
        try:
            write(path)
            return path
        except exists_errors:
            if not path.exists():
                raise
            if same is not None and same(path):
                return path
    raise FileExistsError("could not find a free output file name after 1000 tries")


def copy_no_clobber(src: Path, dst: Path) -> None:
    """Copy file bytes to dst atomically; FileExistsError if dst exists."""
    with atomic_path(dst, overwrite=False) as tmp:
        shutil.copyfile(src, tmp)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def settings_digest(settings: dict) -> str:
    """Digest of the settings that decide an output's pixels (same settings, same output)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_identity(spec: Optional[object]) -> object:
    """A cheap stand-in for the contents of a file or folder named in the settings (the model,
    the references): size and modification time of the file, or of each file in the folder (not
    below). A replaced model or an edited reference folder thus changes the settings digest.
    Anything that is not a path (None, a model name) is returned as given."""
    if spec is None:
        return None
    path = Path(str(spec)).expanduser()
    try:
        if path.is_file():
            st = path.stat()
            return [str(path.resolve()), st.st_size, st.st_mtime_ns]
        if path.is_dir():
            return [str(path.resolve())] + sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns]
                                                  for p in path.iterdir() if p.is_file())
    except OSError:
        pass
    return str(spec)


def output_marker(input_path: Path, input_sha256: str, digest: str) -> dict:
    return {"input": input_path.name, "input_sha256": input_sha256, "settings": digest}


def looks_like_output(path: Path) -> bool:
    """Named like an output of this tool (`<stem>_restored[_N].<ext>`)."""
    return _OUTPUT_STEM.match(Path(path).stem) is not None


def candidate_outputs(folder: Path, stem: str, suffixes: Sequence[str]) -> list:
    """Existing files `folder/<stem>_restored[_N]<suffix>`, probing N = 1, 2... up to the first
    missing name (the order free_path hands names out in)."""
    found = []
    for suffix in dict.fromkeys(suffixes):
        candidate, n = folder / f"{stem}{OUTPUT_TAG}{suffix}", 0
        while candidate.exists():
            if candidate.is_file():
                found.append(candidate)
            n += 1
            candidate = folder / f"{stem}{OUTPUT_TAG}_{n}{suffix}"
    return found


# ----------------------------------------------------------------------------- resume


@dataclass
class PreviousOutputs:
    """What earlier runs wrote into one output folder, read from their reports."""

    by_output: dict = field(default_factory=dict)  # output file name -> (input sha256, settings digest)

    @classmethod
    def read(cls, folder: Path, extra_reports: Iterable[Path] = ()) -> "PreviousOutputs":
        found = cls()
        reports = list(folder.glob(REPORT_GLOB)) if folder.is_dir() else []
        for report in [*reports, *extra_reports]:
            try:
                data = json.loads(Path(report).read_text(encoding="utf-8"))
                digest = data.get("settings_digest")
                for im in data.get("images", []):
                    out, sha = im.get("output"), im.get("input_sha256")
                    if out and sha and digest and im.get("status") in ("restored", "unchanged"):
                        found.by_output[Path(out).name] = (sha, digest)
            except (OSError, ValueError, AttributeError, TypeError):
                continue  # someone else's JSON, or a damaged report: it simply tells us nothing
        return found


def is_output_of(path: Path, input_path: Path, input_sha256: str, digest: str,
                 previous: Optional[PreviousOutputs] = None) -> bool:
    """`path` is this tool's output of these input bytes with these settings (see module doc)."""
    from .imageio import read_output_marker

    if path.resolve() == input_path.resolve() or not path.is_file():
        return False
    marker = read_output_marker(path)
    if marker is not None:
        return marker.get("input_sha256") == input_sha256 and marker.get("settings") == digest
    if previous is not None and previous.by_output.get(path.name) == (input_sha256, digest):
        return True
    return path.stat().st_size == input_path.stat().st_size and file_sha256(path) == input_sha256


def find_done_output(input_path: Path, input_sha256: str, digest: str, out_dir: Path,
                     previous: PreviousOutputs) -> Optional[Path]:
    """The output an earlier run made from these input bytes with these settings, or None."""
    for path in candidate_outputs(out_dir, input_path.stem, (input_path.suffix, *IMAGE_EXTENSIONS)):
        if is_output_of(path, input_path, input_sha256, digest, previous):
            return path
    return None


def own_output_reason(path: Path, siblings: Sequence[Path], previous: PreviousOutputs) -> Optional[str]:
    """Why `path` (an input candidate) is an output of this tool, or None when it is not.
    `siblings`: the other candidates of the same folder."""
    from .imageio import read_output_marker

    m = _OUTPUT_STEM.match(path.stem)
    if not m:
        return None
    if read_output_marker(path) is not None:
        return "an output of an earlier run (marker in the file)"
    if path.name in previous.by_output:
        return "an output of an earlier run (listed in its report)"
    size = path.stat().st_size
    for other in siblings:
        if other != path and other.stem == m.group("stem") and other.stat().st_size == size:
            if file_sha256(other) == file_sha256(path):
                return f"an unchanged copy of {other.name} written by an earlier run"
    return None


# ----------------------------------------------------------------------------- writable paths


def check_folder_writable(folder: Path, what: str) -> Optional[str]:
    """None when files can be created in `folder` (or in the folder it would be created in);
    else a message naming `what` and the reason. Probes by creating and removing a temp file,
    which also catches read-only file systems and missing permissions for root-owned folders."""
    folder = Path(folder)
    probe_dir = folder
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        return f"{what} {folder} cannot be created: {probe_dir} is a file, not a folder"
    try:
        fd, name = tempfile.mkstemp(prefix=".onestep-write-check.", dir=probe_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        where = "" if probe_dir == folder else f" (it would be created in {probe_dir})"
        return f"{what} {folder} is not writable{where}: {exc.strerror or exc}"
    return None
