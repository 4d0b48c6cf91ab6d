"""Local geometry, clashes and compactness of backbones, and the Ramachandran and CA-distance
distributions compared between sets (Jensen-Shannon, Wasserstein); conventions in
:mod:`proteins.metrics`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from proteins.inputs import ca_coordinates, structure_batch

__all__ = [
    "ca_bond_lengths",
    "ca_bond_fraction",
    "clash_counts",
    "clash_rate",
    "radius_of_gyration",
    "phi_psi",
    "ramachandran_histogram",
    "js_divergence",
    "ramachandran_js",
    "ca_distances_at_separation",
    "ca_distance_wasserstein",
]

# ----------------------------------------------------------------------------------------------
# local geometry, clashes, compactness


def ca_bond_lengths(atoms: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Consecutive CA-CA distances.

    Args:
        atoms: ``(B, L, A >= 2, 3)`` (CA is atom 1).
        mask: optional bool ``(B, L)``.

    Returns:
        ``(distances, valid)``: ``(B, L - 1)`` distances |CA_{i+1} - CA_i| (Angstrom) and the
        bool mask of pairs whose residues are both real. ``distances[valid]`` flattens them.
    """
    ca, mask = ca_coordinates(atoms, mask)
    dist = torch.linalg.vector_norm(ca[:, 1:] - ca[:, :-1], dim=-1)
    return dist, mask[:, 1:] & mask[:, :-1]


def ca_bond_fraction(
    atoms: Tensor, mask: Tensor | None = None, target: float = 3.80, tol: float = 0.1, per_structure: bool = False
) -> float | Tensor:
    """Fraction of consecutive real CA-CA distances with ``|d - target| <= tol``.

    3.80 A is the CA-CA distance of a trans peptide (cis peptides give about 2.9 A, chain
    breaks more). Only pairs ``(i, i + 1)`` whose residues are both real count.

    Args:
        atoms: ``(B, L, A >= 2, 3)``.
        mask: optional bool ``(B, L)``.
        target: ideal distance (Angstrom).
        tol: half-width of the accepted window (Angstrom), ``>= 0``.
        per_structure: return ``(B,)`` (NaN for structures with no pair) instead of the pooled
            fraction.

    Returns:
        The pooled fraction (float, NaN without any pair) or a ``(B,)`` float64 tensor.
    """
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    dist, valid = ca_bond_lengths(atoms, mask)
    ok = ((dist - target).abs() <= tol) & valid
    if per_structure:
        return ok.sum(-1).double() / valid.sum(-1).double()
    n = int(valid.sum())
    return int(ok.sum()) / n if n else math.nan


def clash_counts(
    atoms: Tensor, mask: Tensor | None = None, threshold: float = 3.0, min_separation: int = 2
) -> tuple[Tensor, Tensor]:
    """Numbers of clashing and of eligible CA pairs per structure.

    A pair ``i < j`` is eligible when both residues are real and ``j - i >= min_separation``
    (default 2: every pair except bonded neighbours, whose CA-CA distance is 3.8 A by
    construction); it clashes when its CA-CA distance is ``< threshold``. In real proteins
    non-bonded CA atoms are essentially never closer than 3.0 A (except across the rare cis
    peptide, which is bonded), so clashes flag physically impossible backbones.

    Returns:
        ``(clashes, pairs)``: two ``(B,)`` int64 tensors.
    """
    if not isinstance(min_separation, int) or min_separation < 1:
        raise ValueError(f"min_separation must be an int >= 1, got {min_separation!r}")
    ca, mask = ca_coordinates(atoms, mask)
    length = ca.shape[1]
    index = torch.arange(length, device=ca.device)
    eligible = (index[None, :] - index[:, None]) >= min_separation  # upper triangle, i < j
    eligible = eligible[None] & mask[:, :, None] & mask[:, None, :]
    dist = torch.cdist(ca, ca)
    clashes = (dist < threshold) & eligible
    return clashes.sum((-2, -1)), eligible.sum((-2, -1))


def clash_rate(
    atoms: Tensor,
    mask: Tensor | None = None,
    threshold: float = 3.0,
    min_separation: int = 2,
    per_structure: bool = False,
) -> float | Tensor:
    """Fraction of non-adjacent real CA pairs (``|i - j| >= min_separation``) closer than
    ``threshold`` Angstrom; see :func:`clash_counts` for the definitions.

    Returns:
        The pooled fraction over all eligible pairs of the batch (float, NaN without any) or,
        with ``per_structure``, a ``(B,)`` float64 tensor.
    """
    clashes, pairs = clash_counts(atoms, mask, threshold, min_separation)
    if per_structure:
        return clashes.double() / pairs.double()
    n = int(pairs.sum())
    return int(clashes.sum()) / n if n else math.nan


