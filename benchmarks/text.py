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
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.cli import (
    CommandLineError,
    add_config_overrides,
    add_run_arguments,
    apply_config_overrides,
    check_device,
    rank_batch,
    run_budget,
    training_settings,
)
from benchmarks.results import new_record, write_results
from benchmarks.text_data import eval_chunks, load_kjv, load_text_corpus, random_crops, tokenize_corpus
from dfm import (
    BlockDiffusion,
    BlockDiffusionTransformer,
    CTMCSolver,
    MaskedDiffusionLoss,
    MixturePath,
    filter_logits,
    infill_template,
    mask_elbo,
    prompt_template,
)
from dfm.solver import check_filtering, check_temperature
from dfm.transformer import TokenTransformer, append_kv
from gm.distributed import is_main_process
from gm.files import save_figure
from gm.training import TrainConfig, save_checkpoint, train


@dataclass
class TextConfig:
    length: int = 128
    width: int = 128
    depth: int = 4
    heads: int = 4
    batch: int = 32
    lr: float = 2e-3
    warmup_steps: int = 100
    # Constant learning rate after warmup (1.0; the cosine decay to the budget: e.g. 0.01): the
    # EMA weights at any time of a run are then those of a run with that budget (the curve).
    min_lr_ratio: float = 1.0
    ema_decay: float = 0.995
    eval_chunks: int = 256  # test windows of `length` characters (256 x 128 = 32k chars)
    elbo_draws: int = 8  # draws per window for the masked and block ELBOs
    sample_steps: int = 128  # masked model: CTMC steps; block models: steps per block = b
    n_samples: int = 64
    # The masked model's adaLN time input. Off: with the mask source, p(x1^i | x_t) does not depend
    # on t given x_t (which tokens are masked is independent of the data), so t only costs time.
    # 10-minute runs (seed 0, 1 thread): with t 2.697 bpc (1161 steps), without 2.585 (1445 steps).
    time_conditioning: bool = False
    # The masked and block objective (dfm.MaskedDiffusionLoss): "elbo" weights (the reported bound)
    # or each window's "mean" CE; the ELBO estimator ("count": exactly m ~ U{1..L} masked, weight
    # L/m; "time": rate r ~ U(0,1], weight 1/r), the batch's coupling of the draws, the training
    # masking-rate range (the reported ELBO always uses the full range).
    # Defaults: the best of the --ablation table (README): exact count, stratified, rates in [0.2, 0.8].
    masked_loss: str = "elbo"
    estimator: str = "count"
    times: str = "stratified"
    mask_rate_min: float = 0.2
    mask_rate_max: float = 0.8
    tokenizer: str = "char"  # "char" or "bpe" (byte-level, trained on the training split)
    bpe_vocab_size: int = 1024


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


def model_kind(name: str) -> tuple[str, int | None]:
    """``("ar", None)``, ``("masked", None)`` or ``("block", b)`` for ``"blockB"``."""
    if name in ("ar", "masked") or (name.startswith("masked-") and name[len("masked-") :] in ABLATIONS):
        return ("ar" if name == "ar" else "masked"), None
    if name.startswith("block") and name[5:].isdigit() and int(name[5:]) > 0:
        return "block", int(name[5:])
    raise CommandLineError(
        f"unknown model {name!r}: use ar, masked, masked-<ablation variant> or blockB (B a block "
        "size dividing the length)"
    )


def _note(enabled: bool, text: str) -> None:
    """A progress line on stderr, in the trainer's plain-line style (off with --no-progress): what
    an evaluation phase of several seconds is doing, so that no part of a run is silent."""
    if enabled:
        print(f"[text] {text}", file=sys.stderr, flush=True)


def unigram_bpc(train_ids: torch.Tensor, test_ids: torch.Tensor, vocab: int, n_chars: int | None = None) -> float:
    """Bits per character of the add-one-smoothed unigram of the training tokens on ``test_ids``
    (``n_chars``: characters they encode, default one per token)."""
    counts = torch.bincount(train_ids, minlength=vocab).double() + 1.0
    logp = torch.log(counts / counts.sum())
    n_chars = test_ids.numel() if n_chars is None else n_chars
    return float(-logp[test_ids].sum() / n_chars / math.log(2))


