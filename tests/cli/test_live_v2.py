"""Optional: random command lines against a live AWS CLI v2 and batchrock, byte for byte.

Set ``BATCHROCK_AWSCLI_V2`` to an AWS CLI v2 command (e.g. a source checkout run as
``python -m awscli``) to run it; the recorded oracle (test_oracle.py) needs no v2 install.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import BATCHROCK, ORACLE, need_oracle

V2 = os.environ.get("BATCHROCK_AWSCLI_V2")

OPTIONS = {
    "--status-equals": ["Completed", "InProgress", "Bogus"],
    "--name-contains": ["job", "1", ""],
    "--sort-order": ["Ascending", "Descending"],
    "--submit-time-after": ["2024-01-01T12:00:00Z", "2024-01-01", "bad-date", "1704110400.5"],
    "--page-size": ["1", "2", "0", "x"],
    "--max-items": ["1", "3", "0", "-1"],
    "--starting-token": ["garbage", "abc___1"],
    "--output": ["json", "text", "table", "yaml", "yaml-stream", "off"],
    "--query": ["invocationJobSummaries[].jobName", "length(invocationJobSummaries)", "NextToken"],
    "--cli-input-json": ['{"statusEquals":"Completed"}', '{"maxResults":2}', "[]"],
}


def _cases(n: int) -> list[dict[str, object]]:
    rng = random.Random(int(os.environ.get("BATCHROCK_LIVE_SEED", "1")))
    cases = []
    for i in range(n):
        args: list[str] = []
        for opt in rng.sample(list(OPTIONS), rng.randint(1, 4)):
            args += [opt, rng.choice(OPTIONS[opt])]
        cases.append(
            {
                "name": f"live{i:03d}",
                "args": [
                    "--endpoint-url",
                    "{endpoint}",
                    "bedrock",
                    "list-model-invocation-jobs",
                    *args,
                ],
                "fixture": rng.choice(["gen:7", "two", "unicode"]),
            }
        )
    return cases


def _run(cli: str, cases_file: Path, out: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            str(ORACLE / "run_cases.py"),
            "run",
            "--start-stub",
            "--cli",
            cli,
            "--cases-file",
            str(cases_file),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )


@pytest.mark.external
@pytest.mark.skipif(not V2, reason="BATCHROCK_AWSCLI_V2 (an AWS CLI v2 command) is not set")
def test_random_command_lines_match_a_live_aws_cli_v2(tmp_path: Path) -> None:
    need_oracle()
    assert V2 is not None
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps(_cases(int(os.environ.get("BATCHROCK_LIVE_CASES", "40")))))
    _run(V2, cases_file, tmp_path / "aws")
    _run(shlex.quote(str(BATCHROCK)), cases_file, tmp_path / "ours")
    differing = []
    for case in json.loads(cases_file.read_text()):
        name = str(case["name"])
        for part in ("stdout", "stderr", "rc", "requests.json"):
            theirs = (tmp_path / "aws" / name / part).read_bytes()
            ours = re.sub(rb"\bbatchrock\b", b"aws", (tmp_path / "ours" / name / part).read_bytes())
            if part == "requests.json":
                theirs = re.sub(rb'"user-agent-prefix": "[^"]*"', b"", theirs)
                ours = re.sub(rb'"user-agent-prefix": "[^"]*"', b"", ours)
            if theirs != ours:
                differing.append(f"{name}/{part}")
    assert not differing, differing
