"""Downloading a file, one way for the whole library: streamed in 1 MiB chunks into a temporary
file beside the target, hashed on the way (an expected sha256 is checked), optionally checked by
the caller, and only then renamed into place, so that an interrupted or bad download never leaves
a file where a good one is expected. Progress on stderr: a tqdm bar on a terminal, elsewhere (logs,
pipes) a plain line every ``every_s`` seconds and at each further quarter of a known size.

Used by the Earth datasets (``python -m benchmarks download``) and the protein structure
archives (:func:`proteins.sources.fetch_sources`).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gm.files import atomic_path

__all__ = ["DownloadError", "download", "format_size"]

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched (``kind == "network"``) or written (``"write"``), or what was
    fetched failed its check (``"sha256"`` or ``"content"``)."""

    def __init__(self, message: str, kind: str = "network") -> None:
        super().__init__(message)
        self.kind = kind


def format_size(size: int) -> str:
    """``"12.3 MB"`` (decimal units, as PyPI and tqdm's ``unit_scale`` show them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _content_length(response: Any) -> int | None:
    """The response's Content-Length in bytes, or None where the server sent none (or junk)."""
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    if value is None:
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        return None
    return size if size >= 0 else None


class _Progress:
    """Bytes received of one download, on stderr (see the module docstring)."""

    def __init__(self, name: str, total: int | None, *, enabled: bool, every_s: float = 10.0) -> None:
        from gm.train.progress import is_interactive

        self.name, self.total, self.enabled, self.every_s = name, total, enabled, every_s
        self.stream = sys.stderr  # looked up now: test harnesses replace it
        self.done, self.quarter, self.last = 0, 0, time.monotonic()
        self.bar = None
        if enabled and is_interactive(self.stream):  # a terminal or Jupyter, as the trainer's bar
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, desc=name, unit="B", unit_scale=True, leave=False, dynamic_ncols=True, file=self.stream
            )

    def update(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        if not self.enabled:
            return
        now = time.monotonic()
        quarter = 4 * self.done // self.total if self.total else 0
        if now - self.last >= self.every_s or (
            self.total is not None and quarter > self.quarter and self.done < self.total
        ):
            self.quarter, self.last = max(quarter, self.quarter), now
            of = f" of {format_size(self.total)} ({100 * self.done // self.total}%)" if self.total else ""
            print(f"downloading {self.name}: {format_size(self.done)}{of}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write(handle: Any, chunk: bytes, path: Path) -> None:
    """Write a chunk, a failure (a full disk, a read-only folder) as a ``"write"`` DownloadError,
    which the network handler lets through (it is not an OSError)."""
    try:
        handle.write(chunk)
    except OSError as error:
        raise DownloadError(f"cannot write {path}: {error}", "write") from error


def download(
    url: str,
    path: str | os.PathLike[str],
    *,
    timeout: float = 60.0,
    sha256: str | None = None,
    check: Callable[[Path], None] | None = None,
    progress: bool = False,
    label: str | None = None,
    origin: str = "",
    purpose: str = "",
) -> Path:
    """Fetch ``url`` into ``path`` (its folder is created), atomically.

    Args:
        timeout: socket timeout in seconds per request.
        sha256: the expected hex digest of the content (None: not checked).
        check: called with the temporary file before it is renamed into place; a ``ValueError``
            or ``UnicodeDecodeError`` it raises becomes a :class:`DownloadError` naming the URL.
        progress: report on stderr what is fetched, how much, and when it is done.
        label: the name in the progress lines (default: the file name).
        origin: where from, said in the first progress line ("... from <origin>").
        purpose: said in the first progress line ("... for <purpose>").

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: on a network or HTTP failure (``could not download <url>: <reason>``), a
            sha256 mismatch, or content that fails ``check``; nothing is left at ``path``.
    """
    path = Path(path)
    name = label or path.name
    digest = hashlib.sha256()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"cannot create {path.parent}: {error}") from error
    with atomic_path(path) as tmp:  # renamed into place only if the block ends without raising
        try:
            handle = open(tmp, "wb")  # noqa: SIM115 - closed below, after the download
        except OSError as error:
            raise DownloadError(f"cannot write {path}: {error}", "write") from error
        with handle:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    total = _content_length(response)
                    if progress:
                        size = format_size(total) if total is not None else "size unknown"
                        print(
                            f"downloading {name}{f' from {origin}' if origin else ''} ({size})"
                            + (f" for {purpose}" if purpose else ""),
                            file=sys.stderr,
                            flush=True,
                        )
                    meter = _Progress(name, total, enabled=progress)
                    try:
                        while chunk := response.read(_CHUNK):
                            digest.update(chunk)
                            _write(handle, chunk, path)
                            meter.update(len(chunk))
                    finally:
                        meter.close()
            except (urllib.error.URLError, OSError, http.client.HTTPException) as error:  # HTTPError, timeouts
                reason = getattr(error, "reason", None) or error
                raise DownloadError(f"could not download {url}: {reason}") from error
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise DownloadError(f"sha256 mismatch for {url}: the download is corrupt or was altered", "sha256")
        if check is not None:
            try:
                check(tmp)
            except (ValueError, UnicodeDecodeError) as error:
                raise DownloadError(f"{url} {error}", "content") from error
    if progress:
        checked = ", sha256 checked" if sha256 is not None else ""
        print(f"downloaded {name} ({format_size(meter.done)}{checked}) -> {path}", file=sys.stderr, flush=True)
    return path
