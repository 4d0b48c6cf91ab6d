"""The training objective every RFM benchmark script uses: the Riemannian flow matching loss on
a random batch of a dataset held in memory."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from manifolds.base import RiemannianManifold
from rfm import GeodesicPath, rfm_loss


def dataset_rfm_loss(manifold: RiemannianManifold, x_train: torch.Tensor, batch: int, device: str | torch.device = "cpu", *,
                     labels: torch.Tensor | None = None, data_noise: float = 0.0,
                     autocast_dtype: torch.dtype | None = None, time_power: float = 1.0) -> Callable[[nn.Module, int, torch.Generator], torch.Tensor]:
    """``loss_fn(model, step, generator)`` for :func:`rfm.training.train`: draws ``batch`` training
    points (with replacement), base points from ``manifold.random_base`` and ``t ~ U[0, 1]``, and
    returns :func:`rfm.rfm_loss` of ``model(x_t, t)`` (``model(x_t, t, labels)`` when ``labels``
    of the training points are given) on the geodesic path.

    ``data_noise > 0`` jitters each data point by ``exp_x(proj_x(data_noise * eps))``, eps standard
    normal, a smoothing regulariser for small datasets. All draws are made on the (CPU)
    ``generator`` in a fixed order and in ``x_train``'s dtype, so runs are reproducible on any
    device.

    ``time_power`` a draws ``t = u^(1/a)``, density ``a t^(a-1)`` (1: uniform). Every ``t``'s
    regression has the same minimiser, so this only moves effort, here towards ``t = 1`` where
    the flow resolves the data's finest scales.

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the model's forward pass under
    ``torch.autocast`` (mixed precision: its matrix products in that dtype, weights and the
    optimiser in float32); the path, the target and the loss stay in ``x_train``'s dtype.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if not time_power > 0:
        raise ValueError(f"time_power must be > 0, got {time_power}")
    if data_noise < 0:
        raise ValueError(f"data_noise must be >= 0, got {data_noise}")
    path = GeodesicPath(manifold)

    def loss_fn(model: nn.Module, step: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(x_train), (batch,), generator=generator).to(device)
        x0 = manifold.random_base(batch, dtype=x_train.dtype, generator=generator).to(device)
        x1 = x_train[idx]
        if data_noise:
            eps = data_noise * torch.randn(x1.shape, dtype=x1.dtype, generator=generator).to(device)
            x1 = manifold.expmap(x1, manifold.proju(x1, eps))
        t = torch.rand(batch, dtype=x1.dtype, generator=generator)
        if time_power != 1.0:
            t = t ** (1.0 / time_power)
        s = path.sample(x0, x1, t.to(device))
        with torch.autocast(device_type=x1.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            v = model(s.x_t, s.t) if labels is None else model(s.x_t, s.t, labels[idx])
        return rfm_loss(manifold, v.to(x1.dtype), s)

    return loss_fn
