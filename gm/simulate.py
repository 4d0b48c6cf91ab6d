"""The one simulation loop for flows and jump processes."""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import torch
from torch import Tensor

from gm.process import Model, Process

__all__ = ["simulate", "make_time_grid", "data_end_time_grid"]


def _reference_tensor(x: Any) -> Tensor:
    """The tensor of a (possibly tuple) state that fixes the time grid's dtype and device."""
    leaves = list(x) if isinstance(x, (tuple, list)) else [x]
    for leaf in leaves:
        if not isinstance(leaf, Tensor):
            raise ValueError(f"x_init components must be tensors, got {type(leaf).__name__}")
    floating = [leaf for leaf in leaves if torch.is_floating_point(leaf)]
    return floating[0] if floating else leaves[0]


def make_time_grid(
    time_grid: Sequence[float] | Tensor,
    steps: int | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Validate a time grid and optionally subdivide it uniformly.

    Args:
        time_grid: strictly monotone times in ``[0, 1]`` (increasing or decreasing), at least two.
        steps: if given, ``time_grid`` must be ``(t_start, t_end)`` and is split into ``steps``
            equal intervals.
        dtype, device: of the returned grid (float dtype; defaults to torch's default dtype).

    Returns:
        1-D tensor of times, the first being the start and the last the end of the simulation.
    """
    dtype = dtype if dtype is not None and dtype.is_floating_point else torch.get_default_dtype()
    grid = torch.as_tensor(time_grid, dtype=torch.float64).detach().cpu().flatten()
    if grid.numel() < 2:
        raise ValueError(f"time_grid must contain at least 2 times, got {grid.tolist()}")
    if not bool(torch.isfinite(grid).all()) or bool((grid < 0).any() | (grid > 1).any()):
        raise ValueError(f"time_grid values must be finite and in [0, 1], got {grid.tolist()}")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if grid.numel() != 2:
            raise ValueError(
                f"steps={steps} needs time_grid=(t_start, t_end), got {grid.numel()} times; "
                "pass either a full grid or two endpoints with steps"
            )
        grid = torch.linspace(float(grid[0]), float(grid[1]), steps + 1, dtype=torch.float64)
    diffs = grid.diff()
    if not (bool((diffs > 0).all()) or bool((diffs < 0).all())):
        raise ValueError("time_grid must be strictly increasing or strictly decreasing")
    return grid.to(dtype=dtype, device=device)


def data_end_time_grid(steps: int, power: float = 2.0, *, backward: bool = False) -> Tensor:
    r"""A grid on [0, 1] whose steps shrink towards the data end t = 1:
    :math:`t_k = 1 - (1 - k/N)^p`, :math:`k = 0..N` (reversed, from 1 to 0, if ``backward``).

    Flows towards concentrated data are stiff near t = 1 (the velocity varies on the data's
    length scale there), and the likelihood integrates its divergence through that region.
    With ``power=2`` the last step is :math:`1/N^2` instead of :math:`1/N`: on the volcano
    benchmark rk4 with 128 such steps matches 1024 uniform steps to 0.01 nats, where 128
    uniform steps are off by 0.4.

    Args:
        steps: number of intervals N (>= 1).
        power: p >= 1 (1 gives the uniform grid).
        backward: return the grid from 1 down to 0 (for likelihoods).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not power >= 1:
        raise ValueError(f"power must be >= 1, got {power}")
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    grid = 1.0 - (1.0 - u) ** power
    grid[-1] = 1.0
    return grid.flip(0) if backward else grid


def simulate(
    process: Process,
    model: Model,
    x_init: Any,
    time_grid: Sequence[float] | Tensor = (0.0, 1.0),
    steps: int | None = None,
    *,
    return_intermediates: bool = False,
    progress: bool = False,
    enable_grad: bool = False,
) -> Any:
    """Simulate ``process`` driven by ``model`` along a time grid.

    Args:
        process: the process (flow or jump process) to advance.
        model: ``model(x, t)`` returning what ``process.step`` consumes; ``t`` is a 0-dim
            tensor on the state's device.
        x_init: the state at ``time_grid[0]`` (a tensor or a tuple of tensors).
        time_grid: times to visit, monotone in ``[0, 1]``; may start anywhere and run backwards.
        steps: split ``(t_start, t_end)`` into this many equal steps.
        return_intermediates: also return the states at every grid time.
        progress: show a tqdm progress bar.
        enable_grad: keep the autograd graph (default: no-grad simulation).

    Returns:
        The final state; with ``return_intermediates``, the states at all grid times stacked
        on a new leading dimension (a tuple of such stacks for tuple states).
    """
    if not isinstance(process, Process):
        raise ValueError(f"process must be a gm.Process, got {type(process).__name__}")
    ref = _reference_tensor(x_init)
    grid = make_time_grid(time_grid, steps, dtype=ref.dtype, device=ref.device)

    # One call each for all starts and widths (instead of three tensor ops per step).
    starts, widths = grid[:-1].unbind(), grid.diff().unbind()
    intervals = range(grid.numel() - 1)
    if progress:
        from tqdm.auto import tqdm

        intervals = tqdm(intervals, desc="simulate", leave=False)

    grad_context = contextlib.nullcontext() if enable_grad else torch.no_grad()
    with grad_context:
        x = x_init
        states = [x] if return_intermediates else None
        for i in intervals:
            x = process.advance(x, starts[i], widths[i], model)
            if i == grid.numel() - 2:
                x = process.finalize(x, grid[-1])
            if states is not None:
                states.append(x)
    if states is None:
        return x
    if isinstance(x, (tuple, list)):
        return tuple(torch.stack([s[k] for s in states]) for k in range(len(x)))
    return torch.stack(states)
