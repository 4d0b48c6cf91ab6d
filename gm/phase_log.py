"""Progress lines for the long phases of an evaluation (sampling, baselines, alignments): a line
on stderr when a phase starts, then at most one every ``every_s`` seconds, in the trainer's
plain-line style, so that minutes of work are never silent and logs get no carriage-return
flood."""

from __future__ import annotations

import math
import sys
import time


class PhaseLog:
    """Rate-limited progress lines ``[<prefix>] <text>`` on stderr.

    Args:
        prefix: what the lines are about (e.g. ``"codesign"``).
        enabled: print nothing when false (a ``--no-progress`` option).
        every_s: the least time between two :meth:`update` lines.
    """

    def __init__(self, prefix: str, enabled: bool = True, every_s: float = 10.0) -> None:
        if not every_s >= 0:
            raise ValueError(f"every_s must be >= 0, got {every_s}")
        self.prefix, self.enabled, self.every_s = prefix, enabled, every_s
        self.last = -math.inf

    def start(self, text: str) -> None:
        """Print ``text`` now (a phase starts or ends)."""
        self.last = time.perf_counter()
        if self.enabled:
            print(f"[{self.prefix}] {text}", file=sys.stderr, flush=True)

    def update(self, text: str) -> None:
        """Print ``text`` if the last line is at least ``every_s`` seconds old."""
        if time.perf_counter() - self.last >= self.every_s:
            self.start(text)


__all__ = ["PhaseLog"]
