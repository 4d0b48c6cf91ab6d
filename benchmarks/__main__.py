"""Dispatch ``python -m benchmarks <name> [args...]`` to ``benchmarks.<module>.main(args)``.

Problems the user can fix (a bad option, missing data, a checkpoint made under other
settings) are reported as a short message on stderr with exit code 2, not as a traceback."""

from __future__ import annotations

import importlib
import sys

from gm.cli import run_reporting_errors

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
    module = importlib.import_module(COMMANDS[name][0])
    if name == "download":
        rest = ["earth", "--download", *rest]
    return run_reporting_errors(lambda: module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
