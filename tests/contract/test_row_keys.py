"""Row keys (store/base.py ``RowKey``): what the API's summary cache keeps encoded bytes under.

Each store's keys are the keys of the rows it lists; a write by another connection (another
process) changes a row's key, even when it leaves ``last_modified_time`` as it was, so the
cache answers the new bytes; and no store write changes a member of the view the key leaves
out (read from the stores' SQL).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrock import jobs
from batchrock.api import codec
from batchrock.api.summaries import SummaryCache
from batchrock.clock import FakeClock
from batchrock.jobs import Counters, JobStatus
from batchrock.service import Caller, JobService
from batchrock.store.base import ROW_KEY_MEMBERS, JobFilter, JobRow, JobStore, PageRequest, row_key

from .test_store import T0, make_job

pytestmark = pytest.mark.anyio
ACCOUNT, REGION = "123456789012", "us-east-1"
CALLER = Caller(ACCOUNT, REGION)
STORE_SOURCES = Path(__file__).resolve().parents[2] / "src" / "batchrock" / "store"


async def fill(store: JobStore) -> list[str]:
    ids = []
    for n in range(12):
        job = make_job(n, status=jobs.INITIAL, name=f"keyed-{n % 3}")
        await store.create(job, {})
        for status in jobs.path_to(list(JobStatus)[n % len(JobStatus)]):
            await store.transition(job.job_id, status, now=T0 + timedelta(seconds=n))
        ids.append(job.job_id)
    await store.save_progress(ids[0], counters=Counters(total=5, processed=2), now=T0)
    return ids


async def test_the_key_reads_are_the_keys_of_the_rows(store: JobStore) -> None:
    ids = await fill(store)
    filters = [
        JobFilter(account_id=ACCOUNT, region=REGION),
        JobFilter(account_id=ACCOUNT, region=REGION, status=JobStatus.IN_PROGRESS),
        JobFilter(account_id=ACCOUNT, region=REGION, name_contains="ed-1"),
        JobFilter(account_id=ACCOUNT, region="eu-west-1"),
    ]
    for job_filter in filters:
        for page in (PageRequest(limit=5), PageRequest(limit=100, descending=False)):
            rows = await store.list_rows(job_filter, page)
            assert await store.list_row_keys(job_filter, page) == [row_key(r) for r in rows]
    for job_id in ids:
        row = await store.get_row(ACCOUNT, REGION, job_id)
        assert row is not None
        assert await store.get_row_key(ACCOUNT, REGION, job_id) == row_key(row)
    assert await store.get_row_key(ACCOUNT, "eu-west-1", ids[0]) is None
    assert await store.get_row_key("210987654321", REGION, ids[0]) is None
    assert await store.get_row_key(ACCOUNT, REGION, "nosuchjob000") is None


def encoded(row: JobRow | None) -> bytes:
    assert row is not None
    return orjson.dumps(codec.job_to_wire(row))


async def test_a_write_by_another_process_is_never_served_stale(
    store: JobStore, second_store: JobStore
) -> None:
    ids = await fill(store)
    service = JobService(store, FakeClock(T0))
    cache = SummaryCache(service, 1000)
    everything = JobFilter(account_id=ACCOUNT, region=REGION)
    page = PageRequest(limit=100)

    async def listed() -> list[Any]:
        body = (await cache.page(everything, page)).body(None).decoded()
        return body["invocationJobSummaries"]  # type: ignore[no-any-return]

    async def expected() -> list[Any]:
        return [codec.job_to_wire(r) for r in await store.list_rows(everything, page)]

    assert await listed() == await expected()
    assert len(cache) == len(ids)

    # Nothing changed: the page comes from the kept bytes alone (no row is read).
    async def no_rows(*args: Any) -> Any:
        raise AssertionError("rows read for a page whose every job was encoded")

    list_rows, service.list = service.list, no_rows  # type: ignore[method-assign]
    assert await listed() == await expected()
    service.list = list_rows  # type: ignore[method-assign]

    running = next(
        r.job_id
        for r in await store.list_rows(everything, page)
        if r.status == JobStatus.IN_PROGRESS.value
    )
    before = await store.get_row(ACCOUNT, REGION, running)
    assert before is not None
    assert (await cache.get(CALLER, running)).body == encoded(before)
    same_time = T0 + timedelta(seconds=30)
    # Each change below leaves last_modified_time where the one before put it (a frozen clock,
    # two writes in one microsecond): the key must still change.
    for processed, success, error in [(1, 0, 0), (2, 0, 0), (2, 1, 0), (2, 1, 1)]:
        counters = Counters(total=9, processed=processed, success=success, error=error)
        await second_store.save_progress(running, counters=counters, now=same_time)
        for _ in range(2):  # the miss, then the hit of what the miss kept
            fresh = await store.get_row(ACCOUNT, REGION, running)
            assert fresh is not None and fresh.processed_records == processed
            assert (await cache.get(CALLER, running)).body == encoded(fresh)
            assert await listed() == await expected()
    # A move that changes the status alone (no message, no end time, the same time).
    await second_store.transition(
        running, JobStatus.STOPPING, now=same_time, expected={JobStatus.IN_PROGRESS}
    )
    fresh = await store.get_row(ACCOUNT, REGION, running)
    assert fresh is not None and fresh.status == JobStatus.STOPPING.value
    assert fresh.message is None and fresh.end_time is None
    assert (await cache.get(CALLER, running)).body == encoded(fresh)
    assert await listed() == await expected()


async def test_a_small_cache_or_none_answers_the_same(store: JobStore) -> None:
    await fill(store)
    everything = JobFilter(account_id=ACCOUNT, region=REGION)
    service = JobService(store, FakeClock(T0))
    for size in (0, 1, 5):
        cache = SummaryCache(service, size)
        for limit in (3, 100):
            for _ in range(2):
                got = await cache.page(everything, PageRequest(limit=limit))
                rows = await store.list_rows(everything, PageRequest(limit=limit))
                assert got.summaries == [encoded(r) for r in rows]
        assert len(cache) == size


_VIEW_COLUMNS = {"vpc_config" if f == "vpc" else f for f in JobRow._fields}
_SET = re.compile(r"UPDATE jobs SET (.*?) WHERE", re.S)


def test_no_store_write_changes_a_member_the_key_leaves_out() -> None:
    """Every ``UPDATE jobs SET`` of the stores assigns only key members or columns outside
    the view: else a row could change and keep its key, and the API would serve stale bytes."""
    outside_key = _VIEW_COLUMNS - set(ROW_KEY_MEMBERS)
    seen = 0
    for source in sorted(STORE_SOURCES.glob("*.py")):
        text = source.read_text()
        # The SQL is written as adjacent string literals: join them.
        joined = re.sub(r'"\s*\n\s*f?"', "", text)
        for match in _SET.finditer(joined):
            assigned = set(re.findall(r"(\w+)\s*=", match.group(1)))
            assert assigned, match.group(0)
            assert not assigned & outside_key, (source.name, match.group(0))
            seen += 1
    assert seen >= 8  # transitions, progress and leases, in both stores
