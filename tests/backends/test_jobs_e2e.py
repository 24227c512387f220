"""Jobs end to end through `batchrock serve` and boto3, for every backend type.

Each test writes an input file into the local object store, submits a job with boto3, waits
for it to finish and checks the `.out` lines and the manifest record by record.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import bedrock_client

from .conftest import FakeServer, fake_aws_credentials
from .test_structure import WEATHER

pytestmark = pytest.mark.timeout(120)

FINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}
FAST = {
    "engine_poll_seconds": 0.05,
    "engine_checkpoint_seconds": 0.1,
    "quota_min_records_per_job": 1,
}


def submit(
    server: Any, model_id: str, records: list[dict[str, Any]], folder: str = "in", **extra: Any
) -> str:
    data = server.data_dir / "s3" / "bucket" / folder
    data.mkdir(parents=True, exist_ok=True)
    (data / "records.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    client = bedrock_client(server.url)
    response = client.create_model_invocation_job(
        jobName=f"e2e-{time.monotonic_ns()}",
        roleArn="arn:aws:iam::123456789012:role/batch",
        modelId=model_id,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://bucket/{folder}/"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bucket/out/"}},
        **extra,
    )
    return str(response["jobArn"])


def wait(server: Any, arn: str, timeout: float = 60) -> dict[str, Any]:
    client = bedrock_client(server.url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in FINAL:
            return dict(job)
        time.sleep(0.1)
    raise AssertionError(f"job still {job['status']}: {server.log()[-2000:]}")


def results(server: Any, arn: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    folder = server.data_dir / "s3" / "bucket" / "out" / arn.rsplit("/", 1)[-1]
    lines = [orjson.loads(x) for x in (folder / "records.jsonl.out").read_bytes().splitlines()]
    manifest = orjson.loads((folder / "manifest.json.out").read_bytes())
    return lines, manifest


def claude(text: str) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }


def routes(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_builtin_model_job_with_bad_records_and_injected_errors(server_factory: Any) -> None:
    server = server_factory(**FAST, builtin_error_rate=0.2)
    records = [{"recordId": f"R{i:03d}", "modelInput": claude(f"question {i}")} for i in range(60)]
    records[7] = {"recordId": "R007", "modelInput": {"messages": "not a list"}}
    arn = submit(server, "us.anthropic.claude-3-5-haiku-20241022-v1:0", records)
    job = wait(server, arn)
    lines, manifest = results(server, arn)
    assert [line["recordId"] for line in lines] == [r["recordId"] for r in records]
    bad = lines[7]
    assert bad["error"]["errorCode"] == 400
    assert bad["error"]["errorMessage"].startswith("Malformed input request: ")
    injected = [x for x in lines if x.get("error", {}).get("errorCode") == 500]
    assert 3 <= len(injected) <= 25
    good = [x for x in lines if "modelOutput" in x]
    assert all(x["modelOutput"]["type"] == "message" for x in good)
    # Record errors do not change the job's status: Bedrock's PartiallyCompleted means the
    # timeout cut the job short.
    assert job["status"] == "Completed"
    assert manifest["totalRecordCount"] == 60
    assert manifest["successRecordCount"] == len(good)
    assert manifest["errorRecordCount"] == 60 - len(good)
    assert manifest["inputTokenCount"] == sum(
        x["modelOutput"]["usage"]["input_tokens"] for x in good
    )
    assert manifest["outputTokenCount"] == sum(
        x["modelOutput"]["usage"]["output_tokens"] for x in good
    )


def test_unrouted_model_without_fallback_fails_in_validating(
    server_factory: Any, tmp_path: Path
) -> None:
    config = routes(tmp_path, '[[routes]]\nmodel = "meta.*"\nbackend = "builtin"\n')
    server = server_factory(**FAST, models_config=config, builtin_fallback=False)
    arn = submit(server, "amazon.nova-lite-v1:0", [{"modelInput": {"messages": []}}])
    job = wait(server, arn)
    assert job["status"] == "Failed"
    assert "No model backend is configured for model 'amazon.nova-lite-v1:0'" in job["message"]


def test_throttled_requests_are_counted_and_the_last_429_is_the_record_error(
    server_factory: Any,
) -> None:
    # Each attempt is throttled with probability 0.8 and a record gets 5 attempts, so about a
    # third of the records stay throttled (errorCode 429) and the others got through after
    # some throttled attempts.
    server = server_factory(**FAST, builtin_throttle_rate=0.8)
    records = [{"recordId": f"T{i}", "modelInput": claude(f"throttle me {i}")} for i in range(60)]
    arn = submit(server, "anthropic.claude-3-haiku-20240307-v1:0", records)
    job = wait(server, arn)
    lines, manifest = results(server, arn)
    assert job["status"] == "Completed"
    assert [x["recordId"] for x in lines] == [r["recordId"] for r in records]
    failed = [x for x in lines if "error" in x]
    assert failed and len(failed) < 60
    assert all(
        x["error"]
        == {
            "errorCode": 429,
            "errorMessage": "Too many requests, please wait before trying again.",
        }
        for x in failed
    )
    assert (manifest["successRecordCount"], manifest["errorRecordCount"]) == (
        60 - len(failed),
        len(failed),
    )
    # Every failed record was throttled on all 5 attempts; every successful one was throttled
    # at most 4 times, and with this rate some were.
    assert (
        5 * len(failed)
        < manifest["throttledRequestCount"]
        <= 5 * len(failed) + 4 * (60 - len(failed))
    )


def test_openai_backend_job(server_factory: Any, tmp_path: Path, fake_openai: FakeServer) -> None:
    config = routes(
        tmp_path,
        f"""
