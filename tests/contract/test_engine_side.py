"""Contract of the store methods only the engine uses: starting Scheduled jobs under the
per-model quota, and sweeping jobs by status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from batchrock.jobs import JobStatus
from batchrock.store.base import JobStore
from batchrock.store.sqlite import SqliteStore

from .test_store import T0, make_job

pytestmark = pytest.mark.anyio
S = JobStatus


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def scheduled(store: JobStore, n: int, **changes: object) -> str:
    job, _ = await store.create(make_job(n, **changes), {})
    await store.transition(job.job_id, S.VALIDATING, now=T0)
    await store.transition(job.job_id, S.SCHEDULED, now=T0)
    return job.job_id


class EngineSideContract:
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


class TestSqliteEngineSide(EngineSideContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[JobStore]:
        store = await SqliteStore.open(tmp_path / "db" / "batchrock.sqlite3")
        yield store
        await store.close()

    @pytest.fixture
    async def second_store(self, tmp_path: Path, store: JobStore) -> AsyncIterator[JobStore]:
        other = await SqliteStore.open(tmp_path / "db" / "batchrock.sqlite3")
        yield other
        await other.close()
