"""Contract of the store methods only the engine uses: starting Scheduled jobs under the
per-model quota (also raced by several processes), sweeping jobs by status, and an engine
running jobs to the end on the store. Every store runs it (tests/stores.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batchrock import jobs
from batchrock.jobs import InvalidTransition, JobStatus
from batchrock.store.base import JobStore
from tests.engine.harness import Harness, jsonl, records
from tests.stores import StoreFactory

from .test_store import T0, make_job, race

pytestmark = pytest.mark.anyio
S = JobStatus


async def scheduled(store: JobStore, n: int, **changes: object) -> str:
    job, _ = await store.create(make_job(n, **changes), {})
    await store.transition(job.job_id, S.VALIDATING, now=T0)
    await store.transition(job.job_id, S.SCHEDULED, now=T0)
    return job.job_id


class TestEngineSideContract:
    async def test_start_next_respects_the_per_model_quota(
        self, store: JobStore, second_store: JobStore
    ) -> None:
        a = await scheduled(store, 1)
        b = await scheduled(store, 2)
        other_model = await scheduled(store, 3, model_id="meta.llama3-8b-instruct-v1:0")
        other_account = await scheduled(store, 4, account_id="210987654321")

        first = await store.start_next("w1", now=T0, lease_seconds=30, max_in_progress=1)
        assert first is not None and first.job_id == a and first.status is S.IN_PROGRESS
        # b's model is full for that account: the next start skips it, oldest first.
        second = await second_store.start_next("w2", now=T0, lease_seconds=30, max_in_progress=1)
        third = await store.start_next("w3", now=T0, lease_seconds=30, max_in_progress=1)
        assert second is not None and third is not None
        assert (second.job_id, third.job_id) == (other_model, other_account)
        assert await store.start_next("w4", now=T0, lease_seconds=30, max_in_progress=1) is None

        # The start is leased and recorded like any transition.
        assert not await store.renew(a, "w4", now=T0, lease_seconds=30)
        assert await store.renew(a, "w1", now=T0, lease_seconds=30)
        assert [e.to_status for e in await store.events(a)][-1] is S.IN_PROGRESS

        await store.transition(a, S.COMPLETED, now=T0)
        started = await store.start_next("w5", now=T0, lease_seconds=30, max_in_progress=1)
        assert started is not None and started.job_id == b

    async def test_start_next_counts_the_quota_per_account_region_and_model(
        self, store: JobStore
    ) -> None:
        """A model is full at ``max_in_progress`` InProgress jobs of its account and region
        (not one fewer, not one more); the other region's slots are its own."""
        a1, a2, a3 = [await scheduled(store, n) for n in (1, 2, 3)]
        elsewhere = await scheduled(store, 4, region="eu-west-1")
        taken = []
        while job := await store.start_next("w", now=T0, lease_seconds=30, max_in_progress=2):
            taken.append(job.job_id)
            assert len(taken) <= 4
        assert taken == [a1, a2, elsewhere]  # a3 waits: two of its model run
        other = await scheduled(store, 5, model_id="meta.llama3-8b-instruct-v1:0")
        assert await store.start_next("w", now=T0, lease_seconds=30, max_in_progress=0) is None
        third = await store.start_next("w", now=T0, lease_seconds=30, max_in_progress=3)
        assert third is not None and third.job_id == a3
        fourth = await store.start_next("w", now=T0, lease_seconds=30, max_in_progress=3)
        assert fourth is not None and fourth.job_id == other

    async def test_start_next_skips_jobs_a_live_worker_holds(self, store: JobStore) -> None:
        job_id = await scheduled(store, 1)
        assert await store.claim("w1", {S.SCHEDULED}, now=T0, lease_seconds=30) is not None
        assert await store.start_next("w2", now=T0, lease_seconds=30, max_in_progress=5) is None
        later = T0 + timedelta(seconds=31)
        started = await store.start_next("w2", now=later, lease_seconds=30, max_in_progress=5)
        assert started is not None and started.job_id == job_id

    async def test_jobs_in_lists_every_owner_oldest_first(self, store: JobStore) -> None:
        x = await scheduled(store, 2)
        y = await scheduled(store, 1, account_id="210987654321", region="eu-west-1")
        submitted, _ = await store.create(make_job(3), {})
        got = await store.jobs_in({S.SCHEDULED}, limit=10)
        assert [j.job_id for j in got] == [y, x]
        both = await store.jobs_in({S.SCHEDULED, S.SUBMITTED}, limit=2)
        assert [j.job_id for j in both] == [y, x]
        assert await store.jobs_in(set(), limit=10) == []
        assert submitted.job_id in {j.job_id for j in await store.jobs_in({S.SUBMITTED}, limit=5)}

    async def test_start_next_moves_only_as_the_lifecycle_allows(
        self, store: JobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """start_next asks :func:`batchrock.jobs.decide` like every transition: without the
        move Scheduled -> InProgress in TRANSITIONS, it refuses and changes nothing."""
        job_id = await scheduled(store, 1)
        before = await store.get_by_id(job_id)
        history = await store.events(job_id)
        monkeypatch.setitem(
            jobs.TRANSITIONS, S.SCHEDULED, jobs.TRANSITIONS[S.SCHEDULED] - {S.IN_PROGRESS}
        )
        with pytest.raises(InvalidTransition) as exc:
            await store.start_next("w", now=T0, lease_seconds=30, max_in_progress=5)
        assert (exc.value.current, exc.value.target) == (S.SCHEDULED, S.IN_PROGRESS)
        assert await store.get_by_id(job_id) == before
        assert await store.events(job_id) == history
        assert await store.lease(job_id) is None
        monkeypatch.undo()
        started = await store.start_next("w", now=T0, lease_seconds=30, max_in_progress=5)
        assert started is not None and started.job_id == job_id

    async def test_engines_starting_at_once_never_over_admit_a_model(
        self, store: JobStore, store_factory: StoreFactory, tmp_path: Path
    ) -> None:
        """Four processes call start_next until nothing may start, on 10 Scheduled jobs of
        each of two models and two accounts, at most 3 InProgress per (account, model)."""
        owners: dict[str, tuple[str, str]] = {}
        n = 0
        for account in ("123456789012", "210987654321"):
            for model in ("m-one", "m-two"):
                for _ in range(10):
                    n += 1
                    job_id = await scheduled(store, n, account_id=account, model_id=model)
                    owners[job_id] = (account, model)
        started = await race(store_factory, tmp_path, "start", 4, "3")
        assert len(started) == len(set(started)) == 12
        assert Counter(owners[j] for j in started) == {key: 3 for key in set(owners.values())}
        running = await store.jobs_in({S.IN_PROGRESS}, limit=100)
        assert sorted(j.job_id for j in running) == sorted(started)
        for job_id in started:
            assert [e.to_status for e in await store.events(job_id)][-1] is S.IN_PROGRESS


def test_an_engine_runs_jobs_to_the_end_on_the_store(
    store_factory: StoreFactory, tmp_path: Path
) -> None:
    """The engine on this store: jobs are claimed, validated, started under the quota and
    completed, with every output record and the lifecycle's event history."""
    h = Harness(tmp_path, store_factory=store_factory, quota_max_concurrent_jobs_per_model=1)
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(30)))

    async def main() -> None:
        ids = [(await h.submit("s3://in-bucket/in/")).job_id for _ in range(3)]
        async with h.running() as engine:
            done = await h.wait_until_final(ids, engine=engine)
        assert [j.status for j in done] == [S.COMPLETED] * 3
        assert all(j.counters.success == 30 for j in done)
        for job_id in ids:
            assert await h.statuses(job_id) == [
                "Submitted",
                "Validating",
                "Scheduled",
                "InProgress",
                "Completed",
            ]
            assert await h.store.lease(job_id) is None
            assert h.exists(f"s3://out-bucket/results/{job_id}/a.jsonl.out")
        await h.close()

    asyncio.run(main())


