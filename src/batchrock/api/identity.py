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
    credential = _credential(authorization) if authorization else None
    if credential is not None:
        # A client sends the same credential (key, day, region) with every request: its
        # caller is made once (parsing it, the account's match and a frozen dataclass cost
        # about 1.5 µs a request; docs/benchmarks.md "Where a Get's CPU goes").
        found = _callers.get((credential, default_region, default_account))
        if found is not None:
            return found
    access_key: str | None = None
    region: str | None = None
    plain = None if credential is None else _plain_scope(credential)
    if authorization:
        scope = plain
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
    caller = Caller(account_id=account, region=region or default_region)
    if plain is not None and credential is not None:
        # Only a credential read whole decides the caller alone (else the regex's search of
        # the whole header, or the query, may).
        if len(_callers) >= _CALLERS_KEPT:
            _callers.clear()
        _callers[(credential, default_region, default_account)] = caller
    return caller


#: Callers by (credential, default region, default account), at most _CALLERS_KEPT.
_callers: dict[tuple[str, str, str], Caller] = {}
_CALLERS_KEPT = 1024

_REGION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def _credential(authorization: str) -> str | None:
    """What follows the first ``Credential=`` up to the next comma (or the end)."""
    start = authorization.find("Credential=")
    if start < 0:
        return None
    start += len("Credential=")
    end = authorization.find(",", start)
    return authorization[start:] if end < 0 else authorization[start:end]


def _plain_scope(credential: str) -> tuple[str, str] | None:
    """What ``_SCOPE.search`` finds in the header, by string operations, for the credential
    every SDK sends (``KEY/YYYYMMDD/REGION/SERVICE/aws4_request``, what follows the first
    ``Credential=``); ``None`` for any other shape (the regex decides those). A match must
    start at the first ``Credential=`` when the credential there is whole, so both give the
    same answer; this one costs a fraction of a call into RE2 on every request."""
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


def decides_caller(credential: str) -> bool:
    """Whether the credential alone (what follows the Authorization header's first
    ``Credential=``, up to the next comma) decides :func:`caller_from`'s caller, given the
    defaults: for any header with that credential, whatever else it and the query hold."""
    return _plain_scope(credential) is not None


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