def build(cfg: TextConfig, vocab: int, causal: bool = False, block_size: int | None = None) -> torch.nn.Module:
    """AR (``causal``: ids 0..V-1 plus BOS V), masked (ids plus mask V) or block-diffusion model."""
    if block_size is not None:
        return BlockDiffusionTransformer(
            vocab, block_size, width=cfg.width, depth=cfg.depth, heads=cfg.heads, max_len=cfg.length
        )
    return TokenTransformer(
        vocab + 1,
        vocab,
        width=cfg.width,
        depth=cfg.depth,
        heads=cfg.heads,
        max_len=cfg.length,
        causal=causal,
        time_conditioning=cfg.time_conditioning and not causal,
    )


def ar_logits(model: TokenTransformer, x: torch.Tensor, bos: int | None = None) -> torch.Tensor:
    """Next-token logits for every position of x (position 0 is predicted from BOS, the last
    input id unless ``bos`` is given: a DistributedDataParallel-wrapped model in training does
    not expose the transformer's attributes)."""
    bos = torch.full_like(x[..., :1], model.vocab_size - 1 if bos is None else bos)
    return model(torch.cat([bos, x[..., :-1]], dim=-1))


@torch.no_grad()
def ar_nll(model: TokenTransformer, chunks: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Exact negative log-likelihood in nats of every window of ``chunks`` ``(N, L)``, shape ``(N,)``."""
    out = []
    for i in range(0, len(chunks), batch):
        x = chunks[i : i + batch]
        out.append(F.cross_entropy(ar_logits(model, x).transpose(1, 2).double(), x, reduction="none").sum(-1))
    return torch.cat(out)


def ar_bpc(model: TokenTransformer, chunks: torch.Tensor, batch: int = 64, n_chars: int | None = None) -> float:
    """Exact bits per character of ``chunks`` (``n_chars``: characters they encode, default one
    per token)."""
    total = float(ar_nll(model, chunks, batch).sum())
    return total / (chunks.numel() if n_chars is None else n_chars) / math.log(2)


@torch.no_grad()
def ar_sample(
    model: TokenTransformer,
    n: int,
    length: int,
    generator: torch.Generator,
    prompt: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """``n`` sequences of ``length`` tokens drawn left to right with a key/value cache (on the
    generator's device), continuing ``prompt`` (1-D ids) if given; float64 draws from the
    tempered, filtered next-token distribution."""
    check_filtering(top_k, top_p)
    check_temperature(temperature)
    device = generator.device
    x = (
        torch.empty(n, 0, dtype=torch.long, device=device)
        if prompt is None
        else prompt.to(device).long().expand(n, -1).clone()
    )
    if x.shape[1] >= length:
        raise ValueError(f"prompt has {x.shape[1]} tokens: it must be shorter than the context length {length}")
    bos = torch.full((n, 1), model.vocab_size - 1, dtype=torch.long, device=device)
    logits, cache = model(torch.cat([bos, x], dim=-1), return_kv=True)
    while True:
        row = filter_logits(logits[:, -1].double() / temperature, top_k, top_p)
        nxt = torch.multinomial(torch.softmax(row, -1), 1, generator=generator)
        x = torch.cat([x, nxt], dim=-1)
        if x.shape[1] == length:
            return x
        logits, kv = model(nxt, past_kv=cache, return_kv=True)
        cache = append_kv(cache, kv)


def sample_entropy_bits(samples: torch.Tensor) -> float:
    """Mean over samples of the entropy (bits) of each sample's own token histogram: low values
    flag repetitive, degenerate text."""
    total = 0.0
    for row in samples:
        p = torch.bincount(row).double()
        p = p[p > 0] / row.numel()
        total += float(-(p * torch.log2(p)).sum())
    return total / len(samples)


def _masked_objective(cfg: TextConfig, path: MixturePath, block_size: int | None) -> MaskedDiffusionLoss:
    if cfg.masked_loss not in ("elbo", "mean"):
        raise CommandLineError(f"--masked-loss must be 'elbo' or 'mean', got {cfg.masked_loss!r}")
    try:
        return MaskedDiffusionLoss(
            path,
            estimator=cfg.estimator,
            times=cfg.times,
            weighting=cfg.masked_loss,
            mask_rate_range=(cfg.mask_rate_min, cfg.mask_rate_max),
            block_size=block_size,
        )
    except ValueError as err:
        raise CommandLineError(str(err)) from None


class Snapshots:
    """The EMA weights at budget marks (minutes) of one run, taken at the trainer's frequent
    validations: for each mark the last state at or before it (up to ``slack_s`` or 2% of the
    mark after it, whichever is less: the final validation follows the last step). Every take
    is written to ``path`` at once (atomically; states on the CPU, one copy shared by the marks
    it stands for), the marks not yet passed flagged provisional, so an interrupted run loses
    no snapshot: on resume a provisional state whose mark has passed is kept as final. Without
    marks (a step budget) it keeps the state at the last validation, the end of the run, under
    the key ``"final"``."""

    def __init__(self, path: Path, marks: list[float], prior_s: float, slack_s: float = 3.0) -> None:
        self.path, self.marks, self.slack = path, sorted(marks), slack_s
        stored: dict = torch.load(path, weights_only=False, map_location="cpu") if path.exists() else {}
        self.saved: dict = {}
        self.pending: dict = {}
        for key, entry in stored.items():
            passed = key == "final" or prior_s > self._deadline(key)
            if entry.pop("provisional", False) and not passed:
                self.pending[key] = entry
            else:
                self.saved[key] = entry
        self.prior_s = prior_s
        self.start = time.perf_counter() - prior_s
        self.begun = False
        self.step = 0

    def begin(self) -> None:
        """Start the marks' clock at the trainer's first step in this process (as the trainer
        starts its own), once: its set-up (the optimiser, a checkpoint to resume) takes seconds,
        a large share of a quick run's budget, and is not training time."""
        if not self.begun:
            self.start, self.begun = time.perf_counter() - self.prior_s, True

    def _deadline(self, mark: float) -> float:
        return 60 * mark + min(self.slack, 1.2 * mark)

    def take(self, model: torch.nn.Module) -> None:
        now = time.perf_counter() - self.start
        state = None
        for key in self.marks or ["final"]:
            if key in self.saved:
                continue
            if key == "final" or now <= self._deadline(key):
                if state is None:
                    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                self.pending[key] = {
                    "minutes": None if key == "final" else key,
                    "step": self.step,
                    "elapsed_s": now,
                    "state": state,
                }
            elif key in self.pending:
                self.saved[key] = self.pending.pop(key)
        self._write()

    def _write(self) -> None:
        save_checkpoint(self.path, {**self.saved, **{k: {**v, "provisional": True} for k, v in self.pending.items()}})

    def finish(self) -> dict:
        self.saved.update(self.pending)
        self.pending = {}
        self._write()
        return self.saved


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
    for name, (_, b) in kinds.items():
        if b is not None and cfg.length % b:
            raise CommandLineError(f"model {name}: block size {b} does not divide the context length {cfg.length}")
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
    val_chunks = eval_chunks(streams.val, cfg.length, max(8, cfg.eval_chunks // 4))
    if len(test_chunks) == 0 or len(val_chunks) == 0 or len(train_ids) <= cfg.length:
        raise CommandLineError(
            f"the corpus is too small for windows of {cfg.length} tokens (train {len(train_ids)}, "
            f"val {len(streams.val)}, test {len(streams.test)} tokens)"
        )
    test_chars = streams.n_chars(test_chunks)
    device = torch.device(args.device)
    test_on_device, val_on_device = test_chunks.to(device), val_chunks.to(device)
    quick_val = val_on_device[:8]
    path = MixturePath(vocab, "mask")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batch = rank_batch(cfg.batch)  # this process's share (all of it unless under torchrun)
    meta = dict(config=asdict(cfg), vocab_size=vocab, corpus=args.corpus, chars=getattr(corpus, "chars", None))

    def run_config(name: str) -> TextConfig:
        return replace(cfg, **ABLATIONS[name[len("masked-") :]]) if name.startswith("masked-") else cfg

    # ---- training: one run per model, EMA snapshots at the budget marks -------------------------
    for name in names:
        kind, block = kinds[name]
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
        if args.skip_training:
            continue
        torch.manual_seed(args.seed)
        model = build(mcfg, vocab, causal=kind == "ar", block_size=block).to(device)
        if kind == "ar":

            def model_loss(m, gen):
                x = random_crops(train_ids, batch, mcfg.length, gen).to(device)
                return F.cross_entropy(ar_logits(m, x, bos=vocab).flatten(0, 1), x.flatten())

            def quick_score(m):
                return float(ar_nll(m, quick_val).mean())
        else:
            objective = _masked_objective(mcfg, path, block)

            def model_loss(m, gen, objective=objective):
                # the masking draws are made on the CPU generator (reproducible on any device)
                return objective(m, random_crops(train_ids, batch, mcfg.length, gen).to(device), gen)

            def quick_score(m, block=block):
                g = torch.Generator().manual_seed(1)
                if block is None:
                    return mask_elbo(m, path, quick_val, generator=g).nats_per_token
                return BlockDiffusion(path, block).elbo(m, quick_val, generator=g).nats_per_token

        def loss_fn(m, step, gen, model_loss=model_loss):
            snapshots.begin()
            snapshots.step = step + 1
            return model_loss(m, gen)

        ckpt = out / f"{name}_seed{args.seed}.pt"
        prior = (
            float(torch.load(ckpt, weights_only=False).get("elapsed", 0.0))
            if ckpt.exists() and not args.restart
            else 0.0
        )
        snap_path = out / f"{name}_seed{args.seed}_snapshots.pt"
        if args.restart and is_main_process():
            snap_path.unlink(missing_ok=True)
        snapshots = Snapshots(snap_path, marks, prior)

        def val_fn(m, quick_score=quick_score):
            snapshots.take(m)
            return quick_score(m)

        tc = TrainConfig(
            lr=mcfg.lr,
            warmup_steps=mcfg.warmup_steps,
            ema_decay=mcfg.ema_decay,
            min_lr_ratio=mcfg.min_lr_ratio,
            checkpoint_every_minutes=1.0,
            seed=args.seed,
            progress=not args.no_progress,
            weight_decay=0.01,
            **budget.train_fields(),
        )
        print(
            f"[text] training {name} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params) for "
            f"{budget.describe()}" + (f", snapshots at {marks} min" if len(marks) > 1 else "")
        )
        res = train(
            model,
            loss_fn,
            tc,
            val_fn=val_fn,
            checkpoint_path=ckpt,
            resume=not args.restart,
            run_config=training_settings(mcfg, model=name, corpus=args.corpus),
        )
        if res.rank != 0:
            continue  # data-parallel run: rank 0 evaluates and writes
        snapshots.finish()
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
    evaluated = [n for n in names if (out / f"{n}_seed{args.seed}_snapshots.pt").exists()]
    results: dict[str, dict] = {}
    for name in evaluated:
        loaded = load(name, main_key)
        if loaded is None:
            print(f"[text] {name}: no snapshot at the main budget ({main_key}) in {out}; skipped")
            continue
        model, snap = loaded
        _note(progress, f"{name}: test bits per character on {len(test_chunks)} windows of {cfg.length} tokens")
        bpc, stderr = test_bpc(name, model)
        curve = []
        snaps = torch.load(out / f"{name}_seed{args.seed}_snapshots.pt", weights_only=False, map_location="cpu")
        for key in sorted(k for k in snaps if k != "final"):
            if key == main_key:
                curve.append(dict(minutes=key, steps=snap["step"], elapsed_s=snap["elapsed_s"], bpc=bpc, stderr=stderr))
                continue
            other, osnap = load(name, key)
            _note(progress, f"{name}: test bits per character of the {key:g}-minute snapshot")
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
        reference["gen_ppl"] = math.exp(float(ar_nll(judge, real.to(device)).sum()) / real.numel())
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
            _note(progress, f"{name}: sampling {n} sequences of {cfg.length} tokens ({sampler})")
            tokens = draw()
            entry = dict(
                sampler=sampler,
                entropy=sample_entropy_bits(tokens.cpu()),
                texts=[streams.decode(s) for s in tokens[:3].cpu()],
            )
            if judge is not None:
                entry["gen_ppl"] = math.exp(float(ar_nll(judge, tokens).sum()) / tokens.numel())
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
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--prompt", help="text to continue")
    group.add_argument("--template", help="text with holes (--hole characters) to fill in place")
    parser.add_argument("--hole", default="_", help="the hole character of --template (one character = one token)")
    parser.add_argument("--n", type=int, default=3, help="samples")
    parser.add_argument("--length", type=int, default=None, help="total length with the prompt (default: the context)")
    parser.add_argument("--steps", type=int, default=None, help="CTMC steps (block models: per block)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--unmasking", default="random", help="random, random_order or confidence")
    parser.add_argument("--block-size", type=int, default=None, help="masked model: semi-autoregressive blocks")
    parser.add_argument("--sample-seed", type=int, default=0)
    args = parser.parse_args(argv)
    if len(args.hole) != 1:
        raise CommandLineError(f"--hole must be one character, got {args.hole!r}")
    # named here in the command line's terms: the library's own error speaks of hole ids (-1)
    if args.template is not None and args.hole not in args.template:
        raise CommandLineError(f"--template has no holes ({args.hole!r} characters) to fill")
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
    corpus = load_text_corpus(meta["corpus"]) if meta["corpus"] else load_kjv()
    table = {c: i for i, c in enumerate(corpus.chars)}
    vocab = len(corpus.chars)
    kind, block = model_kind(args.model)
    model = build(cfg, vocab, causal=kind == "ar", block_size=block)
    model.load_state_dict(snaps[key]["state"])
    model.eval()
    length = cfg.length if args.length is None else args.length
    path = MixturePath(vocab, "mask")
    text = args.prompt if args.prompt is not None else args.template
    unknown = sorted({c for c in text if c not in table and not (args.template is not None and c == args.hole)})
    if unknown:
        raise CommandLineError(
            f"{'--prompt' if args.prompt is not None else '--template'} has characters the model "
            f"does not know: {unknown!r}"
        )
    gen = torch.Generator().manual_seed(args.sample_seed)
    options = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    try:
        # a block model generates whole blocks: pad to a multiple of b with positions to generate
        # (later blocks never influence earlier ones) and cut the result back
        padded = lambda n: n if block is None else -(-n // block) * block  # noqa: E731
        if args.prompt is not None:
            if length > cfg.length or padded(length) > cfg.length:
                raise ValueError(f"--length must be at most the context length {cfg.length}, got {length}")
            ids = torch.tensor([table[c] for c in args.prompt], dtype=torch.long)
            if kind == "ar":
                tokens = ar_sample(model, args.n, length, gen, prompt=ids, **options)
                fixed = torch.zeros_like(tokens, dtype=torch.bool)
                fixed[:, : len(ids)] = True
            else:
                x0, fixed = prompt_template(ids, length, path, args.n)
        else:
            if kind == "ar":
                raise ValueError("--template needs a masked or block model: the AR model only continues a prompt")
            if padded(len(text)) > cfg.length:
                raise ValueError(f"--template has {len(text)} characters, more than the context length {cfg.length}")
            ids = torch.tensor([-1 if c == args.hole else table[c] for c in text], dtype=torch.long)
            x0, fixed = infill_template(ids, path, args.n)
        if kind != "ar":
            size = x0.shape[-1]
            extra = padded(size) - size
            x0 = torch.cat([x0, torch.full((args.n, extra), path.mask_id, dtype=torch.long)], dim=-1)
            fixed = torch.cat([fixed, torch.zeros(args.n, extra, dtype=torch.bool)], dim=-1)
        if kind == "masked":
            tokens = CTMCSolver(path, model).sample(
                x0,
                steps=args.steps or x0.shape[-1],
                generator=gen,
                fixed=fixed,
                unmasking=args.unmasking,
                block_size=args.block_size,
                **options,
            )
        elif kind == "block":
            tokens = BlockDiffusion(path, block).sample(
                model, x0, steps=args.steps, generator=gen, fixed=fixed, unmasking=args.unmasking, **options
            )
        if kind != "ar":
            tokens, fixed = tokens[:, :size], fixed[:, :size]
    except ValueError as err:
        raise CommandLineError(str(err)) from None
    print(
        f"[text sample] {args.model} ({snaps[key]['step']} steps), "
        + ", ".join(
            f"{k}={v}"
            for k, v in {**options, **({} if kind == "ar" else {"unmasking": args.unmasking})}.items()
            if v is not None
        )
    )
    for row, given in zip(tokens, fixed):
        chars = [corpus.chars[int(i)] for i in row]
        # generated characters in brackets where the template had holes
        shown = (
            "".join(c if g else f"[{c}]" for c, g in zip(chars, given.tolist())) if args.template else "".join(chars)
        )
        print(shown.replace("\n", " | "))
    return 0
