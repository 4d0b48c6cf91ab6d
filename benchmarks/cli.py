"""``--<field>`` command-line overrides of a benchmark's config dataclass."""
from __future__ import annotations

import argparse
from dataclasses import fields, replace
from typing import TypeVar

Config = TypeVar("Config")


def add_config_overrides(parser: argparse.ArgumentParser, config: object) -> None:
    """One option per field of the dataclass instance ``config`` (``hidden`` -> ``--hidden``),
    typed like the field's default; unset options stay ``None``."""
    for f in fields(config):
        default = getattr(config, f.name)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(default), default=None,
                            help=f"override the default {f.name} ({default})")


def apply_config_overrides(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with every field given on the command line replaced."""
    return replace(config, **{f.name: getattr(args, f.name) for f in fields(config)
                              if getattr(args, f.name, None) is not None})
