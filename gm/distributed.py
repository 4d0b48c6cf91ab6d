"""The old path of :mod:`gm.train.distributed` (data-parallel runs on ``torch.distributed``,
launched by ``torchrun``), where the code lives now; this module re-exports its names."""

from gm.train.distributed import (
    TIMEOUT_ENV,
    TORCHRUN_VARIABLES,
    World,
    finish,
    init_world,
    is_main_process,
    launched_by_torchrun,
    local_device,
    rank_batch_size,
    rank_generator,
    world,
)
from gm.train.distributed import rank_seed as rank_seed  # not in __all__, as before

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
