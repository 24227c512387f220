"""Everything the engine does with one job it holds (a lease in the store).

    Submitted/Validating --validate()--> Scheduled | Failed | Expired | Stopped
    InProgress           --execute()---> Completed | PartiallyCompleted (timeout) | Failed
                                         | Stopped (stop requested) | (checkpointed, on shutdown)
    Stopping             --finish_stop()--> Stopped

A heartbeat renews the lease and watches the job: a stop request, the job's timeout and the
engine's own shutdown set ``halt``; the work in progress checkpoints and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from batchrock import jobs
from batchrock.backends.base import ModelBackend
from batchrock.catalogue import Catalogue
from batchrock.clock import Clock
from batchrock.engine import grants, inputs
from batchrock.engine.checkpoint import (
    Checkpoint,
    append_durably,
    manifest_bytes,
    new_spool_name,
    open_spool,
    spool_dir,
)
from batchrock.engine.file_pass import FilePass
from batchrock.engine.inputs import InputFile
from batchrock.engine.media import JobMedia
from batchrock.engine.records import LineTooLong, iter_blocks
from batchrock.jobs import Counters, InvalidTransition, Job, JobStatus
from batchrock.metrics import process_metrics
from batchrock.objects.base import (
    ObjectChanged,
    ObjectStore,
    ObjectStoreError,
    ResumableUploads,
    S3Location,
    UploadedPart,
    UploadGone,
    multipart_etag,
    parse_s3_uri,
    resumable,
)
from batchrock.settings import Settings
from batchrock.store.base import JobStore, LeaseLost

log = logging.getLogger("batchrock.engine")
S = JobStatus

#: How long in-flight records may take to finish once a job is told to halt.
HALT_GRACE_SECONDS = 2.0
MANIFEST_NAME = "manifest.json.out"
#: How often a running job rewrites its manifest between files.
MANIFEST_EVERY_SECONDS = 5.0
#: S3's highest part number: the last one is kept for the file's tail.
_LAST_PART = 10_000


class Resolver(Protocol):
    """What the engine needs from :mod:`batchrock.backends.routing`'s resolver."""

    def for_model(self, model_id: str) -> ModelBackend: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class EngineContext:
    settings: Settings
    store: JobStore
    clock: Clock
    objects: ObjectStore
    resolver: Resolver
    worker_id: str
    shutdown: asyncio.Event
    #: Which buckets each account's jobs may use (engine/grants.py).
    buckets: grants.BucketPolicy
    #: The models Bedrock offers for batch inference: their per-model quotas apply.
    catalogue: Catalogue


class Halt(enum.Enum):
    STOP = "stop"
    TIMEOUT = "timeout"
    LOST = "lost"
    SHUTDOWN = "shutdown"


def deadline_of(job: Job, clock: Clock) -> datetime:
    """When the job times out (or expires): ``jobExpirationTime``, with the clock's time scale
    applied to the time since submission."""
    return job.submit_time + clock.scaled(job.expiration_time - job.submit_time)


class JobFailed(Exception):
    """Ends the job ``Failed``; the message is the job's ``message``."""


