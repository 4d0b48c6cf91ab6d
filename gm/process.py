r"""Markov processes that the simulate loop runs: flows (ODEs) and CTMC jump processes.

A process advances a state ``x`` from time ``t`` to ``t + h`` (``h`` may be negative) given
the model's output at ``(x, t)``: a velocity for a flow, posterior logits for a jump
process. ``step`` is the single-evaluation generator update; ``advance`` is what the loop
calls and defaults to one model call + ``step``, so multi-stage integrators (midpoint,
RK4) override ``advance`` only.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, Sequence

from torch import Tensor

__all__ = ["Process", "JointProcess", "Model"]

# A model maps (state, t) to whatever the process's ``step`` consumes.
Model = Callable[[Any, Tensor], Any]


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
    """Several processes stepped together on a tuple state ``(x_1, ..., x_k)``.

    The model sees the whole tuple and returns a tuple of per-component outputs, so a
    single network can couple e.g. SE(3) frames (a flow) with a residue sequence (a CTMC).
    All components share the time grid; each is updated with the Euler-type ``step`` from
    the same model evaluation, so components must be single-stage (``stages == 1``): a
    multi-stage one (e.g. ``ManifoldFlowProcess(m, "rk4")``) raises ``ValueError`` instead of
    being silently stepped with Euler.
    """

    def __init__(self, processes: Sequence[Process]) -> None:
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
                    "every component with one shared evaluation; use a single-stage (Euler) component")
        self.processes = processes

    def _check_tuple(self, value: Any, name: str) -> None:
        if not isinstance(value, (tuple, list)) or len(value) != len(self.processes):
            raise ValueError(
                f"{name} must be a tuple of {len(self.processes)} components, got {type(value).__name__}"
                + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else "")
            )

    def step(self, x: Sequence[Any], t: Tensor, h: Tensor, model_output: Sequence[Any]) -> tuple:
        self._check_tuple(x, "x")
        self._check_tuple(model_output, "model_output")
        return tuple(p.step(xi, t, h, oi) for p, xi, oi in zip(self.processes, x, model_output))

    def finalize(self, x: Sequence[Any], t: Tensor) -> tuple:
        self._check_tuple(x, "x")
        return tuple(p.finalize(xi, t) for p, xi in zip(self.processes, x))
