r"""The Riemannian flow matching loss."""

from __future__ import annotations

import torch
from torch import Tensor

from gm.checks import check_floating, check_same_dtype
from gm.path import PathSample
from manifolds.base import RiemannianManifold

__all__ = ["rfm_loss"]


def rfm_loss(
    manifold: RiemannianManifold,
    v_pred: Tensor,
    sample: PathSample,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Riemannian conditional flow matching loss
    :math:`\| v_\theta(x_t, t) - \dot x_t \|^2_{g_{x_t}}`, optionally weighted per sample.

    Args:
        manifold: the manifold whose metric measures the error.
        v_pred: predicted velocities at ``sample.x_t`` (tangent vectors, same shape).
        sample: the :class:`gm.PathSample` from a :class:`rfm.GeodesicPath`.
        weight: optional per-sample weights whose shape is a prefix of the batch shape (like the
            times: ``(B,)`` for points of batch shape ``(B, N)``), e.g. a function of ``t``.
        reduction: ``"mean"`` over samples, ``"sum"`` or ``"none"`` (per-sample losses).
    """
    if sample.dx_t is None:
        raise ValueError("sample.dx_t is None: rfm_loss needs a path with a velocity target")
    check_floating(v_pred, "v_pred")
    if v_pred.shape != sample.dx_t.shape:
        raise ValueError(f"v_pred shape {tuple(v_pred.shape)} must equal the target shape {tuple(sample.dx_t.shape)}")
    check_same_dtype(sample.dx_t, "sample.dx_t", v_pred, "v_pred")
    if v_pred.numel() == 0:
        raise ValueError(f"v_pred is an empty batch (shape {tuple(v_pred.shape)}): the loss of no samples is undefined")
    diff = v_pred - sample.dx_t
    per_sample = manifold.inner(sample.x_t, diff, diff)
    if weight is not None:
        weight = torch.as_tensor(weight, dtype=per_sample.dtype, device=per_sample.device)
        batch = tuple(per_sample.shape)
        if weight.dim() > len(batch) or any(w != 1 and w != b for w, b in zip(weight.shape, batch)):
            raise ValueError(
                f"weight of shape {tuple(weight.shape)} must be a prefix of the batch shape {batch} "
                "(one weight per sample, like the times)"
            )
        per_sample = per_sample * weight.reshape(weight.shape + (1,) * (len(batch) - weight.dim()))
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