[[routes]]
models = ["anthropic.*", "meta.*"]
backend = "openai"
base_url = "{fake_openai.url}/v1"
served_model = "local-llm"
backoff_base_s = 0.01
""",
    )
    server = server_factory(**FAST, models_config=config, builtin_fallback=False)
    tag = tmp_path.name
    records = [{"recordId": f"R{i}", "modelInput": claude(f"hello {i} {tag}")} for i in range(20)]
    records[3]["modelInput"] = claude(f"FAULT:429:2 {tag}")
    records[5]["modelInput"] = claude(f"FAULT:400 {tag}")
    arn = submit(server, "anthropic.claude-3-haiku-20240307-v1:0", records)
    job = wait(server, arn)
    lines, manifest = results(server, arn)
    assert job["status"] == "Completed"
    assert lines[0]["modelOutput"]["content"] == [{"type": "text", "text": f"echo: hello 0 {tag}"}]
    assert lines[3]["modelOutput"]["content"][0]["text"] == f"echo: FAULT:429:2 {tag}"
    assert lines[5]["error"] == {
        "errorCode": 400,
        "errorMessage": "Model server error 400: This model does not like you",
    }
    assert (manifest["successRecordCount"], manifest["errorRecordCount"]) == (19, 1)
    # Record 3 was throttled twice before it got through.
    assert manifest["throttledRequestCount"] == 2


def test_bedrock_backend_job(
    server_factory: Any, tmp_path: Path, fake_bedrock: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_aws_credentials(monkeypatch, tmp_path)
    config = routes(
        tmp_path,
        f"""