def _overdue(store: JobStore, now: datetime, *, scale: float = 1.0, limit: int = 50) -> Any:
    """The engine's expiry sweep at ``now``: jobs submitted at least 24 h (scaled) ago."""
    return store.overdue(
        {S.SCHEDULED, S.SUBMITTED},
        submitted_by=now - timedelta(hours=24) * scale,
        by=now,
        scale=scale,
        limit=limit,
    )


class TestSweepContract:
    async def test_overdue_finds_a_job_behind_a_thousand_waiting_ones(
        self, store: JobStore
    ) -> None:
        """1,000 older jobs wait with a week's timeout; a newer Submitted one and a Scheduled
        one with 24 h are overdue from their deadline on, not a microsecond before; jobs in
        other statuses, or submitted since, are not."""
        week = timedelta(hours=168)
        for n in range(1000):
            await store.create(make_job(n, expiration_time=T0 + timedelta(seconds=n) + week), {})
        late, _ = await store.create(make_job(2000), {})
        queued = await scheduled(store, 2001)
        running = await scheduled(store, 2002)
        await store.transition(running, S.IN_PROGRESS, now=T0)
        await store.create(make_job(90_000), {})  # submitted a day later
        deadline = late.expiration_time
        assert await _overdue(store, deadline - timedelta(microseconds=1)) == []
        assert [j.job_id for j in await _overdue(store, deadline)] == [late.job_id]
        both = await _overdue(store, deadline + timedelta(seconds=1))
        assert sorted(j.job_id for j in both) == sorted([late.job_id, queued])
        assert len(await _overdue(store, deadline + timedelta(seconds=1), limit=1)) == 1
        assert await store.overdue(set(), submitted_by=T0, by=T0, scale=1, limit=5) == []

    async def test_overdue_scales_the_time_since_submission(self, store: JobStore) -> None:
        """At time scale 3600 (``scale`` 1/3600) a 24 h timeout lasts 24 s, 48 h 48 s (a job
        submitted at T0 + 1 s with 48 h from T0: 47.9997 s), to the microsecond."""
        scale = 1 / 3600
        day, two = [
            (await store.create(make_job(n, expiration_time=T0 + timedelta(hours=h)), {}))[0]
            for n, h in ((0, 24), (1, 48))
        ]
        assert day.submit_time == T0 and two.submit_time == T0 + timedelta(seconds=1)
        two_deadline = two.submit_time + (two.expiration_time - two.submit_time) * scale
        at = T0 + timedelta(seconds=24)
        assert await _overdue(store, at - timedelta(microseconds=1), scale=scale) == []
        assert [j.job_id for j in await _overdue(store, at, scale=scale)] == [day.job_id]
        before = await _overdue(store, two_deadline - timedelta(milliseconds=1), scale=scale)
        assert [j.job_id for j in before] == [day.job_id]
        # 47,999,722.2 us after its submission, in floating point: due a microsecond later.
        got = await _overdue(store, two_deadline + timedelta(microseconds=1), scale=scale)
        assert sorted(j.job_id for j in got) == sorted([day.job_id, two.job_id])

    async def test_first_submitted_after_is_the_next_dwell_end(self, store: JobStore) -> None:
        """The oldest job of the status submitted strictly after the time, past 1,000 jobs of
        another status that are older."""
        for n in range(1000):
            await store.create(make_job(n, job_id=f"old{n:06d}"), {})
        await store.create(make_job(2010), {})
        await store.create(make_job(2020), {})
        other = await scheduled(store, 2015)
        assert other
        at = T0 + timedelta(seconds=2000)
        first = store.first_submitted_after
        assert await first(S.SUBMITTED, at) == T0 + timedelta(seconds=2010)
        assert await first(S.SUBMITTED, at + timedelta(seconds=10)) == at + timedelta(seconds=20)
        assert await first(S.SCHEDULED, at) == at + timedelta(seconds=15)
        assert await first(S.SUBMITTED, at + timedelta(seconds=20)) is None
        assert await first(S.SUBMITTED, T0 - timedelta(microseconds=1)) == T0
