"""A loop that ends without closing the PostgreSQL store still ends: psycopg_pool's workers
survive a cancellation while they run a task (a reconnect after the server dropped the
connections, say), so ``asyncio.run`` would wait for them forever; the store closes its pool
when the loop cancels its tasks."""

from __future__ import annotations

import asyncio
import contextlib
import gc

import psycopg
import pytest

from batchrock.store.base import StoreBusy
from batchrock.store.postgres import PostgresStore
from tests.pg import sessions, sessions_left

from .test_store import make_job


@pytest.mark.timeout(120)
def test_a_loop_that_ends_without_close_closes_the_pool(pg_url: str) -> None:
    store = PostgresStore.open_sync(pg_url, min_size=3, max_size=4)

    async def main() -> object:
        job, _ = await store.create(make_job(1), {})
        # The server drops every connection: the pool's workers are busy reconnecting as the
        # loop ends.
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with contextlib.suppress(StoreBusy):
            await store.get_by_id(job.job_id)
        return store._pool

    pool = asyncio.run(main())
    assert getattr(pool, "closed", False), "the pool outlived its event loop"


@pytest.mark.timeout(120)
def test_a_loop_that_ends_without_close_leaves_no_connection_open(pg_url: str) -> None:
    """The loop cancels the pool's workers with everything else, and psycopg_pool's close
    stopped at them before it closed its idle connections: those stayed open on the server
    (an engine test harness that never closed its store kept one per test)."""
    store = PostgresStore.open_sync(pg_url, min_size=2, max_size=4)

    async def main() -> None:
        await store.create(make_job(1), {})
        stop = await store.watch(lambda: None)
        assert stop is not None
        while sessions(pg_url) < 3:  # the pool's two and the listener
            await asyncio.sleep(0.01)

    asyncio.run(main())
    # A connection the pool was still opening when the loop cancelled it has no owner left:
    # its socket closes when it is collected (seen once in a full contract run). What this
    # test is about, the pool's and the listener's connections, are reachable from ``store``.
    gc.collect()
    assert sessions_left(pg_url) == 0
