"""``--<field>`` command-line overrides of a benchmark's config dataclass, and the part of a
config that a resumed checkpoint must match."""
from __future__ import annotations

import argparse
from dataclasses import asdict, fields, replace
from typing import Any, TypeVar

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


# Config fields that only say how a run is evaluated or reported; changing them must not stop a
# run from resuming its checkpoint.
EVALUATION_FIELDS = frozenset({"eval_every_minutes", "val_steps", "selection_points", "test_steps", "grid_power",
                               "eval_chunks", "elbo_draws", "sample_steps"})


def training_settings(config: object, **extra: Any) -> dict[str, Any]:
    """The fields of the dataclass ``config`` that define a training run (all but
    :data:`EVALUATION_FIELDS`), plus ``extra`` (dataset, device-independent choices); passed as
    ``rfm.training.train(run_config=...)`` so a checkpoint only resumes under the same settings."""
    return {**{k: v for k, v in asdict(config).items() if k not in EVALUATION_FIELDS}, **extra}
