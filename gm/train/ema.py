"""Exponential moving average of a model's weights, the weights a training run validates, selects
and hands back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    ``shadow = d * shadow + (1 - d) * param`` with ``d = min(decay, (1 + n) / (10 + n))`` after
    ``n`` updates, so early averages are not dominated by the initial weights. One update is one
    fused ``torch._foreach_lerp_`` over all tensors (a handful of kernels, no host read-back),
    not a Python loop of two kernels per tensor.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
        self._pairs: tuple[nn.Module, list[Tensor], list[Tensor]] | None = None

    def _tensors(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
        """``(shadow tensors, the model's tensors)`` in one order; the model's ``state_dict``
        (views of its parameters and buffers, updated in place by the optimiser) is built once
        per model and shadow, not at every step."""
        if self._pairs is None or self._pairs[0] is not model:
            current = model.state_dict()
            keys = [k for k in self.shadow if k in current]
            self._pairs = (model, [self.shadow[k] for k in keys], [current[k].detach() for k in keys])
        return self._pairs[1], self._pairs[2]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        shadow, current = self._tensors(model)
        if shadow:
            # shadow + (1 - d) (v - shadow) = d shadow + (1 - d) v
            torch._foreach_lerp_(shadow, current, 1.0 - d)

    @contextlib.contextmanager
    def apply_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into ``model``."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(backup, strict=False)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
        self._pairs = None
