"""Batches: a batch is a job. Its statuses, timestamps and counts come from the job and its
status history; its output and error files are written from the job's output once it ends."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from batchrock.api.openai import lines
from batchrock.api.openai.files import SpoolFile, bucket_for, transform
from batchrock.jobs import Job, JobEvent, JobStatus
from batchrock.objects.base import NoSuchKey, ObjectStore, parse_s3_uri
from batchrock.store.files import FileJob, FileStore, StoredFile

log = logging.getLogger("batchrock.api.openai")
S = JobStatus

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
WINDOW_SECONDS = 24 * 3600
#: The job's input, in the batch's folder (its output goes to {folder}/{job_id}/).
INPUT_NAME = "input.jsonl"

#: OpenAI's status of each job status (docs/openai.md has the table).
STATUS = {
    S.SUBMITTED: "validating",
    S.VALIDATING: "validating",
    S.SCHEDULED: "in_progress",
    S.IN_PROGRESS: "in_progress",
    S.STOPPING: "cancelling",
    S.STOPPED: "cancelled",
    S.FAILED: "failed",
    S.EXPIRED: "expired",
    S.PARTIALLY_COMPLETED: "expired",
    S.COMPLETED: "completed",
}
#: Job statuses whose output becomes the batch's output and error files (and Failed, once
#: records ran: :func:`has_results`).
WITH_RESULTS = frozenset({S.COMPLETED, S.PARTIALLY_COMPLETED, S.EXPIRED, S.STOPPED})


def has_results(job: Job) -> bool:
    """Whether the batch gets output and error files once it ends: every ended job whose
    records ran. A job that failed after records were answered keeps them (the engine settles
    its output before it fails it; docs/openai.md); one that failed validation ran none."""
    if job.status is S.FAILED:
        return job.counters.processed > 0
    return job.status in WITH_RESULTS


#: A batch's record is written before its job (store/files.py): a record without its job
#: is a creation in flight for this long, and after it one a crash cut short (removed).
ORPHAN_GRACE = timedelta(minutes=10)


def batch_id(job_id: str) -> str:
    return "batch_" + job_id


def job_id_of(batch: str) -> str | None:
    """The job id in a batch id, or ``None`` when it is not one."""
    job_id = batch.removeprefix("batch_")
    if batch.startswith("batch_") and len(job_id) == 12 and job_id.isalnum() and job_id.islower():
        return job_id
    return None


def _seconds(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def _first(events: list[JobEvent], *statuses: JobStatus) -> datetime | None:
    return next((e.at for e in events if e.to_status in statuses), None)


def to_wire(job: Job, record: FileJob, events: list[JobEvent]) -> dict[str, Any]:
    status = STATUS[job.status]
    finished = record.finished_at is not None
    if has_results(job) and not finished:
        status = "finalizing"
    c = job.counters
    errors = None
    if record.errors:
        errors = {"object": "list", "data": [dict(e) for e in record.errors]}
    elif job.status is S.FAILED and job.message:
        errors = {
            "object": "list",
            "data": [{"code": "batch_failed", "message": job.message, "param": None, "line": None}],
        }
    created = int(job.submit_time.timestamp())
    ended = _first(events, S.COMPLETED, S.PARTIALLY_COMPLETED, S.EXPIRED, S.STOPPED)
    return {
        "id": batch_id(job.job_id),
        "object": "batch",
        "endpoint": record.endpoint,
        "model": job.model_id or None,
        "errors": errors,
        "input_file_id": record.input_file_id,
        "completion_window": "24h",
        "status": status,
        "output_file_id": record.output_file_id,
        "error_file_id": record.error_file_id,
        "created_at": created,
        "in_progress_at": _seconds(_first(events, S.IN_PROGRESS)),
        "expires_at": created + WINDOW_SECONDS,
        "finalizing_at": _seconds(ended) if job.status is S.COMPLETED else None,
        "completed_at": _seconds(record.finished_at)
        if job.status is S.COMPLETED and finished
        else None,
        "failed_at": _seconds(_first(events, S.FAILED)),
        "expired_at": _seconds(_first(events, S.PARTIALLY_COMPLETED, S.EXPIRED)),
        "cancelling_at": _seconds(_first(events, S.STOPPING)),
        "cancelled_at": _seconds(_first(events, S.STOPPED)),
        "request_counts": {"total": c.total, "completed": c.success, "failed": c.error},
        "usage": {
            "input_tokens": c.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": c.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": c.input_tokens + c.output_tokens,
        },
        "metadata": dict(record.metadata) if record.metadata is not None else None,
    }


def result_file_id(job_id: str, kind: str) -> str:
    """The id of a batch's output or error file: the same however often it is written."""
    return "file-" + hashlib.blake2b(f"{job_id}/{kind}".encode(), digest_size=12).hexdigest()


