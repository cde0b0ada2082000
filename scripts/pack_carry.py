#!/usr/bin/env python
"""Pack a programme session's inputs into carry folders, one per device call (docs/training/PROGRAMME_V6.md).

A device call carries at most 64 MiB, the working tree included. The inputs go in the order
given (wheels, loss network, face cache, then the state's manifest and files in tier order);
each folder is filled before the next is started, and a file that does not fit the space left
is split into `NAME.part-aa`, `-ab`, ..., with `NAME.sha256` (the whole file's hash) beside its
last part (`programme_v6.sh gather` joins the parts by name, whatever order the folders come in,
and checks the hash once all are there). Files of the state's highest tiers come last:
a session that runs short of calls leaves them out (`import --allow-partial`).

    python scripts/pack_carry.py --out .carry --tree-mib 18 /tmp/d/*.whl .traindata/faceres.safetensors \\
        .traindata/faces128.npz .state/training_state/v6/session2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

MIB = 1 << 20
CALL_LIMIT_MIB = 64.0
SPLITTABLE = (".npz",)  # joined by concatenation on the machine; state files stay whole (hash-checked)


@dataclass(frozen=True)
class Piece:
    """One file (or byte range of one) that goes into carry folder `folder` as `name`."""

    folder: int
    source: Path
    name: str
    offset: int
    size: int


def state_files(state: Path) -> Tuple[List[Path], List[str]]:
    """The state's manifest, then its files in tier order (weights first); and the missing ones.

    A partial state (a session whose last files did not come back) packs what it has."""
    manifest = json.loads((state / "manifest.json").read_text())
    files = sorted(manifest["files"], key=lambda f: f["tier"])
    present = [state / f["name"] for f in files if (state / f["name"]).is_file()]
    missing = [f["name"] for f in files if not (state / f["name"]).is_file()]
    return [state / "manifest.json"] + present, missing


def plan(files: Sequence[Tuple[Path, int]], capacity: int) -> List[Piece]:
    """Fill folders of `capacity` bytes in order; split splittable files at a folder's end."""
    if capacity <= 0:
        raise ValueError("no room left for carried files: the working tree alone fills a call")
    pieces: List[Piece] = []
    folder, free = 0, capacity
    for path, size in files:
        splittable = path.suffix in SPLITTABLE
        if not splittable and size > capacity:
            raise ValueError(f"{path} ({size / MIB:.1f} MiB) is larger than one call's room "
                             f"({capacity / MIB:.1f} MiB) and cannot be split")
        if not splittable:
            if size > free:
                folder, free = folder + 1, capacity
            pieces.append(Piece(folder, path, path.name, 0, size))
            free -= size
            continue
        offset, part = 0, 0
        while offset < size:
            if free <= 0:
                folder, free = folder + 1, capacity
            if part == 26:
                raise ValueError(f"{path} needs more than 26 parts")
            n = min(free, size - offset)
            pieces.append(Piece(folder, path, f"{path.name}.part-a{chr(ord('a') + part)}", offset, n))
            offset, free, part = offset + n, free - n, part + 1
    return pieces


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 * MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write(pieces: Sequence[Piece], out_prefix: str) -> List[Path]:
    """Write each folder `<out_prefix>N`; refuses folders that exist (never overwrites). A split
    file's `NAME.sha256` goes beside its last part."""
    folders = sorted({p.folder for p in pieces})
    dirs = [Path(f"{out_prefix}{chr(ord('A') + i)}") for i in folders]
    taken = [d for d in dirs if d.exists()]
    if taken:
        raise FileExistsError(f"{', '.join(map(str, taken))} exist: remove them or choose another --out")
    for d in dirs:
        d.mkdir(parents=True)
    for p in pieces:
        with open(p.source, "rb") as src, open(dirs[p.folder] / p.name, "wb") as dst:
            src.seek(p.offset)
            left = p.size
            while left:
                chunk = src.read(min(left, 8 * MIB))
                dst.write(chunk)
                left -= len(chunk)
    last_part = {p.source: p for p in pieces if p.name != p.source.name}
    for source, p in last_part.items():
        (dirs[p.folder] / f"{source.name}.sha256").write_text(f"{sha256_of(source)}  {source.name}\n")
    return dirs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", help="files, or a training-state folder (manifest.json inside)")
    ap.add_argument("--out", default=".carry", help="folder prefix: .carryA, .carryB, ...")
    ap.add_argument("--tree-mib", type=float, required=True, help="size of the working tree a call carries too")
    ap.add_argument("--margin-mib", type=float, default=1.0)
    a = ap.parse_args(argv)
    files: List[Path] = []
    for item in map(Path, a.inputs):
        if item.is_dir() and (item / "manifest.json").exists():
            found, missing = state_files(item)
            files += found
            if missing:
                print(f"{item}: partial state, not packed (absent): {' '.join(missing)}")
        elif item.is_file():
            files.append(item)
        else:
            print(f"error: {item} is neither a file nor a training-state folder", file=sys.stderr)
            return 2
    capacity = int((CALL_LIMIT_MIB - a.tree_mib - a.margin_mib) * MIB)
    try:
        pieces = plan([(f, f.stat().st_size) for f in files], capacity)
        dirs = write(pieces, a.out)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for i, d in enumerate(dirs):
        names = [p.name for p in pieces if p.folder == i]
        print(f"{d}: {sum(p.size for p in pieces if p.folder == i) / MIB:.1f} MiB: {' '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
