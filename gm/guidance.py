r"""Classifier-free guidance, shared by flows and jump processes (Ho & Salimans 2022).

A conditional model trained with condition dropout (the label replaced by a null label with
probability ``p``, :func:`drop_labels`) is both :math:`p(\cdot \mid y)` and
:math:`p(\cdot \mid \varnothing)`. Guidance with weight :math:`w \ge 0` combines them:

- flows: :math:`u = (1 - w)\, u(x \mid \varnothing) + w\, u(x \mid y)` (on a manifold both are
  tangent at the same :math:`x`, so the combination is tangent);
- discrete posteriors: :math:`\log p_w = (1 - w) \log p(\cdot \mid \varnothing) + w \log p(\cdot
  \mid y)`, renormalised over the vocabulary.

:math:`w = 0` is the unconditional model, :math:`w = 1` the conditional one, :math:`w > 1`
sharpens towards the condition.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "GuidedModel",
    "NULL_LABEL",
    "label_rows",
    "drop_labels",
    "check_guidance_weight",
    "guided_velocity",
    "guided_log_probs",
]

#: The label of "no condition" (classifier-free guidance's null token).
NULL_LABEL = -1


def check_guidance_weight(w: float) -> float:
    """``w`` as a float, or ValueError unless it is a finite number >= 0."""
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
        raise ValueError(f"w must be a finite number >= 0, got {w!r}")
    return float(w)


def label_rows(label: Tensor | int | None, num_classes: int, null_label: bool, device: torch.device) -> Tensor:
    """The embedding rows of class labels: ``label`` itself, :data:`NULL_LABEL` mapped to row
    ``num_classes`` when the model has a null label. ValueError for a missing label, a
    non-integer dtype, or values outside ``[0, num_classes)`` (and -1 when allowed)."""
    if label is None:
        raise ValueError(f"label is required: the model is conditional on {num_classes} classes")
    label = torch.as_tensor(label, device=device)
    if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
        raise ValueError(f"label must hold integer class ids, got dtype {label.dtype}")
    low = NULL_LABEL if null_label else 0
    if label.numel() and (int(label.min()) < low or int(label.max()) >= num_classes):
        allowed = f"[0, {num_classes})" + (" or -1 (the null label)" if null_label else "")
        raise ValueError(f"label values must be in {allowed}, got [{int(label.min())}, {int(label.max())}]")
    return torch.where(label == NULL_LABEL, num_classes, label) if null_label else label


def drop_labels(labels: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """``labels`` with each entry replaced by :data:`NULL_LABEL` with probability ``p`` (drawn on
    ``generator``'s device, then moved), for condition-dropout training."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor, got {getattr(labels, 'dtype', type(labels).__name__)}")
    if p == 0:
        return labels
    draw_device = generator.device if generator is not None else labels.device
    drop = (torch.rand(labels.shape, generator=generator, device=draw_device) < p).to(labels.device)
    return torch.where(drop, torch.full_like(labels, NULL_LABEL), labels)


def guided_velocity(v_conditional: Tensor, v_unconditional: Tensor, w: float) -> Tensor:
    """:math:`(1 - w) u(x | \\varnothing) + w u(x | y)`."""
    w = check_guidance_weight(w)
    if v_conditional.shape != v_unconditional.shape:
        raise ValueError(
            f"v_conditional and v_unconditional must have the same shape, got "
            f"{tuple(v_conditional.shape)} and {tuple(v_unconditional.shape)}"
        )
    return torch.lerp(v_unconditional, v_conditional, w)


def guided_log_probs(logits_conditional: Tensor, logits_unconditional: Tensor, w: float) -> Tensor:
    """:math:`\\log\\mathrm{softmax}((1 - w) \\log p(\\cdot|\\varnothing) + w \\log p(\\cdot|y))` over the last dim."""
    w = check_guidance_weight(w)
    if logits_conditional.shape != logits_unconditional.shape:
        raise ValueError(
            f"logits_conditional and logits_unconditional must have the same shape, got "
            f"{tuple(logits_conditional.shape)} and {tuple(logits_unconditional.shape)}"
        )
    log_c = torch.log_softmax(logits_conditional.double(), -1)
    log_u = torch.log_softmax(logits_unconditional.double(), -1)
    return torch.log_softmax((1 - w) * log_u + w * log_c, -1).to(logits_conditional.dtype)


class GuidedModel(nn.Module):
    """The shared part of :class:`rfm.GuidedVelocity` and :class:`dfm.GuidedPosterior`: a
    conditional ``model(x, t, label=...)`` that accepts :data:`NULL_LABEL`, called once per
    evaluation on the doubled batch (conditional half, then null half); subclasses combine.

    Args:
        model: the conditional model.
        label: the requested class: an int, or per-sample labels of the first batch dim.
        w: the guidance weight, >= 0 (0: unconditional, 1: conditional).
    """

    def __init__(self, model: nn.Module, label: int | Tensor, w: float) -> None:
        super().__init__()
        if not callable(model):
            raise ValueError(f"model must be callable, got {type(model).__name__}")
        self.model, self.w = model, check_guidance_weight(w)
        self.label = torch.as_tensor(label)
        if self.label.is_floating_point() or self.label.is_complex() or self.label.dim() > 1:
            raise ValueError(f"label must be an integer or a 1-d integer tensor, got {self.label}")

    def combine(self, conditional: Tensor, unconditional: Tensor) -> Tensor:
        """The guided output from the two halves."""
        raise NotImplementedError

    def single(self, output: Tensor) -> Tensor:
        """The output at w = 0 or 1 (one half only)."""
        return output

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        batch = x.shape[0]
        label = self.label.to(x.device).expand(batch)
        null = torch.full_like(label, NULL_LABEL)
        if self.w in (0.0, 1.0):
            return self.single(self.model(x, t, label=label if self.w == 1.0 else null))
        t2 = torch.cat([t, t]) if isinstance(t, Tensor) and t.dim() > 0 else t
        both = self.model(torch.cat([x, x]), t2, label=torch.cat([label, null]))
        return self.combine(both[:batch], both[batch:])
