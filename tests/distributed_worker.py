"""A training run for the data-parallel tests, launched by ``torchrun`` (or run as one plain
process): a small deterministic regression problem whose batch each rank draws from its own
generator (``gm.train.distributed.rank_batch_size`` of the global batch).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_worker.py \
        --out DIR [--dtype float64] [--steps K] [--kill-at STEP] [--raise-at STEP]

Rank 0 writes ``DIR/result.pt`` (final and best parameters, steps, world size); with
``--kill-at`` rank 1 kills itself (SIGKILL, as a preempted job) at that step, with
``--raise-at`` it raises.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gm.train import TrainConfig, train  # noqa: E402
from gm.train.distributed import finish, rank_batch_size, world  # noqa: E402

GLOBAL_BATCH = 8
W_TRUE = torch.tensor([[1.5, -2.0, 0.5]])


def make_model(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)).to(dtype)


def draw(generator: torch.Generator, batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 3, generator=generator, dtype=torch.float64)
    y = torch.sin(x @ W_TRUE.double().T)
    return x.to(dtype), y.to(dtype)


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((model(x) - y) ** 2).mean()


def val_fn(model: nn.Module) -> float:
    dtype = next(model.parameters()).dtype
    x, y = draw(torch.Generator().manual_seed(123), 64, dtype)
    with torch.no_grad():
        return float(loss_of(model, x, y))


def config(steps: int, compile: bool = False) -> TrainConfig:
    return TrainConfig(
        lr=1e-2,
        warmup_steps=3,
        max_steps=steps,
        eval_every=4,
        ema_decay=0.9,
        grad_clip=0.5,
        checkpoint_every_minutes=0.0,
        seed=7,
        progress=False,
        compile=compile,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--raise-at", type=int, default=None)
    parser.add_argument("--checkpoint", action="store_true")
    parser.add_argument("--compile", action="store_true", help="TrainConfig(compile=True): DDP + torch.compile")
    parser.add_argument(
        "--rank1-disk", default=None, help="rank 1's folder for the checkpoint path (a node without rank 0's disk)"
    )
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(1)
    batch = rank_batch_size(GLOBAL_BATCH)

    def loss_fn(model: nn.Module, step: int, generator: torch.Generator) -> torch.Tensor:
        rank = world().rank
        if rank == 1 and step == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if rank == 1 and step == args.raise_at:
            raise RuntimeError(f"boom from rank 1 at step {step}")
        return loss_of(model, *draw(generator, batch, dtype))

    out = Path(args.out)
    model = make_model(dtype)
    folder = Path(args.rank1_disk) if args.rank1_disk and world().rank == 1 else out
    result = train(
        model,
        loss_fn,
        config(args.steps, args.compile),
        val_fn=val_fn,
        checkpoint_path=folder / "checkpoint.pt" if args.checkpoint else None,
    )
    if result.rank == 0:
        torch.save(
            {
                "final": result.final_state,
                "best": result.best_state,
                "steps": result.steps,
                "history": result.history,
                "world_size": result.world_size,
            },
            out / "result.pt",
        )
    finish()


if __name__ == "__main__":
    main()
