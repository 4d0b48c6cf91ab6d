"""Training metrics of :func:`gm.train.train`: a JSON-lines file per run, TensorBoard events
when ``tensorboard`` is installed, Weights & Biases when asked for, and a loss-curve plot.

The file holds one JSON object per line, two kinds of rows:

- ``{"kind": "train", "step", "elapsed_s", "loss", "lr", "grad_norm", "step_ms", "steps"}``:
  means over the ``steps`` training steps since the previous row (``loss``: the training loss;
  ``grad_norm``: the global gradient norm before clipping; ``step_ms``: wall time per step,
  validation excluded), written every ``TrainConfig.log_every_s`` seconds and at the end;
- ``{"kind": "val", "step", "elapsed_s", "val"}``: each validation.

The step sums stay on the device between rows (a row costs one read-back, never a step). A
resumed run keeps the rows up to the checkpoint's step and drops later ones (written after the
checkpoint by the run that stopped), so the file always describes the run that the checkpoint
continues.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor

from gm.files import atomic_write, save_figure

__all__ = ["read_metrics", "plot_metrics", "metrics_path_for"]


def metrics_path_for(checkpoint_path: str | os.PathLike) -> Path:
    """Where a run's metrics go by default: beside its checkpoint, ``<checkpoint stem>.metrics.jsonl``."""
    path = Path(checkpoint_path)
    return path.with_name(f"{path.stem}.metrics.jsonl")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics file (a torn last line, from a killed process, is skipped).

    Raises:
        ValueError: if ``path`` does not exist or a line other than the last is not JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path {path} is not a metrics file (no such file)")
    lines = path.read_text().splitlines()
    rows = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if k == len(lines) - 1:  # torn by a kill mid-write
                break
            raise ValueError(f"path {path}: line {k + 1} is not JSON: {line[:80]!r}") from None
    return rows


