"""The AWS CLI (v1, from PyPI) against a real server: create, get, list and stop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess

AWS = Path(sys.executable).parent / "aws"


def aws(server: ServerProcess, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
            "HOME": str(home),
        }
    )
    return subprocess.run(
        [str(AWS), "--endpoint-url", server.url, "bedrock", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.skipif(not AWS.exists() and not shutil.which("aws"), reason="awscli not installed")
def test_aws_cli_create_get_list_stop(api_server: ServerProcess, tmp_path: Path) -> None:
    arns = []
    for i in range(7):
        created = _json(
            aws(
                api_server,
                "create-model-invocation-job",
                "--job-name",
                f"cli-x-{i}",
                "--role-arn",
                "arn:aws:iam::123456789012:role/BedrockBatch",
                "--model-id",
                "amazon.nova-micro-v1:0",
                "--input-data-config",
                '{"s3InputDataConfig": {"s3Uri": "s3://in-bucket/input/"}}',
                "--output-data-config",
                '{"s3OutputDataConfig": {"s3Uri": "s3://out-bucket/output/"}}',
                "--timeout-duration-in-hours",
                "48",
                home=tmp_path,
            )
        )
        arns.append(created["jobArn"])

    got = _json(
        aws(api_server, "get-model-invocation-job", "--job-identifier", arns[0], home=tmp_path)
    )
    assert got["jobName"] == "cli-x-0"
    assert got["status"] == "Submitted"
    assert got["timeoutDurationInHours"] == 48

    stopped = aws(
        api_server, "stop-model-invocation-job", "--job-identifier", arns[1], home=tmp_path
    )
    assert stopped.returncode == 0, stopped.stderr
    assert (
        _json(
            aws(api_server, "get-model-invocation-job", "--job-identifier", arns[1], home=tmp_path)
        )["status"]
        == "Stopping"
    )

    # The command line of the "done when": client-side truncation and a resume token.
    listed = _json(
        aws(
            api_server,
            "list-model-invocation-jobs",
            "--status-equals",
            "Submitted",
            "--name-contains",
            "x",
            "--max-items",
            "5",
            home=tmp_path,
        )
    )
    names = [j["jobName"] for j in listed["invocationJobSummaries"]]
    assert names == ["cli-x-6", "cli-x-5", "cli-x-4", "cli-x-3", "cli-x-2"]
    assert "NextToken" in listed
    rest = _json(
        aws(
            api_server,
            "list-model-invocation-jobs",
            "--status-equals",
            "Submitted",
            "--name-contains",
            "x",
            "--starting-token",
            listed["NextToken"],
            home=tmp_path,
        )
    )
    assert [j["jobName"] for j in rest["invocationJobSummaries"]] == ["cli-x-0"]

    # Small server pages, auto-paginated by the CLI.
    paged = _json(
        aws(
            api_server,
            "list-model-invocation-jobs",
            "--name-contains",
            "cli-x",
            "--page-size",
            "2",
            "--sort-order",
            "Ascending",
            home=tmp_path,
        )
    )
    assert [j["jobArn"] for j in paged["invocationJobSummaries"]] == arns

    missing = aws(
        api_server, "get-model-invocation-job", "--job-identifier", "abcdef123456", home=tmp_path
    )
    assert missing.returncode == 255
    assert "ResourceNotFoundException" in missing.stderr
    bad = aws(
        api_server,
        "list-model-invocation-jobs",
        "--max-results",
        "5000",
        "--no-paginate",
        home=tmp_path,
    )
    assert bad.returncode == 255
    assert "less than or equal to 1000" in bad.stderr
