"""Input checks shared by the structure metrics (see :mod:`proteins.metrics` for the conventions)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = []

# ----------------------------------------------------------------------------------------------
# input checks


def _check_atoms(atoms: Tensor, name: str, min_atoms: int) -> None:
    if not isinstance(atoms, Tensor) or not torch.is_floating_point(atoms):
        got = atoms.dtype if isinstance(atoms, Tensor) else type(atoms).__name__
        raise ValueError(f"{name} must be a floating-point tensor of shape (B, L, A, 3), got {got}")
    if atoms.dim() != 4 or atoms.shape[-1] != 3 or atoms.shape[-2] < min_atoms:
        raise ValueError(
            f"{name} must have shape (B, L, A, 3) with A >= {min_atoms} atoms per residue "
            f"(N, CA, C, O order), got {tuple(atoms.shape)}"
        )


def _check_mask(mask: Tensor | None, atoms: Tensor, name: str) -> Tensor:
    """The mask as a bool tensor on atoms' device (all True for None)."""
    shape = tuple(atoms.shape[:2])
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=atoms.device)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a bool tensor of shape {shape} (False = padding), got {got}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} (one entry per residue), got {tuple(mask.shape)}")
    return mask.to(atoms.device)


def _check_finite(atoms: Tensor, mask: Tensor, name: str) -> None:
    """Raise if a real residue has a non-finite coordinate among the atoms given."""
    bad = ~torch.isfinite(atoms).all(dim=(-2, -1)) & mask
    if bool(bad.any()):
        b, i = (int(v) for v in torch.nonzero(bad)[0])
        raise ValueError(
            f"{name}: real residue {i} of structure {b} has non-finite coordinates; fix them or mask the residue out"
        )


def _prepare(
    atoms: Tensor, mask: Tensor | None, name: str, mask_name: str, min_atoms: int, atom_slice: slice = slice(None)
) -> tuple[Tensor, Tensor]:
    _check_atoms(atoms, name, min_atoms)
    mask = _check_mask(mask, atoms, mask_name)
    _check_finite(atoms[:, :, atom_slice], mask, name)
    return atoms, mask


def _ca(atoms: Tensor, mask: Tensor | None, name: str = "atoms", mask_name: str = "mask") -> tuple[Tensor, Tensor]:
    """CA coordinates ``(B, L, 3)`` with padding zeroed (so NaN padding cannot leak) and the mask."""
    atoms, mask = _prepare(atoms, mask, name, mask_name, 2, slice(1, 2))
    ca = atoms[:, :, 1, :]
    return torch.where(mask[..., None], ca, torch.zeros_like(ca)), mask
