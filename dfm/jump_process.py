r"""The CTMC of a mixture path: :class:`MixtureJumpProcess`, the per-step jump rule of discrete flow
sampling, and the logit filters it uses (:func:`filter_logits`).

Given posterior logits :math:`p_{1|t}(\cdot \mid x_t)` the marginal generator of a mixture
path jumps from :math:`x` to :math:`y \ne x` at rate
:math:`\lambda_t\, p_{1|t}(y \mid x_t)`, :math:`\lambda_t = \dot\kappa_t / (1 - \kappa_t)`.
An optional corrector adds the path's *noising* generator
:math:`\tfrac{\dot\kappa_t}{\kappa_t}\,(p_0(y) - \delta_x(y))` with weight :math:`\beta_t` and
scales the forward rates by :math:`1 + \beta_t`; since the noising generator runs the marginal
path backwards, the marginals are unchanged while errors get re-noised and corrected.

The categorical draws (Gumbel-max) come in two forms, the same distribution (``draws``):
``"sparse"`` gathers the logit rows of the tokens that jump and draws only those (least
arithmetic and memory; but the number of rows is data-dependent, a host synchronisation on an
accelerator and a dynamic shape for ``torch.compile``), ``"dense"`` draws a candidate for every
position and keeps it where the token jumps (``torch.where``: static shapes, no read-back,
compiles with ``fullgraph=True``). :class:`dfm.solver.CTMCSolver` runs the process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import overload

import torch
from torch import Tensor

from dfm.path import MixturePath
from gm.checks import Checks, check_generator, describe_time_range, time_out_of_range
from gm.process import Process

__all__ = ["MixtureJumpProcess", "UNMASKING", "DRAWS", "filter_logits", "check_temperature", "check_filtering"]

Posterior = Callable[[Tensor, Tensor], Tensor]
_LAST_STEP_TOL = 1e-6


def _gumbel_argmax(
    logits: Tensor, exclude: Tensor | None, dtype: torch.dtype, generator: torch.Generator | None
) -> Tensor:
    """One categorical draw per row of ``logits`` (rows, V), optionally never ``exclude``."""
    u = torch.rand(logits.shape, dtype=dtype, device=logits.device, generator=generator)
    tiny = torch.finfo(dtype).tiny
    # -log(-log u) + logits, built in place in u's memory: the same values as
    # logits - log(clamp(-log(clamp(u)))) with one tensor of the rows' size instead of four
    z = u.clamp_min_(tiny).log_().neg_().clamp_min_(tiny).log_().neg_().add_(logits.to(dtype))
    if exclude is not None:
        z = z.scatter_(-1, exclude[:, None], float("-inf"))
    return z.argmax(-1)


def _row_tally(logits: Tensor, drawn: Tensor | None = None) -> Tensor:
    """How many rows of posterior logits ``(..., V)`` define no distribution, float64 ``(4,)``:
    rows with NaN, with +inf, all -inf, and the rows counted (those where ``drawn`` is True;
    all rows for ``None``). Device reductions only (the row maximum propagates NaN): read back
    by the caller, once per step or once per run."""
    peak = logits.amax(-1)
    counted = torch.ones_like(peak, dtype=torch.bool) if drawn is None else drawn
    return torch.stack(
        [
            (torch.isnan(peak) & counted).sum(),
            ((peak == float("inf")) & counted).sum(),
            ((peak == float("-inf")) & counted).sum(),
            counted.sum(),
        ]
    ).to(torch.float64)


def _describe_rows(tally: Tensor, first_t: Tensor | None = None) -> str:
    nan, pos, neg, rows = (int(v) for v in tally.tolist())
    where = "" if first_t is None else f", first at t = {float(first_t):.6g}"
    return (
        f"posterior returned logits that are not a distribution: {nan} row(s) with NaN, {pos} with +inf, "
        f"{neg} all -inf (of {rows} rows sampled{where})"
    )


@overload
def _pick(last: bool | Tensor, on_last: Tensor, otherwise: Tensor) -> Tensor: ...
@overload
def _pick(last: bool | Tensor, on_last: Tensor | float, otherwise: Tensor | float) -> Tensor | float: ...
def _pick(last: bool | Tensor, on_last: Tensor | float, otherwise: Tensor | float) -> Tensor | float:
    """``on_last`` on the last step, else ``otherwise``: a Python choice when ``last`` is known on
    the host, a ``torch.where`` when it is a 0-dim device tensor (no read-back)."""
    if isinstance(last, bool):
        return on_last if last else otherwise
    return torch.where(last, on_last, otherwise)


def _top_count(scores: Tensor, candidates: Tensor, counts: Tensor) -> Tensor:
    """Per row (last dim), the ``counts`` candidate positions of highest ``scores``, as a boolean
    tensor of ``candidates``' shape (one stable argsort; vectorised over rows)."""
    scores = scores.masked_fill(~candidates, float("-inf"))
    order = scores.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order).contiguous()
    )
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
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not (math.isfinite(temperature) and temperature > 0)
    ):
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")


