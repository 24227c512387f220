"""The SQLite store's listing queries use indexes: no query walks every job (issue: fast at a
million jobs). Checked on the query plans SQLite chooses, not on timings."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batchrock.clock import FakeClock
from batchrock.jobs import Job, JobStatus
from batchrock.store.base import Cursor, JobFilter, PageRequest
from batchrock.store.rows import JOB_COLUMNS, N_COLUMNS, job_params
from batchrock.store.sqlite import SqliteStore, _snapshot
from tests.contract.test_store import T0, make_job
from tests.engine.harness import Harness

pytestmark = pytest.mark.anyio
S = JobStatus


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def plans_of(store: SqliteStore, job_filter: JobFilter, page: PageRequest) -> list[str]:
    statements: list[str] = []
    conn = store._conn
    conn.set_trace_callback(statements.append)
    try:
        await store.list_jobs(job_filter, page)
    finally:
        conn.set_trace_callback(None)
    plans = []
    for sql in statements:
        if sql.lstrip().upper().startswith("SELECT"):
            rows = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            plans.append(" | ".join(r[3] for r in rows))
    return plans


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"status": JobStatus.COMPLETED},
        {"submitted_after": T0, "submitted_before": T0 + timedelta(hours=1)},
        {"name_contains": "rare-name"},
        {"name_contains": "zq"},
        {"name_contains": "q"},
        {"status": JobStatus.FAILED, "name_contains": "nightly", "submitted_after": T0},
    ],
)
@pytest.mark.parametrize("after", [None, Cursor(T0, "zzzzzzzzzzzz")])
async def test_listing_never_scans_the_table(
    tmp_path: Path, kw: dict, after: Cursor | None
) -> None:
    store = await SqliteStore.open(tmp_path / "plans.sqlite3")
    try:
        for i in range(30):
            await store.create(make_job(i, name=f"nightly-{i}"), {})
        job_filter = JobFilter(account_id="123456789012", region="us-east-1", **kw)
        plans = await plans_of(store, job_filter, PageRequest(limit=10, after=after))
        assert plans
        for plan in plans:
            assert "SCAN jobs" not in plan, plan
    finally:
        await store.close()


async def test_rare_names_are_fetched_by_rowid(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "plans.sqlite3")
    try:
        for i in range(30):
            await store.create(make_job(i, name=f"nightly-{i}"), {})
        job_filter = JobFilter(account_id="123456789012", region="us-east-1", name_contains="ly-2")
        plans = await plans_of(store, job_filter, PageRequest(limit=10))
        main = [p for p in plans if "jobs" in p and "job_names" not in p]
        assert main and all("rowid" in p.lower() and "jobs_listing" not in p for p in main), main
    finally:
        await store.close()


def test_the_metrics_status_count_reads_only_the_status_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a million jobs the count must not read the table's rows (checked on SQLite's plan,
    not on timings): it scans the covering index jobs_claim; the unfinished-work query looks
    only at the unfinished statuses through the same index."""
    store = SqliteStore.open_sync(tmp_path / "db.sqlite3")
    asyncio.run(store.close())
    statements: list[str] = []
    real_connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    with monkeypatch.context() as patched:
        patched.setattr(sqlite3, "connect", traced)
        _snapshot(tmp_path / "db.sqlite3")
    conn = real_connect(tmp_path / "db.sqlite3")
    plans = [
        " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
        for sql in statements
        if sql.lstrip().upper().startswith("SELECT")
    ]
    assert len(plans) == 2, plans
    assert "COVERING INDEX jobs_claim" in plans[0], plans[0]
    assert "INDEX jobs_claim (status=?)" in plans[1], plans[1]


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"status": JobStatus.COMPLETED},
        {"submitted_after": T0, "submitted_before": T0 + timedelta(hours=1)},
    ],
)
@pytest.mark.parametrize("after", [None, Cursor(T0, "zzzzzzzzzzzz")])
async def test_a_listings_keys_are_read_from_the_index_alone(
    tmp_path: Path, kw: dict, after: Cursor | None
) -> None:
    """The key query of a listing (the API's summary cache reads only keys) is answered from
    a listing index that holds the whole key: no table row is read."""
    store = await SqliteStore.open(tmp_path / "plans.sqlite3")
    try:
        for i in range(30):
            await store.create(make_job(i), {})
        job_filter = JobFilter(account_id="123456789012", region="us-east-1", **kw)
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)
        try:
            keys = await store.list_row_keys(job_filter, PageRequest(limit=10, after=after))
        finally:
            store._conn.set_trace_callback(None)
        if not kw and after is None:
            assert len(keys.split(",")) == 10
        (sql,) = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        conn = store._conn
        plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "INDEX jobs_listing" in plan and "SCAN jobs" not in plan, plan
        # The key is a generated column (schema version 5), which SQLite's plan does not call
        # covering; its program reads it from the index all the same: the table's cursor is
        # opened (for a deferred seek), but no instruction reads a row through it.
        roots = dict(conn.execute("SELECT name, rootpage FROM sqlite_master").fetchall())
        program = conn.execute("EXPLAIN " + sql).fetchall()
        opened = {r[3]: r[2] for r in program if r[1] == "OpenRead"}
        assert roots["jobs"] in opened and roots[plan.split("INDEX ")[1].split()[0]] in opened
        table = opened[roots["jobs"]]
        row_reads = {"Column", "Rowid", "SeekRowid", "NotExists", "Rewind", "Last", "Next", "Prev"}
        reads = [tuple(r) for r in program if r[1] in row_reads and r[2] == table]
        assert not reads, reads
    finally:
        await store.close()


