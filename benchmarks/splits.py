"""The seeded random train / validation / test splits of the benchmarks: they live in the library,
:mod:`rfm.splits`; re-exported here for the README example (``benchmarks.demo_example``)."""

from rfm.splits import split_indices, split_sizes

__all__ = ["split_indices", "split_sizes"]
