"""Which buckets a job may read and write: its account's grants, checked while Validating.

A job reads its input bucket and writes its output bucket with the service's own object-store
credentials, so the grant is what keeps one account's jobs out of another's data (on AWS the
job's IAM role does this). A :class:`BucketPolicy` answers for an account and a bucket; the
runner fails a job in Validating (and again before it starts running, in case a grant was
withdrawn meanwhile) with the message :func:`refusal` gives. docs/access.md, "Bucket grants".

- :class:`OpenBuckets`: open mode (no credentials file): every account may use every bucket,
  and no bucket has a known owner;
- :class:`GrantTable`: grants and owners from plain mappings (tests, and the shape a
  credentials file's ``buckets = ["team-a-*"]`` entries take).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from fnmatch import fnmatchcase
from typing import Protocol

from batchrock.jobs import Job
from batchrock.objects.base import InvalidLocation, parse_s3_uri


class BucketPolicy(Protocol):
    def may_access(self, account_id: str, bucket: str) -> bool:
        """Whether jobs of ``account_id`` may read and write ``bucket``."""
        ...

    def owner_of(self, bucket: str) -> str | None:
        """The account owning ``bucket``, or ``None`` when unknown (then ``s3BucketOwner``
        cannot be checked, and is not)."""
        ...


class OpenBuckets:
    """Open mode: any account, any bucket; owners unknown."""

    def may_access(self, account_id: str, bucket: str) -> bool:
        return True

    def owner_of(self, bucket: str) -> str | None:
        return None


class GrantTable:
    """Grants as ``{account: [bucket patterns]}`` (``fnmatch``, case-sensitive, as bucket
    names are lower case) and owners as ``{bucket: account}``; a bucket with no owner entry
    belongs to the one account granted it, if exactly one is."""

    def __init__(
        self,
        grants: Mapping[str, Collection[str]],
        owners: Mapping[str, str] | None = None,
    ) -> None:
        self.grants = {account: tuple(patterns) for account, patterns in grants.items()}
        self.owners = dict(owners or {})

    def may_access(self, account_id: str, bucket: str) -> bool:
        return any(fnmatchcase(bucket, p) for p in self.grants.get(account_id, ()))

    def owner_of(self, bucket: str) -> str | None:
        if bucket in self.owners:
            return self.owners[bucket]
        granted = [a for a in self.grants if self.may_access(a, bucket)]
        return granted[0] if len(granted) == 1 else None


def refusal(policy: BucketPolicy, job: Job) -> str | None:
    """The job's failure message if it may not use its input or output bucket, else ``None``.

    Checked before the buckets are looked at, so a job learns nothing (not even whether it
    exists) about a bucket its account has no grant for. The message names the bucket and
    the account, never the bucket's owner.
    """
    for side, uri, expected_owner in (
        ("input", job.input_s3_uri, job.input_bucket_owner),
        ("output", job.output_s3_uri, job.output_bucket_owner),
    ):
        try:
            bucket = parse_s3_uri(uri).bucket
        except InvalidLocation:
            continue  # not ours to judge: the input and output checks name the problem
        if not policy.may_access(job.account_id, bucket):
            return (
                f"Access denied to the {side} S3 bucket {bucket!r} ({uri}): account "
                f"{job.account_id} has no grant for it."
            )
        owner = policy.owner_of(bucket) if expected_owner is not None else None
        if owner is not None and owner != expected_owner:
            return (
                f"Access denied to the {side} S3 bucket {bucket!r} ({uri}): it is not owned "
                f"by account {expected_owner}, the s3BucketOwner given for the {side}."
            )
    return None


class WithFilesBuckets:
    """``inner``, plus each account's own files bucket (``{prefix}-{account}``, where the
    Files and Batch API keep its uploads and results: docs/openai.md), which only that
    account may use and which it owns."""

    def __init__(self, inner: BucketPolicy, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix + "-"

    def _owner(self, bucket: str) -> str | None:
        if bucket.startswith(self.prefix):
            account = bucket[len(self.prefix) :]
            if len(account) == 12 and account.isdigit():
                return account
        return None

    def may_access(self, account_id: str, bucket: str) -> bool:
        owner = self._owner(bucket)
        if owner is not None:
            return owner == account_id
        return self.inner.may_access(account_id, bucket)

    def owner_of(self, bucket: str) -> str | None:
        return self._owner(bucket) or self.inner.owner_of(bucket)
