r"""The probability-path interface shared by continuous (rfm) and discrete (dfm) paths.

A conditional probability path :math:`p_t(\cdot \mid x_0, x_1)` interpolates from a source
sample :math:`x_0` at :math:`t=0` to a data sample :math:`x_1` at :math:`t=1`. Training
draws :math:`x_t` from it and regresses a model onto the path's conditional generator
(a velocity for flows, posterior/rates for jump processes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import Tensor

__all__ = ["PathSample", "ProbPath"]


@dataclass
class PathSample:
    """A draw from a conditional probability path.

    Attributes:
        t: times, shape ``batch_shape`` (one time per sample).
        x0: source samples.
        x1: data samples.
        x_t: samples of :math:`p_t(\\cdot \\mid x_0, x_1)`.
        dx_t: the conditional target: the velocity :math:`\\dot x_t` for flows (a tangent
            vector at ``x_t``); ``None`` for discrete paths, whose target is ``x1`` itself.
    """

    t: Tensor
    x0: Tensor
    x1: Tensor
    x_t: Tensor
    dx_t: Tensor | None = None


class ProbPath(ABC):
    """A conditional probability path between a source and the data."""

    @abstractmethod
    def sample(self, x0: Tensor | None, x1: Tensor, t: Tensor) -> PathSample:
        """Draw :math:`x_t \\sim p_t(\\cdot \\mid x_0, x_1)`.

        Args:
            x0: source samples, or ``None`` to draw them from the path's source.
            x1: data samples, with leading ``batch_shape``.
            t: times in ``[0, 1]``, shape ``batch_shape`` (or broadcastable to it).
        """
