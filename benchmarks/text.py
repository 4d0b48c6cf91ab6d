"""``python -m benchmarks text``: masked discrete flow matching vs an autoregressive baseline
on the King James Bible (characters), same architecture, width, depth, batch and wall-clock
budget. Reports test bits per character: the masked model's ELBO bound (Monte Carlo over
time, with its standard error) and the AR model's exact bpc, plus a unigram baseline and
samples from both."""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.cli import (add_config_overrides, add_run_arguments, apply_config_overrides, check_device, rank_batch, run_budget,
                            training_settings)
from benchmarks.results import new_record, write_results
from benchmarks.text_data import eval_chunks, load_kjv, random_crops, tokenize_corpus
from dfm import CTMCSolver, MixturePath, mask_elbo
from dfm.transformer import TokenTransformer
from gm import training_times
from gm.distributed import is_main_process
from gm.training import TrainConfig, train


@dataclass
class TextConfig:
    length: int = 128
    width: int = 128
    depth: int = 4
    heads: int = 4
    batch: int = 32
    lr: float = 2e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    eval_chunks: int = 256        # test windows of `length` characters (256 x 128 = 32k chars)
    elbo_draws: int = 8           # time draws per window for the masked ELBO
    sample_steps: int = 128
    # The masked model's adaLN time input. Off: with the mask source, p(x1^i | x_t) does not depend
    # on t given x_t (which tokens are masked is independent of the data), so t only costs time.
    # 10-minute runs (seed 0, 1 thread): with t 2.697 bpc (1161 steps), without 2.585 (1445 steps).
    time_conditioning: bool = False
    # Training weight of the masked CE. "elbo": kappa'/(1-kappa) per masked token, the reported
    # bound itself; "mean": each window's mean CE over its masked tokens. Both are minimised by
    # the true conditionals; "mean" drops the 1/(1-t) factor whose draws near t = 1 make rare
    # large, clipped gradients.
    masked_loss: str = "elbo"
    tokenizer: str = "char"         # "char" or "bpe" (byte-level, trained on the training split)
    bpe_vocab_size: int = 1024


QUICK = TextConfig(length=64, width=64, depth=2, heads=2, batch=16, warmup_steps=20, eval_chunks=32, elbo_draws=2,
                   sample_steps=32)


def unigram_bpc(train_ids: torch.Tensor, test_ids: torch.Tensor, vocab: int, n_chars: int | None = None) -> float:
    """Bits per character of the add-one-smoothed unigram of the training tokens on ``test_ids``
    (``n_chars``: characters they encode, default one per token)."""
    counts = torch.bincount(train_ids, minlength=vocab).double() + 1.0
    logp = torch.log(counts / counts.sum())
    n_chars = test_ids.numel() if n_chars is None else n_chars
    return float(-logp[test_ids].sum() / n_chars / math.log(2))


def build(cfg: TextConfig, vocab: int, causal: bool) -> TokenTransformer:
    # masked: ids 0..V-1 plus mask V; AR: ids 0..V-1 plus BOS V. Both output V logits.
    return TokenTransformer(vocab + 1, vocab, width=cfg.width, depth=cfg.depth, heads=cfg.heads,
                            max_len=cfg.length, causal=causal, time_conditioning=cfg.time_conditioning and not causal)


def ar_logits(model: TokenTransformer, x: torch.Tensor, bos: int | None = None) -> torch.Tensor:
    """Next-token logits for every position of x (position 0 is predicted from BOS, the last
    input id unless ``bos`` is given: a DistributedDataParallel-wrapped model in training does
    not expose the transformer's attributes)."""
    bos = torch.full_like(x[..., :1], model.vocab_size - 1 if bos is None else bos)
    return model(torch.cat([bos, x[..., :-1]], dim=-1))


@torch.no_grad()
def ar_bpc(model: TokenTransformer, chunks: torch.Tensor, batch: int = 64, n_chars: int | None = None) -> float:
    """Exact bits per character of ``chunks`` (``n_chars``: characters they encode, default one
    per token)."""
    total = 0.0
    for i in range(0, len(chunks), batch):
        x = chunks[i:i + batch]
        total += float(F.cross_entropy(ar_logits(model, x).flatten(0, 1), x.flatten(), reduction="sum"))
    return total / (chunks.numel() if n_chars is None else n_chars) / math.log(2)


