"""Contract of the event outbox's store methods (docs/events.md): the global event sequence
and each sink's delivery cursor with its lease. Every store runs it (tests/stores.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from batchrock.jobs import JobStatus
from batchrock.store.base import JobStore

from .test_store import T0, make_job

pytestmark = pytest.mark.anyio
S = JobStatus


class TestOutboxContract:
    async def test_events_since_is_one_global_sequence_in_commit_order(
        self, store: JobStore, second_store: JobStore
    ) -> None:
        a, _ = await store.create(make_job(1), {})
        b, _ = await second_store.create(make_job(2), {})
        await store.transition(a.job_id, S.VALIDATING, now=T0)
        await second_store.transition(b.job_id, S.VALIDATING, now=T0, message="m")
        await store.transition(a.job_id, S.FAILED, now=T0, message="bad input")
        seen = await second_store.events_since(0, limit=100)
        assert [(e.job_id, e.to_status) for e in seen] == [
            (a.job_id, S.SUBMITTED),
            (b.job_id, S.SUBMITTED),
            (a.job_id, S.VALIDATING),
            (b.job_id, S.VALIDATING),
            (a.job_id, S.FAILED),
        ]
        seqs = [e.seq for e in seen]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert seen[4].from_status is S.VALIDATING
        assert seen[4].message == "bad input"
        assert seen[0].from_status is None
        # Paging by position: strictly after, at most limit, the same events.
        first = await store.events_since(0, limit=2)
        rest = await store.events_since(first[-1].seq, limit=100)
        assert first + rest == seen
        assert await store.events_since(seqs[-1], limit=100) == []
        # Events committed later come after everything already returned.
        await store.transition(b.job_id, S.SCHEDULED, now=T0)
        (later,) = await store.events_since(seqs[-1], limit=100)
        assert later.seq > seqs[-1] and later.to_status is S.SCHEDULED

    async def test_a_new_sink_starts_after_the_newest_event(self, store: JobStore) -> None:
        await store.create(make_job(1), {})
        (head,) = await store.events_since(0, limit=10)
        assert await store.hold_sink("webhook", "w1", now=T0, lease_seconds=30) == head.seq
        job, _ = await store.create(make_job(2), {})
        # Holding again (a renewal) keeps the cursor where it was.
        assert await store.hold_sink("webhook", "w1", now=T0, lease_seconds=30) == head.seq
        new = await store.events_since(head.seq, limit=10)
        assert [e.job_id for e in new] == [job.job_id]

    async def test_one_owner_per_sink_until_its_lease_lapses(
        self, store: JobStore, second_store: JobStore
    ) -> None:
        await store.create(make_job(1), {})
        start = await store.hold_sink("jsonl", "w1", now=T0, lease_seconds=30)
        assert start is not None
        assert await second_store.hold_sink("jsonl", "w2", now=T0, lease_seconds=30) is None
        # Sinks are independent: another sink is free.
        assert await second_store.hold_sink("webhook", "w2", now=T0, lease_seconds=30) == start
        assert await store.advance_sink("jsonl", "w1", start + 5)
        assert not await second_store.advance_sink("jsonl", "w2", start + 9)
        later = T0 + timedelta(seconds=31)
        assert await second_store.hold_sink("jsonl", "w2", now=later, lease_seconds=30) == (
            start + 5
        )
        # The old owner lost it: it may neither renew nor advance.
        assert await store.hold_sink("jsonl", "w1", now=later, lease_seconds=30) is None
        assert not await store.advance_sink("jsonl", "w1", start + 7)
        assert await second_store.advance_sink("jsonl", "w2", start + 6)

    async def test_release_keeps_the_cursor_and_frees_the_sink(
        self, store: JobStore, second_store: JobStore
    ) -> None:
        start = await store.hold_sink("eventbridge", "w1", now=T0, lease_seconds=30)
        assert start == 0  # no events at all yet
        assert await store.advance_sink("eventbridge", "w1", 3)
        await second_store.release_sink("eventbridge", "w2")  # not its lease: no-op
        assert await second_store.hold_sink("eventbridge", "w2", now=T0, lease_seconds=30) is None
        await store.release_sink("eventbridge", "w1")
        assert await second_store.hold_sink("eventbridge", "w2", now=T0, lease_seconds=30) == 3
