"""``python -m benchmarks speed``: speed ratios against the published ``flow_matching``
library on identical inputs, in one process, plus the cost and accuracy of our exact
likelihood. Ratios > 1 mean rdfm is faster."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from gm.files import atomic_write
from manifolds import FlatTorus, Sphere
from rfm import GeodesicPath, ODESolver, rfm_loss


def _timeit_pair(ours: Callable[[], object], theirs: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """Median wall times (seconds) of two callables and the median of the per-round ratios
    theirs/ours. The two are timed back to back in alternating order, so load from other
    processes (and slow drifts of the clock speed) affects both sides of a round alike; one
    warm-up call each."""
    ours()
    theirs()
    t_ours, t_theirs = [], []
    for i in range(repeats):
        pair = ((ours, t_ours), (theirs, t_theirs))
        for fn, acc in pair if i % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - start)
    ratio = statistics.median(b / a for a, b in zip(t_ours, t_theirs))
    return statistics.median(t_ours), statistics.median(t_theirs), ratio


class TimeMLP(nn.Module):
    """A plain time-conditioned MLP shared by both libraries' solvers (identical weights)."""

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = dim + 1
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[:-1])[..., None]
        return self.net(torch.cat([x, t], dim=-1))


def path_speed(batch: int, repeats: int) -> list[dict]:
    from flow_matching.path import GeodesicProbPath
    from flow_matching.path.scheduler import CondOTScheduler
    from flow_matching.utils.manifolds import FlatTorus as FMTorus
    from flow_matching.utils.manifolds import Sphere as FMSphere

    rows = []
    gen = torch.Generator().manual_seed(0)
    for name, ours, theirs in (("Sphere(2)", Sphere(2), FMSphere()), ("FlatTorus(2)", FlatTorus(2), FMTorus())):
        x0 = ours.random_base(batch, generator=gen)
        x1 = ours.random_base(batch, generator=gen)
        t = torch.rand(batch, generator=gen)
        our_path = GeodesicPath(ours)
        their_path = GeodesicProbPath(CondOTScheduler(), theirs)
        a = our_path.sample(x0, x1, t)
        b = their_path.sample(x_0=x0, x_1=x1, t=t)
        if isinstance(ours, FlatTorus):
            agree = float(ours.dist(a.x_t, ours.projx(b.x_t)).max())
        else:
            agree = float((a.x_t - b.x_t).abs().max())
        vel_agree = float((a.dx_t - b.dx_t).abs().max())
        t_ours, t_theirs, ratio = _timeit_pair(
            lambda: our_path.sample(x0, x1, t), lambda: their_path.sample(x_0=x0, x_1=x1, t=t), repeats
        )
        rows.append(
            dict(
                what=f"GeodesicPath.sample {name} batch {batch}",
                ours_ms=1e3 * t_ours,
                theirs_ms=1e3 * t_theirs,
                ratio=ratio,
                max_abs_diff_x_t=agree,
                max_abs_diff_dx_t=vel_agree,
                target=">= 3x",
            )
        )
    return rows


def solver_speed(batch: int, steps: int, repeats: int, hidden: int = 256, depth: int = 3) -> list[dict]:
    """Both libraries' Riemannian ODE samplers with one shared MLP. With the default MLP the
    network dominates; a tiny one (e.g. 32x2) exposes the solvers' own per-step overhead."""
    from flow_matching.solver import RiemannianODESolver
    from flow_matching.utils import ModelWrapper
    from flow_matching.utils.manifolds import Sphere as FMSphere

    torch.manual_seed(0)
    sphere = Sphere(2)
    net = TimeMLP(3, hidden=hidden, depth=depth)
    # The same velocity for both: the raw network projected onto the tangent space (their
    # solver applies proju itself, ours expects a tangent field).
    ours = ODESolver(sphere, lambda x, t: sphere.proju(x, net(x, t)))

    class Wrapped(ModelWrapper):
        def forward(self, x, t, **extras):
            return self.model(x, t)

    theirs = RiemannianODESolver(FMSphere(), Wrapped(net))
    x0 = sphere.random_base(batch, generator=torch.Generator().manual_seed(1))
    rows = []
    for method in ("euler", "midpoint", "rk4"):
        a = ours.sample(x0, steps=steps, method=method)
        b = theirs.sample(x0, step_size=1.0 / steps, method=method)
        t_ours, t_theirs, ratio = _timeit_pair(
            lambda: ours.sample(x0, steps=steps, method=method),
            lambda: theirs.sample(x0, step_size=1.0 / steps, method=method),
            repeats,
        )
        rows.append(
            dict(
                what=f"ODE sample S^2 {method} {steps} steps batch {batch} MLP {hidden}x{depth}",
                ours_ms=1e3 * t_ours,
                theirs_ms=1e3 * t_theirs,
                ratio=ratio,
                max_abs_diff=float((a - b).abs().max()),
                target="not slower (>= 1x)",
            )
        )
    return rows


