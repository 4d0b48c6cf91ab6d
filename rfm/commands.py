"""The ``rdfm`` subcommands of ``rfm`` (registered in pyproject.toml under ``rdfm.commands``):
densities on the sphere fitted to ``lat,lon`` files.

- ``rdfm earth fit FILE.csv --out DIR``: :func:`rfm.sphere_density.fit_sphere_density` on the
  file's points; writes ``DIR/checkpoint.pt`` (resumable, with its metrics and loss plot beside
  it), ``DIR/density.png`` (Mollweide maps of data, samples and log-density) and
  ``DIR/results.json`` (validation and test NLL in nats per point).
- ``rdfm earth sample --run DIR --n N -o FILE.csv``: ``lat,lon`` rows sampled from a fitted
  density, in the format ``fit`` reads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gm.cli import (
    CommandLineError,
    add_config_overrides,
    add_run_arguments,
    add_subcommand,
    apply_config_overrides,
    check_device,
    rank_batch,
    run_budget,
    set_threads,
)

DEFAULT_MINUTES = 5.0
CHECKPOINT = "checkpoint.pt"
PLOT = "density.png"
RESULTS = "results.json"

FIT_EXAMPLES = """  rdfm earth fit quakes.csv --out runs/quakes --minutes 5
  rdfm earth fit quakes.csv --out runs/quakes --minutes 10        # resumes and trains on
  rdfm earth fit fires.csv --out runs/fires --steps 2000 --fourier-scale 8 --device cuda

FILE.csv holds one event per row as latitude,longitude in degrees (after # comments and an
optional header line such as lat,lon). The points are split 80/10/10 into train, validation
(model selection) and test sets; the test NLL is in nats per point (uniform on the sphere:
2.531). DIR (--out, default runs/<FILE's name>) gets checkpoint.pt (resumed by the same
command with the same settings), density.png and results.json."""

SAMPLE_EXAMPLES = """  rdfm earth sample --run runs/quakes --n 1000 -o quake_samples.csv
  rdfm earth fit quake_samples.csv --out runs/resampled --minutes 5   # the same format"""


def _points(path: Path) -> Any:
    """The ``lat,lon`` rows of ``path`` as unit vectors; the user's errors as one line."""
    import torch

    from rfm.geospatial import load_latlon
    from rfm.sphere_density import minimum_points

    if not path.is_file():
        raise CommandLineError(f"{path}: no such file (expected latitude,longitude rows in degrees)")
    try:
        points = load_latlon(path, dtype=torch.float32)
    except ValueError as error:  # a malformed row or value (named with its line), or not text (UnicodeDecodeError)
        raise CommandLineError(str(error)) from None
    if len(points) < minimum_points():
        raise CommandLineError(
            f"{path}: {len(points)} points; fitting needs at least {minimum_points()} "
            "(an 80/10/10 split into train, validation and test points)"
        )
    return points


def _fingerprint(points: Any) -> str:
    """A short hash of the points: a checkpoint resumes only on the data it was trained on."""
    return hashlib.sha256(points.numpy().tobytes()).hexdigest()[:16]


