"""Residue types and backbone atoms: the one-letter alphabet, three-letter codes and the
encoding of sequences as residue indices (:data:`UNKNOWN_RESIDUE` for any other letter)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "BACKBONE_ATOMS",
    "AMINO_ACIDS",
    "THREE_LETTER_CODES",
    "UNKNOWN_RESIDUE",
    "encode_sequence",
    "decode_residues",
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
