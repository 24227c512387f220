"""JSON logs of a real `batchrock serve`: one line per API request and per job transition,
each with the job id, the account and the request id the API answered with, so a job can be
followed through the log; no credential, signature or webhook key in any line."""

from __future__ import annotations

from typing import Any

import boto3
import orjson
import pytest
from botocore.config import Config

from tests.engine.test_e2e import FAST, claude_records, put
from tests.events.sinkserver import sink_server

pytestmark = pytest.mark.timeout(120)

ACCOUNT = "210987654321"
CLIENT_SECRET = "client-secret-9f8e7d-never-logged"
HOOK_SECRET = "hook-secret-1a2b3c-never-logged"


def test_a_job_can_be_followed_through_json_logs(server_factory: Any) -> None:
    with sink_server(lambda r: 200) as hook:
        server = server_factory(
            **FAST,
            log_format="json",
            events_webhook_url=hook.url,
            events_webhook_secret=HOOK_SECRET,
            events_poll_seconds=0.05,
        )
        client = boto3.session.Session(
            aws_access_key_id=ACCOUNT, aws_secret_access_key=CLIENT_SECRET, region_name="us-east-1"
        ).client("bedrock", endpoint_url=server.url, config=Config(retries={"max_attempts": 1}))
        put(server, "in/a.jsonl", claude_records(3))
        (server.data_dir / "s3" / "bucket").mkdir(parents=True, exist_ok=True)
        created = client.create_model_invocation_job(
            jobName="follow-me",
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/batch",
            modelId="anthropic.claude-3-haiku-20240307-v1:0",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://bucket/in/"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bucket/out/"}},
        )
        arn = created["jobArn"]
        job_id = arn.rsplit("/", 1)[-1]
        server.wait_history(arn, "Completed")
        got = client.get_model_invocation_job(jobIdentifier=arn)
        history = [s for s, _ in server.history(arn)]
        hook.wait_for(lambda: len(hook.accepted()) >= len(history))
        server.stop()

    text = server.log()
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]  # all JSON
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    mine = [line for line in lines if line.get("job_id") == job_id]

    requests = [line for line in mine if line.get("action") == "api_request"]
    create_line = next(line for line in requests if line["operation"] == "CreateModelInvocationJob")
    assert create_line["request_id"] == created["ResponseMetadata"]["RequestId"]
    assert create_line["account_id"] == ACCOUNT and create_line["http_status"] == 200
    get_line = next(line for line in requests if line["operation"] == "GetModelInvocationJob")
    assert get_line["request_id"] == got["ResponseMetadata"]["RequestId"]

    transitions = [line for line in mine if line.get("action") == "job_transition"]
    assert [line["to_status"] for line in transitions] == history
    assert all(line["account_id"] == ACCOUNT for line in transitions)
    # The job's creation was logged while serving its Create request.
    assert transitions[0]["request_id"] == create_line["request_id"]

    deliveries = [line for line in mine if line.get("action") == "event_delivery"]
    assert [line["status"] for line in deliveries if line["level"] == "INFO"] == history

    for secret in (CLIENT_SECRET, HOOK_SECRET, "Signature=", "AWS4-HMAC-SHA256"):
        assert secret not in text


def test_a_workers_transitions_are_json_lines_with_the_job_and_account(
    server_factory: Any,
) -> None:
    """The engine's transitions are logged where they happen: a separate `batchrock worker`
    writes one JSON line per transition it makes, with the job id and its account."""
    import subprocess
    import sys

    from tests.engine.test_e2e import create, wait

    server = server_factory(**FAST, engine=False, log_format="json")
    put(server, "in/a.jsonl", claude_records(3))
    arn = create(server)
    job_id = arn.rsplit("/", 1)[-1]
    log_path = server.data_dir.parent / "worker.log"
    cmd = [sys.executable, "-m", "batchrock.admin", "worker", "--data-dir", str(server.data_dir)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=server.env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait(server, arn, timeout=30)["status"] == "Completed"
        history = [s for s, _ in server.history(arn)]
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0, log_path.read_text()
    text = log_path.read_text()
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]  # all JSON
    transitions = [
        line
        for line in lines
        if line.get("action") == "job_transition" and line.get("job_id") == job_id
    ]
    # Everything after Submitted (the API's Create) is the worker's doing.
    assert [line["to_status"] for line in transitions] == history[1:]
    assert all(line["account_id"] == "123456789012" for line in transitions)
    assert all(line["level"] == "INFO" and job_id in line["message"] for line in transitions)
