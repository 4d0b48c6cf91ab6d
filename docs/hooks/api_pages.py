"""mkdocs hook: the API pages list every public module of a package at build time.

A page that contains ``<!-- api: PACKAGE -->`` gets, in its place, the package's docstring
(``::: PACKAGE`` without members) followed by one mkdocstrings block per public module
(``::: PACKAGE.module``; a subpackage with its own modules), so a module added to the library
appears in the reference without editing the docs, and names that ``__init__`` re-exports are
documented once, where they are defined.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!-- api: ([A-Za-z_][\w.]*) -->")


def public_modules(package: str) -> list[str]:
    """The dotted names of the public modules and subpackages directly under ``package``."""
    folder = ROOT.joinpath(*package.split("."))
    names = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("_"):
            continue
        if path.suffix == ".py":
            names.append(f"{package}.{path.stem}")
        elif path.is_dir() and (path / "__init__.py").exists():
            names.append(f"{package}.{path.name}")
    return names


def api_markdown(package: str) -> str:
    blocks = [f"::: {package}\n    options:\n      members: false\n      show_submodules: false\n"]
    for module in public_modules(package):
        blocks.append(f"::: {module}\n")
    return "\n".join(blocks)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    return MARKER.sub(lambda match: api_markdown(match.group(1)), markdown)
