"""The ``rdfm`` command and what every command line of rdfm shares.

``rdfm`` (a console script of the package) gathers the user commands that the packages register
under the entry-point group ``rdfm.commands``: each entry names a module with
``register(subcommands)``, which adds its subcommands (``argparse`` sub-parsers whose default
``run(args) -> int`` does the work). ``proteins.commands``, ``dfm.commands`` and ``rfm.commands``
register the protein, text and sphere commands, so the commands live beside the code they call and
this module depends on none of them.

Shared with ``python -m benchmarks``: ``--<field>`` overrides of a config dataclass, the part of a
config that a resumed checkpoint must match, the run options and the training budget
(``--minutes`` / ``--steps``), and errors the user can fix reported as one line on stderr with exit
code 2 (:func:`run_reporting_errors`), never as a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from importlib import metadata
from typing import Any


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_overrides(
    parser: argparse.ArgumentParser, config: Any, exclude: frozenset[str] | set[str] = frozenset()
) -> None:
    """One option per field of the dataclass instance ``config`` (``hidden`` -> ``--hidden``),
    but those in ``exclude``, typed like the field's default (booleans take true/false); unset
    options stay ``None``."""
    for f in fields(config):
        if f.name in exclude:
            continue
        default = getattr(config, f.name)
        kind = _parse_bool if isinstance(default, bool) else type(default)
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", type=kind, default=None, help=f"override the default {f.name} ({default})"
        )


def apply_config_overrides(config: Any, args: argparse.Namespace) -> Any:
    """``config`` with every field given on the command line replaced."""
    return replace(
        config, **{f.name: getattr(args, f.name) for f in fields(config) if getattr(args, f.name, None) is not None}
    )


# Config fields that only say how a run is evaluated or reported; changing them must not stop a
# run from resuming its checkpoint.
EVALUATION_FIELDS = frozenset(
    {
        "eval_every_minutes",
        "val_steps",
        "selection_points",
        "test_steps",
        "grid_power",
        "eval_chunks",
        "elbo_draws",
        "sample_steps",
        "samples_per_length",
        "rotation_rate",
        "n_samples",
    }
)


def training_settings(config: Any, **extra: Any) -> dict[str, Any]:
    """The fields of the dataclass ``config`` that define a training run (all but
    :data:`EVALUATION_FIELDS`), plus ``extra`` (dataset, device-independent choices); passed as
    ``gm.train.train(run_config=...)`` so a checkpoint only resumes under the same settings."""
    return {**{k: v for k, v in asdict(config).items() if k not in EVALUATION_FIELDS}, **extra}


class CommandLineError(Exception):
    """A problem with what the user asked for, reported as one line and exit code 2 by ``rdfm`` and
    ``python -m benchmarks`` (no traceback)."""


def add_run_arguments(
    parser: argparse.ArgumentParser, *, minutes: float, out: str | None, out_help: str | None = None
) -> None:
    """The options every training command shares: the budget (``--minutes``, ``--steps``), where
    results go (``out``: the default folder; None: ``--out DIR`` is required), the device and
    threads, resuming and progress output, compiling."""
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help=f"wall-clock training budget per run (default {minutes:g}; with --steps: no time limit unless given)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimiser-step budget per run: a result that does not depend on the machine's speed "
        "(validation then runs every steps/evaluations steps instead of every so many minutes); in "
        "float32 the same on every machine up to rounding",
    )
    if out is None:
        parser.add_argument(
            "--out", required=True, metavar="DIR", help="the run folder (checkpoint, metrics, loss plot; resumed)"
        )
    else:
        parser.add_argument("--out", default=out, metavar="DIR", help=out_help or f"where results go (default {out})")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--restart", action="store_true", help="start afresh, ignoring existing checkpoints, instead of resuming"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=["default", "reduce-overhead", "max-autotune"],
        metavar="MODE",
        help="torch.compile the model for training (TrainConfig(compile=...)); MODE: default, "
        "reduce-overhead (CUDA graphs) or max-autotune. Off by default: the compilation "
        "(seconds on a GPU, minutes for the IPA network on a CPU) pays on long runs",
    )


@dataclass(frozen=True)
class Budget:
    """A run's training budget and evaluation cadence, for :class:`gm.train.TrainConfig`.

    With a step budget, validation (and so model selection) happens every ``eval_every`` steps,
    not every so many minutes, so the whole run is independent of the machine's speed."""

    max_minutes: float | None
    max_steps: int | None
    eval_every: int | None
    eval_every_minutes: float | None
    compile: bool | str = False  # TrainConfig.compile (--compile)
    eval_at_minutes: tuple[float, ...] = ()  # TrainConfig.eval_at_minutes (e.g. --curve's marks)

    def train_fields(self) -> dict[str, Any]:
        """The budget, validation cadence and compile setting as keyword arguments of ``TrainConfig``."""
        return {
            "max_minutes": self.max_minutes,
            "max_steps": self.max_steps,
            "eval_every": self.eval_every,
            "eval_every_minutes": self.eval_every_minutes,
            "eval_at_minutes": self.eval_at_minutes,
            "compile": self.compile,
        }

    def train_config(self, config: Any, **settings: Any) -> Any:
        """The :class:`gm.train.TrainConfig` of a run under this budget
        (:meth:`gm.train.TrainConfig.from_config`): the optimisation settings of the dataclass
        ``config``, the budget (:meth:`train_fields`) and ``settings`` (e.g. ``seed``,
        ``progress``), the last two taking precedence."""
        from gm.train import TrainConfig

        return TrainConfig.from_config(config, **{**self.train_fields(), **settings})

    def record_fields(self) -> dict[str, Any]:
        """``budget_minutes`` / ``budget_steps`` for the results record (only those set)."""
        fields_ = {}
        if self.max_minutes is not None:
            fields_["budget_minutes"] = self.max_minutes
        if self.max_steps is not None:
            fields_["budget_steps"] = self.max_steps
        return fields_

    def describe(self) -> str:
        """``"2000 steps"``, ``"10 min"`` or ``"2000 steps or 10 min"``, for log lines."""
        from gm.train.config import describe_budget

        return describe_budget(self.max_steps, self.max_minutes)

    def scaled(self, factor: int) -> Budget:
        """The budget of ``factor`` runs in one (e.g. a joint model of several classes)."""
        return Budget(
            None if self.max_minutes is None else self.max_minutes * factor,
            None if self.max_steps is None else self.max_steps * factor,
            None if self.eval_every is None else self.eval_every * factor,
            self.eval_every_minutes,
            self.compile,
            tuple(m * factor for m in self.eval_at_minutes),
        )


