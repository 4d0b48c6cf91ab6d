"""Dispatch ``python -m benchmarks <name> [args...]`` to ``benchmarks.<module>.main(args)``.

Problems the user can fix (a bad option, missing data, a checkpoint made under other
settings) are reported as a short message on stderr with exit code 2, not as a traceback."""

from __future__ import annotations

import importlib
import os
import sys

from benchmarks.cli import CommandLineError

# name -> (module, one-line description). Each module exposes ``main(argv: list[str]) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("benchmarks.demo", "quick end-to-end demo (what `make demo` runs)"),
    "speed": ("benchmarks.speed", "speed ratios against the flow_matching library"),
    "earth": ("benchmarks.earth", "Earth event datasets on S^2"),
    "proteins": ("benchmarks.proteins", "protein backbone dihedrals on the torus"),
    "backbones": ("benchmarks.backbones", "protein backbone generation on SE(3)^N (structures, PDB output)"),
    "codesign": ("benchmarks.codesign", "structure and sequence together: co-design, inverse folding, folding"),
    "so3": ("benchmarks.so3", "mixtures of wrapped normals on SO(3)"),
    "text": ("benchmarks.text", "masked discrete flow matching vs autoregressive on text"),
    "toy2d": ("benchmarks.toy2d", "the guide's quick tour in R^2: schedulers, OT pairs, ODE/SDE, vs flow_matching"),
    "scaling": ("benchmarks.scaling", "data-parallel steps/s and efficiency at 1, 2, ... processes (torchrun)"),
    "data": ("benchmarks.datasets", "build / download datasets (`data proteins`, `data earth`)"),
    "download": ("benchmarks.datasets", "download the Earth datasets (alias of `data earth --download`)"),
    "table": ("benchmarks.table", "turn results JSONs into the README's markdown tables"),
}


def _usage() -> str:
    lines = ["usage: python -m benchmarks <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def _refused_resume_message(error: ValueError) -> str | None:
    """The message for ``gm.training.CheckpointMismatchError``, or ``None`` for another error.

    ``gm.training`` is looked up, not imported: if no command has imported it, it cannot have
    raised, and commands such as ``table`` then start without importing torch."""
    training = sys.modules.get("gm.training")
    if training is None or not isinstance(error, training.CheckpointMismatchError):
        return None
    lines = [f"error: {error.checkpoint_path} was made with other settings:"]
    lines += [f"  {name}: checkpoint {saved!r}, now {now!r}" for name, saved, now in error.differences]
    lines.append("rerun with --restart to start afresh, or pick a new --out to keep both runs")
    return "\n".join(lines)


def _leave_process_group() -> None:
    """Under torchrun, on success: wait until every rank is done (rank 0 evaluates after the
    others finish training), then take the process group down (``gm.distributed.finish``). A
    rank that fails just exits, and torchrun stops the others."""
    if "gm.distributed" in sys.modules:
        sys.modules["gm.distributed"].finish()


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (2 for the user's errors, see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") != "0":
        # A data-parallel run under torchrun: rank 0 prints the run's output, the other ranks
        # only their errors (stderr).
        sys.stdout = open(os.devnull, "w")
    module = importlib.import_module(COMMANDS[name][0])
    if name == "download":
        rest = ["earth", "--download", *rest]
    try:
        code = int(module.main(rest) or 0)
        _leave_process_group()
        return code
    except CommandLineError as error:
        print(f"error: {error}", file=sys.stderr)
    except FileNotFoundError as error:
        # The data loaders' messages say which file is missing, where they looked and how to
        # get it; a traceback would bury that.
        print(f"error: {error}", file=sys.stderr)
    except ValueError as error:
        message = _refused_resume_message(error)
        if message is None:
            raise
        print(message, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
