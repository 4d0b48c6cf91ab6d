"""Data-parallel runs on ``torch.distributed``, launched by ``torchrun``.

A run is one process per rank (``torchrun --nproc_per_node N``, or several nodes with
``--nnodes``); :func:`gm.train.train` finds the launch from the environment ``torchrun``
sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) or takes an
explicit process group. This module holds what the trainer and the scripts around it need to
agree on:

- :func:`world` / :func:`init_world`: this process's rank, the world size and the group (gloo
  on CPU, NCCL on CUDA, one GPU per local rank).
- :func:`rank_batch_size`: each rank's share of a global batch.
- :func:`rank_generator`: the per-rank random stream, so that a run is deterministic given its
  seed and world size (rank 0's stream is seeded as a single process's is).
- :func:`local_device`: ``"cuda"`` means this rank's GPU.
- :func:`is_main_process`: rank 0 does the logging, validation and file writing.

Single-process runs (no ``torchrun``, or ``--nproc_per_node 1``) need none of it: every
function answers for a world of one without creating a process group.
"""

from __future__ import annotations

import atexit
import datetime
import gc
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "World",
    "world",
    "init_world",
    "launched_by_torchrun",
    "is_main_process",
    "rank_batch_size",
    "rank_generator",
    "local_device",
    "finish",
    "TIMEOUT_ENV",
    "TORCHRUN_VARIABLES",
]

# Ranks other than 0 wait in a collective while rank 0 validates or a benchmark evaluates
# between two trainings; torch's default timeout (10 min for NCCL) would kill long
# evaluations. A rank that fails does not leave the others waiting this long: torchrun stops
# the whole job as soon as one worker exits with an error.
TIMEOUT_ENV = "RDFM_DIST_TIMEOUT_MINUTES"
_DEFAULT_TIMEOUT_MINUTES = 180.0


@dataclass(frozen=True)
class World:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: this process's rank in ``group`` (0 for a single process).
        size: the number of ranks.
        local_rank: the rank on this node (selects the GPU).
        group: the process group, or ``None`` for a single process.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    group: dist.ProcessGroup | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, validates and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.group is not None and self.size > 1


#: What torchrun sets for its workers: strip these to launch a fresh run from inside one.
TORCHRUN_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
    "ROLE_RANK",
    "TORCHELASTIC_RUN_ID",
)


