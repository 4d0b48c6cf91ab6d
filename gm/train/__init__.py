"""The trainer of every model of the library, with the distributed and precision code it runs on:
``train(model, loss_fn, TrainConfig(...))`` (EMA, validation and model selection, atomic
resumable checkpoints, progress, metrics), data-parallel under ``torchrun``.

- :mod:`gm.train.loop`: :func:`train`, :func:`seed_everything`.
- :mod:`gm.train.config`: :class:`TrainConfig`, :class:`TrainResult`, the learning-rate schedule
  :func:`lr_factor`, :func:`describe_budget`.
- :mod:`gm.train.ema`: :class:`EMA`, the moving average of the weights that a run selects.
- :mod:`gm.train.checkpoint`: atomic :func:`save_checkpoint`, :func:`load_checkpoint`,
  :func:`load_trained_weights` (:class:`TrainedWeights`), and the refusal to resume under other
  settings (:class:`CheckpointMismatchError`, :data:`UNSET`).
- :mod:`gm.train.progress`: the progress output on stderr (a tqdm bar or plain lines;
  :func:`is_interactive`).
- :mod:`gm.train.step`: the device side of a step: compile, TF32, the loss monitor (no host
  read-back per step), the gradient norm.
- :mod:`gm.train.metrics`: the metrics file of a run, TensorBoard, Weights & Biases, the loss
  plot (:func:`read_metrics`, :func:`plot_metrics`, :func:`metrics_path_for`).
- :mod:`gm.train.snapshots`: :class:`BudgetSnapshots`, the EMA weights of one run at several
  budgets (a compute curve from one run), through ``train``'s callbacks; :func:`load_snapshot`
  and :func:`snapshots_path` read them back (``load_trained_weights(..., snapshot=mark)``).
- :mod:`gm.train.distributed`: ranks, per-rank batch shares and random streams, one GPU per rank.
- :mod:`gm.train.precision`: ``resolve_precision("auto" | "bf16" | "off", device)``: bfloat16
  autocast only where the hardware runs it natively.

The old paths ``gm.training``, ``gm.distributed``, ``gm.precision`` and ``gm.training_metrics``
still work: they re-export the names of their new homes.
"""

from gm.train.checkpoint import (
    UNSET,
    CheckpointMismatchError,
    TrainedWeights,
    load_checkpoint,
    load_trained_weights,
    save_checkpoint,
)
from gm.train.config import TrainConfig, TrainResult, describe_budget, lr_factor
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
from gm.train.ema import EMA
from gm.train.loop import seed_everything, train
from gm.train.metrics import metrics_path_for, plot_metrics, read_metrics
from gm.train.precision import PRECISION_MODES, PrecisionChoice, native_bfloat16, resolve_precision
from gm.train.progress import is_interactive
from gm.train.snapshots import BudgetSnapshots, checkpoint_elapsed_s, load_snapshot, snapshots_path

__all__ = [
    # loop, config, ema, checkpoint, progress
    "train",
    "seed_everything",
    "TrainConfig",
    "TrainResult",
    "lr_factor",
    "describe_budget",
    "EMA",
    "save_checkpoint",
    "load_checkpoint",
    "TrainedWeights",
    "load_trained_weights",
    "CheckpointMismatchError",
    "UNSET",
    "is_interactive",
    "BudgetSnapshots",
    "checkpoint_elapsed_s",
    "load_snapshot",
    "snapshots_path",
    # metrics
    "read_metrics",
    "plot_metrics",
    "metrics_path_for",
    # distributed
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
    # precision
    "PRECISION_MODES",
    "PrecisionChoice",
    "native_bfloat16",
    "resolve_precision",
]
