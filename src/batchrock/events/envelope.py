"""The "Batch Inference Job State Change" event, as EventBridge carries it.

This is a wire edge: the field names and formats are Bedrock's (service-facts §4, the user
guide's sample event). What the sample leaves open, and what was chosen, is in docs/events.md.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from batchrock.api.identity import job_arn, partition
from batchrock.catalogue import parse_model_id, reported_model_id
from batchrock.jobs import Job, JobEvent

SOURCE = "aws.bedrock"
DETAIL_TYPE = "Batch Inference Job State Change"

# Event ids are derived from the job and the event's place in the history, so a redelivery
# (at least once) carries the id of the first delivery and a consumer can drop duplicates.
_ID_NAMESPACE = uuid.UUID("6f1c2a52-0b7e-4d1e-9b0c-3f5d8e2a7c41")


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event ready to send: its id, the job it is about, the envelope and its JSON."""

    event_id: str
    job_id: str
    account_id: str
    time: datetime
    body: dict[str, Any]
    json: bytes


def iso_time(value: datetime) -> str:
    """EventBridge's envelope ``time``: ISO 8601 in UTC, to the second."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def creation_time(value: datetime) -> str:
    """The detail's ``creationTime`` as the sample writes it, ``Aug 28, 2024, 10:47:53 PM``
    (Java's medium date-time style in en-US: 12-hour clock, hour without a leading zero)."""
    v = value.astimezone(UTC)
    hour = v.hour % 12 or 12
    return f"{v:%b} {v.day}, {v.year}, {hour}:{v:%M:%S} {'AM' if v.hour < 12 else 'PM'}"


def model_arn(job: Job) -> str:
    """``batchModelId``: the model as an ARN (the sample's is a foundation-model ARN, with an
    empty account segment); an inference profile's ARN for a profile id; other ARNs as given."""
    reported = reported_model_id(job.model_id, job.region, job.account_id)
    if reported.startswith("arn:"):
        return reported
    ref = parse_model_id(reported)
    if ref is None or ref.kind != "foundation":
        return reported
    return f"arn:{partition(job.region)}:bedrock:{job.region}::foundation-model/{reported}"


def build(event: JobEvent, job: Job) -> Envelope:
    """The envelope of ``event`` (a recorded status change of ``job``, with its ``seq``)."""
    arn = job_arn(job.region, job.account_id, job.job_id)
    event_id = str(uuid.uuid5(_ID_NAMESPACE, f"{arn}#{event.seq}"))
    body: dict[str, Any] = {
        "version": "0",
        "id": event_id,
        "detail-type": DETAIL_TYPE,
        "source": SOURCE,
        "account": job.account_id,
        "time": iso_time(event.at),
        "region": job.region,
        "resources": [arn],
        "detail": {
            "version": "0.0",
            "accountId": job.account_id,
            "batchJobName": job.name,
            "batchJobArn": arn,
            "batchModelId": model_arn(job),
            "status": event.to_status.value,
            "failureMessage": event.message or "",
            "creationTime": creation_time(job.submit_time),
        },
    }
    return Envelope(
        event_id=event_id,
        job_id=job.job_id,
        account_id=job.account_id,
        time=event.at,
        body=body,
        json=orjson.dumps(body),
    )