def launched_by_torchrun() -> bool:
    """Whether the environment of a ``torchrun`` worker is set (any world size)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def world(group: dist.ProcessGroup | None = None) -> World:
    """This process's place in ``group`` (default: the initialised default group, else the
    ``torchrun`` environment, else a world of one). Creates nothing."""
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    if group is not None or (dist.is_available() and dist.is_initialized()):
        group = group if group is not None else dist.group.WORLD
        return World(dist.get_rank(group), dist.get_world_size(group), local_rank, group)
    if launched_by_torchrun():
        # Not initialised yet: what init_world will find.
        return World(_env_int("RANK"), _env_int("WORLD_SIZE"), local_rank, None)
    return World()


def is_main_process() -> bool:
    """Rank 0 of the run (always true for a single process)."""
    return world().is_main


def _timeout() -> datetime.timedelta:
    text = os.environ.get(TIMEOUT_ENV)
    minutes = _DEFAULT_TIMEOUT_MINUTES if text is None else float(text)
    if not minutes > 0:
        raise ValueError(f"environment variable {TIMEOUT_ENV} must be > 0 minutes, got {text!r}")
    return datetime.timedelta(minutes=minutes)


def init_world(device: torch.device | str = "cpu", group: dist.ProcessGroup | None = None) -> World:
    """The run's :class:`World`, creating the default process group under ``torchrun``.

    With ``group`` (or an already initialised default group) that group is used as it is.
    Otherwise, under a ``torchrun`` launch of more than one process, the default group is
    initialised from the environment: NCCL when ``device`` is CUDA (and this rank's GPU,
    ``LOCAL_RANK``, made the current device), gloo otherwise; end the run with :func:`finish`.
    A single process gets a world of one and no group.

    Raises:
        ValueError: for a CUDA ``device`` with fewer visible GPUs than local ranks.
    """
    device = torch.device(device)
    current = world(group)
    if current.group is not None or current.size == 1:
        return current
    if device.type == "cuda":
        if current.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"device: local rank {current.local_rank} needs a GPU of its own, but "
                f"{torch.cuda.device_count()} are visible"
            )
        torch.cuda.set_device(current.local_rank)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=_timeout())
    _install_exit_hooks()
    return world()


_failed = False  # an uncaught exception is on its way out of this process


def _install_exit_hooks() -> None:
    """A safety net for scripts that never call :func:`finish`: an interpreter that exits
    with a live gloo group can abort in its threads' destructors (``terminate called without
    an active exception``, seen with torch 2.13), which torchrun reports as a failed rank. At
    exit the group is destroyed, except after an uncaught exception on NCCL, whose destroy
    waits for the other ranks."""
    previous = sys.excepthook

    def note_failure(*info):
        global _failed
        _failed = True
        previous(*info)

    sys.excepthook = note_failure
    atexit.register(_destroy_at_exit)


def _destroy_at_exit() -> None:
    if dist.is_available() and dist.is_initialized() and (not _failed or dist.get_backend() == "gloo"):
        gc.collect()
        dist.destroy_process_group()


def finish() -> None:
    """End a data-parallel run cleanly: wait for every rank (rank 0 may still be evaluating),
    then destroy the default process group. Call it once, after the last ``train``, on success
    only: a rank that failed must just exit (destroying an NCCL group waits for the other ranks,
    which would then never see it die), and torchrun stops the rest. No-op for one process."""
    if dist.is_available() and dist.is_initialized():
        # DDP wrappers sit in reference cycles; a collected one no longer holds the group, whose
        # gloo threads must not outlive it into interpreter shutdown (SIGABRT there).
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
        gc.collect()


def rank_batch_size(global_batch: int, size: int | None = None) -> int:
    """This rank's share of ``global_batch`` examples per step: ``global_batch / size``.

    The trainer averages the ranks' gradients, so a step over ``size`` shares of equal size is
    a step over the global batch. ``size`` defaults to the current world's.

    Raises:
        ValueError: if ``global_batch`` is not a positive multiple of the world size.
    """
    size = world().size if size is None else size
    if isinstance(global_batch, bool) or not isinstance(global_batch, int) or global_batch < 1:
        raise ValueError(f"global_batch must be a positive integer, got {global_batch!r}")
    if global_batch % size:
        raise ValueError(
            f"global_batch {global_batch} must be a multiple of the world size {size} (each rank draws an equal share)"
        )
    return global_batch // size


def rank_seed(seed: int, rank: int, step: int | None = None) -> int:
    """The seed of ``rank``'s stream: ``seed`` itself for rank 0 of a fresh run (so a world of
    one draws what a single process always drew); otherwise a hash of ``(seed, rank[, step])``."""
    if rank == 0 and step is None:
        return seed
    key = [seed, rank] if step is None else [seed, rank, step]
    return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def rank_generator(seed: int, rank: int, step: int | None = None) -> torch.Generator:
    """A CPU generator for ``rank``'s share of each batch (see :func:`rank_seed`).

    Reproduces a rank's draws outside a distributed run: the batch of step ``k`` of a run of
    world size ``W`` is the concatenation over ranks of what ``loss_fn`` draws from these
    generators. ``step`` gives the fresh streams of a run resumed under another world size.
    """
    return torch.Generator().manual_seed(rank_seed(seed, rank, step))


def local_device(device: torch.device | str) -> torch.device:
    """``device`` with ``"cuda"`` resolved to this rank's GPU (``cuda:LOCAL_RANK`` under
    ``torchrun``, the current GPU otherwise); other devices unchanged."""
    device = torch.device(device)
    if device.type != "cuda" or device.index is not None:
        return device
    if launched_by_torchrun():
        return torch.device("cuda", _env_int("LOCAL_RANK"))
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else device
