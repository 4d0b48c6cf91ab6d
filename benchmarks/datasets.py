"""``python -m benchmarks data <dataset> [...]``: build, cache or download benchmark datasets."""

from __future__ import annotations

import importlib
import sys

#: dataset name -> ``module`` (its ``main(argv)`` runs) or ``module:function``.
DATASETS = {
    "proteins": "benchmarks.protein_data",
    "backbones": "benchmarks.protein_data:main_backbones",
    "earth": "benchmarks.earth_data",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in DATASETS:
        print(f"usage: python -m benchmarks data {{{','.join(DATASETS)}}} [options]", file=sys.stderr)
        return 2
    module, _, function = DATASETS[argv[0]].partition(":")
    return int(getattr(importlib.import_module(module), function or "main")(argv[1:]) or 0)