def check_filtering(top_k: object, top_p: object) -> None:
    """``ValueError`` naming the argument unless ``top_k`` is ``None`` or an integer >= 1 and
    ``top_p`` is ``None`` or a number in (0, 1]."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (or None), got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not (0.0 < top_p <= 1.0)
    ):
        raise ValueError(f"top_p must be a number in (0, 1] (or None), got {top_p!r}")


UNMASKING = ("random", "random_order", "confidence")
DRAWS = ("auto", "sparse", "dense")


class MixtureJumpProcess(Process):
    r"""The CTMC of a :class:`MixturePath` driven by posterior logits (see module docstring).

    Args:
        path: the mixture path.
        corrector: strength :math:`\beta_t` of the re-noising corrector (a float or a function of t).
            A function of ``t`` gets the time as a Python float: one host read-back per step
            (a constant keeps the step free of them).
        dtype_categorical: float32 or float64 for the categorical draws.
        padding_mask: True at positions that never change.
        generator: RNG for the draws (``torch.compile`` cannot trace a ``torch.Generator``: a
            compiled step draws from the global RNG, ``generator=None``).
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
        validate: check that the logit rows drawn from are distributions (no NaN, no +inf, not
            all -inf) and the step's times: ``True`` reads the check back in every ``step``
            (one host read-back each); ``"end"`` tallies the bad rows on the device and reads
            the tally back once, in :meth:`finalize` (what :class:`CTMCSolver` uses: a bad
            posterior still raises, naming the first time it happened, after the run);
            ``False`` checks nothing. Under ``torch.compile`` ``True`` acts as ``"end"``.
        draws: ``"sparse"``, ``"dense"`` or ``"auto"`` (module docstring).

    The draws are float64 by default: float32 Gumbel noise truncates its tail, which lowers
    the effective temperature of rare tokens (and flatters generative perplexity).
    """

    def __init__(
        self,
        path: MixturePath,
        corrector: float | Callable[[float], float] = 0.0,
        dtype_categorical: torch.dtype = torch.float64,
        padding_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        temperature: float = 1.0,
        unmasking: str = "random",
        top_k: int | None = None,
        top_p: float | None = None,
        validate: bool | str = True,
        draws: str = "auto",
    ) -> None:
        if not isinstance(path, MixturePath):
            raise ValueError(f"path must be a dfm.MixturePath, got {type(path).__name__}")
        if dtype_categorical not in (torch.float32, torch.float64):
            raise ValueError(f"dtype_categorical must be torch.float32 or torch.float64, got {dtype_categorical}")
        if not callable(corrector) and (
            isinstance(corrector, bool)
            or not isinstance(corrector, (int, float))
            or not (math.isfinite(corrector) and corrector >= 0)
        ):
            raise ValueError(f"corrector must be a finite nonnegative float or a function of t, got {corrector!r}")
        check_generator(generator)
        check_temperature(temperature)
        if unmasking not in UNMASKING:
            raise ValueError(f"unmasking must be one of {UNMASKING}, got {unmasking!r}")
        if unmasking != "random" and path.kind != "mask":
            raise ValueError(f"unmasking={unmasking!r} needs the mask source, the path's source is {path.kind!r}")
        check_filtering(top_k, top_p)
        if validate not in (True, False, "end"):
            raise ValueError(f"validate must be True, False or 'end', got {validate!r}")
        if draws not in DRAWS:
            raise ValueError(f"draws must be one of {DRAWS}, got {draws!r}")
        self.top_k, self.top_p = top_k, top_p
        self.temperature = float(temperature)
        self.unmasking = unmasking
        self.path = path
        self.corrector = corrector
        self.dtype = dtype_categorical
        self.padding_mask = padding_mask
        self.generator = generator
        self.validate = validate
        self.draws = draws
        # validate="end": the device-side tally of bad logit rows (_row_tally) and the first time
        # one was seen (NaN: none yet), read back by finalize
        self._tally: Tensor | None = None
        self._first_bad: Tensor | None = None

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

    def _dense(self, x: Tensor) -> bool:
        if self.draws != "auto":
            return self.draws == "dense"
        # on the CPU a data-dependent row count waits for nothing; elsewhere it stalls the queue
        return torch.compiler.is_compiling() or x.device.type != "cpu"

    def _check(self, tally: Tensor, t: Tensor, end: Tensor) -> None:
        """Per-step checks (``validate=True``, eager): the rows' tally and the times, one read-back."""
        checks = Checks()
        checks.add(time_out_of_range(t), lambda: describe_time_range(t))
        # t + h may pass 1 by rounding (the last step); below 0 or NaN it is no step of a CTMC on [0, 1]
        checks.add(time_out_of_range(end.clamp(max=1.0)), lambda: describe_time_range(end, "t + h"))
        checks.add(tally[:3].sum(), lambda: _describe_rows(tally))
        checks.run()

    def begin(self, device: torch.device | str) -> None:
        """Start a run's tally (``validate="end"``) on ``device``; the first step starts one
        otherwise, but a compiled step then sees two states of the process and compiles twice."""
        if self.validate == "end":
            self._open(device)

    def _open(self, device: torch.device | str) -> None:
        self._tally = torch.zeros(4, dtype=torch.float64, device=device)
        self._first_bad = torch.full((), float("nan"), dtype=torch.float64, device=device)

    def record(self, tally: Tensor, t: Tensor) -> None:
        """Add a step's tally (:meth:`tallied_step`) at time ``t`` (float64, on the tally's
        device) to the run's (``validate="end"``), on the device."""
        if self._tally is None:
            self._open(tally.device)
        run_tally, first_bad = self._tally, self._first_bad
        assert run_tally is not None and first_bad is not None  # both set by _open
        bad_now = tally[:3].sum() > 0
        self._first_bad = torch.where(torch.isnan(first_bad) & bad_now, t, first_bad)
        self._tally = run_tally + tally

    def finalize(self, x: Tensor, t: Tensor) -> Tensor:
        """End of a run: with ``validate="end"``, read the run's tally of bad logit rows back
        (once) and raise the ``ValueError`` of the first bad step's kind, naming its time."""
        tally, first = self._tally, self._first_bad
        self._tally = self._first_bad = None  # a new run starts clean, also after an error
        if tally is not None:
            checks = Checks()
            checks.add(tally[:3].sum(), lambda: _describe_rows(tally, first))
            checks.run()
        return x

    def step(self, x: Tensor, t: Tensor, h: Tensor, model_output: Tensor) -> Tensor:
        new, tally = self.tallied_step(x, t, h, model_output)
        if self.validate == "end" or (self.validate and torch.compiler.is_compiling()):
            self.record(tally, torch.as_tensor(t, dtype=torch.float64, device=x.device))
        elif self.validate:
            t64 = torch.as_tensor(t, dtype=torch.float64, device=x.device)
            self._check(tally, t64, t64 + torch.as_tensor(h, dtype=torch.float64, device=x.device))
        return new

    def tallied_step(self, x: Tensor, t: Tensor, h: Tensor, model_output: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`step` without its checks and without side effects: the new state and the
        step's tally of logit rows that are no distribution (float64 ``(4,)``: rows with NaN,
        with +inf, all -inf, rows drawn from), for a compiled step whose caller keeps the
        tally (:meth:`record`; CUDA graphs must not write into the process)."""
        path, logits = self.path, model_output
        if not isinstance(logits, Tensor) or not torch.is_floating_point(logits):
            raise ValueError(
                "posterior must return floating-point logits, got "
                + (f"dtype {logits.dtype}" if isinstance(logits, Tensor) else type(logits).__name__)
            )
        if logits.shape[:-1] != x.shape or logits.shape[-1] != path.vocab_size:
            raise ValueError(
                f"posterior must return logits of shape {tuple(x.shape) + (path.vocab_size,)}, "
                f"got {tuple(logits.shape)}"
            )
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.top_k is not None or self.top_p is not None:
            logits = filter_logits(logits, self.top_k, self.top_p)
        # The step's scalars are 0-dim float64 tensors on x's device (no host read-back): the
        # same IEEE double arithmetic as on Python floats, so the same probabilities.
        t64 = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        h64 = torch.as_tensor(h, dtype=torch.float64, device=x.device)
        end = t64 + h64
        if callable(self.corrector):  # a Python function of the time needs it on the host
            t_val, h_val = float(t), float(h)
            last: bool | Tensor = t_val + h_val >= 1.0 - _LAST_STEP_TOL
            beta = 0.0 if last else self._beta(t_val)
            noising = beta > 0
        else:
            last = end >= 1.0 - _LAST_STEP_TOL
            beta = float(self.corrector)  # applies to every step but the last (where p_noise = 0)
            noising = beta > 0
        sched = path.scheduler
        # times checked by the caller (the sampler's grid) or by self._check below
        kappa, d_kappa = sched.kappa(t64, validate=False), sched.d_kappa(t64, validate=False)
        p_noise = None
        if noising:  # re-noising probability over the step: h * beta * kappa'/kappa (1 at kappa = 0)
            p_noise = _pick(last, 0.0, torch.where(kappa > 0, (h64 * beta * d_kappa / kappa).clamp(max=1.0), 1.0))
        active = torch.ones_like(x, dtype=torch.bool) if self.padding_mask is None else ~self.padding_mask
        u = torch.rand(x.shape, device=x.device, generator=self.generator, dtype=torch.float64)
        dense = self._dense(x)
        if path.kind == "mask":
            new, tally = self._unmask(x, logits, u, active, last, beta, kappa, sched.kappa(end, validate=False), dense)
            if p_noise is not None:
                assert path.mask_id is not None  # a mask-source path
                masked = (x == path.mask_id) & active
                new = torch.where(~masked & active & (u < p_noise), path.mask_id, new)
        else:
            new, tally = self._jump(x, logits, u, active, last, beta, kappa, d_kappa, h64, p_noise, dense)
        return new, tally

    def _unmask(
        self,
        x: Tensor,
        logits: Tensor,
        u: Tensor,
        active: Tensor,
        last: bool | Tensor,
        beta: float,
        kappa: Tensor,
        kappa_next: Tensor,
        dense: bool,
    ) -> tuple[Tensor, Tensor]:
        """The mask source: reveal masked tokens (exact mixture transition or a scheduled count)."""
        masked = (x == self.path.mask_id) & active
        p_unmask = _pick(last, 1.0, ((1 + beta) * (kappa_next - kappa) / (1 - kappa)).clamp(max=1.0))
        if self.unmasking == "random":
            unmask = masked & (u < p_unmask)
        else:  # the scheduled count per sequence (all masked ones at p = 1), random or most confident
            n_masked = masked.sum(-1).to(torch.float64)
            counts = (n_masked - torch.round(n_masked * (1.0 - p_unmask))).long()
            # confidence: log of the top probability of the (tempered, filtered) posterior
            scores = (
                -u
                if self.unmasking == "random_order"
                else (logits.amax(-1) - torch.logsumexp(logits, dim=-1)).to(torch.float64)
            )
            unmask = _top_count(scores, masked, counts)
        if dense:
            draws = _gumbel_argmax(logits.reshape(-1, logits.shape[-1]), None, self.dtype, self.generator)
            return torch.where(unmask, draws.view(x.shape), x), _row_tally(logits, unmask)
        new = x.clone()
        idx = unmask.nonzero(as_tuple=True)
        rows = logits[idx]
        if rows.shape[0]:
            new[idx] = _gumbel_argmax(rows, None, self.dtype, self.generator)
        return new, _row_tally(rows)

    def _jump(
        self,
        x: Tensor,
        logits: Tensor,
        u: Tensor,
        active: Tensor,
        last: bool | Tensor,
        beta: float,
        kappa: Tensor,
        d_kappa: Tensor,
        h: Tensor,
        p_noise: Tensor | float | None,
        dense: bool,
    ) -> tuple[Tensor, Tensor]:
        """General sources: an Euler jump out of x_t with forward and (optional) noising rates."""
        path = self.path
        x_in = x.clamp_max(path.vocab_size - 1)
        log_z = torch.logsumexp(logits, dim=-1)
        tally = _row_tally(logits)  # every row enters p_stay
        p_stay = torch.exp(logits.gather(-1, x_in[..., None]).squeeze(-1).to(torch.float64) - log_z.to(torch.float64))
        lam = d_kappa / (1 - kappa)
        # the last step is an exact draw from p_{1|t}: leave x_t with probability 1 - p(x_t)
        fwd = _pick(last, 1.0 - p_stay, h * (1 + beta) * lam * (1.0 - p_stay))
        p0 = path.source_distribution(device=x.device, dtype=torch.float64)
        assert p0 is not None  # _jump serves the uniform and custom sources, never the mask one
        if p_noise is not None:
            p0_x = (
                p0.expand(x.shape + (path.vocab_size,)).gather(-1, x_in[..., None]).squeeze(-1)
                if p0.dim() == 2
                else p0[x_in]
            )
            noise = p_noise * (1.0 - p0_x)
        else:
            noise = torch.zeros_like(fwd)
        total = fwd + noise
        jump = active & (u < total.clamp(max=1.0))
        vocab = path.vocab_size
        if dense:
            choose_fwd = torch.rand(x.shape, dtype=torch.float64, device=x.device, generator=self.generator) < (
                fwd / total
            ).clamp(0, 1)
            draws = _gumbel_argmax(logits.reshape(-1, vocab), x_in.reshape(-1), self.dtype, self.generator)
            if p_noise is not None:
                rows = torch.log(p0).expand(x.shape + (vocab,)).reshape(-1, vocab)
                noise_draws = _gumbel_argmax(rows, x_in.reshape(-1), self.dtype, self.generator)
                draws = torch.where(choose_fwd.reshape(-1), draws, noise_draws)
            return torch.where(jump, draws.view(x.shape), x), tally
        new = x.clone()
        idx = jump.nonzero(as_tuple=True)
        if idx[0].shape[0]:
            current = x_in[idx]
            forward_share = (fwd[idx] / total[idx]).clamp(0, 1)
            choose_fwd = (
                torch.rand(current.shape, dtype=torch.float64, device=x.device, generator=self.generator)
                < forward_share
            )
            draws = _gumbel_argmax(logits[idx], current, self.dtype, self.generator)
            if p_noise is not None:
                rows = p0.expand(len(current), -1) if p0.dim() == 1 else p0[idx[-1]]
                noise_draws = _gumbel_argmax(torch.log(rows), current, self.dtype, self.generator)
                draws = torch.where(choose_fwd, draws, noise_draws)
            new[idx] = draws
        return new, tally
