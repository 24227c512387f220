"""What only the PostgreSQL store has (the contract suite runs on it through tests/stores.py):
migrations applied by processes starting at once, LISTEN/NOTIFY wake-ups, typed errors when
the connection is lost. A real server of the tests' own (tests/pg.py)."""

from __future__ import annotations

import asyncio
import sys

import psycopg
import pytest

from batchrock.jobs import Counters, JobStatus
from batchrock.store.base import StoreBusy
from batchrock.store.pg_schema import MIGRATIONS, SCHEMA_VERSION
from batchrock.store.postgres import PostgresStore
from batchrock.store.rows import JOB_COLUMNS, N_COLUMNS, job_params
from tests.conftest import REPO_ROOT

from .test_store import T0, make_job

pytestmark = pytest.mark.anyio
S = JobStatus


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


#: A process that opens the store at its URL (migrating it) and closes it.
_OPEN_AND_CLOSE = (
    "import asyncio, sys\n"
    "from batchrock.store.postgres import PostgresStore\n"
    "async def main():\n"
    "    store = await PostgresStore.open(sys.argv[1])\n"
    "    await store.close()\n"
    "    print('ok')\n"
    "asyncio.run(main())\n"
)


async def _run_all(script: str, *args_per_process: list[str]) -> list[str]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            *args,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT,  # the scripts import tests.contract.test_store
        )
        for args in args_per_process
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    assert all(p.returncode == 0 for p in procs)
    return [line for out, _ in outputs for line in out.decode().split()]


async def test_processes_opening_a_new_database_at_once_migrate_it_once(pg_server: object) -> None:
    from tests.pg import PgServer

    assert isinstance(pg_server, PgServer)
    url = pg_server.new_database(template="template0")  # empty: no schema yet
    try:
        assert await _run_all(_OPEN_AND_CLOSE, *([url] for _ in range(5))) == ["ok"] * 5
        with psycopg.connect(url) as conn:
            versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    finally:
        pg_server.drop_database(url)


async def test_a_database_at_version_4_gets_row_versions(pg_server: object) -> None:
    """A database written before rows had a version (schema version 4, a job in it), opened by
    several processes at once, gets the column (0 for the jobs it had) and the trigger that
    moves it on, once."""
    from tests.pg import PgServer

    assert isinstance(pg_server, PgServer)
    url = pg_server.new_database(template="template0")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE schema_migrations ("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for version, sql in MIGRATIONS:
                if version <= 4:
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            job = make_job(1)
            conn.execute(
                f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({', '.join(['%s'] * N_COLUMNS)})",
                job_params(job),
            )
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs'"
            ).fetchall()
            assert ("row_version",) not in columns
        assert await _run_all(_OPEN_AND_CLOSE, *([url] for _ in range(3))) == ["ok"] * 3
        with psycopg.connect(url) as conn:
            versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
            triggers = conn.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'jobs'::regclass "
                "AND NOT tgisinternal"
            ).fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        assert triggers == [("jobs_row_version",)]
        store = await PostgresStore.open(url)
        try:
            where = (job.account_id, job.region, job.job_id)
            key = await store.get_row_key(*where)
            assert key == f"{job.job_id}:0"
            await store.save_progress(job.job_id, counters=Counters(total=5), now=T0)
            assert await store.get_row_key(*where) == f"{job.job_id}:1"
            assert (await store.get_keyed_row(*where) or [None])[0] == f"{job.job_id}:1"
        finally:
            await store.close()
    finally:
        pg_server.drop_database(url)


async def test_a_database_newer_than_the_code_is_refused(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(RuntimeError, match="newer than this batchrock"):
        await PostgresStore.open(pg_url)


async def test_changes_in_another_process_wake_a_watcher(pg_url: str) -> None:
    """LISTEN/NOTIFY: a job created, a status change and a lease released through another
    connection each call the watcher; a stopped watch is not called."""
    store = await PostgresStore.open(pg_url)
    other = await PostgresStore.open(pg_url)
    woken = asyncio.Event()
    try:
        stop = await store.watch(woken.set)
        assert stop is not None
        await asyncio.wait_for(woken.wait(), 10)  # once listening (anything missed before)
        woken.clear()
        job, _ = await other.create(make_job(1), {})
        await asyncio.wait_for(woken.wait(), 10)
        woken.clear()
        await other.transition(job.job_id, S.VALIDATING, now=T0)
        await asyncio.wait_for(woken.wait(), 10)
        woken.clear()
        assert await other.claim("w", {S.VALIDATING}, now=T0, lease_seconds=30) is not None
        await other.release(job.job_id, "w")
        await asyncio.wait_for(woken.wait(), 10)
        woken.clear()
        stop()
        await other.transition(job.job_id, S.STOPPING, now=T0)
        # The listener still runs (store-wide); a notification arrives but calls nobody.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(woken.wait(), 0.5)
    finally:
        await other.close()
        await store.close()


async def test_a_lost_connection_is_store_busy_and_the_next_call_reconnects(pg_url: str) -> None:
    """The server ends the store's connection (a restart, a failover, an administrator): the
    call in progress fails as StoreBusy (the API's ThrottlingException), not as a driver
    error, and the pool replaces the connection for the next call."""
    store = await PostgresStore.open(pg_url, min_size=1, max_size=1)
    try:
        job, _ = await store.create(make_job(1), {})
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StoreBusy):
            await store.get_by_id(job.job_id)
        assert await store.get_by_id(job.job_id) == job
    finally:
        await store.close()


@pytest.mark.timeout(60)
async def test_a_call_cancelled_as_the_pool_hands_it_a_connection_is_cancelled(
    pg_url: str,
) -> None:
    """One connection, held by a status change waiting on a row lock; a second call waits
    for it. The pool hands it over at the very moment the waiting call is cancelled (its
    wait has just ended, the caller has not run yet): on Python 3.11 psycopg_pool's
    ``asyncio.wait_for`` then returned the connection and dropped the cancellation, so a
    runner's heartbeat told to stop ran on for good (the engine suites hung on PostgreSQL).
    The call must end cancelled."""
    store = await PostgresStore.open(pg_url, min_size=1, max_size=1)
    try:
        job, _ = await store.create(make_job(1), {})
        locker = await psycopg.AsyncConnection.connect(pg_url)
        try:
            await locker.execute("SELECT 1 FROM jobs WHERE job_id = %s FOR UPDATE", (job.job_id,))
            holder = asyncio.create_task(store.transition(job.job_id, S.STOPPING, now=T0))
            while not (
                await (
                    await locker.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    )
                ).fetchone()
            )[0]:
                await asyncio.sleep(0.01)
            waiting = asyncio.create_task(store.get_by_id(job.job_id))
            # The pool's waiting client waits on a Condition in a task of its own (3.11's
            # wait_for): cancel the caller just after that task ends, before the caller runs.
            inner: asyncio.Task[object] | None = None
            for _ in range(500):
                await asyncio.sleep(0.005)
                inner = next(
                    (
                        t
                        for t in asyncio.all_tasks()
                        if getattr(t.get_coro(), "__qualname__", "") == "Condition.wait"
                    ),
                    None,
                )
                if inner is not None:
                    break
            if inner is not None:
                inner.add_done_callback(lambda _: waiting.cancel())
            else:  # pragma: no cover - a Python whose wait_for awaits in the caller's task
                waiting.cancel()
            await locker.commit()
            await holder
            with pytest.raises(asyncio.CancelledError):
                await waiting
        finally:
            await locker.close()
        # The connection went back to the pool.
        assert (await store.get_by_id(job.job_id)) is not None
    finally:
        await store.close()
