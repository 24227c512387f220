"""The PostgreSQL store's plans for ``nameContains`` (issue 11: listings fast at a million jobs):
a pattern the table's statistics call rare goes to migration 3's function, whose one generic
plan fetches the trigram index's few matches; a common one is planned for its value and walks
the listing index in order. Checked on the plans the server logs (auto_explain, nested
statements included), not on timings."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from batchrock.jobs import JobStatus
from batchrock.store.base import Cursor, JobFilter, PageRequest
from batchrock.store.postgres import PostgresStore
from batchrock.store.rows import JOB_COLUMNS, job_params

from .test_store import T0, make_job

pytestmark = pytest.mark.anyio
ACCOUNT, REGION = "123456789012", "us-east-1"
WORDS = ["nightly", "adhoc", "eval", "summaries", "embed", "classify"]
N = 3000
#: Every statement's plan into the server log, those inside functions too.
EXPLAINED = (
    "?options=-c%20session_preload_libraries%3Dauto_explain"
    "%20-c%20auto_explain.log_min_duration%3D0"
    "%20-c%20auto_explain.log_nested_statements%3Don"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(pg_server: Any, pg_url: str) -> AsyncIterator[tuple[PostgresStore, Path]]:
    """N jobs with common names and a few rare ones, ANALYZEd (the statistics the store reads),
    and the store on a connection whose plans are logged; with the server's log file."""
    rows = [
        job_params(
            make_job(
                i,
                name=f"needle-zq-{i}" if i % 1000 == 7 else f"{WORDS[i % 6]}-{WORDS[i // 6 % 6]}",
            )
        )
        for i in range(N)
    ]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        with conn.cursor().copy(f"COPY jobs ({JOB_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute("ANALYZE jobs")
    opened = await PostgresStore.open(pg_url + EXPLAINED, max_size=1)
    yield opened, Path(pg_server.folder) / "server.log"
    await opened.close()


async def plans_of(
    store: tuple[PostgresStore, Path], name: str, page: PageRequest
) -> tuple[int, str]:
    """How many jobs the listing found, and the plans the server logged while it ran."""
    opened, log = store
    start = log.stat().st_size
    found = await opened.list_jobs(
        JobFilter(account_id=ACCOUNT, region=REGION, name_contains=name), page
    )
    with log.open(errors="replace") as f:
        f.seek(start)
        return len(found), f.read()


@pytest.mark.parametrize(
    ("name", "expected"),
    # jobs before the cursor / in all: needle-zq-7, -1007 and -2007 (the cursor is at 1500 s)
    # eval-nightly: one name in 36, too few for a walk to find a page of 100 sooner
    [
        ("needle", (2, 3)),
        ("ZQ", (2, 3)),
        ("x", (0, 0)),
        ("needle-zq-2007", (0, 1)),
        ("EVAL-n", (42, 84)),
    ],
)
@pytest.mark.parametrize("deep", [False, True])
async def test_a_rare_pattern_is_fetched_from_the_trigram_index_by_one_generic_plan(
    store: tuple[PostgresStore, Path], name: str, expected: tuple[int, int], deep: bool
) -> None:
    after = Cursor(T0 + timedelta(seconds=1500), "zzz") if deep else None
    for _ in range(3):  # the same plan every call: the function's own, cached
        found, plans = await plans_of(store, name, PageRequest(limit=100, after=after))
        assert found == expected[0 if deep else 1]
        assert "batchrock_jobs_named" in plans, plans
        assert "Bitmap Index Scan on jobs_names" in plans, plans
        assert "~~ $10" in plans, plans  # generic: the pattern is a parameter, not planned for
        assert "jobs_listing" not in plans and "Seq Scan on jobs" not in plans, plans


@pytest.mark.parametrize("name", ["nightly", "a", "SUMMARIES"])
async def test_a_common_pattern_walks_the_listing_index(
    store: tuple[PostgresStore, Path], name: str
) -> None:
    found, plans = await plans_of(store, name, PageRequest(limit=100))
    assert found == 100
    assert "batchrock_jobs_named" not in plans, plans
    assert "Index Scan Backward using jobs_listing" in plans, plans
    assert "Seq Scan on jobs" not in plans, plans


@pytest.mark.parametrize("name", ["needle", "EVAL-n", "nightly"])
@pytest.mark.parametrize("descending", [True, False])
async def test_a_listings_keys_are_its_rows_keys_in_order_by_either_plan(
    store: tuple[PostgresStore, Path], name: str, descending: bool
) -> None:
    """The key query (one ``string_agg`` a page, in the listing's order) gives the keys of
    the rows the listing reads, in their order, through the rare-name function and through
    the listing index alike."""
    opened, log = store
    job_filter = JobFilter(account_id=ACCOUNT, region=REGION, name_contains=name)
    page = PageRequest(limit=100, descending=descending)
    start = log.stat().st_size
    packed = await opened.list_row_keys(job_filter, page)
    with log.open(errors="replace") as f:
        f.seek(start)
        plans = f.read()
    keyed = await opened.list_keyed_rows(job_filter, page)
    assert keyed and packed == ",".join(key for key, _ in keyed)
    assert ("batchrock_jobs_named" in plans) == (name != "nightly"), plans


async def test_a_claim_does_not_walk_the_submitted_jobs_in_their_dwell(
    store: tuple[PostgresStore, Path], pg_url: str
) -> None:
    """The engine's claim of Submitted and Validating jobs with the dwell (``submitted_by``),
    all N Submitted jobs still in it: each status's pick is a range of jobs_claim that finds
    nothing, not every job of both statuses read and sorted (as ``status IN (...)`` was: 5 ms
    at 10,000 jobs). Checked on the rows the logged plan (auto_explain with ANALYZE) read."""
    _, log = store
    analyzed = await PostgresStore.open(
        pg_url + EXPLAINED + "%20-c%20auto_explain.log_analyze%3Don", max_size=1
    )
    try:
        waiting = {JobStatus.SUBMITTED, JobStatus.VALIDATING}
        start = log.stat().st_size
        young = T0 - timedelta(seconds=1)  # make_job(n) is submitted at T0 + n s
        claimed = await analyzed.claim(
            "w", waiting, now=T0 + timedelta(days=1), lease_seconds=30, submitted_by=young
        )
        assert claimed is None
        with log.open(errors="replace") as f:
            f.seek(start)
            plans = f.read()
        assert "Index Scan using jobs_claim" in plans, plans
        read = [int(n) for n in re.findall(r"actual time=\S+ rows=(\d+)", plans)]
        removed = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plans)]
        assert read and max(read + removed) <= 1, plans
        oldest = await analyzed.claim(
            "w", waiting, now=T0 + timedelta(days=1), lease_seconds=30, submitted_by=T0
        )
        assert oldest is not None and oldest.submit_time == T0
    finally:
        await analyzed.close()


