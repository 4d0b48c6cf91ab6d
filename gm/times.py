r"""Training times: how the ``t`` of a flow-matching batch is drawn.

Every time's regression has the same minimiser (the marginal generator at that time), so the
time distribution only moves training effort between times. ``power`` a draws
:math:`t = u^{1/a}`, :math:`u \sim U[0, 1]`, with density :math:`a t^{a-1}` (a = 1: uniform;
a > 1: more effort near :math:`t = 1`, where a flow resolves the data's finest scales).
``stratified`` draws one time per stratum ``[k/n, (k+1)/n)`` of ``u`` (shuffled), the same
expectation with a lower-variance batch estimate.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["training_times"]


def training_times(
    batch: int,
    *,
    power: float = 1.0,
    stratified: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""``batch`` training times in [0, 1], density :math:`a t^{a-1}` for ``power`` a.

    Args:
        batch: number of times (>= 1).
        power: a > 0 (1: uniform).
        stratified: one draw of ``u`` per stratum ``[k/batch, (k+1)/batch)``, in random order.
        dtype: floating dtype (default: torch's default dtype).
        device: where the result lives. The draws are made on ``generator``'s device (CPU for a
            CPU generator, so runs are reproducible on any device) and then moved.
        generator: RNG of the draws.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    if not (isinstance(power, (int, float)) and math.isfinite(power) and power > 0):
        raise ValueError(f"power must be a finite number > 0, got {power!r}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    draw_device = generator.device if generator is not None else device
    if stratified:
        order = torch.randperm(batch, device=draw_device, generator=generator)
        u = (order + torch.rand(batch, dtype=dtype, device=draw_device, generator=generator)) / batch
    else:
        u = torch.rand(batch, dtype=dtype, device=draw_device, generator=generator)
    t = u if power == 1.0 else u ** (1.0 / power)
    return t.to(device) if device is not None else t
