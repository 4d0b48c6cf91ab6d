"""Reading backbone chains from structure files.

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

Coordinates are in Angstrom; atoms are ordered :data:`proteins.residues.BACKBONE_ATOMS` (N, CA, C, O).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from proteins.residues import BACKBONE_ATOMS
from proteins.sources import _decompress

__all__ = ["BackboneChain", "read_backbone_chains"]

_CIF_SUFFIXES = (".cif", ".mmcif")
_PDB_SUFFIXES = (".pdb", ".ent", ".pdbqt")
# ATOM/HETATM records cut after column 66: the coordinate, occupancy and B-factor fields end
# there; see the module docstring for the files that need it.
_ATOM_TAIL = re.compile(r"^((?:ATOM  |HETATM)[^\r\n]{0,60})[^\r\n]*", re.M)


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
