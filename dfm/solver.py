r"""CTMC sampling for mixture-path discrete flow matching, on :func:`gm.simulate`.

Given posterior logits :math:`p_{1|t}(\cdot \mid x_t)` the marginal generator of a mixture
path jumps from :math:`x` to :math:`y \ne x` at rate
:math:`\lambda_t\, p_{1|t}(y \mid x_t)`, :math:`\lambda_t = \dot\kappa_t / (1 - \kappa_t)`.
An optional corrector adds the path's *noising* generator
:math:`\tfrac{\dot\kappa_t}{\kappa_t}\,(p_0(y) - \delta_x(y))` with weight :math:`\beta_t` and
scales the forward rates by :math:`1 + \beta_t`; since the noising generator runs the marginal
path backwards, the marginals are unchanged while errors get re-noised and corrected.

Only the tokens that jump are touched: their logit rows are gathered and sampled (Gumbel-max),
so nothing of size batch x length x vocabulary is allocated beyond the model's own logits and
a per-row normaliser (``logsumexp``) for general sources.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from dfm.path import MixturePath
from gm.checks import check_callable, check_generator
from gm.process import Process
from gm.simulate import make_time_grid, simulate

__all__ = ["CTMCSolver", "MixtureJumpProcess", "UNMASKING", "filter_logits"]

Posterior = Callable[[Tensor, Tensor], Tensor]
_LAST_STEP_TOL = 1e-6


def _gumbel_argmax(logits: Tensor, exclude: Tensor | None, dtype: torch.dtype, generator: torch.Generator | None) -> Tensor:
    """One categorical draw per row of ``logits`` (rows, V), optionally never ``exclude``."""
    z = logits.to(dtype)
    if exclude is not None:
        z = z.scatter(-1, exclude[:, None], float("-inf"))
    u = torch.rand(z.shape, dtype=dtype, device=z.device, generator=generator)
    tiny = torch.finfo(dtype).tiny
    neg_log_u = (-torch.log(u.clamp_min(tiny))).clamp_min(tiny)
    return (z - torch.log(neg_log_u)).argmax(-1)


def _check_logit_rows(rows: Tensor) -> None:
    """A ``ValueError`` unless every row of posterior logits defines a distribution: no NaN, no
    +inf, not all -inf (one fused reduction: the row maximum propagates NaN)."""
    if rows.numel() and not bool(torch.isfinite(rows.amax(-1)).all()):
        peak = rows.amax(-1)
        raise ValueError(f"posterior returned logits that are not a distribution: {int(torch.isnan(peak).sum())} row(s) "
                         f"with NaN, {int((peak == float('inf')).sum())} with +inf, "
                         f"{int((peak == float('-inf')).sum())} all -inf (of {peak.numel()} rows sampled)")


def _top_count(scores: Tensor, candidates: Tensor, counts: Tensor) -> Tensor:
    """Per row (last dim), the ``counts`` candidate positions of highest ``scores``, as a boolean
    tensor of ``candidates``' shape (one stable argsort; vectorised over rows)."""
    scores = scores.masked_fill(~candidates, float("-inf"))
    order = scores.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device)
                                            .expand_as(order).contiguous())
    return candidates & (rank < counts[..., None])


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    r"""Top-k and nucleus (top-p) filtering of logits rows ``(..., V)``: tokens outside the ``top_k``
    largest logits (ties at the k-th value are kept) and outside the smallest set of most
    probable tokens whose probability reaches ``top_p`` get :math:`-\infty`. ``None`` (or
    ``top_k >= V``, ``top_p = 1``) leaves the rows unchanged. Arguments are checked by the
    callers (:func:`check_filtering`)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        ordered, index = logits.sort(dim=-1, descending=True)
        probs = torch.softmax(ordered.double(), dim=-1)
        before = probs.cumsum(-1) - probs  # mass of the more probable tokens
        ordered = ordered.masked_fill(before >= top_p, float("-inf"))  # the most probable always stays
        logits = torch.empty_like(logits).scatter_(-1, index, ordered)
    return logits


def check_temperature(temperature: object) -> None:
    """``ValueError`` naming the argument unless ``temperature`` is a finite number > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")


