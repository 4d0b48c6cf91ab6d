"""The old path of the trainer, which lives in :mod:`gm.train` now (``train`` in
:mod:`gm.train.loop`, ``TrainConfig`` in :mod:`gm.train.config`, ``EMA`` in :mod:`gm.train.ema`,
checkpoints in :mod:`gm.train.checkpoint`, progress output in :mod:`gm.train.progress`); this
module re-exports its names."""

import gm.distributed  # noqa: F401  (imported with the trainer, as before: gm.cli looks it up in sys.modules)
from gm.train.checkpoint import (
    UNSET,
    CheckpointMismatchError,
    TrainedWeights,
    load_checkpoint,
    load_trained_weights,
    save_checkpoint,
)
from gm.train.config import TrainConfig, TrainResult, describe_budget, lr_factor
from gm.train.ema import EMA
from gm.train.loop import seed_everything, train
from gm.train.progress import is_interactive as is_interactive  # not in __all__, as before

__all__ = [
    "seed_everything",
    "EMA",
    "TrainConfig",
    "TrainResult",
    "train",
    "lr_factor",
    "save_checkpoint",
    "load_checkpoint",
    "TrainedWeights",
    "load_trained_weights",
    "CheckpointMismatchError",
    "UNSET",
    "describe_budget",
]
