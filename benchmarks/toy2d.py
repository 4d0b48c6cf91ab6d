"""``python -m benchmarks toy2d``: the Flow Matching guide's quick tour, runnable.

Checkerboard (the guide's example) and two moons in R^2, one network and one step budget per
configuration: CondOT vs VP vs cosine schedulers (independent pairs) and CondOT with minibatch
OT pairs; each model sampled by the ODE and by the SDE. Per configuration: the exact test NLL
(rk4, 64 steps, exact divergence), the energy distance of 2000 ODE / SDE samples to held-out
data, the kinetic energy of the learned flow, and the sample error against the number of
Euler steps (the distance of Euler samples to 256-step rk4 samples from the same noise).

Beside it, ``flow_matching`` 1.0.10 on the same network: a training step (path sample +
loss + backward + Adam) and ODE sampling, timed alternately in one process (ratios > 1: rdfm is
faster), and its CondOT model's test NLL, trained for the same steps from the same
initialisation on the same batches.

    python -m benchmarks toy2d --threads 1 --out runs/toy2d
    python -m benchmarks toy2d --quick          # a minute: the smoke test
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.speed import TimeMLP, _timeit_pair
from gm import CosineScheduler, LinearScheduler, VPScheduler
from gm.cli import CommandLineError
from gm.train import EMA, TrainConfig, lr_factor, train
from manifolds import Euclidean
from rfm import AffinePath, IndependentCoupling, ODESolver, OTCoupling, SDESolver, prediction_loss

DATASETS = ("checkerboard", "moons")
CONFIGS = {  # name -> (scheduler, coupling, SDE diffusion g_t)
    "CondOT": (LinearScheduler(), "independent"),
    "VP": (VPScheduler(), "independent"),
    "cosine": (CosineScheduler(), "independent"),
    "CondOT + OT": (LinearScheduler(), "ot"),
}
EULER_STEPS = (2, 4, 8, 16, 32)
# Training times stop short of t = 1, where VP's sigma'_t is infinite.
MAX_TRAINING_TIME = 1 - 1e-3


@dataclass
class Toy2DConfig:
    hidden: int = 256
    depth: int = 3
    batch: int = 512
    steps: int = 4000
    lr: float = 1e-3
    n_test: int = 2000
    n_samples: int = 2000
    sde_scale: float = 0.5  # SDE diffusion g_t = sde_scale * sigma_t
    timing_repeats: int = 20


QUICK = Toy2DConfig(hidden=64, depth=2, steps=150, n_test=300, n_samples=300, timing_repeats=3)


def checkerboard(n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform on the black squares of a 4 x 4 board on [-4, 4]^2 (squares of side 2)."""
    squares = torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])
    corner = squares[torch.randint(0, len(squares), (n,), generator=generator)] * 2.0 - 4.0
    return corner + torch.rand(n, 2, generator=generator) * 2


def moons(n: int, generator: torch.Generator, noise: float = 0.05) -> torch.Tensor:
    """Two interleaved half circles (scaled by 2, centred), with Gaussian noise."""
    theta = torch.rand(n, generator=generator) * math.pi
    upper = torch.randint(0, 2, (n,), generator=generator).bool()
    x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    points = torch.stack([x - 0.5, y - 0.25], -1) * 2
    return points + noise * 2 * torch.randn(n, 2, generator=generator)


