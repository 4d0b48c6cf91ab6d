"""The King James Bible as a character-level (or byte-level BPE) corpus.

Source: ``benchmarks.paths.data_dir() / "text" / "kjv.txt"``, that is ``$RDFM_DATA_DIR/text/kjv.txt``
if the variable is set, else ``../shared/data/text/kjv.txt`` beside a source checkout, else the
user data folder (``~/.local/share/rdfm/text/kjv.txt`` on Linux). The file is Debian's
``bible-kjv`` text (Project Gutenberg eBook #10 is the same text for users without it). BPE
tokenizers trained on it are cached in ``benchmarks.paths.cache_dir()``.

Cleaning: chapter heading lines (``Genesis 1``) are dropped, verse numbers are stripped,
wrapped lines are joined with a space; the result is one verse per line.

Split (deterministic, by chapter, so no verse is shared across splits): chapters are numbered
0, 1, 2, ... in canonical order; chapter ``k`` goes to test if ``k % 20 == 10``, to validation
if ``k % 20 == 5``, else to train (~90/5/5, spread over every part of the Bible). The
character vocabulary is the set of characters of the whole cleaned corpus (an inventory, not
statistics: no test information leaks into the model).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from benchmarks.paths import cache_dir, data_dir, describe_data_dir
from gm.files import atomic_path

_HEADING = re.compile(r"^(?:[1-4] )?[A-Z][A-Za-z ]*? \d+$")
_VERSE = re.compile(r"^\s+(\d+)\s+(.*)$")


def kjv_path() -> Path:
    """Where :func:`load_kjv` reads the text by default (the file may not exist)."""
    return data_dir() / "text" / "kjv.txt"


def parse_kjv(text: str) -> list[list[str]]:
    """Chapters, each a list of cleaned verses, from the ``bible-kjv`` print format."""
    chapters: list[list[str]] = []
    verse: list[str] | None = None
    prev_blank = True
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            prev_blank = True
            continue
        if prev_blank and not line.startswith(" ") and _HEADING.match(line):
            chapters.append([])
            verse = None
        elif (m := _VERSE.match(line)) is not None:
            if not chapters:
                raise ValueError(f"verse before any chapter heading: {line!r}")
            verse = [m.group(2).strip()]
            chapters[-1].append(verse)  # type: ignore[arg-type]
        else:
            if verse is None:
                raise ValueError(f"continuation line outside a verse: {line!r}")
            verse.append(line.strip())
        prev_blank = False
    return [[" ".join(parts) for parts in chapter] for chapter in chapters]  # type: ignore[misc]


@dataclass
class Corpus:
    train: str
    val: str
    test: str
    chars: str

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        """Ids of the characters of ``text``; ValueError naming the first one not in ``chars``."""
        # A vectorised lookup of the code points, not a Python loop over characters: the KJV's
        # 4.3 million characters took ~1 s of every text run's start-up that way.
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        keys = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)
        order = np.argsort(keys, kind="stable")
        pos = np.minimum(np.searchsorted(keys[order], codes), max(len(keys) - 1, 0))
        found = keys[order][pos] == codes if len(keys) else np.zeros(len(codes), dtype=bool)
        if not found.all():
            raise ValueError(f"character {chr(codes[int(np.argmin(found))])!r} is not in the vocabulary")
        return torch.from_numpy(order[pos].astype(np.int64))

    def decode(self, ids: Tensor) -> str:
        return "".join(self.chars[int(i)] for i in ids.reshape(-1))


def load_kjv(path: Path | None = None) -> Corpus:
    """Cleaned, split KJV corpus (see the module docstring for the exact rules).

    Args:
        path: the text file (default :func:`kjv_path`).

    Raises:
        FileNotFoundError: naming where the file was looked for and how to get it.
    """
    where = describe_data_dir() if path is None else "the path given to load_kjv"
    path = kjv_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"KJV text not found: looked for {path} ({where}). To get it, install Debian's "
            'bible-kjv package and print the whole Bible with `bible "Genesis1:1-Revelation22:21" '
            "> kjv.txt` (Project Gutenberg eBook #10 is the same text, but must be reformatted to "
            f"that layout), then put it at {kjv_path()} or set RDFM_DATA_DIR to a folder whose "
            "text/ subfolder holds kjv.txt."
        )
    chapters = parse_kjv(path.read_text(encoding="utf-8"))
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for k, chapter in enumerate(chapters):
        split = "test" if k % 20 == 10 else "val" if k % 20 == 5 else "train"
        parts[split].extend(chapter)
    texts = {name: "\n".join(verses) + "\n" for name, verses in parts.items()}
    chars = "".join(sorted(set("".join(texts.values()))))
    return Corpus(texts["train"], texts["val"], texts["test"], chars)


def split_lines(lines: list[str]) -> Corpus:
    """Line ``k`` goes to test if ``k % 20 == 10``, to validation if ``k % 20 == 5``, else to
    train (the KJV's chapter rule applied to lines); the vocabulary is every character."""
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for k, line in enumerate(lines):
        parts["test" if k % 20 == 10 else "val" if k % 20 == 5 else "train"].append(line)
    texts = {name: "\n".join(chunk) + "\n" for name, chunk in parts.items()}
    return Corpus(texts["train"], texts["val"], texts["test"], "".join(sorted(set("".join(texts.values())))))


def load_text_corpus(path: str | Path) -> Corpus:
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


def train_bpe(corpus: Corpus, vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained on the training split only, cached on disk."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    # keyed by the training text too: another corpus must never pick up this one's merges
    digest = hashlib.sha256(corpus.train.encode("utf-8")).hexdigest()[:12]
    path = cache_dir() / f"kjv_bpe_{vocab_size}_{digest}.json"
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
    """

    train: Tensor
    val: Tensor
    test: Tensor
    vocab_size: int
    chars_per_token: Tensor
    decode: Callable[[Tensor], str]

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
    )
