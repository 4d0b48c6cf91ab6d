r"""Classifier-free guidance of discrete posterior models (see :mod:`gm.guidance`):
:math:`\log p_w = (1 - w) \log p(\cdot \mid \varnothing) + w \log p(\cdot \mid y)`,
renormalised, inside the CTMC sampler."""

from __future__ import annotations

import torch
from torch import Tensor

from gm.guidance import GuidedModel, guided_log_probs

__all__ = ["GuidedPosterior"]


class GuidedPosterior(GuidedModel):
    """A ``posterior(x_t, t) -> log-probs`` for :class:`~dfm.CTMCSolver` from a conditional
    posterior model ``model(x_t, t, label) -> logits`` trained with condition dropout (it must
    accept :data:`gm.guidance.NULL_LABEL`). One batched model call per step (doubled batch).

    Args:
        model: the conditional posterior.
        label: the requested class: an int, or per-sequence labels of the first batch dim.
        w: the guidance weight, >= 0 (0: unconditional, 1: conditional).
    """

    def combine(self, conditional: Tensor, unconditional: Tensor) -> Tensor:
        return guided_log_probs(conditional, unconditional, self.w)

    def single(self, output: Tensor) -> Tensor:
        return torch.log_softmax(output, -1)
