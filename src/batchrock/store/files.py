"""The files seam: uploaded files and the jobs submitted from them, in domain terms.

A small interface beside :class:`batchrock.store.base.JobStore`, so that another store
(PostgreSQL) implements it as two plain tables. It backs the OpenAI-compatible Files and
Batch APIs (``api/openai``), but knows nothing of their wire: the bytes of a file live in the
object store (``bucket``/``key``), its metadata here; a job started from a file is an
ordinary job of the job store, and :class:`FileJob` only remembers what that job was made from
and which files hold its results. Every read is per account: other accounts see nothing.
Contract: ``tests/contract/test_files.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredFile:
    """One uploaded (or service-written) file."""

    file_id: str
    account_id: str
    #: What the file is for (``batch``, ``batch_output``, ...), as the client named it.
    purpose: str
    filename: str
    size: int
    created_at: datetime
    expires_at: datetime | None = None
    #: Where its bytes are, in the object store.
    bucket: str
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FileJob:
    """What a job submitted from a file was made from, and where its results went."""

    #: The job of the job store (same id).
    job_id: str
    account_id: str
    created_at: datetime
    #: The request path each line was for (an opaque string here).
    endpoint: str
    input_file_id: str
    metadata: Mapping[str, str] | None = None
    #: Why the input was refused: ``{"code", "message", "line", "param"}`` each.
    errors: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    #: Set once, when the results were written out as files.
    output_file_id: str | None = None
    error_file_id: str | None = None
    finished_at: datetime | None = None


class FileStore(Protocol):
    async def add_file(self, stored: StoredFile) -> None:
        """Insert a file. A file whose id exists already is left as it is (result files
        have ids derived from their job, and may be written twice)."""
        ...

    async def get_file(self, account_id: str, file_id: str) -> StoredFile | None:
        """The file as its owner sees it, or ``None`` (other accounts see nothing)."""
        ...

    async def list_files(
        self,
        account_id: str,
        *,
        limit: int,
        purpose: str | None = None,
        after: str | None = None,
        descending: bool = True,
    ) -> list[StoredFile]:
        """Up to ``limit`` files ordered by (created_at, file_id), strictly after the file
        ``after`` in that order (an unknown ``after``: none)."""
        ...

    async def delete_file(self, account_id: str, file_id: str) -> StoredFile | None:
        """Remove the file's record; the removed record, or ``None`` if there was none."""
        ...

    async def expired_files(self, before: datetime, *, limit: int) -> list[StoredFile]:
        """Up to ``limit`` files of every account whose ``expires_at`` is at or before
        ``before``, soonest expiry first (the expiry sweep removes their bytes, then them)."""
        ...

    async def add_file_job(self, record: FileJob) -> None:
        """Insert the record. It is written before its job exists (so that no crash leaves
        a job without its record): a record whose job the job store lacks means nothing."""
        ...

    async def delete_file_job(self, account_id: str, job_id: str) -> bool:
        """Remove a record (one whose job was never made); whether there was one."""
        ...

    async def get_file_job(self, account_id: str, job_id: str) -> FileJob | None: ...

    async def list_file_jobs(
        self, account_id: str, *, limit: int, after: str | None = None
    ) -> list[FileJob]:
        """Up to ``limit`` records, newest first (created_at, job_id descending), strictly
        after the job ``after`` in that order (an unknown ``after``: none)."""
        ...

    async def finish_file_job(
        self,
        job_id: str,
        *,
        output_file_id: str | None,
        error_file_id: str | None,
        finished_at: datetime,
    ) -> FileJob:
        """Record the result files once: a record finished already keeps its first result
        (and that one is returned), so two processes finishing at once agree."""
        ...
