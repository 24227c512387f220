"""Opaque, keyset-based pagination tokens for ListModelInvocationJobs.

A token holds the (submitTime, jobId) of the last job on the page and a fingerprint of the
listing it belongs to (caller, filters, order). Paging resumes strictly after that key, so jobs
created or changed while a client pages never shift earlier pages: no job that existed when
paging began is skipped or repeated. A token replayed with other filters, or that is not one of
ours, is a ValidationException.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

import orjson

from batchrock.clock import from_micros, to_micros
from batchrock.errors import ValidationException
from batchrock.service import Caller
from batchrock.store.base import Cursor, JobFilter

_VERSION = 1


def fingerprint(caller: Caller, filter: JobFilter, descending: bool) -> str:
    parts = [
        caller.account_id,
        caller.region,
        filter.status.value if filter.status else "",
        filter.name_contains or "",
        str(to_micros(filter.submitted_after)) if filter.submitted_after else "",
        str(to_micros(filter.submitted_before)) if filter.submitted_before else "",
        "D" if descending else "A",
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def encode(cursor: Cursor, listing: str) -> str:
    payload = orjson.dumps(
        {"v": _VERSION, "t": to_micros(cursor.submit_time), "j": cursor.job_id, "f": listing}
    )
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode(token: str, listing: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = orjson.loads(raw)
        if not isinstance(data, dict) or data.get("v") != _VERSION:
            raise ValueError("unknown version")
        submit = from_micros(int(data["t"]))
        job_id = str(data["j"])
        owner = str(data["f"])
    except (ValueError, KeyError, TypeError, OverflowError, binascii.Error, orjson.JSONDecodeError):
        raise ValidationException("Invalid pagination token: the nextToken is malformed.") from None
    if owner != listing:
        raise ValidationException(
            "Invalid pagination token: the nextToken was issued for a request with different "
            "parameters. Use the same filters and sort order as the request that returned it."
        )
    return Cursor(submit, job_id)