def check_filtering(top_k: object, top_p: object) -> None:
    """``ValueError`` naming the argument unless ``top_k`` is ``None`` or an integer >= 1 and
    ``top_p`` is ``None`` or a number in (0, 1]."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (or None), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not (0.0 < top_p <= 1.0)):
        raise ValueError(f"top_p must be a number in (0, 1] (or None), got {top_p!r}")


UNMASKING = ("random", "random_order", "confidence")


class MixtureJumpProcess(Process):
    r"""The CTMC of a :class:`MixturePath` driven by posterior logits (see module docstring).

    Args:
        path: the mixture path.
        corrector: strength :math:`\beta_t` of the re-noising corrector (a float or a function of t).
        dtype_categorical: float32 or float64 for the categorical draws.
        padding_mask: True at positions that never change.
        generator: RNG for the draws.
        temperature: the posterior's logits are divided by it before every draw (below 1:
            sharper, fewer rare tokens; 1 is the exact CTMC).
        unmasking: for the mask source, which masked positions are revealed in a step:
            ``"random"`` (each with the CTMC's probability, the exact sampler),
            ``"random_order"`` (per sequence exactly the scheduled count
            :math:`k = M - \mathrm{round}(M (1 - p))` of its :math:`M` masked positions, chosen
            uniformly: with one reveal per step this is any-order autoregressive sampling) or
            ``"confidence"`` (MaskGIT / LLaDA low-confidence remasking, purity sampling of
            Campbell et al. 2024: the same scheduled count, at the positions whose posterior is
            most confident; biased towards high-likelihood sequences).
        top_k, top_p: top-k / nucleus filtering of every drawn row (:func:`filter_logits`),
            after the temperature.

    The draws are float64 by default: float32 Gumbel noise truncates its tail, which lowers
    the effective temperature of rare tokens (and flatters generative perplexity).
    """

    def __init__(self, path: MixturePath, corrector: float | Callable[[float], float] = 0.0,
                 dtype_categorical: torch.dtype = torch.float64, padding_mask: Tensor | None = None,
                 generator: torch.Generator | None = None, *, temperature: float = 1.0,
                 unmasking: str = "random", top_k: int | None = None, top_p: float | None = None) -> None:
        if not isinstance(path, MixturePath):
            raise ValueError(f"path must be a dfm.MixturePath, got {type(path).__name__}")
        if dtype_categorical not in (torch.float32, torch.float64):
            raise ValueError(f"dtype_categorical must be torch.float32 or torch.float64, got {dtype_categorical}")
        if not callable(corrector) and (isinstance(corrector, bool) or not isinstance(corrector, (int, float))
                                        or not (math.isfinite(corrector) and corrector >= 0)):
            raise ValueError(f"corrector must be a finite nonnegative float or a function of t, got {corrector!r}")
        check_generator(generator)
        check_temperature(temperature)
        if unmasking not in UNMASKING:
            raise ValueError(f"unmasking must be one of {UNMASKING}, got {unmasking!r}")
        if unmasking != "random" and path.kind != "mask":
            raise ValueError(f"unmasking={unmasking!r} needs the mask source, the path's source is {path.kind!r}")
        check_filtering(top_k, top_p)
        self.top_k, self.top_p = top_k, top_p
        self.temperature = float(temperature)
        self.unmasking = unmasking
        self.path = path
        self.corrector = corrector
        self.dtype = dtype_categorical
        self.padding_mask = padding_mask
        self.generator = generator

    def _beta(self, t: float) -> float:
        if not callable(self.corrector):
            return float(self.corrector)
        value = self.corrector(t)
        try:
            beta = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"corrector strength must be a nonnegative number, got {value!r} at t={t}") from None
        if not (beta >= 0 and math.isfinite(beta)):  # also rejects NaN
            raise ValueError(f"corrector strength must be a finite nonnegative number, got {beta} at t={t}")
        return beta

    def step(self, x: Tensor, t: Tensor, h: Tensor, model_output: Tensor) -> Tensor:
        path, logits = self.path, model_output
        if not isinstance(logits, Tensor) or not torch.is_floating_point(logits):
            raise ValueError("posterior must return floating-point logits, got "
                             + (f"dtype {logits.dtype}" if isinstance(logits, Tensor) else type(logits).__name__))
        if logits.shape[:-1] != x.shape or logits.shape[-1] != path.vocab_size:
            raise ValueError(f"posterior must return logits of shape {tuple(x.shape) + (path.vocab_size,)}, "
                             f"got {tuple(logits.shape)}")
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.top_k is not None or self.top_p is not None:
            logits = filter_logits(logits, self.top_k, self.top_p)
        t_val, h_val = float(t), float(h)
        last = t_val + h_val >= 1.0 - _LAST_STEP_TOL
        beta = 0.0 if last else self._beta(t_val)
        sched = path.scheduler
        t64 = torch.tensor(t_val, dtype=torch.float64)
        kappa, d_kappa = float(sched.kappa(t64)), float(sched.d_kappa(t64))
        # re-noising probability over the step: h * beta * kappa'/kappa (0 when the corrector is off)
        p_noise = min(1.0, h_val * beta * d_kappa / kappa) if beta > 0 and kappa > 0 else (1.0 if beta > 0 else 0.0)
        active = torch.ones_like(x, dtype=torch.bool) if self.padding_mask is None else ~self.padding_mask
        u = torch.rand(x.shape, device=x.device, generator=self.generator, dtype=torch.float64)
        new = x.clone()
        if path.kind == "mask":
            masked = (x == path.mask_id) & active
            if last:
                p_unmask = 1.0
            else:
                kappa_next = float(sched.kappa(torch.tensor(t_val + h_val, dtype=torch.float64)))
                p_unmask = min(1.0, (1 + beta) * (kappa_next - kappa) / (1 - kappa))
            if self.unmasking == "random" or p_unmask >= 1.0:
                unmask = masked & (u < p_unmask)
            else:  # the scheduled count per sequence, at random or at the most confident positions
                n_masked = masked.sum(-1).to(torch.float64)
                counts = (n_masked - torch.round(n_masked * (1.0 - p_unmask))).long()
                # confidence: log of the top probability of the (tempered, filtered) posterior
                scores = (-u if self.unmasking == "random_order"
                          else (logits.amax(-1) - torch.logsumexp(logits, dim=-1)).to(torch.float64))
                unmask = _top_count(scores, masked, counts)
            idx = unmask.nonzero(as_tuple=True)
            if idx[0].numel():
                rows = logits[idx]
                _check_logit_rows(rows)
                new[idx] = _gumbel_argmax(rows, None, self.dtype, self.generator)
            if p_noise > 0:
                new[~masked & active & (u < p_noise)] = path.mask_id
            return new

        # general sources: Euler jump out of x_t with forward and (optional) noising rates
        x_in = x.clamp_max(path.vocab_size - 1)
        log_z = torch.logsumexp(logits, dim=-1)
        if not bool(torch.isfinite(log_z).all()):
            _check_logit_rows(logits[~torch.isfinite(log_z)])
        p_stay = torch.exp(logits.gather(-1, x_in[..., None]).squeeze(-1).to(torch.float64) - log_z.to(torch.float64))
        if last:
            # exact final draw from p_{1|t}: leave x_t with probability 1 - p(x_t)
            fwd = 1.0 - p_stay
        else:
            lam = d_kappa / (1 - kappa)
            fwd = h_val * (1 + beta) * lam * (1.0 - p_stay)
        p0 = path.source_distribution(device=x.device, dtype=torch.float64)
        if p_noise > 0:
            p0_x = p0.expand(x.shape + (path.vocab_size,)).gather(-1, x_in[..., None]).squeeze(-1) if p0.dim() == 2 else p0[x_in]
            noise = p_noise * (1.0 - p0_x)
        else:
            noise = torch.zeros_like(fwd)
        total = fwd + noise
        jump = active & (u < total.clamp(max=1.0))
        idx = jump.nonzero(as_tuple=True)
        if idx[0].numel():
            current = x_in[idx]
            forward_share = (fwd[idx] / total[idx]).clamp(0, 1)
            choose_fwd = torch.rand(current.shape, dtype=torch.float64, device=x.device, generator=self.generator) < forward_share
            draws = _gumbel_argmax(logits[idx], current, self.dtype, self.generator)
            if p_noise > 0:
                rows = p0.expand(len(current), -1) if p0.dim() == 1 else p0[idx[-1]]
                noise_draws = _gumbel_argmax(torch.log(rows), current, self.dtype, self.generator)
                draws = torch.where(choose_fwd, draws, noise_draws)
            new[idx] = draws
        return new


@dataclass
class CTMCSolver:
    """Sample a mixture-path discrete flow from a posterior model.

    Args:
        path: the :class:`MixturePath` the model was trained on.
        posterior: ``posterior(x_t, t) -> logits (..., L, V)`` over the data vocabulary
            (``t`` is a 0-dim tensor).
    """

    path: MixturePath
    posterior: Posterior

    def __post_init__(self) -> None:
        if not isinstance(self.path, MixturePath):
            raise ValueError(f"path must be a dfm.MixturePath, got {type(self.path).__name__}")
        check_callable(self.posterior, "posterior")

    def sample(
        self,
        x0: Tensor,
        time_grid: Sequence[float] | Tensor = (0.0, 1.0),
        steps: int | None = None,
        corrector: float | Callable[[float], float] = 0.0,
        return_intermediates: bool = False,
        progress: bool = False,
        dtype_categorical: torch.dtype = torch.float64,
        padding_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        unmasking: str = "random",
        *,
        fixed: Tensor | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        block_size: int | None = None,
    ) -> Tensor:
        """Simulate the CTMC from ``x0`` at ``time_grid[0]`` to ``time_grid[-1]``.

        Args:
            x0: tokens ``(..., L)`` (mask ids allowed for the mask source).
            time_grid: increasing times in [0, 1]; a grid ending at 1 leaves no mask tokens.
            steps: with a two-point grid, the number of equal steps (default 100).
            corrector: nonnegative strength :math:`\beta_t` of the re-noising corrector, a float
                or a function of ``t`` (not applied on the final step).
            return_intermediates: stack the states at all grid times on dim 0.
            progress: tqdm progress bar.
            dtype_categorical: float64 (default) or float32 for the categorical draws.
            padding_mask: True at padding positions, which never change.
            generator: RNG for reproducible sampling.
            temperature: divide the posterior's logits by it before each draw (1: exact).
            unmasking: ``"random"`` (exact), ``"random_order"`` or ``"confidence"`` (scheduled
                counts, mask source only): see :class:`MixtureJumpProcess`.
            fixed: boolean of ``x0``'s shape, True at given positions (a prompt, the context of
                an infilling template): they keep ``x0``'s tokens, which must be data tokens,
                are seen by the model and never change, also under the corrector. For the mask
                source, with the exact posterior the free tokens follow the conditional
                distribution given the fixed ones.
            top_k, top_p: top-k / nucleus filtering of the drawn rows (:func:`filter_logits`).
            block_size: semi-autoregressive sampling (mask source): the positions are cut into
                consecutive blocks of this size (the last may be shorter) generated left to right,
                each by a full run over ``time_grid`` / ``steps`` while the later blocks stay
                masked (LLaDA). The posterior gets the current block's clock as ``t``: meant for
                time-agnostic posteriors (with the mask source the exact posterior does not
                depend on ``t``). Not combined with ``return_intermediates``.

        Raises:
            ValueError: naming the argument, for tokens that are not integer ids in range, a
                padding or fixed mask that is not boolean of ``x0``'s shape, mask tokens at fixed
                positions, a bad ``time_grid``, ``steps``, ``corrector`` (negative, NaN, inf, or a
                function returning no such number), ``dtype_categorical``, ``generator``,
                ``temperature``, ``unmasking``, ``top_k`` (an integer >= 1), ``top_p`` (in
                (0, 1]) or ``block_size``, and posterior outputs that are not floating-point logits
                of shape ``(*x0.shape, V)`` or not a distribution.
        """
        self.path.check_tokens(x0, "x0", allow_mask=True)
        for name, given in (("padding_mask", padding_mask), ("fixed", fixed)):
            if given is not None and (not isinstance(given, Tensor) or given.shape != x0.shape
                                      or given.dtype != torch.bool or given.device != x0.device):
                raise ValueError(f"{name} must be a bool tensor of shape {tuple(x0.shape)} on x0's device ({x0.device})")
        frozen = padding_mask
        if fixed is not None:
            if self.path.kind == "mask" and bool((fixed & (x0 == self.path.mask_id)).any()):
                raise ValueError("x0 must hold data tokens at the fixed positions, found mask tokens there")
            frozen = fixed if frozen is None else frozen | fixed
        grid = make_time_grid(time_grid, steps, default_steps=100, dtype=torch.float64)
        if not bool(grid[-1] > grid[0]):
            raise ValueError("time_grid must increase: the CTMC runs forward from the source to the data")
        options = dict(temperature=temperature, unmasking=unmasking, top_k=top_k, top_p=top_p)
        model = lambda x, t: self.posterior(x, t.to(torch.get_default_dtype()))  # noqa: E731
        if block_size is None:
            process = MixtureJumpProcess(self.path, corrector, dtype_categorical, frozen, generator, **options)
            return simulate(process, model, x0.long(), grid, return_intermediates=return_intermediates,
                            progress=progress)
        length = x0.shape[-1]
        if isinstance(block_size, bool) or not isinstance(block_size, int) or not 1 <= block_size <= length:
            raise ValueError(f"block_size must be an integer in [1, {length}] (the sequence length), got {block_size!r}")
        if self.path.kind != "mask":
            raise ValueError(f"block_size (semi-autoregressive sampling) needs the mask source, the path's source is "
                             f"{self.path.kind!r}")
        if return_intermediates:
            raise ValueError("return_intermediates is not available with block_size")
        MixtureJumpProcess(self.path, corrector, dtype_categorical, None, generator, **options)  # checks the options
        x = x0.long()
        position = torch.arange(length, device=x0.device)
        for start in range(0, length, block_size):
            outside = (position < start) | (position >= start + block_size)
            block_frozen = outside.expand_as(x) if frozen is None else frozen | outside
            process = MixtureJumpProcess(self.path, corrector, dtype_categorical, block_frozen, generator, **options)
            x = simulate(process, model, x, grid, progress=progress)
        return x
