"""Text models on a corpus: the settings (:class:`TextConfig`), the three kinds of model (``"ar"``:
autoregressive; ``"masked"``: masked discrete flow matching over the whole window;
``"blockB"``: block diffusion with blocks of ``B`` tokens), their training objectives, and the
training of one model with :func:`gm.train.train` (:func:`train_text_model`), also straight
from a user's text file into a run folder (:func:`train_text`, what ``rdfm text train`` runs).

A run folder of :func:`train_text` holds ``checkpoint.pt`` (the trainer's checkpoint: it
resumes, and its ``run_config`` records the settings, the model name and the vocabulary, all
that :func:`dfm.text_generation.load_text_run` needs to sample), ``checkpoint.metrics.jsonl``
and the loss plot ``checkpoint.metrics.png``, and for a BPE model its tokenizer
(``bpe_<digest>.json``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfm.autoregressive import ar_logits, ar_nll
from dfm.block import BlockDiffusion, BlockDiffusionTransformer
from dfm.corpus import Corpus, TokenStreams, eval_chunks, load_text_corpus, random_crops, tokenize_corpus
from dfm.loss import MaskedDiffusionLoss, mask_elbo
from dfm.path import MixturePath
from dfm.transformer import TokenTransformer
from gm.files import atomic_write
from gm.train.snapshots import BudgetSnapshots

if TYPE_CHECKING:  # gm.train is imported when a model trains: `import dfm` stays light
    from gm.train import TrainResult

__all__ = [
    "TextConfig",
    "model_kind",
    "check_model",
    "build",
    "build_model",
    "masked_objective",
    "train_text_model",
    "train_text",
    "TextRunError",
    "check_text_data",
    "config_from_settings",
    "CHECKPOINT_NAME",
    "VALIDATION_WINDOWS",
]

#: The checkpoint of a run folder of :func:`train_text`.
CHECKPOINT_NAME = "checkpoint.pt"
#: Validation windows scored at every validation of a run (model selection, snapshots).
VALIDATION_WINDOWS = 8


@dataclass
class TextConfig:
    """The settings of a text model and its training (the defaults: the text benchmark's).

    ``eval_chunks``, ``elbo_draws``, ``sample_steps`` and ``n_samples`` only say how the
    benchmark evaluates a run; the other fields define the run (a checkpoint resumes only
    under the same values)."""

    length: int = 128  # the context: windows of this many tokens
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
    # Defaults: the best of the benchmark's --ablation table (README): exact count, stratified,
    # rates in [0.2, 0.8].
    masked_loss: str = "elbo"
    estimator: str = "count"
    times: str = "stratified"
    mask_rate_min: float = 0.2
    mask_rate_max: float = 0.8
    tokenizer: str = "char"  # "char" or "bpe" (byte-level, trained on the training split)
    bpe_vocab_size: int = 1024


def config_from_settings(settings: Mapping[str, Any]) -> TextConfig:
    """The :class:`TextConfig` of a checkpoint's ``run_config`` (fields it lacks: the defaults)."""
    return TextConfig(**{f.name: settings[f.name] for f in fields(TextConfig) if f.name in settings})


def model_kind(name: str) -> tuple[str, int | None]:
    """``("ar", None)``, ``("masked", None)`` or ``("block", B)`` for ``"blockB"``.

    Raises:
        ValueError: for another name.
    """
    if name in ("ar", "masked"):
        return name, None
    if name.startswith("block") and name[5:].isdigit() and int(name[5:]) > 0:
        return "block", int(name[5:])
    raise ValueError(f"unknown model {name!r}: use ar, masked or blockB (B a block size dividing the length)")


def check_model(name: str, config: TextConfig) -> tuple[str, int | None]:
    """:func:`model_kind`, also refusing a block size that does not divide ``config.length``."""
    kind, block = model_kind(name)
    if block is not None and config.length % block:
        raise ValueError(f"model {name}: block size {block} does not divide the context length {config.length}")
    return kind, block


def build(config: TextConfig, vocab: int, causal: bool = False, block_size: int | None = None) -> nn.Module:
    """The network of a text model over ``vocab`` token ids: AR (``causal``: input ids 0..V-1
    plus BOS ``V``), masked (input ids plus the mask ``V``) or block diffusion (``block_size``)."""
    if block_size is not None:
        return BlockDiffusionTransformer(
            vocab, block_size, width=config.width, depth=config.depth, heads=config.heads, max_len=config.length
        )
    return TokenTransformer(
        vocab + 1,
        vocab,
        width=config.width,
        depth=config.depth,
        heads=config.heads,
        max_len=config.length,
        causal=causal,
        time_conditioning=config.time_conditioning and not causal,
    )


def build_model(config: TextConfig, vocab: int, name: str) -> nn.Module:
    """:func:`build` for the model called ``name`` (``"ar"``, ``"masked"``, ``"blockB"``)."""
    kind, block = check_model(name, config)
    return build(config, vocab, causal=kind == "ar", block_size=block)


def masked_objective(config: TextConfig, path: MixturePath, block_size: int | None = None) -> MaskedDiffusionLoss:
    """The training loss of the masked (``block_size=None``) or block-diffusion model, from the
    objective fields of ``config`` (``masked_loss``, ``estimator``, ``times``, the masking-rate
    range).

    Raises:
        ValueError: naming the field, for a value the loss does not know.
    """
    if config.masked_loss not in ("elbo", "mean"):
        raise ValueError(f"masked_loss must be 'elbo' or 'mean', got {config.masked_loss!r}")
    return MaskedDiffusionLoss(
        path,
        estimator=config.estimator,
        times=config.times,
        weighting=config.masked_loss,
        mask_rate_range=(config.mask_rate_min, config.mask_rate_max),
        block_size=block_size,
    )


def train_text_model(
    name: str,
    config: TextConfig,
    streams: TokenStreams,
    budget: Mapping[str, Any],
    *,
    checkpoint_path: str | os.PathLike[str] | None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    resume: bool = True,
    progress: bool = True,
    run_config: Mapping[str, Any] | None = None,
    batch: int | None = None,
    snapshots: BudgetSnapshots | None = None,
    announce: bool = True,
) -> tuple[nn.Module, TrainResult]:
    """Train the text model ``name`` on random crops of ``streams.train`` with
    :func:`gm.train.train` (AdamW, weight decay 0.01, the warmup, learning-rate floor and EMA
    of ``config``; a checkpoint every minute).

    The AR model minimises the next-token cross-entropy, the masked and block models
    :func:`masked_objective`. Validation scores the first :data:`VALIDATION_WINDOWS` windows of
    ``streams.val``: the exact NLL per window (AR) or the ELBO in nats per token (one fixed
    draw), which selects the weights the checkpoint keeps.

    Args:
        budget: ``TrainConfig`` fields of the budget and cadence (``max_minutes``,
            ``max_steps``, ``eval_every``, ``eval_every_minutes``, ``compile``; e.g.
            ``gm.cli.Budget.train_fields()``).
        checkpoint_path: the run's checkpoint (resumed when ``resume``).
        seed: seeds the initial weights and the trainer.
        run_config: settings the checkpoint must match to resume (``gm.train.train``).
        batch: this process's batch (default ``config.batch``; under ``torchrun`` its share).
        snapshots: EMA weights to keep at budget marks (:class:`gm.train.snapshots.BudgetSnapshots`),
            finished when the run ends.
        announce: print a line naming the model, its size and the budget (stdout).

    Returns:
        The model (holding the selected EMA weights) and the trainer's result.

    Raises:
        ValueError: for an unknown model or objective, or splits too small for one window.
    """
    kind, block = check_model(name, config)
    check_text_data(config, streams)
    vocab, train_ids = streams.vocab_size, streams.train
    device = torch.device(device)
    val = eval_chunks(streams.val, config.length, VALIDATION_WINDOWS).to(device)
    batch = config.batch if batch is None else batch
    path = MixturePath(vocab, "mask")
    torch.manual_seed(seed)
    model = build(config, vocab, causal=kind == "ar", block_size=block).to(device)
    objective = None if kind == "ar" else masked_objective(config, path, block)

    def crops(generator: torch.Generator) -> Tensor:
        # drawn on the CPU generator (reproducible on any device), then moved
        return random_crops(train_ids, batch, config.length, generator).to(device)

    def loss_fn(m: nn.Module, step: int, generator: torch.Generator) -> Tensor:
        x = crops(generator)
        if objective is None:
            return F.cross_entropy(ar_logits(m, x, bos=vocab).flatten(0, 1), x.flatten())
        return objective(m, x, generator)

    def val_fn(m: nn.Module) -> float:
        if kind == "ar":
            return float(ar_nll(m, val).mean())
        g = torch.Generator().manual_seed(1)
        if block is None:
            return mask_elbo(m, path, val, generator=g).nats_per_token
        return BlockDiffusion(path, block).elbo(m, val, generator=g).nats_per_token

    run_loss: Callable[[nn.Module, int, torch.Generator], Tensor] = loss_fn
    run_val: Callable[[nn.Module], float] = val_fn
    if snapshots is not None:
        run_loss, run_val = snapshots.wrap(loss_fn, val_fn)
    from gm.train import TrainConfig, describe_budget, train

    train_config = TrainConfig.from_config(
        config,
        checkpoint_every_minutes=1.0,
        seed=seed,
        progress=progress,
        weight_decay=0.01,
        **budget,
    )
    if announce:
        marks = [] if snapshots is None else snapshots.marks
        print(
            f"[text] training {name} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params) for "
            f"{describe_budget(train_config.max_steps, train_config.max_minutes)}"
            + (f", snapshots at {marks} min" if len(marks) > 1 else ""),
            flush=True,
        )
    result = train(
        model,
        run_loss,
        train_config,
        val_fn=run_val,
        checkpoint_path=checkpoint_path,
        resume=resume,
        run_config=run_config,
    )
    if snapshots is not None and result.rank == 0:
        snapshots.finish()
    return model, result


class TextRunError(ValueError):
    """A corpus or settings that cannot make a run (raised by :func:`train_text` before any
    training): an unknown model or objective option, a corpus that is not UTF-8 text or too small."""


def check_text_data(config: TextConfig, streams: TokenStreams) -> None:
    """``ValueError`` unless the splits hold a training window and a validation window of
    ``config.length`` tokens."""
    if len(streams.val) < config.length or len(streams.train) <= config.length:
        raise ValueError(
            f"the corpus is too small for windows of {config.length} tokens (train {len(streams.train)}, "
            f"val {len(streams.val)} tokens): use a larger corpus or a smaller length"
        )


def train_text(
    corpus: str | os.PathLike[str] | Corpus,
    out: str | os.PathLike[str],
    *,
    model: str = "masked",
    config: TextConfig | None = None,
    budget: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    restart: bool = False,
    progress: bool = True,
    batch: int | None = None,
) -> TrainResult:
    """Train the text model ``model`` on ``corpus`` (a UTF-8 file, split by
    :func:`dfm.corpus.load_text_corpus`, or a :class:`~dfm.corpus.Corpus`) into the run folder
    ``out`` (see the module docstring), resuming its checkpoint unless ``restart``.

    The checkpoint's ``run_config`` holds the run-defining fields of ``config``, ``model`` and
    the vocabulary (``chars``, or the ``tokenizer_file`` of a BPE model), so a run resumes only
    on a corpus with the same vocabulary and :func:`dfm.text_generation.load_text_run` rebuilds
    the model from the checkpoint alone.

    Args:
        budget: ``TrainConfig`` budget fields (default: 10 minutes, validation every minute).
        batch: this process's batch (default ``config.batch``).

    Raises:
        FileNotFoundError: for a missing corpus file.
        TextRunError: (a ``ValueError``) before training, for an unknown model or objective
            option, a corpus that is not UTF-8 text or too small.
        gm.train.CheckpointMismatchError: to resume a run made with other settings.
    """
    from gm.cli import training_settings

    config = TextConfig() if config is None else config
    budget = {"max_minutes": 10.0, "eval_every_minutes": 1.0} if budget is None else budget
    try:
        kind, block = check_model(model, config)
        text = corpus if isinstance(corpus, Corpus) else load_text_corpus(corpus)
        if kind != "ar":
            masked_objective(config, MixturePath(max(2, text.vocab_size), "mask"), block)
        if config.tokenizer == "bpe" and progress:
            print(f"[text] byte-level BPE of {config.bpe_vocab_size} tokens (cached for later runs)", file=sys.stderr)
        streams = tokenize_corpus(text, config.tokenizer, config.bpe_vocab_size)
        check_text_data(config, streams)
    except ValueError as error:
        raise TextRunError(str(error)) from None
    assert streams.vocabulary is not None  # tokenize_corpus records it
    out = Path(out)
    vocabulary: dict[str, str] = {}
    if streams.vocabulary.bpe_json is not None:
        # content-addressed: writing it never changes the tokenizer of a run made before
        digest = hashlib.sha256(streams.vocabulary.bpe_json.encode("utf-8")).hexdigest()[:12]
        vocabulary["tokenizer_file"] = f"bpe_{digest}.json"
        atomic_write(out / vocabulary["tokenizer_file"], streams.vocabulary.bpe_json)
    else:
        vocabulary["chars"] = text.chars
    _, result = train_text_model(
        model,
        config,
        streams,
        budget,
        checkpoint_path=out / CHECKPOINT_NAME,
        seed=seed,
        device=device,
        resume=not restart,
        progress=progress,
        run_config=training_settings(config, model=model, **vocabulary),
        batch=batch,
    )
    return result
