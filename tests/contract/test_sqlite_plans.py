"""The SQLite store's listing queries use indexes: no query walks every job (issue: fast at a
million jobs). Checked on the query plans SQLite chooses, not on timings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from batchrock.jobs import JobStatus
from batchrock.store.base import Cursor, JobFilter, PageRequest
from batchrock.store.sqlite import SqliteStore
from tests.contract.test_store import T0, make_job

pytestmark = pytest.mark.anyio


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
