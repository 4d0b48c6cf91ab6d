"""``python -m benchmarks codesign``: structure and sequence with one generator-matching model
(Multiflow-class): co-generation, inverse folding and folding, trained on the backbone set.

1. Data: the backbone structure set with its sequences (``python -m benchmarks data backbones``),
   split by sequence cluster (50% identity) into train / validation / test by the run's seed,
   exactly as ``python -m benchmarks backbones``.
2. Training: random crops of 64-128 residues; per protein, independent structure and sequence
   times, or one of them given (t = 1): ``proteins.CodesignFlow`` (frame loss + masked
   cross-entropy), the shared trainer (EMA, checkpoints, resume, validation-loss selection).
3. Evaluation on held-out chains (crops of at most ``max_length`` residues):

   - inverse folding: sequence recovery and per-residue perplexity (discrete ELBO) of the
     model, against the most frequent amino acid and an MLP on local structure features
     (phi, psi, DSSP state, neighbour counts; trained on the same split);
   - folding: TM-score and CA RMSD of structures generated from the native sequence, against
     the model's unconditional samples of the same lengths (no sequence information);
   - co-generation: amino-acid composition (Jensen-Shannon to the held-out chains), helix vs
     strand propensities of residue types in generated helices and strands (log-odds) beside
     the real ones, and the backbone metrics of the co-generated structures;
   - PDB files of every generated protein with its residue names.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from benchmarks.backbones import (
    add_crop_arguments,
    bucket_setting,
    check_buckets,
    load_splits,
    split_setting,
)
from benchmarks.results import new_record, write_results
from gm.cli import (
    Budget,
    CommandLineError,
    add_config_overrides,
    add_run_arguments,
    apply_config_overrides,
    as_budget,
    check_device,
    rank_batch,
    run_budget,
)
from gm.phase_log import PhaseLog
from proteins import training
from proteins.commands import add_mpnn_argument, add_preset_argument, load_mpnn
from proteins.data import AMINO_ACIDS, THREE_LETTER_CODES
from proteins.design_evaluation import (
    batch_slices,
    held_out_crops,
    propensity_log_odds,
    residue_frequencies,
    sequence_recovery,
    structure_features,
    train_feature_classifier,
)
from proteins.metrics import js_divergence
from proteins.training import CodesignConfig, codesign_flow

QUICK = CodesignConfig(
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
    sample_steps=10,
    eval_chains=4,
    eval_max_length=48,
    elbo_draws=1,
    eval_batch=4,
    baseline_chains=48,
    baseline_epochs=5,
)


def train_model(
    seed: int,
    budget: Budget | float,
    cfg: CodesignConfig,
    out: Path,
    *,
    progress: bool = True,
    device: str = "cpu",
    restart: bool = False,
    dataset: Path | None = None,
    split: str = "cluster",
    buckets: tuple[int, ...] | None = None,
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
        **budget.train_fields(),
    )
    return model, res, (train_set, val_set, test_set)


# ------------------------------------------------------------------------------------------------
# evaluation data


def _trim(sl: slice, *tensors: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """The rows ``sl`` of each tensor, cut to the longest real length among them."""
    longest = int(mask[sl].sum(-1).max())
    return [t[sl, :longest] for t in tensors]


# ------------------------------------------------------------------------------------------------
# inverse-folding baselines


# ------------------------------------------------------------------------------------------------
# evaluation


def _mean_ci(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def evaluate(
    model,
    splits,
    cfg: CodesignConfig,
    run_dir: Path,
    *,
    seed: int,
    device: str = "cpu",
    progress: bool = True,
    mpnn=None,
) -> dict:
    """Inverse folding, folding and co-generation on held-out crops; returns the record fields
    (with a markdown ``table``) and writes PDB files of every generated protein. ``progress``:
    say on stderr what each long phase is doing (sampling, the baseline, TM-scores). ``mpnn``
    (a :class:`proteins.mpnn.ProteinMPNN`): add its recovery and perplexity on the same chains
    as an inverse-folding anchor row."""
    from proteins import evaluation, metrics
    from proteins.frames import backbone_atoms
    from proteins.pdb import write_pdb

    train_set, val_set, test_set = splits
    flow = codesign_flow(cfg)
    held = held_out_crops(test_set, cfg.eval_chains, cfg.eval_max_length, seed=seed + 101)
    n = len(held.names)
    batches = batch_slices(n, cfg.eval_batch)
    timings: dict[str, float] = {}
    log = PhaseLog("codesign", progress)

    def run(name: str, given: str | None = None, **options) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples for every held-out crop, in batches, with the native ``"structure"`` or
        ``"sequence"`` given (or neither): atoms (B, L, 4, 3) and residues (B, L)."""
        t0 = time.perf_counter()
        log.start(
            f"{name}: sampling {n} proteins ({cfg.sample_steps} steps, {len(batches)} batches of at most "
            f"{cfg.eval_batch})"
        )
        atoms = torch.zeros_like(held.atoms)
        residues = torch.full_like(held.residues, -1)
        for k, sl in enumerate(batches):
            log.update(f"{name}: batch {k + 1}/{len(batches)}, {time.perf_counter() - t0:.0f} s")
            native_atoms, native_res, mask = _trim(sl, held.atoms, held.residues, held.mask, mask=held.mask)
            g = torch.Generator(device=device).manual_seed(seed * 1000 + 17 * k + len(name))
            fixed = {} if given is None else {given: (native_atoms if given == "structure" else native_res).to(device)}
            out = flow.sample(model, mask.to(device), steps=cfg.sample_steps, generator=g, **fixed, **options)
            length = mask.shape[1]
            atoms[sl, :length] = backbone_atoms(out.frames, mask.to(device)).cpu()
            residues[sl, :length] = out.residues.cpu()
        timings[name] = time.perf_counter() - t0
        print(f"[codesign] {name}: {n} proteins in {timings[name]:.0f} s", flush=True)
        return atoms, residues

    # inverse folding: the model (exact CTMC, and purity sampling at low temperature) ------------
    inverse = {}
    for label, options in (
        ("model, CTMC (T = 1)", {}),
        ("model, purity (T = 0.1)", {"temperature": 0.1, "unmasking": "confidence"}),
    ):
        inverse[label] = run(f"inverse folding, {label}", "structure", **options)[1]
    # the one-shot posterior argmax from the fully masked sequence (one network call)
    one_shot = torch.full_like(held.residues, -1)
    elbo_nats = []
    log.start(f"inverse folding: one-shot argmax and sequence ELBO ({cfg.elbo_draws} draws) of {n} proteins")
    with torch.no_grad():
        for sl in batches:
            native_atoms, native_res, mask = _trim(sl, held.atoms, held.residues, held.mask, mask=held.mask)
            frames = flow.backbone.frames_from_atoms(native_atoms.to(device), mask.to(device))
            one = torch.ones(mask.shape[0], device=device)
            masked = torch.full(mask.shape, 20, dtype=torch.long, device=device)
            logits = model(frames, one, masked, torch.zeros_like(one), mask.to(device), None).logits
            one_shot[sl, : mask.shape[1]] = torch.where(mask, logits.argmax(-1).cpu(), -1)
            est = flow.sequence_elbo(
                model,
                native_atoms.to(device),
                native_res.to(device),
                mask.to(device),
                n_draws=cfg.elbo_draws,
                generator=torch.Generator().manual_seed(seed),
            )
            elbo_nats.append((est.nats_per_token * est.n_tokens, est.n_tokens, est.stderr_bits_per_token))
    inverse["model, one-shot argmax"] = one_shot
    tokens = sum(k for _, k, _ in elbo_nats)
    model_nats = sum(v for v, _, _ in elbo_nats) / tokens
    model_nats_se = math.sqrt(sum((s * math.log(2) * k) ** 2 for _, k, s in elbo_nats)) / tokens

    # baselines: most frequent residue type, and the feature MLP
    freq = residue_frequencies(train_set)
    most = int(freq.argmax())
    inverse[f"most frequent ({AMINO_ACIDS[most]})"] = torch.where(held.mask, most, -1)
    t0 = time.perf_counter()
    mlp = train_feature_classifier(
        train_set,
        val_set,
        seed=seed,
        max_length=cfg.eval_max_length,
        epochs=cfg.baseline_epochs,
        chains=cfg.baseline_chains or None,
        progress=progress,
    )
    timings["feature MLP training"] = time.perf_counter() - t0
    with torch.no_grad():
        feats = structure_features(held.atoms, held.mask)
        mlp_logits = mlp(feats)
    inverse["feature MLP"] = torch.where(held.mask, mlp_logits.argmax(-1), -1)
    known = held.mask & (held.residues >= 0)
    native_known = held.residues[known]
    unigram_nats = float(-torch.log(freq[native_known]).mean())
    mlp_nats = float(torch.nn.functional.cross_entropy(mlp_logits[known], native_known))
    perplexity = {
        "model, CTMC (T = 1)": (math.exp(model_nats), model_nats_se * math.exp(model_nats)),
        f"most frequent ({AMINO_ACIDS[most]})": (math.exp(unigram_nats), 0.0),
        "feature MLP": (math.exp(mlp_nats), 0.0),
    }
    if mpnn is not None:
        # the anchor: ProteinMPNN's design at its default T = 0.1, and its perplexity of the
        # native sequences (4 random decoding orders); its training set (PDB before 2021) may
        # hold these chains
        t0 = time.perf_counter()
        log.start(f"inverse folding: ProteinMPNN {mpnn.model} on {n} proteins")
        label = f"ProteinMPNN {mpnn.model} (T = 0.1)"
        g = torch.Generator().manual_seed(seed + 303)
        inverse[label] = mpnn.design(held.atoms, held.mask, generator=g).residues[:, 0]
        nats = mpnn.score(held.atoms, held.residues, held.mask, orders=4, generator=g)
        counts = known.sum(-1)
        perplexity[label] = (math.exp(float((nats * counts).sum() / counts.sum())), 0.0)
        timings["ProteinMPNN"] = time.perf_counter() - t0
    recovery = {
        label: _mean_ci(sequence_recovery(designed, held.residues, held.mask).tolist())
        for label, designed in inverse.items()
    }
    # pooled over residues too (the per-protein mean weights short chains more)
    recovery_pooled = {
        label: float(((designed == held.residues) & known).sum() / known.sum()) for label, designed in inverse.items()
    }

    # folding vs the unconditional model of the same lengths ----------------------------------
    folded = run("folding", "sequence")[0]
    cogen_atoms, cogen_res = run("co-generation")
    fold_tm, fold_rmsd, base_tm, base_rmsd = [], [], [], []
    t0 = time.perf_counter()
    log.start(f"folding: TM-scores and CA RMSDs of {n} folded and {n} unconditional structures")
    for k in range(n):
        log.update(f"folding: TM-scores, protein {k + 1}/{n}, {time.perf_counter() - t0:.0f} s")
        m = held.mask[k]
        native = held.atoms[k][m][:, :3]
        fold_tm.append(metrics.tm_score(native, folded[k][m][:, :3], aligned=True))
        base_tm.append(metrics.tm_score(native, cogen_atoms[k][m][:, :3], aligned=True))
        fold_rmsd.append(metrics.ca_rmsd(native, folded[k][m]))
        base_rmsd.append(metrics.ca_rmsd(native, cogen_atoms[k][m]))
    folding = {
        "tm": _mean_ci(fold_tm),
        "tm_std": float(np.std(fold_tm, ddof=1)) if n > 1 else float("nan"),
        "rmsd": _mean_ci(fold_rmsd),
        "baseline_tm": _mean_ci(base_tm),
        "baseline_tm_std": float(np.std(base_tm, ddof=1)) if n > 1 else float("nan"),
        "baseline_rmsd": _mean_ci(base_rmsd),
        "per_protein_tm": fold_tm,
        "per_protein_baseline_tm": base_tm,
    }
    folding["target_met"] = bool(folding["tm"][0] - folding["baseline_tm"][0] > folding["baseline_tm_std"])

    # co-generation -----------------------------------------------------------------------------
    def composition(res: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        r = res[mask & (res >= 0)]
        c = torch.bincount(r, minlength=len(AMINO_ACIDS)).to(torch.float64)
        return (c / c.sum()).numpy()

    log.start(
        f"co-generation: secondary structure, backbone statistics and all-against-all TM-align of the {n} "
        "co-generated backbones"
    )
    real_comp = composition(held.residues, held.mask)
    cogen_comp = composition(cogen_res, held.mask)
    train_comp = freq.numpy()
    real_ss = metrics.secondary_structure(held.atoms, held.mask)
    cogen_ss = metrics.secondary_structure(cogen_atoms, held.mask)
    real_lo = propensity_log_odds(held.residues, real_ss, held.mask)
    cogen_lo = propensity_log_odds(cogen_res, cogen_ss, held.mask)
    # the real log-odds from every training residue as well (a low-noise reference)
    stats = {
        "co-generated": evaluation.structure_statistics(cogen_atoms, held.mask),
        "folded": evaluation.structure_statistics(folded, held.mask),
        "real (held out)": evaluation.structure_statistics(held.atoms, held.mask),
    }
    distances = {
        "co-generated": evaluation.distribution_distances(cogen_atoms, held.mask, held.atoms, held.mask),
        "folded": evaluation.distribution_distances(folded, held.mask, held.atoms, held.mask),
    }
    cogen = {
        "composition_js": js_divergence(cogen_comp, real_comp),
        "composition_js_train_vs_test": js_divergence(train_comp, real_comp),
        "composition": dict(zip(AMINO_ACIDS, cogen_comp.tolist())),
        "real_composition": dict(zip(AMINO_ACIDS, real_comp.tolist())),
        "helix_strand_log_odds": dict(zip(AMINO_ACIDS, cogen_lo.tolist())),
        "real_helix_strand_log_odds": dict(zip(AMINO_ACIDS, real_lo.tolist())),
        # undefined (NaN) when the generated set has no helix or no strand residues
        "log_odds_correlation": (
            float(np.corrcoef(cogen_lo, real_lo)[0, 1]) if cogen_lo.std() > 0 and real_lo.std() > 0 else float("nan")
        ),
        "statistics": stats,
        "distances": distances,
        "diversity": metrics.diversity(cogen_atoms[:, :, :3], held.mask),
    }

    # PDB files ------------------------------------------------------------------------------------
    def names(res: torch.Tensor) -> list[str]:
        return [THREE_LETTER_CODES[int(r)] if r >= 0 else "UNK" for r in res]

    for k in range(n):
        m = held.mask[k]
        source, chain_id, first = held.names[k].rsplit(":", 2)
        tag = f"{source.split('.')[0]}_{chain_id}_{first}"  # 1A0J_A.pdb.gz:A:203 -> 1A0J_A_A_203
        write_pdb(
            run_dir / "samples" / f"cogen_{k:03d}_len{int(m.sum())}.pdb",
            cogen_atoms[k],
            m,
            residue_names=names(cogen_res[k][m]),
            title=f"rdfm codesign seed {seed}: co-generated",
        )
        write_pdb(
            run_dir / "samples" / f"folded_{k:03d}_{tag}.pdb",
            folded[k],
            m,
            residue_names=names(held.residues[k][m]),
            title=f"rdfm codesign seed {seed}: folded {held.names[k]}",
        )
        write_pdb(
            run_dir / "samples" / f"designed_{k:03d}_{tag}.pdb",
            held.atoms[k],
            m,
            residue_names=names(inverse["model, purity (T = 0.1)"][k][m]),
            title=f"rdfm codesign seed {seed}: inverse folding of {held.names[k]} (purity, T = 0.1)",
        )

    # the target is judged on one sampler fixed in advance (Multiflow's inverse-folding setting),
    # not on the best of the variants on the test chains
    designed_label = "model, purity (T = 0.1)"
    record = {
        "n_chains": n,
        "max_length": cfg.eval_max_length,
        "chains": held.names,
        "recovery": recovery,
        "recovery_pooled": recovery_pooled,
        "perplexity": perplexity,
        "elbo_nats_per_residue": model_nats,
        "folding": folding,
        "cogeneration": cogen,
        "timings_s": timings,
        "n_train_chains": len(train_set),
        "n_test_chains": len(test_set),
    }
    record["floors"] = {
        "inverse folding: model (purity, T = 0.1) recovery >= feature MLP + 0.05": recovery[designed_label][0]
        >= recovery["feature MLP"][0] + 0.05,
        "folding: TM gain over unconditional > its spread": folding["target_met"],
    }
    record["table"] = _table(record)
    return record


def _table(r: dict) -> str:
    lines = [
        f"Inverse folding ({r['n_chains']} held-out chains, crops of <= {r['max_length']} residues):",
        "",
        "| method | recovery (mean per chain, 95% CI) | recovery (pooled) | perplexity |",
        "|---|---|---|---|",
    ]
    for label, (mean, ci) in r["recovery"].items():
        ppl = r["perplexity"].get(label)
        ppl_text = (
            "—" if ppl is None else (f"{ppl[0]:.2f} ± {1.96 * ppl[1]:.2f} (ELBO bound)" if ppl[1] else f"{ppl[0]:.2f}")
        )
        lines.append(f"| {label} | {mean:.3f} ± {ci:.3f} | {r['recovery_pooled'][label]:.3f} | {ppl_text} |")
    if any(label.startswith("ProteinMPNN") for label in r["recovery"]):
        lines += [
            "",
            "ProteinMPNN (the anchor): its published weights, trained on PDB chains deposited before 2021, which "
            "may include these held-out chains; its perplexity is exact (autoregressive, mean over 4 random "
            "decoding orders).",
        ]
    f = r["folding"]
    lines += [
        "",
        "Folding (structure from the native sequence) vs unconditional samples of the same lengths:",
        "",
        "| method | TM-score (mean ± 95% CI) | TM std | CA RMSD (A) |",
        "|---|---|---|---|",
        f"| model, sequence given | {f['tm'][0]:.3f} ± {f['tm'][1]:.3f} | {f['tm_std']:.3f} | "
        f"{f['rmsd'][0]:.1f} ± {f['rmsd'][1]:.1f} |",
        f"| model, unconditional | {f['baseline_tm'][0]:.3f} ± {f['baseline_tm'][1]:.3f} | "
        f"{f['baseline_tm_std']:.3f} | {f['baseline_rmsd'][0]:.1f} ± {f['baseline_rmsd'][1]:.1f} |",
    ]
    c = r["cogeneration"]
    s, d = c["statistics"], c["distances"]
    lines += [
        "",
        f"Co-generation: composition JS to held-out chains {c['composition_js']:.4f} nats (training vs "
        f"held-out chains: {c['composition_js_train_vs_test']:.4f}); helix/strand log-odds correlation with "
        f"the real chains {c['log_odds_correlation']:.2f}; mean pairwise TM of the co-generated backbones "
        f"{c['diversity']['mean_pairwise_tm']:.3f}, {c['diversity']['clusters_at_0_5']} clusters at TM 0.5 of "
        f"{c['diversity']['n']}",
        "",
        "| set | CA-CA within 0.1 A | clash rate | helix | strand | R_g / L^0.4 | Rama JS |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ("co-generated", "folded", "real (held out)"):
        js = d[row]["ramachandran_js"] if row in d else 0.0
        lines.append(
            f"| {row} | {s[row]['ca_ca_within_0.1']:.3f} | {s[row]['clash_rate']:.4f} | {s[row]['helix']:.2f} | "
            f"{s[row]['strand']:.2f} | {s[row]['rg_over_l_0.4']:.2f} | {js:.3f} |"
        )
    lines.append("")
    lines.append("Targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in r["floors"].items()))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks codesign", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    # Using a trained model is a user command now (rdfm design / fold / generate); these options
    # only say so, for the commands people already type.
    for option in ("--design", "--fold", "--generate"):
        parser.add_argument(option, nargs="?", const=True, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny model, 40-48 residue crops, at most 0.3 min of "
        "training, 4 held-out chains, the feature-MLP baseline on 48 training chains, one thread "
        "unless --threads (under a minute)",
    )
    parser.add_argument("--train-only", action="store_true", help="train (or resume) and stop before evaluating")
    parser.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="a structure dataset .npz (proteins.data.build_structure_dataset; default: the cached "
        "set of `python -m benchmarks data backbones`)",
    )
    add_preset_argument(parser)
    add_crop_arguments(parser)
    add_mpnn_argument(parser, sequences=False)
    add_run_arguments(parser, minutes=60.0, out="runs/codesign")
    add_config_overrides(parser, CodesignConfig())
    args = parser.parse_args(argv)
    check_device(args.device)
    mpnn = None if args.train_only else load_mpnn(args)
    # --quick runs on one thread unless --threads says otherwise: its tiny models gain little from
    # a second one, and on a busy 2-core machine threads waiting for each other made a quick run
    # 10-50x slower (measured: 0.4 instead of 12-30 steps/s beside one other process)
    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)
    cfg, default_minutes = CodesignConfig(), 60.0
    if args.quick:
        cfg, default_minutes = QUICK, 0.3
        if args.minutes is not None:
            args.minutes = min(args.minutes, 0.3)
    if args.preset is not None:  # the network sizes; --node-dim etc. override them
        cfg = training.apply_preset(cfg, args.preset)
    cfg = apply_config_overrides(cfg, args)
    for option in ("design", "fold", "generate"):
        if getattr(args, option) is not None:
            raise CommandLineError(
                f"--{option} moved to the user command: rdfm {option} ... --checkpoint "
                f"{Path(args.out) / f'seed{args.seeds[0]}' / 'checkpoint.pt'} (see rdfm {option} --help)"
            )
    if cfg.baseline_chains < 0 or cfg.baseline_epochs < 1:
        raise CommandLineError(
            f"--baseline-chains must be >= 0 (0: all) and --baseline-epochs >= 1, got "
            f"{cfg.baseline_chains} and {cfg.baseline_epochs}"
        )
    budget = run_budget(
        args.minutes,
        args.steps,
        default_minutes=default_minutes,
        eval_every_minutes=cfg.eval_every_minutes,
        compile=args.compile,
    )
    buckets = check_buckets(args.crop_buckets, cfg)
    out = Path(args.out)
    for seed in args.seeds:
        print(f"[codesign] seed {seed}: training for {budget.describe()}")
        start = time.perf_counter()
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
        )
        if res.rank != 0:
            continue  # data-parallel run: rank 0 evaluates and writes
        print(
            f"[codesign] seed {seed}: {res.steps} steps, best validation loss {res.best_val:.3f} (step {res.best_step})"
        )
        if args.train_only:
            continue
        record = evaluate(
            model,
            splits,
            cfg,
            out / f"seed{seed}",
            seed=seed,
            device=args.device,
            progress=not args.no_progress,
            mpnn=mpnn,
        )
        record = new_record(
            "codesign",
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
