"""The recorded AWS CLI v2 cases (shared/tools/awscli-oracle) report no difference.

Three recorded cases cannot match by design and are checked by their own tests instead:
``g-version`` (the version line names batchrock's version; see test_entry.py),
``g-no-args`` (``batchrock`` alone prints batchrock's usage and exits 0 where ``aws`` answers a
usage error; see test_entry.py and docs/cli.md) and
``g-cli-auto-prompt`` (the golden run came from an AWS CLI source checkout that lacks the
auto-prompt index and failed with ``no such table: param_table``; see test_terminal.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import BATCHROCK, ORACLE, need_oracle

GOLDEN = "awscli-2.36.7-source.jsonl"
DIFFERENT_BY_DESIGN = {"g-version", "g-no-args", "g-cli-auto-prompt"}


def test_recorded_aws_cli_v2_cases_show_no_difference(tmp_path: Path) -> None:
    need_oracle()
    out = tmp_path / "results"
    runner = str(ORACLE / "run_cases.py")
    run = subprocess.run(
        [sys.executable, runner, "run", "--start-stub", "--cli", str(BATCHROCK), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    diff = subprocess.run(
        [
            sys.executable,
            runner,
            "diff",
            str(ORACLE / "golden" / GOLDEN),
            str(out),
            "--prog",
            "batchrock",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    differing = set(re.findall(r"^DIFF ([^/\s]+)/", diff.stdout, re.M))
    unexpected = differing - DIFFERENT_BY_DESIGN
    assert not unexpected, diff.stdout[-6000:]
    cases = {p.name for p in out.iterdir() if p.is_dir()}
    assert len(cases) >= 170, "the oracle ran fewer cases than it records"
