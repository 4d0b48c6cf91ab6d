"""The trainer shared by every model of the library (flows of rfm, jump processes of dfm, the
protein models): seeded runs, AdamW with linear warmup + cosine decay (by steps or by the
elapsed fraction of a wall-clock budget), gradient clipping, EMA weights, periodic validation
with best-EMA model selection, progress output with the running loss (a tqdm bar on a
terminal, a plain line every few seconds in logs and pipes), atomic checkpoints that resume
exactly where a run stopped (and refuse, with :class:`CheckpointMismatchError`, to resume under
other settings), and data-parallel training on ``torch.distributed`` under ``torchrun``
(:mod:`gm.distributed`)."""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import inspect
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from gm.distributed import World, init_world, launched_by_torchrun, rank_seed
from gm.files import atomic_path
from gm.training_metrics import MetricsLog, metrics_path_for, plot_metrics

__all__ = [
    "seed_everything",
    "EMA",
    "TrainConfig",
    "TrainResult",
    "train",
    "lr_factor",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointMismatchError",
    "UNSET",
    "describe_budget",
]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU ``torch.Generator`` seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    ``shadow = d * shadow + (1 - d) * param`` with ``d = min(decay, (1 + n) / (10 + n))`` after
    ``n`` updates, so early averages are not dominated by the initial weights. One update is one
    fused ``torch._foreach_lerp_`` over all tensors (a handful of kernels, no host read-back),
    not a Python loop of two kernels per tensor.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
        self._pairs: tuple[nn.Module, list[Tensor], list[Tensor]] | None = None

    def _tensors(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
        """``(shadow tensors, the model's tensors)`` in one order; the model's ``state_dict``
        (views of its parameters and buffers, updated in place by the optimiser) is built once
        per model and shadow, not at every step."""
        if self._pairs is None or self._pairs[0] is not model:
            current = model.state_dict()
            keys = [k for k in self.shadow if k in current]
            self._pairs = (model, [self.shadow[k] for k in keys], [current[k].detach() for k in keys])
        return self._pairs[1], self._pairs[2]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        shadow, current = self._tensors(model)
        if shadow:
            # shadow + (1 - d) (v - shadow) = d shadow + (1 - d) v
            torch._foreach_lerp_(shadow, current, 1.0 - d)

    @contextlib.contextmanager
    def apply_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into ``model``."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(backup, strict=False)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
        self._pairs = None


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

    Metrics (:mod:`gm.training_metrics`; rank 0): a JSON-lines file with a row of means every
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


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """``torch.save`` to a temporary file in the same folder, then atomically replace ``path``:
    a crash never leaves a half-written checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    return torch.load(Path(path), map_location="cpu", weights_only=False)


# Fields that may change between a run and its resumption: the budget (extending a run is what
# resuming is for) and what is only reported or how often it is done.
_RESUMABLE_FIELDS = (
    "max_steps",
    "max_minutes",
    "eval_every",
    "eval_every_minutes",
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


def _clock(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from an hour on."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def describe_budget(max_steps: int | None, max_minutes: float | None) -> str:
    """``"2000 steps"``, ``"10 min"`` or ``"2000 steps or 10 min"``, for log lines."""
    parts = []
    if max_steps is not None:
        parts.append(f"{max_steps} steps")
    if max_minutes is not None:
        parts.append(f"{max_minutes:g} min")
    return " or ".join(parts)


def is_interactive(stream: TextIO) -> bool:
    """Whether ``stream`` shows a live display: a terminal, or a Jupyter kernel's output (not a
    tty, but rendered as a widget by ``tqdm.auto``)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a file-like object without isatty, or a closed one
        tty = False
    return tty or "ipykernel" in sys.modules


