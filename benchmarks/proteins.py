"""``python -m benchmarks proteins``: RFM on protein backbone (phi, psi) dihedrals on the flat
torus, per residue class (General, Glycine, Proline, Pre-Pro), beside a classical anchor
computed on the same splits: a product-form von Mises mixture fitted by EM with K chosen on
validation. Random 80/10/10 splits seeded per run; model selection on validation NLL with EMA
weights; TEST NLL in nats per residue (density w.r.t. the flat torus volume (2 pi)^2)."""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.cli import add_config_overrides, apply_config_overrides
from benchmarks.likelihood import log_likelihood, solver_settings
from benchmarks.protein_data import CLASSES, load_dihedrals
from benchmarks.results import new_record, write_results
from benchmarks.splits import split_indices
from benchmarks.vonmises import select_vonmises_mixture
from manifolds import FlatTorus
from rfm import GeodesicPath, ODESolver, rfm_loss
from rfm.models import velocity_mlp
from rfm.training import TrainConfig, train


@dataclass
class TorusConfig:
    hidden: int = 256
    depth: int = 4
    batch: int = 256
    lr: float = 1e-3
    ema_decay: float = 0.999
    warmup_steps: int = 200
    torus_harmonics: int = 3
    eval_every_minutes: float = 1.0
    val_steps: int = 16
    selection_points: int = 1024  # validation points used for model selection during training
    test_steps: int = 128
    grid_power: float = 2.0      # likelihood time grid t_k = 1 - (1 - k/N)^p (gm.data_end_time_grid)


QUICK = TorusConfig(hidden=64, depth=2, batch=128, warmup_steps=20, eval_every_minutes=0.2, val_steps=4, test_steps=8)


def run(residue_class: str, seed: int, minutes: float, cfg: TorusConfig, out: Path, progress: bool = True,
        plot: bool = True, vonmises_ks=(1, 2, 4, 8, 16, 32)) -> list[dict]:
    start = time.perf_counter()
    torus = FlatTorus(2)
    data = load_dihedrals(residue_class).float()
    tr, va, te = split_indices(len(data), seed)
    x_train, x_val, x_test = data[tr], data[va], data[te]
    run_dir = out / residue_class / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)

    vm_start = time.perf_counter()
    vm, k, scores = select_vonmises_mixture(x_train.double().numpy(), x_val.double().numpy(), ks=vonmises_ks, seed=seed)
    vm_test = float(-vm.log_prob(x_test.double().numpy()).mean())
    vm_record = new_record("proteins", residue_class, seed, method="vonmises", test_nll=vm_test, val_nll=-scores[k],
                           config={"k": k, "val_loglik_by_k": {str(kk): v for kk, v in scores.items()}},
                           wall_time_s=time.perf_counter() - vm_start)
    write_results(run_dir / "vonmises.json", vm_record)

    torch.manual_seed(seed)
    model = velocity_mlp(torus, hidden=cfg.hidden, depth=cfg.depth, torus_harmonics=cfg.torus_harmonics)
    path = GeodesicPath(torus)

    def loss_fn(m, step, g):
        idx = torch.randint(0, len(x_train), (cfg.batch,), generator=g)
        s = path.sample(torus.random_base(cfg.batch, generator=g), x_train[idx], torch.rand(cfg.batch, generator=g))
        return rfm_loss(torus, m(s.x_t, s.t), s)

    def nll(m, x, steps):
        return float(-log_likelihood(torus, m, x, steps, cfg.grid_power).mean())

    tc = TrainConfig(lr=cfg.lr, warmup_steps=cfg.warmup_steps, max_minutes=minutes, ema_decay=cfg.ema_decay,
                     eval_every_minutes=cfg.eval_every_minutes, seed=seed, progress=progress)
    res = train(model, loss_fn, tc, val_fn=lambda m: nll(m, x_val[:cfg.selection_points], cfg.val_steps), checkpoint_path=run_dir / "checkpoint.pt")
    model.load_state_dict(res.best_state, strict=False)
    model.eval()
    test_nll = nll(model, x_test, cfg.test_steps)
    val_nll = nll(model, x_val, cfg.test_steps)
    if plot:
        from benchmarks.plotting import plot_ramachandran

        with torch.no_grad():
            samples = ODESolver(torus, model).sample(torus.random_base(3000, generator=torch.Generator().manual_seed(seed)),
                                                     steps=64, method="rk4")
        plot_ramachandran(data, samples, lambda x: log_likelihood(torus, model, x, cfg.test_steps // 2, cfg.grid_power),
                          run_dir / f"{residue_class}_seed{seed}.png",
                          title=f"{residue_class} (seed {seed}): RFM {test_nll:.3f}, von Mises K={k} {vm_test:.3f}",
                          grid_size=60)
    rec = new_record("proteins", residue_class, seed, config=asdict(cfg), budget_minutes=minutes, steps=res.steps,
                     wall_time_s=time.perf_counter() - start + res.resumed_elapsed_s, val_nll=val_nll, test_nll=test_nll,
                     likelihood_solver=solver_settings(cfg.test_steps, cfg.grid_power),
                     n_train=len(x_train), n_val=len(x_val), n_test=len(x_test))
    write_results(run_dir / "results.json", rec)
    return [vm_record, rec]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks proteins", description=__doc__)
    parser.add_argument("--classes", nargs="+", default=list(CLASSES), choices=CLASSES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="runs/proteins")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-plot", action="store_true")
    add_config_overrides(parser, TorusConfig())
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, minutes, ks = TorusConfig(), args.minutes, (1, 2, 4, 8, 16, 32)
    if args.quick:
        cfg, minutes, ks = QUICK, min(args.minutes, 0.3), (1, 4)
    cfg = apply_config_overrides(cfg, args)
    rows = []
    for cls in args.classes:
        for seed in args.seeds:
            print(f"[proteins] {cls} seed {seed}: von Mises mixture EM, then RFM for {minutes:g} min")
            vm, rfm = run(cls, seed, minutes, cfg, Path(args.out), progress=not args.no_progress, plot=not args.no_plot,
                          vonmises_ks=ks)
            print(f"[proteins] {cls} seed {seed}: von Mises (K={vm['config']['k']}) {vm['test_nll']:.3f}, "
                  f"RFM {rfm['test_nll']:.3f} ({rfm['steps']} steps)")
            rows.append((cls, seed, vm["test_nll"], rfm["test_nll"]))
    print("\n| class | seed | von Mises mixture | rdfm RFM |\n|---|---|---|---|")
    for cls, seed, v, r in rows:
        print(f"| {cls} | {seed} | {v:.3f} | {r:.3f} |")
    return 0
