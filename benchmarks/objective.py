"""The training objective every RFM benchmark script uses: :class:`rfm.RFMObjective` on a
random batch of a dataset held in memory."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from manifolds.base import RiemannianManifold
from rfm.objective import RFMObjective


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
    """``loss_fn(model, step, generator)`` for :func:`gm.training.train`: draws ``batch`` training
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