class _Progress:
    """How :func:`train` reports on stderr. This base class prints only one-off messages (such
    as a resumption), for ``progress=False``; subclasses add the running progress."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.stream = sys.stderr  # looked up now: test harnesses and notebooks replace it

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, step: int, elapsed: float) -> None:
        """Training begins (or resumes) at ``step`` with ``elapsed`` seconds already spent."""

    def update(self, step: int, elapsed: float, fraction: float, loss: float | None, best_val: float | None) -> None:
        """``step`` is done; ``fraction``: the share of the budget used, as the lr schedule sees it."""

    def close(self, step: int, elapsed: float, fraction: float, loss: float | None, best_val: float | None) -> None:
        """Training has ended."""


class _SilentProgress(_Progress):
    """Ranks other than 0 of a data-parallel run: rank 0 speaks for the run."""

    def message(self, text: str) -> None:
        pass


class _BarProgress(_Progress):
    """A tqdm bar with the running loss and the best validation value, for terminals."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.bar: Any = None  # a tqdm bar from start() on

    def message(self, text: str) -> None:
        if self.bar is None:
            super().message(text)
        else:
            self.bar.write(text, file=self.stream)

    def start(self, step: int, elapsed: float) -> None:
        # Imported here so that progress=False needs no tqdm.
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.config.max_steps, initial=step, desc="train", leave=False, dynamic_ncols=True, file=self.stream
        )

    def update(self, step: int, elapsed: float, fraction: float, loss: float | None, best_val: float | None) -> None:
        self.bar.update(1)
        self.bar.set_postfix(
            ordered_dict={
                "loss": "-" if loss is None else f"{loss:.4f}",
                f"best {self.config.val_name}": "-" if best_val is None else f"{best_val:.4f}",
            },
            refresh=False,
        )

    def close(self, step: int, elapsed: float, fraction: float, loss: float | None, best_val: float | None) -> None:
        self.bar.close()


class _LineProgress(_Progress):
    """A plain line every ``config.progress_every_s`` seconds, for logs and pipes where a bar's
    carriage returns would pile up as one enormous line; plus a first and a last line."""

    def start(self, step: int, elapsed: float) -> None:
        self.first_step, self.first_elapsed = step, elapsed
        self.last_step, self.last_elapsed = step, elapsed
        where = "starting" if step == 0 else f"continuing from step {step}"
        self.message(f"train: {where}, budget {describe_budget(self.config.max_steps, self.config.max_minutes)}")

    def _line(
        self, step: int, elapsed: float, fraction: float, rate: float, loss: float | None, best_val: float | None
    ) -> str:
        c = self.config
        if c.max_steps is not None:
            where = f"step {step}/{c.max_steps} ({100 * fraction:.1f}%)"
        else:
            where = f"step {step} ({100 * fraction:.1f}% of {c.max_minutes:g} min)"
        return (
            f"{where}, {rate:.1f} it/s, loss {'-' if loss is None else f'{loss:.4f}'}, "
            f"best {c.val_name} {'-' if best_val is None else f'{best_val:.4f}'}, {_clock(elapsed)} elapsed"
        )

    def update(self, step: int, elapsed: float, fraction: float, loss: float | None, best_val: float | None) -> None:
        window = elapsed - self.last_elapsed
        if window < self.config.progress_every_s:
            return
        # The rate over the last window, not since the start: it shows slow-downs (validation,
        # a busy machine) when they happen.
        rate = (step - self.last_step) / window
        self.message("train: " + self._line(step, elapsed, fraction, rate, loss, best_val))
        self.last_step, self.last_elapsed = step, elapsed

    def close(self, step: int, elapsed: float, fraction: float, loss: float | None, best_val: float | None) -> None:
        spent = elapsed - self.first_elapsed
        rate = (step - self.first_step) / spent if spent > 0 else 0.0
        self.message("train: done, " + self._line(step, elapsed, fraction, rate, loss, best_val))


def _progress_reporter(config: TrainConfig, main: bool = True) -> _Progress:
    if not main:
        return _SilentProgress(config)
    if not config.progress:
        return _Progress(config)
    bar = is_interactive(sys.stderr) if config.progress_bar is None else config.progress_bar
    return _BarProgress(config) if bar else _LineProgress(config)


# Buffers are synchronised once, when DDP wraps the model, not before every forward: a loss that
# calls the model a rank-dependent number of times (self-conditioning drawn per rank) would
# otherwise mismatch the collectives. Recent torch renamed the option.
_NO_BUFFER_SYNC_IN_FORWARD: dict[str, Any] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


