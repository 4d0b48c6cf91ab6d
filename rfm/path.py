r"""Geodesic conditional probability paths on Riemannian manifolds (Chen & Lipman, 2024)."""
from __future__ import annotations

import torch
from torch import Tensor

from gm.path import PathSample, ProbPath
from gm.schedulers import LinearScheduler, Scheduler
from manifolds.base import RiemannianManifold

__all__ = ["GeodesicPath"]


class GeodesicPath(ProbPath):
    r"""The geodesic interpolant between a source point and a data point.

    .. math::
        x_t = \exp_{x_0}\!\big(\kappa_t \log_{x_0}(x_1)\big), \qquad
        \dot x_t = \dot\kappa_t\, \gamma'(\kappa_t)
                 = \frac{\dot\kappa_t}{1 - \kappa_t} \log_{x_t}(x_1) \;\; (t < 1),

    where :math:`\gamma(s) = \exp_{x_0}(s \log_{x_0} x_1)`. The velocity is evaluated from the
    manifold's closed-form geodesic derivative (``manifold.geodesic_between``), which stays finite at
    :math:`t = 1` where the :math:`\log_{x_t}(x_1) / (1 - \kappa_t)` form is 0/0.

    Args:
        manifold: any :mod:`manifolds` manifold (products and batch dims included).
        scheduler: the :math:`\kappa_t` schedule (linear by default).
    """

    def __init__(self, manifold: RiemannianManifold, scheduler: Scheduler | None = None) -> None:
        if not isinstance(manifold, RiemannianManifold):
            raise ValueError(f"manifold must be an rdfm manifold, got {type(manifold).__name__}")
        self.manifold = manifold
        self.scheduler = scheduler if scheduler is not None else LinearScheduler()

    def sample(self, x0: Tensor | None, x1: Tensor, t: Tensor) -> PathSample:
        """Draw :math:`x_t` and its conditional velocity :math:`\\dot x_t`.

        Args:
            x0: source points (``None``: draw from ``manifold.random_base``).
            x1: data points, shape ``(*batch, *point_shape)``.
            t: times in [0, 1], shape ``batch`` (or broadcastable to it).
        """
        m = self.manifold
        ok, reason = m._check_shape(x1.shape, "x1")
        if not ok:
            raise ValueError(reason)
        batch = m.batch_shape(x1)
        if x0 is None:
            x0 = m.random_base(*batch, dtype=x1.dtype, device=x1.device)
        elif x0.shape != x1.shape:
            raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
        t = torch.as_tensor(t, dtype=x1.dtype, device=x1.device)
        try:
            t = t.expand(batch)
        except RuntimeError:
            raise ValueError(f"t of shape {tuple(t.shape)} does not broadcast to the batch shape {tuple(batch)}") from None
        sched = self.scheduler(t)
        x_t, velocity = m.geodesic_between(x0, x1, sched.kappa)
        dx_t = sched.d_kappa.reshape(batch + (1,) * m.ndim) * velocity
        return PathSample(t=t, x0=x0, x1=x1, x_t=x_t, dx_t=dx_t)
