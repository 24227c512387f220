"""Jobs to and from Bedrock's JSON shapes (camelCase, ISO 8601 timestamps, unions)."""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from batchrock.api.identity import job_arn
from batchrock.catalogue import reported_model_id
from batchrock.clock import to_micros
from batchrock.store.base import JobRow


def format_time(value: datetime) -> str:
    """Smithy date-time: UTC with millisecond precision, e.g. ``2024-08-01T12:34:56.789Z``."""
    return format_micros(to_micros(value))


def format_micros(value: int) -> str:
    """Smithy date-time from integer microseconds since the epoch: UTC with millisecond
    precision, e.g. ``2024-08-01T12:34:56.789Z`` (what ``strftime("%Y-%m-%dT%H:%M:%S.")``
    plus the milliseconds gave, for every year from 1000 to 9999; earlier years, which no job
    holds, get four digits too where ``strftime`` dropped the leading zeros).

    A listing formats four times per job; the part up to the minute is cached and the rest
    is two table lookups, instead of a ``datetime`` and a ``strftime`` per field.
    """
    minutes, micros = divmod(value, 60_000_000)
    prefix = _MINUTES.get(minutes)
    if prefix is None:
        prefix = _minute_prefix(minutes)
    seconds, micros = divmod(micros, 1_000_000)
    return prefix + _SECONDS[seconds] + _MILLIS[micros // 1000]


_SECONDS = [f"{s:02d}." for s in range(60)]
_MILLIS = [f"{ms:03d}Z" for ms in range(1000)]
_MINUTES: dict[int, str] = {}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _minute_prefix(minutes: int) -> str:
    if len(_MINUTES) >= 65_536:  # bounded; a page's jobs share few minutes, days or months
        _MINUTES.clear()
    t = _EPOCH + timedelta(minutes=minutes)
    prefix = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:"
    _MINUTES[minutes] = prefix
    return prefix


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


def job_to_wire(job: JobRow) -> dict[str, Any]:
    """The 20 members of GetModelInvocationJobResponse / ModelInvocationJobSummary.

    Members are left out only when unset (None), never because they are zero or empty. The
    dict is built whole (one display) and the unset members deleted after, which keeps the
    members' order and is cheaper than inserting them one by one (a page builds 1000).
    """
    region, account = job.region, job.account_id
    s3_in: dict[str, Any] = {
        "s3InputFormat": job.input_format,
        "s3Uri": job.input_s3_uri,
        "s3BucketOwner": job.input_bucket_owner,
    }
    if job.input_format is None:
        del s3_in["s3InputFormat"]
    if job.input_bucket_owner is None:
        del s3_in["s3BucketOwner"]
    s3_out: dict[str, Any] = {
        "s3Uri": job.output_s3_uri,
        "s3EncryptionKeyId": job.output_kms_key_id,
        "s3BucketOwner": job.output_bucket_owner,
    }
    if job.output_kms_key_id is None:
        del s3_out["s3EncryptionKeyId"]
    if job.output_bucket_owner is None:
        del s3_out["s3BucketOwner"]
    end_time = job.end_time
    vpc = job.vpc
    out: dict[str, Any] = {
        "jobArn": _arn_prefix(region, account) + job.job_id,
        "jobName": job.name,
        # A cross-Region inference profile id comes back as the profile's ARN, as on Bedrock.
        "modelId": _reported_model_id(job.model_id, region, account),
        "clientRequestToken": job.client_request_token,
        "roleArn": job.role_arn,
        "status": job.status,
        "message": job.message,
        "submitTime": format_micros(job.submit_time),
        "lastModifiedTime": format_micros(job.last_modified_time),
        "endTime": None if end_time is None else format_micros(end_time),
        "inputDataConfig": {"s3InputDataConfig": s3_in},
        "outputDataConfig": {"s3OutputDataConfig": s3_out},
        "vpcConfig": None
        if vpc is None
        else {"subnetIds": list(vpc[0]), "securityGroupIds": list(vpc[1])},
        "timeoutDurationInHours": job.timeout_hours,
        "jobExpirationTime": format_micros(job.expiration_time),
        "modelInvocationType": job.invocation_type,
        "totalRecordCount": job.total_records,
        "processedRecordCount": job.processed_records,
        "successRecordCount": job.success_records,
        "errorRecordCount": job.error_records,
    }
    if job.client_request_token is None:
        del out["clientRequestToken"]
    if job.message is None:
        del out["message"]
    if end_time is None:
        del out["endTime"]
    if vpc is None:
        del out["vpcConfig"]
    return out


# A page repeats the same few models, regions and accounts.
_reported_model_id = functools.lru_cache(maxsize=1024)(reported_model_id)


@functools.lru_cache(maxsize=1024)
def _arn_prefix(region: str, account_id: str) -> str:
    return job_arn(region, account_id, "")
