"""``python -m benchmarks proteins``: RFM on protein backbone (phi, psi) dihedrals on the flat
torus, per residue class (General, Glycine, Proline, Pre-Pro), beside a classical anchor
computed on the same splits: a product-form von Mises mixture fitted by EM with K chosen on
validation. Random 80/10/10 splits seeded per run; model selection on validation NLL with EMA
weights; TEST NLL in nats per residue (density w.r.t. the flat torus volume (2 pi)^2)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.protein_data import CLASSES, load_dihedrals
from benchmarks.results import new_record, write_results
from benchmarks.vonmises import select_vonmises_mixture
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
from gm.train.distributed import is_main_process
from manifolds import FlatTorus
from rfm import ODESolver
from rfm.dataset_objective import dataset_rfm_loss
from rfm.likelihood import log_likelihood, solver_settings
from rfm.models import velocity_mlp
from rfm.splits import split_indices


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
    grid_power: float = 2.0  # likelihood time grid t_k = 1 - (1 - k/N)^p (gm.data_end_time_grid)
    data_noise: float = 0.0  # std (radians) of Gaussian jitter of the training angles, a smoothing regulariser


QUICK = TorusConfig(hidden=64, depth=2, batch=128, warmup_steps=20, eval_every_minutes=0.2, val_steps=4, test_steps=8)


def fit_anchor(residue_class: str, seed: int, out: Path, vonmises_ks=(1, 2, 4, 8, 16, 32)):
    """Load one class, split it, fit the von Mises mixture anchor (K on validation) and write
    its record. Returns ``(data, (x_train, x_val, x_test), run_dir, anchor_record)``."""
    data = load_dihedrals(residue_class).float()
    tr, va, te = split_indices(len(data), seed)
    x_train, x_val, x_test = data[tr], data[va], data[te]
    run_dir = out / residue_class / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    vm_start = time.perf_counter()
    vm, k, scores = select_vonmises_mixture(x_train.double().numpy(), x_val.double().numpy(), ks=vonmises_ks, seed=seed)
    vm_test = float(-vm.log_prob(x_test.double().numpy()).mean())
    vm_record = new_record(
        "proteins",
        residue_class,
        seed,
        method="vonmises",
        test_nll=vm_test,
        val_nll=-scores[k],
        config={"k": k, "val_loglik_by_k": {str(kk): v for kk, v in scores.items()}},
        wall_time_s=time.perf_counter() - vm_start,
    )
    if is_main_process():  # every rank fits the anchor (it is quick), rank 0 writes it
        write_results(run_dir / "vonmises.json", vm_record)
    return data, (x_train, x_val, x_test), run_dir, vm_record


def _plot(
    residue_class: str, seed: int, data, velocity, cfg: TorusConfig, path: Path, title: str, device: str = "cpu"
) -> None:
    """(phi, psi) histograms of model samples beside the class's residues and the model's exact
    log-density (proteins.plots)."""
    from proteins.plots import plot_ramachandran_pair

    torus = FlatTorus(2)
    with torch.no_grad():
        x0 = torus.random_base(3000, generator=torch.Generator().manual_seed(seed)).to(device)
        samples = ODESolver(torus, velocity).sample(x0, steps=64, method="rk4").cpu()
    dtype = next(iter(velocity.parameters())).dtype if isinstance(velocity, torch.nn.Module) else torch.float32

    def log_density(x: torch.Tensor) -> torch.Tensor:
        return log_likelihood(torus, velocity, x.to(device, dtype), cfg.test_steps // 2, cfg.grid_power).cpu()

    plot_ramachandran_pair(
        samples,
        data,
        path,
        labels=("RFM samples", f"{residue_class} residues"),
        title=title,
        log_density=log_density,
    )


def run(
    residue_class: str,
    seed: int,
    budget: Budget | float,
    cfg: TorusConfig,
    out: Path,
    progress: bool = True,
    plot: bool = True,
    vonmises_ks: Sequence[int] = (1, 2, 4, 8, 16, 32),
    device: str = "cpu",
    restart: bool = False,
) -> list[dict]:
    """The von Mises anchor and one RFM run on ``residue_class`` for ``budget`` (a
    :class:`~gm.cli.Budget` or minutes); writes and returns both records."""
    start = time.perf_counter()
    budget = as_budget(budget, cfg.eval_every_minutes)
    torus = FlatTorus(2)
    data, splits, run_dir, vm_record = fit_anchor(residue_class, seed, out, vonmises_ks)
    x_train, x_val, x_test = (x.to(device) for x in splits)
    k, vm_test = vm_record["config"]["k"], vm_record["test_nll"]

    torch.manual_seed(seed)
    model = velocity_mlp(torus, hidden=cfg.hidden, depth=cfg.depth, torus_harmonics=cfg.torus_harmonics).to(device)
    loss_fn = dataset_rfm_loss(torus, x_train, rank_batch(cfg.batch), device, data_noise=cfg.data_noise)

    def nll(m, x, steps, validate=True):
        return float(-log_likelihood(torus, m, x, steps, cfg.grid_power, validate=validate).mean())

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
        val_fn=lambda m: nll(m, x_val[: cfg.selection_points], cfg.val_steps, validate=False),
        checkpoint_path=run_dir / "checkpoint.pt",
        run_config=training_settings(cfg, residue_class=residue_class),
        resume=not restart,
    )
    if res.rank != 0:
        return []  # data-parallel run: rank 0 evaluates and writes
    model.eval()
    test_nll = nll(model, x_test, cfg.test_steps)
    val_nll = nll(model, x_val, cfg.test_steps)
    if plot:
        _plot(
            residue_class,
            seed,
            data,
            model,
            cfg,
            run_dir / f"{residue_class}_seed{seed}.png",
            f"{residue_class} (seed {seed}): RFM {test_nll:.3f}, von Mises K={k} {vm_test:.3f}",
            device,
        )
    rec = new_record(
        "proteins",
        residue_class,
        seed,
        config=asdict(cfg),
        **budget.record_fields(),
        steps=res.steps,
        wall_time_s=time.perf_counter() - start + res.resumed_elapsed_s,
        val_nll=val_nll,
        test_nll=test_nll,
        likelihood_solver=solver_settings(cfg.test_steps, cfg.grid_power),
        n_train=len(x_train),
        n_val=len(x_val),
        n_test=len(x_test),
    )
    write_results(run_dir / "results.json", rec)
    return [vm_record, rec]


def run_joint(
    classes: Sequence[str],
    seed: int,
    budget: Budget | float,
    cfg: TorusConfig,
    out: Path,
    progress: bool = True,
    plot: bool = True,
    vonmises_ks: Sequence[int] = (1, 2, 4, 8, 16, 32),
    device: str = "cpu",
    restart: bool = False,
) -> list[dict]:
    """One class-conditional flow for all ``classes`` (a learned class embedding), trained on
    the union of their training splits for the per-class ``budget`` (a
    :class:`~gm.cli.Budget` or minutes) x the number of classes, i.e. the same total
    budget as per-class runs. The small classes (about 1-2k residues) borrow strength
    from General's 29k. Model selection: mean validation NLL over the classes. Each class's
    record is written to ``out/<class>/seed<seed>/results.json`` as usual."""
    start = time.perf_counter()
    budget = as_budget(budget, cfg.eval_every_minutes)
    joint = budget.scaled(len(classes))
    torus = FlatTorus(2)
    splits, anchors, datas, run_dirs = {}, {}, {}, {}
    for cls in classes:
        datas[cls], cpu_splits, run_dirs[cls], anchors[cls] = fit_anchor(cls, seed, out, vonmises_ks)
        splits[cls] = tuple(x.to(device) for x in cpu_splits)
    x_train = torch.cat([splits[c][0] for c in classes])
    y_train = torch.cat([torch.full((len(splits[c][0]),), i, device=device) for i, c in enumerate(classes)])

    torch.manual_seed(seed)
    model = velocity_mlp(
        torus, hidden=cfg.hidden, depth=cfg.depth, torus_harmonics=cfg.torus_harmonics, num_classes=len(classes)
    ).to(device)
    loss_fn = dataset_rfm_loss(torus, x_train, rank_batch(cfg.batch), device, labels=y_train, data_noise=cfg.data_noise)

    def conditioned(m, i):
        label = torch.tensor(i, device=device)
        return lambda z, t: m(z, t, label)

    def nll(m, i, x, steps, validate=True):
        return float(-log_likelihood(torus, conditioned(m, i), x, steps, cfg.grid_power, validate=validate).mean())

    def mean_val(m):
        return sum(
            nll(m, i, splits[c][1][: cfg.selection_points], cfg.val_steps, validate=False)
            for i, c in enumerate(classes)
        ) / len(classes)

    tc = joint.train_config(
        cfg,
        seed=seed,
        progress=progress,
        checkpoint_every_minutes=1.0,
        val_name=f"mean val NLL ({cfg.val_steps} rk4 steps, {cfg.selection_points} points per class)",
    )
    res = train(
        model,
        loss_fn,
        tc,
        val_fn=mean_val,
        checkpoint_path=out / f"joint_seed{seed}.pt",
        run_config=training_settings(cfg, classes=list(classes)),
        resume=not restart,
    )
    if res.rank != 0:
        return []
    model.eval()
    records = []
    for i, cls in enumerate(classes):
        x_val, x_test = splits[cls][1], splits[cls][2]
        test_nll, val_nll = nll(model, i, x_test, cfg.test_steps), nll(model, i, x_val, cfg.test_steps)
        vm = anchors[cls]
        if plot:
            _plot(
                cls,
                seed,
                datas[cls],
                conditioned(model, i),
                cfg,
                run_dirs[cls] / f"{cls}_seed{seed}.png",
                f"{cls} (seed {seed}): joint RFM {test_nll:.3f}, von Mises K={vm['config']['k']} {vm['test_nll']:.3f}",
                device,
            )
        rec = new_record(
            "proteins",
            cls,
            seed,
            config={**asdict(cfg), "joint_classes": list(classes)},
            # joint_budget_minutes / joint_budget_steps: what the one joint run had
            **budget.record_fields(),
            **{f"joint_{k}": v for k, v in joint.record_fields().items()},
            steps=res.steps,
            wall_time_s=time.perf_counter() - start + res.resumed_elapsed_s,
            val_nll=val_nll,
            test_nll=test_nll,
            likelihood_solver=solver_settings(cfg.test_steps, cfg.grid_power),
            n_train=len(splits[cls][0]),
            n_val=len(x_val),
            n_test=len(x_test),
        )
        write_results(run_dirs[cls] / "results.json", rec)
        records += [vm, rec]
    return records


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks proteins", description=__doc__)
    parser.add_argument("--classes", nargs="+", default=list(CLASSES), choices=CLASSES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--quick", action="store_true", help="small model, at most 0.3 min per run, K in (1, 4)")
    add_run_arguments(parser, minutes=10.0, out="runs/proteins")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--joint",
        action="store_true",
        help="one class-conditional flow for all --classes (budget: --minutes / --steps per class)",
    )
    add_config_overrides(parser, TorusConfig())
    args = parser.parse_args(argv)
    check_device(args.device)
    cfg, default_minutes, ks = TorusConfig(), 10.0, (1, 2, 4, 8, 16, 32)
    if args.quick:
        cfg, default_minutes, ks = QUICK, 0.3, (1, 4)
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
    for seed in args.seeds:
        if args.joint:
            print(
                f"[proteins] joint {'/'.join(args.classes)} seed {seed}: von Mises mixtures, then one "
                f"class-conditional RFM for {budget.scaled(len(args.classes)).describe()}"
            )
            recs = run_joint(
                args.classes,
                seed,
                budget,
                cfg,
                Path(args.out),
                progress=not args.no_progress,
                plot=not args.no_plot,
                vonmises_ks=ks,
                device=args.device,
                restart=args.restart,
            )
            pairs = [(recs[i], recs[i + 1]) for i in range(0, len(recs), 2)]
        else:
            pairs = []
            for cls in args.classes:
                print(f"[proteins] {cls} seed {seed}: von Mises mixture EM, then RFM for {budget.describe()}")
                recs = run(
                    cls,
                    seed,
                    budget,
                    cfg,
                    Path(args.out),
                    progress=not args.no_progress,
                    plot=not args.no_plot,
                    vonmises_ks=ks,
                    device=args.device,
                    restart=args.restart,
                )
                if recs:  # empty on ranks other than 0 of a data-parallel run
                    pairs.append(tuple(recs))
        for vm, rfm in pairs:
            print(
                f"[proteins] {rfm['dataset']} seed {seed}: von Mises (K={vm['config']['k']}) {vm['test_nll']:.3f}, "
                f"RFM {rfm['test_nll']:.3f} ({rfm['steps']} steps)"
            )
            rows.append((rfm["dataset"], seed, vm["test_nll"], rfm["test_nll"]))
    print("\n| class | seed | von Mises mixture | rdfm RFM |\n|---|---|---|---|")
    for cls, seed, v, r in rows:
        print(f"| {cls} | {seed} | {v:.3f} | {r:.3f} |")
    return 0
