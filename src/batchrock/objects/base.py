"""Object storage as the engine sees it: buckets of keys, read as a stream, written whole.

Two implementations: :mod:`.local` (the embedded default, ``s3://bucket/key`` is a file under
``DATA_DIR/s3/bucket/key``) and :mod:`.s3` (any S3-compatible service through obstore).
Errors are turned into :class:`ObjectStoreError` subclasses whose messages a user can act on;
the engine copies them into a job's ``message``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, cast

#: Chunk size for streamed reads; large enough that per-chunk overhead does not matter.
READ_CHUNK_BYTES = 4 * 1024 * 1024


class ObjectStoreError(Exception):
    """Object storage failed; the message is user-facing."""


class NoSuchBucket(ObjectStoreError):
    def __init__(self, bucket: str) -> None:
        super().__init__(f"The S3 bucket {bucket!r} does not exist or cannot be reached.")
        self.bucket = bucket


class NoSuchKey(ObjectStoreError):
    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"The S3 object s3://{bucket}/{key} does not exist.")
        self.bucket = bucket
        self.key = key


class ObjectChanged(ObjectStoreError):
    """A read asked for one version of an object (``if_match``) and found another."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"The S3 object s3://{bucket}/{key} changed while it was read.")
        self.bucket = bucket
        self.key = key


class InvalidLocation(ObjectStoreError):
    """An S3 URI or key that cannot name an object (bad syntax, or a key leaving its bucket)."""


class NotAnObject(ObjectStoreError):
    """A local entry that is not a regular file (a FIFO, socket, device or symbolic link): the
    local store neither opens nor follows one. ``reason`` completes a sentence about ``uri``."""

    def __init__(self, bucket: str, key: str, reason: str) -> None:
        self.uri = f"s3://{bucket}/{key}"
        self.reason = reason
        super().__init__(f"{self.uri} {reason}")


class NotAFolder(ObjectStoreError):
    """A key that runs through a file (``c25/a.jsonl/x`` where ``c25/a.jsonl`` is a file), or a
    local bucket that is a file: S3 allows both, a folder tree cannot."""

    def __init__(self, message: str, *, bucket: str, key: str) -> None:
        super().__init__(message)
        self.bucket = bucket
        self.key = key


class ReadStalled(ObjectStoreError):
    """No data came for ``seconds`` while reading an object (``object_read_timeout_seconds``)."""

    def __init__(self, bucket: str, key: str, seconds: float) -> None:
        super().__init__(
            f"Reading s3://{bucket}/{key} stalled: no data came for {seconds:g} seconds "
            f"(the setting object_read_timeout_seconds)."
        )
        self.seconds = seconds


class UploadGone(ObjectStoreError):
    """A multipart upload that no longer exists: completed (by this job, maybe by a worker
    that lost it) or aborted."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"The upload of s3://{bucket}/{key} was finished or abandoned.")
        self.bucket = bucket
        self.key = key


@dataclass(frozen=True, slots=True)
class S3Location:
    """``s3://bucket/key``; ``key`` may be empty (the whole bucket) or a prefix."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, *parts: str) -> S3Location:
        """The location ``key/part/...`` (one ``/`` between parts, whatever the key ends with)."""
        segments = [self.key.rstrip("/")] if self.key.strip("/") else []
        segments += [p.strip("/") for p in parts if p.strip("/")]
        return S3Location(self.bucket, "/".join(segments))


def parse_s3_uri(uri: str) -> S3Location:
    """Split ``s3://bucket/key``. Raises :class:`InvalidLocation` for anything else."""
    if not uri.startswith("s3://"):
        raise InvalidLocation(f"{uri!r} is not an S3 URI (expected s3://bucket/key).")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidLocation(f"{uri!r} names no bucket.")
    return S3Location(bucket, key)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    #: Changes whenever the object's content may have: S3's ETag; on the local store, the
    #: file's inode, size and modification time. ``None`` where the store gives none.
    etag: str | None = None
    modified: datetime | None = None


class ObjectStore(Protocol):
    """What the engine needs from object storage. Implementations are safe to share."""

    async def bucket_exists(self, bucket: str) -> bool: ...

    def local_folder(self, bucket: str, key: str = "") -> Path | None:
        """The folder that holds ``s3://bucket/key`` when buckets are folders on this machine
        (messages about a missing bucket or input name it); ``None`` for a remote service."""
        ...

    async def list_objects(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key.
        Raises :class:`NoSuchBucket`."""
        ...

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's size, or ``None`` when there is no such object."""
        ...

    def read(
        self, bucket: str, key: str, start: int = 0, *, if_match: str | None = None
    ) -> AsyncIterator[bytes]:
        """The object's bytes from offset ``start`` on, in chunks. Raises :class:`NoSuchKey`.
        ``if_match``: the ``etag`` the object must still have, else :class:`ObjectChanged`
        (a conditional GET on S3; the local store checks when the read starts and ends)."""
        ...

    async def put(self, bucket: str, key: str, data: bytes) -> None:
        """Write the whole object at once: readers see the old object or the new one."""
        ...

    async def put_file(self, bucket: str, key: str, path: Path, *, move: bool = False) -> None:
        """Upload a local file as the whole object (same all-or-nothing rule as :meth:`put`).
        ``move=True``: the caller no longer needs the file, and the store may take it over
        (the local store then renames it into place instead of copying)."""
        ...

    async def delete(self, bucket: str, key: str) -> None:
        """Remove the object; nothing happens when there is none."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class UploadedPart:
    number: int
    etag: str
    size: int


class ResumableUploads(Protocol):
    """An object written in parts that outlive the writer (S3 multipart uploads): a part,
    once uploaded, can be completed into the object by another process on another machine,
    given the upload id and the parts' numbers and ETags."""

    #: How much output a part holds at least (all parts but the last): S3 wants 5 MiB.
    part_bytes: int

    async def create_upload(self, bucket: str, key: str) -> str:
        """Start an upload of ``key``; its id."""
        ...

    async def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, data: bytes
    ) -> UploadedPart:
        """Upload part ``number`` (1-10000; uploading a number again replaces it).
        Raises :class:`UploadGone`."""
        ...

    async def complete_upload(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[UploadedPart]
    ) -> None:
        """Make ``key`` the parts, in order, at once. Raises :class:`UploadGone`."""
        ...

    async def abort_uploads(self, bucket: str, prefix: str) -> int:
        """Abort every unfinished upload of a key under ``prefix``; how many."""
        ...


def resumable(store: ObjectStore) -> ResumableUploads | None:
    """The store's resumable uploads, or ``None`` when it has none (the local store, whose
    spool and hard link are faster than any upload)."""
    return cast(ResumableUploads, store) if getattr(store, "part_bytes", None) else None


def multipart_etag(parts: Sequence[UploadedPart]) -> str | None:
    """The ETag S3 gives the object completed from ``parts`` (the MD5 of their MD5s, and
    their count), when every part's ETag is its MD5; ``None`` otherwise."""
    digests = [p.etag.strip('"') for p in parts]
    if not all(len(d) == 32 and all(c in "0123456789abcdef" for c in d) for d in digests):
        return None
    joined = b"".join(bytes.fromhex(d) for d in digests)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(parts)}"
