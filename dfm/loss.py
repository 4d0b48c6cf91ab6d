r"""Losses and likelihood bounds for mixture-path discrete flow matching.

The model predicts posterior logits :math:`p_{1|t}(\cdot \mid x_t)` of shape ``(..., L, V)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from dfm.masking import MaskedBatch, mask_batch
from dfm.path import MixturePath
from gm.checks import (
    Checks,
    broadcast_time,
    check_callable,
    check_generator,
    check_positive_int,
    describe_time_range,
    inputs_checked,
    time_out_of_range,
    value_checks_on,
)

__all__ = [
    "masked_cross_entropy",
    "mixture_generalized_kl",
    "ELBOEstimate",
    "mask_elbo",
    "elbo_estimate",
    "masked_nll_sum",
    "MaskedDiffusionLoss",
    "WEIGHTINGS",
]

# Rates kappa'/(1 - kappa) are capped here so that t = 1 gives a large, finite weight.
_MAX_RATE = 1e4


def _check_path(path: object) -> MixturePath:
    if not isinstance(path, MixturePath):
        raise ValueError(f"path must be a dfm.MixturePath, got {type(path).__name__}")
    return path


def _check_token_tensor(x: object, name: str) -> None:
    if not isinstance(x, Tensor) or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(
            f"{name} must be an integer tensor of token ids, got "
            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}"
        )
    if x.dim() < 1:
        raise ValueError(f"{name} must have a sequence dimension, got a scalar")


def _check_logits(logits: Tensor, x1: Tensor, vocab_size: int) -> None:
    _check_token_tensor(x1, "x1")
    if not isinstance(logits, Tensor) or not torch.is_floating_point(logits):
        raise ValueError(
            f"logits must be a floating-point tensor, got {getattr(logits, 'dtype', type(logits).__name__)}"
        )
    if x1.numel() == 0:
        raise ValueError(f"x1 is an empty batch (shape {tuple(x1.shape)}): the loss of no tokens is undefined")
    if logits.shape[:-1] != x1.shape or logits.shape[-1] != vocab_size:
        raise ValueError(f"logits must have shape {tuple(x1.shape) + (vocab_size,)}, got {tuple(logits.shape)}")


def _check_loss_inputs(logits: Tensor, x1: Tensor, x_t: Tensor, path: MixturePath) -> None:
    """Types and shapes of a loss's inputs (no host read-back)."""
    _check_path(path)
    _check_logits(logits, x1, path.vocab_size)
    _check_token_tensor(x_t, "x_t")
    if x_t.shape != x1.shape:
        raise ValueError(f"x_t must have the shape of x1 {tuple(x1.shape)}, got {tuple(x_t.shape)}")


def _check_token_values(x1: Tensor, x_t: Tensor, path: MixturePath, t: Tensor | None = None) -> None:
    """Token ranges (and times) of a loss's inputs, in one host read-back."""
    checks = Checks()
    path.check_tokens(x1, "x1", allow_mask=False, checks=checks)
    path.check_tokens(x_t, "x_t", allow_mask=True, checks=checks)
    if t is not None:
        checks.add(time_out_of_range(t), lambda: describe_time_range(t))
    checks.run()


def _counted(x1: Tensor, padding_mask: Tensor | None) -> Tensor:
    if padding_mask is None:
        return torch.ones_like(x1, dtype=torch.bool)
    if padding_mask.shape != x1.shape or padding_mask.dtype != torch.bool:
        raise ValueError(f"padding_mask must be a bool tensor of shape {tuple(x1.shape)}")
    return ~padding_mask