def run_budget(
    minutes: float | None,
    steps: int | None,
    *,
    default_minutes: float,
    eval_every_minutes: float,
    evaluations: int | None = None,
    compile: str | None = None,
) -> Budget:
    """The budget of ``--minutes`` / ``--steps``: minutes alone (default ``default_minutes``),
    steps alone, or both (whichever ends first).

    With steps, validation runs ``evaluations`` times, by default as many times as a time
    budget of ``minutes`` (or ``default_minutes``) would have run it every
    ``eval_every_minutes``; a script whose cadence is a fixed count of evaluations (text: 5)
    passes it instead. ``compile``: ``--compile``'s mode (``None``: off; ``"default"``: on).

    Raises:
        CommandLineError: for a budget that is not positive.
    """
    setting: bool | str = False if compile is None else (True if compile == "default" else compile)
    if minutes is not None and not minutes > 0:
        raise CommandLineError(f"--minutes must be > 0, got {minutes:g}")
    if steps is None:
        return Budget(default_minutes if minutes is None else minutes, None, None, eval_every_minutes, setting)
    if steps < 1:
        raise CommandLineError(f"--steps must be >= 1, got {steps}")
    if evaluations is None:
        nominal = default_minutes if minutes is None else minutes
        evaluations = round(nominal / eval_every_minutes)
    return Budget(minutes, steps, max(1, math.ceil(steps / max(1, evaluations))), None, setting)


def add_snapshots_argument(parser: argparse.ArgumentParser, option: str = "--snapshots") -> None:
    """``--snapshots F [F ...]`` (or ``option``): keep the EMA weights at these fractions of the
    training budget (:class:`gm.train.BudgetSnapshots`), the models of shorter runs from one run."""
    parser.add_argument(
        option,
        type=float,
        nargs="+",
        default=None,
        metavar="F",
        help="keep the EMA weights at these fractions of the budget (e.g. 0.25 0.5 1) in snapshots.pt beside the "
        "checkpoint: the models of shorter runs, from one run (a constant learning rate after warmup unless "
        "--min-lr-ratio is given)",
    )


