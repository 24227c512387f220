"""`batchrock demo` runs end to end: four jobs, one stopped, one failed, a manifest shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)


def test_demo_runs_every_job_to_a_final_state(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHROCK_")}
    data_dir = tmp_path / "demo-data"
    result = subprocess.run(
        [sys.executable, "-m", "batchrock.admin", "demo", "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    listing = out.split("aws bedrock list-model-invocation-jobs:", 1)[1]
    rows = {line.split()[0]: line.split()[1] for line in listing.splitlines()[2:6]}
    assert rows == {
        "demo-claude": "Completed",
        "demo-embeddings": "Completed",
        "demo-nova-stopped": "Stopped",
        "demo-bad-input": "Failed",
    }
    assert "Line 42 of the input file s3://demo-bucket/input/bad/questions.jsonl" in listing
    assert '"totalRecordCount": 300' in out and '"successRecordCount": 300' in out
    outputs = list((data_dir / "s3" / "demo-bucket" / "output").glob("*/part-1.jsonl.out"))
    assert len(outputs) == 1
