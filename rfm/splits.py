"""Seeded random train / validation / test splits of a dataset held in memory.

The convention follows Chen & Lipman (2024): every run draws its own random 80/10/10 split of
the whole dataset from the run's seed, so the spread over seeds includes the split variance.
:func:`rfm.sphere_density.fit_sphere_density` and the benchmarks split this way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["split_sizes", "split_indices"]


def split_sizes(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[int, int, int]:
    """Sizes of the three parts of a split of ``n`` items.

    The validation and test parts get ``floor(n * fraction)`` items each and the training part
    gets the rest, so ``n_train + n_val + n_test == n`` always holds and the evaluation sets are
    never larger than asked for.

    Args:
        n: number of items, ``n >= 0``.
        fractions: ``(train, val, test)`` fractions, each in ``[0, 1]``, summing to 1.

    Returns:
        ``(n_train, n_val, n_test)``.

    Raises:
        ValueError: if ``n`` is negative or not an integer, or ``fractions`` is malformed.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"n must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3:
        raise ValueError(f"fractions must have 3 entries (train, val, test), got {len(fractions)}")
    if any(not math.isfinite(f) or f < 0.0 or f > 1.0 for f in fractions):
        raise ValueError(f"fractions must each lie in [0, 1], got {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions} (sum {sum(fractions)})")
    # The small epsilon keeps e.g. 0.1 * 830 = 82.99999... from flooring to 82.
    n_val = math.floor(n * fractions[1] + 1e-9)
    n_test = math.floor(n * fractions[2] + 1e-9)
    return n - n_val - n_test, n_val, n_test


def split_indices(
    n: int, seed: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random, seeded split of ``range(n)`` into disjoint train / val / test index sets.

    A uniformly random permutation of ``range(n)`` is drawn from a CPU ``torch.Generator``
    seeded with ``seed`` (torch's CPU Mersenne Twister is bit-identical across machines and
    operating systems) and cut into consecutive blocks of the sizes given by
    :func:`split_sizes`. The three index sets are disjoint and their union is ``range(n)``.

    Args:
        n: number of items.
        seed: any Python int (the same seed always gives the same split).
        fractions: ``(train, val, test)`` fractions summing to 1.

    Returns:
        ``(train_idx, val_idx, test_idx)``: 1-D ``torch.int64`` CPU tensors, each in the random
        order of the permutation (so a prefix of ``train_idx`` is itself a random subset).

    Raises:
        ValueError: on a bad ``n``, ``seed`` or ``fractions``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {type(seed).__name__}")
    n_train, n_val, _ = split_sizes(n, fractions)
    generator = torch.Generator(device="cpu")
    # manual_seed needs a value in [-2**63, 2**64); map any Python int there reproducibly.
    generator.manual_seed(seed % (2**64))
    permutation = torch.randperm(n, generator=generator, dtype=torch.int64)
    return (
        permutation[:n_train],
        permutation[n_train : n_train + n_val],
        permutation[n_train + n_val :],
    )
