"""``python -m benchmarks so3``: mixtures of wrapped normals on SO(3) (protocol of De Bortoli
et al. 2022, Table 5) — RFM's test log-likelihood beside RSGM's and beside the true
log-likelihood of the generating mixture on the same test points.

Data: M components with Haar-uniform means mu_k, precisions tau_k ~ Gamma(shape=100, rate=1)
(sigma_k = tau_k^(-1/2) ~ 0.1), equal weights; samples R = mu_k exp(hat(sigma_k eps)),
eps ~ N(0, I_3). True density w.r.t. the Riemannian volume of ``manifolds.SO3`` (metric
1/2 tr(A^T B), total volume 8 pi^2):

    p(R) = sum_k (1/M) N(w_k; 0, sigma_k^2 I_3) * |w_k|^2 / (2 (1 - cos|w_k|)),  w_k = log(mu_k^T R),

the second factor being the inverse volume factor of the exponential map. Wrapping (other
preimages of R under exp) is neglected: at sigma ~ 0.1 a preimage at distance >= 2 pi - pi
has relative weight below exp(-pi^2 / (2 * 0.13^2)) ~ 1e-126. Sizes: 20000 train, 2500
validation, 2500 test samples per seed. The gap (true - model) estimates KL(data || model).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.results import new_record, write_results
from gm.cli import (
    Budget,
    add_config_overrides,
    add_run_arguments,
    apply_config_overrides,
    as_budget,
    check_device,
    rank_batch,
    run_budget,
    training_settings,
)
from gm.train import train
from manifolds import SO3, so3_exp, so3_log
from rfm.dataset_objective import dataset_rfm_loss
from rfm.likelihood import log_likelihood, solver_settings
from rfm.models import velocity_mlp

RSGM = {16: 0.89, 32: 0.20, 64: -0.49}  # published test log-likelihoods (higher is better)
SIZES = (20000, 2500, 2500)


@dataclass
class WrappedNormalMixture:
    means: torch.Tensor  # (M, 3, 3)
    sigmas: torch.Tensor  # (M,)

    @classmethod
    def random(cls, n_components: int, generator: torch.Generator, dtype=torch.float64) -> WrappedNormalMixture:
        means = SO3().random_base(n_components, generator=generator, dtype=dtype)
        # Gamma(shape=100, rate=1) exactly, and reproducibly from `generator`: a sum of 100
        # independent Exp(1) variables.
        u = torch.rand(n_components, 100, generator=generator, dtype=dtype)
        tau = -torch.log1p(-u).sum(-1)
        return cls(means, tau.rsqrt())

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        m = len(self.sigmas)
        k = torch.randint(0, m, (n,), generator=generator)
        eps = torch.randn(n, 3, generator=generator, dtype=self.means.dtype)
        return self.means[k] @ so3_exp(self.sigmas[k, None] * eps)

    def log_prob(self, r: torch.Tensor) -> torch.Tensor:
        """Log density w.r.t. the Riemannian volume of SO3 (see the module docstring)."""
        w = so3_log(self.means.transpose(-1, -2)[:, None] @ r[None])  # (M, n, 3)
        theta_sq = (w * w).sum(-1)
        sig2 = (self.sigmas**2)[:, None]
        log_normal = -0.5 * theta_sq / sig2 - 1.5 * torch.log(2 * math.pi * sig2)
        # log(|w|^2 / (2 (1 - cos|w|))) = -log((1 - cos)/theta^2) - log 2, Taylor-safe
        from manifolds._math import one_minus_cos_over_sq

        log_inv_jac = -torch.log(2 * one_minus_cos_over_sq(theta_sq))
        return torch.logsumexp(log_normal + log_inv_jac, dim=0) - math.log(len(self.sigmas))


@dataclass
class SO3Config:
    hidden: int = 256
    depth: int = 4
    batch: int = 256
    lr: float = 1e-3
    ema_decay: float = 0.999
    warmup_steps: int = 200
    eval_every_minutes: float = 1.0
    val_steps: int = 16
    selection_points: int = 1024  # validation points used for model selection during training
    fourier_features: int = 0  # random Fourier features of the matrix entries (0: the 9 entries);
    # 128 features at scale 8 (M = 64, 5 min) widened the gap to the truth from 0.17 to 0.43 nats
    fourier_scale: float = 8.0
    test_steps: int = 128
    grid_power: float = 2.0  # likelihood time grid t_k = 1 - (1 - k/N)^p (gm.data_end_time_grid)


QUICK = SO3Config(hidden=64, depth=2, batch=128, warmup_steps=20, eval_every_minutes=0.2, val_steps=4, test_steps=8)


def run(
    n_components: int,
    seed: int,
    budget: Budget | float,
    cfg: SO3Config,
    out: Path,
    sizes: tuple[int, int, int] = SIZES,
    progress: bool = True,
    device: str = "cpu",
    restart: bool = False,
) -> dict:
    """Train and evaluate RFM on one mixture of ``n_components`` wrapped normals (drawn from
    ``seed``) for ``budget`` (a :class:`~gm.cli.Budget` or minutes); writes and returns
    the results record."""
    start = time.perf_counter()
    budget = as_budget(budget, cfg.eval_every_minutes)
    so3 = SO3()
    gen = torch.Generator().manual_seed(1000 * n_components + seed)
    mixture = WrappedNormalMixture.random(n_components, gen)
    data = mixture.sample(sum(sizes), gen)
    x_train, x_val, x_test = torch.split(data, list(sizes))
    true_test = float(mixture.log_prob(x_test).mean())
    x_train, x_val, x_test = x_train.float().to(device), x_val.float().to(device), x_test.float().to(device)
    torch.manual_seed(seed)
    model = velocity_mlp(
        so3, hidden=cfg.hidden, depth=cfg.depth, fourier_features=cfg.fourier_features, fourier_scale=cfg.fourier_scale
    ).to(device)
    loss_fn = dataset_rfm_loss(so3, x_train, rank_batch(cfg.batch), device)

    def loglik(m, x, steps, validate=True):
        return float(log_likelihood(so3, m, so3.projx(x), steps, cfg.grid_power, validate=validate).mean())

    run_dir = out / f"M{n_components}" / f"seed{seed}"
    tc = budget.train_config(
        cfg,
        seed=seed,
        progress=progress,
        checkpoint_every_minutes=1.0,
        val_name=f"val NLL ({cfg.val_steps} rk4 steps, {cfg.selection_points} points)",
    )
    res = train(
        model,
        loss_fn,
        tc,
        val_fn=lambda m: -loglik(m, x_val[: cfg.selection_points], cfg.val_steps, validate=False),
        checkpoint_path=run_dir / "checkpoint.pt",
        run_config=training_settings(cfg, n_components=n_components),
        resume=not restart,
    )
    if res.rank != 0:
        return None  # data-parallel run: rank 0 evaluates and writes
    model.eval()
    test_ll = loglik(model, x_test, cfg.test_steps)
    val_ll = loglik(model, x_val, cfg.test_steps)
    record = new_record(
        "so3",
        f"M{n_components}",
        seed,
        config=asdict(cfg),
        **budget.record_fields(),
        steps=res.steps,
        wall_time_s=time.perf_counter() - start + res.resumed_elapsed_s,
        val_nll=-val_ll,
        test_nll=-test_ll,
        test_loglik=test_ll,
        true_test_loglik=true_test,
        likelihood_solver=solver_settings(cfg.test_steps, cfg.grid_power),
        sizes=list(sizes),
    )
    write_results(run_dir / "results.json", record)
    return record


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks so3", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--components", nargs="+", type=int, default=[16, 32, 64])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--quick", action="store_true", help="small model and data, at most 0.3 min per run")
    add_run_arguments(parser, minutes=10.0, out="runs/so3")
    add_config_overrides(parser, SO3Config())
    args = parser.parse_args(argv)
    check_device(args.device)
    cfg, default_minutes, sizes = SO3Config(), 10.0, SIZES
    if args.quick:
        cfg, default_minutes, sizes = QUICK, 0.3, (4000, 500, 500)
        if args.minutes is not None:
            args.minutes = min(args.minutes, 0.3)
    cfg = apply_config_overrides(cfg, args)
    budget = run_budget(
        args.minutes,
        args.steps,
        default_minutes=default_minutes,
        eval_every_minutes=cfg.eval_every_minutes,
        compile=args.compile,
    )
    # --quick: one thread unless --threads (tiny models; on a busy 2-core machine threads that
    # wait for each other made quick runs many times slower)
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    rows = []
    for m in args.components:
        for seed in args.seeds:
            print(f"[so3] M={m} seed {seed}: training for {budget.describe()}")
            rec = run(
                m,
                seed,
                budget,
                cfg,
                Path(args.out),
                sizes,
                progress=not args.no_progress,
                device=args.device,
                restart=args.restart,
            )
            if rec is None:
                continue
            print(
                f"[so3] M={m} seed {seed}: {rec['steps']} steps, test log-lik {rec['test_loglik']:.3f}, "
                f"true mixture {rec['true_test_loglik']:.3f}"
            )
            rows.append(rec)
    print("\n| M | RSGM (published) | rdfm RFM | true mixture | gap (KL estimate) |\n|---|---|---|---|---|")
    for rec in rows:
        m = int(rec["dataset"][1:])
        print(
            f"| {m} | {RSGM.get(m, float('nan')):.2f} | {rec['test_loglik']:.3f} | {rec['true_test_loglik']:.3f} | "
            f"{rec['true_test_loglik'] - rec['test_loglik']:.3f} |"
        )
    return 0
