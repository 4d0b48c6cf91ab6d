"""The benchmarks' one likelihood protocol: exact Riemannian divergence, rk4, backwards on
the data-end time grid ``t_k = 1 - (1 - k/N)^p`` (:func:`gm.data_end_time_grid`). Every
reported number and every results record goes through here, so the settings written to the
JSON are the ones that were used."""

from __future__ import annotations

from torch import Tensor

from gm import data_end_time_grid
from manifolds.base import RiemannianManifold
from rfm import ODESolver
from rfm.solver import Velocity


def log_likelihood(
    manifold: RiemannianManifold, model: Velocity, x: Tensor, steps: int, grid_power: float, *, validate: bool = True
) -> Tensor:
    """Per-point exact log-likelihood of ``x`` under the flow ``model`` (shape: ``x``'s batch).

    ``validate=False`` returns NaN instead of raising when the model's flow is not finite: what
    model selection during training wants (a diverged evaluation is simply not selected, the
    run goes on), where reported numbers keep the default and raise."""
    grid = data_end_time_grid(steps, grid_power, backward=True)
    return ODESolver(manifold, model).log_likelihood(
        x, steps=None, time_grid=grid, method="rk4", divergence="exact", validate=validate
    )


def solver_settings(steps: int, grid_power: float) -> dict:
    """The ``likelihood_solver`` entry of a results record for :func:`log_likelihood`."""
    return {"method": "rk4", "steps": steps, "grid_power": grid_power, "divergence": "exact", "stepping": "project"}
