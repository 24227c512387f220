"""``make demo`` on a fresh clone: how long until the first job runs, and until the demo ends.

Clones the repository (its committed HEAD) into a temporary folder, so the clone has no
``.venv``, and runs ``make demo`` there, timing each line of its output: the set-up (creating
``.venv`` and installing what running needs) ends when the demo prints its first line, and the
first job runs when the progress table first shows ``InProgress``. Target: the first job runs
within 45 s of ``make demo`` starting.

    .venv/bin/python benchmarks/make_demo_cold.py                  # pip's cache as it is
    .venv/bin/python benchmarks/make_demo_cold.py --no-pip-cache   # PIP_NO_CACHE_DIR=1

With ``--no-pip-cache`` every wheel is fetched again from the package index (on the project's
machines a local mirror, so this measures unpacking and installing rather than the network).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 45.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="repository to clone")
    parser.add_argument("--no-pip-cache", action="store_true", help="set PIP_NO_CACHE_DIR=1")
    parser.add_argument("--keep", action="store_true", help="keep the clone and print its path")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="batchrock-cold-"))
    clone = folder / "batchrock"
    try:
        subprocess.run(
            ["git", "clone", "--quiet", str(args.repo), str(clone)], check=True, timeout=120
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHROCK_", "VIRTUAL"))}
        env["BATCHROCK_DATA_DIR"] = str(folder / "demo-data")  # removed with the clone
        if args.no_pip_cache:
            env["PIP_NO_CACHE_DIR"] = "1"
        return timed_make_demo(clone, env)
    finally:
        if args.keep:
            print(f"clone kept in {clone}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def timed_make_demo(clone: Path, env: dict[str, str]) -> int:
    start = time.monotonic()
    setup_s = first_job_s = None
    proc = subprocess.Popen(
        ["make", "demo"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.monotonic() - start
        sys.stdout.write(f"{now:6.1f}  {line}")
        if setup_s is None and line.startswith("Starting batchrock serve"):
            setup_s = now
        if first_job_s is None and " InProgress " in line:
            first_job_s = now
    code = proc.wait()
    total_s = time.monotonic() - start
    print(
        f"\nmake demo: exit {code}; set-up {_s(setup_s)}, first job InProgress {_s(first_job_s)}, "
        f"done {total_s:.1f} s (target: first job within {TARGET_S:.0f} s)"
    )
    if code or first_job_s is None or first_job_s > TARGET_S:
        print("missed the target")
        return 1
    return 0


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    raise SystemExit(main())
