"""The settings of a training run (:class:`TrainConfig`) and their checks, what a run returns
(:class:`TrainResult`), and the learning-rate schedule (:func:`lr_factor`): linear warmup, then
cosine decay by steps or by the elapsed fraction of a wall-clock budget."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

__all__ = ["TrainConfig", "TrainResult", "lr_factor", "describe_budget"]


@dataclass
class TrainConfig:
    """Optimisation settings. Training stops at ``max_steps`` or ``max_minutes`` (wall clock,
    including validation), whichever comes first; at least one must be set.

    Progress output goes to stderr when ``progress``: a tqdm bar where stderr is a terminal (or
    a Jupyter kernel), otherwise a plain line every ``progress_every_s`` seconds, so logs of
    ``nohup`` runs, CI and pipes get no carriage-return flood. ``progress_bar`` overrides the
    choice (``True``: always the bar, ``False``: always plain lines, ``None``: automatic).
    ``val_name`` names the validation value in that output (``"best <val_name> ..."``): say
    what ``val_fn`` measures and how, e.g. ``"val NLL (16 rk4 steps)"``, when a script reports
    another estimate of the same quantity afterwards.

    ``compile``: ``torch.compile`` the model for the training steps (``loss_fn`` receives the
    compiled module; validation, EMA and checkpoints use the plain one, which shares its
    parameters): ``True`` (torch's default mode, ``fullgraph=True``: a graph break raises
    instead of silently splitting the graph) or a mode name (``"reduce-overhead"``: CUDA
    graphs, for static shapes; ``"max-autotune"``). The first steps pay the compilation (seconds
    on a GPU, up to minutes for the IPA network on a CPU), so it pays on long runs; off by
    default. Under ``torchrun`` the DDP-wrapped model is compiled without ``fullgraph`` (DDP
    splits the graph at its gradient buckets). A run may resume with another setting.

    ``tf32``: on CUDA, float32 matrix products and convolutions of the training steps use
    TensorFloat-32 (``torch.backends.cuda.matmul.allow_tf32``, as FrameFlow and Multiflow
    train): a 10-bit mantissa in the products, far below the gradient noise of a minibatch.
    Validation (``val_fn``) runs in full float32, so reported numbers do not change; the
    previous settings are restored when ``train`` returns. No effect on the CPU.

    Metrics (:mod:`gm.train.metrics`; rank 0): a JSON-lines file with a row of means every
    ``log_every_s`` seconds (loss, learning rate, gradient norm before clipping, time per step)
    and a row per validation, where ``train(..., metrics_path=...)`` says or, by default,
    beside the checkpoint (``run.pt`` -> ``run.metrics.jsonl``); with ``tensorboard`` the same
    scalars as TensorBoard events in ``run.metrics.tensorboard/`` when the ``tensorboard``
    package is installed; with ``wandb_project`` a Weights & Biases run in that project
    (``WANDB_MODE=offline`` logs without an account; the ``wandb`` package is needed); with
    ``loss_plot`` a figure of the curves, ``run.metrics.png``, when the run ends (matplotlib,
    if installed). Rows cost one read-back each, never one per step.
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    max_steps: int | None = None
    max_minutes: float | None = None
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    eval_every: int | None = None
    eval_every_minutes: float | None = None
    # also validate at the first step past each of these elapsed minutes (budget marks: the EMA
    # snapshots of a quality-against-compute curve, gm.train.BudgetSnapshots)
    eval_at_minutes: tuple[float, ...] = ()
    checkpoint_every_minutes: float = 2.0
    seed: int = 0
    progress: bool = True
    progress_bar: bool | None = None
    progress_every_s: float = 10.0
    val_name: str = "val"
    compile: bool | str = False
    tf32: bool = True
    log_every_s: float = 5.0
    tensorboard: bool = True
    wandb_project: str | None = None
    loss_plot: bool = True

    @classmethod
    def from_config(cls, config: Any, **settings: Any) -> TrainConfig:
        """The training settings of a model's dataclass ``config``: those of its fields that
        ``TrainConfig`` also has (``lr``, ``warmup_steps``, ``ema_decay``, ``min_lr_ratio``,
        ``weight_decay``, ``eval_every_minutes``, ...; never ``seed``), then ``settings`` (the
        budget, the seed, what the trainer of that model fixes), which take precedence, ``None``
        included.

        Raises:
            ValueError: if ``config`` is not a dataclass instance.
        """
        if not is_dataclass(config) or isinstance(config, type):
            raise ValueError(f"config must be a dataclass instance, got {type(config).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(settings) - names
        if unknown:
            raise ValueError(f"settings has fields TrainConfig does not: {sorted(unknown)}")
        shared = {
            f.name: getattr(config, f.name)
            for f in fields(config)
            if f.name in names and f.name not in settings and f.name != "seed"
        }
        return cls(**shared, **settings)


@dataclass
class TrainResult:
    steps: int
    wall_time_s: float
    best_val: float | None
    best_step: int | None
    history: list[dict] = field(default_factory=list)
    best_state: dict | None = None
    final_state: dict | None = None
    resumed_elapsed_s: float = 0.0  # training time spent before this call (0 unless resumed)
    world_size: int = 1  # processes that trained together (torchrun); see train()
    rank: int = 0


def lr_factor(step: int, progress: float, warmup_steps: int, min_lr_ratio: float) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay from 1 to ``min_lr_ratio`` as
    ``progress`` (fraction of the step or time budget used) goes from 0 to 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def describe_budget(max_steps: int | None, max_minutes: float | None) -> str:
    """``"2000 steps"``, ``"10 min"`` or ``"2000 steps or 10 min"``, for log lines."""
    parts = []
    if max_steps is not None:
        parts.append(f"{max_steps} steps")
    if max_minutes is not None:
        parts.append(f"{max_minutes:g} min")
    return " or ".join(parts)


def _check_eval_marks(config: TrainConfig) -> None:
    marks = config.eval_at_minutes
    if not isinstance(marks, (tuple, list)) or not all(
        isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) and m > 0 for m in marks
    ):
        raise ValueError(f"config.eval_at_minutes must be a sequence of minutes > 0, got {marks!r}")


def _check_metric_settings(config: TrainConfig) -> None:
    value = config.log_every_s
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"config.log_every_s must be a finite number of seconds >= 0, got {value!r}")
    if config.wandb_project is not None and (not isinstance(config.wandb_project, str) or not config.wandb_project):
        raise ValueError(f"config.wandb_project must be a non-empty project name or None, got {config.wandb_project!r}")
    if config.wandb_project is not None:
        try:  # on every rank and before any file is touched
            import wandb  # noqa: F401
        except ImportError:
            raise ValueError(
                f"config.wandb_project={config.wandb_project!r} needs the wandb package "
                "(pip install wandb; WANDB_MODE=offline logs without an account)"
            ) from None


_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _check_compile(value: Any) -> None:
    if value is not False and value is not True and value not in _COMPILE_MODES:
        raise ValueError(f"config.compile must be True, False or one of {_COMPILE_MODES}, got {value!r}")
