"""Pagination tokens are interchangeable with AWS CLI's (botocore's paginator is the reference).

Each case runs ``batchrock list-model-invocation-jobs`` and boto3's own paginator against the
same stub service and compares the items and the ``NextToken``; resuming with the printed
token must continue exactly where the first call stopped.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.cli.conftest import Stub, run_cli


def _client(url: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).client("bedrock", endpoint_url=url, config=Config(retries={"max_attempts": 1}))


def _reference(url: str, **config: Any) -> dict[str, Any]:
    paginator = _client(url).get_paginator("list_model_invocation_jobs")
    result: dict[str, Any] = paginator.paginate(PaginationConfig=config).build_full_result()
    return result


def _names(result: dict[str, Any]) -> list[str]:
    return [j["jobName"] for j in result.get("invocationJobSummaries", [])]


@pytest.mark.parametrize(
    ("page_size", "max_items"),
    [(None, 3), (2, 3), (2, 4), (3, 7), (None, 7), (None, 10), (1, 5), (4, 1), (2, None)],
)
def test_tokens_and_items_match_botocore(
    stub: Stub, cli_env: dict[str, str], page_size: int | None, max_items: int | None
) -> None:
    stub.fixture("gen:7")
    args = ["--endpoint-url", stub.url, "list-model-invocation-jobs"]
    config: dict[str, Any] = {}
    if page_size is not None:
        args += ["--page-size", str(page_size)]
        config["PageSize"] = page_size
    if max_items is not None:
        args += ["--max-items", str(max_items)]
        config["MaxItems"] = max_items
    ours = run_cli(args, cli_env)
    assert ours.rc == 0, ours.stderr
    mine = ours.json()
    ref = _reference(stub.url, **config)
    assert _names(mine) == _names(ref)
    assert mine.get("NextToken") == ref.get("NextToken")
    if "NextToken" in mine:
        resumed = run_cli([*args, "--starting-token", mine["NextToken"]], cli_env)
        assert resumed.rc == 0, resumed.stderr
        ref_resumed = _reference(stub.url, StartingToken=ref["NextToken"], **config)
        assert _names(resumed.json()) == _names(ref_resumed)
        assert resumed.json().get("NextToken") == ref_resumed.get("NextToken")


def test_walking_with_max_items_visits_every_job_once(stub: Stub, cli_env: dict[str, str]) -> None:
    stub.fixture("gen:7")
    seen: list[str] = []
    token: str | None = None
    for _ in range(10):
        args = [
            "--endpoint-url",
            stub.url,
            "list-model-invocation-jobs",
            "--max-items",
            "2",
            "--page-size",
            "3",
        ]
        if token:
            args += ["--starting-token", token]
        result = run_cli(args, cli_env)
        assert result.rc == 0, result.stderr
        data = result.json()
        seen += _names(data)
        token = data.get("NextToken")
        if not token:
            break
    assert seen == [f"gen-job-{i:02d}" for i in range(1, 8)]


@pytest.mark.parametrize(
    "token",
    [
        "garbage",  # not base64: used as the service's own token
        "aGVsbG8=",  # base64 of a non-JSON text: same
        "abc___2",  # botocore's older "<token>___<skip>" form
        "None___1",  # ...with no service token
        "eyJuZXh0VG9rZW4iOiBudWxsLCAiYm90b190cnVuY2F0ZV9hbW91bnQiOiAyfQ==",  # skip 2
    ],
)
def test_starting_tokens_are_read_as_botocore_reads_them(
    stub: Stub, cli_env: dict[str, str], token: str
) -> None:
    stub.fixture("gen:7")
    ours = run_cli(
        ["--endpoint-url", stub.url, "list-model-invocation-jobs", "--starting-token", token],
        cli_env,
    )
    our_requests = [r["raw_query"] for r in stub.requests()]
    stub.fixture("gen:7")
    try:
        ref: dict[str, Any] | None = _reference(stub.url, StartingToken=token)
    except Exception:
        ref = None
    ref_requests = [r["raw_query"] for r in stub.requests()]
    assert our_requests == ref_requests
    if ref is None:
        assert ours.rc == 254
    else:
        assert ours.rc == 0, ours.stderr
        assert _names(ours.json()) == _names(ref)


def test_text_output_streams_pages_and_prints_the_resume_token(
    stub: Stub, cli_env: dict[str, str]
) -> None:
    stub.fixture("gen:7")
    result = run_cli(
        [
            "--endpoint-url",
            stub.url,
            "list-model-invocation-jobs",
            "--page-size",
            "2",
            "--max-items",
            "3",
            "--output",
            "text",
            "--query",
            "invocationJobSummaries[].jobName",
        ],
        cli_env,
    )
    assert result.rc == 0, result.stderr
    lines = result.stdout.splitlines()
    # --query applies per page and to the NextToken wrapper (which yields None), as in AWS CLI.
    assert lines == ["gen-job-01\tgen-job-02", "gen-job-03", "None"]
    assert len(stub.requests()) == 2
    json.dumps(lines)
