r"""The autoregressive baseline of the text models: a causal :class:`~dfm.transformer.TokenTransformer`
that predicts token ``i`` from tokens ``< i`` (position 0 from a beginning-of-sequence id), its
exact likelihood, KV-cached sampling, and the measures of sample quality it provides.

The model's input vocabulary is the ``V`` data ids plus BOS ``= V`` (``TokenTransformer(V + 1,
V, causal=True)``); its output at position ``i`` is the logits of
:math:`p_\theta(x_i \mid x_{<i})`, so the log-likelihood of a window is exact:

.. math::
    -\log p_\theta(x) = -\sum_{i=1}^{L} \log p_\theta(x_i \mid \mathrm{BOS}, x_1, \dots, x_{i-1}).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfm.solver import check_filtering, check_temperature, filter_logits
from dfm.transformer import TokenTransformer, append_kv

__all__ = [
    "ar_logits",
    "ar_nll",
    "ar_bpc",
    "ar_sample",
    "generative_perplexity",
    "sample_entropy_bits",
    "unigram_bpc",
]


def ar_logits(model: nn.Module, x: Tensor, bos: int | None = None) -> Tensor:
    """Next-token logits ``(..., L, V)`` for every position of ``x`` ``(..., L)``: position ``i``
    sees ``BOS, x_1 .. x_{i-1}`` (the input is ``x`` shifted right by one, BOS in front).

    Args:
        model: a causal :class:`~dfm.transformer.TokenTransformer` (or a wrapper of one:
            ``DistributedDataParallel``, ``torch.compile``; then ``bos`` must be given, as a
            wrapper does not expose the transformer's attributes).
        x: token ids.
        bos: the BOS id (default: the model's last input id, ``model.vocab_size - 1``).

    Raises:
        ValueError: if ``bos`` is missing for a model that is not a ``TokenTransformer``.
    """
    if bos is None:
        if not isinstance(model, TokenTransformer):
            raise ValueError(f"bos must be given for a {type(model).__name__} (not a TokenTransformer)")
        bos = model.vocab_size - 1
    start = torch.full_like(x[..., :1], bos)
    return model(torch.cat([start, x[..., :-1]], dim=-1))


@torch.no_grad()
def ar_nll(model: nn.Module, chunks: Tensor, batch: int = 64, bos: int | None = None) -> Tensor:
    r"""Exact negative log-likelihood in nats of every window of ``chunks`` ``(N, L)``,
    :math:`-\sum_i \log p_\theta(x_i \mid x_{<i})` (float64 softmax), shape ``(N,)``;
    ``batch`` windows per forward pass."""
    out = []
    for i in range(0, len(chunks), batch):
        x = chunks[i : i + batch]
        logits = ar_logits(model, x, bos).transpose(1, 2).double()
        out.append(F.cross_entropy(logits, x, reduction="none").sum(-1))
    if not out:
        return torch.zeros(0, dtype=torch.float64, device=chunks.device)
    return torch.cat(out)


def ar_bpc(model: nn.Module, chunks: Tensor, batch: int = 64, n_chars: int | None = None) -> float:
    r"""Exact bits per character of ``chunks`` ``(N, L)``: :math:`\sum \mathrm{NLL} / (C \ln 2)`
    with ``C = n_chars``, the characters the windows encode (default one per token: bits per
    token)."""
    total = float(ar_nll(model, chunks, batch).sum())
    return total / (chunks.numel() if n_chars is None else n_chars) / math.log(2)


@torch.no_grad()
def ar_sample(
    model: TokenTransformer,
    n: int,
    length: int,
    generator: torch.Generator,
    prompt: Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    r"""``n`` sequences ``(n, length)`` drawn left to right, :math:`x_i \sim p_\theta(\cdot \mid
    x_{<i})^{1/T}` filtered by ``top_k`` / ``top_p`` (:func:`dfm.filter_logits`), float64
    draws, continuing ``prompt`` (1-D ids) if given. Keys and values of the past positions are
    cached (:func:`dfm.transformer.append_kv`): each new token costs one position's forward
    pass. Runs on the generator's device.

    Raises:
        ValueError: for a bad temperature or filter, or a prompt not shorter than ``length``
            (nothing to generate).
    """
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


def generative_perplexity(judge: nn.Module, samples: Tensor, batch: int = 64) -> float:
    r"""Perplexity of ``samples`` ``(N, L)`` under the AR model ``judge``,
    :math:`\exp\big(\sum_n \mathrm{NLL}(x^n) / (N L)\big)` (per token): low for text the judge
    finds likely. Pair it with :func:`sample_entropy_bits`, as repetitive text also scores low."""
    samples = samples.to(next(judge.parameters()).device)
    return math.exp(float(ar_nll(judge, samples, batch).sum()) / samples.numel())


def sample_entropy_bits(samples: Tensor) -> float:
    r"""Mean over the samples ``(N, L)`` of the entropy (bits) of each sample's own token
    histogram, :math:`\frac1N \sum_n -\sum_v p^n_v \log_2 p^n_v` with :math:`p^n_v` the fraction
    of sample ``n``'s tokens equal to ``v``: low values flag repetitive, degenerate text.

    All histograms in one ``bincount`` (sample ``n``'s ids offset by ``n V``)."""
    if samples.dim() != 2 or samples.shape[0] == 0 or samples.shape[1] == 0:
        raise ValueError(f"samples must be a non-empty (N, L) tensor of ids, got shape {tuple(samples.shape)}")
    n, length = samples.shape
    vocab = int(samples.max()) + 1
    offsets = torch.arange(n, device=samples.device)[:, None] * vocab
    counts = torch.bincount((samples.long() + offsets).flatten(), minlength=n * vocab).view(n, vocab)
    p = counts.double() / length
    entropy = -torch.special.xlogy(p, p).sum(-1) / math.log(2)
    return float(entropy.mean())


def unigram_bpc(train_ids: Tensor, test_ids: Tensor, vocab: int, n_chars: int | None = None) -> float:
    r"""Bits per character of ``test_ids`` under the add-one-smoothed unigram of ``train_ids``,
    :math:`p_v = (c_v + 1) / (\sum_u c_u + V)`: the floor any model must beat (``n_chars``: the
    characters ``test_ids`` encode, default one per token)."""
    counts = torch.bincount(train_ids, minlength=vocab).double() + 1.0
    logp = torch.log(counts / counts.sum())
    n_chars = test_ids.numel() if n_chars is None else n_chars
    return float(-logp[test_ids].sum() / n_chars / math.log(2))