class MetricsLog:
    """The trainer's metrics sinks (rank 0 only). ``record`` adds one step's loss and gradient
    norm to device-side sums; ``row`` reads them back and writes one row to every sink."""

    def __init__(
        self,
        path: Path | None,
        *,
        resume_step: int | None,
        tensorboard: bool,
        wandb_project: str | None,
        run_config: Mapping[str, Any] | None,
        val_name: str,
    ) -> None:
        self.path = path
        self.val_name = val_name
        self.loss_sum: Tensor | None = None
        self.norm_sum: Tensor | None = None
        self.steps = 0
        self.last_elapsed: float | None = None
        self.excluded_s = 0.0  # validation and checkpoint time since the last row
        self.tensorboard: Any = None
        self.wandb: Any = None
        self.file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is None:
                atomic_write(path, "")  # a fresh run starts a fresh file
            elif path.exists():
                kept = [row for row in read_metrics(path) if row.get("step", 0) <= resume_step]
                atomic_write(path, "".join(json.dumps(row) + "\n" for row in kept))
            self.file = open(path, "a")
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:  # tensorboard not installed: the JSON lines only
                    pass
                else:
                    self.tensorboard = SummaryWriter(log_dir=str(path.with_name(f"{path.stem}.tensorboard")))
        else:
            self.file = None
        if wandb_project is not None:
            import wandb  # importable: train() checked it on every rank first

            self.wandb = wandb.init(project=wandb_project, config=dict(run_config or {}), resume="allow")

    def start(self, elapsed: float) -> None:
        self.last_elapsed = elapsed

    def record(self, loss: Tensor | float, grad_norm: Tensor | None) -> None:
        """One training step (no read-back: the sums stay on the loss's device)."""
        value = loss.detach().float() if isinstance(loss, Tensor) else torch.tensor(float(loss))
        self.loss_sum = value.clone() if self.loss_sum is None else self.loss_sum + value.to(self.loss_sum.device)
        if grad_norm is not None:
            norm = grad_norm.detach().float()
            self.norm_sum = norm.clone() if self.norm_sum is None else self.norm_sum + norm.to(self.norm_sum.device)
        self.steps += 1

    def row(self, step: int, elapsed: float, lr: float) -> None:
        """Write the means since the last row (nothing if no step was recorded)."""
        if self.steps == 0 or self.loss_sum is None:
            return
        sums = [self.loss_sum.double()]
        if self.norm_sum is not None:
            sums.append(self.norm_sum.double().to(sums[0].device))
        values = torch.stack(sums).tolist()  # the one read-back of a row
        spent = elapsed - (self.last_elapsed if self.last_elapsed is not None else elapsed) - self.excluded_s
        row = {
            "kind": "train",
            "step": step,
            "elapsed_s": round(elapsed, 3),
            "loss": values[0] / self.steps,
            "lr": lr,
            "grad_norm": values[1] / self.steps if len(values) > 1 else None,
            "step_ms": 1000 * spent / self.steps,
            "steps": self.steps,
        }
        self.loss_sum = self.norm_sum = None
        self.steps, self.last_elapsed, self.excluded_s = 0, elapsed, 0.0
        self._emit(row)

    def validation(self, step: int, elapsed: float, value: float) -> None:
        self._emit({"kind": "val", "step": step, "elapsed_s": round(elapsed, 3), "val": value})

    def exclude(self, seconds: float) -> None:
        """``seconds`` since the last row that were not training steps (validation, checkpoints)."""
        self.excluded_s += seconds

    def _emit(self, row: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        if self.file is not None:
            self.file.write(json.dumps(clean) + "\n")
            self.file.flush()
        scalars = (
            {f"train/{k}": row[k] for k in ("loss", "lr", "grad_norm", "step_ms") if row.get(k) is not None}
            if row["kind"] == "train"
            else {f"val/{self.val_name}": row["val"]}
        )
        if self.tensorboard is not None:
            for name, value in scalars.items():
                self.tensorboard.add_scalar(name, value, row["step"])
        if self.wandb is not None:
            self.wandb.log(scalars, step=row["step"])

    def close(self, failed: bool = False) -> None:
        """Flush and close every sink (idempotent); ``failed`` marks a W&B run as crashed."""
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.wandb is not None:
            self.wandb.finish(exit_code=1 if failed else 0)
            self.wandb = None


def plot_metrics(path: str | os.PathLike, out: str | os.PathLike | None = None, *, title: str | None = None) -> Path:
    """A loss-curve figure of a metrics file (training loss and validation against steps, the
    gradient norm and learning rate below), saved as ``out`` (default: the metrics file with
    ``.png``). Needs matplotlib.

    Raises:
        ValueError: for a missing or unreadable ``path``, or one without training rows.
    """
    rows = read_metrics(path)
    train_rows = [r for r in rows if r.get("kind") == "train" and r.get("loss") is not None]
    val_rows = [r for r in rows if r.get("kind") == "val" and r.get("val") is not None]
    if not train_rows:
        raise ValueError(f"path {path} has no training rows to plot")
    from matplotlib.figure import Figure  # no pyplot: a user's backend and figures are left alone

    out = Path(out) if out is not None else Path(path).with_suffix(".png")
    fig = Figure(figsize=(7, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    steps = [r["step"] for r in train_rows]
    top.plot(steps, [r["loss"] for r in train_rows], lw=1.2, label="training loss (mean per row)")
    if val_rows:
        top.plot([r["step"] for r in val_rows], [r["val"] for r in val_rows], "o-", ms=3, label="validation (EMA)")
    top.set_ylabel("loss")
    top.legend(loc="upper right")
    top.grid(alpha=0.3)
    norms = [(r["step"], r["grad_norm"]) for r in train_rows if r.get("grad_norm") is not None]
    if norms:
        bottom.plot(*zip(*norms), lw=1.0, color="tab:red", label="gradient norm")
        bottom.set_ylabel("gradient norm")
    lr_axis = bottom.twinx()
    lr_axis.plot(steps, [r["lr"] for r in train_rows], lw=1.0, color="tab:gray", label="learning rate")
    lr_axis.set_ylabel("learning rate")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    fig.suptitle(title or Path(path).name)
    fig.tight_layout()
    return save_figure(fig, out, dpi=120)
