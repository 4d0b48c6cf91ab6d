"""``python -m benchmarks text``: autoregressive, masked (whole-sequence) and block-diffusion
text models on the King James Bible (characters) or a user's corpus, same transformer, width,
depth, batch and wall-clock budget per model.

Reports test bits per character (AR: exact; masked and block: the ELBO bound, Monte Carlo with
its standard error), a compute curve (the EMA weights at several budgets of one run: the
learning rate is constant after warmup, so the state at 5 minutes of a 20-minute run is the
state of a 5-minute run), and the quality of 64 samples per model: generative perplexity under
the AR model of the same run and the samples' unigram entropy.

``--ablation`` trains masked models with the variance-reduction options of
:mod:`dfm.masking` at an equal step budget. ``python -m benchmarks text sample`` loads a
trained model and completes a ``--prompt`` or fills a ``--template`` with holes.

The models, their training and sampling are the library's (:mod:`dfm.text_model`,
:mod:`dfm.text_generation`, :mod:`dfm.autoregressive`, the budget marks of
:mod:`gm.train.snapshots`; ``rdfm text`` runs them on a user's file); this script measures them.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from benchmarks.results import new_record, write_results
from benchmarks.text_data import eval_chunks, load_kjv, load_text_corpus, tokenize_corpus
from dfm import BlockDiffusion, CTMCSolver, MixturePath, mask_elbo
from dfm.autoregressive import (
    ar_bpc,
    ar_logits,
    ar_nll,
    ar_sample,
    generative_perplexity,
    sample_entropy_bits,
    unigram_bpc,
)
from dfm.commands import add_sampling_arguments, check_sampling_request, print_samples
from dfm.corpus import Vocabulary
from dfm.text_generation import TextModel
from dfm.text_model import TextConfig, build, check_model, masked_objective, train_text_model
from gm.cli import (
    CommandLineError,
    add_config_overrides,
    add_run_arguments,
    apply_config_overrides,
    check_device,
    rank_batch,
    run_budget,
    training_settings,
)
from gm.files import save_figure
from gm.phase_log import PhaseLog
from gm.train import save_checkpoint
from gm.train.distributed import is_main_process
from gm.train.snapshots import BudgetSnapshots

# main, and the library's text model, AR baseline and measures this script is built on
__all__ = [
    "main",
    "model_kind",
    "TextConfig",
    "build",
    "ar_logits",
    "ar_nll",
    "ar_bpc",
    "ar_sample",
    "sample_entropy_bits",
    "unigram_bpc",
]

QUICK = TextConfig(
    length=64,
    width=64,
    depth=2,
    heads=2,
    batch=16,
    warmup_steps=20,
    eval_chunks=32,
    elbo_draws=2,
    sample_steps=32,
    n_samples=8,
)
# The training time of a whole --quick run, shared equally by its models (the five default
# models: 3.6 s each), so that the command takes under a minute however many models it trains.
QUICK_MINUTES = 0.3

# The section-1 options of the masked objective, each trained at the same step budget.
_FULL = dict(mask_rate_min=0.0, mask_rate_max=1.0, masked_loss="elbo")
ABLATIONS: dict[str, dict] = {
    "time-uniform": dict(_FULL, estimator="time", times="uniform"),
    "time-stratified": dict(_FULL, estimator="time", times="stratified"),  # the objective before the options
    "time-antithetic": dict(_FULL, estimator="time", times="antithetic"),
    "time-low-discrepancy": dict(_FULL, estimator="time", times="low_discrepancy"),
    "count-stratified": dict(_FULL, estimator="count", times="stratified"),
    "count-clipped": dict(_FULL, estimator="count", times="stratified", mask_rate_min=0.1, mask_rate_max=0.9),
    "count-clipped-narrow": dict(_FULL, estimator="count", times="stratified", mask_rate_min=0.2, mask_rate_max=0.8),
    "count-clipped-0.3-0.7": dict(_FULL, estimator="count", times="stratified", mask_rate_min=0.3, mask_rate_max=0.7),
    "time-clipped": dict(_FULL, estimator="time", times="stratified", mask_rate_min=0.1, mask_rate_max=0.9),
    "time-mean": dict(_FULL, estimator="time", times="stratified", masked_loss="mean"),
}


def _library_name(name: str) -> str:
    """The library's model name: an ablation variant ``masked-<variant>`` is a ``masked`` model."""
    return "masked" if name.startswith("masked-") and name[len("masked-") :] in ABLATIONS else name


