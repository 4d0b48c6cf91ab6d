"""Euclidean space R^dim."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from manifolds._math import safe_norm
from manifolds.base import RiemannianManifold

__all__ = ["Euclidean"]


class Euclidean(RiemannianManifold):
    r"""Euclidean space :math:`\mathbb{R}^d` with the standard metric.

    Conventions:
        points and tangent vectors: ``(..., dim)``;
        metric: :math:`\langle u, v\rangle = \sum_i u_i v_i`;
        base distribution: standard normal :math:`\mathcal{N}(0, I_d)`.
    """

    def __init__(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.point_shape = (dim,)
        self.dim = dim
        super().__init__()

    def extra_repr(self) -> str:
        return str(self.dim)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        self._check_args(x=x, u=u)
        return x + u

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        self._check_args(x=x, y=y)
        return y - x

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        self._check_args(x=x, y=y)
        return safe_norm(y - x, keepdim=keepdim)

    def inner(self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False) -> Tensor:
        v = u if v is None else v
        out = (u * v).sum(-1, keepdim=keepdim)
        return out.expand(torch.broadcast_shapes(out.shape, x.shape[:-1] + ((1,) if keepdim else ())))

    def projx(self, x: Tensor) -> Tensor:
        return x

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return u

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return v

    def geodesic(self, x: Tensor, u: Tensor, s) -> tuple[Tensor, Tensor]:
        s = self._expand_time(s, x)
        return x + s * u, u.expand_as(x + s * u)

    def tangent_basis(self, x: Tensor) -> Tensor:
        self._check_args(x=x)
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        return eye.expand(*x.shape[:-1], self.dim, self.dim)

    def random_base(self, *batch_shape, dtype=None, device=None, generator=None) -> Tensor:
        batch_shape, dtype = self._base_args(batch_shape, dtype, generator)
        return torch.randn(*batch_shape, self.dim, dtype=dtype, device=device, generator=generator)

    def base_logprob(self, x: Tensor) -> Tensor:
        self._check_args(x=x)
        return -0.5 * (x * x).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)

    def worst_violation(self, x: Tensor) -> Tensor:
        # every finite vector is a point: 0, or NaN when some entry is NaN/inf (0 * inf = NaN)
        if x.numel() == 0:
            return torch.zeros((), dtype=x.dtype, device=x.device)
        return (x * 0).amax()

    def _distance_from_manifold(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)

    def _distance_from_tangent(self, x: Tensor, u: Tensor) -> Tensor:
        return torch.zeros(u.shape[:-1], dtype=u.dtype, device=u.device)
