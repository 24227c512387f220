"""The envelope, field by field, against the user guide's sample event (service-facts §4)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import orjson

from batchrock.events.envelope import build, creation_time
from batchrock.jobs import JobEvent, JobStatus
from tests.contract.test_store import make_job


def test_the_envelope_has_the_samples_fields_and_formats() -> None:
    job = make_job(
        job_id="abcdefghwxyz",
        name="dummy-batch-job-name",
        model_id="anthropic.claude-3-sonnet-20240229-v1:0",
        submit_time=datetime(2024, 8, 28, 22, 47, 53, 120000, tzinfo=UTC),
    )
    at = datetime(2024, 8, 28, 22, 58, 30, 500000, tzinfo=UTC)
    item = JobEvent(job.job_id, JobStatus.IN_PROGRESS, JobStatus.COMPLETED, at, seq=7)
    envelope = build(item, job)
    body = envelope.body
    arn = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefghwxyz"
    assert body == {
        "version": "0",
        "id": envelope.event_id,
        "detail-type": "Batch Inference Job State Change",
        "source": "aws.bedrock",
        "account": "123456789012",
        "time": "2024-08-28T22:58:30Z",
        "region": "us-east-1",
        "resources": [arn],
        "detail": {
            "version": "0.0",
            "accountId": "123456789012",
            "batchJobName": "dummy-batch-job-name",
            "batchJobArn": arn,
            "batchModelId": (
                "arn:aws:bedrock:us-east-1::foundation-model/"
                "anthropic.claude-3-sonnet-20240229-v1:0"
            ),
            "status": "Completed",
            "failureMessage": "",
            "creationTime": "Aug 28, 2024, 10:47:53 PM",
        },
    }
    assert orjson.loads(envelope.json) == body
    # The same event always has the same id (redeliveries can be told apart from new events).
    assert build(item, job).event_id == envelope.event_id
    assert build(dataclasses.replace(item, seq=8), job).event_id != envelope.event_id


def test_failure_message_and_model_forms() -> None:
    job = make_job(1, model_id="us.anthropic.claude-3-haiku-20240307-v1:0", region="us-west-2")
    failed = JobEvent(job.job_id, JobStatus.VALIDATING, JobStatus.FAILED, job.submit_time, "bad")
    detail = build(dataclasses.replace(failed, seq=1), job).body["detail"]
    assert detail["failureMessage"] == "bad"
    assert detail["batchModelId"] == (
        "arn:aws:bedrock:us-west-2:123456789012:inference-profile/"
        "us.anthropic.claude-3-haiku-20240307-v1:0"
    )


def test_creation_time_uses_a_twelve_hour_clock() -> None:
    assert creation_time(datetime(2024, 1, 5, 0, 7, 9, tzinfo=UTC)) == "Jan 5, 2024, 12:07:09 AM"
    assert creation_time(datetime(2024, 1, 5, 12, 0, 0, tzinfo=UTC)) == "Jan 5, 2024, 12:00:00 PM"
    assert creation_time(datetime(2024, 1, 5, 9, 30, 0, tzinfo=UTC)) == "Jan 5, 2024, 9:30:00 AM"