class JobRunner:
    def __init__(self, ctx: EngineContext, job: Job, *, owner: str | None = None) -> None:
        """``owner``: the lease owner the job was claimed as (the engine names each claim
        apart); it fences every write of this runner (docs/architecture.md, "Leases fence
        every engine write")."""
        self.ctx = ctx
        self.job = job
        self.owner = owner or ctx.worker_id
        self.halt = asyncio.Event()
        self.reason: Halt | None = None
        #: (file, spool) of the checkpoint this runner saved last (while InProgress).
        self._saved: tuple[int, str] | None = None
        self._watch_timeout = False

    # --- entry -------------------------------------------------------------------------

    async def run(self, *, before_release: Callable[[], None] | None = None) -> None:
        """Do the job's next step, then give the lease back. ``before_release`` is called
        just before that (the engine forgets the runner there: see Engine._drive)."""
        heartbeat = asyncio.create_task(self._heartbeat(), name=f"heartbeat-{self.job.job_id}")
        try:
            await self._dispatch()
        except Exception:
            if not await self._holds_lease():
                # A worker that lost its lease can trip over its successor's work (a spool
                # it took over and removed): the job is the successor's now, not ours to fail.
                log.warning(
                    "job %s: error after the lease was lost; the new holder carries on",
                    self.job.job_id,
                    exc_info=True,
                )
                self._set_halt(Halt.LOST)
                return
            log.exception("job %s: engine error", self.job.job_id)
            await self._fail("Internal error while running the job; see the service log.")
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if before_release is not None:
                before_release()
            await self._release()

    def adopt(self, owner: str) -> None:
        """Carry on under a new claim of the job by this runner's own engine (its lease had
        lapsed, no other worker took it: the engine claimed it back while this runner still
        runs it). A successor that ran the job in between is still noticed (_superseded)."""
        if self.reason is not Halt.LOST:
            self.owner = owner

    def _lost(self, what: str) -> None:
        """A fenced write was refused: another claim holds the job now."""
        if self.reason is not Halt.LOST:
            log.warning(
                "job %s: lease lost (claim %s taken over); this worker stops before %s",
                self.job.job_id,
                self.owner,
                what,
            )
        self._set_halt(Halt.LOST)

    async def _release(self) -> None:
        """Give the lease back; a runner that lost it has nothing to give back."""
        if self.reason is Halt.LOST:
            return
        try:
            await self.ctx.store.release(self.job.job_id, self.owner)
        except Exception:
            # The lease then runs out on its own and the job is taken again.
            log.warning("job %s: could not release the lease", self.job.job_id, exc_info=True)

    async def _dispatch(self) -> None:
        status = self.job.status
        if status is S.STOPPING:
            await self.finish_stop()
        elif status in (S.SUBMITTED, S.VALIDATING):
            await self.validate()
        elif status is S.IN_PROGRESS:
            await self.execute()

    async def _holds_lease(self) -> bool:
        """Whether this worker still holds the job (renewing the lease if so), and nobody ran
        it meanwhile: an engine whose loop was blocked past its lease can take its own job
        back after a successor started on it, and must not then carry on from its old state.
        """
        if self.reason is Halt.LOST:
            return False
        ctx = self.ctx
        try:
            if not await ctx.store.renew(
                self.job.job_id,
                self.owner,
                now=ctx.clock.now(),
                lease_seconds=ctx.settings.engine_lease_seconds,
            ):
                return False
            return not await self._superseded()
        except Exception:
            return True  # the store is unreachable: nothing says another worker has the job

    async def _superseded(self) -> bool:
        """Whether the stored checkpoint is no longer the one this runner saved last. Every
        run of a file starts by saving a fresh spool name, so another (file, spool) in the
        store means another worker has run the job since."""
        if self._saved is None:
            return False
        raw = await self.ctx.store.load_checkpoint(self.job.job_id)
        return raw is not None and (raw.get("file"), raw.get("spool")) != self._saved

    def _set_halt(self, reason: Halt) -> None:
        if self.reason is None or reason is Halt.LOST:
            self.reason = reason
        self.halt.set()

    async def _heartbeat(self) -> None:
        ctx = self.ctx
        interval = max(0.05, min(ctx.settings.engine_lease_seconds / 3, 0.5))
        while True:
            # A shutdown is noticed at once; the lease is renewed every interval (also while
            # the work winds down after a shutdown).
            if ctx.shutdown.is_set():
                await ctx.clock.sleep(interval)
            else:
                await ctx.clock.wait(ctx.shutdown, timeout=interval)
            if ctx.shutdown.is_set():
                self._set_halt(Halt.SHUTDOWN)
            ok = await ctx.store.renew(
                self.job.job_id,
                self.owner,
                now=ctx.clock.now(),
                lease_seconds=ctx.settings.engine_lease_seconds,
            )
            if not ok:
                log.warning("job %s: lease lost; another worker takes over", self.job.job_id)
                self._set_halt(Halt.LOST)
                return
            current = await ctx.store.get_by_id(self.job.job_id)
            if current is None or current.is_terminal:
                self._set_halt(Halt.LOST)
                return
            if current.status is S.STOPPING:
                self._set_halt(Halt.STOP)
            elif self._watch_timeout and ctx.clock.now() >= deadline_of(current, ctx.clock):
                self._set_halt(Halt.TIMEOUT)

    # --- transitions ---------------------------------------------------------------------

    async def _move(
        self,
        to: JobStatus,
        *,
        expected: Collection[JobStatus],
        message: str | None = None,
    ) -> bool:
        """Transition; ``False`` (and ``self.job`` refreshed) when the job moved meanwhile,
        or (``halt`` set, LOST) when this runner's claim no longer holds it."""
        if self.reason is Halt.LOST:
            return False
        try:
            self.job = await self.ctx.store.transition(
                self.job.job_id,
                to,
                now=self.ctx.clock.now(),
                expected=expected,
                message=message,
                fence=self.owner,
            )
        except LeaseLost:
            self._lost(f"moving the job to {to.value}")
            return False
        except InvalidTransition:
            fresh = await self.ctx.store.get_by_id(self.job.job_id)
            if fresh is not None:
                self.job = fresh
            return False
        return True  # the store logs every transition

    async def _fail(self, message: str, *, settle: bool = True) -> None:
        """End the job Failed; one that ran keeps its output matching its counters."""
        message = message[:2048]
        if settle and self.job.status in (S.IN_PROGRESS, S.STOPPING):
            try:
                if not await self._settle():
                    return
            except Exception:
                # The job fails all the same (a refused write left the counts saying what the
                # location holds: _count_without_file_in_progress).
                log.exception("job %s: cannot settle the output of a failed job", self.job.job_id)
        if await self._move(S.FAILED, expected=jobs.sources_of(S.FAILED), message=message):
            self._remove_spool()

    async def _end_after_stop_race(self) -> None:
        """A final move lost to a stop request: the job is Stopping, so it ends Stopped."""
        if self.job.status is S.STOPPING:
            await self._move(S.STOPPED, expected={S.STOPPING})

    # --- Validating ----------------------------------------------------------------------

    def _expired(self) -> bool:
        return self.ctx.clock.now() >= deadline_of(self.job, self.ctx.clock)

    async def validate(self) -> None:
        ctx, job = self.ctx, self.job
        if job.status is S.SUBMITTED:
            if self._expired():
                await self._move(S.EXPIRED, expected={S.SUBMITTED})
                return
            if not await self._move(S.VALIDATING, expected={S.SUBMITTED}):
                return await self._after_race()
        try:
            ctx.resolver.for_model(job.model_id)
        except Exception as exc:  # NoRouteError: its message is written for users
            await self._move(S.FAILED, expected={S.VALIDATING}, message=str(exc)[:2048])
            return
        refused = grants.refusal(ctx.buckets, job)
        if refused is not None:
            await self._move(S.FAILED, expected={S.VALIDATING}, message=refused)
            return
        try:
            settings = inputs.model_quotas(ctx.settings, ctx.catalogue.get(job.model_id))
            if job.is_openai_batch:  # OpenAI's Batch API has no minimum number of requests
                settings = replace(settings, quota_min_records_per_job=0)
            scan = await inputs.scan_inputs(
                ctx.objects,
                settings,
                job_id=job.job_id,
                input_uri=job.input_s3_uri,
                output_uri=job.output_s3_uri,
                halt=self.halt,
                keep_going=self._going,
            )
            if scan is None:
                return await self._after_halt_before_run()
            files, total = scan.files, scan.total
        except inputs.InputError as exc:
            await self._invalid(str(exc), output_checked=exc.output_checked)
            return
        except ObjectStoreError as exc:
            await self._invalid(str(exc), output_checked=False)
            return
        try:
            # Writing the first manifest proves the output location is writable now, rather
            # than after the first file's records have gone through the model.
            out_loc = parse_s3_uri(job.output_s3_uri)
            await ctx.objects.put(
                out_loc.bucket,
                out_loc.child(job.job_id, MANIFEST_NAME).key,
                manifest_bytes(Counters(total=total)),
            )
        except ObjectStoreError as exc:
            message = f"Cannot write to the output location {job.output_s3_uri}: {exc}"
            await self._invalid(message, output_checked=False)
            return
        checkpoint = Checkpoint(files=files)
        try:
            await ctx.store.save_progress(
                job.job_id,
                counters=Counters(total=total),
                now=ctx.clock.now(),
                checkpoint=checkpoint.to_json(),
                fence=self.owner,
            )
        except LeaseLost:
            self._lost("saving the validated input")
            return
        if self._expired():
            await self._move(S.EXPIRED, expected={S.VALIDATING})
        elif not await self._move(S.SCHEDULED, expected={S.VALIDATING}):
            await self._after_race()

    async def _invalid(self, message: str, *, output_checked: bool) -> None:
        """Validating -> Failed (or Stopped, when a stop came first). A failed validation
        leaves no output: a first manifest an earlier run wrote before it died goes."""
        if not await self._move(S.FAILED, expected={S.VALIDATING}, message=message[:2048]):
            await self._after_race()
        elif output_checked:
            try:
                out_loc = parse_s3_uri(self.job.output_s3_uri)
                await self.ctx.objects.delete(
                    out_loc.bucket, out_loc.child(self.job.job_id, MANIFEST_NAME).key
                )
            except ObjectStoreError:
                log.warning("job %s: cannot remove its manifest", self.job.job_id, exc_info=True)

    async def _going(self) -> bool:
        await asyncio.sleep(0)  # let the heartbeat run between chunks of a long scan
        return not self.halt.is_set()

    async def _after_race(self) -> None:
        if self.job.status is S.STOPPING:
            await self.finish_stop()

    async def _after_halt_before_run(self) -> None:
        if self.reason is Halt.STOP:
            await self.finish_stop()
        # SHUTDOWN / LOST: the job stays Validating and is validated again later.

    # --- InProgress ----------------------------------------------------------------------

    async def execute(self) -> None:
        ctx, job = self.ctx, self.job
        raw = await ctx.store.load_checkpoint(job.job_id)
        cp = Checkpoint.from_json(raw) if raw else None
        if cp is None:
            await self._fail("The job's progress record was lost; submit the job again.")
            return
        refused = grants.refusal(ctx.buckets, job)  # a grant may be gone since Validating
        if refused is not None:
            await self._fail(refused)
            return
        counters = job.counters
        self._saved = (cp.file, cp.spool)
        self._watch_timeout = True
        try:
            out_loc = parse_s3_uri(job.output_s3_uri)
            backend = ctx.resolver.for_model(job.model_id)
        except Exception as exc:  # the routes changed since Validating
            await self._fail(str(exc))
            return
        try:
            if self._expired():
                self._set_halt(Halt.TIMEOUT)
            while cp.file < len(cp.files) and not self.halt.is_set():
                counters = await self._run_file(cp, counters, backend, out_loc)
        except (JobFailed, ObjectStoreError, LineTooLong) as exc:
            if not await self._holds_lease():
                # The error may be the successor's doing (it took over our spool).
                self._set_halt(Halt.LOST)
                return
            message = str(exc)
            if isinstance(exc, LineTooLong):
                message = f"The input file {cp.files[cp.file].uri}: {exc}."
            await self._fail(message)
            return
        reason = self.reason if self.halt.is_set() else None
        if reason in (Halt.SHUTDOWN, Halt.LOST):
            return
        if cp.file >= len(cp.files):
            await self._end(S.COMPLETED, expected={S.IN_PROGRESS})
        elif reason is Halt.TIMEOUT:
            message = "The job timed out before every record was processed."
            await self._end(S.PARTIALLY_COMPLETED, expected={S.IN_PROGRESS}, message=message)
        else:  # Halt.STOP
            await self._end(S.STOPPED, expected={S.STOPPING})

    async def _run_file(
        self, cp: Checkpoint, counters: Counters, backend: ModelBackend, out_loc: S3Location
    ) -> Counters:
        ctx, job = self.ctx, self.job
        f = cp.files[cp.file]
        folder = spool_dir(ctx.settings.data_dir, job.job_id)
        old = folder / cp.spool if cp.spool else None
        if (cp.spool_size or cp.done) and (old is None or _size(old) < cp.spool_size):
            # The spool is gone (another machine's disk?): redo this file from the end of its
            # last uploaded part, or from its start when it has none.
            if cp.parts:
                log.warning(
                    "job %s: spool lost, resuming %s after part %d (line %d)",
                    job.job_id,
                    f.uri,
                    cp.parts[-1]["n"],
                    cp.parts_line,
                )
            else:
                log.warning("job %s: spool lost, restarting %s", job.job_id, f.uri)
            counters = cp.back_to_parts(counters.total)
        elif cp.done and old is not None:
            # A run that finished this file died before publishing it, or while: publish.
            return await self._publish(cp, counters, old, out_loc)
        if cp.offset < f.size:
            await self._check_input(f)
        name = new_spool_name(cp.file)
        path = folder / name
        handle = await asyncio.to_thread(_resume_spool, old, path, cp.spool_size)
        task: asyncio.Task[None] | None = None
        try:
            cp.skip_part()
            await self._save(cp, counters, spool=name)
            if old is not None and old != path:
                old.unlink(missing_ok=True)
            chunks = None
            if cp.offset < f.size:
                chunks = _exactly(
                    ctx.objects.read(f.bucket, f.key, cp.offset, if_match=f.etag),
                    f.size - cp.offset,
                    f,
                )
            fp = FilePass(
                blocks=iter_blocks(_or_empty(chunks)),
                backend=backend,
                model_id=job.model_id,
                invocation_type=job.invocation_type,
                job_id=job.job_id,
                file_index=cp.file,
                start_offset=cp.offset,
                start_line=cp.line,
                concurrency=ctx.settings.engine_record_concurrency,
                halt=self.halt,
                media=JobMedia(ctx.objects, ctx.buckets, job.account_id),
            )
            base = counters
            task = asyncio.create_task(fp.run())
            halted_at: float | None = None
            clock = ctx.clock
            manifest_at = clock.monotonic()
            while not task.done():
                # A checkpoint every engine_checkpoint_seconds, or sooner when output piles up.
                await clock.wait(
                    task, fp.output_ready, timeout=ctx.settings.engine_checkpoint_seconds
                )
                if self.halt.is_set():
                    if self.reason is Halt.LOST:
                        task.cancel()
                    halted_at = clock.monotonic() if halted_at is None else halted_at
                    if clock.monotonic() - halted_at >= HALT_GRACE_SECONDS:
                        task.cancel()
                counters = await self._flush(fp, cp, base, handle, path)
                if self.reason is Halt.LOST:
                    task.cancel()  # another worker has the job: nothing more is written
                    continue
                if clock.monotonic() - manifest_at >= MANIFEST_EVERY_SECONDS and not task.done():
                    # Progress can be followed in the output location, as on Bedrock.
                    manifest_at = clock.monotonic()
                    with contextlib.suppress(ObjectStoreError):
                        await self._write_manifest(out_loc, counters)
            with contextlib.suppress(asyncio.CancelledError):
                exc = task.exception() if not task.cancelled() else None
                if isinstance(exc, ObjectChanged):
                    raise await self._changed(f) from exc
                if exc is not None:
                    raise exc
            # The last checkpoint of a finished file says so (the first phase of publishing
            # it). Saving checks the lease: a worker paused past it publishes nothing, since
            # its successor resumed from this spool.
            cp.done = fp.finished
            counters = await self._flush(fp, cp, base, handle, path)
        finally:
            if task is not None and not task.done():
                task.cancel()  # an error ends the run: no record may go on to the model
            handle.close()
        if cp.done and self.reason is not Halt.LOST:
            counters = await self._publish(cp, counters, path, out_loc)
        return counters

    async def _publish(
        self, cp: Checkpoint, counters: Counters, spool: Path, out_loc: S3Location
    ) -> Counters:
        """The second phase of finishing a file: its spool (checkpointed ``done``, with the
        counters that count it) becomes its ``.out``, then the checkpoint moves on. A run
        that dies anywhere in here is followed by one that finds ``done`` and the spool, and
        publishes again: the ``.out`` always holds what the counters count."""
        f = cp.files[cp.file]
        key = out_loc.child(self.job.job_id, f.out_name).key
        if not await self._holds_lease():
            # Checked again right before the object is written: the checkpoint saying
            # ``done`` may be a pause ago (docs/architecture.md, "Leases fence ...").
            self._lost(f"publishing {f.out_name}")
            return counters
        if cp.parts:
            if not await self._complete(cp, out_loc.bucket, key, spool):
                log.warning("job %s: the parts of %s are lost, redoing it", self.job.job_id, f.uri)
                counters = replace(cp.file_base, total=counters.total)
                cp.restart_file()
                await self._save(cp, counters)
                return counters
        else:
            await asyncio.to_thread(_truncate, spool, cp.spool_size)
            await self._put_spool(out_loc.bucket, key, spool)
        cp.next_file(counters)
        if await self._save(cp, counters):
            spool.unlink(missing_ok=True)
            # The manifest follows progress file by file, so it can be watched while running.
            await self._write_manifest(out_loc, counters)
        return counters

    async def _upload_part(
        self, up: ResumableUploads, cp: Checkpoint, counters: Counters, spool: Path
    ) -> None:
        """Checkpoint the output that is in no part yet into the bucket: upload it as the
        next part of the file's multipart upload (started with its first part). The caller
        saves the checkpoint that records it, so a part is counted only once saved; a part
        uploaded by a run that dies before that save has a number no later run uses."""
        if cp.next_part >= _LAST_PART:
            return  # the rest waits in the spool, and goes as the last part
        out_loc = parse_s3_uri(self.job.output_s3_uri)
        key = out_loc.child(self.job.job_id, cp.files[cp.file].out_name).key
        if not cp.upload:
            cp.upload = await up.create_upload(out_loc.bucket, key)
            cp.next_part = 1
        data = await asyncio.to_thread(_read_range, spool, cp.tail_start, cp.spool_size)
        part = await up.upload_part(out_loc.bucket, key, cp.upload, cp.next_part, data)
        cp.add_part(part.number, part.etag, part.size, counters)

    async def _complete(self, cp: Checkpoint, bucket: str, key: str, spool: Path | None) -> bool:
        """Make ``key`` the checkpointed output of the file in progress: its parts, and the
        spool's tail as the last part. ``False`` when that cannot be done any more: the
        upload is gone and ``key`` is not what completing it would have made."""
        up = resumable(self.ctx.objects)
        if up is None:  # the parts are in a bucket this engine's store does not reach
            return False
        tail = b""
        if cp.spool_size > cp.tail_start and spool is not None:
            tail = await asyncio.to_thread(_read_range, spool, cp.tail_start, cp.spool_size)
        parts = [UploadedPart(p["n"], p["etag"], p["size"]) for p in cp.parts]
        try:
            if tail:
                if cp.next_part > _LAST_PART:
                    raise ObjectStoreError(f"s3://{bucket}/{key} needs more than 10000 parts.")
                parts.append(await up.upload_part(bucket, key, cp.upload, cp.next_part, tail))
            await up.complete_upload(bucket, key, cp.upload, parts)
        except UploadGone:
            # Completed already: by a run that died before its next checkpoint, or by a
            # worker that lost the job (with another tail, maybe).
            if tail and len(parts) == len(cp.parts):
                md5 = hashlib.md5(tail, usedforsecurity=False).hexdigest()
                parts.append(UploadedPart(cp.next_part, md5, len(tail)))
        # Completing an upload completed before may also succeed (S3 answers 200 for a
        # while) without changing the object: either way, ``key`` must now be these parts.
        info = await self.ctx.objects.head(bucket, key)
        expected = multipart_etag(parts)
        return (
            info is not None
            and info.size == sum(p.size for p in parts)
            and (expected is None or (info.etag or "").strip('"') == expected)
        )

    async def _put_spool(self, bucket: str, key: str, spool: Path) -> None:
        """Publish ``spool`` as ``key``, keeping the spool until the checkpoint has moved
        on. A hard link goes to the store instead of the spool: the local store renames it
        into place (no copy), the S3 store uploads it; either way the spool stays."""
        link = spool.with_name(spool.name + ".publish")
        try:
            await asyncio.to_thread(_link, spool, link)
        except OSError:  # a file system without hard links: upload a copy
            await self.ctx.objects.put_file(bucket, key, spool)
        else:
            await self.ctx.objects.put_file(bucket, key, link, move=True)

    async def _check_input(self, f: InputFile) -> None:
        """Fail the job if ``f`` is no longer the object Validating counted. The read that
        follows asks for that object again (a conditional GET on S3), so a change between
        this check and the read fails it too."""
        now = await self.ctx.objects.head(f.bucket, f.key)
        if not f.is_still(now):
            raise JobFailed(inputs.changed_message(f, now))

    async def _changed(self, f: InputFile, *, more_records: bool = False) -> JobFailed:
        """The job's error for ``f`` found changed while read: another object than the one
        asked for, or (``more_records``) more records than Validating counted."""
        try:
            now = await self.ctx.objects.head(f.bucket, f.key)
        except ObjectStoreError:
            log.warning("job %s: cannot look at %s again", self.job.job_id, f.uri, exc_info=True)
        else:
            if not f.is_still(now):
                return JobFailed(inputs.changed_message(f, now))
        if more_records:
            # Rewritten in place with its size and time kept (or within the time's
            # resolution): only its records tell.
            return JobFailed(
                f"The input file {f.uri} holds more records than the {f.records} counted when "
                f"the job was validated: it was rewritten since. Submit the job again."
            )
        return JobFailed(
            f"The input file {f.uri} changed while the job read it; submit the job again."
        )

    async def _flush(
        self, fp: FilePass, cp: Checkpoint, base: Counters, handle: Any, spool: Path
    ) -> Counters:
        data, size, progress = fp.take_output()
        if self.reason is Halt.LOST:
            return progress.add_to(base)
        f = cp.files[cp.file]
        if base.processed - cp.file_base.processed + progress.processed > f.records:
            # More records than Validating counted: the file was rewritten. They are not
            # counted (nor written), so the counters never exceed the total.
            raise await self._changed(f, more_records=True)
        if data:
            await asyncio.to_thread(append_durably, handle, data)
        cp.spool_size += size
        cp.offset = progress.offset
        cp.line = progress.line
        counters = progress.add_to(base)
        up = resumable(self.ctx.objects)
        if up is not None and cp.spool_size - cp.tail_start >= up.part_bytes:
            await self._upload_part(up, cp, counters, spool)
        await self._save(cp, counters)
        return counters

    async def _save(self, cp: Checkpoint, counters: Counters, *, spool: str = "") -> bool:
        """Save progress while the lease holds (``False``: it does not, nothing was saved);
        ``spool`` starts a new spool file (set in the checkpoint only once this worker knows
        it still holds the job)."""
        if self.reason is Halt.LOST:
            return False
        ctx, now = self.ctx, self.ctx.clock.now()
        # Only the lease holder may move the checkpoint: a worker that was paused past its
        # lease finds out here, before it could overwrite its successor's progress.
        lease = ctx.settings.engine_lease_seconds
        if (
            not await ctx.store.renew(self.job.job_id, self.owner, now=now, lease_seconds=lease)
            or await self._superseded()
        ):
            self._lost("saving a checkpoint")
            return False
        if spool:
            cp.spool = spool
        try:
            # Fenced: a pause between the renewal above and this write cannot let a taken-over
            # claim overwrite its successor's checkpoint.
            await ctx.store.save_progress(
                self.job.job_id,
                counters=counters,
                now=now,
                checkpoint=cp.to_json(),
                fence=self.owner,
            )
        except LeaseLost:
            self._lost("saving a checkpoint")
            return False
        process_metrics().progress(self.job.model_id, self.job.counters, counters)
        self._saved = (cp.file, cp.spool)
        self.job = self.job.evolve(counters=counters)
        return True

    # --- final statuses --------------------------------------------------------------------

    async def _end(
        self, to: JobStatus, *, expected: Collection[JobStatus], message: str | None = None
    ) -> None:
        """Settle the output, then move to the final status ``to`` (or to Stopped, when a
        stop request won the race)."""
        try:
            if not await self._settle():
                return
        except ObjectStoreError as exc:
            if to is S.STOPPED:
                # A stop ends Stopped all the same, as in finish_stop.
                await self._stopped(self._refused_message(exc))
            else:
                await self._fail(self._refused_message(exc), settle=False)
            return
        if not await self._move(to, expected=expected, message=message):
            await self._end_after_stop_race()
        if self.job.is_terminal:
            self._remove_spool()

    async def _settle(self) -> bool:
        """Make the output location hold exactly what the stored counters count, before a
        final status: the ``.out`` of every finished file (published as each finished), the
        ``.out`` of the file in progress holding its checkpointed records (none: no such
        object), and the manifest. It reads the stored checkpoint and counters (saved in one
        write) rather than this run's, which may be ahead of them; it can run any number of
        times, so a run that dies in here is settled again by the next one. ``False`` when
        the lease is lost (the job is another worker's to settle)."""
        ctx, job_id = self.ctx, self.job.job_id
        if not await self._holds_lease():
            self._set_halt(Halt.LOST)
            return False
        out_loc = parse_s3_uri(self.job.output_s3_uri)
        raw = await ctx.store.load_checkpoint(job_id)
        cp = Checkpoint.from_json(raw) if raw else None
        stored = await ctx.store.get_by_id(job_id)
        counters = stored.counters if stored is not None else self.job.counters
        if cp is None:  # stopped before it was validated: nothing ran
            if await ctx.objects.bucket_exists(out_loc.bucket):
                await self._write_manifest(out_loc, counters)
            return True
        if cp.file < len(cp.files):
            try:
                settled = await self._settle_file_in_progress(cp, counters, out_loc)
            except ObjectStoreError:
                await self._count_without_file_in_progress(cp, counters.total, out_loc)
                raise
            if settled is None:
                return False
            counters = settled
        await self._write_manifest_or_remove(out_loc, counters)
        await self._abort_uploads(out_loc)
        return True

    async def _settle_file_in_progress(
        self, cp: Checkpoint, counters: Counters, out_loc: S3Location
    ) -> Counters | None:
        """Make the ``.out`` of the file in progress hold its checkpointed records; the
        counters that count them (``None``: the lease is lost)."""
        ctx, job_id = self.ctx, self.job.job_id
        f = cp.files[cp.file]
        key = out_loc.child(job_id, f.out_name).key
        spool = spool_dir(ctx.settings.data_dir, job_id) / cp.spool if cp.spool else None
        if cp.spool_size and (spool is None or _size(spool) < cp.spool_size):
            # The spool is gone: its records cannot be published, so they are not counted
            # (but those in uploaded parts are).
            log.warning("job %s: spool lost, %s ends without its records", job_id, f.uri)
            counters = cp.back_to_parts(counters.total)
            if not await self._save(cp, counters):
                return None
        if cp.parts:
            if not await self._complete(cp, out_loc.bucket, key, spool):
                log.warning("job %s: the parts of %s are lost", job_id, f.uri)
                counters = replace(cp.file_base, total=counters.total)
                cp.restart_file()
                if not await self._save(cp, counters):
                    return None
                await ctx.objects.delete(out_loc.bucket, key)
        elif spool is not None and cp.spool_size:
            await asyncio.to_thread(_truncate, spool, cp.spool_size)
            await ctx.objects.put_file(out_loc.bucket, key, spool)
        else:
            # An earlier run may have left one (a settle that died before its status).
            await ctx.objects.delete(out_loc.bucket, key)
        return counters

    async def _count_without_file_in_progress(
        self, cp: Checkpoint, total: int, out_loc: S3Location
    ) -> None:
        """The output location refused the ``.out`` of the file in progress (the job then
        ends all the same: Failed, or Stopped after a stop). Its records are not counted, so
        the counters still say what the location holds: the files published before it. They
        were answered, but their answers are only in the spool, which goes with the job. A
        ``.out`` that got there all the same (an earlier settle's, or one whose write failed
        after it was made) is removed; the manifest gets the same counts (docs/engine.md,
        "What the output location holds")."""
        ctx, job_id = self.ctx, self.job.job_id
        f = cp.files[cp.file]
        key = out_loc.child(job_id, f.out_name).key
        log.warning(
            "job %s: the output location refuses %s; its records are not counted",
            job_id,
            f.out_name,
            exc_info=True,
        )
        try:
            await ctx.objects.delete(out_loc.bucket, key)
        except ObjectStoreError:
            log.warning("job %s: cannot remove %s either", job_id, f.out_name, exc_info=True)
        counters = replace(cp.file_base, total=total)
        cp.restart_file()
        if not await self._save(cp, counters):
            return
        with contextlib.suppress(ObjectStoreError):  # logged there; the caller raises anyway
            await self._write_manifest_or_remove(out_loc, counters)
        await self._abort_uploads(out_loc)

    async def _write_manifest_or_remove(self, out_loc: S3Location, counters: Counters) -> None:
        """Write the manifest of a final status; when the location refuses it, remove the
        one there (a progress report that may count more) before the error goes on."""
        try:
            await self._write_manifest(out_loc, counters)
        except ObjectStoreError:
            key = out_loc.child(self.job.job_id, MANIFEST_NAME).key
            log.warning("job %s: cannot write its manifest", self.job.job_id, exc_info=True)
            try:
                await self.ctx.objects.delete(out_loc.bucket, key)
            except ObjectStoreError:
                log.warning(
                    "job %s: cannot remove its manifest either", self.job.job_id, exc_info=True
                )
            raise

    async def _abort_uploads(self, out_loc: S3Location) -> None:
        """Abort the job's unfinished uploads (of runs that died, or of files redone): the
        output is settled, nothing will complete them. A failure only costs storage until
        the bucket's lifecycle rule (if any) removes them."""
        up = resumable(self.ctx.objects)
        if up is None:
            return
        prefix = out_loc.child(self.job.job_id).key + "/"
        try:
            aborted = await up.abort_uploads(out_loc.bucket, prefix)
        except ObjectStoreError:
            log.warning(
                "job %s: cannot abort its unfinished uploads", self.job.job_id, exc_info=True
            )
            return
        if aborted:
            log.info("job %s: aborted %d unfinished upload(s)", self.job.job_id, aborted)

    async def _write_manifest(self, out_loc: S3Location, counters: Counters) -> None:
        if self.reason is Halt.LOST:
            return  # the job's manifest is its new holder's to write
        key = out_loc.child(self.job.job_id, MANIFEST_NAME).key
        await self.ctx.objects.put(out_loc.bucket, key, manifest_bytes(counters))

    def _remove_spool(self) -> None:
        shutil.rmtree(spool_dir(self.ctx.settings.data_dir, self.job.job_id), ignore_errors=True)

    # --- Stopping ------------------------------------------------------------------------

    async def finish_stop(self) -> None:
        """Stopping -> Stopped, keeping what was finished and writing the manifest."""
        message = None
        try:
            if not await self._settle():
                return
        except Exception as exc:
            # A stop always ends Stopped (an output location that cannot be written, say).
            log.warning(
                "job %s: cannot settle the output of a stop", self.job.job_id, exc_info=True
            )
            if isinstance(exc, ObjectStoreError):
                message = self._refused_message(exc)
        await self._stopped(message)

    async def _stopped(self, message: str | None) -> None:
        if await self._move(S.STOPPED, expected={S.STOPPING}, message=message):
            self._remove_spool()

    def _refused_message(self, exc: ObjectStoreError) -> str:
        """The job's message when its output location refused its results (settled to
        count what it holds: _count_without_file_in_progress)."""
        return f"Cannot write the results to {self.job.output_s3_uri}: {exc}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _read_range(path: Path, start: int, end: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    if len(data) != end - start:
        raise ObjectStoreError(f"The spool {path} is shorter than its checkpoint.")
    return data


