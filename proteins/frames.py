r"""Residue frames from backbone atoms and ideal backbone atoms back from frames.

Conventions (all coordinates in Angstrom here; the flow works in nanometres, see
:mod:`proteins.flow`):

- Backbone atoms are arrays ``(..., L, A, 3)`` with atoms in the order N, CA, C (``A = 3``) or
  N, CA, C, O (``A = 4``), residues along ``L``.
- A residue frame is a rigid motion ``T = [[R, t], [0, 1]]`` (``(..., L, 4, 4)``, the
  :class:`manifolds.SE3` point convention) mapping residue-local coordinates to global ones,
  ``x = R x_local + t``. It is built from N, CA, C by Gram--Schmidt with the origin at CA:
  :math:`e_1 = \widehat{C - CA}`, :math:`e_2 = \widehat{(N - CA) - ((N - CA)\cdot e_1) e_1}`,
  :math:`e_3 = e_1 \times e_2`, :math:`R = [e_1, e_2, e_3]`, :math:`t = CA`. In the local frame
  C lies on the x axis and N in the xy plane with positive y.
- Ideal geometry (Engh & Huber 1991): N-CA 1.458 A, CA-C 1.525 A, C-N 1.329 A, C=O 1.231 A,
  angles N-CA-C 111.2 deg, CA-C-N 116.2 deg, C-N-CA 121.7 deg, CA-C-O 120.5 deg. The ideal N,
  CA, C of a frame are exactly these, so frames -> atoms -> frames is the identity, and atoms ->
  frames -> atoms reproduces N, CA, C exactly for chains of ideal geometry.
- Dihedrals use the IUPAC sign and lie in (-pi, pi]: phi_i = (C_{i-1}, N_i, CA_i, C_i),
  psi_i = (N_i, CA_i, C_i, N_{i+1}), omega_i = (CA_i, C_i, N_{i+1}, CA_{i+1}).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gm.checks import Checks
from manifolds._math import point_tolerance
from manifolds.se3 import SE3
from proteins.inputs import check_atoms, check_mask

__all__ = [
    "IDEAL",
    "dihedral",
    "place_atom",
    "frames_from_backbone",
    "ideal_frame_atoms",
    "ideal_ncac",
    "backbone_atoms",
    "with_ideal_oxygens",
    "beta_carbons",
    "backbone_dihedrals",
    "ideal_chain",
]


class IDEAL:
    """Ideal backbone geometry (Engh & Huber 1991): bond lengths in Angstrom, angles in radians."""

    N_CA = 1.458
    CA_C = 1.525
    C_N = 1.329
    C_O = 1.231
    CA_CB = 1.530
    N_CA_C = math.radians(111.2)
    CA_C_N = math.radians(116.2)
    C_N_CA = math.radians(121.7)
    CA_C_O = math.radians(120.5)
    N_CA_CB = math.radians(110.5)
    #: improper dihedral (C, N, CA, CB) of an L-amino acid
    C_N_CA_CB = math.radians(-122.6)
    #: consecutive CA-CA distance with a trans peptide (omega = pi) and the bonds above
    CA_CA = 3.80


def dihedral(p0: Tensor, p1: Tensor, p2: Tensor, p3: Tensor) -> Tensor:
    """Signed dihedral angles (radians, (-pi, pi]) of point quadruples ``(..., 3)``, IUPAC sign:
    positive when, looking along p1 -> p2, the bond p1-p0 turns clockwise onto p2-p3."""
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / torch.linalg.vector_norm(b1, dim=-1, keepdim=True)
    v = b0 - (b0 * b1).sum(-1, keepdim=True) * b1  # components orthogonal to the axis
    w = b2 - (b2 * b1).sum(-1, keepdim=True) * b1
    return torch.atan2((torch.linalg.cross(b1, v) * w).sum(-1), (v * w).sum(-1))


def place_atom(
    a: Tensor, b: Tensor, c: Tensor, bond: float | Tensor, angle: float | Tensor, torsion: float | Tensor
) -> Tensor:
    """The point ``d`` with ``|d - c| = bond``, angle ``(b, c, d) = angle`` and dihedral
    ``(a, b, c, d) = torsion`` (natural extension reference frame, NeRF), batched over ``(..., 3)``."""
    like = c
    bond, angle, torsion = (torch.as_tensor(v, dtype=like.dtype, device=like.device) for v in (bond, angle, torsion))
    bc = c - b
    bc = bc / torch.linalg.vector_norm(bc, dim=-1, keepdim=True)
    n = torch.linalg.cross(b - a, bc)
    n = n / torch.linalg.vector_norm(n, dim=-1, keepdim=True)
    m = torch.linalg.cross(n, bc)
    along = (-bond * torch.cos(angle))[..., None]
    across = (bond * torch.sin(angle))[..., None]
    return c + along * bc + across * torch.cos(torsion)[..., None] * m + across * torch.sin(torsion)[..., None] * n


def frames_from_backbone(
    atoms: Tensor, mask: Tensor | None = None, *, validate: bool = True, checks: Checks | None = None
) -> Tensor:
    """Residue frames ``(..., L, 4, 4)`` from backbone atoms ``(..., L, A >= 3, 3)`` (N, CA, C first).

    Args:
        atoms: backbone coordinates (Angstrom, or any unit: the translation keeps it).
        mask: optional bool ``(..., L)``; residues where it is False (padding) get the identity
            rotation at the origin, whatever their coordinates.
        validate: raise if a real residue's N, CA, C are degenerate (coincident or collinear
            within 1e-3 of the bond lengths), which has no frame; costs one host read-back.
        checks: add that check to this :class:`gm.checks.Checks` (read back later with the
            caller's other checks) instead of reading it back here.

    Raises:
        ValueError: naming ``atoms`` or ``mask``, for wrong shapes or dtypes, non-finite N/CA/C of
            real residues, and degenerate residues (with the first one's index).
    """
    check_atoms(atoms)
    mask = None if mask is None else check_mask(mask, atoms.shape[:-2])
    n, ca, c = atoms[..., 0, :], atoms[..., 1, :], atoms[..., 2, :]
    u1, u2 = c - ca, n - ca
    len1 = torch.linalg.vector_norm(u1, dim=-1, keepdim=True)
    e1 = u1 / len1.clamp_min(1e-12)
    w = u2 - (u2 * e1).sum(-1, keepdim=True) * e1
    len2 = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
    e2 = w / len2.clamp_min(1e-12)
    e3 = torch.linalg.cross(e1, e2)
    rot = torch.stack([e1, e2, e3], dim=-1)
    if validate:
        bad = ~torch.isfinite(atoms[..., :3, :]).all(dim=(-2, -1)) | (len1[..., 0] < 1e-3) | (len2[..., 0] < 1e-3)
        if mask is not None:
            bad = bad & mask

        def explain() -> str:
            index = tuple(int(i) for i in torch.nonzero(bad)[0])
            return (
                f"atoms: residue at index {index} has non-finite, coincident or collinear N, CA, C "
                "(no frame); mask it out or fix the coordinates"
            )

        own = Checks() if checks is None else checks
        own.add(bad.any(), explain)
        if checks is None:
            own.run()
    if mask is not None:
        eye = torch.eye(3, dtype=atoms.dtype, device=atoms.device)
        rot = torch.where(mask[..., None, None], rot, eye)
        ca = torch.where(mask[..., None], ca, torch.zeros_like(ca))
    return SE3.from_rt(rot, ca)


def ideal_frame_atoms(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """Ideal N, CA, C in the residue frame, ``(3, 3)`` (rows), consistent with :class:`IDEAL`."""
    return torch.tensor(
        [
            [IDEAL.N_CA * math.cos(IDEAL.N_CA_C), IDEAL.N_CA * math.sin(IDEAL.N_CA_C), 0.0],
            [0.0, 0.0, 0.0],
            [IDEAL.CA_C, 0.0, 0.0],
        ],
        dtype=dtype,
        device=device,
    )


def ideal_ncac(frames: Tensor, *, length_scale: float = 1.0) -> Tensor:
    """Ideal N, CA, C ``(..., L, 3, 3)`` placed by residue frames ``(..., L, 4, 4)``.

    Args:
        frames: residue frames (not checked: callers check them once).
        length_scale: the frames' length unit per Angstrom (0.1 for translations in nanometres).
    """
    rot, trans = SE3.to_rt(frames)
    local = ideal_frame_atoms(frames.dtype, frames.device) * length_scale
    return torch.einsum("...ij,aj->...ai", rot, local) + trans[..., None, :]


def _check_rigid(frames: Tensor, mask: Tensor | None) -> None:
    """A ``ValueError`` naming ``frames`` unless every real residue's frame is a finite rigid
    transform (SE(3) within :func:`manifolds.base.point_tolerance`); one host read-back."""
    with torch.no_grad():
        error = SE3()._distance_from_manifold(frames.detach())  # (..., L): orthonormality, det R, bottom row
        error = torch.where(torch.isfinite(frames).all(-1).all(-1), error, torch.full_like(error, math.inf))
        if mask is not None:
            error = torch.where(mask, error, torch.zeros_like(error))
        tolerance = point_tolerance(frames.dtype)
        worst, count = torch.stack(
            [error.amax() if error.numel() else error.new_zeros(()), (error > tolerance).sum().to(error.dtype)]
        ).tolist()
    if worst > tolerance:
        what = "non-finite values" if math.isinf(worst) else f"a worst error of {worst:.3g} (tolerance {tolerance:.2g})"
        raise ValueError(
            f"frames: {int(count)} of {error.numel()} residue frames are not rigid transforms [[R, t], "
            f"[0, 0, 0, 1]] with R a rotation ({what}); build frames with frames_from_backbone or "
            "SE3.from_rt, project them with manifolds.SE3().projx, or pass validate=False"
        )


def backbone_atoms(
    frames: Tensor, mask: Tensor | None = None, *, terminal_psi: Tensor | float | None = None, validate: bool = True
) -> Tensor:
    r"""Ideal backbone atoms N, CA, C, O ``(..., L, 4, 3)`` from residue frames ``(..., L, 4, 4)``.

    N, CA, C are the ideal local positions mapped by each frame. Carbonyl O_i lies in the
    peptide plane: bond C=O, angle CA-C-O ideal, and dihedral (N_i, CA_i, C_i, O_i) =
    :math:`\psi_i + \pi`, where :math:`\psi_i` is measured to the next residue's N. For the last
    real residue of each chain (no next residue, or the next one masked out) ``terminal_psi``
    gives :math:`\psi` (radians, a float or a tensor of the batch shape ``(...,)``); ``None``
    copies the psi of the residue before it (a chain of one residue then uses pi).

    Args:
        frames: residue frames, translations in Angstrom.
        mask: optional bool ``(..., L)``; atoms of masked residues are zeros.
        terminal_psi: psi of chain-terminal residues, see above.
        validate: check that the frames of the real residues are finite rigid transforms
            ``[[R, t], [0, 1]]`` with ``R`` a rotation, within ~1000 ulps of the dtype (one host
            read-back); ``False`` in loops over frames that are rigid by construction.

    Raises:
        ValueError: naming the argument, for frames or a mask of the wrong type or shape, and
            (``validate``) frames that are not rigid transforms: a general 4x4 matrix would give
            atoms at distorted, meaningless positions without any error.
    """
    if (
        not isinstance(frames, Tensor)
        or not torch.is_floating_point(frames)
        or frames.dim() < 3
        or frames.shape[-2:] != (4, 4)
    ):
        raise ValueError(
            f"frames must be a floating-point tensor of shape (..., L, 4, 4), got "
            f"{tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__}"
        )
    mask = None if mask is None else check_mask(mask, frames.shape[:-2])
    if validate:
        _check_rigid(frames, mask)
    n, ca, c = ideal_ncac(frames).unbind(-2)
    length = frames.shape[-3]
    real = torch.ones(frames.shape[:-2], dtype=torch.bool, device=frames.device) if mask is None else mask
    has_next = torch.zeros_like(real)
    has_next[..., :-1] = real[..., :-1] & real[..., 1:]
    psi = torch.zeros(frames.shape[:-2], dtype=frames.dtype, device=frames.device)
    if length > 1:
        psi[..., :-1] = dihedral(n[..., :-1, :], ca[..., :-1, :], c[..., :-1, :], n[..., 1:, :])
    if terminal_psi is None:
        previous = torch.full_like(psi, math.pi)
        previous[..., 1:] = torch.where(has_next[..., :-1], psi[..., :-1], previous[..., 1:])
        fill = previous
    else:
        fill = torch.as_tensor(terminal_psi, dtype=frames.dtype, device=frames.device)
        if fill.dim() > 0:
            if tuple(fill.shape) != tuple(frames.shape[:-3]):
                raise ValueError(
                    f"terminal_psi must be a float or have the batch shape {tuple(frames.shape[:-3])}, "
                    f"got {tuple(fill.shape)}"
                )
            fill = fill[..., None]
        fill = fill.expand_as(psi)
    psi = torch.where(has_next, psi, fill)
    o = place_atom(n, ca, c, IDEAL.C_O, IDEAL.CA_C_O, psi + math.pi)
    atoms = torch.stack([n, ca, c, o], dim=-2)
    if mask is not None:
        atoms = atoms * mask[..., None, None]
    return atoms


def with_ideal_oxygens(atoms: Tensor, mask: Tensor | None = None) -> Tensor:
    """Backbone atoms ``(..., L, 4, 3)`` whose missing carbonyl O (NaN, as structure files without
    O atoms are read) is replaced by the ideal O of :func:`backbone_atoms` from the residue's
    frames; present atoms are kept as they are. Secondary-structure tools (DSSP) need every O.

    Args:
        atoms: N, CA, C, O in Angstrom; N, CA and C must be present for the residues of ``mask``.
        mask: bool ``(..., L)``, the real residues (default all).
    """
    check_atoms(atoms, min_atoms=4)
    mask = torch.ones(atoms.shape[:-2], dtype=torch.bool, device=atoms.device) if mask is None else mask
    missing = torch.isnan(atoms[..., 3, :]).any(-1) & mask
    ideal = backbone_atoms(frames_from_backbone(atoms, mask), mask)
    oxygen = torch.where(missing[..., None], ideal[..., 3, :], atoms[..., 3, :])
    return torch.cat([atoms[..., :3, :], oxygen[..., None, :]], dim=-2)


def beta_carbons(atoms: Tensor) -> Tensor:
    """Ideal CB ``(..., L, 3)`` of L-amino acids from N, CA, C (``(..., L, A >= 3, 3)``), e.g. for
    glycine-free visualisation or CB-distance features."""
    check_atoms(atoms)
    n, ca, c = atoms[..., 0, :], atoms[..., 1, :], atoms[..., 2, :]
    return place_atom(c, n, ca, IDEAL.CA_CB, IDEAL.N_CA_CB, IDEAL.C_N_CA_CB)


def backbone_dihedrals(atoms: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """phi, psi, omega ``(..., L)`` in (-pi, pi] from backbone atoms ``(..., L, A >= 3, 3)``.

    phi is NaN at the first residue (and wherever the previous residue is masked out); psi and
    omega are NaN at the last residue (and wherever the next one is masked out).
    """
    check_atoms(atoms)
    mask = None if mask is None else check_mask(mask, atoms.shape[:-2])
    n, ca, c = atoms[..., 0, :], atoms[..., 1, :], atoms[..., 2, :]
    nan = torch.full(atoms.shape[:-3] + (1,), math.nan, dtype=atoms.dtype, device=atoms.device)
    phi = torch.cat([nan, dihedral(c[..., :-1, :], n[..., 1:, :], ca[..., 1:, :], c[..., 1:, :])], dim=-1)
    psi = torch.cat([dihedral(n[..., :-1, :], ca[..., :-1, :], c[..., :-1, :], n[..., 1:, :]), nan], dim=-1)
    omega = torch.cat([dihedral(ca[..., :-1, :], c[..., :-1, :], n[..., 1:, :], ca[..., 1:, :]), nan], dim=-1)
    if mask is not None:
        pair = mask[..., :-1] & mask[..., 1:]
        no_prev = torch.cat([torch.ones_like(mask[..., :1]), ~pair], dim=-1)
        no_next = torch.cat([~pair, torch.ones_like(mask[..., :1])], dim=-1)
        phi = phi.masked_fill(no_prev, math.nan)
        psi = psi.masked_fill(no_next, math.nan)
        omega = omega.masked_fill(no_next, math.nan)
    return phi, psi, omega


def ideal_chain(phi: Tensor, psi: Tensor, omega: Tensor | float = math.pi) -> Tensor:
    """Backbone atoms N, CA, C, O ``(..., L, 4, 3)`` of ideal geometry with the given dihedrals.

    Args:
        phi, psi: ``(..., L)`` radians; ``phi[..., 0]`` and ``psi[..., -1]`` are unused except
            that ``psi[..., -1]`` places the last O.
        omega: ``(..., L)`` or a float (trans peptides: pi); ``omega[..., -1]`` is unused.

    The chain starts from a fixed first residue and is built residue by residue (NeRF), a loop
    over L that is vectorised over the batch; used for test oracles and random-coil baselines.
    """
    if not isinstance(phi, Tensor) or not isinstance(psi, Tensor) or phi.shape != psi.shape or phi.dim() < 1:
        raise ValueError("phi and psi must be tensors of the same shape (..., L)")
    omega = torch.as_tensor(omega, dtype=phi.dtype, device=phi.device).expand_as(phi)
    local = ideal_frame_atoms(phi.dtype, phi.device)
    n, ca, c = (p.expand(*phi.shape[:-1], 3) for p in local)
    ns, cas, cs = [n], [ca], [c]
    for i in range(1, phi.shape[-1]):
        n = place_atom(ns[-1], cas[-1], cs[-1], IDEAL.C_N, IDEAL.CA_C_N, psi[..., i - 1])
        ca = place_atom(cas[-1], cs[-1], n, IDEAL.N_CA, IDEAL.C_N_CA, omega[..., i - 1])
        c = place_atom(cs[-1], n, ca, IDEAL.CA_C, IDEAL.N_CA_C, phi[..., i])
        ns.append(n)
        cas.append(ca)
        cs.append(c)
    n, ca, c = torch.stack(ns, -2), torch.stack(cas, -2), torch.stack(cs, -2)
    o = place_atom(n, ca, c, IDEAL.C_O, IDEAL.CA_C_O, psi + math.pi)
    return torch.stack([n, ca, c, o], dim=-2)