class _Agreement:
    """The one collective per step of a data-parallel run: every rank contributes its loss,
    rank 0 its clock and its decisions (validate, checkpoint), and all ranks read back the mean
    loss and rank 0's values (a sum-reduction where the other ranks contribute zeros). What
    steers training (the learning-rate schedule, stopping) uses only agreed values, so all
    ranks take the same steps and stop on the same one."""

    def __init__(self, world: World, device: torch.device) -> None:
        self.world = world
        backend = dist.get_backend(world.group) if world.distributed else None
        self.device = device if backend == "nccl" else torch.device("cpu")

    def __call__(
        self, loss: float, elapsed: float, validate: bool, checkpoint: bool
    ) -> tuple[float, float, bool, bool]:
        if not self.world.distributed:
            return loss, elapsed, validate, checkpoint
        main = float(self.world.is_main)
        values = torch.tensor(
            [loss / self.world.size, main * elapsed, main * validate, main * checkpoint],
            dtype=torch.float64,
            device=self.device,
        )
        dist.all_reduce(values, group=self.world.group)
        loss, elapsed, validate, checkpoint = values.tolist()
        return loss, elapsed, validate > 0.5, checkpoint > 0.5


class _LossMonitor:
    """The running loss and the first non-finite loss of a single-process run, kept on the
    loss's device so that a training step reads nothing back; :meth:`read` brings them to the
    host (one synchronisation) at progress, validation and checkpoint time."""

    def __init__(self) -> None:
        self.running: Tensor | None = None  # 0.98-EMA of the loss, float32
        self.first_bad: Tensor | None = None  # step of the first non-finite loss, -1 if none
        self.bad_value: Tensor | None = None

    def record(self, loss: Tensor, step: int) -> None:
        value = loss.detach().float()
        if self.running is None or self.first_bad is None or self.bad_value is None:
            self.running = value.clone()
            first_bad = torch.full((), -1, dtype=torch.int64, device=value.device)
            bad_value = torch.zeros((), dtype=torch.float32, device=value.device)
        else:
            self.running.lerp_(value, 0.02)
            first_bad, bad_value = self.first_bad, self.bad_value
        new = ~torch.isfinite(value) & (first_bad < 0)
        self.first_bad = torch.where(new, torch.full_like(first_bad, step), first_bad)
        self.bad_value = torch.where(new, value, bad_value)

    def read(self) -> float | None:
        """The running loss; a ``FloatingPointError`` naming the step if a loss was not finite."""
        if self.running is None or self.first_bad is None or self.bad_value is None:
            return None
        running, first_bad, bad_value = torch.stack(
            [self.running.double(), self.first_bad.double(), self.bad_value.double()]
        ).tolist()
        if first_bad >= 0:
            raise FloatingPointError(
                f"non-finite loss {bad_value} at step {int(first_bad)} (rank 0); the last "
                "checkpoint, written before it, stands"
            )
        return running


def _gradient_norm(model: nn.Module) -> Tensor | None:
    """The global L2 norm of the gradients (as ``clip_grad_norm_`` measures it), on the device."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return None
    total = getattr(nn.utils, "get_total_norm", None)  # torch >= 2.6
    if total is not None:
        return total(grads)
    return torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(grads)]))


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


# How often (seconds) a single-process run reads its loss back: the running loss shown and the
# non-finite check; between reads the steps queue on the device without waiting for it.
_LOSS_READ_EVERY_S = 1.0


def _gather(world: World, value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (a collective: all ranks call it)."""
    if not world.distributed:
        return [value]
    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value, group=world.group)
    return values


_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _check_compile(value: Any) -> None:
    if value is not False and value is not True and value not in _COMPILE_MODES:
        raise ValueError(f"config.compile must be True, False or one of {_COMPILE_MODES}, got {value!r}")


def _compiled(model: nn.Module, setting: bool | str, *, fullgraph: bool) -> nn.Module:
    """``model`` itself, or compiled as ``TrainConfig.compile`` says."""
    if setting is False:
        return model
    # an OptimizedModule: called like the model, sharing its parameters
    return cast(nn.Module, torch.compile(model, fullgraph=fullgraph, mode=None if setting is True else setting))