class Finisher:
    """Writes the output and error files of ended batches, once (per process, one task per
    batch; across processes the store records the first result and the ids agree)."""

    def __init__(
        self, files: FileStore, objects: ObjectStore, spool_dir: Path, bucket_prefix: str
    ) -> None:
        self._files = files
        self._objects = objects
        self._spool_dir = spool_dir
        self._prefix = bucket_prefix
        self._running: dict[str, asyncio.Task[FileJob]] = {}

    def start(self, job: Job, record: FileJob, now: datetime) -> asyncio.Task[FileJob]:
        task = self._running.get(job.job_id)
        if task is None:
            task = asyncio.create_task(self._finish(job, record, now))
            self._running[job.job_id] = task
            task.add_done_callback(lambda done: self._done(job.job_id, done))
        return task

    def _done(self, job_id: str, task: asyncio.Task[FileJob]) -> None:
        self._running.pop(job_id, None)
        if not task.cancelled() and task.exception() is not None:
            # The next read of the batch tries again; say why this one did not finish it.
            log.warning(
                "batch %s: its result files could not be written",
                batch_id(job_id),
                exc_info=task.exception(),
            )

    async def _finish(self, job: Job, record: FileJob, now: datetime) -> FileJob:
        bucket = bucket_for(self._prefix, job.account_id)
        out_loc = parse_s3_uri(job.output_s3_uri)
        in_loc = parse_s3_uri(job.input_s3_uri)
        good, bad = SpoolFile(self._spool_dir), SpoolFile(self._spool_dir)
        await good.open()
        await bad.open()
        try:
            split = lines.OutputSplit(job.job_id)

            async def one_block(block: bytes) -> None:
                answered, refused = await asyncio.to_thread(split.feed, block)
                if answered:
                    await good.write(answered)
                if refused:
                    await bad.write(refused)

            key = out_loc.child(job.job_id, INPUT_NAME + ".out").key
            try:
                await transform(self._objects.read(out_loc.bucket, key), one_block)
            except NoSuchKey:
                pass  # nothing ran
            written = split.answered + split.refused
            if job.status in (S.PARTIALLY_COMPLETED, S.EXPIRED) and written < job.counters.total:
                unfinished = lines.Unfinished(job.job_id, written)

                async def expired_block(block: bytes) -> None:
                    data = await asyncio.to_thread(unfinished.feed, block)
                    if data:
                        await bad.write(data)

                await transform(self._objects.read(in_loc.bucket, in_loc.key), expired_block)
            ids: dict[str, str | None] = {}
            for kind, spool, name in (
                ("output", good, "batch_output.jsonl"),
                ("error", bad, "batch_errors.jsonl"),
            ):
                if not spool.size:
                    ids[kind] = None
                    await spool.discard()
                    continue
                file_id = result_file_id(job.job_id, kind)
                size = spool.size
                await spool.store(self._objects, bucket, f"files/{file_id}")
                await self._files.add_file(
                    StoredFile(
                        file_id=file_id,
                        account_id=job.account_id,
                        purpose="batch_output",
                        filename=f"{batch_id(job.job_id)}_{name}",
                        size=size,
                        created_at=now,
                        expires_at=now + timedelta(days=30),
                        bucket=bucket,
                        key=f"files/{file_id}",
                    )
                )
                ids[kind] = file_id
        except BaseException:
            await good.discard()
            await bad.discard()
            raise
        return await self._files.finish_file_job(
            job.job_id,
            output_file_id=ids["output"],
            error_file_id=ids["error"],
            finished_at=now,
        )
