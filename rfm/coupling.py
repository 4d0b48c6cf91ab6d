r"""Couplings of source and data samples for flow-matching training: independent, paired, and
minibatch optimal transport on any manifold.

A coupling takes a batch of source draws ``x0`` and data ``x1`` and returns the pairs to train
on. Minibatch OT (Tong et al. 2023, Pooladian et al. 2023) pairs them by a transport plan for
the cost :math:`c(x_0, x_1) = d(x_0, x_1)^2`, the squared geodesic distance of the manifold, so
it works on :class:`~manifolds.Euclidean`, the sphere, the torus, SO(3), SE(3) and products
alike: the exact plan is an assignment (``scipy.optimize.linear_sum_assignment``), the entropic
plan is Sinkhorn's (POT, ``ot.sinkhorn``) from which each source draw picks its partner.
Coupled pairs make the conditional paths cross less, so the learned flow is straighter.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from manifolds.base import RiemannianManifold

__all__ = ["Coupling", "IndependentCoupling", "PairedCoupling", "OTCoupling", "pairwise_squared_distances"]


def pairwise_squared_distances(manifold: RiemannianManifold, x0: Tensor, x1: Tensor) -> Tensor:
    """``C[i, j] = d(x0[i], x1[j])^2`` for point batches ``(n, *point_shape)`` and ``(m, *point_shape)``."""
    n, m = x0.shape[0], x1.shape[0]
    point_shape = x0.shape[1:]
    a = x0[:, None].expand(n, m, *point_shape)
    b = x1[None].expand(n, m, *point_shape)
    return manifold.dist(a, b) ** 2


class Coupling(ABC):
    """Pairs a batch of source draws with a batch of data."""

    @abstractmethod
    def __call__(self, x0: Tensor, x1: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The pairs ``(x0', x1')`` to train on, each of the input's shape."""


def _check_batches(x0: Tensor, x1: Tensor) -> None:
    for name, x in (("x0", x0), ("x1", x1)):
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 1:
            raise ValueError(
                f"{name} must be a floating-point tensor with a batch dim, got {getattr(x, 'shape', type(x).__name__)}"
            )
    if x0.shape != x1.shape:
        raise ValueError(
            f"x0 and x1 must have the same shape (one batch dim, then the point's), got "
            f"{tuple(x0.shape)} and {tuple(x1.shape)}"
        )


class IndependentCoupling(Coupling):
    """The product coupling: the pairs as drawn (each independent of the other)."""

    def __call__(self, x0: Tensor, x1: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_batches(x0, x1)
        return x0, x1


class PairedCoupling(Coupling):
    """Pairs that come together from the data (e.g. a degraded and a clean sample, or a
    conditional source): returned as given, after the shape checks."""

    def __call__(self, x0: Tensor, x1: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_batches(x0, x1)
        return x0, x1


def _require(module: str, what: str, package: str) -> None:
    """An ``ImportError`` saying how to install ``package`` (the ``ot`` extra) unless
    ``module`` is importable."""
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f'{what} needs {package}, which is not installed: pip install "rdfm[ot]" '
            f"(or pip install {'pot' if package == 'POT' else package})"
        )


class OTCoupling(Coupling):
    r"""Minibatch optimal transport for the squared geodesic distance of ``manifold``.

    Args:
        manifold: the space of the points (its ``dist`` gives the cost).
        method: ``"exact"`` (the optimal assignment: a permutation of ``x1``) or ``"sinkhorn"``
            (entropic OT with regularisation ``reg`` times the mean cost; each ``x0[i]`` draws
            its partner from row ``i`` of the plan, so some data may repeat).
        reg: the entropic regularisation relative to the mean cost (``"sinkhorn"`` only).
    """

    def __init__(self, manifold: RiemannianManifold, method: str = "exact", reg: float = 0.05) -> None:
        if not isinstance(manifold, RiemannianManifold):
            raise ValueError(f"manifold must be an rdfm manifold, got {type(manifold).__name__}")
        if method not in ("exact", "sinkhorn"):
            raise ValueError(f"method must be 'exact' or 'sinkhorn', got {method!r}")
        if isinstance(reg, bool) or not isinstance(reg, (int, float)) or not reg > 0:
            raise ValueError(f"reg must be a positive number, got {reg!r}")
        # Fail here, not at the first batch of a training run, when the optional solver is missing.
        _require(
            "ot" if method == "sinkhorn" else "scipy",
            f'OTCoupling(method="{method}")',
            "POT" if method == "sinkhorn" else "scipy",
        )
        self.manifold, self.method, self.reg = manifold, method, float(reg)

    def plan(self, x0: Tensor, x1: Tensor) -> Tensor:
        """The transport plan ``(n, n)`` between the batches (uniform marginals ``1/n``), float64 on the CPU."""
        _check_batches(x0, x1)
        cost = pairwise_squared_distances(self.manifold, x0, x1).detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(cost).all()):
            raise ValueError("x0 and x1 give non-finite distances (NaN or inf points?)")
        n = cost.shape[0]
        if self.method == "exact":
            from scipy.optimize import linear_sum_assignment

            rows, cols = linear_sum_assignment(cost.numpy())
            plan = torch.zeros(n, n, dtype=torch.float64)
            plan[torch.as_tensor(rows), torch.as_tensor(cols)] = 1.0 / n
            return plan
        import ot

        uniform = torch.full((n,), 1.0 / n, dtype=torch.float64)
        scale = float(cost.mean()) or 1.0
        return torch.as_tensor(
            ot.sinkhorn(uniform.numpy(), uniform.numpy(), (cost / scale).numpy(), self.reg, numItermax=10_000)
        )

    def __call__(self, x0: Tensor, x1: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        plan = self.plan(x0, x1)
        if self.method == "exact":
            partner = plan.argmax(1)
        else:
            partner = torch.multinomial(plan / plan.sum(1, keepdim=True), 1, generator=generator)[:, 0]
        return x0, x1[partner.to(x1.device)]
