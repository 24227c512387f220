"""Run every benchmark in this folder with its default arguments (``make bench``).

Each benchmark is its own script (see its docstring for options); this runs them one after the
other in fresh interpreters, so one's warm caches do not flatter the next, and reports which
missed their targets.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("*.py")):
        if script.name == Path(__file__).name or script.name.startswith("_"):
            continue
        print(f"== {script.name}", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"== {script.name}: exit {code} in {time.monotonic() - start:.1f} s\n", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print("missed targets or failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
