"""Results records: one JSON file per (benchmark, dataset, method, seed) run.

Every benchmark script writes one record per run with :func:`write_results`;
``python -m benchmarks table`` reads them back with :func:`load_results` and builds the README's
tables. A record is a flat JSON object with these fields (``*`` = required):

============================ ======================================================================
field                        meaning
============================ ======================================================================
``benchmark`` *              ``"earth"``, ``"proteins"``, ``"so3"`` or ``"text"``
``dataset`` *                dataset within the benchmark: ``volcano``/``earthquake``/``flood``/
                             ``fire``; ``general``/``glycine``/``proline``/``prepro``; ``M16``/
                             ``M32``/``M64``; the text corpus name (e.g. ``kjv``)
``seed`` *                   int seed of the run (split, initialisation, sampling)
``method``                   ``"rfm"`` (default, this library's model) or an anchor computed on the
                             same splits, e.g. ``"vonmises"`` for the proteins' von Mises mixture
``config``                   dict of every setting needed to rerun (network, optimiser, batch ...)
``budget_minutes``           wall-clock training budget per run, in minutes (absent for a run with
                             a step budget and no time limit)
``budget_steps``             optimiser-step budget per run (``--steps``), if one was set
``steps``                    optimiser steps actually done
``wall_time_s``              wall-clock seconds of the whole run (training + evaluation)
``val_nll``                  validation negative log-likelihood (nats per point) of the selected
                             model (EMA weights, chosen on this number)
``test_nll``                 test negative log-likelihood (nats per point), lower is better
``test_loglik``              so3: mean test log-likelihood of the model, higher is better
``true_test_loglik``         so3: mean log-likelihood of the generating mixture on the same points
``masked_bpc``               text: bits per character of masked discrete flow matching (bound)
``ar_bpc``                   text: bits per character of the autoregressive baseline
``unigram_bpc``              text: bits per character of the unigram model
``likelihood_solver``        dict of the ODE solver settings used for the likelihoods (method,
                             steps or tolerances, divergence estimator)
``command``                  the command line that produced the record
``git_commit``               commit hash of the code, or ``None`` outside a git checkout
``timestamp``                ISO 8601 UTC time the record was written
============================ ======================================================================

Benchmarks may add further fields; readers ignore the ones they do not know.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gm.files import atomic_write
from gm.paths import PROJECT_ROOT

BENCHMARKS: tuple[str, ...] = ("earth", "proteins", "backbones", "codesign", "so3", "text", "scaling", "toy2d")
DEFAULT_METHOD = "rfm"

# field -> accepted Python types, checked when present.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "benchmark": (str,),
    "dataset": (str,),
    "seed": (int,),
    "method": (str,),
    "config": (dict,),
    "budget_minutes": (int, float),
    "budget_steps": (int,),
    "steps": (int,),
    "wall_time_s": (int, float),
    "val_nll": (int, float),
    "test_nll": (int, float),
    "test_loglik": (int, float),
    "true_test_loglik": (int, float),
    "masked_bpc": (int, float),
    "ar_bpc": (int, float),
    "unigram_bpc": (int, float),
    "likelihood_solver": (dict,),
    "command": (str,),
    "git_commit": (str, type(None)),
    "timestamp": (str,),
}
REQUIRED_FIELDS: tuple[str, ...] = ("benchmark", "dataset", "seed")


def git_commit(cwd: str | os.PathLike[str] = PROJECT_ROOT) -> str | None:
    """Hash of ``HEAD`` of the checkout at ``cwd`` (with ``-dirty`` if it has local changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    suffix = "-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else ""
    return head.stdout.strip() + suffix


def utc_timestamp() -> str:
    """Current UTC time as ISO 8601 with seconds, e.g. ``2025-01-31T12:00:00+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_record(benchmark: str, dataset: str, seed: int, **fields: Any) -> dict[str, Any]:
    """A record with the provenance fields filled in.

    ``method`` defaults to ``"rfm"``, ``command`` to the current ``sys.argv``, ``git_commit``
    to :func:`git_commit` and ``timestamp`` to :func:`utc_timestamp`; ``fields`` override them.
    """
    record: dict[str, Any] = {
        "benchmark": benchmark,
        "dataset": dataset,
        "seed": seed,
        "method": DEFAULT_METHOD,
        "command": " ".join(["python -m benchmarks", *sys.argv[1:]])
        if sys.argv and sys.argv[0].endswith("__main__.py")
        else " ".join(sys.argv),
        "git_commit": git_commit(),
        "timestamp": utc_timestamp(),
    }
    record.update(fields)
    validate_record(record)
    return record


def validate_record(record: dict[str, Any]) -> None:
    """Check the required fields and the types of the known ones.

    Raises:
        ValueError: naming the offending field.
    """
    if not isinstance(record, dict):
        raise ValueError(f"record must be a dict, got {type(record).__name__}")
    for field in REQUIRED_FIELDS:
        if field not in record:
            raise ValueError(f"record is missing the required field {field!r}")
    for field, types in _FIELD_TYPES.items():
        if field not in record:
            continue
        value = record[field]
        # bool is an int subclass but never a valid seed, step count or metric.
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise ValueError(f"record field {field!r} must be {names}, got {value!r}")
    if record["benchmark"] not in BENCHMARKS:
        raise ValueError(f"record field 'benchmark' must be one of {BENCHMARKS}, got {record['benchmark']!r}")


def _to_json(value: Any) -> Any:
    """JSON fallback for numpy / torch scalars and small arrays, paths and dtypes."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)  # e.g. torch.dtype, torch.device


def write_results(path: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Validate ``record`` and write it as JSON to ``path`` atomically.

    numpy and torch scalars or arrays are stored as numbers or lists, other objects such as
    ``torch.dtype`` as their ``str``.

    The JSON goes to a temporary file in the same folder which then replaces ``path`` with
    ``os.replace``, so readers never see a partial file. Parent folders are created. Non-finite
    floats are written as ``NaN`` / ``Infinity`` (which :func:`json.load` reads back).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if the record is invalid (see :func:`validate_record`).
    """
    text = json.dumps(record, indent=2, default=_to_json) + "\n"
    validate_record(json.loads(text))  # what will be read back: numpy / torch scalars converted
    return atomic_write(path, text)  # gm.files: the library's one atomic writer


def load_results(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All result records in the JSON files under ``root`` (searched recursively).

    JSON files that are not records (not an object with a ``"benchmark"`` field, such as a
    saved config) are skipped. Records without ``method`` get ``"rfm"``. Each returned record
    carries its file in the extra key ``"_path"``. Order: sorted by file path.

    Raises:
        FileNotFoundError: if ``root`` does not exist.
        ValueError: if a JSON file does not parse or a record is invalid (naming the file).
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"results folder {root} does not exist")
    files = [root] if root.is_file() else sorted(root.rglob("*.json"))
    records: list[dict[str, Any]] = []
    for file in files:
        if file.name.startswith("."):
            continue  # temporary files of an in-flight write
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{file}: not valid JSON ({error})") from error
        if not isinstance(data, dict) or "benchmark" not in data:
            continue
        data.setdefault("method", DEFAULT_METHOD)
        try:
            validate_record(data)
        except ValueError as error:
            raise ValueError(f"{file}: {error}") from error
        data["_path"] = str(file)
        records.append(data)
    return records


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


__all__ = [
    "BENCHMARKS",
    "DEFAULT_METHOD",
    "atomic_write",
    "REQUIRED_FIELDS",
    "git_commit",
    "is_finite_number",
    "load_results",
    "new_record",
    "utc_timestamp",
    "validate_record",
    "write_results",
]
