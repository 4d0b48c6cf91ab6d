r"""Markov processes that the simulate loop runs: flows (ODEs) and CTMC jump processes.

A process advances a state ``x`` from time ``t`` to ``t + h`` (``h`` may be negative) given
the model's output at ``(x, t)``: a velocity for a flow, posterior logits for a jump
process. ``step`` is the single-evaluation generator update; ``advance`` is what the loop
calls and defaults to one model call + ``step``, so multi-stage integrators (midpoint,
RK4) override ``advance`` only.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["Process", "JointProcess", "Model"]

# A model maps (state, t) to whatever the process's ``step`` consumes (a JointProcess passes the
# tuple of its components' times as t).
Model = Callable[..., Any]
# A component's time in a JointProcess: the clock (None), fixed (a number) or a map of the clock.
TimeSpec = None | float | Callable[[Tensor], Tensor]


class Process(ABC):
    """A Markov process on some state space, simulated by :func:`gm.simulate`."""

    #: model evaluations per :meth:`advance` (1 for Euler-type updates; multi-stage integrators
    #: set more, and :class:`JointProcess`, which steps with one evaluation, rejects them)
    stages: int = 1

    @abstractmethod
    def step(self, x: Any, t: Tensor, h: Tensor, model_output: Any) -> Any:
        """One update from ``t`` to ``t + h`` given ``model_output = model(x, t)``."""

    def advance(self, x: Any, t: Tensor, h: Tensor, model: Model) -> Any:
        """Advance from ``t`` to ``t + h``, evaluating ``model`` as often as needed."""
        return self.step(x, t, h, model(x, t))

    def finalize(self, x: Any, t: Tensor) -> Any:
        """Hook run once on the final state (e.g. project onto the manifold)."""
        return x


class JointProcess(Process):
    r"""Several processes stepped together on a tuple state ``(x_1, ..., x_k)``, each on its own clock.

    The model sees the whole tuple and returns a tuple of per-component outputs, so a single
    network can couple e.g. SE(3) frames (a flow) with a residue sequence (a CTMC): one model
    evaluation per step drives every component. Components must therefore be single-stage
    (``stages == 1``): a multi-stage one (e.g. ``ManifoldFlowProcess(m, "rk4")``) raises
    ``ValueError`` instead of being silently stepped with Euler.

    **Times per component.** :func:`gm.simulate` advances one clock :math:`s` along its grid;
    component :math:`k` lives at time :math:`\tau_k(s)`, given by ``times[k]``:

    - ``None``: the clock itself, :math:`\tau_k(s) = s` (all components together: co-generation);
    - a number :math:`c \in [0, 1]`: held fixed at time :math:`c` -- the component is never
      stepped nor finalised, so its state stays exactly as given (``c = 1``: a component given
      at its data value, e.g. the structure in inverse folding or the sequence in folding);
    - a callable :math:`\tau_k` mapping a 0-dim clock tensor to a time in ``[0, 1]``,
      non-decreasing along the clock (a component on its own schedule, e.g. ``lambda s:
      torch.clamp(2 * s, max=1)`` finishes the sequence by mid-way); the component takes the
      step :math:`\tau_k(s + h) - \tau_k(s)` from :math:`\tau_k(s)`, and none where that is 0.
      The simulation ends where the clock's grid ends: a map that has not reached 1 by then
      leaves its component unfinished (e.g. mask tokens left), as a shorter grid would.

    The model is called as ``model(x, times)`` with ``times`` the tuple of the components'
    0-dim times :math:`(\tau_1(s), \dots, \tau_k(s))`, so a network can condition on each
    component's own noise level.

    Args:
        processes: the component processes, in the state tuple's order.
        times: one entry per component as above (default: every component on the clock).

    Raises:
        ValueError: for anything but a non-empty sequence of single-stage processes, a
            ``times`` of another length or with an entry that is not ``None``, a number in
            ``[0, 1]`` or a callable; during simulation, for a callable returning a time outside
            ``[0, 1]`` or running against the clock's direction.
    """

    def __init__(self, processes: Sequence[Process], times: Sequence[TimeSpec] | None = None) -> None:
        if isinstance(processes, Process) or not isinstance(processes, Iterable):
            raise ValueError(f"processes must be a sequence of gm.Process, got {type(processes).__name__}")
        processes = tuple(processes)
        if len(processes) == 0:
            raise ValueError("processes must contain at least one Process")
        for i, p in enumerate(processes):
            if not isinstance(p, Process):
                raise ValueError(f"processes[{i}] is {type(p).__name__}, not a gm.Process")
            if p.stages != 1:
                raise ValueError(
                    f"processes[{i}] ({type(p).__name__}) takes {p.stages} model evaluations per step "
                    f"(a multi-stage integrator such as method={getattr(p, 'method', '?')!r}), but JointProcess steps "
                    "every component with one shared evaluation; use a single-stage (Euler) component"
                )
        self.processes = processes
        self.times = self._check_times(times, len(processes))

    @staticmethod
    def _check_times(times: Sequence[TimeSpec] | None, count: int) -> tuple[TimeSpec, ...]:
        if times is None:
            return (None,) * count
        if isinstance(times, (str, bytes)) or not isinstance(times, Iterable):
            raise ValueError(f"times must be a sequence with one entry per component, got {type(times).__name__}")
        times = tuple(times)
        if len(times) != count:
            raise ValueError(f"times must have one entry per component ({count}), got {len(times)}")
        checked: list[TimeSpec] = []
        for i, spec in enumerate(times):
            if isinstance(spec, Tensor) and spec.numel() == 1 and spec.is_floating_point():
                spec = float(spec)
            if spec is None or callable(spec):
                checked.append(spec)
            elif isinstance(spec, numbers.Real) and not isinstance(spec, bool) and 0.0 <= float(spec) <= 1.0:
                checked.append(float(spec))
            else:
                raise ValueError(
                    f"times[{i}] must be None (the clock), a fixed time in [0, 1] or a callable of the "
                    f"clock, got {spec!r}"
                )
        return tuple(checked)

    @property
    def fixed(self) -> tuple[bool, ...]:
        """Whether each component is held fixed (never stepped)."""
        return tuple(isinstance(spec, float) for spec in self.times)

    def component_time(self, index: int, clock: Tensor) -> Tensor:
        """Component ``index``'s time at the 0-dim ``clock`` (a tensor of the clock's dtype and device)."""
        spec = self.times[index]
        if spec is None:
            return clock
        if isinstance(spec, float):
            return torch.full_like(clock, spec)
        value = spec(clock)
        if not isinstance(value, Tensor):
            value = torch.as_tensor(value, dtype=clock.dtype, device=clock.device)
        if value.numel() != 1 or not value.is_floating_point():
            raise ValueError(
                f"times[{index}] must map the clock to one floating-point time, got "
                f"{value.dtype} of shape {tuple(value.shape)}"
            )
        value = value.reshape(()).to(dtype=clock.dtype, device=clock.device)
        if not 0.0 <= float(value) <= 1.0:  # also rejects NaN
            raise ValueError(f"times[{index}] mapped the clock {float(clock):.6g} to {float(value)!r}, outside [0, 1]")
        return value

    def _check_tuple(self, value: Any, name: str) -> None:
        if not isinstance(value, (tuple, list)) or len(value) != len(self.processes):
            raise ValueError(
                f"{name} must be a tuple of {len(self.processes)} components, got {type(value).__name__}"
                + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else "")
            )

    def _times_and_steps(self, t: Tensor, h: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor | None, ...]]:
        """Each component's time at ``t`` and its step to ``t + h`` (``None``: not stepped)."""
        times: list[Tensor] = []
        steps: list[Tensor | None] = []
        for i, spec in enumerate(self.times):
            start = self.component_time(i, t)
            times.append(start)
            if spec is None:
                steps.append(h)
            elif isinstance(spec, float):
                steps.append(None)
            else:
                width = self.component_time(i, t + h) - start
                if float(width) * float(h) < 0:
                    raise ValueError(
                        f"times[{i}] runs against the clock: from clock {float(t):.6g} to "
                        f"{float(t + h):.6g} its time goes from {float(start):.6g} to "
                        f"{float(start + width):.6g}"
                    )
                steps.append(width if float(width) != 0.0 else None)
        return tuple(times), tuple(steps)

    def step(self, x: Sequence[Any], t: Tensor, h: Tensor, model_output: Sequence[Any]) -> tuple:
        """Step every moving component from its time at clock ``t`` over its share of ``h``."""
        times, steps = self._times_and_steps(t, h)
        return self._step(x, times, steps, model_output)

    def _step(
        self, x: Sequence[Any], times: Sequence[Tensor], steps: Sequence[Tensor | None], model_output: Sequence[Any]
    ) -> tuple:
        self._check_tuple(x, "x")
        self._check_tuple(model_output, "model_output")
        return tuple(
            xi if hi is None else p.step(xi, ti, hi, oi)
            for p, xi, ti, hi, oi in zip(self.processes, x, times, steps, model_output)
        )

    def advance(self, x: Sequence[Any], t: Tensor, h: Tensor, model: Model) -> tuple:
        """One model call ``model(x, times)`` with the components' times, then every moving
        component's step."""
        self._check_tuple(x, "x")
        times, steps = self._times_and_steps(t, h)
        return self._step(x, times, steps, model(x, times))

    def finalize(self, x: Sequence[Any], t: Tensor) -> tuple:
        """Finalise every component that moves (fixed components stay exactly as given)."""
        self._check_tuple(x, "x")
        return tuple(
            xi if isinstance(spec, float) else p.finalize(xi, self.component_time(i, t))
            for i, (p, spec, xi) in enumerate(zip(self.processes, self.times, x))
        )
