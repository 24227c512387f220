"""The command line against a live ``batchrock serve`` process: create, get, list with filters
and pagination, stop, and tags."""

from __future__ import annotations

import json
from typing import Any

from tests.cli.conftest import run_cli

ROLE = "arn:aws:iam::123456789012:role/BatchRole"


def test_job_lifecycle_through_the_cli(server_factory: Any, cli_env: dict[str, str]) -> None:
    server = server_factory(engine=False)
    env = {**cli_env, "AWS_ENDPOINT_URL_BEDROCK": server.url}

    def cli(*args: str) -> Any:
        result = run_cli(list(args), env)
        assert result.rc == 0, result.stderr
        return result

    arns = []
    for name in ("etl-a", "etl-b", "report-c"):
        created = cli(
            "bedrock",
            "create-model-invocation-job",
            "--job-name",
            name,
            "--role-arn",
            ROLE,
            "--model-id",
            "amazon.nova-lite-v1:0",
            "--input-data-config",
            f"s3InputDataConfig={{s3Uri=s3://my-bucket/{name}.jsonl}}",
            "--output-data-config",
            "s3OutputDataConfig={s3Uri=s3://my-bucket/out/}",
            "--tags",
            "key=team,value=data",
        ).json()
        arns.append(created["jobArn"])

    got = cli("get-model-invocation-job", "--job-identifier", arns[0]).json()
    assert (got["jobName"], got["status"]) == ("etl-a", "Submitted")
    assert got["submitTime"].endswith("+00:00")

    names = cli(
        "list-model-invocation-jobs",
        "--name-contains",
        "etl",
        "--sort-order",
        "Ascending",
        "--query",
        "invocationJobSummaries[].jobName",
    ).json()
    assert names == ["etl-a", "etl-b"]

    first = cli(
        "list-model-invocation-jobs",
        "--max-items",
        "2",
        "--page-size",
        "1",
        "--sort-order",
        "Ascending",
    ).json()
    assert [j["jobName"] for j in first["invocationJobSummaries"]] == ["etl-a", "etl-b"]
    rest = cli(
        "list-model-invocation-jobs",
        "--max-items",
        "2",
        "--page-size",
        "1",
        "--sort-order",
        "Ascending",
        "--starting-token",
        first["NextToken"],
    ).json()
    assert [j["jobName"] for j in rest["invocationJobSummaries"]] == ["report-c"]
    assert "NextToken" not in rest

    assert cli("stop-model-invocation-job", "--job-identifier", arns[1]).stdout == ""
    status = json.loads(
        cli("get-model-invocation-job", "--job-identifier", arns[1], "--query", "status").stdout
    )
    assert status in ("Stopping", "Stopped")
    stopping = cli(
        "list-model-invocation-jobs",
        "--status-equals",
        status,
        "--output",
        "text",
        "--query",
        "invocationJobSummaries[].jobName",
    )
    assert stopping.stdout == "etl-b\n"

    tagged = cli("tag-resource", "--resource-arn", arns[2], "--tags", "key=tier,value=gold")
    assert tagged.stdout == ""
    tags = cli("list-tags-for-resource", "--resource-arn", arns[2], "--output", "text").stdout
    assert sorted(tags.splitlines()) == ["TAGS\tteam\tdata", "TAGS\ttier\tgold"]
    cli("untag-resource", "--resource-arn", arns[2], "--tag-keys", "team")
    after = cli("list-tags-for-resource", "--resource-arn", arns[2]).json()
    assert after == {"tags": [{"key": "tier", "value": "gold"}]}

    table = cli(
        "list-model-invocation-jobs",
        "--output",
        "table",
        "--query",
        "invocationJobSummaries[].[jobName,status]",
        "--sort-order",
        "Ascending",
    ).stdout
    assert table.splitlines()[1].strip("| ") == "ListModelInvocationJobs"
    assert "|  report-c |  Submitted  |" in table


def test_service_errors_from_the_live_server(server_factory: Any, cli_env: dict[str, str]) -> None:
    server = server_factory(engine=False)
    env = {**cli_env, "AWS_ENDPOINT_URL": server.url}
    missing = run_cli(["get-model-invocation-job", "--job-identifier", "abcdefabcdef"], env)
    assert missing.rc == 254
    assert missing.stderr.startswith(
        "\nbatchrock: [ERROR]: An error occurred (ResourceNotFoundException) when calling the "
        "GetModelInvocationJob operation: "
    )
    bad_status = run_cli(["list-model-invocation-jobs", "--status-equals", "Done"], env)
    assert bad_status.rc == 254
    assert "(ValidationException) when calling the ListModelInvocationJobs operation" in (
        bad_status.stderr
    )
