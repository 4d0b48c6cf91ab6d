r"""Schedulers :math:`\kappa_t` for mixture / geodesic probability paths.

A scheduler maps time :math:`t \in [0, 1]` to the interpolation coefficient
:math:`\kappa_t` (the fraction of the way from source to data) and its derivative
:math:`\dot\kappa_t`. Conditional generators of both geodesic flows and discrete mixture
paths only depend on the *rate*

.. math:: \lambda_t = \frac{\dot\kappa_t}{1 - \kappa_t},

so every scheduler exposes it in a closed form that is exact where the ratio is finite.
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
    "LinearScheduler",
    "PolynomialScheduler",
    "CosineScheduler",
    "ExponentialRateScheduler",
]


@dataclass
class SchedulerOutput:
    """Value of a scheduler at time ``t``.

    Attributes:
        t: the times, as given.
        kappa: :math:`\\kappa_t`.
        d_kappa: :math:`\\dot\\kappa_t = d\\kappa_t / dt`.
    """

    t: Tensor
    kappa: Tensor
    d_kappa: Tensor


def _as_tensor(t: Tensor | float, name: str = "t") -> Tensor:
    if isinstance(t, Tensor):
        if not torch.is_floating_point(t):
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        return t
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise ValueError(f"{name} must be a float or a floating-point tensor, got {type(t).__name__}")
    return torch.as_tensor(float(t), dtype=torch.get_default_dtype())


class Scheduler(ABC):
    r"""A differentiable, increasing schedule :math:`\kappa: [0, 1] \to [0, 1]` with
    :math:`\kappa_0 = 0`.

    The public methods check their argument (a float or floating-point tensor, finite, in
    [0, 1]: a scheduler never extrapolates) and raise ``ValueError`` naming it; callers that
    have checked their times already pass ``validate=False`` to skip the host read-back.
    Subclasses implement the unchecked ``_kappa``, ``_d_kappa`` and ``_inverse`` (and ``_rate``
    where a closed form is more accurate than :math:`\dot\kappa/(1-\kappa)`).
    """

    def __call__(self, t: Tensor | float, *, validate: bool = True) -> SchedulerOutput:
        t = self._times(t, validate)
        return SchedulerOutput(t=t, kappa=self._kappa(t), d_kappa=self._d_kappa(t))

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
                raise ValueError(f"kappa must lie in [{low:.6g}, {high:.6g}] (the range of {self!r} on [0, 1]), got "
                                 f"values in [{float(kappa.min()):.6g}, {float(kappa.max()):.6g}]"
                                 + (" and NaN" if bool(torch.isnan(kappa).any()) else ""))
            kappa = kappa.clamp(low, high)
        return self._inverse(kappa)

    @staticmethod
    def _times(t: Tensor | float, validate: bool) -> Tensor:
        t = _as_tensor(t)
        if validate and t.numel() and not bool(((t >= 0) & (t <= 1)).all()):
            if bool(torch.isnan(t).any()):
                raise ValueError(f"t contains {int(torch.isnan(t).sum())} NaN value(s); times must lie in [0, 1]")
            raise ValueError(f"t must lie in [0, 1], got values in [{float(t.min()):.6g}, {float(t.max()):.6g}] "
                             "(schedulers do not extrapolate)")
        return t

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


class LinearScheduler(Scheduler):
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


class PolynomialScheduler(Scheduler):
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


class CosineScheduler(Scheduler):
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
        return "CosineScheduler()"


class ExponentialRateScheduler(Scheduler):
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
