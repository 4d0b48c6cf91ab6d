"""The EMA weights of one training run at several budgets, for a compute curve from one run.

With a constant learning rate after warmup (``TrainConfig(min_lr_ratio=1.0)``), the state of a
run at 5 minutes is the state a 5-minute run would end with, so one 20-minute run gives the
models of 2.5, 5, 10 and 20 minutes. :class:`BudgetSnapshots` keeps them: at every validation
of :func:`gm.train.train` it stores the EMA weights (``val_fn`` receives the EMA model) for
each budget mark not yet passed, so that for each mark the last state at or before it remains.

Use it from the two callbacks of ``train``::

    snapshots = BudgetSnapshots(out / "snapshots.pt", [2.5, 5, 10, 20], checkpoint_elapsed_s(ckpt))
    loss_fn, val_fn = snapshots.wrap(loss_fn, val_fn)
    train(model, loss_fn, TrainConfig(max_minutes=20, eval_every_minutes=0.1, min_lr_ratio=1.0),
          val_fn=val_fn, checkpoint_path=ckpt)
    states = snapshots.finish()  # {2.5: {"minutes", "step", "elapsed_s", "state"}, 5: ...}

Validate often (a fraction of the smallest mark) so each snapshot lies close to its mark.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gm.files import atomic_path

__all__ = [
    "BudgetSnapshots",
    "checkpoint_elapsed_s",
    "snapshots_path",
    "load_snapshot",
    "describe_mark",
    "describe_snapshots",
]

FINAL = "final"  # the key of the one snapshot kept without marks


def snapshots_path(checkpoint_path: str | os.PathLike[str]) -> Path:
    """Where a run keeps its snapshots: ``snapshots.pt`` beside its checkpoint."""
    return Path(checkpoint_path).with_name("snapshots.pt")


def describe_mark(key: Any, entry: dict) -> str:
    """``"12.5 min (step 1900)"``, ``"step 400"`` or ``"final (step 7641)"``, for log lines."""
    if key == FINAL:
        return f"final (step {entry['step']})"
    if entry.get("minutes") is None:
        return f"step {entry['step']}" if entry["step"] == key else f"step mark {key:g} (step {entry['step']})"
    return f"{key:g} min (step {entry['step']})"


def describe_snapshots(snapshots: dict) -> str:
    """``{mark: entry}`` (a snapshot file, or :meth:`BudgetSnapshots.finish`) as one log line, in
    step order: ``"12.5 min (step 1900), 25 min (step 3800)"``."""
    ordered = sorted(snapshots.items(), key=lambda item: item[1]["step"])
    return ", ".join(describe_mark(key, entry) for key, entry in ordered)


def load_snapshot(path: str | os.PathLike[str], mark: float | str) -> dict:
    """The snapshot of ``mark`` (a budget mark: minutes, or steps under a step budget; or
    ``"final"``) from the snapshot file ``path`` of :class:`BudgetSnapshots`: a dict with
    ``"step"``, ``"minutes"``, ``"elapsed_s"`` and ``"state"`` (the EMA model's state dict).

    Raises:
        FileNotFoundError: if ``path`` is not a file (the run kept no snapshots), naming it.
        ValueError: if it holds no snapshot at ``mark``, listing the marks it holds.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (train with --snapshots to keep snapshots)")
    stored: dict = torch.load(path, weights_only=False, map_location="cpu")
    for key, entry in stored.items():
        if key == mark or (key != FINAL and not isinstance(mark, str) and abs(float(key) - float(mark)) < 1e-9):
            return entry
    raise ValueError(f"{path} holds no snapshot at {mark!r}; it holds: {describe_snapshots(stored) or 'none'}")


def checkpoint_elapsed_s(checkpoint_path: str | os.PathLike[str], *, restart: bool = False) -> float:
    """The training seconds already spent by the run of ``checkpoint_path`` (a checkpoint of
    :func:`gm.train.train`; 0 if it does not exist or the run restarts): the ``prior_s`` of a
    resumed :class:`BudgetSnapshots`."""
    path = Path(checkpoint_path)
    if restart or not path.exists():
        return 0.0
    return float(torch.load(path, weights_only=False, map_location="cpu").get("elapsed", 0.0))


class BudgetSnapshots:
    """The EMA weights at budget marks (minutes of training) of one run, taken at the trainer's
    validations.

    For each mark it keeps the last state at or before it (up to ``slack_s`` seconds, or 2% of
    the mark, after it, whichever is less: the final validation follows the last step). Every
    :meth:`take` is written to ``path`` at once (atomically; states on the CPU, one copy shared
    by the marks it stands for), the marks not yet passed flagged provisional, so an
    interrupted run loses no snapshot: on resume a provisional state whose mark has passed is
    kept as final. Without marks (a step budget) it keeps the state of the last validation,
    the end of the run, under the key ``"final"``.

    Args:
        path: the snapshot file (a ``torch.save`` of ``{mark: entry}``; read on resume).
        marks: budgets in minutes (may be empty), or in optimiser steps with ``unit="steps"``
            (a step budget: the state of the last validation at or before each mark; validate
            at the marks, e.g. every ``gcd`` of them, to take them exactly).
        prior_s: training seconds already done by a resumed run (:func:`checkpoint_elapsed_s`).
        slack_s: how long after a mark (minutes) a state still counts for it.
        unit: ``"minutes"`` or ``"steps"``.

    Attributes:
        step: the step count recorded with a snapshot; :meth:`wrap`'s ``loss_fn`` keeps it.
        saved: final snapshots ``{mark: {"minutes", "step", "elapsed_s", "state"}}``.
        pending: provisional snapshots of the marks not yet passed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        marks: list[float],
        prior_s: float,
        slack_s: float = 3.0,
        unit: str = "minutes",
    ) -> None:
        if unit not in ("minutes", "steps"):
            raise ValueError(f"unit must be 'minutes' or 'steps', got {unit!r}")
        self.path, self.marks, self.slack, self.unit = Path(path), sorted(marks), slack_s, unit
        stored: dict = torch.load(self.path, weights_only=False, map_location="cpu") if self.path.exists() else {}
        self.saved: dict[Any, dict] = {}
        self.pending: dict[Any, dict] = {}
        for key, entry in stored.items():
            # a step mark has passed once a later state was taken (a resumed run decides at its
            # next validation); a minute mark once the run's clock is past it
            # (the final state is never passed: a resumed or extended run takes it again)
            passed = key != FINAL and unit == "minutes" and prior_s > self._deadline(key)
            if entry.pop("provisional", False) and not passed:
                self.pending[key] = entry
            else:
                self.saved[key] = entry
        self.prior_s = prior_s
        self.start = time.perf_counter() - prior_s
        self.begun = False
        self.step = 0

    @classmethod
    def for_run(
        cls,
        checkpoint_path: str | os.PathLike[str],
        marks: list[float],
        *,
        unit: str = "minutes",
        restart: bool = False,
        path: str | os.PathLike[str] | None = None,
    ) -> BudgetSnapshots:
        """The snapshots of the run of ``checkpoint_path``, in ``path`` (default
        :func:`snapshots_path`): resumed with the seconds the checkpoint has already trained, or,
        with ``restart``, started afresh (rank 0 removes the old file)."""
        from gm.train.distributed import is_main_process

        path = snapshots_path(checkpoint_path) if path is None else Path(path)
        if restart and is_main_process():
            path.unlink(missing_ok=True)
        return cls(path, marks, checkpoint_elapsed_s(checkpoint_path, restart=restart), unit=unit)

    def begin(self) -> None:
        """Start the marks' clock at the trainer's first step in this process (as the trainer
        starts its own), once: its set-up (the optimiser, a checkpoint to resume) takes seconds,
        a large share of a quick run's budget, and is not training time."""
        if not self.begun:
            self.start, self.begun = time.perf_counter() - self.prior_s, True

    def _deadline(self, mark: float) -> float:
        if self.unit == "steps":
            return mark
        return 60 * mark + min(self.slack, 1.2 * mark)

    def take(self, model: nn.Module) -> None:
        """Store ``model``'s state (the EMA model given to ``val_fn``) for every mark it may
        stand for, and write the file."""
        now = time.perf_counter() - self.start
        progress = self.step if self.unit == "steps" else now
        state = None
        keys: list[Any] = list(self.marks) or [FINAL]
        for key in keys:
            if key in self.saved and key != FINAL:
                continue
            if key == FINAL or progress <= self._deadline(key):
                if state is None:
                    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                self.pending[key] = {
                    "minutes": None if key == FINAL or self.unit == "steps" else key,
                    "step": self.step,
                    "elapsed_s": now,
                    "state": state,
                }
            elif key in self.pending:
                self.saved[key] = self.pending.pop(key)
        self._write()

    def wrap(
        self,
        loss_fn: Callable[[nn.Module, int, torch.Generator], torch.Tensor],
        val_fn: Callable[[nn.Module], float],
    ) -> tuple[Callable[[nn.Module, int, torch.Generator], torch.Tensor], Callable[[nn.Module], float]]:
        """``loss_fn`` and ``val_fn`` of :func:`gm.train.train` that also run the snapshots:
        the loss starts the clock (:meth:`begin`) and counts the steps, the validation takes a
        snapshot (:meth:`take`) before it scores."""

        def counting_loss(model: nn.Module, step: int, generator: torch.Generator) -> torch.Tensor:
            self.begin()
            self.step = step + 1
            return loss_fn(model, step, generator)

        def snapshotting_val(model: nn.Module) -> float:
            self.take(model)
            return val_fn(model)

        return counting_loss, snapshotting_val

    def _write(self) -> None:
        state = {**self.saved, **{k: {**v, "provisional": True} for k, v in self.pending.items()}}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def finish(self) -> dict[Any, dict]:
        """Make every pending snapshot final (the run is over), write the file and return all."""
        self.saved.update(self.pending)
        self.pending = {}
        self._write()
        return self.saved
