"""A griffe extension for the API pages: the library's docstrings are Google-style with reST markup
inside (``:func:`x```, ``:math:`x```, ``.. math::`` blocks, ``Example::`` literal blocks). Markdown
does not know that markup, so before the docstrings are parsed it becomes Markdown: a role becomes
a code span, a math directive or a ``::`` literal block becomes a fenced code block. An ``Args:``
entry that documents several parameters at once (``width, depth, heads: sizes``) becomes one entry
per parameter, as the Google style that the parser follows expects.

The source files are not changed; this only affects how mkdocstrings renders them
(``extensions:`` in mkdocs.yml).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

# :func:`name`, :class:`~pkg.Name`, :math:`\kappa_t`, ... -> `name`
_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`~?([^`]+)`")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _fence(body: list[str], indent: int) -> list[str]:
    """``body`` (the indented lines of a block) as a fenced code block at ``indent``."""
    while body and not body[-1].strip():
        body.pop()
    inner = min((_indent(line) for line in body if line.strip()), default=0)
    pad = " " * indent
    lines = [pad + line[inner:] if line.strip() else "" for line in body]
    return ["", pad + "```text", *lines, pad + "```", ""]


def rst_to_markdown(text: str) -> str:
    """The docstring ``text`` with its reST roles, math directives and literal blocks in Markdown."""
    lines = _ROLE.sub(r"`\1`", text).splitlines()  # roles first: one may span lines
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = _indent(line)
        directive = re.match(r"\.\. math::\s*(.*)$", stripped)
        literal = stripped.endswith("::") and not directive and not stripped.startswith("..")
        if directive or literal:
            if directive:
                inline = directive.group(1)
                body = [" " * (indent + 4) + inline] if inline else []
            else:
                # "Example::" -> "Example:" followed by the literal block ("::" alone: nothing)
                head = stripped[:-1] if stripped != "::" else ""
                if head:
                    out.append(" " * indent + head)
                body = []
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
                body.append(lines[j])
                j += 1
            if body and any(b.strip() for b in body):
                out.extend(_fence(body, indent))
                i = j
                continue
            i += 1
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


_SECTION = re.compile(r"(Args|Arguments|Parameters|Attributes|Other Parameters):\s*$")
_NAMES = re.compile(r"([\w*]+(?:\s*,\s*[\w*]+)*)\s*(\([^)]*\))?\s*:(?:\s+(.*))?$")


def split_grouped_parameters(text: str) -> str:
    """``a, b (int): text`` in an ``Args:`` (or ``Attributes:``) section as ``a (int): text`` and
    ``b (int): text``; a list of names wrapped over several lines is joined first."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if not _SECTION.fullmatch(line.strip()):
            continue
        section_indent = _indent(line)
        entry_indent = None
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > section_indent):
            line = lines[i]
            if not line.strip():
                out.append(line)
                i += 1
                continue
            if entry_indent is None:
                entry_indent = _indent(line)
            if _indent(line) != entry_indent:
                out.append(line)
                i += 1
                continue
            # the entry's head: its names may wrap onto the next lines ("a, b,\n    c: text")
            head, j = line.strip(), i + 1
            while head.endswith(",") and ":" not in head and j < len(lines) and lines[j].strip():
                head += " " + lines[j].strip()
                j += 1
            match = _NAMES.match(head)
            if match is None or "," not in match.group(1):
                out.append(line)
                i += 1
                continue
            body = []
            while j < len(lines) and lines[j].strip() and _indent(lines[j]) > entry_indent:
                body.append(lines[j])
                j += 1
            names = [name.strip() for name in match.group(1).split(",")]
            annotation = f" {match.group(2)}" if match.group(2) else ""
            description = match.group(3) or ""
            for name in names:
                out.append(" " * entry_indent + f"{name}{annotation}: {description}".rstrip())
                out.extend(body)
            i = j
    return "\n".join(out)


class RstToMarkdown(Extension):
    """Rewrites every docstring with :func:`rst_to_markdown` as griffe loads it."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(split_grouped_parameters(obj.docstring.value))
