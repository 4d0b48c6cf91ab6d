"""mkdocs hook: the command-line reference, generated from the argparse parsers at build time.

A page that contains ``<!-- cli-reference: rdfm -->`` gets, in its place, every ``rdfm`` command
(``gm.cli.build_parser()`` and its sub-parsers, recursively) with its one-line help and its full
``--help`` text; ``<!-- cli-reference: benchmarks -->`` does the same for ``python -m benchmarks``
(``benchmarks.__main__.COMMANDS``: each module's ``main(argv)`` builds its parser, which is caught
at ``parse_args`` so that nothing else runs); ``<!-- cli-examples: rdfm -->`` becomes the examples
that ``rdfm --help`` ends with (``gm.cli.EXAMPLES``).

The ``rdfm`` subcommands are the modules registered in pyproject.toml under
``[project.entry-points."rdfm.commands"]``, read from the source tree (not from the installed
metadata, which may be stale), so the page always shows the commands of the code being built.
A command that cannot be imported or whose parser cannot be built fails the build.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- cli-{} -->"
WIDTH = "100"  # argparse wraps help at $COLUMNS


def _toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _command_modules() -> list[Any]:
    """The modules of the ``rdfm.commands`` entry points in pyproject.toml, sorted by entry name
    (the order of ``gm.cli.command_modules``)."""
    group = _toml(ROOT / "pyproject.toml")["project"].get("entry-points", {}).get("rdfm.commands", {})
    return [importlib.import_module(group[name]) for name in sorted(group)]


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, one-line help, parser)`` of each subcommand of ``parser``, in the order added."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # aliases point at the same parser
                    continue
                seen.add(id(sub))
                found.append((name, helps.get(name, ""), sub))
    return found


def _cell(text: str) -> str:
    """``text`` for a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _help_block(parser: argparse.ArgumentParser) -> str:
    text = parser.format_help().rstrip()
    return f"```text\n{text}\n```\n"


def _walk(parser: argparse.ArgumentParser, path: list[str], level: int, out: list[str]) -> None:
    for name, help_, sub in _subparsers(parser):
        command = [*path, name]
        out.append(f"{'#' * level} `{' '.join(command)}`\n")
        if help_:
            out.append(f"{help_[0].upper()}{help_[1:]}.\n" if not help_.endswith(".") else f"{help_}\n")
        out.append(_help_block(sub))
        _walk(sub, command, min(level + 1, 6), out)


def rdfm_reference() -> str:
    from gm.cli import build_parser

    parser = build_parser(_command_modules())
    commands = _subparsers(parser)
    out = [
        "## `rdfm`\n",
        _help_block(parser),
        "| command | what it does |\n|---|---|",
    ]
    for name, help_, sub in commands:
        out.append(f"| `rdfm {name}` | {_cell(help_)} |")
        for child, child_help, _ in _subparsers(sub):
            out.append(f"| `rdfm {name} {child}` | {_cell(child_help)} |")
    out.append("")
    _walk(parser, ["rdfm"], 3, out)
    return "\n".join(out)


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def _capture_parser(main: Any, argv: list[str]) -> argparse.ArgumentParser | None:
    """The parser that ``main(argv)`` builds, taken at its ``parse_args`` (or ``parse_known_args``)
    call, so nothing after it runs; ``None`` if ``main`` returned without parsing."""
    originals = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    argparse.ArgumentParser.parse_known_args = capture  # type: ignore[method-assign]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main(argv)
    except _Captured as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = originals  # type: ignore[method-assign]
    return None


def benchmarks_reference() -> str:
    from benchmarks.__main__ import COMMANDS

    out = ["| command | what it does |\n|---|---|"]
    out += [f"| `python -m benchmarks {name}` | {_cell(desc)} |" for name, (_, desc) in COMMANDS.items()]
    out.append("")
    for name, (module_name, desc) in COMMANDS.items():
        out.append(f"### `python -m benchmarks {name}`\n")
        out.append(f"{desc[0].upper()}{desc[1:]}.\n")
        if name == "download":
            out.append("The same as `python -m benchmarks data earth --download`: see `data earth` below.\n")
            continue
        module = importlib.import_module(module_name)
        variants: list[list[str]] = [[]]
        datasets = getattr(module, "DATASETS", None)
        if isinstance(datasets, dict):  # `data <dataset>`: one parser per dataset
            variants = [[key] for key in datasets]
        elif name == "text":  # `text sample`: a second parser
            variants = [[], ["sample"]]
        for argv in variants:
            parser = _capture_parser(module.main, argv)
            if parser is None:
                raise RuntimeError(f"python -m benchmarks {name} {' '.join(argv)}: main() built no parser")
            if argv:
                out.append(f"#### `python -m benchmarks {name} {' '.join(argv)}`\n")
            out.append(_help_block(parser))
    return "\n".join(out)


def rdfm_examples() -> str:
    from gm.cli import EXAMPLES

    lines = EXAMPLES.strip().splitlines()
    if lines and lines[0].strip().lower() == "examples:":
        lines = lines[1:]
    body = "\n".join(line[2:] if line.startswith("  ") else line for line in lines).strip()
    return f"```bash\n{body}\n```\n"


GENERATORS = {
    "reference: rdfm": rdfm_reference,
    "reference: benchmarks": benchmarks_reference,
    "examples: rdfm": rdfm_examples,
}


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    for key, generate in GENERATORS.items():
        marker = MARKER.format(key)
        if marker in markdown:
            previous = os.environ.get("COLUMNS")
            os.environ["COLUMNS"] = WIDTH
            if str(ROOT) not in sys.path:
                sys.path.insert(0, str(ROOT))
            try:
                markdown = markdown.replace(marker, generate())
            finally:
                if previous is None:
                    os.environ.pop("COLUMNS", None)
                else:
                    os.environ["COLUMNS"] = previous
    return markdown
