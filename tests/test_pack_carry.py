"""scripts/pack_carry.py: every carry folder fits one call, and the gathered parts rebuild each file."""

import importlib.util
import json
import os
import subprocess
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
    # the parts in name order rebuild the file, and its hash lies beside the last part
    parts = sorted((f for d in dirs for f in d.iterdir() if f.name.startswith("faces.npz.part-")), key=lambda f: f.name)
    assert len(parts) >= 2 and b"".join(f.read_bytes() for f in parts) == cache.read_bytes()
    (sha,) = [f for d in dirs for f in d.iterdir() if f.name == "faces.npz.sha256"]
    assert sha.parent == parts[-1].parent and sha.read_text().split() == [pack.sha256_of(cache), "faces.npz"]
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


def test_gather_joins_parts_whatever_the_folder_order(tmp_path):
    """programme_v6.sh gather: the folders may be carried in any order (the last one often comes
    with the training command); the split cache is joined by part name and its hash checked."""
    cache = _file(tmp_path / "faces.npz", 2500, 2)
    wheel = _file(tmp_path / "a.whl", 300, 1)
    dirs = pack.write(pack.plan([(wheel, 300), (cache, 2500)], 1000), str(tmp_path / "carry"))
    assert len(dirs) == 3
    env = dict(os.environ, D=str(tmp_path / "d"), RUNS=str(tmp_path / "runs"))
    script = str(SCRIPT.parent / "programme_v6.sh")
    first = subprocess.run(["bash", script, "gather", str(dirs[2]), str(dirs[0])], env=env,
                           capture_output=True, text=True, check=True)
    assert "not complete yet" in first.stdout
    second = subprocess.run(["bash", script, "gather", str(dirs[1])], env=env, capture_output=True, text=True,
                            check=True)
    assert "faces.npz: complete, sha256 OK" in second.stdout
    assert (tmp_path / "d" / "faces.npz").read_bytes() == cache.read_bytes()
    assert (tmp_path / "d" / "a.whl").read_bytes() == wheel.read_bytes()
