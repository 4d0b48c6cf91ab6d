"""Evaluate sets of backbones against real structures: the benchmark's table, as library calls.

:func:`structure_statistics` summarises one set (geometry, secondary structure, compactness);
:func:`distribution_distances` compares a set with real structures (Ramachandran
Jensen-Shannon, Wasserstein of CA(i, i+k) distances); :func:`noise_floor` gives the same
distances between two disjoint halves of the real set, the value a perfect model would reach
with that many structures. Secondary structure comes from one tool (pydssp) for every set.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from proteins import metrics

__all__ = ["structure_statistics", "distribution_distances", "noise_floor", "SEPARATIONS"]

#: CA(i, i+k) separations compared by :func:`distribution_distances`
SEPARATIONS = (2, 3, 4, 5, 6)


def structure_statistics(atoms: Tensor, mask: Tensor | None = None) -> dict[str, float]:
    """Geometry and composition of a set of backbones ``(B, L, 4, 3)`` (Angstrom).

    Returns:
        ``ca_ca_within_0.1``: fraction of consecutive CA-CA distances within 3.80 +- 0.1 A;
        ``clash_rate``: fraction of CA pairs with ``|i - j| >= 2`` closer than 3.0 A;
        ``helix``, ``strand``, ``coil``: secondary-structure fractions (pydssp);
        ``radius_of_gyration``: mean CA radius of gyration (A) and
        ``rg_over_l_0.4``: mean of R_g / L^0.4 (compact globular chains: about 2.2-2.4 A);
        ``n``: structures.
    """
    codes = metrics.secondary_structure(atoms, mask)
    ss = metrics.ss_fractions(codes)
    rg = metrics.radius_of_gyration(atoms, mask)
    lengths = (mask.sum(-1) if mask is not None else torch.full((atoms.shape[0],), atoms.shape[1])).to(rg.dtype)
    return {
        "ca_ca_within_0.1": float(metrics.ca_bond_fraction(atoms, mask)),
        "clash_rate": float(metrics.clash_rate(atoms, mask)),
        "helix": float(ss["helix"]),
        "strand": float(ss["strand"]),
        "coil": float(ss["coil"]),
        "radius_of_gyration": float(rg.mean()),
        "rg_over_l_0.4": float((rg / lengths**0.4).mean()),
        "n": int(atoms.shape[0]),
    }


def distribution_distances(
    atoms: Tensor, mask: Tensor | None, real: Tensor, real_mask: Tensor | None, *, bins: int = 36
) -> dict[str, float]:
    """Distances of a set of backbones to real ones: ``ramachandran_js`` (Jensen-Shannon of
    the (phi, psi) histograms, ``bins`` x ``bins`` on the torus) and ``w_ca_k`` (Wasserstein-1 of
    CA(i, i+k) distances, A) for k in :data:`SEPARATIONS`."""
    out = {
        "ramachandran_js": metrics.ramachandran_js(
            metrics.phi_psi(atoms, mask), metrics.phi_psi(real, real_mask), bins=bins
        )
    }
    w = metrics.ca_distance_wasserstein(atoms, mask, real, real_mask, ks=SEPARATIONS)
    out.update({f"w_ca_{k}": float(w[k]) for k in SEPARATIONS})
    return out


def noise_floor(
    real: Tensor, real_mask: Tensor | None, *, generator: torch.Generator | None = None, bins: int = 36
) -> dict[str, float]:
    """:func:`distribution_distances` between two disjoint random halves of ``real``: what
    sampling noise alone gives with half as many structures (so a slightly pessimistic floor)."""
    n = real.shape[0]
    if n < 2:
        raise ValueError(f"real must hold at least 2 structures for a noise floor, got {n}")
    order = torch.randperm(n, generator=generator)
    a, b = order[: n // 2], order[n // 2 : 2 * (n // 2)]
    ma = None if real_mask is None else real_mask[a]
    mb = None if real_mask is None else real_mask[b]
    return distribution_distances(real[a], ma, real[b], mb, bins=bins)


def within_factor(value: float, floor: float, factor: float) -> bool:
    """``value <= factor * floor`` (False for NaN)."""
    return not math.isnan(value) and value <= factor * floor
