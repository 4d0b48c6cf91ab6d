r"""CTMC sampling for mixture-path discrete flow matching, on :func:`gm.simulate`.

Given posterior logits :math:`p_{1|t}(\cdot \mid x_t)` the marginal generator of a mixture
path jumps from :math:`x` to :math:`y \ne x` at rate
:math:`\lambda_t\, p_{1|t}(y \mid x_t)`, :math:`\lambda_t = \dot\kappa_t / (1 - \kappa_t)`.
An optional corrector adds the path's *noising* generator
:math:`\tfrac{\dot\kappa_t}{\kappa_t}\,(p_0(y) - \delta_x(y))` with weight :math:`\beta_t` and
scales the forward rates by :math:`1 + \beta_t`; since the noising generator runs the marginal
path backwards, the marginals are unchanged while errors get re-noised and corrected.

A step reads nothing back to the host (its times, rates and probabilities stay 0-dim device
tensors) unless the posterior's logits are checked every step (``validate=True``; the sampler
checks them on the device and reads the tally back once, at the end) or the corrector is a
Python function of the time. The categorical draws (Gumbel-max) come in two forms, the same
distribution (``draws``): ``"sparse"`` gathers the logit rows of the tokens that jump and draws
only those (least arithmetic and memory: nothing of size batch x length x vocabulary beyond the
model's logits; but the number of rows is data-dependent, a host synchronisation on an
accelerator and a dynamic shape for ``torch.compile``), ``"dense"`` draws a candidate for every
position and keeps it where the token jumps (``torch.where``: static shapes, no read-back,
compiles with ``fullgraph=True``; noise of the logits' size in ``dtype_categorical``). The
default, ``"auto"``, is sparse in eager mode on the CPU, where there is no device queue to
stall, and dense elsewhere and under ``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from dfm.jump_process import (  # noqa: F401  (UNMASKING, DRAWS, filter_logits, check_*: importable from here too)
    DRAWS,
    UNMASKING,
    MixtureJumpProcess,
    Posterior,
    check_filtering,
    check_temperature,
    filter_logits,
)
from dfm.path import MixturePath
from gm.checks import Checks, check_callable, inputs_checked
from gm.process import Process
from gm.simulate import compiled_advance, make_time_grid, simulate

__all__ = ["CTMCSolver", "MixtureJumpProcess", "UNMASKING", "DRAWS", "filter_logits"]


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
    # compiled steps by sampler options: each compiles once per solver (sample(compile=...))
    _compiled: dict = field(default_factory=dict, init=False, repr=False, compare=False)

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
        validate: bool = True,
        compile: bool | str = False,
    ) -> Tensor:
        """Simulate the CTMC from ``x0`` at ``time_grid[0]`` to ``time_grid[-1]``.

        The loop reads nothing back per step (with a constant ``corrector``): ``x0`` and the
        masks are checked once; the posterior runs its own value checks in its first call only
        and is then called inside :func:`gm.checks.inputs_checked` (the states and times are
        the sampler's own, so e.g. a :class:`dfm.TokenTransformer` skips its per-call checks);
        the logit rows drawn from are tallied on the device and read back once, at the end.

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
            validate: check the values of ``x0`` and ``fixed`` (one host read-back), let the
                posterior check its inputs in its first call (e.g. the labels of a guided
                model; with ``compile``, one extra eager call before the loop) and check that its
                logit rows are distributions (tallied on the device, one read-back after the
                last step); ``False`` skips all of these (types and shapes are always checked).
            compile: ``torch.compile`` one step, the posterior call and the draws
                (:func:`gm.simulate.compiled_advance`, ``fullgraph=True``, dense draws):
                ``True`` or a mode (``"reduce-overhead"``: CUDA graphs, the shapes being static).
                Compiled once per solver and options, reused by later calls of the same shapes;
                the first call pays the compilation, so it pays for long or repeated sampling.
                Off by default. Draws come from the global RNG (``torch.manual_seed``):
                ``torch.compile`` cannot trace a ``torch.Generator``; the corrector must be a
                constant.

        Raises:
            ValueError: naming the argument, for tokens that are not integer ids in range, a
                padding or fixed mask that is not boolean of ``x0``'s shape, mask tokens at fixed
                positions, a bad ``time_grid``, ``steps``, ``corrector`` (negative, NaN, inf, or a
                function returning no such number), ``dtype_categorical``, ``generator``,
                ``temperature``, ``unmasking``, ``top_k`` (an integer >= 1), ``top_p`` (in
                (0, 1]) or ``block_size``, a ``compile`` with a ``generator`` or a function as
                ``corrector``, and posterior outputs that are not floating-point logits of shape
                ``(*x0.shape, V)`` or not a distribution (the latter after the run, naming the
                first time it happened).
        """
        if not isinstance(validate, bool):
            raise ValueError(f"validate must be True or False, got {validate!r}")
        checks = Checks()  # token ids and the fixed positions: one host read-back
        self.path.check_tokens(x0, "x0", allow_mask=True, checks=checks)
        for name, given in (("padding_mask", padding_mask), ("fixed", fixed)):
            if given is not None and (
                not isinstance(given, Tensor)
                or given.shape != x0.shape
                or given.dtype != torch.bool
                or given.device != x0.device
            ):
                raise ValueError(
                    f"{name} must be a bool tensor of shape {tuple(x0.shape)} on x0's device ({x0.device})"
                )
        frozen = padding_mask
        if fixed is not None:
            if self.path.kind == "mask":
                checks.add(
                    (fixed & (x0 == self.path.mask_id)).sum(),
                    lambda: "x0 must hold data tokens at the fixed positions, found mask tokens there",
                )
            frozen = fixed if frozen is None else frozen | fixed
        if validate:
            checks.run()
        grid = make_time_grid(time_grid, steps, default_steps=100, dtype=torch.float64)
        if not grid[-1] > grid[0]:  # on the CPU: no device read-back
            raise ValueError("time_grid must increase: the CTMC runs forward from the source to the data")
        options = dict(
            temperature=temperature,
            unmasking=unmasking,
            top_k=top_k,
            top_p=top_p,
            validate="end" if validate else False,
        )
        length = x0.shape[-1]
        if block_size is not None:
            if isinstance(block_size, bool) or not isinstance(block_size, int) or not 1 <= block_size <= length:
                raise ValueError(
                    f"block_size must be an integer in [1, {length}] (the sequence length), got {block_size!r}"
                )
            if self.path.kind != "mask":
                raise ValueError(
                    f"block_size (semi-autoregressive sampling) needs the mask source, the path's source is "
                    f"{self.path.kind!r}"
                )
            if return_intermediates:
                raise ValueError("return_intermediates is not available with block_size")
        process, advance = self._stepper(corrector, dtype_categorical, generator, options, compile)
        x = x0.long()
        model = self._model(validate and advance is None)
        if validate and advance is not None:
            # a compiled step skips the posterior's value checks: they run once here, eagerly
            with torch.no_grad():
                self.posterior(x, grid[0].to(device=x.device, dtype=torch.get_default_dtype()))
        if block_size is None:
            process.padding_mask = frozen
            process.begin(x.device)
            return simulate(
                process, model, x, grid, return_intermediates=return_intermediates, progress=progress, advance=advance
            )
        position = torch.arange(length, device=x0.device)
        for start in range(0, length, block_size):
            outside = (position < start) | (position >= start + block_size)
            process.padding_mask = outside.expand_as(x) if frozen is None else frozen | outside
            process.begin(x.device)
            x = simulate(process, model, x, grid, progress=progress, advance=advance)
        return x

    def _model(self, check_first: bool) -> Posterior:
        """The posterior as the loop calls it: ``t`` in torch's default dtype and, but for the
        first call with ``check_first``, inside :func:`gm.checks.inputs_checked` -- the states
        and times it sees are the sampler's own, checked once, so a :class:`dfm.TokenTransformer`
        skips its per-call value checks (and their read-backs); the first call still runs them,
        once, for what the sampler did not make (e.g. the labels a wrapper adds)."""
        pending = [check_first]

        def model(x: Tensor, t: Tensor) -> Tensor:
            t = t.to(torch.get_default_dtype())
            if torch.compiler.is_compiling():  # compiled: no value checks anyway
                return self.posterior(x, t)
            if pending[0]:
                pending[0] = False
                return self.posterior(x, t)
            with inputs_checked():
                return self.posterior(x, t)

        return model

    def _stepper(
        self,
        corrector: float | Callable[[float], float],
        dtype_categorical: torch.dtype,
        generator: torch.Generator | None,
        options: dict,
        compile: bool | str,
    ) -> tuple[MixtureJumpProcess, Callable | None]:
        """The process (options checked by its constructor) and, with ``compile``, the compiled
        step (process and posterior), built once per solver and options and reused."""
        if compile is False:
            return MixtureJumpProcess(self.path, corrector, dtype_categorical, None, generator, **options), None
        if generator is not None:
            raise ValueError(
                "compile draws from the global RNG (torch.compile cannot trace a torch.Generator): "
                "pass generator=None and seed with torch.manual_seed"
            )
        if callable(corrector):
            raise ValueError("compile needs a constant corrector (a function of t reads the time back every step)")
        key = (corrector, dtype_categorical, compile, tuple(sorted(options.items())))
        if key not in self._compiled:
            process = MixtureJumpProcess(self.path, corrector, dtype_categorical, None, None, **options)
            # the compiled step returns the tally of bad logit rows, kept out here (CUDA graphs
            # replay into their own memory: the process must not hold tensors written inside)
            compiled = compiled_advance(_TalliedStep(process), self._model(False), compile)

            def advance(x: Tensor, t: Tensor, h: Tensor) -> Tensor:
                new, tally = compiled(x, t, h)
                if process.validate:
                    process.record(tally, t.to(torch.float64))
                return new

            self._compiled[key] = (process, advance)
        return self._compiled[key]


class _TalliedStep(Process):
    """A :class:`MixtureJumpProcess` step as a process whose state update also returns the step's
    tally (:meth:`MixtureJumpProcess.tallied_step`): what :meth:`CTMCSolver.sample` compiles."""

    def __init__(self, process: MixtureJumpProcess) -> None:
        self.process = process

    def step(self, x: Tensor, t: Tensor, h: Tensor, model_output: Tensor) -> tuple[Tensor, Tensor]:
        return self.process.tallied_step(x, t, h, model_output)
