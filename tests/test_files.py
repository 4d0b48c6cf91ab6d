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


def test_save_figure_writes_the_suffixs_format_without_pyplot(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib
    from matplotlib.figure import Figure

    from gm.files import save_figure

    backend = matplotlib.get_backend()
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [1, 0])
    png = save_figure(figure, tmp_path / "plots" / "a.png", dpi=50)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert save_figure(figure, tmp_path / "a.pdf").read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["a.png"]  # no temporaries left
    assert matplotlib.get_backend() == backend
    with pytest.raises(ValueError, match="needs a suffix"):
        save_figure(figure, tmp_path / "noext")