def _link(source: Path, link: Path) -> None:
    link.unlink(missing_ok=True)  # left by a run that died between link and upload
    os.link(source, link)


def _truncate(path: Path, size: int) -> None:
    with path.open("r+b") as fh:
        fh.truncate(size)


def _resume_spool(old: Path | None, new: Path, good_size: int) -> Any:
    """Open ``new`` holding the first ``good_size`` bytes of ``old``."""
    handle = open_spool(new, 0)
    if old is not None and good_size:
        with old.open("rb") as src:
            remaining = good_size
            while remaining:
                chunk = src.read(min(remaining, 4 * 1024 * 1024))
                if not chunk:
                    break
                handle.write(chunk)
                remaining -= len(chunk)
        handle.flush()
    return handle


async def _exactly(
    chunks: AsyncIterator[bytes], expected: int, f: InputFile
) -> AsyncIterator[bytes]:
    """The chunks of a read that must be ``expected`` bytes long (the file as validated,
    from the resume offset on): one that grew or shrank since is another object."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > expected:
            raise ObjectChanged(f.bucket, f.key)
        yield chunk
    if seen != expected:
        raise ObjectChanged(f.bucket, f.key)


async def _or_empty(chunks: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    if chunks is not None:
        async for chunk in chunks:
            yield chunk
