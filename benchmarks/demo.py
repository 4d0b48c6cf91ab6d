"""``python -m benchmarks demo``: run the README's rfm example (the python block after the
``<!-- demo`` marker, so the README and the demo cannot drift apart), then the quick Earth
benchmark (``python -m benchmarks earth --quick``: train, exact test NLL, Mollweide plot)."""
from __future__ import annotations

import re
import sys
import time

from benchmarks.paths import PROJECT_ROOT


def readme_demo_code() -> str:
    readme = PROJECT_ROOT / "README.md"
    if not readme.exists():
        raise FileNotFoundError(f"README.md not found at {readme}; the demo runs the README's example")
    match = re.search(r"<!-- demo.*?-->\s*```python\n(.*?)```", readme.read_text(), flags=re.S)
    if match is None:
        raise ValueError(f"no python block after a '<!-- demo' marker in {readme}")
    return match.group(1)


def main(argv: list[str]) -> int:
    code = readme_demo_code()
    print("Running the README example (rfm on the volcano dataset):\n")
    print(code)
    start = time.perf_counter()
    exec(compile(code, "README.md:demo", "exec"), {"__name__": "__demo__"})
    print(f"\n(demo example took {time.perf_counter() - start:.0f} s)")
    if "--skip-earth" in argv:
        return 0
    from benchmarks import earth

    print("\nQuick Earth benchmark: python -m benchmarks earth --quick --restart --out runs/demo\n")
    return earth.main(["--quick", "--restart", "--out", "runs/demo"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