def _insert(path: Path, jobs: list[Job]) -> None:
    """Jobs straight into the table (thousands through ``create`` would take seconds), on a
    connection of its own that waits for the store's checkpointer (the store's does not)."""
    marks = ", ".join("?" * N_COLUMNS)
    conn = sqlite3.connect(path, timeout=30)
    try:
        with conn:
            conn.executemany(
                f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({marks})", [job_params(j) for j in jobs]
            )
        conn.execute("ANALYZE")
    finally:
        conn.close()


async def _steps(store: SqliteStore, call: Awaitable[Job | None]) -> tuple[int, Job | None]:
    """How many virtual-machine instructions SQLite ran for ``call`` (progress handler, one
    call an instruction: a count of the work, not a timing), and the job it returned."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    store._conn.set_progress_handler(count, 1)
    try:
        job = await call
    finally:
        store._conn.set_progress_handler(None, 1)
    return steps, job


def _claim(store: SqliteStore, now: datetime, by: datetime) -> Awaitable[Job | None]:
    """The engine's claim of Submitted and Validating jobs, with the dwell ending at ``by``."""
    waiting = {S.SUBMITTED, S.VALIDATING}
    return store.claim("w", waiting, now=now, lease_seconds=30, submitted_by=by)


async def test_a_claim_does_not_walk_the_submitted_jobs_in_their_dwell(tmp_path: Path) -> None:
    """The engine's claim of Submitted and Validating jobs with the dwell (``submitted_by``)
    reads as much with 3,000 Submitted jobs all still in their dwell as with 30: the dwell
    is a range of the index jobs_claim, not a test of each Submitted job (it read them all:
    issue of claims at scale, docs/benchmarks.md "The engine's polls")."""
    now = T0 + timedelta(hours=2)
    steps = {}
    for n in (30, 3000):
        path = tmp_path / f"claims-{n}.sqlite3"
        store = await SqliteStore.open(path)
        try:
            old = [make_job(i, status=S.VALIDATING, job_id=f"old{i:05d}") for i in range(5)]
            _insert(path, old + [make_job(100 + i, job_id=f"new{i:05d}") for i in range(n)])
            for _ in old:  # the Validating jobs are held by a live engine
                assert await store.claim("run", {S.VALIDATING}, now=now, lease_seconds=600)
            young = T0 + timedelta(seconds=99)  # every Submitted job is younger
            steps[n], none = await _steps(store, _claim(store, now, young))
            assert none is None
            _, oldest = await _steps(store, _claim(store, now, now))
            assert oldest is not None and oldest.job_id == "new00000"
        finally:
            await store.close()
    assert steps[3000] <= steps[30] + 20, steps


async def test_start_next_counts_each_models_running_jobs_once(tmp_path: Path) -> None:
    """``start_next`` with every model at its quota (the Scheduled backlog of a busy
    service): the InProgress jobs are counted once per call, not once per Scheduled job it
    passes over. Counted in SQLite's virtual-machine instructions (progress handler): they
    grew as Scheduled x InProgress, 637,000 at 300 x 300; now 11,400."""
    path = tmp_path / "start.sqlite3"
    store = await SqliteStore.open(path)
    try:
        n = 300
        running = [make_job(i, status=S.IN_PROGRESS, job_id=f"run{i:05d}") for i in range(n)]
        waiting = [make_job(n + i, status=S.SCHEDULED, job_id=f"wait{i:05d}") for i in range(n)]
        _insert(path, running + waiting)
        steps, started = await _steps(
            store, store.start_next("w", now=T0, lease_seconds=30, max_in_progress=10)
        )
        assert started is None
        assert steps < 60 * 2 * n, steps
    finally:
        await store.close()


async def test_a_poll_reads_as_much_behind_3000_waiting_jobs_as_behind_30(
    tmp_path: Path,
) -> None:
    """A poll's sweep (expiry, and when the next dwell ends) with 3,000 waiting jobs, none
    overdue, all Submitted in their dwell, reads as much as with 30: it asks the store for
    the overdue jobs (a range of jobs_claim up to a day before now) and for one row past the
    dwell. It read the 1,000 oldest waiting jobs every poll (1,000 rows and Job objects):
    85,000 instructions at 3,000 jobs, 2,300 at 30; now 300 at either."""
    now = T0 + timedelta(hours=2)
    steps = {}
    for n in (30, 3000):
        h = Harness(tmp_path / str(n), clock=FakeClock(now), engine_min_submitted_seconds=3 * 3600)
        try:
            _insert(h.settings.database_path, [make_job(i) for i in range(n)])
            engine = h.engine()

            async def nothing_to_claim() -> None:
                return None

            engine._next_job = nothing_to_claim  # type: ignore[method-assign]
            assert isinstance(h.store, SqliteStore)
            steps[n], _ = await _steps(h.store, _none_after(engine.tick()))
            assert engine._next_due == T0 + timedelta(hours=3)  # the oldest job's dwell end
        finally:
            await h.close()
    assert steps[3000] <= steps[30] + 20, steps


async def _none_after(call: Awaitable[None]) -> None:
    await call
