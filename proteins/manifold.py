r"""The state space of one backbone as one manifold: N residue frames with centred translations.

The backbone flow's state is N frames in SE(3) whose CA centroid is zero. For likelihoods the
state must be ONE point (a network couples all residues, so the divergence is the trace of
the Jacobian over all of them), not N independent SE(3) samples:

.. math::
    \mathcal M_N = SO(3)^N \times \{x \in \mathbb R^{N \times 3} : \textstyle\sum_i x_i = 0\},
    \qquad \dim \mathcal M_N = 3N + 3(N - 1) = 6N - 3,

with the product metric of :class:`manifolds.SE3` summed over residues. Its base distribution
is the backbone flow's: Haar rotations times a standard Gaussian on the centred subspace,
translation std ``translation_std`` (the projection of an isotropic Gaussian onto the subspace).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from manifolds._math import safe_sqrt
from manifolds.base import RiemannianManifold
from manifolds.se3 import SE3
from manifolds.so3 import SO3, hat

__all__ = ["CentredFrames"]


def _centre(trans: Tensor) -> Tensor:
    return trans - trans.mean(-2, keepdim=True)


class CentredFrames(RiemannianManifold):
    """``n_residues`` SE(3) frames with zero mean translation, as one point ``(..., N, 4, 4)``.

    Conventions: points and tangent vectors as :class:`manifolds.SE3`'s, stacked over residues
    on dim -3 (tangent translations sum to zero too); metric: the sum over residues of SE(3)'s;
    geodesics move each residue's rotation and translation independently (centring is kept
    because a mean-zero velocity keeps the centroid); base: Haar rotations times
    ``translation_std`` times a standard Gaussian on the centred subspace.

    Args:
        n_residues: N >= 1.
        translation_std: std of the base translations per coordinate before centring (> 0).
    """

    def __init__(self, n_residues: int, translation_std: float = 1.0) -> None:
        if not isinstance(n_residues, int) or isinstance(n_residues, bool) or n_residues < 1:
            raise ValueError(f"n_residues must be a positive integer, got {n_residues!r}")
        if not (isinstance(translation_std, (int, float)) and math.isfinite(translation_std) and translation_std > 0):
            raise ValueError(f"translation_std must be a positive number, got {translation_std!r}")
        self.point_shape = (n_residues, 4, 4)
        self.dim = 6 * n_residues - 3
        super().__init__()
        self.n_residues, self.translation_std = n_residues, float(translation_std)
        self.se3, self.so3 = SE3(), SO3()

    def extra_repr(self) -> str:
        return f"n_residues={self.n_residues}, translation_std={self.translation_std:g}"

    def _centred(self, x: Tensor) -> Tensor:
        rot, trans = SE3.to_rt(x)
        out = torch.cat([x[..., :3, :3], _centre(trans)[..., None]], dim=-1)
        return torch.cat([out, x[..., 3:, :]], dim=-2)

    def inner(self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False) -> Tensor:
        out = self.se3.inner(x, u, v).sum(-1)
        return out[..., None, None, None] if keepdim else out

    def projx(self, x: Tensor) -> Tensor:
        return self._centred(self.se3.projx(x))

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return self._centred(self.se3.proju(x, u))

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        return self._centred(self.se3.egrad2rgrad(x, u))

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return self.se3.transp(x, y, v)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        self._check_args(x=x, u=u)
        return self.se3.expmap(x, u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        self._check_args(x=x, y=y)
        return self.se3.logmap(x, y)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        self._check_args(x=x, y=y)
        d = safe_sqrt((self.se3.dist(x, y) ** 2).sum(-1))
        return d[..., None, None, None] if keepdim else d

    def geodesic(self, x: Tensor, u: Tensor, s) -> tuple[Tensor, Tensor]:
        # per-sample times (a prefix of the batch shape) are a prefix of SE(3)'s (..., N) too
        return self.se3.geodesic(x, u, s)

    def translation_basis(self, dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
        """An orthonormal basis ``(N - 1, N)`` of the mean-zero vectors of R^N (Helmert's)."""
        n = self.n_residues
        basis = torch.zeros(n - 1, n, dtype=dtype, device=device)
        for k in range(1, n):  # row k-1: (1, ..., 1, -k, 0, ...) / sqrt(k (k + 1)), k ones
            basis[k - 1, :k] = 1.0
            basis[k - 1, k] = -float(k)
            basis[k - 1] /= math.sqrt(k * (k + 1))
        return basis

    def tangent_basis(self, x: Tensor) -> Tensor:
        """Orthonormal basis ``(..., 6N - 3, N, 4, 4)``: per residue ``R_i hat(e_k)`` (3N), then the
        Helmert basis of centred translations times each axis (3(N - 1))."""
        self._check_args(x=x)
        n = self.n_residues
        batch = x.shape[:-3]
        rot = x[..., :3, :3]
        generators = hat(torch.eye(3, dtype=x.dtype, device=x.device))  # (3, 3, 3)
        rot_dirs = rot[..., None, :, :] @ generators  # (..., N, 3, 3, 3): residue, axis
        eye_n = torch.eye(n, dtype=x.dtype, device=x.device)
        # direction (i, k): R_i hat(e_k) at residue i, zero elsewhere -> (..., N, 3, N, 3, 3)
        rot_block = torch.einsum("ij,...ikab->...ikjab", eye_n, rot_dirs).reshape(*batch, 3 * n, n, 3, 3)
        helmert = self.translation_basis(x.dtype, x.device)  # (N - 1, N)
        eye3 = torch.eye(3, dtype=x.dtype, device=x.device)
        trans_block = torch.einsum("mj,kc->mkjc", helmert, eye3).reshape(3 * (n - 1), n, 3)
        rotations = SE3._tangent(rot_block, torch.zeros(*batch, 3 * n, n, 3, dtype=x.dtype, device=x.device))
        translations = SE3._tangent(torch.zeros(3 * (n - 1), n, 3, 3, dtype=x.dtype, device=x.device), trans_block)
        return torch.cat([rotations, translations.expand(*batch, *translations.shape)], dim=-4)

    def random_base(self, *batch_shape, dtype=None, device=None, generator=None) -> Tensor:
        batch_shape, dtype = self._base_args(batch_shape, dtype, generator)
        rot = self.so3.random_base(*batch_shape, self.n_residues, dtype=dtype, device=device, generator=generator)
        trans = self.translation_std * torch.randn(
            *batch_shape, self.n_residues, 3, dtype=dtype, device=device, generator=generator
        )
        return SE3.from_rt(rot, _centre(trans))

    def base_logprob(self, x: Tensor) -> Tensor:
        r""":math:`-N \log(8\pi^2) - \tfrac{3(N-1)}{2}\log(2\pi\sigma^2) - \|x\|^2 / (2\sigma^2)`
        (Haar on each SO(3) of volume :math:`8\pi^2`; Lebesgue measure of the centred subspace)."""
        self._check_args(x=x)
        n, var = self.n_residues, self.translation_std**2
        sq = (x[..., :3, 3] ** 2).sum((-2, -1))
        return -n * math.log(8 * math.pi**2) - 1.5 * (n - 1) * math.log(2 * math.pi * var) - 0.5 * sq / var

    def _distance_from_manifold(self, x: Tensor) -> Tensor:
        per_residue = self.se3._distance_from_manifold(x).amax(-1)
        centroid = x[..., :3, 3].mean(-2).abs().amax(-1)
        return torch.maximum(per_residue, centroid)

    def _distance_from_tangent(self, x: Tensor, u: Tensor) -> Tensor:
        per_residue = self.se3._distance_from_tangent(x, u).amax(-1)
        return torch.maximum(per_residue, u[..., :3, 3].mean(-2).abs().amax(-1))