def budget_marks(budget: Budget, fractions: Sequence[float] | None, option: str) -> tuple[Budget, list[float], str]:
    """The budget marks of ``--snapshots`` / ``--curve`` (``option``, named in errors): minutes of
    a time budget, or optimiser steps of a step budget, and the budget that validates, and so
    takes a snapshot, at each mark (minutes: ``eval_at_minutes``, at the first step past each
    mark; steps: every ``gcd`` of the marks). Returns ``(budget, marks, unit)``, unit
    ``"minutes"`` or ``"steps"`` (the ``unit`` of :class:`gm.train.BudgetSnapshots`).

    Raises:
        CommandLineError: for a fraction outside (0, 1].
    """
    if not fractions:
        return budget, [], "minutes"
    if any(not 0 < f <= 1 for f in fractions):
        raise CommandLineError(f"{option} fractions must be in (0, 1], got {list(fractions)}")
    fractions = sorted(set(fractions))
    if budget.max_steps is not None:
        steps = sorted({max(1, round(f * budget.max_steps)) for f in fractions})
        return replace(budget, eval_every=math.gcd(*steps)), [float(m) for m in steps], "steps"
    assert budget.max_minutes is not None
    marks = [f * budget.max_minutes for f in fractions]
    # the trainer validates at the first step past each mark, whatever its cadence
    return replace(budget, eval_at_minutes=tuple(marks)), marks, "minutes"


def check_device(device: str) -> None:
    """A :class:`CommandLineError` for ``--device cuda`` where torch sees no CUDA GPU (or, under
    ``torchrun``, fewer GPUs than local ranks). Under ``torchrun`` it makes this rank's GPU
    (``LOCAL_RANK``) the current device, so that ``"cuda"`` means one GPU per rank."""
    import torch

    from gm.train.distributed import launched_by_torchrun, local_device

    if device == "cuda" and not torch.cuda.is_available():
        reason = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise CommandLineError(f"--device cuda: {reason} (torch {torch.__version__}); use --device cpu")
    if device == "cuda" and launched_by_torchrun():
        index = local_device(device).index
        if index >= torch.cuda.device_count():
            raise CommandLineError(
                f"--device cuda: local rank {index} needs a GPU of its own, but "
                f"{torch.cuda.device_count()} are visible; lower --nproc_per_node"
            )
        torch.cuda.set_device(index)


def set_threads(threads: int | None) -> None:
    """``--threads``: ``torch.set_num_threads`` (None: torch's default), a one-line error below 1."""
    if threads is None:
        return
    if threads < 1:
        raise CommandLineError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def rank_batch(batch: int) -> int:
    """This process's share of the global ``--batch`` (all of it unless under ``torchrun``):
    the batch size of a run does not depend on how many processes train it."""
    from gm.train.distributed import rank_batch_size, world

    try:
        return rank_batch_size(batch)
    except ValueError:
        raise CommandLineError(
            f"--batch {batch} must be a multiple of the number of processes ({world().size})"
        ) from None


def as_budget(budget: Budget | float, eval_every_minutes: float) -> Budget:
    """A :class:`Budget` from itself or from a number of minutes."""
    if isinstance(budget, Budget):
        return budget
    return Budget(float(budget), None, None, eval_every_minutes)


# ------------------------------------------------------------------------------------------------
# running a command: errors the user can fix as one line, torchrun ranks, the ``rdfm`` entry point

#: The entry-point group whose modules add subcommands to ``rdfm`` (see the module docstring).
COMMAND_GROUP = "rdfm.commands"

EXAMPLES = """examples:
  rdfm dataset build my_pdbs/ -o structures.npz         # PDB/mmCIF folder -> structure dataset
  rdfm backbones train --data structures.npz --out runs/bb --minutes 30
  rdfm backbones sample --checkpoint runs/bb/checkpoint.pt --lengths 64 100 --n 8 --out samples/
  rdfm codesign train --data structures.npz --out runs/cd --minutes 30
  rdfm design 1abc.pdb --checkpoint runs/cd/checkpoint.pt
  rdfm fold MKTAYIAKQR --checkpoint runs/cd/checkpoint.pt --out folded/
  rdfm generate --length 80 --checkpoint runs/cd/checkpoint.pt --out generated/
  rdfm text train --corpus book.txt --out runs/book --minutes 10
  rdfm text sample --run runs/book --prompt "In the beginning"
  rdfm earth fit quakes.csv --out runs/quakes --minutes 5

Each command's --help lists its options and examples."""


