"""Who is calling, and how jobs are named on the wire (ARNs).

batchrock accepts any credentials (SigV4 signatures are not verified yet). The region comes
from the SigV4 credential scope (``Credential=AKID/20261128/us-east-1/bedrock/aws4_request``,
in the Authorization header or a presigned query), so a client configured for eu-west-1 sees
eu-west-1's jobs. The account is the access key id when that is 12 digits (so tests can act as
several accounts), and ``default_account_id`` otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs

import re2

from batchrock.service import Caller

# Searched for anywhere in a client's Authorization header: RE2, because Python's ``re`` takes
# time quadratic in the header on ``Credential=Credential=...`` (0.15 s for 16 KiB).
_SCOPE = re2.compile(r"Credential=([^/,\s]+)/[0-9]{8}/([a-z0-9-]+)/[^/,\s]+/aws4_request")
_ACCOUNT = re.compile(r"\d{12}")
_JOB_ARN = re.compile(
    r"arn:(aws(?:-[^:]+)?):bedrock:([a-z0-9-]{1,20}):(\d{12}):model-invocation-job/([a-z0-9]{12})"
)
_JOB_ID = re.compile(r"[a-z0-9]{12}")


def caller_from(
    authorization: str | None, query_string: str, *, default_region: str, default_account: str
) -> Caller:
    access_key: str | None = None
    region: str | None = None
    if authorization:
        scope = _plain_scope(authorization)
        if scope is None:
            match = _SCOPE.search(authorization)
            if match:
                scope = match.group(1), match.group(2)
        if scope is not None:
            access_key, region = scope
    if region is None and "X-Amz-Credential" in query_string:
        values = parse_qs(query_string).get("X-Amz-Credential", [])
        parts = values[0].split("/") if values else []
        if len(parts) == 5:
            access_key, region = parts[0], parts[2]
    account = access_key if access_key and _ACCOUNT.fullmatch(access_key) else default_account
    return Caller(account_id=account, region=region or default_region)


_REGION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def _plain_scope(authorization: str) -> tuple[str, str] | None:
    """What ``_SCOPE.search`` finds, by string operations, for the header every SDK sends
    (``... Credential=KEY/YYYYMMDD/REGION/SERVICE/aws4_request, ...``); ``None`` for any
    other shape (the regex decides those). A match must start at the first ``Credential=``
    when the credential there is whole, so both give the same answer; this one costs a
    fraction of a call into RE2 on every request."""
    start = authorization.find("Credential=")
    if start < 0:
        return None
    start += len("Credential=")
    end = authorization.find(",", start)
    credential = authorization[start:] if end < 0 else authorization[start:end]
    if credential != "".join(credential.split()):  # whitespace ends the regex's match
        return None
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        return None
    key, date, region, service = parts[0], parts[1], parts[2], parts[3]
    if not key or not service or len(date) != 8 or not date.isascii() or not date.isdigit():
        return None
    if not region or not _REGION_CHARS.issuperset(region):
        return None
    return key, region


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def job_arn(region: str, account_id: str, job_id: str) -> str:
    return f"arn:{partition(region)}:bedrock:{region}:{account_id}:model-invocation-job/{job_id}"


@dataclass(frozen=True, slots=True)
class JobRef:
    """A parsed jobIdentifier / resourceARN: a job id, plus the owner when an ARN named one."""

    job_id: str
    region: str | None = None
    account_id: str | None = None

    def owned_by(self, caller: Caller) -> bool:
        return (self.region is None or self.region == caller.region) and (
            self.account_id is None or self.account_id == caller.account_id
        )


def is_job_id(text: str) -> bool:
    """Whether ``text`` is a bare job id (12 characters of ``[a-z0-9]``)."""
    return _JOB_ID.fullmatch(text) is not None


def parse_job_identifier(text: str) -> JobRef | None:
    """A bare 12-character id or a model-invocation-job ARN; ``None`` for anything else."""
    if _JOB_ID.fullmatch(text):
        return JobRef(text)
    match = _JOB_ARN.fullmatch(text)
    if match:
        return JobRef(match.group(4), region=match.group(2), account_id=match.group(3))
    return None
