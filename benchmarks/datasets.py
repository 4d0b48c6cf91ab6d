"""``python -m benchmarks data <dataset> [...]``: build, cache or download benchmark datasets."""
from __future__ import annotations

import importlib
import sys

DATASETS = {
    "proteins": "benchmarks.protein_data",
    "earth": "benchmarks.earth_data",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in DATASETS:
        print(f"usage: python -m benchmarks data {{{','.join(DATASETS)}}} [options]", file=sys.stderr)
        return 2
    return int(importlib.import_module(DATASETS[argv[0]]).main(argv[1:]) or 0)
