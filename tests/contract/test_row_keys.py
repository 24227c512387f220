"""Row keys (store/base.py ``RowKey``): what the API's summary cache keeps encoded bytes under.

Each store's key reads give the keys its keyed row reads give; a write by another connection
(another process) changes a row's key, even when it leaves ``last_modified_time`` as it was,
so the cache answers the new bytes; and in SQLite an update of any column of the view, in
PostgreSQL a change of one, by any writer, moves the row's version on (the engine's lease
bookkeeping does not).
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from batchrock import jobs
from batchrock.api import codec, pagination
from batchrock.api.summaries import SummaryCache
from batchrock.clock import FakeClock, from_micros
from batchrock.jobs import Counters, JobStatus
from batchrock.service import Caller, JobService
from batchrock.store.base import (
    Cursor,
    JobFilter,
    JobRow,
    JobStore,
    PageRequest,
    StoreBusy,
    key_job_id,
    row_key,
)
from batchrock.store.postgres import PostgresStore
from batchrock.store.sqlite import _ROW_COLUMNS, SqliteStore

from .test_store import T0, make_job

pytestmark = pytest.mark.anyio
ACCOUNT, REGION = "123456789012", "us-east-1"
CALLER = Caller(ACCOUNT, REGION)


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
    middle = Cursor(T0 + timedelta(seconds=6), "job000000006")
    pages = [
        PageRequest(limit=5),
        PageRequest(limit=100, descending=False),
        PageRequest(limit=100, after=middle),
        PageRequest(limit=3, descending=False, after=middle),
    ]
    for job_filter in filters:
        for page in pages:
            rows = await store.list_rows(job_filter, page)
            keyed = await store.list_keyed_rows(job_filter, page)
            assert [r for _, r in keyed] == rows
            assert [key_job_id(k) for k, _ in keyed] == [r.job_id for r in rows]
            # One string, in the listing's order (SQLite's aggregate keeps its subquery's).
            packed = await store.list_row_keys(job_filter, page)
            assert packed == ",".join(k for k, _ in keyed)
    for job_id in ids:
        row = await store.get_row(ACCOUNT, REGION, job_id)
        assert row is not None
        assert await store.get_keyed_row(ACCOUNT, REGION, job_id) == (
            await store.get_row_key(ACCOUNT, REGION, job_id),
            row,
        )
    for account, region, job_id in [
        (ACCOUNT, "eu-west-1", ids[0]),
        ("210987654321", REGION, ids[0]),
        (ACCOUNT, REGION, "nosuchjob000"),
    ]:
        assert await store.get_row_key(account, region, job_id) is None
        assert await store.get_keyed_row(account, region, job_id) is None
        assert await store.get_keyed_rows(account, region, [job_id]) == []
    # Many at once: each as get_keyed_row gives it; others' and unknown ids left out.
    some = [ids[0], ids[5], "nosuchjob000", ids[11]]
    many = await store.get_keyed_rows(ACCOUNT, REGION, some)
    assert sorted(many) == sorted(
        [k for k in [await store.get_keyed_row(ACCOUNT, REGION, i) for i in some] if k]
    )
    assert len(many) == 3
    assert await store.get_keyed_rows(ACCOUNT, "eu-west-1", some) == []
    assert await store.get_keyed_rows(ACCOUNT, REGION, []) == []


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


async def test_a_kept_listing_is_answered_only_while_its_keys_are_the_same(
    store: JobStore, second_store: JobStore
) -> None:
    """ListModelInvocationJobs' bodies (SummaryCache.listing): the body kept for a request is
    answered again only while the page's keys read now are the ones it was made of; any
    write by another process to a job on the page, or a new job on it, gives the new bytes."""
    ids = await fill(store)
    service = JobService(store, FakeClock(T0))
    cache = SummaryCache(service, 1000)
    everything = JobFilter(account_id=ACCOUNT, region=REGION)
    page = PageRequest(limit=len(ids) - 1)  # all but the oldest: a nextToken
    listing = pagination.fingerprint(CALLER, everything, True)

    async def expected(job_filter: JobFilter = everything, fingerprint: str = listing) -> bytes:
        rows = await store.list_rows(job_filter, PageRequest(limit=page.limit + 1))
        last = rows[page.limit - 1]
        token = pagination.encode(Cursor(from_micros(last.submit_time), last.job_id), fingerprint)
        summaries = [codec.job_to_wire(r) for r in rows[: page.limit]]
        return orjson.dumps({"invocationJobSummaries": summaries, "nextToken": token})

    made = await cache.listing(everything, page, listing)  # from the rows: nothing kept yet
    assert made.body == await expected()
    joined = await cache.listing(everything, page, listing)  # from the kept summaries
    assert joined.body == made.body
    kept = await cache.listing(everything, page, listing)
    assert kept is joined  # the kept body itself

    # The same jobs through another filter: their keys, but that listing's own token.
    since = JobFilter(account_id=ACCOUNT, region=REGION, submitted_after=T0 - timedelta(days=1))
    other_listing = pagination.fingerprint(CALLER, since, True)
    for _ in range(3):
        other = await cache.listing(since, page, other_listing)
        assert other.body == await expected(since, other_listing) != kept.body

    running = next(
        r.job_id
        for r in await store.list_rows(everything, page)
        if r.status == JobStatus.IN_PROGRESS.value
    )
    for processed in (1, 2):
        await second_store.save_progress(
            running, counters=Counters(total=9, processed=processed), now=T0
        )
        fresh = await cache.listing(everything, page, listing)  # the changed row read
        assert fresh.body == await expected() != kept.body
        kept = await cache.listing(everything, page, listing)
        assert kept.body == fresh.body
        assert await cache.listing(everything, page, listing) is kept
    # A newer job: the page moves on by one.
    await second_store.create(make_job(40, submit_time=T0 + timedelta(hours=1)), {})
    assert (await cache.listing(everything, page, listing)).body == await expected() != kept.body
    assert (await cache.listing(everything, page, listing)).body == await expected()


async def test_a_page_with_a_changed_job_reads_that_row_alone_never_a_stale_one(
    store: JobStore, second_store: JobStore
) -> None:
    """A job on a kept page changed by another process: the page reads its row by id (not
    the whole page again) and is the page of now. Changed once more between the page's keys
    and that read, the row's key is no longer the listed one, and the page is read whole:
    one moment's page, never the row listed with its later bytes. With more than half the
    page missing, the page is read whole at once."""
    ids = await fill(store)
    service = JobService(store, FakeClock(T0))
    cache = SummaryCache(service, 1000)
    everything = JobFilter(account_id=ACCOUNT, region=REGION)
    page = PageRequest(limit=len(ids) - 1)
    listing = pagination.fingerprint(CALLER, everything, True)
    reads: list[str] = []

    async def expected() -> list[Any]:
        return [codec.job_to_wire(r) for r in await store.list_rows(everything, page)]

    async def listed() -> list[Any]:
        body = await cache.listing(everything, page, listing)
        return orjson.loads(body.body)["invocationJobSummaries"]  # type: ignore[no-any-return]

    def counted(name: str, method: Any) -> Any:
        async def call(*args: Any) -> Any:
            reads.append(name)
            return await method(*args)

        return call

    by_id, whole = service.get_keyed_many, service.list_keyed
    service.get_keyed_many = counted("by id", by_id)  # type: ignore[method-assign]
    service.list_keyed = counted("whole", whole)  # type: ignore[method-assign]
    assert await listed() == await expected()
    assert reads == ["whole"]  # nothing kept: the page at once
    running = next(
        r.job_id
        for r in await store.list_rows(everything, page)
        if r.status == JobStatus.IN_PROGRESS.value
    )

    async def progress(processed: int) -> None:
        counters = Counters(total=9, processed=processed)
        await second_store.save_progress(running, counters=counters, now=T0)

    reads.clear()
    await progress(1)
    assert await listed() == await expected()
    assert reads == ["by id"]
    assert await listed() == await expected()  # the kept body
    assert reads == ["by id"]

    # Changed again after the page's keys were read, before its row is: read whole.
    async def racing(*args: Any) -> Any:
        reads.append("by id")
        await progress(3)
        return await by_id(*args)

    reads.clear()
    await progress(2)
    service.get_keyed_many = racing  # type: ignore[method-assign]
    got = await listed()
    assert reads == ["by id", "whole"]
    assert got == await expected()
    assert next(s for s in got if s["jobArn"].endswith(running))["processedRecordCount"] == 3


async def test_kept_listings_are_bounded_by_the_cache_size(store: JobStore) -> None:
    """The kept bodies hold at most ``max_jobs`` summaries between them (an empty page counts
    one); a page larger than that is answered, never kept; 0 keeps none."""
    await fill(store)
    service = JobService(store, FakeClock(T0))
    for size in (0, 5, 8):
        cache = SummaryCache(service, size)
        for limit, status in [(3, None), (100, None), (4, JobStatus.FAILED), (2, None)]:
            job_filter = JobFilter(account_id=ACCOUNT, region=REGION, status=status)
            listing = pagination.fingerprint(CALLER, job_filter, True)
            request = PageRequest(limit=limit)
            bodies = [await cache.listing(job_filter, request, listing) for _ in range(3)]
            rows = await store.list_rows(job_filter, request)
            assert all(
                orjson.loads(b.body)["invocationJobSummaries"]
                == [codec.job_to_wire(r) for r in rows]
                for b in bodies
            )
            kept = size > 0 and max(1, len(rows)) <= size
            assert (bodies[2] is bodies[1]) == kept, (size, limit, status)
            assert cache._paged == sum(p.size for p in cache._pages.values()) <= size


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


async def test_any_write_of_a_view_column_moves_the_sqlite_version_on(tmp_path: Path) -> None:
    """Every column the view shows, written by another connection (even to the value it had),
    changes the key; the engine's lease bookkeeping does not."""
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        (job_id, *_) = await fill(store)
        other = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
        columns = [c.strip() for c in _ROW_COLUMNS.split(",")]
        assert len(columns) == len(JobRow._fields)
        keys = {await store.get_row_key(ACCOUNT, REGION, job_id)}
        for column in columns:
            other.execute(f"UPDATE jobs SET {column} = {column} WHERE job_id = ?", (job_id,))
            keys.add(await store.get_row_key(ACCOUNT, REGION, job_id))
        assert len(keys) == len(columns) + 1
        key = await store.get_row_key(ACCOUNT, REGION, job_id)
        other.execute(
            "UPDATE jobs SET lease_owner = 'w', lease_expires = 5, checkpoint = '{}' "
            "WHERE job_id = ?",
            (job_id,),
        )
        assert await store.get_row_key(ACCOUNT, REGION, job_id) == key
        other.close()
    finally:
        await store.close()