def likelihood_accuracy(train_seconds: float, n_test: int) -> dict:
    """Train a small flow on a vMF mixture on S^2, then compare our default exact likelihood
    with a 1000-step Euler reference on the same test points."""
    torch.manual_seed(0)
    sphere = Sphere(2)
    gen = torch.Generator().manual_seed(2)
    centers = sphere.random_base(6, generator=gen)

    def draw(n: int) -> torch.Tensor:
        # wrapped-normal-like clusters: exp of small tangent noise around random centres
        idx = torch.randint(0, 6, (n,), generator=gen)
        c = centers[idx]
        u = sphere.proju(c, 0.25 * torch.randn(n, 3, generator=gen))
        return sphere.expmap(c, u)

    net = TimeMLP(3, hidden=256, depth=3)
    velocity = lambda x, t: sphere.proju(x, net(sphere.projx(x), t))  # noqa: E731
    path = GeodesicPath(sphere)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < train_seconds:
        x1 = draw(512)
        s = path.sample(None, x1, torch.rand(512, generator=gen))
        loss = rfm_loss(sphere, velocity(s.x_t, s.t), s)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    solver = ODESolver(sphere, velocity)
    x_test = draw(n_test)
    t0 = time.perf_counter()
    ours = solver.log_likelihood(x_test)  # the default setting
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    reference = solver.log_likelihood(x_test, steps=1000, method="euler")
    t_ref = time.perf_counter() - t0
    diff = (ours - reference).abs()
    return dict(
        what=f"log_likelihood S^2 default (rk4, 32 steps, exact) vs Euler 1000 steps, {n_test} points",
        train_steps=steps,
        mean_test_nll=float(-ours.mean()),
        mean_abs_diff_nats=float(diff.mean()),
        max_abs_diff_nats=float(diff.max()),
        mean_nll_diff_nats=float((ours - reference).mean().abs()),
        ours_s=t_ours,
        reference_s=t_ref,
        ratio=t_ref / t_ours,
        target="within 0.01 nats, >= 5x faster",
    )


def _print_rows(rows: list[dict]) -> None:
    for r in rows:
        extra = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.items()
            if k not in ("what", "ratio", "target")
        )
        print(f"- {r['what']}: ratio {r['ratio']:.2f}x (target {r['target']}); {extra}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks speed", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter training (smoke test)")
    parser.add_argument("--only", choices=["rfm", "dfm", "training"], default=None, help="run one part only")
    parser.add_argument("--device", default="cpu", help="device of the training-step table: cpu or cuda")
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="NAME",
        help="models of the training-step table (earth, text, backbone-cpu, backbone, frameflow; "
        "default: earth text backbone-cpu on the CPU, earth text backbone frameflow on CUDA)",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["eager", "compiled"],
        choices=["eager", "compiled"],
        help="modes of the training-step table",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--out",
        "--json",
        dest="out",
        default="runs/speed.json",
        metavar="FILE",
        help="where to write the JSON results (--json is the same option)",
    )
    args = parser.parse_args(argv)
    from gm.cli import CommandLineError, check_device

    check_device(args.device)
    if args.models:
        from benchmarks.speed_training import STEP_MODELS

        unknown = [m for m in args.models if m not in STEP_MODELS]
        if unknown:
            raise CommandLineError(f"--models must be among {sorted(STEP_MODELS)}, got {' '.join(unknown)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 30
    results: dict[str, list[dict] | dict] = {"threads": torch.get_num_threads()}
    print(f"# rdfm vs flow_matching, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only in (None, "rfm"):
        rows = (
            path_speed(4096, repeats)
            + solver_speed(1024, 100, 3 if args.quick else 9)
            + solver_speed(1024, 100, 3 if args.quick else 31, hidden=32, depth=2)
        )
        _print_rows(rows)
        lik = likelihood_accuracy(train_seconds=10 if args.quick else 60, n_test=256 if args.quick else 1000)
        _print_rows([lik])
        results["rfm"] = rows + [lik]
    if args.only in (None, "dfm"):
        try:
            from benchmarks.speed_dfm import run_dfm_speed
        except ImportError as err:  # the dfm benchmark lands with the dfm package
            print(f"- dfm sampler speed: not available ({err})")
        else:
            dfm_rows = run_dfm_speed(quick=args.quick)
            _print_rows(dfm_rows)
            results["dfm"] = dfm_rows
    if args.only in (None, "training"):
        from benchmarks.speed_training import print_step_table, training_step_rows

        step_rows = training_step_rows(
            args.device, args.models, tuple(args.modes), repeats=3 if args.quick else 10, warmup=2 if args.quick else 3
        )
        print_step_table(step_rows)
        results["training_steps"] = step_rows
    atomic_write(Path(args.out), json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0
