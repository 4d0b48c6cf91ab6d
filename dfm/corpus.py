"""Text corpora for the text models: a UTF-8 file split deterministically into train, validation
and test, character or byte-level BPE tokenisation, training crops and evaluation windows, and
the vocabulary a trained model keeps to read prompts and write samples.

Split of a user's file (:func:`load_text_corpus`, :func:`split_lines`): non-empty line ``k``
goes to test if ``k % 20 == 10``, to validation if ``k % 20 == 5``, else to train (~90/5/5,
spread over the whole file). The character vocabulary is the set of characters of the whole
file (an inventory, not statistics: no test information leaks into the model). BPE tokenizers
are trained on the training split only and cached in :func:`gm.paths.cache_dir`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gm.files import atomic_path
from gm.paths import cache_dir

__all__ = [
    "Corpus",
    "split_lines",
    "load_text_corpus",
    "random_crops",
    "eval_chunks",
    "train_bpe",
    "TokenStreams",
    "tokenize_corpus",
    "Vocabulary",
]


def _char_ids(text: str, chars: str) -> Tensor:
    """Ids of the characters of ``text`` in ``chars``; ValueError naming the first unknown one."""
    # A vectorised lookup of the code points, not a Python loop over characters: the KJV's
    # 4.3 million characters took ~1 s of every text run's start-up that way.
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    keys = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32)
    order = np.argsort(keys, kind="stable")
    pos = np.minimum(np.searchsorted(keys[order], codes), max(len(keys) - 1, 0))
    found = keys[order][pos] == codes if len(keys) else np.zeros(len(codes), dtype=bool)
    if not found.all():
        raise ValueError(f"character {chr(codes[int(np.argmin(found))])!r} is not in the vocabulary")
    return torch.from_numpy(order[pos].astype(np.int64))


@dataclass
class Corpus:
    """A text split three ways, with its character vocabulary ``chars`` (id ``i`` is ``chars[i]``)."""

    train: str
    val: str
    test: str
    chars: str

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        """Ids of the characters of ``text``; ValueError naming the first one not in ``chars``."""
        return _char_ids(text, self.chars)

    def decode(self, ids: Tensor) -> str:
        return "".join(self.chars[int(i)] for i in ids.reshape(-1))


def split_lines(lines: list[str]) -> Corpus:
    """Line ``k`` goes to test if ``k % 20 == 10``, to validation if ``k % 20 == 5``, else to
    train; the vocabulary is every character."""
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for k, line in enumerate(lines):
        parts["test" if k % 20 == 10 else "val" if k % 20 == 5 else "train"].append(line)
    texts = {name: "\n".join(chunk) + "\n" for name, chunk in parts.items()}
    return Corpus(texts["train"], texts["val"], texts["test"], "".join(sorted(set("".join(texts.values())))))


def load_text_corpus(path: str | os.PathLike[str]) -> Corpus:
    """A user's UTF-8 text file as a character corpus, split deterministically by
    :func:`split_lines` (non-empty lines, trailing spaces stripped).

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: for a file that is not UTF-8 or has fewer than 20 non-empty lines (every
            split needs some).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"corpus {path} is not UTF-8 text: {err}") from None
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if len(lines) < 20:
        raise ValueError(f"corpus {path} has {len(lines)} non-empty lines; the deterministic split needs at least 20")
    return split_lines(lines)


def random_crops(data: Tensor, batch: int, length: int, generator: torch.Generator) -> Tensor:
    """``batch`` random windows of ``length`` tokens from a 1-D token stream."""
    starts = torch.randint(0, len(data) - length, (batch,), generator=generator)
    return data[starts[:, None] + torch.arange(length)]


def eval_chunks(data: Tensor, length: int, max_chunks: int | None = None) -> Tensor:
    """Consecutive non-overlapping windows of ``length`` tokens (the tail shorter than
    ``length`` is dropped), optionally the first ``max_chunks`` of them."""
    n = len(data) // length
    if max_chunks is not None:
        n = min(n, max_chunks)
    return data[: n * length].reshape(n, length)


