"""Events to an EventBridge bus: a real `batchrock serve` sends signed PutEvents requests
(botocore's) to a configurable endpoint; here a recording HTTP endpoint that checks the
signature, answers like EventBridge and fails some entries, which are sent again, in order;
and moto's EventBridge, whose rule with Bedrock's pattern routes them to an SQS queue."""

from __future__ import annotations

import time
from typing import Any

import boto3
import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.engine.test_e2e import claude_records, create, put, wait
from tests.events.sinkserver import Received, sink_server
from tests.events.test_webhook import EVENTS

pytestmark = pytest.mark.timeout(120)

KEY, SECRET = "AKIDEVENTSTEST", "events-secret-key-never-logged"


def signature_ok(r: Received, url: str) -> bool:
    """Recompute the SigV4 signature of the request as EventBridge would (service events)."""
    auth = r.headers["authorization"]
    fields = dict(part.strip().split("=", 1) for part in auth.split(" ", 1)[1].split(","))
    signed = fields["SignedHeaders"].split(";")
    request = AWSRequest(method="POST", url=url, data=r.body)
    for name in signed:
        request.headers[name] = r.headers[name]
    request.context["timestamp"] = r.headers["x-amz-date"]
    signer = SigV4Auth(Credentials(KEY, SECRET), "events", "us-west-2")
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    return bool(fields["Signature"] == expected)


def test_put_events_requests_carry_the_envelope_signed(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    failed_once = False
    taken: list[dict[str, Any]] = []  # the entries the endpoint accepted, in order

    def policy(r: Received) -> int | str:
        return 200

    def reply(r: Received) -> bytes:
        nonlocal calls, failed_once
        calls += 1
        entries = r.json["Entries"]
        # The first call with more than one entry: every entry after the first fails.
        fail_from = len(entries)
        if not failed_once and len(entries) > 1:
            fail_from, failed_once = 1, True
        results: list[dict[str, str]] = [
            {"EventId": f"e{calls}-{i}"} if i < fail_from else {"ErrorCode": "InternalFailure"}
            for i in range(len(entries))
        ]
        failed = len(entries) - fail_from
        taken.extend(entries[:fail_from])
        return orjson.dumps({"FailedEntryCount": failed, "Entries": results})

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    with sink_server(policy, reply) as bus:
        endpoint = bus.url.removesuffix("/hook")
        server = server_factory(
            **{**EVENTS, "events_poll_seconds": 1.0},
            events_eventbridge_bus="batch-events",
            events_eventbridge_endpoint_url=endpoint,
            events_eventbridge_region="us-west-2",
        )
        put(server, "in/a.jsonl", claude_records(5))
        arn = create(server)
        assert wait(server, arn)["status"] == "Completed"
        history = [s for s, _ in server.history(arn)]
        bus.wait_for(lambda: len(taken) >= len(history))
        server.stop()
    assert failed_once and calls >= 2
    statuses = [orjson.loads(e["Detail"])["status"] for e in taken]
    assert statuses == history
    first = bus.received[0]
    assert first.headers["x-amz-target"] == "AWSEvents.PutEvents"
    assert first.headers["content-type"] == "application/x-amz-json-1.1"
    assert f"Credential={KEY}/" in first.headers["authorization"]
    assert "/us-west-2/events/aws4_request" in first.headers["authorization"]
    assert all(signature_ok(r, endpoint + "/") for r in bus.received)
    for entry in taken:
        assert set(entry) == {"Time", "Source", "Resources", "DetailType", "Detail", "EventBusName"}
        assert entry["Source"] == "aws.bedrock"
        assert entry["DetailType"] == "Batch Inference Job State Change"
        assert entry["EventBusName"] == "batch-events"
        assert entry["Resources"] == [arn]
        detail = orjson.loads(entry["Detail"])
        assert detail["batchJobArn"] == arn and detail["accountId"] == "123456789012"
        assert detail["batchModelId"] == (
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"
        )
    assert SECRET not in server.log()


def test_events_reach_a_rule_target_through_motos_eventbridge(
    server_factory: Any, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto's EventBridge: a rule with Bedrock's pattern routes the events to an SQS queue."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    session = boto3.session.Session(region_name="us-east-1")
    events = session.client("events", endpoint_url=moto_url)
    sqs = session.client("sqs", endpoint_url=moto_url)
    bus = f"bus-{time.monotonic_ns()}"
    events.create_event_bus(Name=bus)
    queue = sqs.create_queue(QueueName=bus)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    pattern = {"source": ["aws.bedrock"], "detail-type": ["Batch Inference Job State Change"]}
    events.put_rule(Name="batch", EventBusName=bus, EventPattern=orjson.dumps(pattern).decode())
    events.put_targets(Rule="batch", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
    server = server_factory(
        **EVENTS, events_eventbridge_bus=bus, events_eventbridge_endpoint_url=moto_url
    )
    put(server, "in/a.jsonl", claude_records(5))
    arn = create(server)
    server.wait_history(arn, "Completed")
    history = [s for s, _ in server.history(arn)]
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while len(got) < len(history) and time.monotonic() < deadline:
        answer = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        got.extend(orjson.loads(m["Body"]) for m in answer.get("Messages", []))
    assert sorted(e["detail"]["status"] for e in got) == sorted(history)
    for event in got:
        assert event["source"] == "aws.bedrock"
        assert event["detail-type"] == "Batch Inference Job State Change"
        assert event["resources"] == [arn]
        assert event["detail"]["batchJobArn"] == arn
