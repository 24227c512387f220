"""Batches: a batch is a job. Its statuses, timestamps and counts come from the job and its
status history; its output and error files are written from the job's output once it ends."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from batchrock.api.openai import lines
from batchrock.api.openai.files import SpoolFile, bucket_for, transform
from batchrock.clock import Clock
from batchrock.jobs import Job, JobEvent, JobStatus
from batchrock.objects.base import NoSuchKey, ObjectStore, ObjectStoreError, parse_s3_uri
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


#: How long (service time: ``time_scale`` shortens it) the batch's output and error files are
#: tried again, on each read, after the first write of them this process saw fail; then the
#: batch is given up on: its record is finished without files (:func:`results_lost`).
FINALIZE_RETRY = timedelta(minutes=10)
#: The ``errors`` code of a batch whose results could not be written (llama-stack's code).
OUTPUT_FAILED = "output_failed"
#: Batches whose result files are being retried, remembered at most (the oldest goes first).
_FAILING_MAX = 10_000


def results_lost(job: Job, record: FileJob) -> bool:
    """Whether the batch's output and error files were given up on (:data:`FINALIZE_RETRY`):
    its record is finished without either file although its job's output holds requests.
    (The files seam keeps no reason; a batch whose files were written always has one of
    them: its job's output holds every request it counts, docs/openai.md.)"""
    if record.finished_at is None or record.output_file_id or record.error_file_id:
        return False
    if not has_results(job):
        return False
    c = job.counters
    if c.success + c.error:
        return True
    # An expired batch's error file also holds the requests that never ran.
    return job.status in (S.PARTIALLY_COMPLETED, S.EXPIRED) and c.total > 0


def _error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": None}


def _errors(job: Job, record: FileJob, lost: bool) -> dict[str, Any] | None:
    data = [dict(e) for e in record.errors]
    if not data and job.message and job.status is S.FAILED:
        data.append(_error("batch_failed", job.message))
    elif not data and job.message and job.status is S.STOPPED:
        # A stop ends Stopped whatever refused its output; the job's message says what did
        # (the engine sets none on a plain stop).
        data.append(_error(OUTPUT_FAILED, job.message))
    if lost:
        minutes = int(FINALIZE_RETRY.total_seconds() // 60)
        data.append(
            _error(
                OUTPUT_FAILED,
                "The batch's output and error files could not be written to the files "
                f"bucket (the object store refused them for {minutes} minutes; the server's "
                f"log says why). Its job's output still holds the answers: "
                f"{job.output_s3_uri}{job.job_id}/. Resubmit the batch to get them as files.",
            )
        )
    return {"object": "list", "data": data} if data else None


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
    lost = results_lost(job, record)
    if has_results(job) and not finished:
        status = "finalizing"
    elif lost and job.status is S.COMPLETED:
        status = "failed"  # no results to show: not completed (docs/openai.md)
    c = job.counters
    errors = _errors(job, record, lost)
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
        "completed_at": _seconds(record.finished_at) if status == "completed" else None,
        "failed_at": _seconds(record.finished_at)
        if lost and job.status is S.COMPLETED
        else _seconds(_first(events, S.FAILED)),
        "expired_at": _seconds(_first(events, S.PARTIALLY_COMPLETED, S.EXPIRED)),
        "cancelling_at": _seconds(_first(events, S.STOPPING)),
        "cancelled_at": _seconds(_first(events, S.STOPPED)),
        # What the batch's files hold (docs/openai.md): nothing, when they were given up on.
        "request_counts": {
            "total": c.total,
            "completed": 0 if lost else c.success,
            "failed": 0 if lost else c.error,
        },
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


@dataclass(slots=True)
class _Failing:
    """A batch whose result files this process could not write yet."""

    since: float  # Clock.monotonic() of the first failure
    reason: str  # the last one logged
    attempts: int = 1


class Finisher:
    """Writes the output and error files of ended batches, once (per process, one task per
    batch; across processes the store records the first result and the ids agree).

    A write the object store refuses leaves the batch ``finalizing`` and is tried again by
    the next read, for :data:`FINALIZE_RETRY` after the first failure; then the batch is
    given up on (:func:`results_lost`). Each failure is logged once per reason, not once per
    read (a client polls)."""

    def __init__(
        self,
        files: FileStore,
        objects: ObjectStore,
        spool_dir: Path,
        bucket_prefix: str,
        clock: Clock,
    ) -> None:
        self._files = files
        self._objects = objects
        self._spool_dir = spool_dir
        self._prefix = bucket_prefix
        self._clock = clock
        self._running: dict[str, asyncio.Task[FileJob]] = {}
        self._failing: dict[str, _Failing] = {}

    def start(self, job: Job, record: FileJob, now: datetime) -> asyncio.Task[FileJob]:
        """The task writing the batch's files: it returns the record, finished (files
        written, or given up on) or as it was (the write failed and is tried again later)."""
        task = self._running.get(job.job_id)
        if task is None:
            task = asyncio.create_task(self._finish(job, record, now))
            self._running[job.job_id] = task
            task.add_done_callback(lambda done: self._done(job.job_id, done))
        return task

    def _done(self, job_id: str, task: asyncio.Task[FileJob]) -> None:
        self._running.pop(job_id, None)
        if not task.cancelled() and task.exception() is not None:
            # Not the object store (a busy job store, say): the next read tries again.
            log.warning(
                "batch %s: its result files could not be written",
                batch_id(job_id),
                exc_info=task.exception(),
            )

    async def _finish(self, job: Job, record: FileJob, now: datetime) -> FileJob:
        try:
            done = await self._write(job, now)
        except ObjectStoreError as exc:
            return await self._refused(job, record, exc)
        failing = self._failing.pop(job.job_id, None)
        if failing is not None:
            log.info(
                "batch %s: its result files were written after %d failed attempt(s)",
                batch_id(job.job_id),
                failing.attempts,
            )
        return done

    async def _refused(self, job: Job, record: FileJob, exc: ObjectStoreError) -> FileJob:
        """Count a refused write; give the batch up once :data:`FINALIZE_RETRY` has passed."""
        name, reason = batch_id(job.job_id), str(exc)[:512]
        failing = self._failing.get(job.job_id)
        if failing is None:
            if len(self._failing) >= _FAILING_MAX:
                self._failing.pop(next(iter(self._failing)))
            failing = self._failing[job.job_id] = _Failing(self._clock.monotonic(), reason)
            log.warning("batch %s: its result files could not be written: %s", name, reason)
        else:
            failing.attempts += 1
            if reason != failing.reason:
                failing.reason = reason
                log.warning("batch %s: its result files could not be written: %s", name, reason)
        limit = self._clock.scaled(FINALIZE_RETRY).total_seconds()
        if self._clock.monotonic() - failing.since < limit:
            return record
        log.error(
            "batch %s: giving up on its result files after %d attempt(s) (%s): %s",
            name,
            failing.attempts,
            FINALIZE_RETRY,
            reason,
        )
        await self._remove_partial(job)
        self._failing.pop(job.job_id, None)
        return await self._files.finish_file_job(
            job.job_id, output_file_id=None, error_file_id=None, finished_at=self._clock.now()
        )

    async def _remove_partial(self, job: Job) -> None:
        """Remove what a given-up write left in the files bucket (the output file's bytes,
        say, when only the error file was refused): bytes nothing points at."""
        bucket = bucket_for(self._prefix, job.account_id)
        for kind in ("output", "error"):
            key = f"files/{result_file_id(job.job_id, kind)}"
            try:
                await self._objects.delete(bucket, key)
            except ObjectStoreError as exc:
                log.warning(
                    "batch %s: cannot remove s3://%s/%s: %s", batch_id(job.job_id), bucket, key, exc
                )

    async def _write(self, job: Job, now: datetime) -> FileJob:
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
            # Both files' bytes first, then their records: a refused write leaves no record
            # (no file listed whose batch does not name it), and the retry overwrites them.
            stored: list[StoredFile] = []
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
                stored.append(
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
        for file in stored:
            await self._files.add_file(file)
        return await self._files.finish_file_job(
            job.job_id,
            output_file_id=ids["output"],
            error_file_id=ids["error"],
            finished_at=now,
        )
