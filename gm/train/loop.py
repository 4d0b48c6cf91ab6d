"""The training loop, :func:`train`: seeded runs, AdamW with the schedule of :func:`lr_factor`,
gradient clipping, EMA weights, periodic validation with best-EMA model selection, progress
output, metrics, atomic checkpoints that resume exactly where a run stopped, and data-parallel
training on ``torch.distributed`` under ``torchrun`` (:mod:`gm.train.distributed`)."""

from __future__ import annotations

import copy
import gc
import inspect
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gm.train.checkpoint import (
    CheckpointMismatchError,
    _config_mismatch,
    _optimisation_fields,
    load_checkpoint,
    save_checkpoint,
)
from gm.train.config import (
    TrainConfig,
    TrainResult,
    _check_compile,
    _check_eval_marks,
    _check_metric_settings,
    lr_factor,
)
from gm.train.distributed import World, init_world, launched_by_torchrun, rank_seed
from gm.train.ema import EMA
from gm.train.metrics import MetricsLog, metrics_path_for, plot_metrics
from gm.train.progress import _Progress, _progress_reporter
from gm.train.step import _compiled, _gradient_norm, _LossMonitor, _model_device, _tensor_float32, _tf32_for_training

__all__ = ["train", "seed_everything"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU ``torch.Generator`` seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# Buffers are synchronised once, when DDP wraps the model, not before every forward: a loss that
# calls the model a rank-dependent number of times (self-conditioning drawn per rank) would
# otherwise mismatch the collectives. Recent torch renamed the option.
_NO_BUFFER_SYNC_IN_FORWARD: dict[str, Any] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


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
    ``eval_every`` steps / ``eval_every_minutes``, at the marks ``eval_at_minutes`` and at the
    end; the best EMA weights are kept
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
    (gloo on CPU, NCCL on CUDA with one GPU per local rank; see :mod:`gm.train.distributed`) and
    ``loss_fn`` receives the wrapped model: it must draw this rank's share of the global batch
    (:func:`gm.train.distributed.rank_batch_size`) from ``generator``, which is rank-specific
    (:func:`gm.train.distributed.rank_generator`), so a run is deterministic given its seed and
    world size, and the averaged gradients are those of the global batch. Every rank must call the
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
    :func:`gm.train.distributed.finish` (on success only).
    """
    if config.max_steps is None and config.max_minutes is None:
        raise ValueError("config must set max_steps or max_minutes")
    _check_compile(config.compile)
    _check_eval_marks(config)
    _check_metric_settings(config)
    device = _model_device(model)
    world = init_world(device, process_group)
    if world.distributed and device.type == "cuda":
        if launched_by_torchrun() and device.index != world.local_rank:
            raise ValueError(
                f"model is on {device}, but this rank's GPU is cuda:{world.local_rank} (LOCAL_RANK): "
                "move it with model.to(gm.train.distributed.local_device('cuda'))"
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
        # validation marks still ahead (a resumed run has passed some)
        marks_s = sorted(60 * m for m in config.eval_at_minutes if 60 * m > elapsed)
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
                or (marks_s and now >= marks_s[0])
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
            while marks_s and elapsed >= marks_s[0]:  # `elapsed`: the same on every rank
                marks_s.pop(0)
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
