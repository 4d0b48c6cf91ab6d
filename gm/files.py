"""Atomic file writes, the one way the library writes a file that something else may read
(checkpoints, datasets, structures, results, metrics, downloads): the content goes to a
temporary file in the target's folder, which then replaces the target with ``os.replace``
(atomic on POSIX and Windows), so a reader sees the old file or the new one, never a partial
one, and a crash or kill mid-write leaves the old file as it was."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_savez", "atomic_write", "save_figure"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` (parent folders created) to write to; when the block
    ends normally it replaces ``path``, and when it raises it is removed and ``path`` is left
    untouched.

    The temporary name is unique per process and call (``.NAME.PID.RANDOM.tmp``), so
    concurrent writers of one target never write into each other's file; it is created with
    the process's usual permissions (umask), like the target would be.

    Example::

        with atomic_path("run/checkpoint.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left if the block raised before the replace


def save_figure(figure: Any, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Save a matplotlib ``Figure`` as ``path`` (the format from its suffix: png, pdf, svg ...)
    atomically, drawn on an Agg canvas: no pyplot state and no display are needed, so library
    plots never switch a notebook's backend. Parent folders are created.

    Raises:
        ValueError: if ``path`` has no suffix to take the format from.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    if not path.suffix:
        raise ValueError(f"path {path} needs a suffix naming the image format (e.g. .png)")
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format=path.suffix[1:])
    return path


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (see :func:`atomic_path`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if ``data`` is neither ``str`` nor ``bytes``.
    """
    if not isinstance(data, (str, bytes)):
        raise ValueError(f"data must be str or bytes, got {type(data).__name__}")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def atomic_savez(path: str | os.PathLike[str], arrays: dict[str, Any]) -> Path:
    """``numpy.savez_compressed`` of ``arrays`` to ``path`` through :func:`atomic_path` (the file
    keeps exactly its name: numpy would append ``.npz`` to a path without that suffix)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return Path(path)