def refused_resume_message(error: BaseException) -> str | None:
    """The message for :class:`gm.train.checkpoint.CheckpointMismatchError` (a checkpoint made
    under other settings), or ``None`` for another error.

    The module is looked up, not imported: if no command has imported it, it cannot have raised,
    and commands such as ``table`` then start without importing torch."""
    checkpoint = sys.modules.get("gm.train.checkpoint")
    if checkpoint is None or not isinstance(error, checkpoint.CheckpointMismatchError):
        return None
    lines = [f"error: {error.checkpoint_path} was made with other settings:"]
    lines += [f"  {name}: checkpoint {saved!r}, now {now!r}" for name, saved, now in error.differences]
    lines.append("rerun with --restart to start afresh, or pick a new --out to keep both runs")
    return "\n".join(lines)


def _leave_process_group() -> None:
    """Under torchrun, on success: wait until every rank is done (rank 0 evaluates after the
    others finish training), then take the process group down (``gm.train.distributed.finish``).
    A rank that fails just exits, and torchrun stops the others."""
    if "gm.train.distributed" in sys.modules:
        sys.modules["gm.train.distributed"].finish()


def run_reporting_errors(command: Callable[[], int | None]) -> int:
    """Run ``command()`` and return its exit code, reporting the errors a user can fix as short
    messages on stderr with exit code 2: :class:`CommandLineError`, a missing file
    (``FileNotFoundError``: the data loaders' messages say where they looked and how to get it)
    and a checkpoint made under other settings. Other exceptions are bugs and keep their traceback.

    Under ``torchrun`` the ranks other than 0 print only their errors (stderr), and a successful
    run leaves the process group once every rank is done."""
    if os.environ.get("RANK", "0") != "0":
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the process's stdout for the rest of its life
    try:
        code = int(command() or 0)
        _leave_process_group()
        return code
    except CommandLineError as error:
        print(f"error: {error}", file=sys.stderr)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
    except ValueError as error:
        message = refused_resume_message(error)
        if message is None:
            raise
        print(message, file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted (a training run resumes from its last checkpoint)", file=sys.stderr)
        return 130
    return 2


def command_modules() -> list[Any]:
    """The modules registered under :data:`COMMAND_GROUP`, in the order of their entry names."""
    entries = sorted(metadata.entry_points(group=COMMAND_GROUP), key=lambda entry: entry.name)
    return [entry.load() for entry in entries]


def build_parser(modules: Sequence[Any] | None = None) -> argparse.ArgumentParser:
    """The ``rdfm`` parser with the subcommands of ``modules`` (default: :func:`command_modules`)."""
    parser = argparse.ArgumentParser(
        prog="rdfm",
        description="Riemannian and discrete flow matching: train and sample protein backbones, design "
        "and fold sequences, train masked text models, fit densities on the sphere.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    try:
        version = metadata.version("rdfm")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        version = "unknown"
    parser.add_argument("--version", action="version", version=f"rdfm {version}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in command_modules() if modules is None else modules:
        module.register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``rdfm [COMMAND] [options]``: run one user command; returns its exit code (2 for errors the
    user can fix, see :func:`run_reporting_errors`)."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    return run_reporting_errors(lambda: args.run(args))


def add_subcommand(
    subcommands: Any, name: str, run: Callable[[argparse.Namespace], int], *, help: str, examples: str, **kwargs: Any
) -> argparse.ArgumentParser:
    """A subcommand ``name`` of ``subcommands`` (an ``add_subparsers`` result) that calls
    ``run(args)``, with its one-line ``help`` in the list of commands and ``examples`` at the end
    of its own ``--help``."""
    parser = subcommands.add_parser(
        name,
        help=help,
        description=kwargs.pop("description", help),
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )
    parser.set_defaults(run=run)
    return parser
