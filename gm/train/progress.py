"""How the trainer reports on stderr: a tqdm bar with the running loss on a terminal (or in a
Jupyter kernel), a plain line every few seconds in logs and pipes, one-off messages only with
``progress=False``, and nothing from ranks other than 0."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from gm.train.config import TrainConfig, describe_budget

__all__ = ["is_interactive"]


def _clock(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from an hour on."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def is_interactive(stream: TextIO) -> bool:
    """Whether ``stream`` shows a live display: a terminal, or a Jupyter kernel's output (not a
    tty, but rendered as a widget by ``tqdm.auto``)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a file-like object without isatty, or a closed one
        tty = False
    return tty or "ipykernel" in sys.modules


class _Progress:
    """How :func:`gm.train.train` reports on stderr. This base class prints only one-off messages
    (such as a resumption), for ``progress=False``; subclasses add the running progress."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.stream = sys.stderr  # looked up now: test harnesses and notebooks replace it

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, step: int, elapsed: float) -> None:
        """Training begins (or resumes) at ``step`` with ``elapsed`` seconds already spent."""

    def update(self, step: int, elapsed: float, fraction: float, loss: float | None, best_val: float | None) -> None:
        """``step`` is done; ``fraction``: the share of the budget used, as the lr schedule sees it."""

    def close(self, step: int, elapsed: float, fraction: float, loss: float | None, best_val: float | None) -> None:
        """Training has ended."""


class _SilentProgress(_Progress):
    """Ranks other than 0 of a data-parallel run: rank 0 speaks for the run."""

    def message(self, text: str) -> None:
        pass


class _BarProgress(_Progress):
    """A tqdm bar with the running loss and the best validation value, for terminals."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.bar: Any = None  # a tqdm bar from start() on

    def message(self, text: str) -> None:
        if self.bar is None:
            super().message(text)
        else:
            self.bar.write(text, file=self.stream)

    def start(self, step: int, elapsed: float) -> None:
        # Imported here so that progress=False needs no tqdm.
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.config.max_steps, initial=step, desc="train", leave=False, dynamic_ncols=True, file=self.stream
        )

    def update(self, step: int, elapsed: float, fraction: float, loss: float | None, best_val: float | None) -> None:
        self.bar.update(1)
        self.bar.set_postfix(
            ordered_dict={
                "loss": "-" if loss is None else f"{loss:.4f}",
                f"best {self.config.val_name}": "-" if best_val is None else f"{best_val:.4f}",
            },
            refresh=False,
        )

    def close(self, step: int, elapsed: float, fraction: float, loss: float | None, best_val: float | None) -> None:
        self.bar.close()


class _LineProgress(_Progress):
    """A plain line every ``config.progress_every_s`` seconds, for logs and pipes where a bar's
    carriage returns would pile up as one enormous line; plus a first and a last line."""

    def start(self, step: int, elapsed: float) -> None:
        self.first_step, self.first_elapsed = step, elapsed
        self.last_step, self.last_elapsed = step, elapsed
        where = "starting" if step == 0 else f"continuing from step {step}"
        self.message(f"train: {where}, budget {describe_budget(self.config.max_steps, self.config.max_minutes)}")

    def _line(
        self, step: int, elapsed: float, fraction: float, rate: float, loss: float | None, best_val: float | None
    ) -> str:
        c = self.config
        if c.max_steps is not None:
            where = f"step {step}/{c.max_steps} ({100 * fraction:.1f}%)"
        else:
            where = f"step {step} ({100 * fraction:.1f}% of {c.max_minutes:g} min)"
        return (
            f"{where}, {rate:.1f} it/s, loss {'-' if loss is None else f'{loss:.4f}'}, "
            f"best {c.val_name} {'-' if best_val is None else f'{best_val:.4f}'}, {_clock(elapsed)} elapsed"
        )

    def update(self, step: int, elapsed: float, fraction: float, loss: float | None, best_val: float | None) -> None:
        window = elapsed - self.last_elapsed
        if window < self.config.progress_every_s:
            return
        # The rate over the last window, not since the start: it shows slow-downs (validation,
        # a busy machine) when they happen.
        rate = (step - self.last_step) / window
        self.message("train: " + self._line(step, elapsed, fraction, rate, loss, best_val))
        self.last_step, self.last_elapsed = step, elapsed

    def close(self, step: int, elapsed: float, fraction: float, loss: float | None, best_val: float | None) -> None:
        spent = elapsed - self.first_elapsed
        rate = (step - self.first_step) / spent if spent > 0 else 0.0
        self.message("train: done, " + self._line(step, elapsed, fraction, rate, loss, best_val))


def _progress_reporter(config: TrainConfig, main: bool = True) -> _Progress:
    if not main:
        return _SilentProgress(config)
    if not config.progress:
        return _Progress(config)
    bar = is_interactive(sys.stderr) if config.progress_bar is None else config.progress_bar
    return _BarProgress(config) if bar else _LineProgress(config)
