"""Three-state secondary structure (helix, strand, coil) from DSSP via pydssp; see
:mod:`proteins.metrics` for the definition and conventions."""

from __future__ import annotations

import math
from typing import Literal, overload

import numpy as np
import torch
from torch import Tensor

from proteins.inputs import structure_batch

__all__ = ["SS_PAD", "SS_COIL", "SS_HELIX", "SS_STRAND", "SS_NAMES", "secondary_structure", "ss_fractions"]

#: secondary-structure codes returned by :func:`secondary_structure`
SS_PAD, SS_COIL, SS_HELIX, SS_STRAND = -1, 0, 1, 2
SS_NAMES = ("coil", "helix", "strand")

# pydssp's array bookkeeping needs at least this many residues (5-turn helices are looked up)
_DSSP_MIN_RESIDUES = 6


# ----------------------------------------------------------------------------------------------
# secondary structure


def _dssp_codes(backbone: np.ndarray) -> np.ndarray:
    """pydssp three-state index (0 coil, 1 helix, 2 strand) of one chain ``(n, 4, 3)``."""
    import pydssp

    n = len(backbone)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n < _DSSP_MIN_RESIDUES:
        # pydssp's shapes break below 6 residues: append copies of the chain translated far
        # away (1 km), which cannot H-bond to anything, and cut them off again.
        copies = [backbone + np.array([1e7 * (k + 1), 0.0, 0.0]) for k in range(_DSSP_MIN_RESIDUES)]
        padded = np.concatenate([backbone] + copies)[: max(_DSSP_MIN_RESIDUES, n)]
        return np.asarray(pydssp.assign(padded, out_type="index"), dtype=np.int64)[:n]
    return np.asarray(pydssp.assign(backbone, out_type="index"), dtype=np.int64)


def secondary_structure(atoms: Tensor, mask: Tensor | None = None) -> Tensor:
    """Three-state DSSP secondary structure per residue.

    The real residues of each structure are passed to ``pydssp`` as one chain (pydssp has no
    mask; padding in the middle of a chain is therefore closed up, as if the neighbours were
    bonded). Helix = DSSP H/G/I, strand = E/B, coil = the rest (see the module docstring).

    Args:
        atoms: ``(B, L, A, 3)`` backbone atoms N, CA, C, O (``A >= 4``; further atoms are
            ignored). With ``A == 3`` the carbonyl O is placed in the peptide plane with ideal
            geometry (:func:`proteins.frames.backbone_atoms`), which changes H-bond energies
            slightly: use the same input format for every set that is compared.
        mask: optional bool ``(B, L)``, False = padding.

    Returns:
        LongTensor ``(B, L)`` on the CPU: :data:`SS_COIL` (0), :data:`SS_HELIX` (1),
        :data:`SS_STRAND` (2), and :data:`SS_PAD` (-1) at padding.

    Raises:
        ValueError: naming ``atoms`` or ``mask`` for wrong shapes or dtypes and for non-finite
            coordinates of real residues.
    """
    atoms, mask = structure_batch(atoms, mask, min_atoms=3, finite_atoms=slice(0, 4))
    if atoms.shape[2] == 3:
        from proteins.frames import backbone_atoms, frames_from_backbone

        atoms = backbone_atoms(frames_from_backbone(atoms, mask), mask, validate=False)  # rigid by construction
    backbone = atoms[:, :, :4].detach().to("cpu", torch.float64).numpy()
    real = mask.cpu().numpy()
    codes = np.full(real.shape, SS_PAD, dtype=np.int64)
    for b in range(len(backbone)):  # pydssp has no mask: one call per structure on its real residues
        codes[b, real[b]] = _dssp_codes(backbone[b, real[b]])
    return torch.from_numpy(codes)


@overload
def ss_fractions(codes: Tensor, per_structure: Literal[False] = False) -> dict[str, float]: ...
@overload
def ss_fractions(codes: Tensor, per_structure: Literal[True]) -> dict[str, Tensor]: ...
@overload
def ss_fractions(codes: Tensor, per_structure: bool = False) -> dict[str, float] | dict[str, Tensor]: ...


def ss_fractions(codes: Tensor, per_structure: bool = False) -> dict[str, float] | dict[str, Tensor]:
    """Fractions of helix, strand and coil among real residues (codes ``>= 0``).

    Args:
        codes: integer tensor ``(B, L)`` (or ``(L,)``) from :func:`secondary_structure`.
        per_structure: return ``(B,)`` tensors (NaN for a structure without real residues)
            instead of fractions pooled over all real residues of the batch.

    Returns:
        ``{"helix": ..., "strand": ..., "coil": ...}``; pooled fractions are floats (NaN when
        there is no real residue at all) and sum to 1.
    """
    if (
        not isinstance(codes, Tensor)
        or codes.dtype == torch.bool
        or torch.is_floating_point(codes)
        or codes.dim() not in (1, 2)
    ):
        raise ValueError(
            "codes must be an integer tensor (B, L) or (L,) of secondary-structure codes, got "
            f"{codes.dtype if isinstance(codes, Tensor) else type(codes).__name__}"
        )
    if bool(((codes < SS_PAD) | (codes > SS_STRAND)).any()):
        raise ValueError(
            f"codes must lie in {{-1, 0, 1, 2}} (padding, coil, helix, strand), got values in "
            f"[{int(codes.min())}, {int(codes.max())}]"
        )
    codes = codes.reshape(1, -1) if codes.dim() == 1 else codes
    real = (codes >= 0).sum(-1).double()
    counts = {name: (codes == k).sum(-1).double() for k, name in enumerate(SS_NAMES)}
    order = ("helix", "strand", "coil")
    if per_structure:
        return {name: counts[name] / real for name in order}
    total = float(real.sum())
    return {name: float(counts[name].sum()) / total if total > 0 else math.nan for name in order}
