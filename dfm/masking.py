r"""How a masked-diffusion batch is corrupted, and the ELBO weight of every masked token.

For the mask source the continuous-time ELBO of a group of :math:`n` positions (a whole
sequence, or one block of a block-diffusion model) is, with the masking rate
:math:`r = 1 - \kappa_t` drawn uniformly (any scheduler, by the change of variables
:math:`\kappa = \kappa_t`),

.. math::
    -\log p(x) \le \mathbb{E}_{r \sim U(0,1]}\Big[\frac{1}{r}
        \sum_{i \text{ masked}} -\log p_\theta(x^i \mid x_t)\Big],
    \qquad \text{each position masked independently with probability } r.

Conditioning on the number :math:`m` of masked positions gives the same bound in a second form:
:math:`m` is uniform on :math:`\{0, \dots, n\}` and :math:`\mathbb{E}[1/r \mid m] = (n+1)/m`, so

.. math::
    -\log p(x) \le \mathbb{E}_{m \sim U\{1..n\}}\Big[\frac{n}{m}
        \sum_{i \in S_m} -\log p_\theta(x^i \mid x_{\bar S_m})\Big],
    \qquad S_m \text{ a uniformly random set of } m \text{ positions}.

Both estimators are unbiased for the same bound; the second (``estimator="count"``) has lower
variance: no draw masks nothing, and the weight :math:`n/m \le n` never explodes as
:math:`1/r` does near :math:`r = 0`. For one position (:math:`n = 1`) it is deterministic:
the position is masked with weight 1, an autoregressive factor.

The uniform draws of a batch (one per group) can be coupled to lower the variance of the batch
mean further: ``"stratified"`` (one draw per stratum :math:`[k/N, (k+1)/N)`, shuffled),
``"antithetic"`` (pairs :math:`u, 1 - u`), ``"low_discrepancy"`` (one shifted lattice
:math:`(u_0 + k/N) \bmod 1`, Kingma et al. 2021), or ``"uniform"`` (independent). A
``mask_rate_range`` :math:`[a, b]` restricts training draws (a training objective that is no
longer the bound; the ELBO itself always uses the full range). With the time estimator the
rate is drawn in :math:`[a, b]` and positions are still masked independently (the clipped
schedules of Arriola et al., 2025: a whole group can still be masked). With the count
estimator the count is drawn in :math:`\lceil a n \rceil .. \lfloor b n \rfloor` (at least 1), so
with :math:`b < 1` a group is never fully masked, and for small groups the range is coarse
(:math:`n = 4`, [0.2, 0.8]: :math:`m \in \{1, 2, 3\}`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dfm.path import MixturePath

__all__ = ["ESTIMATORS", "TIME_SAMPLING", "MaskedBatch", "coupled_uniforms", "mask_batch"]

ESTIMATORS = ("time", "count")
TIME_SAMPLING = ("uniform", "stratified", "antithetic", "low_discrepancy")


@dataclass
class MaskedBatch:
    """A corrupted batch.

    Attributes:
        x_t: tokens ``(B, L)`` with the path's mask id at the masked positions.
        masked: boolean ``(B, L)``, True where masked (never at padding).
        weight: ``(B, L)`` ELBO weight of each position's cross-entropy (0 where not masked):
            :math:`1/r` (time estimator) or :math:`n/m` (count estimator) of its group.
        t: ``(B, G)`` time of each group, :math:`\\kappa_t = 1 - r` (count estimator:
            :math:`r = m/n`), for time-conditioned models.
        group_size: positions per group (``L`` for a whole-sequence model).
    """

    x_t: Tensor
    masked: Tensor
    weight: Tensor
    t: Tensor
    group_size: int


def coupled_uniforms(n: int, scheme: str, generator: torch.Generator | None = None, device=None) -> Tensor:
    """``n`` draws from U[0, 1) (float64), marginally uniform, coupled across the batch by
    ``scheme`` (see the module docstring). Drawn on the generator's device, then moved."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if scheme not in TIME_SAMPLING:
        raise ValueError(f"times must be one of {TIME_SAMPLING}, got {scheme!r}")
    where = generator.device if generator is not None else device
    if scheme == "uniform":
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=where)
    elif scheme == "stratified":
        u = (
            torch.randperm(n, generator=generator, device=where).double()
            + torch.rand(n, generator=generator, dtype=torch.float64, device=where)
        ) / n
    elif scheme == "antithetic":
        half = torch.rand((n + 1) // 2, generator=generator, dtype=torch.float64, device=where)
        u = torch.cat([half, 1 - half])[:n]
        u = u[torch.randperm(n, generator=generator, device=where)].clamp(max=1 - 2**-53)
    else:  # low_discrepancy
        u0 = torch.rand((), generator=generator, dtype=torch.float64, device=where)
        u = (u0 + torch.arange(n, dtype=torch.float64, device=where) / n) % 1.0
        u = u[torch.randperm(n, generator=generator, device=where)]
    return u.to(device) if device is not None else u


def _check_range(mask_rate_range: tuple[float, float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in mask_rate_range)
    except (TypeError, ValueError):
        raise ValueError(f"mask_rate_range must be a pair (low, high), got {mask_rate_range!r}") from None
    if not (0.0 <= low < high <= 1.0):
        raise ValueError(f"mask_rate_range must satisfy 0 <= low < high <= 1, got {mask_rate_range!r}")
    return low, high


def mask_batch(
    x1: Tensor,
    path: MixturePath,
    *,
    group_size: int | None = None,
    estimator: str = "count",
    times: str = "stratified",
    mask_rate_range: tuple[float, float] = (0.0, 1.0),
    padding_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> MaskedBatch:
    """Corrupt ``x1`` for masked-diffusion training or an ELBO estimate (module docstring).

    Args:
        x1: data tokens ``(B, L)``.
        path: a mask-source :class:`MixturePath` (its scheduler maps the rate back to ``t``).
        group_size: positions per group, dividing ``L`` (default ``L``: one group per sequence);
            every group draws its own masking rate (block diffusion: one per block).
        estimator: ``"count"`` (mask exactly ``m ~ U{1..n}`` positions, weight ``n/m``) or
            ``"time"`` (mask each position with probability ``r ~ U(0, 1]``, weight ``1/r``).
        times: how the batch's uniform draws are coupled: one of :data:`TIME_SAMPLING`.
        mask_rate_range: restrict training draws to this sub-range of [0, 1] (module docstring:
            for the count estimator, counts ``ceil(a n) .. floor(b n)``, at least 1).
        padding_mask: True at padding: never masked, never counted.
        generator: RNG of the draws (the draws are made on its device, then moved to ``x1``'s).

    No value is read back to the host (the draws and weights stay on the device), so a
    training step can call it without a synchronisation, and ``torch.compile`` traces it
    (with ``generator=None``: a ``torch.Generator`` cannot be traced).

    Raises:
        ValueError: naming the argument, for a wrong shape, option, range or path (a
            scheduler that does not reach the data, :math:`\\kappa_1 < 1`).
    """
    if not isinstance(path, MixturePath) or path.kind != "mask":
        raise ValueError(f"path must be a dfm.MixturePath with source='mask', got {path!r}")
    kappa_low, kappa_high = path.kappa_range()  # host floats, computed when the path was built
    if kappa_high < 1 - 1e-9:  # masking rates near 0 would map to no time at all
        raise ValueError(
            f"path must have a scheduler that reaches the data (kappa_1 = 1); {path.scheduler!r} ends at "
            f"kappa_1 = {kappa_high:.6g}"
        )
    if not isinstance(x1, Tensor) or x1.dim() != 2 or x1.dtype not in (torch.long, torch.int32):
        raise ValueError(
            f"x1 must be integer token ids of shape (B, L), got "
            f"{tuple(x1.shape) if isinstance(x1, Tensor) else type(x1).__name__}"
        )
    batch, length = x1.shape
    if batch == 0 or length == 0:
        raise ValueError(f"x1 must hold at least one sequence and one position, got shape {tuple(x1.shape)}")
    group = length if group_size is None else group_size
    if isinstance(group, bool) or not isinstance(group, int) or group < 1 or length % group:
        raise ValueError(f"group_size must be a positive integer dividing the length {length}, got {group_size!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    low, high = _check_range(mask_rate_range)
    if padding_mask is not None and (
        not isinstance(padding_mask, Tensor) or padding_mask.shape != x1.shape or padding_mask.dtype != torch.bool
    ):
        raise ValueError(f"padding_mask must be a bool tensor of shape {tuple(x1.shape)}")
    n_groups = length // group
    where = generator.device if generator is not None else x1.device
    u = coupled_uniforms(batch * n_groups, times, generator, device=where).view(batch, n_groups)
    counted = (
        torch.ones(x1.shape, dtype=torch.bool, device=where) if padding_mask is None else ~padding_mask.to(where)
    ).view(batch, n_groups, group)
    n = counted.sum(-1)  # counted positions per group
    if estimator == "time":
        rate = high - (high - low) * u  # in (low, high]: never 0
        masked = counted & (
            torch.rand(counted.shape, generator=generator, dtype=torch.float64, device=where) < rate[..., None]
        )
        weight = 1.0 / rate
    else:
        # counts m with low <= m/n <= high (at least one masked; at least the lowest)
        lowest = torch.clamp(torch.ceil(low * n - 1e-9), min=1).long()
        highest = torch.maximum(torch.floor(high * n + 1e-9).long(), lowest)
        m = lowest + torch.floor(u * (highest - lowest + 1)).long().clamp(max=highest - lowest)
        m = torch.where(n > 0, m, torch.zeros_like(m))
        keys = torch.rand(counted.shape, generator=generator, dtype=torch.float64, device=where)
        keys = keys.masked_fill(~counted, 2.0)  # padding sorts last: never among the m
        rank = keys.argsort(-1).argsort(-1)
        masked = counted & (rank < m[..., None])
        weight = n.double() / m.clamp(min=1).double()
        rate = m.double() / n.clamp(min=1).double()
    # kappa in [kappa_0, kappa_1] by construction: the scheduler's range check (a host
    # read-back) is not needed, the clamp to its ends is the one it would apply
    kappa = (1.0 - rate).clamp(0.0, 1.0).clamp(kappa_low, kappa_high)
    t = path.scheduler.inverse(kappa, validate=False).to(torch.get_default_dtype())
    masked = masked.view(batch, length).to(x1.device)
    weights = torch.where(
        masked.view(batch, n_groups, group).to(where),
        weight[..., None].expand_as(counted),
        torch.zeros((), dtype=torch.float64, device=where),
    ).view(batch, length)
    assert path.mask_id is not None  # a mask-source path (checked above)
    x_t = torch.where(masked, torch.full_like(x1, path.mask_id), x1)
    return MaskedBatch(x_t=x_t, masked=masked, weight=weights.to(x1.device), t=t.to(x1.device), group_size=group)
