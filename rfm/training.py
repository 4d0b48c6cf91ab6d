"""Training utilities shared by the benchmarks and users: seeded runs, AdamW with linear
warmup + cosine decay (by steps or by the elapsed fraction of a wall-clock budget), gradient
clipping, EMA weights, periodic validation with best-EMA model selection, a tqdm progress bar
with the running loss, and atomic checkpoints that resume exactly where a run stopped."""
from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

__all__ = ["seed_everything", "EMA", "TrainConfig", "TrainResult", "train", "lr_factor",
           "save_checkpoint", "load_checkpoint"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU ``torch.Generator`` seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    ``shadow = d * shadow + (1 - d) * param`` with ``d = min(decay, (1 + n) / (10 + n))`` after
    ``n`` updates, so early averages are not dominated by the initial weights.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)

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


@dataclass
class TrainConfig:
    """Optimisation settings. Training stops at ``max_steps`` or ``max_minutes`` (wall clock,
    including validation), whichever comes first; at least one must be set."""

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike) -> dict:
    return torch.load(Path(path), map_location="cpu", weights_only=False)


# Fields that may change between a run and its resumption: the budget (extending a run is what
# resuming is for) and what is only reported or how often it is done.
_RESUMABLE_FIELDS = ("max_steps", "max_minutes", "eval_every", "eval_every_minutes", "checkpoint_every_minutes",
                     "progress")


def _config_mismatch(saved: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    if saved is None:  # checkpoints written before configs were recorded
        return []
    keys = sorted(set(saved) | set(current))
    return [f"{k}: checkpoint {saved.get(k, '<unset>')!r}, now {current.get(k, '<unset>')!r}"
            for k in keys if _comparable(saved.get(k)) != _comparable(current.get(k))]


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _optimisation_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _RESUMABLE_FIELDS}


def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, int, torch.Generator], torch.Tensor],
    config: TrainConfig,
    *,
    val_fn: Callable[[nn.Module], float] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
    run_config: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` by minimising ``loss_fn(model, step, generator)`` (which draws its own batch).

    Validation (``val_fn(model) -> float``, lower is better) runs with the EMA weights every
    ``eval_every`` steps / ``eval_every_minutes`` and at the end; the best EMA weights are kept
    in ``TrainResult.best_state``. With ``checkpoint_path``, the full state (model, EMA,
    optimiser, step, elapsed time, RNG states, best validation) is saved atomically every
    ``checkpoint_every_minutes`` and at the end, and a run resumes from it when ``resume``.

    A checkpoint records ``config`` and ``run_config`` (the caller's settings that define the
    run: data, model, loss). Resuming with different values raises ``ValueError`` listing them,
    so a changed setting never silently continues an old run; the budget (``max_steps``,
    ``max_minutes``) and the evaluation/checkpoint frequencies may change, to extend a run.
    """
    if config.max_steps is None and config.max_minutes is None:
        raise ValueError("config must set max_steps or max_minutes")
    generator = seed_everything(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    ema = EMA(model, config.ema_decay)
    step, elapsed, best_val, best_step, best_state, history = 0, 0.0, None, None, None, []
    resumed_elapsed = 0.0

    if checkpoint_path is not None and resume and Path(checkpoint_path).exists():
        ck = load_checkpoint(checkpoint_path)
        changed = _config_mismatch(None if ck.get("config") is None else _optimisation_fields(ck["config"]),
                                   _optimisation_fields(asdict(config)))
        if run_config is not None:
            changed += _config_mismatch(ck.get("run_config"), dict(run_config))
        if changed:
            raise ValueError(
                f"checkpoint_path {checkpoint_path} was made with other settings ({'; '.join(changed)}); "
                "delete it, pass resume=False, or write to another folder.")
        try:
            model.load_state_dict(ck["model"])
        except RuntimeError as err:
            raise ValueError(
                f"checkpoint_path {checkpoint_path} holds a different model (another architecture or "
                f"config); delete it, pass resume=False, or write to another folder.\n{err}") from None
        opt.load_state_dict(ck["optimizer"])
        ema.load_state_dict(ck["ema"])
        step, elapsed = ck["step"], ck["elapsed"]
        resumed_elapsed = elapsed
        best_val, best_step, best_state, history = ck["best_val"], ck["best_step"], ck["best_state"], ck["history"]
        generator.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])

    def snapshot() -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "ema": ema.state_dict(),
                "step": step, "elapsed": elapsed, "best_val": best_val, "best_step": best_step,
                "best_state": best_state, "history": history, "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(), "config": asdict(config),
                "run_config": None if run_config is None else dict(run_config)}

    def validate() -> None:
        nonlocal best_val, best_step, best_state
        model.eval()
        with ema.apply_to(model):
            val = float(val_fn(model))
        model.train()
        history.append({"step": step, "elapsed_s": elapsed, "val": val})
        if math.isfinite(val) and (best_val is None or val < best_val):
            best_val, best_step = val, step
            best_state = copy.deepcopy(ema.shadow)

    def done() -> bool:
        return (config.max_steps is not None and step >= config.max_steps) or (
            config.max_minutes is not None and elapsed >= 60 * config.max_minutes)

    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.max_steps, initial=step, desc="train", leave=False, dynamic_ncols=True)
    start = time.perf_counter() - elapsed
    last_eval, last_ckpt, running = elapsed, elapsed, None
    model.train()
    while not done():
        progress = max(step / config.max_steps if config.max_steps else 0.0,
                       elapsed / (60 * config.max_minutes) if config.max_minutes else 0.0)
        for group in opt.param_groups:
            group["lr"] = config.lr * lr_factor(step, progress, config.warmup_steps, config.min_lr_ratio)
        loss = loss_fn(model, step, generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        ema.update(model)
        step += 1
        elapsed = time.perf_counter() - start
        loss_value = float(loss.detach())
        running = loss_value if running is None else 0.98 * running + 0.02 * loss_value
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", best_val=f"{best_val:.4f}" if best_val is not None else "-")
        if val_fn is not None and (
            (config.eval_every and step % config.eval_every == 0)
            or (config.eval_every_minutes and elapsed - last_eval >= 60 * config.eval_every_minutes)
        ):
            validate()
            last_eval = elapsed = time.perf_counter() - start
        if checkpoint_path is not None and elapsed - last_ckpt >= 60 * config.checkpoint_every_minutes:
            save_checkpoint(checkpoint_path, snapshot())
            last_ckpt = elapsed
    if bar is not None:
        bar.close()
    if val_fn is not None and (not history or history[-1]["step"] != step):
        validate()
    if best_state is None:
        best_state = copy.deepcopy(ema.shadow)
    elapsed = time.perf_counter() - start
    if checkpoint_path is not None:
        save_checkpoint(checkpoint_path, snapshot())
    return TrainResult(steps=step, wall_time_s=elapsed, best_val=best_val, best_step=best_step, history=history,
                       best_state=best_state, final_state=copy.deepcopy(model.state_dict()),
                       resumed_elapsed_s=resumed_elapsed)