def sampler(name: str):
    return checkerboard if name == "checkerboard" else moons


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (0 iff the distributions agree), V-statistics."""
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def train_config(cfg: Toy2DConfig, seed: int, progress: bool) -> TrainConfig:
    """The trainer's settings of every toy2d model (and of the flow_matching twin's loop)."""
    return TrainConfig(
        lr=cfg.lr,
        max_steps=cfg.steps,
        warmup_steps=min(100, cfg.steps // 10),
        ema_decay=0.999,
        seed=seed,
        progress=progress,
    )


def train_model(dataset: str, scheduler, coupling: str, cfg: Toy2DConfig, seed: int, progress: bool):
    torch.manual_seed(seed)
    model = TimeMLP(2, cfg.hidden, cfg.depth)
    path = AffinePath(scheduler, validate=False)
    pairing = OTCoupling(Euclidean(2)) if coupling == "ot" else IndependentCoupling()
    draw = sampler(dataset)

    def loss_fn(m, step, generator):
        x1 = draw(cfg.batch, generator)
        x0 = torch.randn(cfg.batch, 2, generator=generator)
        x0, x1 = pairing(x0, x1, generator=generator)
        t = torch.rand(cfg.batch, generator=generator) * MAX_TRAINING_TIME
        s = path.sample(x0, x1, t)
        return prediction_loss(path, m(s.x_t, t), s, "velocity")

    result = train(model, loss_fn, train_config(cfg, seed, progress))
    return model.eval(), result


@torch.no_grad()
def evaluate(model, scheduler, dataset: str, cfg: Toy2DConfig, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed + 1000)
    test = sampler(dataset)(cfg.n_test, g)
    noise = torch.randn(cfg.n_samples, 2, generator=g)
    m = Euclidean(2)
    solver = ODESolver(m, model, path=AffinePath(scheduler))  # likelihoods add the path's source density
    grid = torch.linspace(0, 1, 257)
    trajectory = solver.sample(noise, time_grid=grid, steps=None, method="rk4", return_intermediates=True)
    reference = trajectory[-1]
    speeds = torch.stack([model(trajectory[k], grid[k]) for k in range(0, 257, 4)])
    kinetic = float((speeds**2).sum(-1).mean())
    euler = {
        k: float((solver.sample(noise, steps=k, method="euler") - reference).norm(dim=-1).mean()) for k in EULER_STEPS
    }
    sde = SDESolver(AffinePath(scheduler), model).sample(
        noise,
        lambda t: cfg.sde_scale * scheduler.sigma(t, validate=False),
        steps=256,
        generator=torch.Generator().manual_seed(seed),
    )
    with torch.enable_grad():
        nll = float(-solver.log_likelihood(test, steps=64, method="rk4").mean())
    return {
        "test_nll": nll,
        "energy_ode": energy_distance(reference, test),
        "energy_sde": energy_distance(sde, test),
        "energy_data": energy_distance(sampler(dataset)(cfg.n_samples, g), test),
        "kinetic": kinetic,
        "euler_error": euler,
    }


def flow_matching_comparison(dataset: str, cfg: Toy2DConfig, seed: int, rdfm_model) -> dict:
    """Training-step and sampling time ratios against flow_matching, and its CondOT model's NLL."""
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler
    from flow_matching.solver import ODESolver as FMODESolver
    from flow_matching.utils import ModelWrapper

    class Wrapped(ModelWrapper):
        def forward(self, x, t, **extras):
            return self.model(x, t)

    draw = sampler(dataset)
    torch.manual_seed(seed)
    ours_net, theirs_net = TimeMLP(2, cfg.hidden, cfg.depth), TimeMLP(2, cfg.hidden, cfg.depth)
    theirs_net.load_state_dict(ours_net.state_dict())
    ours_path, theirs_path = AffinePath(LinearScheduler(), validate=False), AffineProbPath(CondOTScheduler())
    ours_opt, theirs_opt = (
        torch.optim.Adam(ours_net.parameters(), cfg.lr),
        torch.optim.Adam(theirs_net.parameters(), cfg.lr),
    )
    g = torch.Generator().manual_seed(seed)
    batch = {
        "x1": draw(cfg.batch, g),
        "x0": torch.randn(cfg.batch, 2, generator=g),
        "t": torch.rand(cfg.batch, generator=g),
    }

    def ours_step():
        s = ours_path.sample(batch["x0"], batch["x1"], batch["t"])
        loss = prediction_loss(ours_path, ours_net(s.x_t, s.t), s)
        ours_opt.zero_grad()
        loss.backward()
        ours_opt.step()

    def theirs_step():
        s = theirs_path.sample(x_0=batch["x0"], x_1=batch["x1"], t=batch["t"])
        loss = ((theirs_net(s.x_t, s.t) - s.dx_t) ** 2).sum(-1).mean()
        theirs_opt.zero_grad()
        loss.backward()
        theirs_opt.step()

    step_ours, step_theirs, step_ratio = _timeit_pair(ours_step, theirs_step, cfg.timing_repeats * 5)
    noise = torch.randn(cfg.n_samples, 2, generator=g)
    fm_solver = FMODESolver(velocity_model=Wrapped(rdfm_model))
    with torch.no_grad():
        sample_ours, sample_theirs, sample_ratio = _timeit_pair(
            lambda: ODESolver(Euclidean(2), rdfm_model).sample(noise, steps=100, method="euler"),
            lambda: fm_solver.sample(x_init=noise, step_size=0.01, method="euler"),
            cfg.timing_repeats,
        )

    # flow_matching's own CondOT model: same init, same batches (the rdfm stream), same steps
    torch.manual_seed(seed)
    fm_net = TimeMLP(2, cfg.hidden, cfg.depth)
    fm_opt = torch.optim.Adam(fm_net.parameters(), cfg.lr)
    schedule = train_config(cfg, seed, progress=False)  # the rdfm trainer's schedule and EMA, like for like
    ema = EMA(fm_net, schedule.ema_decay)
    gen = torch.Generator().manual_seed(seed)
    for step in range(cfg.steps):
        for group in fm_opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, step / cfg.steps, schedule.warmup_steps, schedule.min_lr_ratio)
        x1 = draw(cfg.batch, gen)
        x0 = torch.randn(cfg.batch, 2, generator=gen)
        t = torch.rand(cfg.batch, generator=gen) * MAX_TRAINING_TIME
        s = theirs_path.sample(x_0=x0, x_1=x1, t=t)
        loss = ((fm_net(s.x_t, s.t) - s.dx_t) ** 2).sum(-1).mean()
        fm_opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(fm_net.parameters(), schedule.grad_clip)
        fm_opt.step()
        ema.update(fm_net)
    fm_net.load_state_dict(ema.shadow)
    test = sampler(dataset)(cfg.n_test, torch.Generator().manual_seed(seed + 1000))
    _, log_p = FMODESolver(velocity_model=Wrapped(fm_net.eval())).compute_likelihood(
        x_1=test,
        log_p0=lambda x: -0.5 * (x**2).sum(-1) - math.log(2 * math.pi),
        step_size=1 / 64,
        method="midpoint",
        exact_divergence=True,
    )
    return {
        "train_step_ms": (step_ours * 1e3, step_theirs * 1e3),
        "train_step_ratio": step_ratio,
        "sample_ms": (sample_ours * 1e3, sample_theirs * 1e3),
        "sample_ratio": sample_ratio,
        "flow_matching_test_nll": float(-log_p.mean()),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks toy2d", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=None, help="training steps per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="runs/toy2d")
    parser.add_argument("--quick", action="store_true", help="small models, 150 steps, checkerboard only")
    parser.add_argument("--no-compare", action="store_true", help="skip the flow_matching comparison")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Toy2DConfig()
    if args.steps is not None:
        if args.steps < 1:
            raise CommandLineError(f"--steps must be >= 1, got {args.steps}")
        cfg = Toy2DConfig(**{**asdict(cfg), "steps": args.steps})
    datasets = ["checkerboard"] if args.quick and args.datasets == list(DATASETS) else args.datasets
    if args.threads:
        torch.set_num_threads(args.threads)
    from benchmarks.plotting import plot_toy2d
    from benchmarks.results import new_record, write_results

    out = Path(args.out)
    for dataset in datasets:
        rows, samples = {}, {}
        for name in args.configs:
            scheduler, coupling = CONFIGS[name]
            start = time.perf_counter()
            model, result = train_model(dataset, scheduler, coupling, cfg, args.seed, not args.no_progress)
            rows[name] = {
                **evaluate(model, scheduler, dataset, cfg, args.seed),
                "steps": result.steps,
                "train_s": result.wall_time_s,
                "total_s": time.perf_counter() - start,
            }
            with torch.no_grad():
                noise = torch.randn(cfg.n_samples, 2, generator=torch.Generator().manual_seed(args.seed + 7))
                samples[name] = ODESolver(Euclidean(2), model).sample(
                    noise, steps=None, method="rk4", return_intermediates=True, time_grid=torch.linspace(0, 1, 33)
                )
            row = rows[name]
            print(
                f"[toy2d] {dataset} {name}: NLL {row['test_nll']:.3f}, energy ODE {row['energy_ode']:.4f} / "
                f"SDE {row['energy_sde']:.4f}, kinetic {row['kinetic']:.2f} ({row['train_s']:.0f} s)",
                flush=True,
            )
            if name == "CondOT" and not args.no_compare:
                rows[name]["flow_matching"] = flow_matching_comparison(dataset, cfg, args.seed, model)
        floor = next(iter(rows.values()))["energy_data"]
        table = [
            f"{dataset} ({cfg.steps} steps, batch {cfg.batch}, MLP {cfg.hidden} x {cfg.depth}; "
            f"energy distance of held-out data to itself: {floor:.4f})",
            "",
            "| config | test NLL | energy ODE | energy SDE | kinetic | Euler error at "
            + " / ".join(map(str, EULER_STEPS))
            + " steps |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in rows.items():
            errors = " / ".join(f"{row['euler_error'][k]:.3f}" for k in EULER_STEPS)
            table.append(
                f"| {name} | {row['test_nll']:.3f} | {row['energy_ode']:.4f} | {row['energy_sde']:.4f} | "
                f"{row['kinetic']:.2f} | {errors} |"
            )
        fm = rows.get("CondOT", {}).get("flow_matching")
        if fm:
            table += [
                "",
                f"flow_matching 1.0.10, same network: training step {fm['train_step_ms'][0]:.2f} ms (rdfm) vs "
                f"{fm['train_step_ms'][1]:.2f} ms, ratio {fm['train_step_ratio']:.2f}x; ODE sampling (Euler, "
                f"100 steps) {fm['sample_ms'][0]:.1f} vs {fm['sample_ms'][1]:.1f} ms, ratio "
                f"{fm['sample_ratio']:.2f}x; its CondOT model's test NLL {fm['flow_matching_test_nll']:.3f} "
                f"(rdfm {rows['CondOT']['test_nll']:.3f})",
            ]
        text = "\n".join(table)
        print("\n" + text + "\n")
        run_dir = out / dataset
        plot_toy2d(
            sampler(dataset)(cfg.n_samples, torch.Generator().manual_seed(1)),
            samples,
            run_dir / f"toy2d_{dataset}.png",
            title=f"{dataset}: data, samples and trajectories",
        )
        record = new_record(
            "toy2d",
            dataset,
            args.seed,
            config=asdict(cfg),
            budget_steps=cfg.steps,
            steps=cfg.steps,
            configs=rows,
            table=text,
        )
        write_results(run_dir / "results.json", record)
    return 0