def _token_log_probs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[tokens] without materialising the full log-softmax."""
    return logits.gather(-1, tokens[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def masked_cross_entropy(
    logits: Tensor,
    x1: Tensor,
    x_t: Tensor,
    path: MixturePath,
    padding_mask: Tensor | None = None,
    *,
    validate: bool = True,
) -> Tensor:
    """Mean cross-entropy :math:`-\\log p_{1|t}(x_1^i \\mid x_t)` over the positions that count:
    masked positions for the mask source (unmasked ones are given), every non-padding position
    otherwise. Returns 0 (with a gradient path) if no position counts.

    Raises:
        ValueError: naming the argument, for an empty batch, a wrong type, dtype or shape
            (``x_t`` must have ``x1``'s shape, ``padding_mask`` is boolean), and, with
            ``validate=True`` (the default), for token ids out of range: ``x1`` in ``[0, V)``,
            ``x_t`` in ``[0, path.input_vocab_size)`` (one host read-back; pass
            ``validate=False`` for tokens checked once, e.g. by ``MixturePath.sample``; skipped
            under ``torch.compile`` and :func:`gm.checks.inputs_checked`).
    """
    _check_loss_inputs(logits, x1, x_t, path)
    counted = _counted(x1, padding_mask)
    if value_checks_on(validate):  # not under torch.compile: a read-back would break the graph
        _check_token_values(x1, x_t, path)
    if path.kind == "mask":
        counted = counted & (x_t == path.mask_id)
    nll = -_token_log_probs(logits, x1)
    n = counted.sum()
    return torch.where(counted, nll, torch.zeros_like(nll)).sum() / n.clamp_min(1)


def mixture_generalized_kl(
    logits: Tensor,
    x1: Tensor,
    x_t: Tensor,
    t: Tensor | float,
    path: MixturePath,
    padding_mask: Tensor | None = None,
    *,
    validate: bool = True,
) -> Tensor:
    r"""Generalized KL (Bregman) loss between the conditional and the model's jump rates.

    The conditional rate of the mixture path is :math:`u(y) = \lambda_t \delta_{x_1}(y)` and the
    model's is :math:`v(y) = \lambda_t p_{1|t}(y \mid x_t)` for :math:`y \ne x_t`, with
    :math:`\lambda_t = \dot\kappa_t / (1 - \kappa_t)`. Summing
    :math:`u \log(u/v) - u + v` over :math:`y \ne x_t` per position gives

    .. math::
        \ell^i = -\lambda_t \Big[p_{1|t}(x_t^i) - \delta_{x_1^i}(x_t^i)
                 + \big(1 - \delta_{x_1^i}(x_t^i)\big) \log p_{1|t}(x_1^i)\Big],

    averaged over non-padding positions. For the mask source :math:`p_{1|t}(\text{mask}) = 0`, so
    masked positions contribute the rate-weighted cross-entropy of the ELBO.

    ``t`` is a float or per-sample times whose shape is a prefix of the batch shape
    ``x1.shape[:-1]``. Raises ``ValueError`` as :func:`masked_cross_entropy` does, and, with
    ``validate=True``, for times that are NaN or outside [0, 1] (in the same host read-back).
    """
    _check_loss_inputs(logits, x1, x_t, path)
    counted = _counted(x1, padding_mask)
    given = t
    t = broadcast_time(t, x1.shape[:-1], dtype=logits.dtype, device=logits.device)
    if value_checks_on(validate):  # the times as given (not expanded), so that a message counts them right
        given = t if not isinstance(given, Tensor) else given.to(dtype=t.dtype, device=t.device)
        _check_token_values(x1, x_t, path, given)
    rate = path.scheduler.rate(t, validate=False).clamp(max=_MAX_RATE)[..., None]
    log_z = torch.logsumexp(logits, dim=-1)
    log_p_x1 = logits.gather(-1, x1[..., None]).squeeze(-1) - log_z
    in_vocab = x_t < path.vocab_size
    safe_xt = torch.where(in_vocab, x_t, torch.zeros_like(x_t))
    p_xt = torch.where(
        in_vocab, torch.exp(logits.gather(-1, safe_xt[..., None]).squeeze(-1) - log_z), torch.zeros_like(log_z)
    )
    same = (x_t == x1).to(logits.dtype)
    per_token = -rate * (p_xt - same + (1 - same) * log_p_x1)
    n = counted.sum()
    return torch.where(counted, per_token, torch.zeros_like(per_token)).sum() / n.clamp_min(1)


@dataclass
class ELBOEstimate:
    """Monte Carlo estimate of the negative ELBO (an upper bound on :math:`-\\log p(x_1)`).

    Attributes:
        nats_per_token: bound per counted token, in nats.
        bits_per_token: the same in bits.
        bits_per_char: total bits divided by ``n_chars`` (equals ``bits_per_token`` for characters).
        stderr_bits_per_token: Monte Carlo standard error of ``bits_per_token``.
        stderr_bits_per_char: the same for ``bits_per_char``.
        n_tokens: counted tokens; n_chars: characters they encode; n_draws: draws of t per sequence.
    """

    nats_per_token: float
    bits_per_token: float
    bits_per_char: float
    stderr_bits_per_token: float
    stderr_bits_per_char: float
    n_tokens: int
    n_chars: int
    n_draws: int


def _check_mask_path(path: object, caller: str) -> None:
    path = _check_path(path)
    if path.kind != "mask":
        raise ValueError(f"{caller} needs a MixturePath with source='mask'")
    kappa_end = float(path.scheduler.kappa(torch.ones((), dtype=torch.float64)))
    if kappa_end < 1 - 1e-9:
        raise ValueError(
            f"{caller} needs a scheduler that reaches the data (kappa_1 = 1); {path.scheduler!r} ends at "
            f"kappa_1 = {kappa_end:.6g}"
        )


def masked_nll_sum(logits: Tensor, x1: Tensor, batch: MaskedBatch) -> Tensor:
    r"""Per sequence, :math:`\sum_i w_i \,[x_t^i = \text{mask}]\,(-\log p_\theta(x_1^i \mid \cdot))`
    with the ELBO weights of ``batch`` (float64, shape ``(B,)``): one draw of the negative ELBO."""
    nll = -_token_log_probs(logits.double(), x1)
    return (batch.weight.double() * torch.where(batch.masked, nll, torch.zeros_like(nll))).sum(-1)


def elbo_estimate(
    denoise: Callable[[MaskedBatch], Tensor],
    path: MixturePath,
    x1: Tensor,
    *,
    group_size: int | None = None,
    n_draws: int = 1,
    padding_mask: Tensor | None = None,
    n_chars: int | None = None,
    generator: torch.Generator | None = None,
    estimator: str = "count",
    times: str = "stratified",
) -> ELBOEstimate:
    """The negative ELBO of ``x1`` by Monte Carlo over :func:`dfm.masking.mask_batch` draws, for
    any model that maps a corrupted batch to logits: ``denoise(batch) -> (B, L, V)``. The
    whole-sequence and the block-diffusion bounds are both this with their ``group_size``.
    Arguments and errors as :func:`mask_elbo`."""
    _check_mask_path(path, "the ELBO")
    check_callable(denoise, "denoise")
    check_generator(generator)
    path.check_tokens(x1, "x1", allow_mask=False)
    if x1.dim() != 2:
        raise ValueError(f"x1 must have shape (B, L), got {tuple(x1.shape)}")
    n_draws = check_positive_int(n_draws, "n_draws")
    counted = _counted(x1, padding_mask)
    n_tokens = int(counted.sum())
    if n_tokens == 0:
        raise ValueError("x1 has no non-padding tokens")
    n_chars = n_tokens if n_chars is None else check_positive_int(n_chars, "n_chars")
    batch = x1.shape[0]
    values = torch.empty(batch, n_draws, dtype=torch.float64)
    for d in range(n_draws):
        corrupted = mask_batch(
            x1,
            path,
            group_size=group_size,
            estimator=estimator,
            times=times,
            padding_mask=padding_mask,
            generator=generator,
        )
        logits = denoise(corrupted)
        _check_logits(logits, x1, path.vocab_size)
        values[:, d] = masked_nll_sum(logits, x1, corrupted).cpu()
        bad = ~torch.isfinite(values[:, d])  # on the host already: no extra read-back
        if bool(bad.any()):
            raise ValueError(
                f"posterior returned logits that are not a distribution (NaN, +inf or a row of -inf) "
                f"for {int(bad.sum())} of {batch} sequences: the ELBO estimate would not be finite"
            )
    total_nats = float(values.mean(1).sum())
    if n_draws > 1:
        var = float((values.var(1, unbiased=True) / n_draws).sum())
    else:  # conservative: the spread across sequences also contains between-sequence variance
        var = float(values[:, 0].var(unbiased=True)) * batch if batch > 1 else float("nan")
    stderr_nats = math.sqrt(var)
    ln2 = math.log(2)
    return ELBOEstimate(
        nats_per_token=total_nats / n_tokens,
        bits_per_token=total_nats / n_tokens / ln2,
        bits_per_char=total_nats / n_chars / ln2,
        stderr_bits_per_token=stderr_nats / n_tokens / ln2,
        stderr_bits_per_char=stderr_nats / n_chars / ln2,
        n_tokens=n_tokens,
        n_chars=n_chars,
        n_draws=n_draws,
    )


@torch.no_grad()
def mask_elbo(
    posterior: Callable[[Tensor, Tensor], Tensor],
    path: MixturePath,
    x1: Tensor,
    *,
    n_draws: int = 1,
    padding_mask: Tensor | None = None,
    n_chars: int | None = None,
    generator: torch.Generator | None = None,
    estimator: str = "count",
    times: str = "stratified",
) -> ELBOEstimate:
    r"""The continuous-time ELBO of the mask source, estimated by Monte Carlo.

    .. math::
        -\log p(x_1) \le \mathbb{E}_t\Big[\frac{\dot\kappa_t}{1-\kappa_t}
            \sum_{i:\,x_t^i = \text{mask}} -\log p_\theta(x_1^i \mid x_t)\Big]
        = \mathbb{E}_{m \sim U\{1..L\}}\Big[\frac{L}{m}
            \sum_{i \in S_m} -\log p_\theta(x_1^i \mid x_{\bar S_m})\Big],

    the second form (``estimator="count"``, the default: exactly :math:`m` random positions
    masked) the first conditioned on the number of masked tokens, with lower variance;
    ``estimator="time"`` draws :math:`\kappa \sim U[0, 1)` and masks each position with
    probability :math:`1 - \kappa`, weight :math:`1/(1-\kappa)` (:mod:`dfm.masking`). The model
    gets :math:`t = \kappa^{-1}(1 - m/L)` (any scheduler). The draws are coupled across the
    batch by ``times`` (stratified by default).

    Args:
        posterior: ``posterior(x_t, t) -> logits (..., L, V)``; ``t`` has the batch shape.
        path: a mask-source :class:`MixturePath`.
        x1: data ``(B, L)``.
        n_draws: independent draws per sequence.
        padding_mask: True at padding (never masked, never counted).
        n_chars: characters encoded by the counted tokens, a positive integer (defaults to the
            token count).
        generator: RNG.
        estimator: ``"count"`` or ``"time"``.
        times: coupling of the batch's draws, one of :data:`dfm.masking.TIME_SAMPLING`.

    The standard errors are NaN when they cannot be estimated (one sequence and one draw).

    Raises:
        ValueError: naming the argument, for a wrong type, shape or option value, token ids out
            of range, and posterior logits that are not a distribution (NaN, +inf, or a row of
            -inf), which would make the estimate NaN; the logits are checked in the host
            read-back each draw already makes.
    """
    _check_mask_path(path, "mask_elbo")
    check_callable(posterior, "posterior")
    return elbo_estimate(
        lambda b: posterior(b.x_t, b.t[:, 0]),
        path,
        x1,
        n_draws=n_draws,
        padding_mask=padding_mask,
        n_chars=n_chars,
        generator=generator,
        estimator=estimator,
        times=times,
    )


WEIGHTINGS = ("elbo", "mean")


@dataclass
class MaskedDiffusionLoss:
    r"""The training loss of a masked-diffusion model: the negative ELBO per counted token of a
    :func:`dfm.masking.mask_batch` draw, with the variance-reduction options of that module.

    ``loss(model, x1, generator)`` calls ``model(x_t, t)`` (``t`` of shape ``(B,)``) for a
    whole-sequence model; with ``block_size`` (block diffusion, :class:`dfm.BlockDiffusion`),
    ``model(x_t, x1)``, the noisy and the clean sequence, and every block draws its own rate.

    Args:
        path: a mask-source :class:`MixturePath`.
        estimator: ``"count"`` (default) or ``"time"``.
        times: coupling of the batch's draws (:data:`dfm.masking.TIME_SAMPLING`).
        mask_rate_range: a clipped range of masking rates (training only; not the bound).
        weighting: ``"elbo"``: :math:`\sum_i w_i\,\mathrm{CE}_i` / counted tokens, the bound;
            ``"mean"``: each group's mean cross-entropy over its masked tokens (drops the
            weights; the same minimiser).
        block_size: positions per block, or ``None`` for one group per sequence.
        validate: check that ``x1`` holds ids in ``[0, V)`` (one host read-back per call; types
            and shapes are always checked). ``False`` for data checked once (e.g. when the
            dataset was built): the call then reads nothing back, and the model is called
            inside :func:`gm.checks.inputs_checked`, so that a :class:`dfm.TokenTransformer`
            skips its own value checks of the ``x_t`` and ``t`` built here (a training step
            with no host synchronisation; with ``validate=True`` the model checks them).

    The call reads nothing else back to the host and returns the loss as a 0-dim tensor; with
    ``validate=False`` (or under ``torch.compile``, where value checks are skipped) it compiles
    with ``fullgraph=True`` (``generator=None``: ``torch.compile`` cannot trace a
    ``torch.Generator``).
    """

    path: MixturePath
    estimator: str = "count"
    times: str = "stratified"
    mask_rate_range: tuple[float, float] = (0.0, 1.0)
    weighting: str = "elbo"
    block_size: int | None = None
    validate: bool = True

    def __post_init__(self) -> None:
        _check_mask_path(self.path, "MaskedDiffusionLoss")
        if not isinstance(self.validate, bool):
            raise ValueError(f"validate must be True or False, got {self.validate!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        # options are checked here, once, with a throw-away draw of one token per group
        probe = torch.zeros(1, self.block_size or 1, dtype=torch.long)
        mask_batch(
            probe,
            self.path,
            group_size=self.block_size,
            estimator=self.estimator,
            times=self.times,
            mask_rate_range=self.mask_rate_range,
            generator=torch.Generator().manual_seed(0),
        )

    def corrupt(
        self, x1: Tensor, generator: torch.Generator | None = None, padding_mask: Tensor | None = None
    ) -> MaskedBatch:
        """One training draw of masked positions and weights."""
        return mask_batch(
            x1,
            self.path,
            group_size=self.block_size,
            estimator=self.estimator,
            times=self.times,
            mask_rate_range=self.mask_rate_range,
            padding_mask=padding_mask,
            generator=generator,
        )

    def __call__(
        self,
        model: Callable[..., Tensor],
        x1: Tensor,
        generator: torch.Generator | None = None,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        batch = self.corrupt(x1, generator, padding_mask)
        if value_checks_on(self.validate):
            self.path.check_tokens(x1, "x1", allow_mask=False)  # one host read-back
        args = (batch.x_t, batch.t[:, 0]) if self.block_size is None else (batch.x_t, x1)
        if self.validate or torch.compiler.is_compiling():  # compiled models skip value checks anyway
            logits = model(*args)
        else:  # x1 was checked once, so the x_t and t made from it need no checks either
            with inputs_checked():
                logits = model(*args)
        _check_logits(logits, x1, self.path.vocab_size)
        nll = -_token_log_probs(logits, x1)
        nll = torch.where(batch.masked, nll, torch.zeros_like(nll))
        if self.weighting == "elbo":
            n = _counted(x1, padding_mask).sum()
            return (batch.weight.to(nll.dtype) * nll).sum() / n.clamp_min(1)
        groups = nll.shape[-1] // batch.group_size
        per_group = nll.view(len(x1), groups, -1).sum(-1)
        count = batch.masked.view(len(x1), groups, -1).sum(-1)
        has = count > 0
        # the groups with a masked token, without boolean indexing (a data-dependent shape)
        means = torch.where(has, per_group / count.clamp_min(1), torch.zeros_like(per_group))
        return means.sum() / has.sum().clamp_min(1)