async def test_a_change_of_any_view_column_moves_the_postgres_version_on(pg_url: str) -> None:
    """Each column the view shows, changed by another connection, moves the version on (one
    step per update, seen in the key); the same value written again, and the engine's lease,
    heartbeat, checkpoint and token bookkeeping, leave it where it was."""
    store = await PostgresStore.open(pg_url)
    try:
        (job_id, *_) = await fill(store)
        key = await store.get_row_key(ACCOUNT, REGION, job_id)
        assert key is not None
        columns = [c.strip() for c in _ROW_COLUMNS.split(",")]
        assert len(columns) == len(JobRow._fields)
        changed = {
            "text": "coalesce({0}, '') || 'x'",
            "bigint": "coalesce({0}, 0) + 1",
            "integer": "{0} + 1",
            "jsonb": "coalesce({0}, '[]'::jsonb) || '[1]'::jsonb",
        }
        with psycopg.connect(pg_url, autocommit=True) as other:
            types = dict(
                other.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'jobs'"
                ).fetchall()
            )
            # The row is followed by a column outside the view (its id, account and region
            # change below too); marking it is bookkeeping, which moves nothing.
            mark = "UPDATE jobs SET lease_owner = 'tracked' WHERE job_id = %s RETURNING row_version"
            version = int(key.rpartition(":")[2])
            assert key == row_key(job_id, version)
            assert other.execute(mark, (job_id,)).fetchone() == (version,)
            for column in columns:
                same = other.execute(
                    f"UPDATE jobs SET {column} = {column} WHERE lease_owner = 'tracked' "
                    "RETURNING row_version"
                ).fetchone()
                assert same == (version,), column
                moved = other.execute(
                    f"UPDATE jobs SET {column} = {changed[types[column]].format(column)} "
                    "WHERE lease_owner = 'tracked' RETURNING row_version"
                ).fetchone()
                assert moved == (version + 1,), column
                version += 1
            other.execute(
                "UPDATE jobs SET job_id = %s, account_id = %s, region = %s "
                "WHERE lease_owner = 'tracked'",
                (job_id, ACCOUNT, REGION),
            )
            key = await store.get_row_key(ACCOUNT, REGION, job_id)
            assert key == row_key(job_id, version + 1)
            for bookkeeping in [
                "lease_owner = 'w', lease_expires = 5",
                "lease_expires = 6",
                "checkpoint = '{\"done\": 3}'",
                "input_tokens = 7, output_tokens = 8, throttled_requests = 9",
            ]:
                other.execute(f"UPDATE jobs SET {bookkeeping} WHERE job_id = %s", (job_id,))
                assert await store.get_row_key(ACCOUNT, REGION, job_id) == key
    finally:
        await store.close()


