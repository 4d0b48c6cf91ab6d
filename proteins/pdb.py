"""Backbones to PDB files (gemmi), readable by PyMOL, ChimeraX and any PDB parser."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from gm.files import atomic_path

__all__ = ["write_pdb", "backbone_structure"]

_ATOMS = (("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"))


def _residue_names(residue_names: str | Sequence[str], length: int) -> list[str]:
    if isinstance(residue_names, str):
        return [residue_names] * length
    names = list(residue_names)
    if len(names) != length:
        raise ValueError(f"residue_names must be one name or one per real residue ({length}), got {len(names)}")
    return names


def backbone_structure(
    atoms: Tensor,
    mask: Tensor | None = None,
    *,
    residue_names: str | Sequence[str] = "GLY",
    chain_id: str = "A",
    title: str | None = None,
):
    """A ``gemmi.Structure`` of one backbone: atoms ``(L, A, 3)`` in Angstrom (N, CA, C[, O]),
    real residues only (``mask`` ``(L,)``), numbered from 1 on chain ``chain_id``."""
    import gemmi

    if not isinstance(atoms, Tensor) or atoms.dim() != 3 or atoms.shape[-1] != 3 or atoms.shape[-2] not in (3, 4):
        raise ValueError(
            f"atoms must have shape (L, 3 or 4, 3) (N, CA, C[, O] of one chain), got "
            f"{tuple(atoms.shape) if isinstance(atoms, Tensor) else type(atoms).__name__}"
        )
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != tuple(atoms.shape[:1]):
            raise ValueError(
                f"mask must be a bool tensor of shape ({atoms.shape[0]},), got "
                f"{(mask.dtype, tuple(mask.shape)) if isinstance(mask, Tensor) else type(mask).__name__}"
            )
        atoms = atoms[mask]
    coords = atoms.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(coords).all()):
        raise ValueError("atoms contain NaN or inf coordinates of real residues")
    if not (isinstance(chain_id, str) and len(chain_id) == 1):
        raise ValueError(f"chain_id must be one character (PDB format), got {chain_id!r}")
    names = _residue_names(residue_names, len(coords))
    st = gemmi.Structure()
    if title:
        st.info["_struct.title"] = title
    # "1": the model's name for gemmi 0.6 (a str), its number for 0.7 (whose stubs want an int)
    model = gemmi.Model(cast(Any, "1"))
    chain = gemmi.Chain(chain_id)
    values = coords.tolist()
    for i, (name, residue_atoms) in enumerate(zip(names, values)):
        res = gemmi.Residue()
        res.name = name
        res.seqid = gemmi.SeqId(i + 1, " ")
        res.entity_type = gemmi.EntityType.Polymer
        for (atom_name, element), xyz in zip(_ATOMS, residue_atoms):
            atom = gemmi.Atom()
            atom.name = atom_name
            atom.element = gemmi.Element(element)
            atom.pos = gemmi.Position(*xyz)
            atom.occ = 1.0
            atom.b_iso = 0.0
            res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    return st


def gemmi_write_options():
    """No CRYST1 record (a generated backbone has no unit cell; viewers would read gemmi's
    placeholder 1 A cell as crystal symmetry), TER and END records."""
    import gemmi

    options = gemmi.PdbWriteOptions()
    options.cryst1_record = False
    options.ter_records = True
    options.end_record = True
    return options


def write_pdb(
    path: str | os.PathLike,
    atoms: Tensor,
    mask: Tensor | None = None,
    *,
    residue_names: str | Sequence[str] = "GLY",
    chain_id: str = "A",
    title: str | None = None,
) -> Path:
    """Write one backbone as a PDB file (atomically: a temporary file, then a rename).

    Args:
        path: the file to write (``.pdb``).
        atoms: ``(L, 3 or 4, 3)`` N, CA, C[, O] in Angstrom, e.g. from
            :func:`proteins.frames.backbone_atoms`.
        mask: optional bool ``(L,)``: only real residues are written.
        residue_names: one three-letter name for all residues (GLY, or ALA for a CB-less
            polyalanine look) or one per real residue (sequence co-design).
        chain_id: the chain's one-character id.
        title: optional title record.
    """
    st = backbone_structure(atoms, mask, residue_names=residue_names, chain_id=chain_id, title=title)
    path = Path(path)
    options = gemmi_write_options()
    with atomic_path(path) as tmp:
        st.write_pdb(str(tmp), options)
    return path
