"""The store contract on PostgreSQL (a real server of the tests' own, tests/pg.py), and what
only that store has: migrations, LISTEN/NOTIFY wake-ups, several processes racing."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import psycopg
import pytest

from batchrock.jobs import JobStatus
from batchrock.store.base import JobStore, PageRequest
from batchrock.store.pg_schema import SCHEMA_VERSION
from batchrock.store.postgres import PostgresStore
from tests.conftest import REPO_ROOT

from .test_engine_side import EngineSideContract, scheduled
from .test_store import T0, StoreContract, everyone, make_job

pytestmark = pytest.mark.anyio
S = JobStatus


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class PostgresFixtures:
    @pytest.fixture
    async def store(self, pg_url: str) -> AsyncIterator[JobStore]:
        store = await PostgresStore.open(pg_url, max_size=4)
        yield store
        await store.close()

    @pytest.fixture
    async def second_store(self, pg_url: str, store: JobStore) -> AsyncIterator[JobStore]:
        other = await PostgresStore.open(pg_url, max_size=4)
        yield other
        await other.close()


class TestPostgresStore(PostgresFixtures, StoreContract):
    pass


class TestPostgresEngineSide(PostgresFixtures, EngineSideContract):
    pass


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


async def test_many_processes_claim_each_job_once(pg_url: str) -> None:
    seed = await PostgresStore.open(pg_url)
    for i in range(60):
        await seed.create(make_job(i), {})
    await seed.close()
    script = (
        "import asyncio, sys\n"
        "from datetime import UTC, datetime\n"
        "from batchrock.jobs import JobStatus\n"
        "from batchrock.store.postgres import PostgresStore\n"
        "async def main():\n"
        "    store = await PostgresStore.open(sys.argv[1])\n"
        "    while (job := await store.claim(sys.argv[2], {JobStatus.SUBMITTED},\n"
        "            now=datetime.now(UTC), lease_seconds=600)) is not None:\n"
        "        print(job.job_id, flush=True)\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    claimed = await _run_all(script, *([pg_url, f"w{i}"] for i in range(4)))
    assert len(claimed) == 60 and len(set(claimed)) == 60


async def test_many_processes_creating_at_once_stop_at_the_quota(pg_url: str) -> None:
    script = (
        "import asyncio, sys\n"
        "from batchrock.store.base import UnfinishedJobsQuota\n"
        "from batchrock.store.postgres import PostgresStore\n"
        "from tests.contract.test_store import make_job\n"
        "async def main():\n"
        "    store = await PostgresStore.open(sys.argv[1])\n"
        "    for i in range(10):\n"
        "        job = make_job(int(sys.argv[2]) * 100 + i)\n"
        "        try:\n"
        "            await store.create(job, {}, max_unfinished=7)\n"
        "            print(job.job_id, flush=True)\n"
        "        except UnfinishedJobsQuota:\n"
        "            pass\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    created = await _run_all(script, *([pg_url, str(i)] for i in range(4)))
    assert len(created) == 7
    store = await PostgresStore.open(pg_url)
    try:
        listed = await store.list_jobs(everyone(), PageRequest(limit=100))
    finally:
        await store.close()
    assert sorted(j.job_id for j in listed) == sorted(created)


async def test_processes_starting_at_once_never_over_admit_a_model(pg_url: str) -> None:
    """start_next from four processes at once: at most ``max_in_progress`` jobs of a model
    InProgress, however the starts interleave."""
    seed = await PostgresStore.open(pg_url)
    for i in range(12):
        await scheduled(seed, i, model_id="m1" if i % 2 else "m2")
    await seed.close()
    script = (
        "import asyncio, sys\n"
        "from datetime import UTC, datetime\n"
        "from batchrock.store.postgres import PostgresStore\n"
        "async def main():\n"
        "    store = await PostgresStore.open(sys.argv[1])\n"
        "    for _ in range(6):\n"
        "        job = await store.start_next(sys.argv[2], now=datetime.now(UTC),\n"
        "                                     lease_seconds=600, max_in_progress=3)\n"
        "        if job is not None:\n"
        "            print(job.model_id + '/' + job.job_id, flush=True)\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    started = await _run_all(script, *([pg_url, f"w{i}"] for i in range(4)))
    by_model = [s.split("/")[0] for s in started]
    assert sorted(by_model) == ["m1"] * 3 + ["m2"] * 3
    assert len(set(started)) == 6


async def test_processes_opening_a_new_database_at_once_migrate_it_once(pg_server: object) -> None:
    from tests.pg import PgServer

    assert isinstance(pg_server, PgServer)
    url = pg_server.new_database(template="template0")  # empty: no schema yet
    try:
        script = (
            "import asyncio, sys\n"
            "from batchrock.store.postgres import PostgresStore\n"
            "async def main():\n"
            "    store = await PostgresStore.open(sys.argv[1])\n"
            "    await store.close()\n"
            "    print('ok')\n"
            "asyncio.run(main())\n"
        )
        assert await _run_all(script, *([url] for _ in range(5))) == ["ok"] * 5
        with psycopg.connect(url) as conn:
            versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
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
