"""Command-line clients against a server that checks signatures: the batchrock CLI (it signs
itself, tests/access/test_sigv4.py covers boto3) and the AWS CLI v1, with job ARNs in paths
and nextToken pages in query strings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.access.conftest import ALICE, BOB
from tests.cli.conftest import Result, run_cli
from tests.conftest import ServerProcess

AWS = Path(sys.executable).parent / "aws"


def _env(cli_env: dict[str, str], key: Any = ALICE, secret: str | None = None) -> dict[str, str]:
    return {
        **cli_env,
        "AWS_ACCESS_KEY_ID": key.access_key_id,
        "AWS_SECRET_ACCESS_KEY": secret or key.secret,
        "AWS_MAX_ATTEMPTS": "1",
    }


def _create_args(name: str) -> list[str]:
    return [
        "create-model-invocation-job",
        "--job-name",
        name,
        "--role-arn",
        "arn:aws:iam::111111111111:role/BedrockBatch",
        "--model-id",
        "amazon.nova-lite-v1:0",
        "--input-data-config",
        "s3InputDataConfig={s3Uri=s3://team-a-in/records.jsonl}",
        "--output-data-config",
        "s3OutputDataConfig={s3Uri=s3://team-a-out/}",
    ]


def _ok(result: Result) -> Any:
    assert result.rc == 0, result.stderr
    return result.json() if result.stdout.strip() else None


def test_the_batchrock_cli_signs_with_the_real_secret(
    secured: ServerProcess, cli_env: dict[str, str]
) -> None:
    env = _env(cli_env)
    base = ["--endpoint-url", secured.url]
    arns = [_ok(run_cli([*base, *_create_args(f"cli-page-{i}")], env))["jobArn"] for i in range(3)]
    got = _ok(run_cli([*base, "get-model-invocation-job", "--job-identifier", arns[0]], env))
    assert got["jobArn"] == arns[0]

    listing = [*base, "list-model-invocation-jobs", "--name-contains", "cli-page"]
    every = _ok(run_cli([*listing, "--page-size", "1"], env))  # three signed pages
    assert sorted(j["jobArn"] for j in every["invocationJobSummaries"]) == sorted(arns)
    first = _ok(run_cli([*listing, "--max-items", "2", "--page-size", "1"], env))
    token = first["NextToken"]
    rest = _ok(run_cli([*listing, "--starting-token", token, "--page-size", "1"], env))
    seen = first["invocationJobSummaries"] + rest["invocationJobSummaries"]
    assert sorted(j["jobArn"] for j in seen) == sorted(arns)

    tags = ["tag-resource", "--resource-arn", arns[1], "--tags", "key=team,value=a/b+c=d"]
    _ok(run_cli([*base, *tags], env))
    listed = _ok(run_cli([*base, "list-tags-for-resource", "--resource-arn", arns[1]], env))
    assert listed["tags"] == [{"key": "team", "value": "a/b+c=d"}]
    _ok(run_cli([*base, "stop-model-invocation-job", "--job-identifier", arns[2]], env))

    wrong = run_cli([*base, "list-model-invocation-jobs"], _env(cli_env, secret="x" * 40))
    assert wrong.rc == 254
    assert "An error occurred (InvalidSignatureException)" in wrong.stderr
    other = run_cli(
        [*base, "get-model-invocation-job", "--job-identifier", arns[0]], _env(cli_env, BOB)
    )
    assert other.rc == 254 and "(ResourceNotFoundException)" in other.stderr


def _aws(
    server: ServerProcess, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AWS), "--endpoint-url", server.url, "bedrock", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(not AWS.exists(), reason="awscli (a dev dependency) is not installed")
def test_the_aws_cli(secured: ServerProcess, cli_env: dict[str, str]) -> None:
    env = _env(cli_env)
    arns = []
    for i in range(3):
        done = _aws(secured, env, *_create_args(f"awscli-page-{i}"))
        assert done.returncode == 0, done.stderr
        arns.append(json.loads(done.stdout)["jobArn"])
    done = _aws(secured, env, "get-model-invocation-job", "--job-identifier", arns[0])
    assert done.returncode == 0, done.stderr
    listing = ["list-model-invocation-jobs", "--name-contains", "awscli-page", "--page-size", "1"]
    done = _aws(secured, env, *listing)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)["invocationJobSummaries"]
    assert sorted(j["jobArn"] for j in listed) == sorted(arns)
    done = _aws(secured, env, "stop-model-invocation-job", "--job-identifier", arns[0])
    assert done.returncode == 0, done.stderr

    wrong = _aws(secured, _env(cli_env, secret="x" * 40), "list-model-invocation-jobs")
    assert wrong.returncode != 0 and "(InvalidSignatureException)" in wrong.stderr
