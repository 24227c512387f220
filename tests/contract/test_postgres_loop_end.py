"""A loop that ends without closing the PostgreSQL store still ends: psycopg_pool's workers
survive a cancellation while they run a task (a reconnect after the server dropped the
connections, say), so ``asyncio.run`` would wait for them forever; the store closes its pool
when the loop cancels its tasks."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import pytest

from batchrock.store.base import StoreBusy
from batchrock.store.postgres import PostgresStore

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
