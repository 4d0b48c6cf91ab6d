"""Training checkpoints: atomic writes (:func:`save_checkpoint`), reading them back
(:func:`load_checkpoint`; :func:`load_trained_weights` for the weights a run selected), and the
comparison of a checkpoint's settings with a resuming run's, which refuses to resume under other
settings (:class:`CheckpointMismatchError`) except the fields a resumption may change (the budget,
the reporting)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gm.files import atomic_path

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "TrainedWeights",
    "load_trained_weights",
    "CheckpointMismatchError",
    "UNSET",
]


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """``torch.save`` to a temporary file in the same folder, then atomically replace ``path``:
    a crash never leaves a half-written checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    return torch.load(Path(path), map_location="cpu", weights_only=False)


@dataclass
class TrainedWeights:
    """What a user of a trained model needs from a :func:`gm.train.train` checkpoint: the selected
    weights (best validation, EMA) or, for a run without validation, the final EMA weights, the
    settings the run was made under (``train(run_config=...)``) and its step counts."""

    state: dict
    run_config: dict
    steps: int
    best_step: int | None


def load_trained_weights(path: str | os.PathLike, snapshot: float | str | None = None) -> TrainedWeights:
    """The weights to use from the checkpoint ``path`` of :func:`gm.train.train` (on the CPU).

    ``snapshot``: instead of the selected weights, the EMA weights the run kept at that budget
    mark (:class:`gm.train.BudgetSnapshots`, in ``snapshots.pt`` beside the checkpoint; minutes,
    or steps under a step budget); ``steps`` is then the snapshot's step.

    Raises:
        FileNotFoundError: if ``path`` (or, with ``snapshot``, the snapshot file) is not a file,
            naming it.
        ValueError: if it is not a checkpoint of :func:`gm.train.train` (e.g. a results JSON or an
            unrelated ``.pt`` file), naming it, or holds no snapshot at ``snapshot``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        ck = load_checkpoint(path)
    except Exception as error:  # torch raises several types for files that are not its own
        raise ValueError(f"checkpoint {path} cannot be read by torch.load: {error}") from None
    if not isinstance(ck, dict) or not {"model", "ema", "step"} <= ck.keys():
        raise ValueError(f"checkpoint {path} is not a training checkpoint of gm.train.train (no EMA weights)")
    # The EMA (and the selected state, a copy of it) holds the floating-point tensors only; the
    # others (integer buffers) come from the model itself, so the result loads with strict=True.
    if snapshot is not None:
        from gm.train.snapshots import load_snapshot, snapshots_path

        entry = load_snapshot(snapshots_path(path), snapshot)
        state = {**ck["model"], **entry["state"]}
        return TrainedWeights(state, dict(ck.get("run_config") or {}), int(entry["step"]), None)
    selected = ck["best_state"] if ck.get("best_state") is not None else ck["ema"]["shadow"]
    state = {**ck["model"], **selected}
    return TrainedWeights(state, dict(ck.get("run_config") or {}), int(ck["step"]), ck.get("best_step"))


# Fields that may change between a run and its resumption: the budget (extending a run is what
# resuming is for) and what is only reported or how often it is done.
_RESUMABLE_FIELDS = (
    "max_steps",
    "max_minutes",
    "eval_every",
    "eval_every_minutes",
    "eval_at_minutes",
    "checkpoint_every_minutes",
    "progress",
    "progress_bar",
    "progress_every_s",
    "val_name",
    "compile",
    "tf32",
    "log_every_s",
    "tensorboard",
    "wandb_project",
    "loss_plot",
)


class _Unset:
    """Stands for a setting that one side of a comparison does not record."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()  # in CheckpointMismatchError.differences: the setting is not recorded on that side


class CheckpointMismatchError(ValueError):
    """A checkpoint was made under other settings than the run asked to resume it.

    Attributes:
        checkpoint_path: the checkpoint that was not resumed.
        differences: ``(field, saved, now)`` per differing setting, each field once, sorted by
            name; a setting recorded on one side only has :data:`UNSET` on the other.
    """

    def __init__(self, checkpoint_path: str | os.PathLike, differences: list[tuple[str, Any, Any]]) -> None:
        self.checkpoint_path = Path(checkpoint_path)
        self.differences = list(differences)
        listed = "; ".join(f"{name}: checkpoint {saved!r}, now {now!r}" for name, saved, now in self.differences)
        super().__init__(
            f"checkpoint_path {self.checkpoint_path} was made with other settings ({listed}); "
            "delete it, pass resume=False, or write to another folder."
        )


def _config_mismatch(saved: Mapping[str, Any] | None, current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``field -> (saved, now)`` for every field whose values differ."""
    if saved is None:  # checkpoints written before configs were recorded
        return {}
    return {
        k: (saved.get(k, UNSET), current.get(k, UNSET))
        for k in sorted(set(saved) | set(current))
        if _comparable(saved.get(k, UNSET)) != _comparable(current.get(k, UNSET))
    }


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _optimisation_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _RESUMABLE_FIELDS}
