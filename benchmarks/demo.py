"""``python -m benchmarks demo [--steps N] [--skip-earth]``: the README's rfm example, then the
quick Earth benchmark.

1. The README example (:data:`benchmarks.demo_example.EXAMPLE_CODE`, shipped in the package so
   an installed copy needs no repository files): a flow on S^2 trained on the volcano events,
   then its exact test NLL.
2. ``python -m benchmarks earth --quick`` with a step budget and float32
   (:data:`EARTH_STEPS` steps, ``--mixed-precision off``): training, exact test NLL and a
   Mollweide plot under ``runs/demo`` in the current folder.

Both parts run a fixed number of steps in float32 from fixed seeds, so they print the same
numbers on every machine up to float rounding. ``--steps N`` shortens both to N steps (for a
quick try or a test; the numbers then differ from the full demo's).
"""

from __future__ import annotations

import argparse
import linecache
import sys
import time

from benchmarks.demo_example import EXAMPLE_CODE, EXAMPLE_SECONDS, EXAMPLE_STEPS

#: Steps of the quick Earth run: about 30 s of training on one CPU core (the quick 128 x 3 MLP
#: made ~300 steps/s on one core of a busy 2-core VM), replacing the former 30-second wall-clock
#: budget, whose step count and so whose result depended on the machine.
EARTH_STEPS = 8000

#: Rough training speed of the quick Earth model on one CPU core, for the demo's time estimate.
_EARTH_STEPS_PER_SECOND = 300

#: Where the quick Earth run writes its checkpoint, results.json and plot (relative to the
#: current folder, like every benchmark's ``--out``).
EARTH_OUT = "runs/demo"

# The file name the example's tracebacks show; its lines are registered with linecache.
_EXAMPLE_FILENAME = "<rdfm README example>"


def example_code(steps: int | None = None) -> str:
    """The README example, with its training loop shortened to ``steps`` steps if given.

    Args:
        steps: training steps (default: the README's :data:`EXAMPLE_STEPS`, code unchanged).

    Returns:
        Python source to execute.

    Raises:
        ValueError: if ``steps`` is not positive.
        RuntimeError: if the example no longer contains exactly one ``range(EXAMPLE_STEPS)``
            (``EXAMPLE_STEPS`` out of date with ``EXAMPLE_CODE``).
    """
    if steps is None or steps == EXAMPLE_STEPS:
        return EXAMPLE_CODE
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    loop = f"range({EXAMPLE_STEPS})"
    if EXAMPLE_CODE.count(loop) != 1:
        raise RuntimeError(
            f"benchmarks/demo_example.py: EXAMPLE_CODE must contain {loop!r} exactly once; "
            "update EXAMPLE_STEPS to the example's step count"
        )
    return EXAMPLE_CODE.replace(loop, f"range({steps})")


def earth_argv(steps: int = EARTH_STEPS, threads: int = 1) -> list[str]:
    """The ``python -m benchmarks earth`` arguments of the demo's quick Earth run."""
    return [
        "--quick",
        "--steps",
        str(steps),
        "--mixed-precision",
        "off",
        "--threads",
        str(threads),
        "--restart",
        "--out",
        EARTH_OUT,
    ]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str]) -> int:
    """Run the demo; returns the exit code.

    Raises:
        FileNotFoundError: if the volcano data is missing (the message says where it was looked
            for and how to get it), before any training starts.
    """
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks demo",
        description="Run the README's rfm example (a flow on S^2 trained on the volcano events, then its exact "
        "test NLL), then the quick Earth benchmark (float32, a fixed step budget; results and plot "
        f"in {EARTH_OUT}/ under the current folder). Fixed seeds and step counts: the same numbers "
        "on every machine up to float rounding.",
    )
    parser.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"train both parts for N steps instead of {EXAMPLE_STEPS} (README example) "
        f"and {EARTH_STEPS} (quick Earth run)",
    )
    parser.add_argument("--skip-earth", action="store_true", help="run the README example only")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch threads (default 1: these small models gain little from more, and on a busy "
        "machine extra threads that wait for each other made the demo 5x slower)",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    # Imported here so that `--help` answers without importing torch.
    from benchmarks.earth_data import load_earth_latlon
    from benchmarks.splits import split_sizes

    # Fail on missing data before announcing minutes of training.
    n_train = split_sizes(len(load_earth_latlon("volcano")))[0]
    steps = EXAMPLE_STEPS if args.steps is None else args.steps
    code = example_code(args.steps)
    print("The README example (Riemannian flow matching on S^2):\n")
    print(code)
    seconds = max(1, round(EXAMPLE_SECONDS * steps / EXAMPLE_STEPS))
    print(
        f"Training a 256x4 MLP flow on the {n_train} volcano training events for {steps} steps "
        f"(about {seconds} s on one CPU core), then computing the exact test NLL...",
        flush=True,
    )
    start = time.perf_counter()
    linecache.cache[_EXAMPLE_FILENAME] = (len(code), None, code.splitlines(keepends=True), _EXAMPLE_FILENAME)
    exec(compile(code, _EXAMPLE_FILENAME, "exec"), {"__name__": "__demo__"})
    print(f"(the README example took {time.perf_counter() - start:.0f} s)")
    if args.skip_earth:
        return 0

    from benchmarks import earth

    earth_steps = EARTH_STEPS if args.steps is None else args.steps
    earth_args = earth_argv(earth_steps, args.threads)
    print(f"\nQuick Earth benchmark: python -m benchmarks earth {' '.join(earth_args)}")
    seconds = max(1, round(earth_steps / _EARTH_STEPS_PER_SECOND))
    print(
        f"(a 128x3 MLP flow on volcano for {earth_steps} steps in float32, about {seconds} s of training on one "
        f"CPU core with progress on stderr, then the exact test NLL and a Mollweide plot in "
        f"{EARTH_OUT}/volcano/seed0)\n",
        flush=True,
    )
    return earth.main(earth_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
