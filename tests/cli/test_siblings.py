"""create/get/stop against the stub: what reaches the service, and what is printed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.cli.conftest import Stub, run_cli

CREATE = [
    "create-model-invocation-job",
    "--job-name",
    "nightly",
    "--role-arn",
    "arn:aws:iam::123456789012:role/R",
    "--model-id",
    "amazon.nova-lite-v1:0",
]


def test_create_with_shorthand_and_json_sends_the_model_shaped_body(
    stub: Stub, cli_env: dict[str, str]
) -> None:
    stub.fixture("empty")
    result = run_cli(
        [
            "--endpoint-url",
            stub.url,
            *CREATE,
            "--input-data-config",
            "s3InputDataConfig={s3Uri=s3://my-bucket/in.jsonl,s3InputFormat=JSONL}",
            "--output-data-config",
            '{"s3OutputDataConfig": {"s3Uri": "s3://my-bucket/out/"}}',
            "--vpc-config",
            "subnetIds=subnet-1,subnet-2,securityGroupIds=sg-1",
            "--timeout-duration-in-hours",
            "48",
            "--tags",
            "key=team,value=ml",
            "key=env,value=dev",
        ],
        cli_env,
    )
    assert result.rc == 0, result.stderr
    assert result.json() == {
        "jobArn": "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/job000000001"
    }
    request = stub.requests()[-1]
    assert (request["method"], request["path"]) == ("POST", "/model-invocation-job")
    assert request["headers"]["Content-Type"] == "application/json"
    body = json.loads(request["body"])
    uuid.UUID(body.pop("clientRequestToken"))  # filled in, as AWS CLI does
    assert body == {
        "jobName": "nightly",
        "roleArn": "arn:aws:iam::123456789012:role/R",
        "modelId": "amazon.nova-lite-v1:0",
        "inputDataConfig": {
            "s3InputDataConfig": {"s3Uri": "s3://my-bucket/in.jsonl", "s3InputFormat": "JSONL"}
        },
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://my-bucket/out/"}},
        "vpcConfig": {"subnetIds": ["subnet-1", "subnet-2"], "securityGroupIds": ["sg-1"]},
        "timeoutDurationInHours": 48,
        "tags": [{"key": "team", "value": "ml"}, {"key": "env", "value": "dev"}],
    }


def test_create_from_cli_input_json_file_with_a_command_line_override(
    stub: Stub, cli_env: dict[str, str], tmp_path: Path
) -> None:
    stub.fixture("empty")
    spec = tmp_path / "job.json"
    spec.write_text(
        json.dumps(
            {
                "jobName": "from-file",
                "roleArn": "arn:aws:iam::123456789012:role/R",
                "modelId": "m.x",
                "clientRequestToken": "fixed-token",
                "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://my-bucket/a.jsonl"}},
                "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://my-bucket/o/"}},
            }
        )
    )
    result = run_cli(
        [
            "--endpoint-url",
            stub.url,
            "bedrock",
            "create-model-invocation-job",
            "--cli-input-json",
            f"file://{spec}",
            "--job-name",
            "override",
        ],
        cli_env,
    )
    assert result.rc == 0, result.stderr
    body = json.loads(stub.requests()[-1]["body"])
    assert body["jobName"] == "override"
    assert body["clientRequestToken"] == "fixed-token"
    assert list(body)[:2] == ["jobName", "roleArn"]


def test_missing_required_options_and_bad_nested_values_are_caught_before_sending(
    stub: Stub, cli_env: dict[str, str]
) -> None:
    stub.fixture("empty")
    missing = run_cli(["--endpoint-url", stub.url, *CREATE[:3]], cli_env)
    assert missing.rc == 252
    assert (
        "the following arguments are required: --role-arn, --model-id, --input-data-config, "
        "--output-data-config" in missing.stderr
    )
    nested = run_cli(
        [
            "--endpoint-url",
            stub.url,
            *CREATE,
            "--input-data-config",
            "s3InputDataConfig={s3InputFormat=JSONL}",
            "--output-data-config",
            "s3OutputDataConfig={s3Uri=s3://my-bucket/o/}",
            "--timeout-duration-in-hours",
            "2",
        ],
        cli_env,
    )
    assert nested.rc == 252
    assert nested.stderr == (
        "\nbatchrock: [ERROR]: An error occurred (ParamValidation): Parameter validation failed:\n"
        'Missing required parameter in inputDataConfig.s3InputDataConfig: "s3Uri"\n'
        "Invalid value for parameter timeoutDurationInHours, value: 2, valid min value: 24\n"
    )
    bad_json = run_cli(
        [
            "--endpoint-url",
            stub.url,
            *CREATE,
            "--input-data-config",
            "{oops",
            "--output-data-config",
            "s3OutputDataConfig={s3Uri=s3://my-bucket/o/}",
        ],
        cli_env,
    )
    assert bad_json.rc == 252
    assert "Error parsing parameter '--input-data-config': Invalid JSON" in bad_json.stderr
    assert stub.requests() == []


def test_get_by_arn_encodes_the_path_and_stop_prints_nothing(
    fresh_stub: Stub, cli_env: dict[str, str]
) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcd1234efgh"
    got = run_cli(
        [
            "--endpoint-url",
            fresh_stub.url,
            "get-model-invocation-job",
            "--job-identifier",
            arn,
            "--query",
            "[jobName,status,submitTime]",
            "--output",
            "text",
        ],
        cli_env,
    )
    assert got.rc == 0, got.stderr
    assert got.stdout == "batch-job-1\tCompleted\t2024-05-01T10:00:00.123000+00:00\n"
    path = fresh_stub.requests()[-1]["path"]
    assert path == (
        "/model-invocation-job/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012"
        "%3Amodel-invocation-job%2Fabcd1234efgh"
    )
    stopped = run_cli(
        [
            "--endpoint-url",
            fresh_stub.url,
            "stop-model-invocation-job",
            "--job-identifier",
            "abcd1234efgh",
        ],
        cli_env,
    )
    assert (stopped.rc, stopped.stdout, stopped.stderr) == (0, "", "")
    request = fresh_stub.requests()[-1]
    assert (request["method"], request["path"]) == (
        "POST",
        "/model-invocation-job/abcd1234efgh/stop",
    )


def test_service_errors_of_siblings(fresh_stub: Stub, cli_env: dict[str, str]) -> None:
    result = run_cli(
        [
            "--endpoint-url",
            fresh_stub.url,
            "get-model-invocation-job",
            "--job-identifier",
            "zzzz9999zzzz",
        ],
        cli_env,
    )
    assert result.rc == 254
    assert result.stderr == (
        "\nbatchrock: [ERROR]: An error occurred (ResourceNotFoundException) when calling the "
        "GetModelInvocationJob operation: The specified job zzzz9999zzzz was not found.\n"
    )


def test_skeletons_of_a_sibling(cli_env: dict[str, str]) -> None:
    skeleton = run_cli(["create-model-invocation-job", "--generate-cli-skeleton"], cli_env)
    assert skeleton.rc == 0
    data = json.loads(skeleton.stdout)
    assert list(data)[:3] == ["jobName", "roleArn", "clientRequestToken"]
    assert data["tags"] == [{"key": "", "value": ""}]
    assert data["modelInvocationType"] == "InvokeModel"
    output = run_cli(
        [
            "create-model-invocation-job",
            "--generate-cli-skeleton",
            "output",
            "--cli-input-json",
            skeleton.stdout.replace('""', '"x"').replace("0,", "24,"),
        ],
        cli_env,
    )
    assert output.rc == 0, output.stderr
    assert output.json() == {"jobArn": "jobArn"}
