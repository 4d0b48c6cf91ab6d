"""Riemannian products of the rdfm manifolds."""

from __future__ import annotations

import functools
import math
import operator

import torch
from torch import Tensor

from manifolds._math import safe_sqrt
from manifolds.base import RiemannianManifold

__all__ = ["Product"]


class Product(RiemannianManifold):
    r"""The Riemannian product :math:`M_1 \times \dots \times M_k`.

    Conventions:
        points and tangent vectors: ``(..., sum_i numel(point_shape_i))``, the concatenation of
        each component's point flattened over its own point dims (``split`` recovers them);
        metric: sum of the component metrics, so ``dist^2 = sum_i dist_i^2``;
        base distribution: product of the component bases (log densities add).
    """

    def __init__(self, *manifolds: RiemannianManifold) -> None:
        if not manifolds:
            raise ValueError("Product needs at least one manifold")
        for i, m in enumerate(manifolds):
            if not isinstance(m, RiemannianManifold):
                raise ValueError(f"manifolds[{i}] must be an rdfm manifold, got {type(m).__name__}")
        self.sizes = [math.prod(m.point_shape) for m in manifolds]
        self.point_shape = (sum(self.sizes),)
        self.dim = sum(m.dim for m in manifolds)
        super().__init__()
        self.manifolds = torch.nn.ModuleList(manifolds)  # registered: .to() and state_dict reach the factors
        self._factors: tuple[RiemannianManifold, ...] = tuple(manifolds)  # the same objects, typed
        self.embedding_options = tuple(sorted({name for m in manifolds for name in m.embedding_options}))

    def extra_repr(self) -> str:
        return ", ".join(repr(m) for m in self._factors)

    def split(self, x: Tensor) -> list[Tensor]:
        """Component points (or tangent vectors) in their own shapes."""
        if x.shape[-1] != self.point_shape[0]:
            raise ValueError(f"x must have trailing dim {self.point_shape[0]} for {self!r}, got {tuple(x.shape)}")
        parts = torch.split(x, self.sizes, dim=-1)
        return [p.reshape(*p.shape[:-1], *m.point_shape) for p, m in zip(parts, self._factors)]

    def join(self, parts: list[Tensor]) -> Tensor:
        """Inverse of :meth:`split`."""
        if len(parts) != len(self._factors):
            raise ValueError(f"parts must have {len(self._factors)} components, got {len(parts)}")
        flat = [p.reshape(*p.shape[: p.dim() - m.ndim], -1) for p, m in zip(parts, self._factors)]
        batch = torch.broadcast_shapes(*(f.shape[:-1] for f in flat))
        return torch.cat([f.expand(*batch, f.shape[-1]) for f in flat], dim=-1)

    def _component_options(self, m: RiemannianManifold, options: dict) -> dict:
        return {k: v for k, v in options.items() if k in m.embedding_options}

    def embedding_size(self, **options) -> int:
        self._check_embedding_options(options)
        return sum(m.embedding_size(**self._component_options(m, options)) for m in self._factors)

    def embed(self, x: Tensor, **options) -> Tensor:
        """The components' embeddings side by side; each option goes to the components that take
        it (``harmonics`` to tori, ``rotation`` to SO(3)/SE(3) factors)."""
        self._check_embedding_options(options)
        return torch.cat(
            [m.embed(p, **self._component_options(m, options)) for m, p in zip(self._factors, self.split(x))], dim=-1
        )

    @property
    def raw_tangent_size(self) -> int:
        return sum(m.raw_tangent_size for m in self._factors)

    def raw_to_tangent(self, x: Tensor, raw: Tensor) -> Tensor:
        if raw.shape[-1] != self.raw_tangent_size:
            raise ValueError(
                f"raw must have trailing size {self.raw_tangent_size} for {self!r}, got shape {tuple(raw.shape)}"
            )
        parts = torch.split(raw, [m.raw_tangent_size for m in self._factors], dim=-1)
        return self.join([m.raw_to_tangent(p, r) for m, p, r in zip(self._factors, self.split(x), parts)])

    def _map(self, fn: str, *tensors: Tensor) -> Tensor:
        split = [self.split(t) for t in tensors]
        return self.join([getattr(m, fn)(*args) for m, *args in zip(self._factors, *split)])

    def _sum(self, fn: str, *tensors: Tensor, **kw) -> Tensor:
        split = [self.split(t) for t in tensors]
        return sum(getattr(m, fn)(*args, **kw) for m, *args in zip(self._factors, *split))

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return self._map("expmap", x, u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return self._map("logmap", x, y)

    def projx(self, x: Tensor) -> Tensor:
        return self._map("projx", x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return self._map("proju", x, u)

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        return self._map("egrad2rgrad", x, u)

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return self._map("transp", x, y, v)

    def inner(self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False) -> Tensor:
        out = self._sum("inner", x, u, u if v is None else v)
        return out[..., None] if keepdim else out

    def component_inner(self, x: Tensor, u: Tensor, v: Tensor | None = None) -> Tensor:
        v = u if v is None else v
        parts = [
            m.component_inner(xi, ui, vi).expand_as(ui)
            for m, xi, ui, vi in zip(self._factors, self.split(x), self.split(u), self.split(v))
        ]
        return self.join(parts)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        sq = [m.dist(a, b) ** 2 for m, a, b in zip(self._factors, self.split(x), self.split(y))]
        d = safe_sqrt(functools.reduce(operator.add, sq))
        return d[..., None] if keepdim else d

    def geodesic(self, x: Tensor, u: Tensor, s) -> tuple[Tensor, Tensor]:
        pairs = [m.geodesic(a, b, s) for m, a, b in zip(self._factors, self.split(x), self.split(u))]
        return self.join([p for p, _ in pairs]), self.join([v for _, v in pairs])

    def geodesic_between(self, x: Tensor, y: Tensor, s) -> tuple[Tensor, Tensor]:
        pairs = [m.geodesic_between(a, b, s) for m, a, b in zip(self._factors, self.split(x), self.split(y))]
        return self.join([p for p, _ in pairs]), self.join([v for _, v in pairs])

    def tangent_basis(self, x: Tensor) -> Tensor:
        """Block basis: each component's basis, zero in the other components."""
        blocks = []
        offset = 0
        for m, xi, size in zip(self._factors, self.split(x), self.sizes):
            b = m.tangent_basis(xi)
            b = b.reshape(*b.shape[: b.dim() - m.ndim], size)
            pad = (offset, self.point_shape[0] - offset - size)
            blocks.append(torch.nn.functional.pad(b, pad))
            offset += size
        return torch.cat(blocks, dim=-2)

    def random_base(self, *batch_shape, dtype=None, device=None, generator=None) -> Tensor:
        batch_shape, dtype = self._base_args(batch_shape, dtype, generator)
        return self.join(
            [m.random_base(*batch_shape, dtype=dtype, device=device, generator=generator) for m in self._factors]
        )

    def base_logprob(self, x: Tensor) -> Tensor:
        return self._sum("base_logprob", x)

    def _distance_from_manifold(self, x: Tensor) -> Tensor:
        errs = [m._distance_from_manifold(p) for m, p in zip(self._factors, self.split(x))]
        return torch.stack(errs, -1).amax(-1)

    def _distance_from_tangent(self, x: Tensor, u: Tensor) -> Tensor:
        errs = [m._distance_from_tangent(a, b) for m, a, b in zip(self._factors, self.split(x), self.split(u))]
        return torch.stack(errs, -1).amax(-1)
