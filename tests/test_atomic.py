"""restorer_core.io.atomic: the one way files are written (temp file next to the target, then moved)."""

import os

import pytest

from restorer_core.io.atomic import atomic_path, default_file_mode, write_text_atomic


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_replaces_or_refuses_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.txt"
    write_text_atomic(path, "one")
    assert path.read_text() == "one" and path.stat().st_mode & 0o777 == default_file_mode()
    write_text_atomic(path, "two")
    assert path.read_text() == "two"
    with pytest.raises(FileExistsError):
        write_text_atomic(path, "three", overwrite=False)
    assert path.read_text() == "two" and leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "b.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"half")
            raise RuntimeError("cancelled")
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_no_clobber_also_refuses_a_file_that_appeared_while_writing(tmp_path):
    path = tmp_path / "c.txt"
    with pytest.raises(FileExistsError):
        with atomic_path(path, overwrite=False) as tmp:
            with open(tmp, "w") as fh:
                fh.write("mine")
            path.write_text("someone else's")
    assert path.read_text() == "someone else's" and leftovers(tmp_path) == []
    with atomic_path(tmp_path / "d.txt", overwrite=False, mode=0o600) as tmp:
        with open(tmp, "w") as fh:
            fh.write("x")
    assert os.stat(tmp_path / "d.txt").st_mode & 0o777 == 0o600