[[routes]]
model = "*"
backend = "bedrock"
endpoint_url = "{fake_bedrock.url}"
region = "us-east-1"
""",
    )
    server = server_factory(**FAST, models_config=config, builtin_fallback=False)
    body = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    records = [{"recordId": f"R{i}", "modelInput": body} for i in range(5)]
    arn = submit(server, "amazon.nova-lite-v1:0", records, modelInvocationType="Converse")
    job = wait(server, arn)
    lines, manifest = results(server, arn)
    assert job["status"] == "Completed"
    assert all(set(x["modelOutput"]) == {"output", "stopReason", "usage", "metrics"} for x in lines)
    assert manifest["successRecordCount"] == 5


CONTACT = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "email": {"type": "string"},
        "demo_requested": {"type": "boolean"},
        "seats": {"type": "integer", "minimum": 1, "maximum": 500},
    },
    "required": ["name", "email", "demo_requested", "seats"],
    "additionalProperties": False,
}


def structure_records(tag: str) -> list[dict[str, Any]]:
    """Half structured-output records, half forced-tool records (Claude Messages bodies)."""
    records = []
    for i in range(10):
        body = claude(f"Extract the contact from email {i} {tag}")
        if i % 2:
            body["tools"] = [WEATHER]
            body["tool_choice"] = {"type": "tool", "name": "get_weather"}
        else:
            body["output_config"] = {"format": {"type": "json_schema", "schema": CONTACT}}
        records.append({"recordId": f"S{i}", "modelInput": body})
    return records


def check_structure(lines: list[dict[str, Any]]) -> None:
    import jsonschema

    for i, line in enumerate(lines):
        out = line["modelOutput"]
        if i % 2:
            assert out["stop_reason"] == "tool_use"
            (call,) = out["content"]
            assert call["type"] == "tool_use" and call["name"] == "get_weather"
            jsonschema.validate(call["input"], WEATHER["input_schema"])
        else:
            assert out["stop_reason"] == "end_turn"
            jsonschema.validate(orjson.loads(out["content"][0]["text"]), CONTACT)


def test_structured_output_and_tools_on_the_builtin_model(server_factory: Any) -> None:
    server = server_factory(**FAST)
    arn = submit(server, "us.anthropic.claude-sonnet-4-5-20250929-v1:0", structure_records("b"))
    job = wait(server, arn)
    lines, manifest = results(server, arn)
    assert job["status"] == "Completed"
    check_structure(lines)
    assert manifest["successRecordCount"] == 10
    text_format = {
        "textFormat": {
            "type": "json_schema",
            "structure": {"jsonSchema": {"schema": orjson.dumps(CONTACT).decode()}},
        }
    }
    converse = {
        "messages": [{"role": "user", "content": [{"text": "Extract the contact."}]}],
        "outputConfig": text_format,
        "serviceTier": {"type": "flex"},
    }
    records = [{"recordId": "C0", "modelInput": converse}]
    arn = submit(
        server, "amazon.nova-lite-v1:0", records, folder="conv", modelInvocationType="Converse"
    )
    assert wait(server, arn)["status"] == "Completed"
    (line,), _ = results(server, arn)
    import jsonschema

    content = line["modelOutput"]["output"]["message"]["content"]
    jsonschema.validate(orjson.loads(content[0]["text"]), CONTACT)
    assert line["modelOutput"]["serviceTier"] == {"type": "flex"}


def test_structured_output_and_tools_through_the_openai_backend(
    server_factory: Any, tmp_path: Path, fake_openai: FakeServer
) -> None:
    config = routes(
        tmp_path,
        f"""
[[routes]]
models = ["anthropic.*"]
backend = "openai"
base_url = "{fake_openai.url}/v1"
served_model = "local-llm"
""",
    )
    server = server_factory(**FAST, models_config=config, builtin_fallback=False)
    fake_openai.clear()
    arn = submit(server, "anthropic.claude-3-haiku-20240307-v1:0", structure_records(tmp_path.name))
    job = wait(server, arn)
    lines, _ = results(server, arn)
    assert job["status"] == "Completed"
    check_structure(lines)
    sent = [r["body"] for r in fake_openai.requests()]
    assert sum("response_format" in b for b in sent) == 5
    assert (
        sum(
            b.get("tool_choice") == {"type": "function", "function": {"name": "get_weather"}}
            for b in sent
        )
        == 5
    )