def train_bpe(corpus: Corpus, vocab_size: int = 1024) -> Any:
    """A byte-level BPE tokenizer (``tokenizers.Tokenizer``) trained on the training split only,
    cached in :func:`gm.paths.cache_dir` under a name keyed by the training text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    # keyed by the training text too: another corpus must never pick up this one's merges
    digest = hashlib.sha256(corpus.train.encode("utf-8")).hexdigest()[:12]
    path = cache_dir() / f"bpe_{vocab_size}_{digest}.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(corpus.train.splitlines(keepends=True), trainer=trainer)
    with atomic_path(path) as tmp:
        tok.save(str(tmp))
    return tok


class Vocabulary:
    """Token ids <-> text for a trained model: its characters (``chars``, id ``i`` is
    ``chars[i]``) or a byte-level BPE tokenizer (``bpe_json``, the ``tokenizers`` JSON).

    Raises:
        ValueError: unless exactly one of ``chars`` and ``bpe_json`` is given.
    """

    def __init__(self, chars: str | None = None, bpe_json: str | None = None) -> None:
        if (chars is None) == (bpe_json is None):
            raise ValueError("give exactly one of chars and bpe_json")
        self.chars, self.bpe_json = chars, bpe_json
        self._tokenizer: Any = None
        if bpe_json is not None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_str(bpe_json)

    @property
    def size(self) -> int:
        """Number of token ids."""
        return len(self.chars) if self.chars is not None else int(self._tokenizer.get_vocab_size())

    @property
    def is_characters(self) -> bool:
        """Whether a token is one character (a hole of a template is then one character)."""
        return self.chars is not None

    def unknown(self, text: str) -> list[str]:
        """The characters of ``text`` the vocabulary cannot spell, sorted (none for BPE: bytes)."""
        return [] if self.chars is None else sorted(set(text) - set(self.chars))

    def encode(self, text: str) -> Tensor:
        """Ids of ``text`` (1-D ``long``); ValueError for a character not in ``chars``."""
        if self.chars is not None:
            return _char_ids(text, self.chars)
        return torch.tensor(self._tokenizer.encode(text).ids, dtype=torch.long)

    def decode(self, ids: Tensor) -> str:
        """The text of ``ids``."""
        if self.chars is not None:
            return "".join(self.chars[int(i)] for i in ids.reshape(-1))
        return str(self._tokenizer.decode([int(i) for i in ids.reshape(-1)]))

    def pieces(self, ids: Tensor) -> list[str]:
        """The text of each id of ``ids`` (a BPE piece may show a partial UTF-8 character as
        the replacement character)."""
        return [self.decode(i) for i in ids.reshape(-1)]


@dataclass
class TokenStreams:
    """The three splits as token-id streams, with what is needed to score them per character.

    Attributes:
        train, val, test: 1-D ``long`` tensors of token ids.
        vocab_size: number of token ids.
        chars_per_token: ``(vocab_size,)`` characters each id stands for (all ones for
            characters; bytes of the token for byte-level BPE, equal to characters on ASCII text
            such as the KJV), so a window's character count is ``chars_per_token[ids].sum()``.
        decode: ids -> text.
        vocabulary: the :class:`Vocabulary` of the ids (to keep with a trained model).
    """

    train: Tensor
    val: Tensor
    test: Tensor
    vocab_size: int
    chars_per_token: Tensor
    decode: Callable[[Tensor], str]
    vocabulary: Vocabulary | None = None

    def n_chars(self, ids: Tensor) -> int:
        return int(self.chars_per_token[ids].sum())


def tokenize_corpus(corpus: Corpus, tokenizer: str = "char", bpe_vocab_size: int = 1024) -> TokenStreams:
    """Token streams of the corpus: ``"char"`` (one id per character of ``corpus.chars``) or
    ``"bpe"`` (a byte-level BPE of ``bpe_vocab_size`` ids trained on the training split only)."""
    if tokenizer == "char":
        return TokenStreams(
            corpus.encode(corpus.train),
            corpus.encode(corpus.val),
            corpus.encode(corpus.test),
            corpus.vocab_size,
            torch.ones(corpus.vocab_size, dtype=torch.long),
            corpus.decode,
            Vocabulary(chars=corpus.chars),
        )
    if tokenizer != "bpe":
        raise ValueError(f"tokenizer must be 'char' or 'bpe', got {tokenizer!r}")
    tok = train_bpe(corpus, bpe_vocab_size)
    vocab = tok.get_vocab_size()
    # the byte-level alphabet spells every byte as one symbol, so a token's length is its byte count
    chars = torch.tensor([len(tok.id_to_token(i)) for i in range(vocab)], dtype=torch.long)

    def encode(text: str) -> Tensor:
        return torch.tensor(tok.encode(text).ids, dtype=torch.long)

    return TokenStreams(
        encode(corpus.train),
        encode(corpus.val),
        encode(corpus.test),
        vocab,
        chars,
        lambda ids: tok.decode([int(i) for i in ids.reshape(-1)]),
        Vocabulary(bpe_json=tok.to_str()),
    )
