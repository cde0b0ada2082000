"""scripts/pack_carry.py: every carry folder fits one call, and the gathered parts rebuild each file."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pack_carry.py"


def _load():
    spec = importlib.util.spec_from_file_location("pack_carry", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


pack = _load()


def _file(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(bytes((i * 31 + seed) % 251 for i in range(size)))
    return path


def _state(folder: Path) -> Path:
    folder.mkdir()
    files = []
    for name, tier, size in (("state-01.safetensors", 1, 300), ("state-00.safetensors", 0, 500)):
        _file(folder / name, size, tier)
        files.append({"name": name, "tier": tier, "bytes": size})
    (folder / "manifest.json").write_text(json.dumps({"files": files}))
    return folder


def test_folders_fit_and_parts_rebuild_the_cache(tmp_path):
    wheel = _file(tmp_path / "a.whl", 400, 1)
    cache = _file(tmp_path / "faces.npz", 2500, 2)
    state = _state(tmp_path / "state")
    capacity = 1000
    (state / "state-01.safetensors").rename(tmp_path / "lost")
    found, missing = pack.state_files(state)
    assert missing == ["state-01.safetensors"]
    (tmp_path / "lost").rename(state / "state-01.safetensors")
    found, missing = pack.state_files(state)
    assert missing == []
    files = [wheel, cache] + found
    pieces = pack.plan([(f, f.stat().st_size) for f in files], capacity)
    dirs = pack.write(pieces, str(tmp_path / "carry"))
    assert [d.name for d in dirs] == [f"carry{c}" for c in "ABCDE"[:len(dirs)]]
    for d in dirs:
        assert sum(f.stat().st_size for f in d.iterdir()) <= capacity
    # gather's order: folders in order, files sorted by name within a folder, parts appended
    joined = b"".join((d / n).read_bytes() for d in dirs for n in sorted(p.name for p in d.iterdir())
                      if n.startswith("faces.npz.part-"))
    assert joined == cache.read_bytes()
    # state files stay whole, tier 0 before tier 1, the manifest first
    names = [p.name for p in pieces]
    assert names.index("manifest.json") < names.index("state-00.safetensors") < names.index("state-01.safetensors")
    assert (dirs[-1] / "state-01.safetensors").read_bytes() == (state / "state-01.safetensors").read_bytes()


def test_unsplittable_file_too_large_and_existing_folders_are_refused(tmp_path):
    big = _file(tmp_path / "s.safetensors", 2000, 3)
    with pytest.raises(ValueError, match="cannot be split"):
        pack.plan([(big, 2000)], 1000)
    with pytest.raises(ValueError, match="working tree"):
        pack.plan([(big, 2000)], 0)
    small = _file(tmp_path / "w.whl", 10, 4)
    (tmp_path / "carryA").mkdir()
    (tmp_path / "carryA" / "keep.txt").write_text("user file")
    pieces = pack.plan([(small, 10)], 1000)
    with pytest.raises(FileExistsError):
        pack.write(pieces, str(tmp_path / "carry"))
    assert (tmp_path / "carryA" / "keep.txt").read_text() == "user file"
    assert pack.main([str(tmp_path / "missing.whl"), "--tree-mib", "1", "--out", str(tmp_path / "x")]) == 2
