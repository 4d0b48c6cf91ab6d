"""The King James Bible as a character-level (or byte-level BPE) corpus.

Source: ``gm.paths.data_dir() / "text" / "kjv.txt"``, that is ``$RDFM_DATA_DIR/text/kjv.txt``
if the variable is set, else ``../shared/data/text/kjv.txt`` beside a source checkout, else the
user data folder (``~/.local/share/rdfm/text/kjv.txt`` on Linux). The file is Debian's
``bible-kjv`` text (Project Gutenberg eBook #10 is the same text for users without it). The
general corpus code (the :class:`~dfm.corpus.Corpus` type, user files, tokenisation, crops and
windows) lives in :mod:`dfm.corpus`; it is re-exported here.

Cleaning: chapter heading lines (``Genesis 1``) are dropped, verse numbers are stripped,
wrapped lines are joined with a space; the result is one verse per line.

Split (deterministic, by chapter, so no verse is shared across splits): chapters are numbered
0, 1, 2, ... in canonical order; chapter ``k`` goes to test if ``k % 20 == 10``, to validation
if ``k % 20 == 5``, else to train (~90/5/5, spread over every part of the Bible). The
character vocabulary is the set of characters of the whole cleaned corpus (an inventory, not
statistics: no test information leaks into the model).
"""

from __future__ import annotations

import re
from pathlib import Path

from dfm.corpus import (
    Corpus,
    TokenStreams,
    eval_chunks,
    load_text_corpus,
    random_crops,
    split_lines,
    tokenize_corpus,
    train_bpe,
)
from gm.paths import data_dir, describe_data_dir

__all__ = [
    "kjv_path",
    "parse_kjv",
    "load_kjv",
    # the general corpus code of dfm.corpus, importable from here too
    "Corpus",
    "TokenStreams",
    "eval_chunks",
    "load_text_corpus",
    "random_crops",
    "split_lines",
    "tokenize_corpus",
    "train_bpe",
]

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
