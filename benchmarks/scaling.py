"""Data-parallel scaling of the shared trainer: steps/s and samples/s of the earth model (the
256 x 4 Fourier-feature MLP on S^2, batch 512) and the text model (the masked 4-layer
transformer, batch 32 windows of 128 characters) at 1, 2, ... processes under ``torchrun``.

    python -m benchmarks scaling --processes 1 2 --threads 1

Each measurement is its own ``torchrun --standalone`` job running ``gm.train.train`` for
``--warmup`` + ``--steps`` steps; the rate is timed over the last ``--steps`` (after the
process group, the first steps' allocations and DDP's bucket rebuild). Two ways to add
processes:

- ``strong``: the global batch stays the benchmark's (each of N ranks draws batch / N): the
  same training run, in less time. Speed-up = steps/s(N) / steps/s(1).
- ``weak``: each rank draws the full batch (global batch x N): more samples per step.

Parallel efficiency = samples/s(N) / (N x samples/s(1)) in both. The data are random draws of
the right shape (points on S^2, tokens of the KJV's character vocabulary): a step's cost does
not depend on their values, and the measurement needs no dataset. ``--device cuda`` runs one
GPU per rank.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from gm.cli import CommandLineError, check_device

MODELS = ("earth", "text")
MODES = ("strong", "weak")
TEXT_VOCAB = 65  # characters of the KJV after the benchmark's cleaning (the char tokenizer's vocabulary)


def _earth_step(batch: int, device):
    import torch

    from benchmarks.earth import EarthConfig
    from manifolds import Sphere
    from rfm.models import velocity_mlp
    from rfm.objective import RFMObjective

    cfg = EarthConfig()
    sphere = Sphere(2)
    torch.manual_seed(0)
    model = velocity_mlp(
        sphere,
        hidden=cfg.hidden,
        depth=cfg.depth,
        time_frequencies=cfg.time_frequencies,
        fourier_features=cfg.fourier_features,
        fourier_scale=16.0,
    ).to(device)
    objective = RFMObjective(sphere, time_power=2.0, validate=False)

    def loss_fn(m, step, generator):
        x1 = sphere.random_base(batch, generator=generator).to(device)
        return objective(m, x1, generator=generator)

    return model, loss_fn, asdict(cfg)


def _text_step(batch: int, device):
    import torch

    from benchmarks.text import TextConfig, build
    from dfm import MixturePath
    from dfm.loss import masked_cross_entropy
    from gm import training_times

    cfg = TextConfig()
    torch.manual_seed(0)
    model = build(cfg, TEXT_VOCAB, causal=False).to(device)
    path = MixturePath(TEXT_VOCAB, "mask")

    def loss_fn(m, step, generator):
        x1 = torch.randint(0, TEXT_VOCAB, (batch, cfg.length), generator=generator)
        t = training_times(batch, stratified=True, generator=generator)
        x_t = path.sample(None, x1, t, generator=generator).x_t
        x1, x_t, t = x1.to(device), x_t.to(device), t.to(device)
        return masked_cross_entropy(m(x_t, t), x1, x_t, path, validate=False)

    return model, loss_fn, asdict(cfg)


GLOBAL_BATCH = {"earth": 512, "text": 32}


def worker(args: argparse.Namespace) -> None:
    """One measurement, inside torchrun: train, time the last ``args.steps`` steps on rank 0."""
    import torch

    from gm.train import TrainConfig, train
    from gm.train.distributed import finish, init_world, local_device, rank_batch_size

    torch.set_num_threads(args.threads)
    device = local_device(args.device)
    world = init_world(device)
    batch = GLOBAL_BATCH[args.model]
    share = rank_batch_size(batch, world.size) if args.mode == "strong" else batch
    model, loss_fn, config = (_earth_step if args.model == "earth" else _text_step)(share, device)
    marks: dict[str, float] = {}

    def timed_loss(m, step, generator):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            marks["start"] = time.perf_counter()
        return loss_fn(m, step, generator)

    result = train(
        model, timed_loss, TrainConfig(max_steps=args.warmup + args.steps, warmup_steps=10, progress=False, seed=0)
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - marks["start"]
    if world.is_main:
        Path(args.result).write_text(
            json.dumps(
                {
                    "model": args.model,
                    "mode": args.mode,
                    "processes": world.size,
                    "threads": args.threads,
                    "device": str(args.device),
                    "rank_batch": share,
                    "global_batch": share * world.size,
                    "steps": args.steps,
                    "seconds": seconds,
                    "steps_per_s": args.steps / seconds,
                    "samples_per_s": args.steps * share * world.size / seconds,
                    "total_steps": result.steps,
                    "config": config,
                }
            )
        )
    finish()


def measure(model: str, mode: str, processes: int, args: argparse.Namespace) -> dict:
    """Launch one torchrun job and read back its measurement."""
    from gm.train.distributed import TORCHRUN_VARIABLES

    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
    env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "benchmarks.scaling",
            "--worker",
            "--model",
            model,
            "--mode",
            mode,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--threads",
            str(args.threads),
            "--device",
            args.device,
            "--result",
            str(result),
        ]
        run = subprocess.run(command, capture_output=True, text=True, env=env)
        if run.returncode != 0 or not result.exists():
            raise RuntimeError(f"{' '.join(command)} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
        return json.loads(result.read_text())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks scaling", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: earth 300, text 40)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default="runs/scaling")
    parser.add_argument("--quick", action="store_true", help="a few steps per measurement (smoke test)")
    # inside torchrun
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    check_device(args.device)
    if any(n < 1 for n in args.processes):
        raise CommandLineError(f"--processes must be >= 1, got {args.processes}")
    if args.threads < 1 or args.warmup < 1 or (args.steps is not None and args.steps < 1):
        raise CommandLineError("--threads, --warmup and --steps must be >= 1")
    for n in args.processes:
        for model in args.models:
            if "strong" in args.modes and GLOBAL_BATCH[model] % n:
                raise CommandLineError(
                    f"--processes {n}: the {model} batch {GLOBAL_BATCH[model]} does not split "
                    "into equal shares (strong scaling)"
                )
    from benchmarks.results import new_record, write_results

    rows = []
    for model in args.models:
        steps = args.steps or (3 if args.quick else {"earth": 300, "text": 40}[model])
        for mode in args.modes:
            for n in sorted(set(args.processes)):
                run_args = argparse.Namespace(
                    **{**vars(args), "steps": steps, "warmup": 2 if args.quick else args.warmup}
                )
                row = measure(model, mode, n, run_args)
                rows.append(row)
                print(
                    f"[scaling] {model} {mode} x{n}: {row['steps_per_s']:.2f} steps/s, "
                    f"{row['samples_per_s']:.0f} samples/s",
                    flush=True,
                )
    table = [
        "| model | mode | processes x threads | batch per rank | steps/s | samples/s | speed-up | efficiency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = next(
            (r for r in rows if r["model"] == row["model"] and r["mode"] == row["mode"] and r["processes"] == 1), None
        )
        speedup = row["samples_per_s"] / base["samples_per_s"] if base else None
        row["efficiency"] = speedup / row["processes"] if speedup else None
        row["speedup"] = speedup
        table.append(
            f"| {row['model']} | {row['mode']} | {row['processes']} x {row['threads']} | {row['rank_batch']} | "
            f"{row['steps_per_s']:.2f} | {row['samples_per_s']:.0f} | "
            + ("-" if speedup is None else f"{speedup:.2f}x")
            + " | "
            + ("-" if speedup is None else f"{100 * row['efficiency']:.0f}%")
            + " |"
        )
    text = "\n".join(table)
    print("\n" + text)
    record = new_record(
        "scaling",
        args.device,
        0,
        method="data-parallel",
        rows=rows,
        table=text,
        threads=args.threads,
        device=args.device,
    )
    write_results(Path(args.out) / "results.json", record)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