def model_kind(name: str) -> tuple[str, int | None]:
    """``("ar", None)``, ``("masked", None)`` or ``("block", b)`` for ``"blockB"``
    (:func:`dfm.text_model.model_kind`, plus the ablation variants ``masked-<variant>``)."""
    from dfm.text_model import model_kind as library_kind

    try:
        return library_kind(_library_name(name))
    except ValueError:
        raise CommandLineError(
            f"unknown model {name!r}: use ar, masked, masked-<ablation variant> or blockB (B a block size "
            "dividing the length)"
        ) from None


def main(argv: list[str]) -> int:
    if argv and argv[0] == "sample":
        return sample_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks text", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny models, {QUICK_MINUTES:g} min of training shared by the models, one thread unless "
        "--threads, under a minute in all (smoke test / demo)",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_run_arguments(parser, minutes=10.0, out="runs/text")  # the budget is PER MODEL
    parser.add_argument(
        "--models",
        nargs="+",
        default=["ar", "masked", "block4", "block8", "block16"],
        help="ar, masked, blockB (block diffusion with block size B); the ratios need ar",
    )
    parser.add_argument(
        "--curve",
        nargs="*",
        type=float,
        default=[],
        help="budgets (minutes) at which the EMA weights of each run are also evaluated; a run "
        "trains to the largest of these and --minutes (e.g. --curve 2.5 5 10 20)",
    )
    parser.add_argument(
        "--curve-models",
        nargs="*",
        default=None,
        help="the models trained to the largest --curve budget (default: all); others stop at --minutes",
    )
    parser.add_argument(
        "--ablation",
        nargs="*",
        default=None,
        choices=list(ABLATIONS),
        help="train masked models with these objective options instead (all if none named); "
        "use with --steps for an equal budget",
    )
    parser.add_argument("--corpus", default=None, help="a UTF-8 text file instead of the KJV (split by lines)")
    parser.add_argument("--skip-training", action="store_true", help="evaluate the snapshots already in --out")
    parser.add_argument(
        "--skip-evaluation",
        action="store_true",
        help="train only (several processes can train models into one --out, then evaluate)",
    )
    add_config_overrides(parser, TextConfig())
    args = parser.parse_args(argv)
    check_device(args.device)
    names = list(args.models)
    if args.ablation is not None:
        names = [f"masked-{v}" for v in (args.ablation or list(ABLATIONS))]
    cfg, default_minutes = TextConfig(), 10.0
    if args.quick:
        cfg, default_minutes = QUICK, QUICK_MINUTES / len(names)
        if args.minutes is not None:
            args.minutes = min(args.minutes, default_minutes)
    cfg = apply_config_overrides(cfg, args)
    progress = not args.no_progress
    kinds = {name: model_kind(name) for name in names}

    def run_config(name: str) -> TextConfig:
        return replace(cfg, **ABLATIONS[name[len("masked-") :]]) if name.startswith("masked-") else cfg

    for name, (kind, block) in kinds.items():
        try:
            check_model(_library_name(name), cfg)
            if kind != "ar":
                masked_objective(run_config(name), MixturePath(2, "mask"), block)
        except ValueError as error:
            raise CommandLineError(str(error)) from None
    main_minutes = default_minutes if args.minutes is None else args.minutes
    record_budget = run_budget(
        main_minutes if args.steps is None else args.minutes,
        args.steps,
        default_minutes=default_minutes,
        eval_every_minutes=0.1,
        evaluations=5,
        compile=args.compile,
    )
    if args.curve and args.steps is not None:
        raise CommandLineError("--curve takes wall-clock budgets: use it without --steps")
    if any(not (m > 0) for m in args.curve):
        raise CommandLineError(f"--curve budgets must be positive minutes, got {args.curve}")
    # --quick runs on one thread unless --threads says otherwise: its tiny models gain little from
    # a second one, and on a busy 2-core machine threads waiting for each other made a quick run
    # 10-50x slower (measured: 0.4 instead of 12-30 steps/s beside one other process)
    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    corpus = load_text_corpus(args.corpus) if args.corpus else load_kjv()
    streams = tokenize_corpus(corpus, cfg.tokenizer, cfg.bpe_vocab_size)
    vocab, train_ids = streams.vocab_size, streams.train
    test_chunks = eval_chunks(streams.test, cfg.length, cfg.eval_chunks)
    if len(test_chunks) == 0 or len(streams.val) < cfg.length or len(train_ids) <= cfg.length:
        raise CommandLineError(
            f"the corpus is too small for windows of {cfg.length} tokens (train {len(train_ids)}, "
            f"val {len(streams.val)}, test {len(streams.test)} tokens)"
        )
    test_chars = streams.n_chars(test_chunks)
    device = torch.device(args.device)
    test_on_device = test_chunks.to(device)
    path = MixturePath(vocab, "mask")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batch = rank_batch(cfg.batch)  # this process's share (all of it unless under torchrun)
    meta = dict(config=asdict(cfg), vocab_size=vocab, corpus=args.corpus, chars=getattr(corpus, "chars", None))

    # ---- training: one run per model, EMA snapshots at the budget marks -------------------------
    for name in names:
        mcfg = run_config(name)
        curve_here = args.curve if args.curve_models is None or name in args.curve_models else []
        marks = sorted({main_minutes, *curve_here}) if args.steps is None else []
        minutes = max(marks) if marks else args.minutes
        # validations (each takes a snapshot) every 6 s, or a fifth of the smallest mark
        budget = run_budget(
            minutes,
            args.steps,
            default_minutes=default_minutes,
            eval_every_minutes=min([0.1, *(m / 5 for m in marks)]),
            evaluations=5,
            compile=args.compile,
        )
        budget = replace(budget, eval_at_minutes=tuple(marks))  # a snapshot exactly at each mark
        if args.skip_training:
            continue
        ckpt = out / f"{name}_seed{args.seed}.pt"
        snap_path = out / f"{name}_seed{args.seed}_snapshots.pt"
        snapshots = BudgetSnapshots.for_run(ckpt, marks, restart=args.restart, path=snap_path)
        _, res = train_text_model(
            _library_name(name),
            mcfg,
            streams,
            budget.train_fields(),
            checkpoint_path=ckpt,
            seed=args.seed,
            device=device,
            resume=not args.restart,
            progress=progress,
            run_config=training_settings(mcfg, model=name, corpus=args.corpus),
            batch=batch,
            snapshots=snapshots,
        )
        if res.rank != 0:
            continue  # data-parallel run: rank 0 evaluates and writes
        meta_path = out / f"{name}_seed{args.seed}_meta.pt"
        save_checkpoint(meta_path, {**meta, "config": asdict(mcfg), "model": name, "steps": res.steps})
    if args.skip_evaluation or not is_main_process():
        return 0

    # ---- evaluation ----------------------------------------------------------------------------
    def load(name: str, key) -> tuple[torch.nn.Module, dict] | None:
        snap_path = out / f"{name}_seed{args.seed}_snapshots.pt"
        if not snap_path.exists():
            return None
        snaps = torch.load(snap_path, weights_only=False, map_location="cpu")
        if key not in snaps:
            return None
        kind, block = kinds.get(name) or model_kind(name)
        model = build(run_config(name), vocab, causal=kind == "ar", block_size=block).to(device)
        model.load_state_dict(snaps[key]["state"])
        model.eval()
        return model, snaps[key]

    def test_bpc(name: str, model) -> tuple[float, float]:
        kind, block = kinds.get(name) or model_kind(name)
        gen = torch.Generator().manual_seed(args.seed)  # the ELBO's draws (CPU)
        if kind == "ar":
            return ar_bpc(model, test_on_device, n_chars=test_chars), 0.0
        if block is None:
            est = mask_elbo(model, path, test_on_device, n_draws=cfg.elbo_draws, n_chars=test_chars, generator=gen)
        else:
            est = BlockDiffusion(path, block).elbo(
                model, test_on_device, n_draws=cfg.elbo_draws, n_chars=test_chars, generator=gen
            )
        return est.bits_per_char, est.stderr_bits_per_char

    main_key = "final" if args.steps is not None else main_minutes
    log = PhaseLog("text", progress)  # the evaluation's phases, so that no part of a run is silent
    evaluated = [n for n in names if (out / f"{n}_seed{args.seed}_snapshots.pt").exists()]
    results: dict[str, dict] = {}
    for name in evaluated:
        loaded = load(name, main_key)
        if loaded is None:
            print(f"[text] {name}: no snapshot at the main budget ({main_key}) in {out}; skipped")
            continue
        model, snap = loaded
        log.start(f"{name}: test bits per character on {len(test_chunks)} windows of {cfg.length} tokens")
        bpc, stderr = test_bpc(name, model)
        curve = []
        snaps = torch.load(out / f"{name}_seed{args.seed}_snapshots.pt", weights_only=False, map_location="cpu")
        for key in sorted(k for k in snaps if k != "final"):
            if key == main_key:
                curve.append(dict(minutes=key, steps=snap["step"], elapsed_s=snap["elapsed_s"], bpc=bpc, stderr=stderr))
                continue
            other, osnap = load(name, key)
            log.start(f"{name}: test bits per character of the {key:g}-minute snapshot")
            b_, s_ = test_bpc(name, other)
            curve.append(dict(minutes=key, steps=osnap["step"], elapsed_s=osnap["elapsed_s"], bpc=b_, stderr=s_))
        results[name] = dict(
            bpc=bpc, stderr=stderr, steps=snap["step"], elapsed_s=snap["elapsed_s"], curve=curve, model=model
        )
        print(
            f"[text] {name}: {snap['step']} steps, test bpc {bpc:.3f}"
            + (f" ± {stderr:.3f} (ELBO bound)" if stderr else " (exact)")
        )

    # samples and their quality, judged by the AR model of this run
    judge = results.get("ar", {}).get("model")
    real = test_chunks[: cfg.n_samples]
    reference = dict(entropy=sample_entropy_bits(real))
    if judge is not None:
        reference["gen_ppl"] = generative_perplexity(judge, real)
    for name, r in results.items():
        if args.ablation is not None:
            break
        kind, block = kinds.get(name) or model_kind(name)
        gen = torch.Generator(device=device).manual_seed(args.seed)
        n = cfg.n_samples
        model = r["model"]
        # (sampler description, the draw): drawn one after the other below, in this order, from
        # one generator, each announced first (sampling is the evaluation's longest phase)
        runs: list[tuple[str, Callable[[], torch.Tensor]]] = []
        if kind == "ar":
            runs.append(("ancestral, T=1, float64", lambda: ar_sample(model, n, cfg.length, gen)))
        elif block is None:
            # one reveal per step (random order): the model's own any-order conditionals, no
            # simultaneous independent draws (the exact CTMC's Binomial reveals add that error)
            x0 = path.sample_source((n, cfg.length), device=device)
            solver = CTMCSolver(path, model)
            per_step = cfg.length / cfg.sample_steps
            runs.append(
                (
                    f"{cfg.sample_steps} steps, "
                    + ("one random position per step" if per_step == 1 else f"~{per_step:g} random positions per step")
                    + ", T=1, float64",
                    lambda: solver.sample(x0, steps=cfg.sample_steps, generator=gen, unmasking="random_order"),
                )
            )
            semi = min(16, cfg.length)
            semi_steps = max(1, cfg.sample_steps * semi // cfg.length)
            runs.append(
                (
                    f"semi-AR blocks of {semi}, {semi_steps} steps each, confidence unmasking, T=1",
                    lambda: solver.sample(x0, steps=semi_steps, generator=gen, block_size=semi, unmasking="confidence"),
                )
            )
        else:
            x0 = path.sample_source((n, cfg.length), device=device)
            blocks = BlockDiffusion(path, block)
            runs.append(
                (
                    f"block by block, {block} steps per block, one random position per step, T=1, float64",
                    lambda: blocks.sample(model, x0, steps=block, generator=gen, unmasking="random_order"),
                )
            )
            runs.append(
                (
                    f"block by block, {block} steps per block, confidence unmasking, T=1",
                    lambda: blocks.sample(model, x0, steps=block, generator=gen, unmasking="confidence"),
                )
            )
        r["samples"] = []
        for sampler, draw in runs:
            log.start(f"{name}: sampling {n} sequences of {cfg.length} tokens ({sampler})")
            tokens = draw()
            entry = dict(
                sampler=sampler,
                entropy=sample_entropy_bits(tokens.cpu()),
                texts=[streams.decode(s) for s in tokens[:3].cpu()],
            )
            if judge is not None:
                entry["gen_ppl"] = generative_perplexity(judge, tokens)
            r["samples"].append(entry)
        del r["model"]
    for r in results.values():
        r.pop("model", None)

    uni = unigram_bpc(train_ids, test_chunks.flatten(), vocab, n_chars=test_chars)
    ar = results.get("ar")
    # compute multiple: the budget at which a model's curve reaches the AR's main-budget bpc
    for name, r in results.items():
        if ar is None or name == "ar" or len(r["curve"]) < 2:
            continue
        r["matches_ar_at_minutes"] = _crossing(r["curve"], ar["bpc"])
    metrics = {}
    for name, r in results.items():
        key = name.replace("-", "_")
        metrics[f"{key}_bpc"], metrics[f"{key}_steps"] = r["bpc"], r["steps"]
        if r["stderr"]:
            metrics[f"{key}_bpc_stderr"] = r["stderr"]
        if ar is not None and name != "ar":
            metrics[f"{key}_ratio"] = r["bpc"] / ar["bpc"]
    if "masked_ratio" in metrics:
        metrics["ratio"] = metrics["masked_ratio"]
    record = new_record(
        "text",
        args.corpus or "kjv",
        args.seed,
        method="ar vs masked vs block diffusion",
        config=asdict(cfg),
        **record_budget.record_fields(),
        steps=sum(r["steps"] for r in results.values()),
        wall_time_s=time.perf_counter() - start,
        unigram_bpc=uni,
        models=list(results),
        results=results,
        reference_samples=reference,
        curve_budgets=sorted({main_minutes, *args.curve}) if args.steps is None else None,
        test_chars=test_chars,
        test_tokens=int(test_chunks.numel()),
        **metrics,
    )
    record = {k: v for k, v in record.items() if v is not None}
    name = "ablation" if args.ablation is not None else "results"
    write_results(out / f"{name}_seed{args.seed}.json", record)
    print(_table(results, uni, reference, main_key))
    if args.curve and any(len(r["curve"]) > 1 for r in results.values()):
        try:
            figure = _plot_curve(results, out / f"compute_curve_seed{args.seed}.png", ar)
            print(f"[text] compute curve: {figure}")
        except ImportError:
            pass
    return 0


def _crossing(curve: list[dict], target: float) -> float | None:
    """The budget (minutes, log-linear interpolation) at which ``curve`` first reaches ``target``."""
    points = sorted((c["minutes"], c["bpc"]) for c in curve)
    if points[0][1] <= target:
        return points[0][0]
    for (m0, b0), (m1, b1) in zip(points, points[1:]):
        if b1 <= target:
            w = (b0 - target) / (b0 - b1)
            return math.exp(math.log(m0) + w * (math.log(m1) - math.log(m0)))
    return None


def _table(results: dict, uni: float, reference: dict, main_key) -> str:
    ar = results.get("ar")
    lines = [
        "\n| model | test bpc | / AR | steps | matches AR's bpc at | samples: gen. ppl | entropy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        bound = f"{r['bpc']:.3f} ± {r['stderr']:.3f}" if r["stderr"] else f"{r['bpc']:.3f} (exact)"
        ratio = f"{r['bpc'] / ar['bpc']:.3f}" if ar and name != "ar" else "-"
        cross = r.get("matches_ar_at_minutes", "-")
        cross = (
            "-" if name == "ar" or cross == "-" else ("not within the curve" if cross is None else f"{cross:.1f} min")
        )
        first = (r.get("samples") or [{}])[0]
        ppl = f"{first['gen_ppl']:.2f}" if "gen_ppl" in first else "-"
        ent = f"{first['entropy']:.2f}" if "entropy" in first else "-"
        lines.append(f"| {name} | {bound} | {ratio} | {r['steps']} | {cross} | {ppl} | {ent} |")
    lines.append(f"| unigram | {uni:.3f} | - | - | - | - | - |")
    if "gen_ppl" in reference:
        lines.append(f"| (test text) | - | - | - | - | {reference['gen_ppl']:.2f} | {reference['entropy']:.2f} |")
    for name, r in results.items():
        if len(r["curve"]) > 1:
            lines.append(
                f"{name} curve: "
                + ", ".join(f"{c['minutes']:g} min {c['bpc']:.3f} ({c['steps']} steps)" for c in r["curve"])
            )
        for entry in r.get("samples", []):
            lines.append(f"\n{name} samples ({entry['sampler']}):")
            lines.extend("  " + t.replace("\n", " | ") for t in entry["texts"])
    return "\n".join(lines)


def _plot_curve(results: dict, path: Path, ar: dict | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        c = sorted(r["curve"], key=lambda e: e["minutes"])
        ax.errorbar(
            [e["minutes"] for e in c],
            [e["bpc"] for e in c],
            yerr=[e["stderr"] for e in c],
            marker="o",
            label=name,
            capsize=2,
        )
    if ar is not None:
        ax.axhline(ar["bpc"], color="grey", linestyle="--", linewidth=1, label="AR at the main budget")
    ax.set_xscale("log")
    budgets = sorted({e["minutes"] for r in results.values() for e in r["curve"]})
    ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("training minutes per model (1 CPU thread)")
    ax.set_ylabel("test bits per character (AR exact, others ELBO)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def sample_main(argv: list[str]) -> int:
    """``python -m benchmarks text sample``: complete a prompt or fill a template with a trained model."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks text sample", description=sample_main.__doc__)
    parser.add_argument("--out", default="runs/text", help="the run folder of `python -m benchmarks text`")
    parser.add_argument("--model", default="masked", help="ar, masked or blockB")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (which checkpoint)")
    parser.add_argument("--budget", type=float, default=None, help="which snapshot (minutes; default the largest)")
    add_sampling_arguments(parser, seed_flag="--sample-seed")
    args = parser.parse_args(argv)
    check_sampling_request(args)
    out = Path(args.out)
    meta_path = out / f"{args.model}_seed{args.seed}_meta.pt"
    snap_path = out / f"{args.model}_seed{args.seed}_snapshots.pt"
    if not meta_path.exists() or not snap_path.exists():
        raise CommandLineError(
            f"no trained {args.model!r} model in {out} (run `python -m benchmarks text --models "
            f"{args.model} --out {out}` first)"
        )
    meta = torch.load(meta_path, weights_only=False)
    snaps = torch.load(snap_path, weights_only=False, map_location="cpu")
    if not snaps:
        raise CommandLineError(
            f"{snap_path} holds no snapshots (the run stopped before its first one): train it again or longer"
        )
    key = max(snaps, key=lambda k: -1 if k == "final" else k) if args.budget is None else args.budget
    if key not in snaps:
        raise CommandLineError(f"no snapshot at {key} minutes; available: {sorted(snaps, key=str)}")
    cfg = TextConfig(**meta["config"])
    if cfg.tokenizer != "char":
        raise CommandLineError("sample mode supports character models (--tokenizer char)")
    # the character table (recorded with the model; older runs: the corpus's)
    chars = meta.get("chars") or (load_text_corpus(meta["corpus"]) if meta["corpus"] else load_kjv()).chars
    try:
        model = TextModel.from_state(
            _library_name(args.model), cfg, Vocabulary(chars=chars), snaps[key]["state"], snaps[key]["step"]
        )
    except ValueError as err:
        raise CommandLineError(str(err)) from None
    print_samples(model, args)
    return 0
