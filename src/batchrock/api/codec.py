"""Jobs to and from Bedrock's JSON shapes (camelCase, ISO 8601 timestamps, unions)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from batchrock.api.identity import job_arn
from batchrock.catalogue import reported_model_id
from batchrock.jobs import Job


def format_time(value: datetime) -> str:
    """Smithy date-time: UTC with millisecond precision, e.g. ``2024-08-01T12:34:56.789Z``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class TimeOutOfRange(ValueError):
    """A well-formed time that no ``datetime`` holds (before year 1 or after 9999 in UTC)."""


def parse_time(text: str) -> datetime:
    """RFC 3339 with 0-9 fractional digits and ``Z`` or an offset (what SDKs send), or epoch
    seconds. Raises ``ValueError``, and :class:`TimeOutOfRange` for a time a ``datetime``
    cannot hold (``1e20``, ``inf``, ``9999-12-31T23:59:59-01:00``: year 10000 in UTC)."""
    try:
        return _parse_time(text.strip())
    except (OverflowError, OSError) as exc:
        raise TimeOutOfRange(str(exc)) from None


def _parse_time(text: str) -> datetime:
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(seconds):
            raise ValueError("not a number")
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except ValueError as exc:  # "year 33658 is out of range"
            raise TimeOutOfRange(str(exc)) from None
    normalized = text.replace("z", "Z")
    if normalized.endswith("Z"):
        normalized = normalized[:-1] + "+00:00"
    # Python accepts at most 6 fractional digits: trim nanoseconds.
    if "." in normalized:
        head, _, rest = normalized.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, tail = rest[:digits], rest[digits:]
        normalized = f"{head}.{(frac[:6] or '0')}{tail}"
    parsed = datetime.fromisoformat(normalized)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def job_to_wire(job: Job) -> dict[str, Any]:
    """The 20 members of GetModelInvocationJobResponse / ModelInvocationJobSummary.

    Members are left out only when unset (None), never because they are zero or empty.
    """
    s3_in: dict[str, Any] = {}
    if job.input_format is not None:
        s3_in["s3InputFormat"] = job.input_format
    s3_in["s3Uri"] = job.input_s3_uri
    if job.input_bucket_owner is not None:
        s3_in["s3BucketOwner"] = job.input_bucket_owner
    s3_out: dict[str, Any] = {"s3Uri": job.output_s3_uri}
    if job.output_kms_key_id is not None:
        s3_out["s3EncryptionKeyId"] = job.output_kms_key_id
    if job.output_bucket_owner is not None:
        s3_out["s3BucketOwner"] = job.output_bucket_owner

    out: dict[str, Any] = {
        "jobArn": job_arn(job.region, job.account_id, job.job_id),
        "jobName": job.name,
        # A cross-Region inference profile id comes back as the profile's ARN, as on Bedrock.
        "modelId": reported_model_id(job.model_id, job.region, job.account_id),
    }
    if job.client_request_token is not None:
        out["clientRequestToken"] = job.client_request_token
    out["roleArn"] = job.role_arn
    out["status"] = job.status.value
    if job.message is not None:
        out["message"] = job.message
    out["submitTime"] = format_time(job.submit_time)
    out["lastModifiedTime"] = format_time(job.last_modified_time)
    if job.end_time is not None:
        out["endTime"] = format_time(job.end_time)
    out["inputDataConfig"] = {"s3InputDataConfig": s3_in}
    out["outputDataConfig"] = {"s3OutputDataConfig": s3_out}
    if job.vpc_subnet_ids is not None or job.vpc_security_group_ids is not None:
        out["vpcConfig"] = {
            "subnetIds": list(job.vpc_subnet_ids or ()),
            "securityGroupIds": list(job.vpc_security_group_ids or ()),
        }
    out["timeoutDurationInHours"] = job.timeout_hours
    out["jobExpirationTime"] = format_time(job.expiration_time)
    out["modelInvocationType"] = job.invocation_type
    c = job.counters
    out["totalRecordCount"] = c.total
    out["processedRecordCount"] = c.processed
    out["successRecordCount"] = c.success
    out["errorRecordCount"] = c.error
    return out
