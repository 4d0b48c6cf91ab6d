r"""The Riemannian flow matching training objective on a batch of data points.

One call draws the source points, the training times and the path sample, runs the model
(optionally under bfloat16 autocast) and returns :func:`rfm.rfm_loss`:

.. math::
    \mathcal L(\theta) = \mathbb E_{t \sim p(t),\, x_0 \sim p_0,\, x_1 \sim q}
        \big\| v_\theta(x_t, t) - \dot x_t \big\|^2_{g_{x_t}}.

It is what a training loop calls per step (``loss = objective(model, x1, generator=gen)``);
:func:`gm.training_times` sets :math:`p(t)` and :mod:`gm.train.precision` picks the autocast dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gm.guidance import drop_labels
from gm.schedulers import ConvexScheduler
from gm.times import training_times
from manifolds.base import RiemannianManifold
from rfm.loss import rfm_loss
from rfm.path import GeodesicPath

__all__ = ["RFMObjective"]


class RFMObjective:
    r"""The RFM loss of a model on a batch ``x1`` of data points.

    Per call, in this order on ``generator`` (so runs are reproducible on any device): source
    points from ``manifold.random_base``, the optional data jitter, then one time per sample
    (:func:`gm.training_times`). Points and times are made in ``x1``'s dtype; draws happen on
    the generator's device and are moved to ``x1``'s.

    Args:
        manifold: the state space.
        scheduler: the path's :math:`\kappa_t` (linear by default).
        time_power: training times :math:`t = u^{1/a}`, density :math:`a t^{a-1}` (1: uniform).
            Every time's regression has the same minimiser, so this only moves effort, towards
            :math:`t = 1` for a > 1, where the flow resolves the data's finest scales.
        data_noise: jitter each data point by :math:`\exp_x(\mathrm{proj}_x(s\,\epsilon))`,
            :math:`\epsilon \sim \mathcal N(0, I)`, a smoothing regulariser for small data sets.
        autocast_dtype: run the model's forward pass under ``torch.autocast`` in this dtype
            (e.g. ``torch.bfloat16``; see :func:`gm.train.precision.resolve_precision`); the path, the
            target and the loss stay in ``x1``'s dtype.
        label_dropout: with ``labels``, replace each by the null label with this probability
            (classifier-free guidance training; the model needs ``null_label=True``).
        validate: check ``x1`` and the times on every call (one host read-back). Turn off in a
            loop over data checked once with ``manifold.check_point``.
    """

    def __init__(
        self,
        manifold: RiemannianManifold,
        scheduler: ConvexScheduler | None = None,
        *,
        time_power: float = 1.0,
        data_noise: float = 0.0,
        autocast_dtype: torch.dtype | None = None,
        label_dropout: float = 0.0,
        validate: bool = True,
    ) -> None:
        if not (isinstance(time_power, (int, float)) and time_power > 0):
            raise ValueError(f"time_power must be a number > 0, got {time_power!r}")
        if not (isinstance(data_noise, (int, float)) and data_noise >= 0):
            raise ValueError(f"data_noise must be a number >= 0, got {data_noise!r}")
        if autocast_dtype is not None and autocast_dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"autocast_dtype must be None, torch.bfloat16 or torch.float16, got {autocast_dtype}")
        self.manifold = manifold
        self.path = GeodesicPath(manifold, scheduler, validate=validate)
        self.time_power = float(time_power)
        self.data_noise = float(data_noise)
        self.autocast_dtype = autocast_dtype
        if (
            isinstance(label_dropout, bool)
            or not isinstance(label_dropout, (int, float))
            or not 0 <= label_dropout <= 1
        ):
            raise ValueError(f"label_dropout must be a probability in [0, 1], got {label_dropout!r}")
        self.label_dropout = float(label_dropout)

    @property
    def validate(self) -> bool:
        return self.path.validate

    @validate.setter
    def validate(self, value: bool) -> None:
        self.path.validate = bool(value)

    def __call__(
        self, model: nn.Module, x1: Tensor, *, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """The mean loss of ``model`` on the data batch ``x1`` of shape ``(B, ..., *point_shape)``.

        Args:
            model: ``model(x_t, t) -> v`` (``model(x_t, t, labels)`` with ``labels``), ``t`` of
                shape ``(B,)``: one time per sample (the first batch dim).
            x1: data points.
            labels: per-sample labels passed to a class-conditional model.
            generator: RNG of the source points, jitter and times.
        """
        m = self.manifold
        m._check_args(x1=x1)  # a floating-point tensor of points (metadata only)
        batch = m.batch_shape(x1)
        if len(batch) == 0 or batch[0] == 0:
            raise ValueError(f"x1 must hold a non-empty batch of points, got shape {tuple(x1.shape)}")
        draw_device = generator.device if generator is not None else x1.device
        x0 = m.random_base(*batch, dtype=x1.dtype, device=draw_device, generator=generator).to(x1.device)
        if self.data_noise:
            eps = torch.randn(x1.shape, dtype=x1.dtype, device=draw_device, generator=generator).to(x1.device)
            x1 = m.expmap(x1, m.proju(x1, self.data_noise * eps))
        t = training_times(batch[0], power=self.time_power, dtype=x1.dtype, device=x1.device, generator=generator)
        s = self.path.sample(x0, x1, t)
        assert s.dx_t is not None  # GeodesicPath.sample sets the velocity target
        t_model = s.t if len(batch) == 1 else t
        if labels is not None and self.label_dropout:
            labels = drop_labels(
                torch.as_tensor(labels, device=x1.device).expand(batch[0]), self.label_dropout, generator
            )
        with torch.autocast(
            device_type=x1.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            v = model(s.x_t, t_model) if labels is None else model(s.x_t, t_model, labels)
        if not isinstance(v, Tensor) or v.shape != s.dx_t.shape:
            raise ValueError(
                f"model must return velocities of shape {tuple(s.dx_t.shape)}, got "
                f"{tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}"
            )
        return rfm_loss(m, v.to(x1.dtype), s)
