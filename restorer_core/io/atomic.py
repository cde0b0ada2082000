"""Writing a file atomically: a temp file in the target's folder, then moved into place.

A reader never sees half a file, a failed or cancelled write leaves nothing behind, and with
``overwrite=False`` an existing file (also one that appeared while writing) is never replaced.
Temp files are named ``.<target name>.<random>.onestep.tmp``; one left by a killed process is
removed by ``remove_stale_temp_files`` once it is old enough that no live writer can own it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional, Union

PathLike = Union[str, os.PathLike]

TEMP_SUFFIX = ".onestep.tmp"
# A writer touches its temp file while writing; one untouched this long belongs to a dead process.
STALE_TEMP_SECONDS = 3600.0
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")


def default_file_mode() -> int:
    """Permissions a plainly created file would get (0o666 minus the umask); temp files from
    mkstemp are 0o600, which would hide outputs from other users."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _link_no_clobber(tmp: str, path: Path) -> None:
    """Put tmp at path unless path exists (FileExistsError), without a check-then-write race."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists") from None
    except OSError:  # a file system without hard links
        if path.exists():
            raise FileExistsError(f"{path} already exists") from None
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: PathLike, overwrite: bool = True, mode: Optional[int] = None) -> Iterator[str]:
    """Yield a temp file name next to `path` to write to; when the block succeeds, the file
    becomes `path` (replacing it only when `overwrite`; else FileExistsError) with `mode`
    (default: `default_file_mode()`). Whatever happens, the temp file is gone afterwards."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode() if mode is None else mode)
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_bytes_atomic(path: PathLike, data: bytes, overwrite: bool = True, fsync: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
    return Path(path)


def write_text_atomic(path: PathLike, text: str, overwrite: bool = True) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite)


def remove_stale_temp_files(folder: PathLike, older_than: float = STALE_TEMP_SECONDS) -> list:
    """Delete this module's temp files in `folder` (not below it) last modified more than
    `older_than` seconds ago: leftovers of a process killed mid-write. Returns what was removed.
    Files of other programs (any other name) and fresh temp files are never touched."""
    folder = Path(folder)
    removed: list = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for entry in os.scandir(folder):
        if not _TEMP_NAME.match(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # gone meanwhile, or not ours to delete
            continue
    return removed
