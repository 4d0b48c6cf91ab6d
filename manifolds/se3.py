"""SE(3) = SO(3) x R^3 with the product metric, as used for protein backbone frames."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from manifolds._math import safe_sqrt
from manifolds.base import RiemannianManifold
from manifolds.so3 import SO3, hat

__all__ = ["SE3"]


class SE3(RiemannianManifold):
    r"""Rigid motions :math:`SE(3)` as the Riemannian product :math:`SO(3) \times \mathbb{R}^3`.

    Conventions:
        points: homogeneous matrices ``(..., 4, 4)`` = ``[[R, t], [0, 1]]``
        (build with :meth:`from_rt`, split with :meth:`to_rt`);
        tangent vectors at ``(R, t)``: ``(..., 4, 4)`` matrices ``[[R @ hat(w), v], [0, 0]]``;
        metric: product of SO(3)'s :math:`\tfrac12\mathrm{tr}(A^\top B)` and the Euclidean
        metric on translations, so geodesics move rotation and translation independently
        (``dist^2 = angle^2 + |t_1 - t_2|^2``). This is *not* the group's left-invariant
        metric: it is the one flow-matching models of protein frames use;
        base distribution: Haar rotation times standard normal translation.
    """

    point_shape = (4, 4)
    dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.so3 = SO3()

    @staticmethod
    def from_rt(r: Tensor, t: Tensor) -> Tensor:
        """Homogeneous matrices from rotations ``(..., 3, 3)`` and translations ``(..., 3)``."""
        if r.shape[-2:] != (3, 3):
            raise ValueError(f"r must have trailing shape (3, 3), got {tuple(r.shape)}")
        if t.shape[-1:] != (3,):
            raise ValueError(f"t must have trailing shape (3,), got {tuple(t.shape)}")
        batch = torch.broadcast_shapes(r.shape[:-2], t.shape[:-1])
        top = torch.cat([r.expand(*batch, 3, 3), t.expand(*batch, 3)[..., None]], dim=-1)
        bottom = torch.zeros(*batch, 1, 4, dtype=top.dtype, device=top.device)
        bottom[..., 0, 3] = 1
        return torch.cat([top, bottom], dim=-2)

    @staticmethod
    def to_rt(x: Tensor) -> tuple[Tensor, Tensor]:
        """Rotation ``(..., 3, 3)`` and translation ``(..., 3)`` of points (or tangent blocks)."""
        if x.shape[-2:] != (4, 4):
            raise ValueError(f"x must have trailing shape (4, 4), got {tuple(x.shape)}")
        return x[..., :3, :3], x[..., :3, 3]

    @staticmethod
    def _tangent(a: Tensor, v: Tensor) -> Tensor:
        top = torch.cat([a, v[..., None]], dim=-1)
        return torch.cat([top, torch.zeros_like(top[..., :1, :])], dim=-2)

    embedding_options = ("rotation", "translation_scale")

    def embedding_size(  # type: ignore[override]  # this manifold's own named options (base: **options)
        self, *, rotation: str = "matrix", translation_scale: float = 1.0
    ) -> int:
        return self.so3.embedding_size(rotation=rotation) + 3

    def embed(  # type: ignore[override]  # this manifold's own named options (base: **options)
        self, x: Tensor, *, rotation: str = "matrix", translation_scale: float = 1.0
    ) -> Tensor:
        """The rotation's features (:meth:`SO3.embed`) and the translation times
        ``translation_scale`` (e.g. 1/10 for coordinates in Angstrom)."""
        r, t = self.to_rt(x)
        return torch.cat([self.so3.embed(r, rotation=rotation), t * translation_scale], dim=-1)

    @property
    def raw_tangent_size(self) -> int:
        return 6

    def raw_to_tangent(self, x: Tensor, raw: Tensor) -> Tensor:
        """``[[R hat(w), v], [0, 0]]`` for ``raw = (w, v)``: body angular velocity and the
        translation velocity (exactly tangent)."""
        if raw.shape[-1] != 6:
            raise ValueError(f"raw must have trailing size 6 (angular, translational), got shape {tuple(raw.shape)}")
        r, _ = self.to_rt(x)
        return self._tangent(r @ hat(raw[..., :3]), raw[..., 3:])

    def inner(self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False) -> Tensor:
        v = u if v is None else v
        ua, ut = self.to_rt(u)
        va, vt = self.to_rt(v)
        out = 0.5 * (ua * va).sum(dim=(-2, -1)) + (ut * vt).sum(-1)
        if keepdim:
            out = out[..., None, None]
        return out.expand(torch.broadcast_shapes(out.shape, x.shape[:-2] + ((1, 1) if keepdim else ())))

    def component_inner(self, x: Tensor, u: Tensor, v: Tensor | None = None) -> Tensor:
        # Separate second moments for the rotation and translation blocks in geoopt's Adam.
        v = u if v is None else v
        ua, ut = self.to_rt(u)
        va, vt = self.to_rt(v)
        rot = 0.5 * (ua * va).sum(dim=(-2, -1))[..., None, None].expand(*ua.shape[:-2], 3, 3)
        tr = (ut * vt)[..., None]
        out = self._tangent(rot, tr[..., 0])
        out[..., 3, :] = 1
        return out

    def projx(self, x: Tensor) -> Tensor:
        r, t = self.to_rt(x)
        return self.from_rt(self.so3.projx(r), t)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        r, _ = self.to_rt(x)
        a, v = self.to_rt(u)
        return self._tangent(self.so3.proju(r, a), v)

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        r, _ = self.to_rt(x)
        a, v = self.to_rt(u)
        return self._tangent(self.so3.egrad2rgrad(r, a), v)

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        a, b = self.to_rt(v)
        return self._tangent(self.so3.transp(self.to_rt(x)[0], self.to_rt(y)[0], a), b)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        self._check_args(x=x, u=u)
        r, t = self.to_rt(x)
        a, v = self.to_rt(u)
        return self.from_rt(self.so3.expmap(r, a), t + v)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        self._check_args(x=x, y=y)
        r1, t1 = self.to_rt(x)
        r2, t2 = self.to_rt(y)
        return self._tangent(self.so3.logmap(r1, r2), t2 - t1)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        self._check_args(x=x, y=y)
        r1, t1 = self.to_rt(x)
        r2, t2 = self.to_rt(y)
        d = safe_sqrt(self.so3.dist(r1, r2) ** 2 + ((t2 - t1) ** 2).sum(-1))
        return d[..., None, None] if keepdim else d

    def geodesic(self, x: Tensor, u: Tensor, s) -> tuple[Tensor, Tensor]:
        r, t = self.to_rt(x)
        a, v = self.to_rt(u)
        rot, rot_velocity = self.so3.geodesic(r, a, s)
        s = self._expand_time(s, x)[..., 0]  # per-sample times (a prefix of the batch shape), (..., 1)
        trans = t + s * v
        return self.from_rt(rot, trans), self._tangent(rot_velocity, v.expand_as(trans))

    def tangent_basis(self, x: Tensor) -> Tensor:
        self._check_args(x=x)
        r, _ = self.to_rt(x)
        rot = self.so3.tangent_basis(r)  # (..., 3, 3, 3)
        zeros3 = torch.zeros(*rot.shape[:-1], dtype=x.dtype, device=x.device)
        rot_part = self._tangent(rot, zeros3)
        eye = torch.eye(3, dtype=x.dtype, device=x.device).expand(*r.shape[:-2], 3, 3)
        trans_part = self._tangent(torch.zeros_like(rot), eye)
        return torch.cat([rot_part, trans_part], dim=-3)

    def random_base(self, *batch_shape, dtype=None, device=None, generator=None) -> Tensor:
        batch_shape, dtype = self._base_args(batch_shape, dtype, generator)
        r = self.so3.random_base(*batch_shape, dtype=dtype, device=device, generator=generator)
        t = torch.randn(*batch_shape, 3, dtype=r.dtype, device=device, generator=generator)
        return self.from_rt(r, t)

    def base_logprob(self, x: Tensor) -> Tensor:
        self._check_args(x=x)
        r, t = self.to_rt(x)
        return self.so3.base_logprob(r) - 0.5 * (t * t).sum(-1) - 1.5 * math.log(2 * math.pi)

    def _distance_from_manifold(self, x: Tensor) -> Tensor:
        r, _ = self.to_rt(x)
        bottom = x[..., 3, :] - torch.tensor([0, 0, 0, 1], dtype=x.dtype, device=x.device)
        return torch.maximum(self.so3._distance_from_manifold(r), bottom.abs().amax(-1))

    def _distance_from_tangent(self, x: Tensor, u: Tensor) -> Tensor:
        r, _ = self.to_rt(x)
        a, _ = self.to_rt(u)
        return torch.maximum(self.so3._distance_from_tangent(r, a), u[..., 3, :].abs().amax(-1))