@contextlib.contextmanager
def _tensor_float32(enabled: bool) -> Iterator[None]:
    """CUDA's TF32 switches for matrix products and cuDNN set to ``enabled`` inside the block,
    restored after."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def _load_selected(model: nn.Module, best_state: dict | None, world: World) -> None:
    """Load the selected EMA weights (rank 0's ``best_state``) into ``model`` on every rank: rank 0
    loads them, then sends its floating-point state to the others (the same tensors in the same
    order on every rank: DDP checked the models agree)."""
    if world.is_main and best_state is not None:
        model.load_state_dict(best_state, strict=False)
    if world.distributed:
        with torch.no_grad():
            for value in model.state_dict().values():
                if value.dtype.is_floating_point:
                    dist.broadcast(value, src=0, group=world.group)


def _plot_run(path: Path, reporter: _Progress) -> None:
    """The run's loss-curve figure beside its metrics (skipped without matplotlib; a failure to
    draw is reported, never fatal: the run's results are already saved)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    try:
        plot_metrics(path)
    except (ValueError, OSError, RuntimeError) as error:
        reporter.message(f"train: could not draw the loss curve of {path}: {error}")


def _tf32_for_training(fn: Callable) -> Callable:
    """Run ``train`` with TF32 on where ``TrainConfig.tf32`` asks for it and the model is on
    CUDA, and the previous switches restored however it ends (return or exception)."""

    @functools.wraps(fn)
    def wrapper(model, loss_fn, config, *args, **kwargs):
        use = getattr(config, "tf32", False) and isinstance(model, nn.Module) and _model_device(model).type == "cuda"
        with _tensor_float32(True) if use else contextlib.nullcontext():
            return fn(model, loss_fn, config, *args, **kwargs)

    return wrapper


@_tf32_for_training
def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, int, torch.Generator], torch.Tensor],
    config: TrainConfig,
    *,
    val_fn: Callable[[nn.Module], float] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
    run_config: Mapping[str, Any] | None = None,
    process_group: dist.ProcessGroup | None = None,
    find_unused_parameters: bool = False,
    load_best: bool = True,
    metrics_path: str | os.PathLike | None = None,
) -> TrainResult:
    """Train ``model`` by minimising ``loss_fn(model, step, generator)`` (which draws its own batch).

    Validation (``val_fn(model) -> float``, lower is better) runs with the EMA weights every
    ``eval_every`` steps / ``eval_every_minutes`` and at the end; the best EMA weights are kept
    in ``TrainResult.best_state`` (the final EMA weights without ``val_fn``).

    **When ``train`` returns, ``model`` holds these selected EMA weights** (``load_best=True``,
    the default; on every rank), so sampling or evaluating right after ``train`` uses the
    weights the run selected. The last raw (optimised, non-averaged) weights are in
    ``TrainResult.final_state``; ``load_best=False`` leaves them in the model instead. The
    checkpoint keeps the raw weights, the EMA and the optimiser, so a resumed run continues
    exactly from the raw state whichever weights the model held. With ``checkpoint_path``, the full state (model, EMA,
    optimiser, step, elapsed time, RNG states, best validation) is saved atomically every
    ``checkpoint_every_minutes`` and at the end, and a run resumes from it when ``resume``.

    A checkpoint records ``config`` and ``run_config`` (the caller's settings that define the
    run: data, model, loss). Resuming with different values raises
    :class:`CheckpointMismatchError` (a ``ValueError``) listing each differing field once, so a
    changed setting never silently continues an old run; the budget (``max_steps``,
    ``max_minutes``), the evaluation/checkpoint frequencies and the progress output may change,
    to extend a run. A resumed run says so on stderr (``resuming from step N (M.M minutes
    done)``), also without ``progress``: a run that starts part-way is worth one line.

    Data-parallel training: under ``torchrun`` with more than one process (or given
    ``process_group``, or with the default group already initialised) every rank calls
    ``train`` with the same arguments. The model is wrapped in ``DistributedDataParallel``
    (gloo on CPU, NCCL on CUDA with one GPU per local rank; see :mod:`gm.distributed`) and
    ``loss_fn`` receives the wrapped model: it must draw this rank's share of the global batch
    (:func:`gm.distributed.rank_batch_size`) from ``generator``, which is rank-specific
    (:func:`gm.distributed.rank_generator`), so a run is deterministic given its seed and world
    size, and the averaged gradients are those of the global batch. Every rank must call the
    wrapped model's forward the same number of times per step when gradients are enabled;
    parameters that a step leaves unused need ``find_unused_parameters=True``. Buffers are not
    re-broadcast at each forward (synchronised once, when the model is wrapped): the
    library's models never change them in training.

    Rank 0 alone keeps the EMA, validates (``val_fn`` gets the plain model), selects the best
    weights, reports progress and writes checkpoints; the other ranks wait for it in the next
    collective. The wall-clock budget, validation and checkpoint decisions are rank 0's, shared
    with all ranks at every step, so all stop on the same step. On ranks other than 0 the
    result has ``best_state``, ``best_val`` and ``history`` empty. Rank 0 reads the checkpoint to
    resume and sends it to the others (no shared disk needed). A checkpoint holds every rank's
    random streams (CPU, and CUDA on GPUs): resumed with the same world size, a run continues
    exactly; with
    another world size, each rank's share of the batch changes (``rank_batch_size``) and the
    ranks draw from fresh streams seeded by ``(seed, rank, step)``. End the run with
    :func:`gm.distributed.finish` (on success only).
    """
    if config.max_steps is None and config.max_minutes is None:
        raise ValueError("config must set max_steps or max_minutes")
    _check_compile(config.compile)
    _check_metric_settings(config)
    device = _model_device(model)
    world = init_world(device, process_group)
    if world.distributed and device.type == "cuda":
        if launched_by_torchrun() and device.index != world.local_rank:
            raise ValueError(
                f"model is on {device}, but this rank's GPU is cuda:{world.local_rank} (LOCAL_RANK): "
                "move it with model.to(gm.distributed.local_device('cuda'))"
            )
        torch.cuda.set_device(device)  # the agreement, gathers and barriers use the current GPU
    generator = seed_everything(rank_seed(config.seed, world.rank))
    # CUDA: the fused AdamW kernel (one launch for all parameters instead of a few per tensor
    # group); elsewhere torch's default implementation. The state dicts are the same either way.
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=config.lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
        fused=True if device.type == "cuda" else None,
    )
    ema = EMA(model, config.ema_decay) if world.is_main else None
    step, elapsed, best_val, best_step, best_state, history = 0, 0.0, None, None, None, []
    resumed_elapsed, resumed, resumed_from_size = 0.0, False, world.size

    ck = None
    if (
        checkpoint_path is not None
        and resume
        and (world.is_main or not world.distributed)
        and Path(checkpoint_path).exists()
    ):
        ck = load_checkpoint(checkpoint_path)
    if world.distributed and checkpoint_path is not None and resume:
        # Rank 0's checkpoint is the run's: the other ranks may not see the file (node-local
        # disks, NFS caches), and every rank must resume from the same step and state.
        shared = [ck]
        dist.broadcast_object_list(shared, src=0, group=world.group)
        ck = shared[0]
    if ck is not None:
        changed = _config_mismatch(
            None if ck.get("config") is None else _optimisation_fields(ck["config"]),
            _optimisation_fields(asdict(config)),
        )
        if run_config is not None:
            # The caller's run_config usually repeats optimiser settings (lr, ema_decay ...): one
            # entry per field, and the caller's own record of it wins.
            changed.update(_config_mismatch(ck.get("run_config"), dict(run_config)))
        if changed:
            assert checkpoint_path is not None  # ck was read from it
            raise CheckpointMismatchError(
                checkpoint_path, [(k, saved, now) for k, (saved, now) in sorted(changed.items())]
            )
        try:
            model.load_state_dict(ck["model"])
        except RuntimeError as err:
            raise ValueError(
                f"checkpoint_path {checkpoint_path} holds a different model (another architecture or "
                f"config); delete it, pass resume=False, or write to another folder.\n{err}"
            ) from None
        opt.load_state_dict(ck["optimizer"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        step, elapsed = ck["step"], ck["elapsed"]
        resumed_elapsed = elapsed
        best_val, best_step, best_state, history = ck["best_val"], ck["best_step"], ck["best_state"], ck["history"]
        resumed_from_size = ck.get("world_size", 1)
        if resumed_from_size == world.size:
            generator.set_state(ck["generators"][world.rank] if "generators" in ck else ck["generator"])
            torch.set_rng_state(ck["torch_rngs"][world.rank] if "torch_rngs" in ck else ck["torch_rng"])
            if device.type == "cuda" and ck.get("cuda_rngs"):
                torch.cuda.set_rng_state(ck["cuda_rngs"][world.rank], device)
        else:
            generator = seed_everything(rank_seed(config.seed, world.rank, step))
        resumed = True
    if not world.is_main:
        best_val, best_step, best_state, history = None, None, None, []

    wrapped: nn.Module = model
    if world.distributed:
        wrapped = DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            process_group=world.group,
            find_unused_parameters=find_unused_parameters,
            **_NO_BUFFER_SYNC_IN_FORWARD,
        )
    agree = _Agreement(world, device)
    stepped = _compiled(wrapped, config.compile, fullgraph=not world.distributed)

    def snapshot(generators: list, torch_rngs: list, cuda_rngs: list | None, elapsed: float) -> dict:
        assert ema is not None  # rank 0's
        return {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "ema": ema.state_dict(),
            "step": step,
            "elapsed": elapsed,
            "best_val": best_val,
            "best_step": best_step,
            "best_state": best_state,
            "history": history,
            "generators": generators,
            "torch_rngs": torch_rngs,
            "cuda_rngs": cuda_rngs,
            "world_size": world.size,
            "config": asdict(config),
            "run_config": None if run_config is None else dict(run_config),
        }

    def checkpoint() -> float:
        """Rank 0 writes the checkpoint (a collective: every rank hands it its random streams);
        returns rank 0's clock as recorded in it."""
        generators = _gather(world, generator.get_state())
        torch_rngs = _gather(world, torch.get_rng_state())
        cuda_rngs = _gather(world, torch.cuda.get_rng_state(device)) if device.type == "cuda" else None
        clock = time.perf_counter() - start
        if world.is_main:
            assert checkpoint_path is not None  # checkpoint() runs only with one
            save_checkpoint(checkpoint_path, snapshot(generators, torch_rngs, cuda_rngs, clock))
        return clock

    def validate() -> None:
        nonlocal best_val, best_step, best_state
        assert ema is not None and val_fn is not None  # rank 0 validates, given a val_fn
        model.eval()
        with ema.apply_to(model), _tensor_float32(False):
            val = float(val_fn(model))
        model.train()
        history.append({"step": step, "elapsed_s": elapsed, "val": val})
        if metrics is not None:
            metrics.validation(step, elapsed, val)
        if math.isfinite(val) and (best_val is None or val < best_val):
            best_val, best_step = val, step
            best_state = copy.deepcopy(ema.shadow)

    def budget_fraction(step: int, elapsed: float) -> float:
        """The share of the budget used: steps or time, whichever is further along."""
        return max(
            step / config.max_steps if config.max_steps else 0.0,
            elapsed / (60 * config.max_minutes) if config.max_minutes else 0.0,
        )

    def done() -> bool:
        return (config.max_steps is not None and step >= config.max_steps) or (
            config.max_minutes is not None and elapsed >= 60 * config.max_minutes
        )

    metrics = None
    if world.is_main:
        where = (
            Path(metrics_path)
            if metrics_path is not None
            else metrics_path_for(checkpoint_path)
            if checkpoint_path is not None
            else None
        )
        if where is not None or config.wandb_project is not None:
            metrics = MetricsLog(
                where,
                resume_step=step if resumed else None,
                tensorboard=config.tensorboard,
                wandb_project=config.wandb_project,
                run_config={**asdict(config), **dict(run_config or {})} if config.wandb_project else None,
                val_name=config.val_name,
            )
    try:
        reporter = _progress_reporter(config, world.is_main)
        if resumed:
            reporter.message(f"train: {checkpoint_path}: resuming from step {step} ({elapsed / 60:.1f} minutes done)")
            if resumed_from_size != world.size:
                reporter.message(
                    f"train: the checkpoint was written by {resumed_from_size} process(es), this run has "
                    f"{world.size}: each rank's share of the batch changes and the ranks draw from fresh "
                    "random streams"
                )
        if world.distributed:
            reporter.message(
                f"train: data-parallel over {world.size} processes ({dist.get_backend(world.group)}, {device.type})"
            )
        reporter.start(step, elapsed)
        start = time.perf_counter() - elapsed
        last_eval, last_ckpt, last_read, last_row, running = elapsed, elapsed, elapsed, elapsed, None
        monitor = _LossMonitor()
        if metrics is not None:
            metrics.start(elapsed)
        model.train()
        # `elapsed` is rank 0's clock as agreed at the last step: the schedule and the stop use it,
        # so all ranks take the same steps. Rank 0 decides validation and checkpoints on its own clock.
        while not done():
            progress = budget_fraction(step, elapsed)
            for group in opt.param_groups:
                group["lr"] = config.lr * lr_factor(step, progress, config.warmup_steps, config.min_lr_ratio)
            loss = loss_fn(stepped, step, generator)
            if world.distributed:
                # the agreement below reads every rank's loss back anyway: check it at once
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {float(loss)} at step {step} (rank {world.rank})")
            else:
                monitor.record(loss, step)  # on the device: no read-back in the step
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = None  # before clipping; measured only where it is clipped or logged
            if config.grad_clip is not None:
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            elif metrics is not None:
                grad_norm = _gradient_norm(model)
            opt.step()
            if ema is not None:
                ema.update(model)
            step += 1
            now = time.perf_counter() - start
            validate_now = val_fn is not None and bool(
                (config.eval_every and step % config.eval_every == 0)
                or (config.eval_every_minutes and now - last_eval >= 60 * config.eval_every_minutes)
            )
            checkpoint_now = checkpoint_path is not None and now - last_ckpt >= 60 * config.checkpoint_every_minutes
            if world.distributed:
                loss_value, elapsed, validate_now, checkpoint_now = agree(
                    float(loss.detach()), now, validate_now, checkpoint_now
                )
                running = loss_value if running is None else 0.98 * running + 0.02 * loss_value
                if metrics is not None:
                    metrics.record(loss_value, grad_norm)
            else:
                elapsed = now
                if metrics is not None:
                    metrics.record(loss, grad_norm)
                # Read the loss back only now and then, and always before validating or writing a
                # checkpoint: a non-finite loss stops the run there, naming its step, and the
                # checkpoint on disk is still the last one written before it.
                if validate_now or checkpoint_now or now - last_read >= _LOSS_READ_EVERY_S:
                    running, last_read = monitor.read(), now
            reporter.update(step, elapsed, budget_fraction(step, elapsed), running, best_val)
            if metrics is not None and now - last_row >= config.log_every_s:
                metrics.row(step, now, opt.param_groups[0]["lr"])
                last_row = now
            if validate_now and world.is_main:
                validate()
                last_eval = time.perf_counter() - start
                if metrics is not None:
                    metrics.exclude(last_eval - now)
            if checkpoint_now:
                if metrics is not None:  # a checkpoint is a row boundary: a resume keeps every row before it
                    metrics.row(step, now, opt.param_groups[0]["lr"])
                    last_row = now
                before = time.perf_counter() - start
                last_ckpt = checkpoint()
                if metrics is not None:
                    metrics.exclude(time.perf_counter() - start - before)
            if not world.distributed:
                elapsed = time.perf_counter() - start  # validation and checkpoint time count at once
        if not world.distributed:
            running = monitor.read() if monitor.running is not None else running
        if metrics is not None:
            metrics.row(step, time.perf_counter() - start, opt.param_groups[0]["lr"])
        if world.is_main:
            if val_fn is not None and (not history or history[-1]["step"] != step):
                validate()
            if best_state is None:
                assert ema is not None  # rank 0's
                best_state = copy.deepcopy(ema.shadow)
        elapsed = time.perf_counter() - start
        reporter.close(step, elapsed, budget_fraction(step, elapsed), running, best_val)
        if checkpoint_path is not None:
            checkpoint()
    finally:
        # closed however the run ends (a non-finite loss, an interrupt): the file, TensorBoard's
        # writer and a W&B run are flushed and finished, so a notebook's next run starts clean
        if metrics is not None:
            metrics.close(failed=sys.exc_info()[0] is not None)
    if metrics is not None:
        if config.loss_plot and metrics.path is not None and metrics.path.stat().st_size:
            _plot_run(metrics.path, reporter)
    if world.distributed:
        dist.barrier(group=world.group)  # no rank leaves before rank 0 has written the checkpoint
        # Release the DDP wrapper now (it sits in reference cycles): its reducer holds the
        # process group and in-flight gloo work, which must not linger until interpreter exit.
        del wrapped, stepped
        gc.collect()
    final_state = copy.deepcopy(model.state_dict())
    if load_best:
        _load_selected(model, best_state, world)
    return TrainResult(
        steps=step,
        wall_time_s=elapsed,
        best_val=best_val,
        best_step=best_step,
        history=history,
        best_state=best_state,
        final_state=final_state,
        resumed_elapsed_s=resumed_elapsed,
        world_size=world.size,
        rank=world.rank,
    )