async def test_start_next_counts_each_models_running_jobs_once(
    store: tuple[PostgresStore, Path], pg_url: str
) -> None:
    """``start_next`` with every model at its quota: the InProgress jobs are counted once
    (one hashed subplan), not once per Scheduled job passed over (a correlated count, run
    1,000 times at 1,000 Scheduled jobs: 110 ms at 50,000 jobs). Checked on the logged plan's
    loops."""
    _, log = store
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ids = [row[0] for row in conn.execute("SELECT job_id FROM jobs ORDER BY job_id")]
        conn.execute("UPDATE jobs SET status = 'InProgress' WHERE job_id = ANY(%s)", (ids[:300],))
        conn.execute("UPDATE jobs SET status = 'Scheduled' WHERE job_id = ANY(%s)", (ids[300:],))
        conn.execute("ANALYZE jobs")
    analyzed = await PostgresStore.open(
        pg_url + EXPLAINED + "%20-c%20auto_explain.log_analyze%3Don", max_size=1
    )
    try:
        start = log.stat().st_size
        started = await analyzed.start_next("w", now=T0, lease_seconds=30, max_in_progress=10)
        assert started is None
        with log.open(errors="replace") as f:
            f.seek(start)
            plans = f.read()
        loops = [int(n) for n in re.findall(r"loops=(\d+)", plans)]
        assert "Scheduled" in plans and loops and max(loops) == 1, plans
    finally:
        await analyzed.close()
