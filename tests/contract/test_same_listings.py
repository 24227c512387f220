"""ListModelInvocationJobs gives the same pages and the same next tokens whichever store runs:
the same jobs in SQLite and PostgreSQL, every filter and both orders, paged to the end."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from batchrock import jobs
from batchrock.api import pagination
from batchrock.clock import FakeClock, from_micros
from batchrock.jobs import JobStatus
from batchrock.service import Caller, JobService
from batchrock.store import sqlite as sqlite_module
from batchrock.store.base import Cursor, JobFilter, JobStore, PageRequest
from batchrock.store.postgres import PostgresStore
from batchrock.store.sqlite import SqliteStore

from .test_store import T0, make_job

pytestmark = pytest.mark.anyio
ACCOUNT, REGION = "123456789012", "us-east-1"
NAMES = ["alpha-one", "ALPHA-two", "beta", "alphabet", "zq-rare", "Gamma.3", "a+b", "x-ray-9"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def the_jobs() -> list[Any]:
    """Jobs with ties in submit_time, every status, other regions and accounts mixed in."""
    rng = random.Random(11)
    out = []
    for n in range(240):
        submit = T0 + timedelta(seconds=rng.randrange(60))  # many share a second
        out.append(
            make_job(
                n,
                job_id="".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=12)),
                name=f"{rng.choice(NAMES)}-{n}",
                status=rng.choice(list(JobStatus)),
                submit_time=submit,
                region=REGION if n % 7 else "eu-west-1",
                account_id=ACCOUNT if n % 11 else "210987654321",
            )
        )
    return out


@pytest.fixture(params=["fetched", "walked", "rare"])
async def stores(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[JobStore, JobStore]]:
    """Every plan of nameContains: the trigram index's few matches fetched and sorted, the
    listing index walked in order (the SQLite store's threshold lowered below the matches;
    PostgreSQL's planner kept from the bitmap scan of the GIN index), and PostgreSQL's query
    for a rare pattern (its function's one generic plan) taken for every pattern."""
    url = pg_url
    if request.param == "walked":
        monkeypatch.setattr(sqlite_module, "_SELECTIVE_CANDIDATES", 3)
        url += "?options=-c%20enable_bitmapscan%3Doff"
    if request.param == "rare":

        async def rare(self: PostgresStore, needle: str, limit: int) -> bool:
            return True

        monkeypatch.setattr(PostgresStore, "_rare_name", rare)
    sqlite = await SqliteStore.open(tmp_path / "same.sqlite3")
    postgres = await PostgresStore.open(url, max_size=2)
    for job in the_jobs():
        for store in (sqlite, postgres):
            # Each job reaches its status through the lifecycle, as in the service.
            await store.create(job.evolve(status=jobs.INITIAL), {})
            for status in jobs.path_to(job.status):
                await store.transition(job.job_id, status, now=job.submit_time)
    yield sqlite, postgres
    await sqlite.close()
    await postgres.close()


async def pages(store: JobStore, filter: JobFilter, limit: int, descending: bool) -> list[Any]:
    """Every page to the end as (job ids, next token), as the API builds them."""
    service = JobService(store, FakeClock(T0))
    listing = pagination.fingerprint(Caller(ACCOUNT, REGION), filter, descending)
    out: list[Any] = []
    after: Cursor | None = None
    while True:
        page = await service.list(
            filter, PageRequest(limit=limit, descending=descending, after=after)
        )
        token = None
        if page.more:
            last = page.jobs[-1]
            after = Cursor(from_micros(last.submit_time), last.job_id)
            token = pagination.encode(after, listing)
        out.append(([j.job_id for j in page.jobs], token))
        if token is None:
            return out


async def test_every_filter_pages_the_same_in_both_stores(
    stores: tuple[JobStore, JobStore],
) -> None:
    sqlite, postgres = stores
    statuses = [None, JobStatus.COMPLETED, JobStatus.SUBMITTED, JobStatus.STOPPING]
    names = [None, "alpha", "A", "a-", "zq", "q", "x", "9", "-", ".", "+", "nomatch", "ALPHA-T"]
    windows = [
        (None, None),
        (T0 + timedelta(seconds=10), None),
        (None, T0 + timedelta(seconds=30)),
        (T0 + timedelta(seconds=10), T0 + timedelta(seconds=30)),
    ]
    checked = 0
    for status, name, (after, before) in itertools.product(statuses, names, windows):
        filter = JobFilter(
            account_id=ACCOUNT,
            region=REGION,
            status=status,
            name_contains=name,
            submitted_after=after,
            submitted_before=before,
        )
        for descending, limit in ((True, 7), (False, 7), (True, 1000)):
            expected = await pages(sqlite, filter, limit, descending)
            got = await pages(postgres, filter, limit, descending)
            assert got == expected, (filter, descending, limit)
            checked += sum(len(ids) for ids, _ in expected)
    assert checked > 5000  # the filters do select jobs, not only empty pages