def run_fit(args: argparse.Namespace) -> int:
    """``rdfm earth fit``: fit, then write the plot and the results and print a summary."""

    from gm import resolve_precision
    from gm.files import atomic_write
    from rfm.sphere_density import SphereDensityConfig, fit_sphere_density

    start = time.perf_counter()
    check_device(args.device)  # first: under torchrun it selects this rank's GPU
    source = Path(args.file)
    points = _points(source)
    config = apply_config_overrides(SphereDensityConfig(), args)
    try:
        resolve_precision(config.mixed_precision, args.device)  # a bad value fails before any work
    except ValueError as error:
        raise CommandLineError(f"--mixed-precision: {error}") from None
    budget = run_budget(
        args.minutes,
        args.steps,
        default_minutes=DEFAULT_MINUTES,
        eval_every_minutes=config.eval_every_minutes,
        compile=args.compile,
    )
    rank_batch(config.batch)
    set_threads(args.threads)
    out = Path(args.out) if args.out else Path("runs") / source.stem
    print(f"[earth] {source}: {len(points)} points; training for {budget.describe()} -> {out}", flush=True)
    fit = fit_sphere_density(
        points,
        config,
        seed=args.seed,
        device=args.device,
        **budget.train_fields(),
        checkpoint_path=out / CHECKPOINT,
        resume=not args.restart,
        run_settings={"data": _fingerprint(points)},
        progress=not args.no_progress,
    )
    if fit.rank != 0:
        return 0  # data-parallel run: rank 0 evaluates and writes
    assert fit.val_nll is not None and fit.test_nll is not None  # rank 0 evaluates
    written = [out / CHECKPOINT]
    loss_plot = out / "checkpoint.metrics.png"  # drawn by the trainer where matplotlib is installed
    if loss_plot.is_file():
        written.append(loss_plot)
    if not args.no_plot:
        try:
            written.append(fit.plot(out / PLOT, title=f"{source.name}: test NLL {fit.test_nll:.3f} nats per point"))
        except ImportError:
            print("[earth] no density plot: matplotlib is not installed (pip install matplotlib)")
    results = {
        "data": str(source),
        "seed": args.seed,
        "n_points": len(points),
        "n_train": fit.n_train,
        "n_val": fit.n_val,
        "n_test": fit.n_test,
        "steps": fit.steps,
        "best_step": fit.best_step,
        **budget.record_fields(),
        "val_nll": fit.val_nll,
        "test_nll": fit.test_nll,
        "nll_unit": "nats per point",
        "uniform_nll": math.log(4 * math.pi),
        "likelihood_solver": fit.likelihood_solver(),
        "precision": fit.precision.name,
        "config": asdict(config),
        "wall_time_s": time.perf_counter() - start + fit.train_result.resumed_elapsed_s,
    }
    written.append(atomic_write(out / RESULTS, json.dumps(results, indent=2) + "\n"))
    print(
        f"[earth] {fit.steps} steps (selected step {fit.best_step}): val NLL {fit.val_nll:.3f}, "
        f"test NLL {fit.test_nll:.3f} nats per point ({fit.n_test} test points; uniform: {math.log(4 * math.pi):.3f})"
    )
    print(f"[earth] wrote {', '.join(str(path) for path in written)}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    """``rdfm earth sample``: ``lat,lon`` rows sampled from the fitted density of ``--run``."""
    from gm.files import atomic_write
    from rfm.geospatial import xyz_to_latlon
    from rfm.sphere_density import load_sphere_density, sample_sphere_density

    if args.n < 1:
        raise CommandLineError(f"--n must be >= 1, got {args.n}")
    if args.steps < 1:
        raise CommandLineError(f"--steps must be >= 1, got {args.steps}")
    check_device(args.device)
    checkpoint = Path(args.run_dir) / CHECKPOINT
    if not checkpoint.is_file():
        raise CommandLineError(
            f"{checkpoint}: no such file (fit one with: rdfm earth fit FILE.csv --out {args.run_dir})"
        )
    try:
        model = load_sphere_density(checkpoint, args.device)
    except ValueError as error:
        raise CommandLineError(str(error)) from None
    latlon = xyz_to_latlon(sample_sphere_density(model, args.n, steps=args.steps, seed=args.seed).double().cpu())
    rows = "".join(f"{lat:.6f},{lon:.6f}\n" for lat, lon in latlon.tolist())
    path = atomic_write(args.output, "lat,lon\n" + rows)
    print(f"[earth] wrote {args.n} samples (lat,lon in degrees) to {path}")
    return 0


def register(subcommands: Any) -> None:
    """Add this package's subcommands to ``rdfm`` (see :mod:`gm.cli`): the group ``earth``."""
    from rfm.sphere_density import SphereDensityConfig

    earth = subcommands.add_parser(
        "earth",
        help="fit densities on the sphere to latitude,longitude events and sample them",
        description="Densities on the sphere S^2 by Riemannian flow matching: fit one to a lat,lon file "
        "(exact test likelihood, Mollweide plot), sample a fitted one.",
    )
    commands = earth.add_subparsers(dest="earth_command", metavar="COMMAND", required=True)
    fit = add_subcommand(
        commands,
        "fit",
        run_fit,
        help="fit a density to the latitude,longitude rows of a CSV file",
        examples=FIT_EXAMPLES,
    )
    fit.add_argument("file", metavar="FILE.csv", help="latitude,longitude rows in degrees")
    add_run_arguments(  # "": runs/<FILE's name>
        fit, minutes=DEFAULT_MINUTES, out="", out_help="the run folder (default runs/<FILE's name>; resumed)"
    )
    fit.add_argument("--seed", type=int, default=0, help="seed of the split, the initialisation and training")
    fit.add_argument("--no-plot", action="store_true", help="skip the Mollweide density plot")
    add_config_overrides(fit, SphereDensityConfig())
    sample = add_subcommand(
        commands,
        "sample",
        run_sample,
        help="write latitude,longitude rows sampled from a fitted density",
        examples=SAMPLE_EXAMPLES,
    )
    sample.add_argument(
        "--run", dest="run_dir", required=True, metavar="DIR", help="the --out folder of rdfm earth fit"
    )
    sample.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    sample.add_argument("-o", "--output", required=True, metavar="FILE.csv", help="where to write lat,lon rows")
    sample.add_argument("--seed", type=int, default=0, help="seed of the samples")
    sample.add_argument("--steps", type=int, default=64, help="rk4 steps of the flow (default 64)")
    sample.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