@torch.no_grad()
def ar_sample(model: TokenTransformer, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` sequences of ``length`` tokens drawn left to right (on the generator's device)."""
    x = torch.empty(n, 0, dtype=torch.long, device=generator.device)
    for _ in range(length):
        logits = ar_logits(model, torch.cat([x, x.new_zeros(n, 1)], dim=-1))[:, -1]
        nxt = torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=generator)
        x = torch.cat([x, nxt], dim=-1)
    return x


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks text", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny models, at most 0.4 min each (smoke test / demo)")
    parser.add_argument("--seed", type=int, default=0)
    add_run_arguments(parser, minutes=10.0, out="runs/text")  # the budget is PER MODEL
    parser.add_argument("--models", nargs="+", default=["masked", "ar"], choices=["masked", "ar"],
                        help="which models to train (the ratio needs both)")
    add_config_overrides(parser, TextConfig())
    args = parser.parse_args(argv)
    check_device(args.device)
    cfg, default_minutes = TextConfig(), 10.0
    if args.quick:
        cfg, default_minutes = QUICK, 0.4
        if args.minutes is not None:
            args.minutes = min(args.minutes, 0.4)
    cfg = apply_config_overrides(cfg, args)
    if cfg.masked_loss not in ("elbo", "mean"):
        parser.error(f"--masked-loss must be 'elbo' or 'mean', got {cfg.masked_loss!r}")
    # Five validations per model: every fifth of the time budget (at least every 6 s), or every
    # fifth of the step budget.
    nominal_minutes = default_minutes if args.minutes is None else args.minutes
    budget = run_budget(args.minutes, args.steps, default_minutes=default_minutes,
                        eval_every_minutes=max(nominal_minutes / 5, 0.1), evaluations=5)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    streams = tokenize_corpus(load_kjv(), cfg.tokenizer, cfg.bpe_vocab_size)
    vocab, train_ids = streams.vocab_size, streams.train
    test_chunks = eval_chunks(streams.test, cfg.length, cfg.eval_chunks)
    val_chunks = eval_chunks(streams.val, cfg.length, max(8, cfg.eval_chunks // 4))
    test_chars, val_chars = streams.n_chars(test_chunks), streams.n_chars(val_chunks)
    device = torch.device(args.device)
    test_on_device, val_on_device = test_chunks.to(device), val_chunks.to(device)
    path = MixturePath(vocab, "mask")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    batch = rank_batch(cfg.batch)  # this process's share (all of it unless under torchrun)

    def masked_loss(m, step, gen):
        x1 = random_crops(train_ids, batch, cfg.length, gen)
        # stratified times (one per 1/batch stratum, shuffled): the same expectation as uniform
        # draws with a lower-variance estimate of the 1/(1-t)-weighted objective
        t = training_times(batch, stratified=True, generator=gen)
        s = path.sample(None, x1, t, generator=gen)  # drawn on the CPU generator, then moved
        x1, x_t, t = x1.to(device), s.x_t.to(device), t.to(device)
        # ELBO weighting kappa'/(1-kappa) (= 1/(1-t) for the linear schedule) of the masked CE,
        # normalised per token: the training objective is the bound that is reported.
        logits = m(x_t, t)
        nll = F.cross_entropy(logits.flatten(0, 1), x1.flatten(), reduction="none").view_as(x1)
        masked = (x_t == path.mask_id).float()
        if cfg.masked_loss == "mean":
            return ((masked * nll).sum(1) / masked.sum(1).clamp(min=1)).mean()
        weight = path.scheduler.rate(t, validate=False).clamp(max=1e3)[:, None]  # t drawn in [0, 1) above
        return (weight * masked * nll).sum() / x1.numel()

    def masked_val(m):
        est = mask_elbo(m, path, val_on_device, n_draws=2, n_chars=val_chars, generator=torch.Generator().manual_seed(1))
        return est.bits_per_char

    def ar_loss(m, step, gen):
        x = random_crops(train_ids, batch, cfg.length, gen).to(device)
        return F.cross_entropy(ar_logits(m, x, bos=vocab).flatten(0, 1), x.flatten())

    resumed_s = 0.0  # training time of earlier processes when the runs resume from checkpoints
    for name, causal, loss_fn, val_fn in (("masked", False, masked_loss, masked_val),
                                          ("ar", True, ar_loss, lambda m: ar_bpc(m, val_on_device, n_chars=val_chars))):
        if name not in args.models:
            continue
        torch.manual_seed(args.seed)
        model = build(cfg, vocab, causal).to(device)
        tc = TrainConfig(lr=cfg.lr, warmup_steps=cfg.warmup_steps, ema_decay=cfg.ema_decay, checkpoint_every_minutes=1.0,
                         seed=args.seed, progress=not args.no_progress, weight_decay=0.01, **budget.train_fields())
        print(f"[text] training {name} model ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params) "
              f"for {budget.describe()}")
        res = train(model, loss_fn, tc, val_fn=val_fn, checkpoint_path=out / f"{name}_seed{args.seed}.pt",
                    run_config=training_settings(cfg, model=name), resume=not args.restart)
        resumed_s += res.resumed_elapsed_s
        if res.rank != 0:
            continue  # data-parallel run: rank 0 evaluates and writes
        model.load_state_dict(res.best_state, strict=False)
        model.eval()
        gen = torch.Generator().manual_seed(args.seed)  # the ELBO's time and mask draws (CPU)
        sample_gen = torch.Generator(device=device).manual_seed(args.seed)
        if name == "masked":
            est = mask_elbo(model, path, test_on_device, n_draws=cfg.elbo_draws, n_chars=test_chars, generator=gen)
            bpc, stderr = est.bits_per_char, est.stderr_bits_per_char
            samples = CTMCSolver(path, model).sample(path.sample_source((3, cfg.length), device=device),
                                                     steps=cfg.sample_steps, generator=sample_gen)
            sample_steps = cfg.sample_steps
        else:
            bpc, stderr = ar_bpc(model, test_on_device, n_chars=test_chars), 0.0
            samples = ar_sample(model, 3, cfg.length, sample_gen)
            sample_steps = cfg.length
        texts = [streams.decode(s) for s in samples.cpu()]
        results[name] = dict(bpc=bpc, stderr=stderr, steps=res.steps, best_val=res.best_val, samples=texts,
                             sample_steps=sample_steps)
        print(f"[text] {name}: {res.steps} steps, test bpc {bpc:.3f}" + (f" ± {stderr:.3f} (ELBO bound)" if stderr else " (exact)"))
    if not is_main_process():
        return 0
    uni = unigram_bpc(train_ids, test_chunks.flatten(), vocab, n_chars=test_chars)
    masked, ar = results.get("masked", {}), results.get("ar", {})
    ratio = masked["bpc"] / ar["bpc"] if masked and ar else None
    metrics = dict(masked_bpc=masked.get("bpc"), ar_bpc=ar.get("bpc"), masked_bpc_stderr=masked.get("stderr"),
                   ratio=ratio, masked_steps=masked.get("steps"), ar_steps=ar.get("steps"))
    record = new_record("text", "kjv", args.seed, method="dfm-masked vs ar", config=asdict(cfg), **budget.record_fields(),
                        steps=sum(r["steps"] for r in results.values()), wall_time_s=time.perf_counter() - start + resumed_s,
                        unigram_bpc=uni, models=list(results), samples={k: v["samples"] for k, v in results.items()},
                        sample_steps={k: v["sample_steps"] for k, v in results.items()},
                        test_chars=test_chars, test_tokens=int(test_chunks.numel()),
                        **{k: v for k, v in metrics.items() if v is not None})  # a model not trained has no entry
    write_results(out / f"results_seed{args.seed}.json", record)
    print(f"\n| model | test bpc | steps (budget {budget.describe()}) |\n|---|---|---|")
    if masked:
        print(f"| masked DFM (ELBO bound) | {masked['bpc']:.3f} ± {masked['stderr']:.3f} | {masked['steps']} |")
    if ar:
        print(f"| autoregressive (exact) | {ar['bpc']:.3f} | {ar['steps']} |")
    print(f"| unigram | {uni:.3f} | - |")
    if ratio is not None:
        print(f"masked / AR = {ratio:.3f} (target <= 1.15)")
    for name, res in results.items():
        print(f"\n{name} samples ({res['sample_steps']} steps):")
        for text in res["samples"]:
            print("  " + text.replace("\n", " | "))
    return 0
