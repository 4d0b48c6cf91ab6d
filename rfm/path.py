r"""Geodesic conditional probability paths on Riemannian manifolds (Chen & Lipman, 2024)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor

from gm.checks import Checks, broadcast_time, check_floating, check_same_dtype, describe_time_range, time_out_of_range
from gm.path import PathSample, ProbPath
from gm.schedulers import ConvexScheduler, LinearScheduler
from manifolds._math import point_tolerance
from manifolds.base import RiemannianManifold

__all__ = ["GeodesicPath", "checked_points"]


def checked_points(
    manifold: RiemannianManifold,
    points: Sequence[tuple[str, Tensor, bool]],
    then: Sequence[tuple[Tensor, Callable[[], str | None]]] = (),
) -> list[Tensor]:
    """Value checks of point sets (and the further ``then`` checks) in one host read-back.

    Each entry of ``points`` is ``(name, x, is_data)``. Sources must lie on the manifold to their
    dtype's precision; data may be off by float32 rounding (data stored in float32 and cast to
    float64: "a tolerance tied to the precision they came in") and come back projected onto it.
    Returns the points in order; raises the ``ValueError`` of the first failing check.
    """
    checks, worst = Checks(), []
    for name, x, is_data in points:
        tol = max(point_tolerance(x.dtype), point_tolerance(torch.float32)) if is_data else point_tolerance(x.dtype)
        err = manifold.worst_violation(x)
        checks.add(err - tol, partial(manifold.check_point, x, name, atol=tol))
        worst.append(err)
    for excess, explain in then:
        checks.add(excess, explain)
    errors = checks.run(*worst)
    return [manifold.projx(x) if err > point_tolerance(x.dtype) else x for (_, x, _), err in zip(points, errors)]


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
        validate: check point and time values in :meth:`sample` (see there).
    """

    def __init__(
        self, manifold: RiemannianManifold, scheduler: ConvexScheduler | None = None, *, validate: bool = True
    ) -> None:
        if not isinstance(manifold, RiemannianManifold):
            raise ValueError(f"manifold must be an rdfm manifold, got {type(manifold).__name__}")
        if scheduler is not None and not isinstance(scheduler, ConvexScheduler):
            raise ValueError(
                f"scheduler must be a gm.ConvexScheduler (kappa_t: a geodesic path needs alpha + sigma "
                f"= 1), got {scheduler!r}; affine Gaussian schedules go to rfm.AffinePath"
            )
        self.manifold = manifold
        self.scheduler = scheduler if scheduler is not None else LinearScheduler()
        self.validate = bool(validate)

    def source_log_prob(self, x0: Tensor) -> Tensor:
        """Log-density of the path's source, the manifold's base distribution
        (``manifold.base_logprob``): what :meth:`rfm.ODESolver.log_likelihood` adds at t = 0."""
        return self.manifold.base_logprob(x0)

    def sample(self, x0: Tensor | None, x1: Tensor, t: Tensor | float) -> PathSample:
        """Draw :math:`x_t` and its conditional velocity :math:`\\dot x_t`.

        Args:
            x0: source points (``None``: draw from ``manifold.random_base``).
            x1: data points, shape ``(*batch, *point_shape)``, floating point.
            t: times in [0, 1]: a float, or a tensor whose shape is a prefix of the batch shape
                (one time per sample, e.g. ``(B,)`` for ``B`` proteins of ``N`` residues).

        Raises:
            ValueError: naming the argument, for a wrong shape or dtype (integer points, mixed
                float32/float64), and, when the path validates (``validate=True``, the default),
                for NaN/inf points, points off the manifold, and times that are NaN or outside
                [0, 1]. Data points ``x1`` within float32 rounding of the manifold (data stored in
                float32 and cast to float64) are accepted and projected onto it; sources ``x0`` must
                be on it to their dtype's precision. The value checks cost one
                host read-back; turn them off (``path.validate = False``) in loops over data that
                was checked once, e.g. with ``manifold.check_point``.
        """
        m = self.manifold
        m._check_args(x1=x1)  # a floating-point tensor of points (metadata only)
        batch = m.batch_shape(x1)
        if x0 is not None:
            check_floating(x0, "x0")
            if x0.shape != x1.shape:
                raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
            check_same_dtype(x1, "x1", x0, "x0")
        given = t
        t = broadcast_time(t, batch, dtype=x1.dtype, device=x1.device)
        if self.validate:
            given = given.to(dtype=t.dtype, device=t.device) if isinstance(given, Tensor) else t
            sources = [] if x0 is None else [("x0", x0, False)]
            checked = checked_points(
                m, [*sources, ("x1", x1, True)], then=[(time_out_of_range(given), lambda: describe_time_range(given))]
            )
            x0, x1 = (checked[0] if x0 is not None else None), checked[-1]
        if x0 is None:
            x0 = m.random_base(*batch, dtype=x1.dtype, device=x1.device)
        sched = self.scheduler(t, validate=False)
        x_t, velocity = m.geodesic_between(x0, x1, sched.kappa)
        dx_t = sched.d_kappa.reshape(batch + (1,) * m.ndim) * velocity
        return PathSample(t=t, x0=x0, x1=x1, x_t=x_t, dx_t=dx_t)
