"""Media a record names by S3 location (Nova's ``s3Location``), checked with its job's access.

On Bedrock the job's service role reads such media; a reference to an object that does not
exist, or to a bucket the role may not read, fails that record (the record's ``error``), not
the job. batchrock's job reads with the service's own object-store credentials, so the job's
account grants (engine/grants.py) decide what it may read, as for its input and output. The
check is a bounded ``head`` through the objects seam (off the event loop in every store).

Bedrock's exact wording for these record errors is **unconfirmed** (service-facts has none);
the errorCode is 400, as for Bedrock's other validation failures of a record.
"""

from __future__ import annotations

import asyncio
import logging

from batchrock.backends.base import RecordError
from batchrock.backends.neutral import MediaRef
from batchrock.engine.grants import BucketPolicy
from batchrock.objects.base import InvalidLocation, ObjectStore, ObjectStoreError, parse_s3_uri

log = logging.getLogger("batchrock.engine")

#: How long one media check may take before the record fails (retryably) instead.
MEDIA_CHECK_SECONDS = 10.0


class JobMedia:
    """The :class:`~batchrock.backends.base.MediaReader` of one job."""

    def __init__(
        self,
        objects: ObjectStore,
        policy: BucketPolicy,
        account_id: str,
        timeout_s: float = MEDIA_CHECK_SECONDS,
    ) -> None:
        self.objects = objects
        self.policy = policy
        self.account_id = account_id
        self.timeout_s = timeout_s

    async def check(self, ref: MediaRef) -> RecordError | None:
        where = f" ({ref.where})" if ref.where else ""
        try:
            location = parse_s3_uri(ref.uri)
        except InvalidLocation as exc:
            return RecordError(400, f"The S3 URI {ref.uri!r}{where} is not valid: {exc}")
        bucket = location.bucket
        if not location.key or location.key.endswith("/"):
            return RecordError(400, f"The S3 URI {ref.uri}{where} does not name an object.")
        # The grant first, so a record learns nothing about a bucket its account may not use.
        if not self.policy.may_access(self.account_id, bucket):
            return RecordError(
                400,
                f"Access denied to the S3 object {ref.uri}{where}: account {self.account_id} "
                f"has no grant for the bucket {bucket!r}.",
            )
        owner = self.policy.owner_of(bucket) if ref.bucket_owner is not None else None
        if owner is not None and owner != ref.bucket_owner:
            return RecordError(
                400,
                f"Access denied to the S3 object {ref.uri}{where}: the bucket {bucket!r} is not "
                f"owned by account {ref.bucket_owner}, the bucketOwner given for it.",
            )
        try:
            async with asyncio.timeout(self.timeout_s):
                info = await self.objects.head(bucket, location.key)
        except TimeoutError:
            return RecordError(
                503,
                f"Checking the S3 object {ref.uri}{where} took longer than {self.timeout_s:g} s.",
                retryable=True,
            )
        except ObjectStoreError as exc:
            log.warning("media check of %s failed: %s", ref.uri, exc)
            return RecordError(400, f"The S3 object {ref.uri}{where} cannot be read: {exc}")
        if info is None:
            return RecordError(400, f"The S3 object {ref.uri}{where} does not exist.")
        return None
