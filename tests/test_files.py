"""gm.files: the library's one atomic writer."""

from __future__ import annotations

import pytest

from gm.files import atomic_path, atomic_write


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    assert atomic_write(target, "old\n") == target and target.read_text() == "old\n"
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.txt.") and tmp.suffix == ".tmp"
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_two_writers_get_different_temporaries(tmp_path):
    with atomic_path(tmp_path / "a") as first, atomic_path(tmp_path / "a") as second:
        assert first != second
        first.write_text("1")
        second.write_text("2")
    assert (tmp_path / "a").read_text() == "1"  # the outer block ends last: its content stands


def test_atomic_write_rejects_other_data(tmp_path):
    with pytest.raises(ValueError, match="data must be str or bytes"):
        atomic_write(tmp_path / "x", 3)
