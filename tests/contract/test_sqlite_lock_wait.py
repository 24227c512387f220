"""Waiting for another process's lock on the SQLite file never holds the event loop: the store
waits between attempts with ``asyncio.sleep``, so other requests are served meanwhile, and the
call goes through once the lock is gone."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from batchrock.jobs import JobStatus
from batchrock.store.sqlite import SqliteStore
from tests.contract.test_store import make_job


def test_a_locked_database_is_waited_for_off_the_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "db.sqlite3"
        store = await SqliteStore.open(path, busy_timeout=30.0)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            creating = asyncio.create_task(store.create(make_job(1), {}))
            # Other coroutines keep running while the create waits for the lock. Before the
            # fix the create blocked the loop in SQLite's busy handler for the whole timeout.
            ticks = 0
            for _ in range(20):
                await asyncio.sleep(0.001)
                ticks += 1
            assert ticks == 20
            assert not creating.done(), "the create finished while another connection held the lock"
            other.execute("ROLLBACK")
            created, is_new = await asyncio.wait_for(creating, timeout=30)
            assert is_new and created.status is JobStatus.SUBMITTED
            assert await store.get_by_id(created.job_id) == created
        finally:
            other.close()
            await store.close()

    asyncio.run(scenario())
