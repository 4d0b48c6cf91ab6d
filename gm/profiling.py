"""Diagnostics for the speed of training and sampling loops: host read-backs and kernels.

On a GPU every read of a device value on the host (``.item()``, ``.tolist()``, ``float(t)``,
``bool(t)``, ``nonzero``, boolean-mask indexing) waits for all queued work, so a loop that
reads once per step runs at the speed of its launches, not of its arithmetic.
:func:`count_host_reads` counts such reads made by code outside torch (on any device: on the
CPU too, where they are cheap but show what a GPU would wait for) and, on CUDA, every
synchronisation torch reports (``torch.cuda.set_sync_debug_mode``). :func:`count_kernels`
counts the kernels (CUDA) or operators (CPU) one call launches, with ``torch.profiler``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

__all__ = ["HostReads", "count_host_reads", "count_kernels"]

_TORCH_DIR = os.path.dirname(torch.__file__)
_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")
_LOCK = threading.Lock()


@dataclass
class HostReads:
    """What :func:`count_host_reads` saw.

    Attributes:
        reads: tensor values read on the host by code outside torch.
        cuda_syncs: CUDA synchronisations torch reported (CUDA only; inside torch too).
        where: ``"method at file:line"`` of each read outside torch, in order.
    """

    reads: int = 0
    cuda_syncs: int = 0
    where: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Reads outside torch plus CUDA synchronisations."""
        return self.reads + self.cuda_syncs


@contextlib.contextmanager
def count_host_reads(cuda: bool | None = None) -> Iterator[HostReads]:
    """Count the host read-backs of the code run inside the ``with`` block.

    Reads by torch itself are not counted here (on the CPU its optimisers read their CPU-side
    step counters, which are no device synchronisation on a GPU either); on CUDA,
    ``torch.cuda.set_sync_debug_mode("warn")`` reports every synchronisation, torch's own
    included, as ``cuda_syncs``. The tensor methods are patched for the duration of the block:
    a diagnostic for benchmarks and tests, not for production loops or several threads.

    Args:
        cuda: also count CUDA synchronisations (default: when CUDA is available).
    """
    found = HostReads()
    originals = {name: getattr(torch.Tensor, name) for name in _READS}

    def patched(name: str, original: Callable) -> Callable:
        def read(tensor, *args, **kwargs):
            caller = sys._getframe(1)
            if not caller.f_code.co_filename.startswith(_TORCH_DIR):
                found.reads += 1
                found.where.append(f"{name} at {caller.f_code.co_filename}:{caller.f_lineno}")
            return original(tensor, *args, **kwargs)

        return read

    cuda = torch.cuda.is_available() if cuda is None else cuda
    with _LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, original in originals.items():
            setattr(torch.Tensor, name, patched(name, original))
        previous_mode = torch.cuda.get_sync_debug_mode() if cuda else 0
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(previous_mode)
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)
            found.cuda_syncs = sum("synchroniz" in str(w.message) for w in caught)


def count_kernels(fn: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """Kernels one call of ``fn`` launches on CUDA, or operators it runs on the CPU (every
    ``aten::`` call, nested ones included: a measure of the launch overhead a GPU would pay).
    Call ``fn`` once before to leave compilation and caches out of the count."""
    device = torch.device(device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = prof.events()
    if device.type == "cuda":
        return sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return sum(1 for e in events if e.name.startswith("aten::"))
