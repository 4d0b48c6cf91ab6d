r"""Input checks shared by paths, schedulers, losses and solvers.

Every public entry point raises ``ValueError`` naming the argument and the problem, never a
raw torch error, a silent NaN or an extrapolation. Value checks are collected in a
:class:`Checks` and read back with ONE host synchronisation (a single fused ``any``), so they
stay cheap inside training loops; on accelerators, where even that one read-back stalls the
pipeline, paths take ``validate=False`` once their data has been checked.

Loops the library drives over inputs it has checked once (a sampler calling the model at every
step on states it produced itself) run the calls inside :func:`inputs_checked`; code that
honours it asks :func:`value_checks_on` before it builds and reads back its value checks.
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

__all__ = [
    "Checks",
    "inputs_checked",
    "value_checks_on",
    "check_floating",
    "check_same_dtype",
    "broadcast_time",
    "time_out_of_range",
    "describe_time_range",
    "check_generator",
    "check_positive_int",
    "check_callable",
    "index_out_of_range",
    "describe_index_range",
]


class Checks:
    """Deferred value checks read back with one host synchronisation.

    ``add(excess, explain)`` records a 0-dim tensor that is ``<= 0`` when the check passes
    (positive or NaN when it fails, e.g. ``worst_violation - tolerance``) and a function that
    raises (or returns the message of) the ``ValueError`` to report. ``run()`` stacks all of
    them into one tensor and reads it once; only if a check failed does it explain the first.
    """

    def __init__(self) -> None:
        self._items: list[tuple[Tensor, Callable[[], str | None]]] = []

    def add(self, excess: Tensor, explain: Callable[[], str | None]) -> None:
        self._items.append((excess, explain))

    def run(self, *values: Tensor) -> list[float]:
        """Raise for the first failing check; return ``values`` (0-dim tensors the caller also
        needs on the host) as floats, read in the same synchronisation."""
        tensors = [excess for excess, _ in self._items] + list(values)
        if not tensors:
            return []
        dtype = torch.promote_types(tensors[0].dtype, torch.float32)
        packed = torch.stack([v.reshape(()).to(dtype) for v in tensors]).tolist()
        n = len(self._items)
        for (_, explain), excess in zip(self._items, packed[:n]):
            if not excess <= 0:  # also NaN
                message = explain()  # may raise its own, more specific ValueError
                raise ValueError(message)
        return packed[n:]


# True inside inputs_checked(); a ContextVar, so each thread (and asyncio task) has its own.
_INPUTS_CHECKED = contextvars.ContextVar("rdfm_inputs_checked", default=False)


@contextlib.contextmanager
def inputs_checked() -> Iterator[None]:
    """Inside, code that asks :func:`value_checks_on` skips its value checks (and their host
    read-back); type, dtype and shape checks, which read no values, still run. For loops the
    library drives over inputs it checked once and states it builds itself (a sampler's model
    calls, a loss's call of the model on ``x_t`` made from checked ``x1``)."""
    token = _INPUTS_CHECKED.set(True)
    try:
        yield
    finally:
        _INPUTS_CHECKED.reset(token)


def value_checks_on(validate: bool = True) -> bool:
    """Whether to run value checks now: ``validate``, outside :func:`inputs_checked`, and not
    while ``torch.compile`` traces (a value read back to the host cannot be part of a graph: it
    would break it, so compiled code checks types, dtypes and shapes only; check the inputs
    once, eagerly, before a compiled loop)."""
    # is_compiling first: the tracer then never sees the ContextVar lookup
    return bool(validate) and not torch.compiler.is_compiling() and not _INPUTS_CHECKED.get()


def check_floating(x: object, name: str) -> Tensor:
    """``x`` as it is, if it is a floating-point tensor; else a ``ValueError`` naming ``name``."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise ValueError(
            f"{name} must be a floating-point tensor, got dtype {x.dtype}; convert it with "
            f"{name}.float() (or .double())"
        )
    return x


def check_same_dtype(reference: Tensor, reference_name: str, other: Tensor, other_name: str) -> None:
    """A ``ValueError`` when two tensors that are combined have different dtypes or devices."""
    if other.dtype != reference.dtype:
        raise ValueError(
            f"{other_name} has dtype {other.dtype} but {reference_name} has {reference.dtype}; "
            f"cast one of them, e.g. {other_name}.to({reference_name}.dtype)"
        )
    if other.device != reference.device:
        raise ValueError(
            f"{other_name} is on {other.device} but {reference_name} is on {reference.device}; "
            f"move it with {other_name}.to({reference_name}.device)"
        )


def broadcast_time(
    t: Tensor | float,
    batch_shape: tuple[int, ...] | torch.Size,
    *,
    dtype: torch.dtype,
    device: torch.device,
    name: str = "t",
) -> Tensor:
    """Per-sample times ``t`` expanded to ``batch_shape``.

    ``t`` is a python number, a 0-dim tensor, or a tensor whose shape is a PREFIX of the batch
    shape (``t`` of shape ``(B,)`` with points of batch shape ``(B, N)``: one time per sample,
    shared by its ``N`` residues or tokens); size-1 dims broadcast. Shape and dtype problems
    raise here; the value range is checked by :func:`time_out_of_range`.
    """
    if isinstance(t, Tensor):
        if not torch.is_floating_point(t):
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        t = t.to(dtype=dtype, device=device)
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        t = torch.tensor(float(t), dtype=dtype, device=device)
    else:
        raise ValueError(f"{name} must be a float or a floating-point tensor, got {type(t).__name__}")
    batch_shape = tuple(batch_shape)
    if t.dim() > len(batch_shape):
        raise ValueError(f"{name} of shape {tuple(t.shape)} has more dims than the batch shape {batch_shape}")
    aligned = t.reshape(tuple(t.shape) + (1,) * (len(batch_shape) - t.dim()))
    try:
        return aligned.expand(batch_shape)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(t.shape)} must be a prefix of the batch shape {batch_shape} (one time per sample)"
        ) from None


def time_out_of_range(t: Tensor) -> Tensor:
    """0-dim excess for :class:`Checks`: how far the times reach outside [0, 1] (<= 0 when all
    are inside; NaN when one is NaN)."""
    if t.numel() == 0:
        return torch.zeros((), dtype=t.dtype, device=t.device)
    low, high = torch.aminmax(t)
    return torch.maximum(-low, high - 1)


def describe_time_range(t: Tensor, name: str = "t") -> str:
    """The message for times that failed :func:`time_out_of_range`."""
    nan = int(torch.isnan(t).sum())
    if nan:
        return f"{name} contains {nan} NaN value(s); times must lie in [0, 1]"
    return (
        f"{name} must lie in [0, 1], got values in [{float(t.min()):.6g}, {float(t.max()):.6g}] "
        "(paths and schedulers do not extrapolate)"
    )


# ---------------------------------------------------------------- argument checks without a host
# read-back, and index excesses for Checks


def check_generator(generator: object, name: str = "generator", *, device: torch.device | str | None = None) -> None:
    """A ``ValueError`` unless ``generator`` is ``None`` or a ``torch.Generator`` (on the type of
    ``device``, when given: a CPU generator cannot draw CUDA tensors, nor the reverse)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    if generator is not None and device is not None and generator.device.type != torch.device(device).type:
        raise ValueError(
            f"{name} is on {generator.device.type} but draws for tensors on {torch.device(device).type}: "
            f"use torch.Generator(device={torch.device(device).type!r})"
        )


def check_positive_int(value: object, name: str) -> int:
    """``value`` as an ``int`` if it is an integer >= 1 (numpy integers included, bools not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_callable(value: object, name: str) -> None:
    """A ``ValueError`` unless ``value`` can be called."""
    if not callable(value):
        raise ValueError(f"{name} must be callable, got {type(value).__name__}")


def index_out_of_range(x: Tensor, high: int) -> Tensor:
    """0-dim excess for :class:`Checks`: how far the integer ids ``x`` reach outside
    ``[0, high)`` (<= 0 when all are inside, 0 for an empty tensor)."""
    if x.numel() == 0:
        return torch.zeros((), dtype=torch.long, device=x.device)
    low, top = torch.aminmax(x)
    low, top = low.long(), top.long()  # uint8 would wrap around on negation
    return torch.maximum(-low, top - (high - 1))


def describe_index_range(x: Tensor, high: int, name: str) -> str:
    """The message for ids that failed :func:`index_out_of_range`."""
    return f"{name} ids must be in [0, {high}), got range [{int(x.min())}, {int(x.max())}]"
