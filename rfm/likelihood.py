r"""The exact likelihood protocol of density fitting: exact Riemannian divergence, rk4, and a
time grid that is fine where the flow is stiff.

The log-density of a flow's endpoint is integrated backwards from the data,

.. math::
    \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \operatorname{div}_g v_\theta(x_t, t)\, dt,

on the data-end grid :math:`t_k = 1 - (1 - k/N)^p` (:func:`gm.data_end_time_grid`), whose steps
shrink towards :math:`t = 1`, where a flow towards concentrated data varies fastest. Every
reported likelihood of :mod:`rfm.sphere_density` and of the benchmarks goes through
:func:`log_likelihood`, and :func:`solver_settings` describes it for a results record, so the
settings written down are the ones that were used.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gm.simulate import data_end_time_grid
from manifolds.base import RiemannianManifold
from rfm.solver import ODESolver, Velocity

__all__ = ["log_likelihood", "solver_settings"]


def log_likelihood(
    manifold: RiemannianManifold, model: Velocity, x: Tensor, steps: int, grid_power: float, *, validate: bool = True
) -> Tensor:
    """Per-point exact log-likelihood of ``x`` under the flow ``model`` from the manifold's base
    distribution (shape: ``x``'s batch): ``steps`` rk4 steps on the data-end grid of power
    ``grid_power`` (1: equal steps).

    ``validate=False`` returns NaN instead of raising when the model's flow is not finite: what
    model selection during training wants (a diverged evaluation is simply not selected, the
    run goes on), where reported numbers keep the default and raise.

    Raises:
        ValueError: for bad ``steps`` or ``grid_power``, points off the manifold, or (with
            ``validate``) a flow that is not finite.
    """
    grid = data_end_time_grid(steps, grid_power, backward=True)
    logp = ODESolver(manifold, model).log_likelihood(
        x, steps=None, time_grid=grid, method="rk4", divergence="exact", validate=validate
    )
    assert isinstance(logp, Tensor)  # return_source=False
    return logp


def solver_settings(steps: int, grid_power: float) -> dict[str, Any]:
    """The ``likelihood_solver`` entry of a results record for :func:`log_likelihood`."""
    return {"method": "rk4", "steps": steps, "grid_power": grid_power, "divergence": "exact", "stepping": "project"}
