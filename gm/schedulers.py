r"""Schedulers: the one family of affine schedules :math:`(\alpha_t, \sigma_t)`.

An affine (Gaussian) path interpolates :math:`x_t = \alpha_t x_1 + \sigma_t x_0` from a source
sample :math:`x_0` (standard Gaussian noise) to a data sample :math:`x_1`, with
:math:`\alpha_0 \approx 0 \approx \sigma_1` and a signal-to-noise ratio
:math:`\mathrm{snr}_t = \alpha_t / \sigma_t` increasing in :math:`t`. Every scheduler exposes
:math:`\alpha, \sigma`, their time derivatives, the snr and its inverse.

The convex schedulers (:class:`ConvexScheduler`) are the case
:math:`\alpha_t = \kappa_t, \sigma_t = 1 - \kappa_t`: the only ones that make sense for
geodesic paths on manifolds (:math:`x_t = \exp_{x_0}(\kappa_t \log_{x_0} x_1)`) and discrete
mixture paths, whose conditional generators only depend on the *rate*

.. math:: \lambda_t = \frac{\dot\kappa_t}{1 - \kappa_t},

exposed in a closed form that is exact where the ratio is finite.

=========================== ====================================== =====================================
scheduler                   :math:`\alpha_t`                       :math:`\sigma_t`
=========================== ====================================== =====================================
``LinearScheduler``         :math:`t` (CondOT)                     :math:`1 - t`
``PolynomialScheduler(n)``  :math:`t^n`                            :math:`1 - t^n`
``CosineConvexScheduler``   :math:`1 - \cos(\pi t/2)`              :math:`\cos(\pi t/2)`
``ExponentialRateScheduler`` :math:`1 - e^{-rt}`                   :math:`e^{-rt}`
``CosineScheduler``         :math:`\sin(\pi t/2)`                  :math:`\cos(\pi t/2)`
``VPScheduler``             :math:`e^{-T(1-t)/2}`                  :math:`\sqrt{1 - \alpha_t^2}`
``LinearVPScheduler``       :math:`t`                              :math:`\sqrt{1 - t^2}`
``VEScheduler``             :math:`1`                              :math:`\sigma_{max}^{1-t}\sigma_{min}^t`
=========================== ====================================== =====================================

with :math:`T(s) = \beta_{min} s + (\beta_{max} - \beta_{min}) s^2 / 2` (Song et al.'s VP SDE
in the time of flow matching, data at :math:`t = 1`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "SchedulerOutput",
    "Scheduler",
    "ConvexScheduler",
    "LinearScheduler",
    "PolynomialScheduler",
    "CosineConvexScheduler",
    "ExponentialRateScheduler",
    "CosineScheduler",
    "VPScheduler",
    "LinearVPScheduler",
    "VEScheduler",
    "scheduler_by_name",
]


@dataclass
class SchedulerOutput:
    """Value of a scheduler at time ``t``.

    Attributes:
        t: the times, as given.
        alpha: :math:`\\alpha_t`, the weight of the data.
        sigma: :math:`\\sigma_t`, the weight of the noise.
        d_alpha: :math:`\\dot\\alpha_t`.
        d_sigma: :math:`\\dot\\sigma_t`.
    """

    t: Tensor
    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor

    @property
    def kappa(self) -> Tensor:
        """:math:`\\kappa_t = \\alpha_t` (convex schedulers)."""
        return self.alpha

    @property
    def d_kappa(self) -> Tensor:
        """:math:`\\dot\\kappa_t = \\dot\\alpha_t` (convex schedulers)."""
        return self.d_alpha


def _as_tensor(t: Tensor | float, name: str = "t") -> Tensor:
    if isinstance(t, Tensor):
        if not torch.is_floating_point(t):
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        return t
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise ValueError(f"{name} must be a float or a floating-point tensor, got {type(t).__name__}")
    return torch.as_tensor(float(t), dtype=torch.get_default_dtype())


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class Scheduler(ABC):
    r"""An affine schedule :math:`(\alpha_t, \sigma_t)` on :math:`t \in [0, 1]` with an
    increasing signal-to-noise ratio :math:`\alpha_t / \sigma_t`.

    The public methods check their argument (a float or floating-point tensor, finite, in
    [0, 1]: a scheduler never extrapolates) and raise ``ValueError`` naming it; callers that
    have checked their times already pass ``validate=False`` to skip the host read-back.
    Subclasses implement the unchecked ``_alpha``, ``_sigma``, ``_d_alpha``, ``_d_sigma`` and,
    where one exists, a closed-form ``_inverse_snr`` (the default inverts numerically, by
    vectorised bisection in float64).

    Attributes:
        source_std: the standard deviation of the source the path starts from
            (:math:`\sigma_0`, 1 except for :class:`VEScheduler`).
        singular_at_one: :math:`\dot\sigma_t \to -\infty` as :math:`t \to 1` (the variance-
            preserving schedules): conditional velocities are infinite at :math:`t = 1`.
    """

    source_std: float = 1.0
    singular_at_one: bool = False

    def __call__(self, t: Tensor | float, *, validate: bool = True) -> SchedulerOutput:
        t = self._times(t, validate)
        return SchedulerOutput(
            t=t, alpha=self._alpha(t), sigma=self._sigma(t), d_alpha=self._d_alpha(t), d_sigma=self._d_sigma(t)
        )

    def alpha(self, t: Tensor | float, *, validate: bool = True) -> Tensor:
        r""":math:`\alpha_t`."""
        return self._alpha(self._times(t, validate))

    def sigma(self, t: Tensor | float, *, validate: bool = True) -> Tensor:
        r""":math:`\sigma_t`."""
        return self._sigma(self._times(t, validate))

    def d_alpha(self, t: Tensor | float, *, validate: bool = True) -> Tensor:
        r""":math:`\dot\alpha_t`."""
        return self._d_alpha(self._times(t, validate))

    def d_sigma(self, t: Tensor | float, *, validate: bool = True) -> Tensor:
        r""":math:`\dot\sigma_t`."""
        return self._d_sigma(self._times(t, validate))

    def snr(self, t: Tensor | float, *, validate: bool = True) -> Tensor:
        r"""The signal-to-noise ratio :math:`\alpha_t / \sigma_t` (``inf`` where :math:`\sigma_t = 0`)."""
        t = self._times(t, validate)
        return self._alpha(t) / self._sigma(t)

    def inverse_snr(self, snr: Tensor | float, *, validate: bool = True) -> Tensor:
        r"""The time :math:`t \in [0, 1]` with :math:`\alpha_t / \sigma_t = \mathrm{snr}`.

        Raises:
            ValueError: for NaN or values outside the scheduler's range
                :math:`[\mathrm{snr}_0, \mathrm{snr}_1]` (with ``validate``).
        """
        snr = _as_tensor(snr, "snr")
        if validate and snr.numel():
            low, high = (float(self.snr(torch.tensor(v, dtype=torch.float64), validate=False)) for v in (0.0, 1.0))
            slack = 8 * torch.finfo(snr.dtype).eps
            inside = (snr >= low * (1 - slack)) & (snr <= high * (1 + slack))
            if not bool(inside.all()):
                raise ValueError(
                    f"snr must lie in [{low:.6g}, {high:.6g}] (the range of {self!r} on [0, 1]), got "
                    f"values in [{float(snr.min()):.6g}, {float(snr.max()):.6g}]"
                    + (" and NaN" if bool(torch.isnan(snr).any()) else "")
                )
            snr = snr.clamp(low, high)
        return self._inverse_snr(snr).clamp(0.0, 1.0)

    @staticmethod
    def _times(t: Tensor | float, validate: bool) -> Tensor:
        t = _as_tensor(t)
        if validate and t.numel() and not bool(((t >= 0) & (t <= 1)).all()):
            if bool(torch.isnan(t).any()):
                raise ValueError(f"t contains {int(torch.isnan(t).sum())} NaN value(s); times must lie in [0, 1]")
            raise ValueError(
                f"t must lie in [0, 1], got values in [{float(t.min()):.6g}, {float(t.max()):.6g}] "
                "(schedulers do not extrapolate)"
            )
        return t

    @abstractmethod
    def _alpha(self, t: Tensor) -> Tensor:
        """Unchecked alpha."""

    @abstractmethod
    def _sigma(self, t: Tensor) -> Tensor:
        """Unchecked sigma."""

    @abstractmethod
    def _d_alpha(self, t: Tensor) -> Tensor:
        """Unchecked d alpha / dt."""

    @abstractmethod
    def _d_sigma(self, t: Tensor) -> Tensor:
        """Unchecked d sigma / dt."""

    def _inverse_snr(self, snr: Tensor) -> Tensor:
        """Bisection on [0, 1] in float64 (the snr is increasing), all entries at once."""
        target = snr.to(torch.float64)
        low, high = torch.zeros_like(target), torch.ones_like(target)
        for _ in range(64):  # 2^-64: below float64 resolution on [0, 1]
            mid = 0.5 * (low + high)
            below = (self._alpha(mid) / self._sigma(mid)) < target
            low, high = torch.where(below, mid, low), torch.where(below, high, mid)
        return (0.5 * (low + high)).to(snr.dtype)


class ConvexScheduler(Scheduler):
    r"""A convex schedule: :math:`\alpha_t = \kappa_t`, :math:`\sigma_t = 1 - \kappa_t` for an
    increasing :math:`\kappa: [0, 1] \to [0, 1]` with :math:`\kappa_0 = 0`.

    The schedule of geodesic (rfm) and mixture (dfm) paths. Subclasses implement the unchecked
    ``_kappa``, ``_d_kappa`` and ``_inverse`` (and ``_rate`` where a closed form is more
    accurate than :math:`\dot\kappa/(1-\kappa)`).
    """

    def kappa(self, t: Tensor | float, *, validate: bool = True) -> Tensor:
        r""":math:`\kappa_t`."""
        return self._kappa(self._times(t, validate))

    def d_kappa(self, t: Tensor | float, *, validate: bool = True) -> Tensor:
        r""":math:`\dot\kappa_t`."""
        return self._d_kappa(self._times(t, validate))

    def rate(self, t: Tensor | float, *, validate: bool = True) -> Tensor:
        r""":math:`\dot\kappa_t / (1 - \kappa_t)`; ``inf`` where :math:`\kappa_t = 1`."""
        return self._rate(self._times(t, validate))

    def inverse(self, kappa: Tensor | float, *, validate: bool = True) -> Tensor:
        r"""The time :math:`t \in [0, 1]` with :math:`\kappa_t = \kappa`."""
        kappa = _as_tensor(kappa, "kappa")
        if validate and kappa.numel():
            low, high = (float(self._kappa(torch.tensor(v, dtype=torch.float64))) for v in (0.0, 1.0))
            slack = 4 * torch.finfo(kappa.dtype).eps  # kappa computed in kappa's dtype may round past the ends
            if not bool(((kappa >= low - slack) & (kappa <= high + slack)).all()):
                raise ValueError(
                    f"kappa must lie in [{low:.6g}, {high:.6g}] (the range of {self!r} on [0, 1]), got "
                    f"values in [{float(kappa.min()):.6g}, {float(kappa.max()):.6g}]"
                    + (" and NaN" if bool(torch.isnan(kappa).any()) else "")
                )
            kappa = kappa.clamp(low, high)
        return self._inverse(kappa)

    def _alpha(self, t: Tensor) -> Tensor:
        return self._kappa(t)

    def _sigma(self, t: Tensor) -> Tensor:
        return 1.0 - self._kappa(t)

    def _d_alpha(self, t: Tensor) -> Tensor:
        return self._d_kappa(t)

    def _d_sigma(self, t: Tensor) -> Tensor:
        return -self._d_kappa(t)

    def _inverse_snr(self, snr: Tensor) -> Tensor:
        # kappa / (1 - kappa) = snr  <=>  kappa = snr / (1 + snr); snr = inf -> kappa = 1.
        kappa = torch.where(torch.isinf(snr), torch.ones_like(snr), snr / (1.0 + snr))
        return self._inverse(kappa)

    @abstractmethod
    def _kappa(self, t: Tensor) -> Tensor:
        r"""Unchecked :math:`\kappa_t`."""

    @abstractmethod
    def _d_kappa(self, t: Tensor) -> Tensor:
        r"""Unchecked :math:`\dot\kappa_t`."""

    @abstractmethod
    def _inverse(self, kappa: Tensor) -> Tensor:
        """Unchecked inverse."""

    def _rate(self, t: Tensor) -> Tensor:
        return self._d_kappa(t) / (1.0 - self._kappa(t))


class LinearScheduler(ConvexScheduler):
    r""":math:`\kappa_t = t`, the optimal-transport / geodesic default."""

    def _kappa(self, t: Tensor) -> Tensor:
        return _as_tensor(t).clone()

    def _d_kappa(self, t: Tensor) -> Tensor:
        return torch.ones_like(_as_tensor(t))

    def _inverse(self, kappa: Tensor) -> Tensor:
        return _as_tensor(kappa).clone()

    def _rate(self, t: Tensor) -> Tensor:
        return 1.0 / (1.0 - _as_tensor(t))

    def __repr__(self) -> str:
        return "LinearScheduler()"


class PolynomialScheduler(ConvexScheduler):
    r""":math:`\kappa_t = t^n` for a real exponent :math:`n > 0`."""

    def __init__(self, n: float) -> None:
        if not (isinstance(n, (int, float)) and math.isfinite(n) and n > 0):
            raise ValueError(f"n must be a positive finite number, got {n!r}")
        self.n = float(n)

    def _kappa(self, t: Tensor) -> Tensor:
        return _as_tensor(t) ** self.n

    def _d_kappa(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        if self.n == 1.0:
            return torch.ones_like(t)
        return self.n * t ** (self.n - 1.0)

    def _inverse(self, kappa: Tensor) -> Tensor:
        return _as_tensor(kappa) ** (1.0 / self.n)

    def _rate(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        # 1 - t^n = -expm1(n log t) keeps precision for t close to 1.
        return self._d_kappa(t) / -torch.expm1(self.n * torch.log(t))

    def __repr__(self) -> str:
        return f"PolynomialScheduler(n={self.n:g})"


class CosineConvexScheduler(ConvexScheduler):
    r""":math:`\kappa_t = 1 - \cos(\pi t / 2)`: slow start, fast finish;
    :math:`\dot\kappa_t / (1-\kappa_t) = \frac{\pi}{2}\tan(\pi t/2)`."""

    def _kappa(self, t: Tensor) -> Tensor:
        # 1 - cos(a) = 2 sin^2(a/2) avoids cancellation for small t.
        return 2.0 * torch.sin(_as_tensor(t) * (math.pi / 4.0)) ** 2

    def _d_kappa(self, t: Tensor) -> Tensor:
        return (math.pi / 2.0) * torch.sin(_as_tensor(t) * (math.pi / 2.0))

    def _inverse(self, kappa: Tensor) -> Tensor:
        kappa = _as_tensor(kappa)
        return (4.0 / math.pi) * torch.asin(torch.sqrt((kappa / 2.0).clamp(0.0, 0.5)))

    def _rate(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        return (math.pi / 2.0) * torch.tan(t * (math.pi / 2.0))

    def __repr__(self) -> str:
        return "CosineConvexScheduler()"


class ExponentialRateScheduler(ConvexScheduler):
    r""":math:`\kappa_t = 1 - e^{-r t}`: a constant rate :math:`\dot\kappa_t/(1-\kappa_t) = r`.

    Used at sampling time for rotations in SE(3) protein models (the velocity towards the
    predicted endpoint is scaled by :math:`r` instead of :math:`1/(1-t)`). Note
    :math:`\kappa_1 = 1 - e^{-r} < 1`, so it is a sampling schedule, not an interpolant that
    reaches the data exactly.
    """

    def __init__(self, rate: float = 10.0) -> None:
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive finite number, got {rate!r}")
        self.r = float(rate)

    def _kappa(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.r * _as_tensor(t))

    def _d_kappa(self, t: Tensor) -> Tensor:
        return self.r * torch.exp(-self.r * _as_tensor(t))

    def _inverse(self, kappa: Tensor) -> Tensor:
        kappa = _as_tensor(kappa)
        return -torch.log1p(-kappa) / self.r

    def _rate(self, t: Tensor) -> Tensor:
        return torch.full_like(_as_tensor(t), self.r)

    def __repr__(self) -> str:
        return f"ExponentialRateScheduler(rate={self.r:g})"


class CosineScheduler(Scheduler):
    r""":math:`\alpha_t = \sin(\pi t / 2)`, :math:`\sigma_t = \cos(\pi t / 2)` (variance
    preserving, :math:`\alpha^2 + \sigma^2 = 1`); :math:`\mathrm{snr}_t = \tan(\pi t / 2)`."""

    def _alpha(self, t: Tensor) -> Tensor:
        return torch.sin(t * (math.pi / 2.0))

    def _sigma(self, t: Tensor) -> Tensor:
        # cos(pi t / 2) = sin(pi (1 - t) / 2): exact zero and full precision near t = 1.
        return torch.sin((1.0 - t) * (math.pi / 2.0))

    def _d_alpha(self, t: Tensor) -> Tensor:
        return (math.pi / 2.0) * self._sigma(t)

    def _d_sigma(self, t: Tensor) -> Tensor:
        return -(math.pi / 2.0) * self._alpha(t)

    def _inverse_snr(self, snr: Tensor) -> Tensor:
        return torch.atan(snr) * (2.0 / math.pi)

    def __repr__(self) -> str:
        return "CosineScheduler()"


class VPScheduler(Scheduler):
    r"""The variance-preserving schedule of Song et al. (2021) in flow-matching time:
    :math:`\alpha_t = e^{-T(1-t)/2}`, :math:`\sigma_t = \sqrt{1 - \alpha_t^2}` with
    :math:`T(s) = \beta_{min} s + (\beta_{max} - \beta_{min}) s^2 / 2`.

    :math:`\alpha_0 = e^{-T(1)/2}` (0.0066 for the defaults), not exactly 0: the source is the
    standard Gaussian up to that much of the data. :math:`\dot\sigma_t \to -\infty` at
    :math:`t = 1` (``singular_at_one``).
    """

    singular_at_one = True

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self.beta_min = _positive(beta_min, "beta_min")
        self.beta_max = _positive(beta_max, "beta_max")
        if self.beta_max <= self.beta_min:
            raise ValueError(f"beta_max must exceed beta_min, got beta_min={beta_min!r}, beta_max={beta_max!r}")

    def _integral(self, s: Tensor) -> Tensor:
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s * s

    def _alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self._integral(1.0 - t))

    def _sigma(self, t: Tensor) -> Tensor:
        # 1 - alpha^2 = -expm1(-T): full precision near t = 1, where it vanishes.
        return torch.sqrt(-torch.expm1(-self._integral(1.0 - t)))

    def _d_alpha(self, t: Tensor) -> Tensor:
        beta = self.beta_min + (self.beta_max - self.beta_min) * (1.0 - t)
        return 0.5 * beta * self._alpha(t)

    def _d_sigma(self, t: Tensor) -> Tensor:
        return -self._alpha(t) * self._d_alpha(t) / self._sigma(t)

    def _inverse_snr(self, snr: Tensor) -> Tensor:
        # alpha^2 = snr^2 / (1 + snr^2)  <=>  T(1 - t) = log(1 + snr^-2); solve the quadratic in s.
        integral = torch.log1p(snr.pow(-2))
        spread = self.beta_max - self.beta_min
        s = 2.0 * integral / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * spread * integral))
        return 1.0 - s

    def __repr__(self) -> str:
        return f"VPScheduler(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})"


class LinearVPScheduler(Scheduler):
    r""":math:`\alpha_t = t`, :math:`\sigma_t = \sqrt{1 - t^2}` (variance preserving);
    :math:`\dot\sigma_t \to -\infty` at :math:`t = 1` (``singular_at_one``)."""

    singular_at_one = True

    def _alpha(self, t: Tensor) -> Tensor:
        return t.clone()

    def _sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt((1.0 - t) * (1.0 + t))

    def _d_alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def _d_sigma(self, t: Tensor) -> Tensor:
        return -t / self._sigma(t)

    def _inverse_snr(self, snr: Tensor) -> Tensor:
        return torch.where(torch.isinf(snr), torch.ones_like(snr), snr / torch.sqrt(1.0 + snr * snr))

    def __repr__(self) -> str:
        return "LinearVPScheduler()"


class VEScheduler(Scheduler):
    r"""The variance-exploding schedule: :math:`\alpha_t = 1`,
    :math:`\sigma_t = \sigma_{max}^{1-t} \sigma_{min}^{t}` (geometric), Song et al.'s VE SDE in
    flow-matching time. The source is :math:`N(0, \sigma_{max}^2 I)` (``source_std``),
    accurate when :math:`\sigma_{max}` dwarfs the data's scale; the path ends at
    :math:`\sigma_{min}`, not 0. :math:`\mathrm{snr}_t = 1 / \sigma_t`.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        self.sigma_min = _positive(sigma_min, "sigma_min")
        self.sigma_max = _positive(sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
        self.source_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_min / self.sigma_max)

    def _alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def _sigma(self, t: Tensor) -> Tensor:
        return self.sigma_max * torch.exp(self._log_ratio * t)

    def _d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _d_sigma(self, t: Tensor) -> Tensor:
        return self._log_ratio * self._sigma(t)

    def _inverse_snr(self, snr: Tensor) -> Tensor:
        return torch.log(snr * self.sigma_max) / -self._log_ratio

    def __repr__(self) -> str:
        return f"VEScheduler(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"


_BY_NAME = {
    "condot": LinearScheduler,
    "linear": LinearScheduler,
    "polynomial": PolynomialScheduler,
    "cosine": CosineScheduler,
    "cosine_convex": CosineConvexScheduler,
    "vp": VPScheduler,
    "linear_vp": LinearVPScheduler,
    "ve": VEScheduler,
    "exponential_rate": ExponentialRateScheduler,
}


def scheduler_by_name(name: str, **options) -> Scheduler:
    """A scheduler from its name: ``"condot"`` (= ``"linear"``), ``"polynomial"`` (``n=``),
    ``"cosine"``, ``"cosine_convex"``, ``"vp"``, ``"linear_vp"``, ``"ve"``, ``"exponential_rate"``;
    ``options`` go to its constructor.

    Raises:
        ValueError: for an unknown name, naming the known ones.
    """
    if name not in _BY_NAME:
        raise ValueError(f"scheduler name must be one of {sorted(_BY_NAME)}, got {name!r}")
    return _BY_NAME[name](**options)
