"""The flat torus [0, 2 pi)^dim."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from manifolds._math import safe_norm
from manifolds.base import RiemannianManifold

__all__ = ["FlatTorus"]

TWO_PI = 2 * math.pi


def wrap_angle(x: Tensor) -> Tensor:
    """Map angles into [0, 2 pi) exactly, also in float32 where remainder may round up to 2 pi."""
    r = torch.remainder(x, TWO_PI)
    return torch.where(r >= TWO_PI, torch.zeros_like(r), r)


def wrap_difference(d: Tensor) -> Tensor:
    """Map angle differences into [-pi, pi)."""
    return wrap_angle(d + math.pi) - math.pi


class FlatTorus(RiemannianManifold):
    r"""The flat torus :math:`\mathbb{T}^d = (\mathbb{R} / 2\pi\mathbb{Z})^d`.

    Conventions:
        points: angles ``(..., dim)`` in :math:`[0, 2\pi)`;
        tangent vectors: any ``(..., dim)`` vector (angular velocities);
        metric: flat, :math:`\langle u, v\rangle = \sum_i u_i v_i`, so the volume is
        :math:`(2\pi)^d` and ``dist`` is the Euclidean norm of the wrapped difference;
        base distribution: uniform, log density :math:`-d\log 2\pi`.
    """

    def __init__(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.point_shape = (dim,)
        self.dim = dim
        super().__init__()

    def extra_repr(self) -> str:
        return str(self.dim)

    def inner(self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False) -> Tensor:
        v = u if v is None else v
        out = (u * v).sum(-1, keepdim=keepdim)
        return out.expand(torch.broadcast_shapes(out.shape, x.shape[:-1] + ((1,) if keepdim else ())))

    def projx(self, x: Tensor) -> Tensor:
        return wrap_angle(x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return u

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return v

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        self._check_args(x=x, u=u, shape=False)  # elementwise in the angles
        return wrap_angle(x + u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        self._check_args(x=x, y=y, shape=False)  # elementwise in the angles
        return wrap_difference(y - x)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        return safe_norm(self.logmap(x, y), keepdim=keepdim)

    def geodesic(self, x: Tensor, u: Tensor, s) -> tuple[Tensor, Tensor]:
        s = self._expand_time(s, x)
        y = x + s * u
        return wrap_angle(y), u.expand_as(y)

    def tangent_basis(self, x: Tensor) -> Tensor:
        self._check_args(x=x)
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        return eye.expand(*x.shape[:-1], self.dim, self.dim)

    def random_base(self, *batch_shape, dtype=None, device=None, generator=None) -> Tensor:
        batch_shape, dtype = self._base_args(batch_shape, dtype, generator)
        u = torch.rand(*batch_shape, self.dim, dtype=dtype, device=device, generator=generator)
        return wrap_angle(u * TWO_PI)

    def base_logprob(self, x: Tensor) -> Tensor:
        self._check_args(x=x)
        return torch.full(x.shape[:-1], -self.dim * math.log(TWO_PI), dtype=x.dtype, device=x.device)

    embedding_options = ("harmonics",)

    def embedding_size(self, *, harmonics: int = 1) -> int:  # type: ignore[override]  # this manifold's own named options (base: **options)
        self._check_harmonics(harmonics)
        return 2 * self.dim * harmonics

    def embed(self, x: Tensor, *, harmonics: int = 1) -> Tensor:  # type: ignore[override]  # this manifold's own named options (base: **options)
        r"""Fourier features :math:`[\cos kx, \sin kx]_{k=1..K}` of every angle (``K = harmonics``):
        continuous across the :math:`0 / 2\pi` seam, where the angles themselves jump."""
        self._check_harmonics(harmonics)
        k = torch.arange(1, harmonics + 1, dtype=x.dtype, device=x.device)
        arg = (x[..., None] * k).flatten(-2)
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)

    @staticmethod
    def _check_harmonics(harmonics: int) -> None:
        if isinstance(harmonics, bool) or not isinstance(harmonics, int) or harmonics < 1:
            raise ValueError(f"harmonics must be a positive integer, got {harmonics!r}")

    def worst_violation(self, x: Tensor) -> Tensor:
        # one full-tensor min/max instead of per-point reductions over the short angle dim
        if x.numel() == 0:
            return torch.zeros((), dtype=x.dtype, device=x.device)
        low, high = torch.aminmax(x)  # NaN propagates; +-inf give inf below
        return torch.maximum(-low, high - TWO_PI).clamp_min(0)

    def _distance_from_manifold(self, x: Tensor) -> Tensor:
        below = (-x).clamp_min(0)
        above = (x - TWO_PI).clamp_min(0)
        return (below + above).amax(-1)

    def _distance_from_tangent(self, x: Tensor, u: Tensor) -> Tensor:
        return torch.zeros(u.shape[:-1], dtype=u.dtype, device=u.device)
