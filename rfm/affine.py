r"""Affine Gaussian probability paths on :math:`\mathbb{R}^d` and the prediction types of
their models (the Flow Matching guide's Euclidean recipe).

.. math::
    x_t = \alpha_t x_1 + \sigma_t x_0, \qquad \dot x_t = \dot\alpha_t x_1 + \dot\sigma_t x_0,
    \qquad x_0 \sim N(0, I),

for any :class:`gm.Scheduler` (CondOT, polynomial, cosine, VP, linear-VP, VE, ...). A model may
predict, at :math:`(x_t, t)`, any of

- ``"velocity"``: :math:`u_t(x) = E[\dot\alpha_t x_1 + \dot\sigma_t x_0 \mid x_t = x]`,
- ``"x1"``: :math:`E[x_1 \mid x_t = x]` (the denoiser),
- ``"x0"``: :math:`E[x_0 \mid x_t = x]` (the noise, :math:`\epsilon`-prediction),
- ``"score"``: :math:`\nabla \log p_t(x) = -E[x_0 \mid x_t = x] / \sigma_t` (Gaussian source),

and :meth:`AffinePath.convert` turns one into another in closed form, through
:math:`x = \alpha_t \hat x_1 + \sigma_t \hat x_0`:

.. math::
    \hat x_1 = \frac{\sigma_t u - \dot\sigma_t x}{\sigma_t\dot\alpha_t - \alpha_t\dot\sigma_t},
    \qquad
    \hat x_0 = \frac{\dot\alpha_t x - \alpha_t u}{\sigma_t\dot\alpha_t - \alpha_t\dot\sigma_t},

where :math:`\sigma\dot\alpha - \alpha\dot\sigma = \sigma^2 \, d(\alpha/\sigma)/dt > 0` (the snr
increases). Conversions that divide by :math:`\sigma_t` (to ``"score"``, from ``"x1"``) are
undefined where :math:`\sigma_t = 0` and those that divide by :math:`\alpha_t` (from ``"x0"``
or ``"score"``) where :math:`\alpha_t = 0`; every conversion from or to ``"velocity"`` needs
:math:`\dot\alpha_t, \dot\sigma_t`, infinite at :math:`t = 1` for the VP and linear-VP schedules
(the marginal velocity is infinite there). All of these raise ``ValueError`` naming ``t``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gm.checks import check_floating
from gm.path import PathSample, ProbPath
from gm.schedulers import LinearScheduler, Scheduler

__all__ = ["AffinePath", "PREDICTION_TYPES", "prediction_loss", "ScheduleChange"]

PREDICTION_TYPES = ("velocity", "x1", "x0", "score")


def _check_prediction_type(name: str, argument: str) -> None:
    if name not in PREDICTION_TYPES:
        raise ValueError(f"{argument} must be one of {PREDICTION_TYPES}, got {name!r}")


class AffinePath(ProbPath):
    r"""The affine Gaussian path :math:`x_t = \alpha_t x_1 + \sigma_t x_0` on :math:`\mathbb{R}^d`.

    Points have any leading batch dims and one feature dim: ``(*batch, d)``; times are per
    sample, a float or a tensor whose shape is a prefix of ``batch``.

    Args:
        scheduler: any :class:`gm.Scheduler` (CondOT, :class:`gm.LinearScheduler`, by default).
        validate: check times and finiteness in :meth:`sample` and :meth:`convert` (one host
            read-back per call).
    """

    def __init__(self, scheduler: Scheduler | None = None, *, validate: bool = True) -> None:
        if scheduler is not None and not isinstance(scheduler, Scheduler):
            raise ValueError(f"scheduler must be a gm.Scheduler, got {type(scheduler).__name__}")
        self.scheduler = scheduler if scheduler is not None else LinearScheduler()
        self.validate = bool(validate)

    def __repr__(self) -> str:
        return f"AffinePath({self.scheduler!r})"

    def sample_source(
        self,
        shape: tuple[int, ...] | torch.Size,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        r"""Draws of the path's source for sampling: :math:`N(0, \sigma_0^2 I)` (``source_std``;
        1 except for VE)."""
        noise = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
        return noise * self.scheduler.source_std

    def source_log_prob(self, x0: Tensor) -> Tensor:
        r"""Log-density of the source :meth:`sample_source` draws from,
        :math:`\log N(x_0; 0, \sigma_0^2 I)` with :math:`\sigma_0` = ``source_std`` (1, or
        :math:`\sigma_{max}` for VE), summed over the feature dim: what
        :meth:`rfm.ODESolver.log_likelihood` adds at t = 0 for a solver built with this path.

        For VE the t = 0 marginal of the path is the data blurred by :math:`N(0, \sigma_{max}^2 I)`,
        only close to this source when :math:`\sigma_{max}` dwarfs the data: the likelihood is
        that of the model one samples (source draws pushed through the flow); pass
        ``log_p0`` to the solver for another source.
        """
        check_floating(x0, "x0")
        if x0.dim() < 1:
            raise ValueError("x0 must have a feature dim, shape (*batch, d), got a 0-dim tensor")
        std = self.scheduler.source_std
        d = x0.shape[-1]
        return -0.5 * (x0 * x0).sum(-1) / std**2 - d * (math.log(std) + 0.5 * math.log(2 * math.pi))

    def _times(self, t: Tensor | float, x: Tensor, name: str) -> Tensor:
        """``t`` as a tensor broadcast against ``x`` (``(*batch, 1)``) after the checks."""
        check_floating(x, name)
        if x.dim() < 1:
            raise ValueError(f"{name} must have a feature dim, shape (*batch, d), got a 0-dim tensor")
        batch = tuple(x.shape[:-1])
        if not isinstance(t, Tensor):
            if isinstance(t, bool) or not isinstance(t, (int, float)):
                raise ValueError(f"t must be a float or a floating-point tensor, got {type(t).__name__}")
            t = torch.tensor(float(t), dtype=x.dtype, device=x.device)
        if not t.is_floating_point():
            raise ValueError(f"t must be a floating-point tensor, got dtype {t.dtype}")
        if tuple(t.shape) != batch[: t.dim()]:
            raise ValueError(f"t must have a shape that is a prefix of the batch shape {batch}, got {tuple(t.shape)}")
        t = t.to(dtype=x.dtype, device=x.device)
        return t.reshape(t.shape + (1,) * (x.dim() - t.dim()))

    def _check_values(self, t: Tensor, tensors: dict[str, Tensor], *, singular: bool = False) -> None:
        if not self.validate:
            return
        flags = [((t < 0) | (t > 1) | torch.isnan(t)).any()]
        flags += [~torch.isfinite(v).all() for v in tensors.values()]
        if singular:
            flags.append((t == 1).any())
        bad = torch.stack(flags).tolist()  # one host read-back
        if bad[0]:
            raise ValueError(
                f"t must lie in [0, 1], got values in [{float(t.min()):.6g}, {float(t.max()):.6g}]"
                + (" and NaN" if bool(torch.isnan(t).any()) else "")
            )
        for (name, _), flag in zip(tensors.items(), bad[1:]):
            if flag:
                raise ValueError(f"{name} contains non-finite values")
        if singular and bad[-1]:
            raise ValueError(
                f"t = 1 is singular for {self.scheduler!r}: sigma'_t is infinite there (the "
                "variance-preserving schedules); draw training times in [0, 1)"
            )

    def sample(
        self, x0: Tensor | None, x1: Tensor, t: Tensor | float, *, generator: torch.Generator | None = None
    ) -> PathSample:
        r"""Draw :math:`x_t` and the conditional velocity :math:`\dot x_t`.

        Args:
            x0: standard Gaussian noise of ``x1``'s shape, or ``None`` to draw it (``generator``).
            x1: data ``(*batch, d)``.
            t: per-sample times in [0, 1] (float, or shape a prefix of ``batch``).

        Raises:
            ValueError: naming the argument: shapes or dtypes that differ, non-finite values,
                times outside [0, 1], and ``t = 1`` for a scheduler whose :math:`\dot\sigma`
                is infinite there (VP, linear-VP).
        """
        tt = self._times(t, x1, "x1")
        if x0 is None:
            x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
        check_floating(x0, "x0")
        if x0.shape != x1.shape or x0.dtype != x1.dtype:
            raise ValueError(
                f"x0 must have x1's shape {tuple(x1.shape)} and dtype {x1.dtype}, got {tuple(x0.shape)} and {x0.dtype}"
            )
        self._check_values(tt, {"x0": x0, "x1": x1}, singular=self.scheduler.singular_at_one)
        s = self.scheduler(tt, validate=False)
        x_t = s.alpha * x1 + s.sigma * x0
        dx_t = s.d_alpha * x1 + s.d_sigma * x0
        t_out = t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=x1.dtype, device=x1.device)
        return PathSample(t=t_out, x0=x0, x1=x1, x_t=x_t, dx_t=dx_t)

    def convert(self, prediction: Tensor, x_t: Tensor, t: Tensor | float, *, from_type: str, to_type: str) -> Tensor:
        """A model output of ``from_type`` at ``(x_t, t)`` as ``to_type`` (see the module doc).

        Args:
            prediction: the model output, of ``x_t``'s shape.
            x_t: the points ``(*batch, d)``.
            t: the times (float, or shape a prefix of ``batch``; a 0-dim tensor for a solver).
            from_type, to_type: each one of ``"velocity"``, ``"x1"``, ``"x0"``, ``"score"``.

        Raises:
            ValueError: naming the argument for unknown types, shapes that differ, non-finite
                values, times outside [0, 1], and times where the conversion divides by zero.
        """
        _check_prediction_type(from_type, "from_type")
        _check_prediction_type(to_type, "to_type")
        tt = self._times(t, x_t, "x_t")
        check_floating(prediction, "prediction")
        if prediction.shape != x_t.shape:
            raise ValueError(f"prediction must have x_t's shape {tuple(x_t.shape)}, got {tuple(prediction.shape)}")
        self._check_values(tt, {"prediction": prediction, "x_t": x_t})
        if from_type == to_type:
            return prediction
        s = self.scheduler(tt, validate=False)
        if self.validate:
            self._check_conversion(s, from_type, to_type)
        x1_hat, x0_hat = self._endpoints(prediction, x_t, s, from_type, to_type)
        if to_type == "x0":
            return x0_hat
        if to_type == "score":
            return -x0_hat / s.sigma
        assert x1_hat is not None  # _endpoints computes it for "x1" and "velocity"
        if to_type == "x1":
            return x1_hat
        return s.d_alpha * x1_hat + s.d_sigma * x0_hat

    def _check_conversion(self, s, from_type: str, to_type: str) -> None:
        r"""A ``ValueError`` naming ``t`` where the conversion divides by zero or meets an infinite
        derivative (one host read-back): :math:`\sigma_t = 0` (from ``"x1"``, to ``"score"``),
        :math:`\alpha_t = 0` (from ``"x0"``/``"score"`` to ``"x1"``/``"velocity"``), and, for any
        conversion from or to ``"velocity"``, non-finite :math:`\dot\alpha_t, \dot\sigma_t` (the VP
        schedules at t = 1, where the velocity itself is infinite) or a vanishing
        :math:`\sigma_t\dot\alpha_t - \alpha_t\dot\sigma_t` (from ``"velocity"``)."""
        no = torch.zeros((), dtype=torch.bool, device=s.sigma.device)
        velocity = "velocity" in (from_type, to_type)
        flags = torch.stack(
            [
                (s.sigma == 0).any() if from_type == "x1" or to_type == "score" else no,
                (s.alpha == 0).any() if from_type in ("x0", "score") and to_type in ("x1", "velocity") else no,
                (~torch.isfinite(s.d_alpha) | ~torch.isfinite(s.d_sigma)).any() if velocity else no,
                ((s.sigma * s.d_alpha - s.alpha * s.d_sigma) == 0).any() if from_type == "velocity" else no,
            ]
        ).tolist()
        what = f"converting {from_type} to {to_type}"
        if flags[0]:
            raise ValueError(
                f"t: {what} divides by sigma_t, which is 0 at some of the times for {self.scheduler!r} (t = 1)"
            )
        if flags[1]:
            raise ValueError(
                f"t: {what} divides by alpha_t, which is 0 at some of the times for {self.scheduler!r} (t = 0)"
            )
        if flags[2]:
            raise ValueError(
                f"t: {what} needs the schedule's derivatives, which are infinite at some of the times "
                f"for {self.scheduler!r} (t = 1 for the variance-preserving schedules: the velocity is "
                "infinite there); evaluate at t < 1"
            )
        if flags[3]:
            raise ValueError(
                f"t: {what} divides by sigma_t alpha'_t - alpha_t sigma'_t, which is 0 at some of the "
                f"times for {self.scheduler!r}"
            )

    @staticmethod
    def _endpoints(prediction: Tensor, x: Tensor, s, from_type: str, to_type: str) -> tuple[Tensor | None, Tensor]:
        """``(x1_hat, x0_hat)`` implied by the prediction (only those ``to_type`` needs)."""
        if from_type == "velocity":
            denominator = s.sigma * s.d_alpha - s.alpha * s.d_sigma
            x1_hat = (s.sigma * prediction - s.d_sigma * x) / denominator
            x0_hat = (s.d_alpha * x - s.alpha * prediction) / denominator
            return x1_hat, x0_hat
        if from_type == "x1":
            return prediction, (x - s.alpha * prediction) / s.sigma
        x0_hat = prediction if from_type == "x0" else -s.sigma * prediction
        x1_hat = None if to_type in ("x0", "score") else (x - s.sigma * x0_hat) / s.alpha
        return x1_hat, x0_hat


def prediction_loss(
    path: AffinePath,
    prediction: Tensor,
    sample: PathSample,
    prediction_type: str = "velocity",
    weight: Tensor | None = None,
) -> Tensor:
    r"""The regression loss of a model of ``prediction_type`` on a path sample: the mean over
    the batch of :math:`\|f - \text{target}\|^2` summed over features, with the conditional
    target ``dx_t`` (velocity), ``x1``, ``x0`` or :math:`-x_0/\sigma_t` (score, the denoising
    score matching target). Each is minimised by the corresponding posterior expectation, so
    the minimisers of all four are the same field in different coordinates.

    Args:
        path: the :class:`AffinePath` that drew ``sample``.
        prediction: the model output at ``(sample.x_t, sample.t)``.
        sample: from ``path.sample``.
        prediction_type: ``"velocity"``, ``"x1"``, ``"x0"`` or ``"score"``.
        weight: optional per-sample weights of the batch shape (e.g. :math:`\sigma_t^2` for
            the score, which makes its loss the x0 loss).
    """
    _check_prediction_type(prediction_type, "prediction_type")
    if not isinstance(sample, PathSample):
        raise ValueError(f"sample must be a PathSample, got {type(sample).__name__}")
    check_floating(prediction, "prediction")
    if prediction.shape != sample.x_t.shape:
        raise ValueError(f"prediction must have x_t's shape {tuple(sample.x_t.shape)}, got {tuple(prediction.shape)}")
    if prediction_type == "velocity":
        if sample.dx_t is None:
            raise ValueError("sample has no velocity target dx_t (not a sample of an AffinePath)")
        target = sample.dx_t
    elif prediction_type == "x1":
        target = sample.x1
    elif prediction_type == "x0":
        target = sample.x0
    else:
        tt = path._times(sample.t, sample.x_t, "x_t")
        target = -sample.x0 / path.scheduler.sigma(tt, validate=False)
    error = (prediction - target).pow(2).sum(-1)
    if weight is not None:
        if tuple(weight.shape) != tuple(error.shape):
            raise ValueError(f"weight must have the batch shape {tuple(error.shape)}, got {tuple(weight.shape)}")
        error = error * weight
    return error.mean()


class ScheduleChange(torch.nn.Module):
    r"""A velocity model trained under scheduler ``A`` (``trained``) sampled under scheduler
    ``B`` (``target``), without retraining (the Flow Matching guide's scheduler change).

    Matching signal-to-noise ratios, :math:`t_r = \mathrm{snr}_A^{-1}(\mathrm{snr}_B(r))` and
    :math:`s_r = \sigma_B(r) / \sigma_A(t_r) = \alpha_B(r) / \alpha_A(t_r)`, the path of ``B``
    is :math:`\bar x_r = s_r x_{t_r}` and its marginal velocity

    .. math:: \bar u_r(x) = \frac{\dot s_r}{s_r} x + s_r \dot t_r\, u_{t_r}(x / s_r),

    with :math:`\dot t_r = \ell_B(r) / \ell_A(t_r)`, :math:`\ell = d \log \mathrm{snr} / dt =
    \dot\alpha/\alpha - \dot\sigma/\sigma`, and :math:`\dot s_r / s_r` from the :math:`\sigma`
    ratio where :math:`\sigma_B(r) \ge \alpha_B(r)`, the :math:`\alpha` ratio elsewhere (each is
    finite on its side). Both ends are limits of 0/0 or inf/inf forms: ``r`` is evaluated within
    ``[edge, 1 - edge]`` (default :math:`10^{-6}`, an :math:`O(10^{-6})` change of the field).

    The wrapped ``velocity(x, t)`` is called with ``x`` scaled and ``t`` mapped (same shapes);
    call this module as ``change(x, r)`` with ``r`` a float, a 0-dim tensor or per-sample times.
    """

    def __init__(self, velocity, trained: Scheduler, target: Scheduler, *, edge: float = 1e-6) -> None:
        super().__init__()
        if not callable(velocity):
            raise ValueError(f"velocity must be callable, got {type(velocity).__name__}")
        for name, sched in (("trained", trained), ("target", target)):
            if not isinstance(sched, Scheduler):
                raise ValueError(f"{name} must be a gm.Scheduler, got {type(sched).__name__}")
        if not 0 < edge < 0.5:
            raise ValueError(f"edge must be in (0, 0.5), got {edge!r}")
        self.velocity, self.trained, self.target, self.edge = velocity, trained, target, float(edge)

    def time_and_scale(self, r: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(t_r, s_r, dt_r/dr, (ds_r/dr) / s_r)`` at ``r`` (a floating-point tensor in [0, 1])."""
        r = r.clamp(self.edge, 1 - self.edge)
        b = self.target(r, validate=False)
        t = self.trained.inverse_snr(b.alpha / b.sigma, validate=False)
        a = self.trained(t, validate=False)
        speed = (b.d_alpha / b.alpha - b.d_sigma / b.sigma) / (a.d_alpha / a.alpha - a.d_sigma / a.sigma)
        by_sigma = b.d_sigma / b.sigma - a.d_sigma / a.sigma * speed
        by_alpha = b.d_alpha / b.alpha - a.d_alpha / a.alpha * speed
        use_sigma = b.sigma >= b.alpha
        scale = torch.where(use_sigma, b.sigma / a.sigma, b.alpha / a.alpha)
        return t, scale, speed, torch.where(use_sigma, by_sigma, by_alpha)

    def forward(self, x: Tensor, r: Tensor | float) -> Tensor:
        r = torch.as_tensor(r, dtype=x.dtype, device=x.device)
        if not bool(((r >= 0) & (r <= 1)).all()):
            raise ValueError(f"r must lie in [0, 1], got {r}")
        t, scale, speed, log_rate = self.time_and_scale(r)
        shape = r.shape + (1,) * (x.dim() - r.dim())
        t_x, scale_x, speed_x, rate_x = (v.reshape(shape) for v in (t, scale, speed, log_rate))
        return rate_x * x + scale_x * speed_x * self.velocity(x / scale_x, t)
