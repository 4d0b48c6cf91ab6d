r"""The Riemannian flow matching loss of a dataset held in memory, as a training step's loss:
each call draws a random batch of the data (with replacement) and returns
:class:`rfm.RFMObjective` on it,

.. math::
    \mathcal L(\theta) = \mathbb E_{t,\, x_0 \sim p_0,\, x_1 \sim \mathrm{data}}
        \big\| v_\theta(x_t, t) - \dot x_t \big\|^2_{g_{x_t}},

in the form :func:`gm.train.train` takes (``loss_fn(model, step, generator)``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from manifolds.base import RiemannianManifold
from rfm.objective import RFMObjective

__all__ = ["dataset_rfm_loss"]


def dataset_rfm_loss(
    manifold: RiemannianManifold,
    x_train: torch.Tensor,
    batch: int,
    device: str | torch.device = "cpu",
    *,
    labels: torch.Tensor | None = None,
    data_noise: float = 0.0,
    autocast_dtype: torch.dtype | None = None,
    time_power: float = 1.0,
) -> Callable[[nn.Module, int, torch.Generator], torch.Tensor]:
    """``loss_fn(model, step, generator)`` for :func:`gm.train.train`: draws ``batch`` training
    points (with replacement, on the CPU ``generator``) and returns the :class:`rfm.RFMObjective`
    (``time_power``, ``data_noise``, ``autocast_dtype``) of ``model`` on them (``model(x_t, t,
    labels)`` when ``labels`` of the training points are given).

    The data are checked once here (``manifold.check_point``), so the per-step value checks,
    which cost a host read-back, are off.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    manifold.check_point(x_train, "x_train")
    objective = RFMObjective(
        manifold, time_power=time_power, data_noise=data_noise, autocast_dtype=autocast_dtype, validate=False
    )

    def loss_fn(model: nn.Module, step: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(x_train), (batch,), generator=generator).to(device)
        return objective(model, x_train[idx], labels=None if labels is None else labels[idx], generator=generator)

    return loss_fn