def radius_of_gyration(atoms: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Radius of gyration of the real CA atoms, equal weights:
    :math:`R_g = \sqrt{\tfrac{1}{n}\sum_i |x_i - \bar{x}|^2}`.

    Args:
        atoms: ``(B, L, A >= 2, 3)``.
        mask: optional bool ``(B, L)``.

    Returns:
        ``(B,)`` tensor (Angstrom) in atoms' dtype; NaN for a structure without real residues.
    """
    ca, mask = ca_coordinates(atoms, mask)
    weight = mask.to(ca.dtype)[..., None]
    n = weight.sum(1)
    centre = (ca * weight).sum(1) / n
    sq = ((ca - centre[:, None]) ** 2 * weight).sum((1, 2)) / n[:, 0]
    return sq.sqrt()


# ----------------------------------------------------------------------------------------------
# Ramachandran and CA-distance distributions


def phi_psi(atoms: Tensor, mask: Tensor | None = None) -> Tensor:
    """(phi, psi) pairs of every residue where both are defined, pooled over the batch.

    phi needs the previous residue and psi the next one (both real), so chain termini and
    residues next to padding are left out.

    Args:
        atoms: ``(B, L, A >= 3, 3)`` backbone atoms N, CA, C, ...
        mask: optional bool ``(B, L)``.

    Returns:
        ``(n, 2)`` tensor of radians in (-pi, pi], atoms' dtype, on atoms' device.
    """
    from proteins.frames import backbone_dihedrals

    atoms, mask = structure_batch(atoms, mask, min_atoms=3, finite_atoms=slice(0, 3))
    clean = torch.where(mask[..., None, None], atoms[:, :, :3], torch.zeros_like(atoms[:, :, :3]))
    phi, psi, _ = backbone_dihedrals(clean, mask)
    keep = torch.isfinite(phi) & torch.isfinite(psi)
    return torch.stack([phi[keep], psi[keep]], dim=-1)


def _angles(x: Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2) of (phi, psi) angles in radians, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite angles; drop undefined ones (phi_psi does)")
    return x


def ramachandran_histogram(angles: Tensor | np.ndarray, bins: int = 36) -> np.ndarray:
    """Normalised 2-D histogram of (phi, psi) on the torus.

    Angles are wrapped to [-pi, pi) before binning, so the ``bins x bins`` cells of width
    ``2 pi / bins`` tile the torus exactly once (psi = pi and psi = -pi share a cell).

    Args:
        angles: ``(n, 2)`` radians, finite.
        bins: cells per angle.

    Returns:
        ``(bins, bins)`` float64 probabilities (rows phi, columns psi) summing to 1; all zeros
        for an empty input.
    """
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    x = _angles(angles, "angles")
    wrapped = np.mod(x + math.pi, 2 * math.pi)  # in [0, 2 pi)
    cell = np.minimum((wrapped / (2 * math.pi) * bins).astype(np.int64), bins - 1)  # rounding at 2 pi
    hist = np.bincount(cell[:, 0] * bins + cell[:, 1], minlength=bins * bins).reshape(bins, bins).astype(np.float64)
    total = hist.sum()
    return hist / total if total > 0 else hist


def js_divergence(p: np.ndarray | Tensor, q: np.ndarray | Tensor) -> float:
    r"""Jensen--Shannon divergence of two discrete distributions, in nats:
    :math:`\tfrac12 \mathrm{KL}(P \| M) + \tfrac12 \mathrm{KL}(Q \| M)`, :math:`M = (P + Q)/2`,
    in :math:`[0, \ln 2]` (scipy's ``jensenshannon`` is its square root). ``p`` and ``q`` are
    non-negative weights of the same shape (any number of dims), each normalised here.

    Raises:
        ValueError: for different shapes, negative or non-finite weights, or an all-zero input.
    """
    a = np.asarray(p.detach().cpu() if isinstance(p, Tensor) else p, dtype=np.float64)
    b = np.asarray(q.detach().cpu() if isinstance(q, Tensor) else q, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"p and q must have the same shape, got {a.shape} and {b.shape}")
    for name, r in (("p", a), ("q", b)):
        if not np.isfinite(r).all() or (r < 0).any() or r.sum() <= 0:
            raise ValueError(f"{name} must be finite non-negative weights with a positive sum")
    a, b = a / a.sum(), b / b.sum()
    m = 0.5 * (a + b)

    def kl_to_m(r: np.ndarray) -> float:
        nz = r > 0  # 0 log 0 = 0; m > 0 wherever r > 0
        return float(np.sum(r[nz] * np.log(r[nz] / m[nz])))

    return max(0.5 * kl_to_m(a) + 0.5 * kl_to_m(b), 0.0)


def ramachandran_js(phi_psi_a: Tensor | np.ndarray, phi_psi_b: Tensor | np.ndarray, bins: int = 36) -> float:
    r"""Jensen--Shannon divergence between the (phi, psi) histograms of two sets, in nats.

    With :math:`P, Q` the normalised histograms of :func:`ramachandran_histogram` and
    :math:`M = (P + Q) / 2`,
    :math:`\mathrm{JS}(P, Q) = \tfrac12 \mathrm{KL}(P \| M) + \tfrac12 \mathrm{KL}(Q \| M)` with the
    natural logarithm, so it lies in :math:`[0, \ln 2]`: 0 for identical histograms, ln 2 for
    disjoint supports. (scipy's ``jensenshannon`` returns the square root of this.) The value
    depends on the binning and is biased upwards for small samples: compare models with the
    same ``bins`` and similar numbers of angles (a real-vs-real split gives the noise floor).

    Args:
        phi_psi_a, phi_psi_b: ``(n, 2)`` radians, e.g. from :func:`phi_psi`; both non-empty.
        bins: cells per angle (36 = 10 degree cells).
    """
    p = ramachandran_histogram(phi_psi_a, bins)
    q = ramachandran_histogram(phi_psi_b, bins)
    if p.sum() == 0 or q.sum() == 0:
        raise ValueError("phi_psi_a and phi_psi_b must each contain at least one (phi, psi) pair")
    return js_divergence(p, q)


def _separation_distances(atoms: Tensor, mask: Tensor | None, k: int, name: str, mask_name: str) -> Tensor:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    ca, mask = ca_coordinates(atoms, mask, name, mask_name)
    if k >= ca.shape[1]:
        return ca.new_zeros(0)
    dist = torch.linalg.vector_norm(ca[:, k:] - ca[:, :-k], dim=-1)
    return dist[mask[:, k:] & mask[:, :-k]]


def ca_distances_at_separation(atoms: Tensor, mask: Tensor | None = None, k: int = 2) -> Tensor:
    """All distances |CA_{i+k} - CA_i| with residues i and i + k real, pooled over the batch.

    Args:
        atoms: ``(B, L, A >= 2, 3)``.
        mask: optional bool ``(B, L)``.
        k: sequence separation, ``>= 1``.

    Returns:
        1-D tensor (Angstrom) on atoms' device.
    """
    return _separation_distances(atoms, mask, k, "atoms", "mask")


def ca_distance_wasserstein(
    atoms_a: Tensor, mask_a: Tensor | None, atoms_b: Tensor, mask_b: Tensor | None, ks: Sequence[int] = (2, 3, 4, 5, 6)
) -> dict[int, float]:
    """1-Wasserstein distance (Angstrom) between the CA(i)-CA(i+k) distance distributions of
    two sets, for each sequence separation ``k`` (``scipy.stats.wasserstein_distance`` of the
    empirical distributions, i.e. the area between their CDFs).

    k = 2 probes the CA-CA-CA angle, k = 3, 4 helical versus extended local structure
    (about 5.0 / 6.2 A in an alpha helix, about 10 / 13 A in a strand).

    Args:
        atoms_a, atoms_b: ``(B, L, A >= 2, 3)`` (the two sets may differ in B and L).
        mask_a, mask_b: optional bool masks ``(B, L)`` of each.
        ks: separations.

    Returns:
        ``{k: W1}``; NaN for a k at which either set has no pair.
    """
    from scipy.stats import wasserstein_distance

    out = {}
    for k in ks:
        a = _separation_distances(atoms_a, mask_a, k, "atoms_a", "mask_a").detach().cpu().double().numpy()
        b = _separation_distances(atoms_b, mask_b, k, "atoms_b", "mask_b").detach().cpu().double().numpy()
        out[int(k)] = float(wasserstein_distance(a, b)) if len(a) and len(b) else math.nan
    return out
