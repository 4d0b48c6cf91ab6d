"""The input checks of the structure code, one of each: backbone atoms and residue masks.

Every public function of :mod:`proteins` that takes atoms ``(..., L, A, 3)`` (N, CA, C[, O] in
Angstrom) or a residue mask ``(..., L)`` (True: a real residue, False: padding) checks them here,
so a wrong input gets the same ValueError, naming the argument and the problem, everywhere.
Type and shape checks read nothing from the device; value checks (a protein without a real
residue, non-finite coordinates) read back once, or go into a :class:`gm.checks.Checks` to be
read together with the others, and are skipped where :func:`gm.checks.value_checks_on` says so
(inside the library's loops, under ``torch.compile``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gm.checks import Checks, value_checks_on

__all__ = ["check_atoms", "check_mask", "default_mask", "check_finite_atoms", "structure_batch", "ca_coordinates"]


def check_atoms(atoms: object, name: str = "atoms", *, min_atoms: int = 3, batch_dims: int | None = None) -> Tensor:
    """``atoms`` as given, checked to be a floating-point tensor ``(..., L, A, 3)`` with
    ``A >= min_atoms`` atoms per residue (``batch_dims``: exactly that many leading dimensions
    before ``L``; None: any number)."""
    if not isinstance(atoms, Tensor) or not torch.is_floating_point(atoms):
        got = atoms.dtype if isinstance(atoms, Tensor) else type(atoms).__name__
        raise ValueError(f"{name} must be a floating-point tensor of shape (..., L, A, 3), got {got}")
    dims_ok = atoms.dim() >= 3 if batch_dims is None else atoms.dim() == batch_dims + 3
    if not dims_ok or atoms.shape[-1] != 3 or atoms.shape[-2] < min_atoms:
        leading = "..., " if batch_dims is None else "".join(f"B{i}, " for i in range(batch_dims)).replace("B0", "B")
        raise ValueError(
            f"{name} must have shape ({leading}L, A, 3) with A >= {min_atoms} atoms per residue "
            f"(N, CA, C[, O] order), got {tuple(atoms.shape)}"
        )
    return atoms


def check_mask(
    mask: object,
    shape: Sequence[int],
    name: str = "mask",
    *,
    nonempty: bool = False,
    validate: bool = True,
    checks: Checks | None = None,
) -> Tensor:
    """``mask`` as given, checked to be a bool tensor of ``shape`` (one entry per residue).

    With ``nonempty`` every protein (row) must have a real residue: a value check, read back
    once, or added to ``checks`` when given, and skipped with ``validate=False``."""
    shape = tuple(shape)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(
            f"{name} must be a bool tensor of shape {shape} (True: real residue, False: padding), got {got}"
        )
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} (one entry per residue), got {tuple(mask.shape)}")
    if nonempty and mask.numel() and value_checks_on(validate):
        own = Checks() if checks is None else checks
        own.add((~mask.any(-1)).any(), lambda: f"{name} has a protein with no real residue (a row of all False)")
        if checks is None:
            own.run()
    return mask


def default_mask(mask: object, atoms: Tensor, name: str = "mask") -> Tensor:
    """The checked mask of ``atoms`` ``(..., L, A, 3)`` on their device, all True for None."""
    shape = tuple(atoms.shape[:-2])
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=atoms.device)
    return check_mask(mask, shape, name).to(atoms.device)


def check_finite_atoms(atoms: Tensor, mask: Tensor, name: str = "atoms") -> None:
    """Raise if a real residue of ``mask`` has a non-finite coordinate among ``atoms`` (one read
    back; the first bad residue is named)."""
    bad = ~torch.isfinite(atoms).all(dim=(-2, -1)) & mask
    if bool(bad.any()):
        where = [int(v) for v in torch.nonzero(bad)[0]]
        residue, structure = where[-1], where[:-1]
        of = f" of structure {structure[0] if len(structure) == 1 else tuple(structure)}" if structure else ""
        raise ValueError(
            f"{name}: real residue {residue}{of} has non-finite coordinates; fix them or mask the residue out"
        )


def structure_batch(
    atoms: object,
    mask: object,
    name: str = "atoms",
    mask_name: str = "mask",
    *,
    min_atoms: int = 3,
    finite_atoms: slice = slice(None),
) -> tuple[Tensor, Tensor]:
    """A batch of structures for the metrics: atoms ``(B, L, A, 3)`` checked, their mask (all True
    for None), and the atoms ``finite_atoms`` of every real residue checked finite."""
    checked = check_atoms(atoms, name, min_atoms=min_atoms, batch_dims=1)
    residues = default_mask(mask, checked, mask_name)
    check_finite_atoms(checked[:, :, finite_atoms], residues, name)
    return checked, residues


def ca_coordinates(atoms: object, mask: object, name: str = "atoms", mask_name: str = "mask") -> tuple[Tensor, Tensor]:
    """CA coordinates ``(B, L, 3)`` with padding zeroed (so NaN padding cannot leak) and the mask."""
    checked, residues = structure_batch(atoms, mask, name, mask_name, min_atoms=2, finite_atoms=slice(1, 2))
    ca = checked[:, :, 1, :]
    return torch.where(residues[..., None], ca, torch.zeros_like(ca)), residues