@pytest.mark.parametrize("signal", [True, False], ids=["wal-index", "no-signal"])
async def test_the_sqlite_key_read_waits_out_a_busy_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signal: bool
) -> None:
    """The key read of every Get runs first outside the store's busy wrapper; a busy database
    then takes the wrapped read, which waits and tries again (and past ``busy_timeout`` is the
    store's StoreBusy); another error is not taken for busy. SQLite answers a WAL read busy
    too rarely to provoke here (a recovery), so the read is made to fail. With the WAL-index
    signal and without (store/sqlite_wal_index.py): the keys it keeps are forgotten before
    each read here, or the first read's would answer without a query."""
    store = await SqliteStore.open(tmp_path / "db.sqlite3", busy_timeout=0.05)
    if not signal:
        header, store._wal_index = store._wal_index, None
        assert header is not None
        header.close()
    try:
        (job_id, *_) = await fill(store)
        key = await store.get_row_key(ACCOUNT, REGION, job_id)
        store._keys.clear()
        read = store._row_key
        failures = {"left": 2}

        def flaky(account_id: str, region: str, job_id: str) -> str | None:
            if failures["left"]:
                failures["left"] -= 1
                busy = sqlite3.OperationalError("database is locked")
                busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
                raise busy
            return read(account_id, region, job_id)

        monkeypatch.setattr(store, "_row_key", flaky)
        assert await store.get_row_key(ACCOUNT, REGION, job_id) == key
        assert failures["left"] == 0
        failures["left"] = 10**6
        store._keys.clear()
        with pytest.raises(StoreBusy):
            await store.get_row_key(ACCOUNT, REGION, job_id)

        def broken(account_id: str, region: str, job_id: str) -> str | None:
            raise sqlite3.OperationalError("no such column: row_key")

        monkeypatch.setattr(store, "_row_key", broken)
        store._keys.clear()
        with pytest.raises(sqlite3.OperationalError, match="no such column"):
            await store.get_row_key(ACCOUNT, REGION, job_id)
    finally:
        await store.close()
