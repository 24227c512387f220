"""Delivery of job state-change events: the store's status history is the outbox.

Every status change is a row of the store's event history, written in the same transaction as
the change itself, so there is nothing to lose between the two. Each sink has a cursor in the
store, the ``seq`` it has delivered up to; a delivery task per sink reads the events after it,
delivers them in order and only then moves the cursor on. A process that dies between the two
leaves the cursor behind: the next owner delivers those events again (at least once, never
skipped, in order). A lease on the cursor (the store's ``hold_sink``) lets one process at a
time deliver for a sink, however many ``serve`` and ``worker`` processes share the store.

A failed delivery is retried, the same batch, after 1, 2, 4 ... seconds (the Clock's), up to
``events_retry_max_seconds`` apart, until it goes through: later events wait behind it, which
is what keeps them in order.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from batchrock.clock import Clock
from batchrock.events.envelope import Envelope, build
from batchrock.events.sinks import DeliveryFailed, Sink
from batchrock.jobs import Job, JobEvent
from batchrock.settings import Settings
from batchrock.store.base import JobStore

log = logging.getLogger("batchrock.events")


class _LeaseLost(Exception):
    """Another process took the sink's cursor over."""


class Outbox:
    """Delivers every sink's events until :meth:`run`'s ``stop`` is set."""

    def __init__(
        self, settings: Settings, store: JobStore, clock: Clock, sinks: Sequence[Sink]
    ) -> None:
        self._store = store
        self._clock = clock
        self._sinks = list(sinks)
        self._poll = settings.events_poll_seconds
        self._lease = settings.engine_lease_seconds
        self._first_retry = settings.events_retry_initial_seconds
        self._max_retry = settings.events_retry_max_seconds
        self.owner = f"events-{uuid.uuid4().hex[:12]}"

    async def start(self) -> None:
        """Take each sink's cursor once before anything is served, so that a sink configured
        for the first time starts before the first job this process creates."""
        for sink in self._sinks:
            await self._store.hold_sink(
                sink.name, self.owner, now=self._clock.now(), lease_seconds=self._lease
            )

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._supervise(sink, stop), name=f"events-{sink.name}")
            for sink in self._sinks
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for sink in self._sinks:
                try:
                    await self._store.release_sink(sink.name, self.owner)
                finally:
                    await sink.aclose()

    async def _supervise(self, sink: Sink, stop: asyncio.Event) -> None:
        """Run the sink's delivery loop; an unexpected error is logged and the loop started
        again after a pause (the cursor is in the store: nothing is lost)."""
        while not stop.is_set():
            try:
                await self._deliver_all(sink, stop)
            except Exception:
                log.exception(
                    "event sink %s failed; restarting it", sink.name, extra={"sink": sink.name}
                )
                await self._clock.wait(stop, timeout=self._max_retry)

    async def _deliver_all(self, sink: Sink, stop: asyncio.Event) -> None:
        # The cursor, while this process holds the sink: only the holder moves it, so it is
        # kept here, and the lease renewed when half of it is gone (not a write every poll).
        position: int | None = None
        renew_at = 0.0
        while not stop.is_set():
            if position is None or self._clock.monotonic() >= renew_at:
                position = await self._hold(sink)
                if position is None:  # another process delivers for this sink
                    await self._clock.wait(stop, timeout=max(self._poll, self._lease / 4))
                    continue
                renew_at = self._clock.monotonic() + self._lease / 2
            batch = await self._store.events_since(position, limit=sink.batch_size)
            if not batch:
                await self._clock.wait(stop, timeout=self._poll)
                continue
            pending = await self._pending(batch)
            delivered = 0
            if pending:
                try:
                    delivered = await self._deliver(sink, pending, stop)
                except _LeaseLost:
                    log.warning("event sink %s: another process took it over", sink.name)
                    position = None
                    continue
                if delivered == 0:  # stopping
                    return
            # Events of jobs no longer in the store are passed over with the delivered ones.
            last = batch[-1].seq if delivered == len(pending) else pending[delivered - 1].seq
            if await self._store.advance_sink(sink.name, self.owner, last):
                position = last
            else:
                log.warning("event sink %s: another process took it over", sink.name)
                position = None

    async def _hold(self, sink: Sink) -> int | None:
        return await self._store.hold_sink(
            sink.name, self.owner, now=self._clock.now(), lease_seconds=self._lease
        )

    async def _pending(self, batch: list[JobEvent]) -> list[_Pending]:
        jobs: dict[str, Job | None] = {}
        pending: list[_Pending] = []
        for item in batch:
            job_id = item.job_id
            if job_id not in jobs:
                jobs[job_id] = await self._store.get_by_id(job_id)
            job = jobs[job_id]
            if job is None:
                log.warning(
                    "event %d of job %s: the job is gone; not delivered",
                    item.seq,
                    job_id,
                    extra={"job_id": job_id},
                )
                continue
            pending.append(_Pending(item.seq, build(item, job)))
        return pending

    async def _deliver(self, sink: Sink, pending: list[_Pending], stop: asyncio.Event) -> int:
        """Deliver ``pending`` (retrying with backoff); how many of the first were delivered,
        0 if ``stop`` came first. Raises _LeaseLost when another process took the sink."""
        envelopes = [p.envelope for p in pending]
        attempt = 0
        while True:
            try:
                delivered = await sink.deliver(envelopes)
            except DeliveryFailed as exc:
                delay = min(self._first_retry * 2**attempt, self._max_retry)
                attempt += 1
                first = envelopes[0]
                log.warning(
                    "event %s of job %s: delivery to %s failed (%s); retry %d in %gs",
                    first.event_id,
                    first.job_id,
                    sink.name,
                    exc,
                    attempt,
                    delay,
                    extra=_fields(sink, first, attempt=attempt),
                )
                if await self._clock.wait(stop, timeout=delay):
                    return 0
                if await self._hold(sink) is None:
                    raise _LeaseLost() from None
                continue
            for envelope in envelopes[:delivered]:
                log.info(
                    "event %s of job %s (%s) delivered to %s",
                    envelope.event_id,
                    envelope.job_id,
                    envelope.body["detail"]["status"],
                    sink.name,
                    extra=_fields(sink, envelope, attempt=attempt + 1),
                )
            return delivered


@dataclass(frozen=True, slots=True)
class _Pending:
    """An envelope and its event's place in the store's sequence."""

    seq: int
    envelope: Envelope


def _fields(sink: Sink, envelope: Envelope, *, attempt: int) -> dict[str, object]:
    return {
        "action": "event_delivery",
        "sink": sink.name,
        "event_id": envelope.event_id,
        "job_id": envelope.job_id,
        "account_id": envelope.account_id,
        "status": envelope.body["detail"]["status"],
        "attempt": attempt,
    }
