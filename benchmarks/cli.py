"""``--<field>`` command-line overrides of a benchmark's config dataclass."""
from __future__ import annotations

import argparse
from dataclasses import fields, replace
from typing import TypeVar

Config = TypeVar("Config")


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_overrides(parser: argparse.ArgumentParser, config: object) -> None:
    """One option per field of the dataclass instance ``config`` (``hidden`` -> ``--hidden``),
    typed like the field's default (booleans take true/false); unset options stay ``None``."""
    for f in fields(config):
        default = getattr(config, f.name)
        kind = _parse_bool if isinstance(default, bool) else type(default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None,
                            help=f"override the default {f.name} ({default})")


def apply_config_overrides(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with every field given on the command line replaced."""
    return replace(config, **{f.name: getattr(args, f.name) for f in fields(config)
                              if getattr(args, f.name, None) is not None})
