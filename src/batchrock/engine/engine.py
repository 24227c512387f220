"""The engine: finds work in the store and drives each job through its lifecycle.

One engine runs inside ``batchrock serve`` and one in each ``batchrock worker``; they share
the store, and leases keep them apart (a job is run by one live engine at a time; a crashed
engine's jobs are taken over when its leases run out).

Each poll, an engine with free capacity takes, in this order:
  1. Stopping jobs nobody runs (so a stop finishes promptly),
  2. InProgress jobs nobody runs (resumed from their checkpoint),
  3. a Scheduled job whose account and model are below the concurrent-jobs quota,
  4. Submitted/Validating jobs (validation); a Submitted job only once it has been Submitted
     for ``engine_min_submitted_seconds`` (as on Bedrock, a new job is read back Submitted).
Scheduled jobs waiting past their ``jobExpirationTime`` become Expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import shutil
import socket
from datetime import datetime, timedelta

from batchrock import jobs
from batchrock.catalogue import Catalogue, load_catalogue
from batchrock.clock import Clock
from batchrock.engine.checkpoint import spool_root
from batchrock.engine.grants import BucketPolicy, OpenBuckets
from batchrock.engine.runner import EngineContext, JobRunner, Resolver, deadline_of
from batchrock.jobs import InvalidTransition, Job, JobStatus
from batchrock.metrics import process_metrics
from batchrock.objects import ObjectStore, build_object_store
from batchrock.settings import Settings
from batchrock.store.base import JobStore

log = logging.getLogger("batchrock.engine")
S = JobStatus

_WAITING = frozenset({S.SUBMITTED, S.VALIDATING, S.SCHEDULED})
#: A job claimed in one of these was being run by an engine whose lease ran out (a Stopping
#: job may also be one stopped while it waited, which no engine held).


def _count_takeover() -> None:
    """A job claimed mid-run (Validating or InProgress, nobody's lease on it): the engine that
    ran it stopped renewing its lease, or shut down in the middle."""
    process_metrics().lease_takeover()


#: The jobs the expiry sweep looks at: those nobody runs while they wait.
_EXPIRING = frozenset({S.SCHEDULED, S.SUBMITTED})
#: Overdue jobs one poll expires at most (the rest at the next poll).
_SWEEP = 1000
#: What the store's floating-point deadline may be off by, and more (the sweep asks for
#: this much past now, then checks each job's exact deadline).
_SPARE = timedelta(milliseconds=1)
#: A long duration whose scaled length gives the clock's time scale as a ratio.
_PROBE = timedelta(days=10_000)


class Engine:
    """Runs jobs until told to stop.

    >>> engine = Engine(settings, store, SystemClock(), resolver)
    >>> await engine.run(stop_event)   # returns once in-flight work is checkpointed
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        clock: Clock,
        resolver: Resolver | None = None,
        objects: ObjectStore | None = None,
        *,
        buckets: BucketPolicy | None = None,
        catalogue: Catalogue | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._own_resolver = resolver is None
        if resolver is None:
            from batchrock.backends.routing import build_resolver

            resolver = build_resolver(settings, clock)
        self._own_objects = objects is None
        self.objects = objects if objects is not None else build_object_store(settings)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._shutdown = asyncio.Event()
        self.ctx = EngineContext(
            settings=settings,
            store=store,
            clock=clock,
            objects=self.objects,
            resolver=resolver,
            worker_id=self.worker_id,
            shutdown=self._shutdown,
            # No policy given is open mode: what running without a credentials file means.
            buckets=buckets if buckets is not None else OpenBuckets(),
            catalogue=catalogue if catalogue is not None else load_catalogue(),
        )
        #: The runner task of each job this engine holds. A task leaves it *before* its
        #: runner gives the lease back (see _drive): a job found here is still leased to a
        #: runner that will keep it or release it, never one that already let go.
        self._running: dict[str, asyncio.Task[None]] = {}
        #: The runner of each job in _running (a claim of it is handed to that runner).
        self._runners: dict[str, JobRunner] = {}
        #: Numbers this engine's claims: each claim leases its job to an owner of its own,
        #: ``worker_id:n``, which fences that claim's writes (JobRunner.owner).
        self._claims = itertools.count(1)
        #: Every runner task not yet done, those that left _running included (shutdown).
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        #: When the next Submitted job's dwell (engine_min_submitted_seconds) ends, if it
        #: ends before the next poll: the engine wakes then to validate it.
        self._next_due: datetime | None = None
        #: How long an idle engine waits before it looks again (see run).
        self._poll_seconds = settings.engine_poll_seconds

    @property
    def running_jobs(self) -> frozenset[str]:
        """The ids of the jobs this engine's runners hold now."""
        return frozenset(self._running)

    def wake(self) -> None:
        """Look for work now rather than at the next poll (a job was created or stopped in
        this process, or one of our runners finished a step)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        log.info("engine %s started", self.worker_id)
        # A store that says when work appears (PostgreSQL's NOTIFY) wakes the engine at once:
        # then polling is only the sweep for what no process announces (leases running out,
        # waiting jobs reaching their expiry).
        stop_watching = await self.store.watch(self.wake)
        self._poll_seconds = (
            self.settings.engine_poll_seconds
            if stop_watching is None
            else max(self.settings.engine_poll_seconds, self.settings.engine_sweep_seconds)
        )
        try:
            await self.remove_orphan_spools()
            while not stop.is_set():
                try:
                    await self.tick()
                except Exception:
                    # The store may be busy or briefly unavailable; try again next poll.
                    log.exception("engine poll failed")
                await self._idle(stop)
        finally:
            if stop_watching is not None:
                stop_watching()
            self._shutdown.set()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._own_resolver:
                await self.ctx.resolver.aclose()
            if self._own_objects:
                await self.objects.aclose()
            log.info("engine %s stopped", self.worker_id)

    async def _idle(self, stop: asyncio.Event) -> None:
        """Wait for the next poll, a stop, a wake-up or the end of a Submitted job's dwell,
        whichever comes first."""
        timeout = self._poll_seconds
        if self._next_due is not None:
            until_due = (self._next_due - self.clock.now()).total_seconds()
            timeout = max(0.0, min(timeout, until_due))
        await self.clock.wait(stop, self._wake, timeout=timeout)
        self._wake.clear()

    async def remove_orphan_spools(self) -> None:
        """Remove the spool folders of jobs that have ended, or that the store does not know:
        nothing reads them again. A job's own runner removes its spool when the job ends;
        a process killed just before that leaves it behind. Safe beside other engines, which
        never write to the spool of a job that has ended."""
        root = spool_root(self.settings.data_dir)
        try:
            names = await asyncio.to_thread(os.listdir, root)
        except (FileNotFoundError, NotADirectoryError):
            return
        for job_id in names:
            job = await self.store.get_by_id(job_id)
            if job is None or job.is_terminal:
                await asyncio.to_thread(shutil.rmtree, root / job_id, ignore_errors=True)
                log.info("removed the spool of job %s, which has ended", job_id)

    async def tick(self) -> None:
        """One poll: expire overdue jobs, then take work while there is capacity."""
        await self.expire_overdue()
        self._next_due = await self._dwell_end()
        while len(self._running) < self.settings.engine_max_jobs:
            claimed = await self._next_job()
            if claimed is None:
                return
            job, owner = claimed
            runner = self._runners.get(job.job_id)
            if runner is not None:
                # The runner we have still runs the job: either our lease lapsed (the loop
                # was blocked) and the runner keeps the job under this claim, or the runner
                # is finishing and its release frees this claim too (it wakes us after). A
                # second runner would write beside the first.
                runner.adopt(owner)
                continue
            self._start(job, owner)

    def _dwell(self) -> timedelta:
        """How long a new job stays Submitted, in wall-clock time (scaled like timeouts)."""
        return self.clock.scaled(timedelta(seconds=self.settings.engine_min_submitted_seconds))

    async def _dwell_end(self) -> datetime | None:
        """When the soonest Submitted job still in its dwell may be validated, if any: the
        oldest one submitted after ``now - dwell`` (one row of the store's index)."""
        now, dwell = self.clock.now(), self._dwell()
        if not dwell:
            return None
        first = await self.store.first_submitted_after(S.SUBMITTED, now - dwell)
        return None if first is None else first + dwell

    async def _next_job(self) -> tuple[Job, str] | None:
        """The next job to run and the owner it was claimed as."""
        store, now, lease = self.store, self.clock.now(), self.settings.engine_lease_seconds
        owner = f"{self.worker_id}:{next(self._claims)}"
        for statuses in ({S.STOPPING}, {S.IN_PROGRESS}):
            job = await store.claim(owner, statuses, now=now, lease_seconds=lease)
            if job is not None:
                if job.status is S.IN_PROGRESS:
                    _count_takeover()
                return job, owner
        # Not a takeover: start_next hands out Scheduled jobs, moved to InProgress just now.
        job = await store.start_next(
            owner,
            now=now,
            lease_seconds=lease,
            max_in_progress=self.settings.quota_max_concurrent_jobs_per_model,
        )
        if job is not None:
            return job, owner
        job = await store.claim(
            owner,
            {S.SUBMITTED, S.VALIDATING},
            now=now,
            lease_seconds=lease,
            submitted_by=now - self._dwell(),
        )
        if job is None:
            return None
        if job.status is S.VALIDATING:
            _count_takeover()
        return job, owner

    def _start(self, job: Job, owner: str) -> None:
        runner = JobRunner(self.ctx, job, owner=owner)
        task = asyncio.create_task(self._drive(runner), name=f"job-{job.job_id}")
        self._running[job.job_id] = task
        self._runners[job.job_id] = runner
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drive(self, runner: JobRunner) -> None:
        """Run one step of a job; the task leaves _running just before the runner gives its
        lease back, and the engine is woken after.

        Leaving first matters: once the lease is free the job can be claimed again (a
        validated job is started by the next tick), and a claim of a job still found in
        _running is skipped. Were the task still listed after the release (a done callback
        runs a loop iteration later), that claim would lease the job to nobody until the
        lease ran out.
        """
        job_id, task = runner.job.job_id, asyncio.current_task()

        def forget() -> None:
            # Only this task's entry: the job may already run again in a newer task.
            if self._running.get(job_id) is task:
                del self._running[job_id]
                del self._runners[job_id]

        try:
            await runner.run(before_release=forget)
        finally:
            forget()
            # A step ended: the job may be ready for the next one (validated jobs wait in
            # Scheduled), and there is capacity for another.
            self.wake()

    async def expire_overdue(self) -> None:
        """Jobs that have not started by their expiration time become Expired (nobody holds
        a waiting job, so no runner would notice).

        The store is asked only for the overdue ones: a job's deadline is at least the
        shortest timeout (scaled) after its submission, so only jobs submitted that long
        ago are read (a range of the store's index, not every waiting job); the store tests
        their deadline with the clock's time scale as a ratio, and each job it returns is
        checked here against its exact deadline (deadline_of, as its runner would)."""
        clock = self.clock
        now = clock.now()
        overdue = await self.store.overdue(
            _EXPIRING,
            submitted_by=now - clock.scaled(timedelta(hours=jobs.MIN_TIMEOUT_HOURS)),
            by=now + _SPARE,
            scale=clock.scaled(_PROBE) / _PROBE,
            limit=_SWEEP,
        )
        for job in overdue:
            if now < deadline_of(job, self.clock) or job.job_id in self._running:
                continue
            with contextlib.suppress(InvalidTransition, LookupError):
                await self.store.transition(job.job_id, S.EXPIRED, now=now, expected=_WAITING)
