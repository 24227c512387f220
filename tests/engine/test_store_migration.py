"""A database written before throttled requests were counted (schema version 1) opens, keeps
its jobs, and counts throttled requests from then on; one written before rows had a version
(schema version 2) gets the column and the trigger that moves it on; one of version 3 gets
listing indexes that end with the row version."""

from __future__ import annotations

import asyncio
import sqlite3
from importlib import resources
from pathlib import Path

from batchrock import jobs
from batchrock.clock import SystemClock
from batchrock.jobs import Counters, Job
from batchrock.store.base import JobFilter, PageRequest
from batchrock.store.sqlite import SCHEMA_VERSION, SqliteStore


def version_1_database(path: Path) -> None:
    schema = resources.files("batchrock.store").joinpath("sqlite_schema.sql").read_text()
    old = "\n".join(line for line in schema.splitlines() if "throttled_requests" not in line)
    assert old != schema
    conn = sqlite3.connect(path)
    conn.executescript(old)
    conn.execute("PRAGMA user_version = 1")
    conn.close()


def test_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    version_1_database(path)

    async def main() -> None:
        conn = sqlite3.connect(path)
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
        assert "throttled_requests" not in columns
        conn.close()

        store = await SqliteStore.open(path)
        now = SystemClock().now()
        job = Job(
            job_id=jobs.new_job_id(),
            account_id="123456789012",
            region="us-east-1",
            name="old",
            model_id="anthropic.claude-3-haiku-20240307-v1:0",
            role_arn="arn:aws:iam::123456789012:role/r",
            submit_time=now,
            last_modified_time=now,
            input_s3_uri="s3://in/",
            output_s3_uri="s3://out/",
            expiration_time=jobs.expiration_for(now, 24),
        )
        await store.create(job, {})
        got = await store.get_by_id(job.job_id)
        assert got is not None and got.counters.throttled == 0
        await store.save_progress(job.job_id, counters=Counters(total=5, throttled=7), now=now)
        got = await store.get_by_id(job.job_id)
        assert got is not None and got.counters == Counters(total=5, throttled=7)
        await store.close()

        # Opening again (now at the current version) changes nothing.
        store = await SqliteStore.open(path)
        again = await store.get_by_id(job.job_id)
        assert again is not None and again.counters.throttled == 7
        await store.close()

    asyncio.run(main())
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    conn.close()


def test_jobs_of_a_version_1_database_survive_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    version_1_database(path)
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO jobs (job_id, account_id, region, name, model_id, role_arn, status, "
        "submit_time, last_modified_time, expiration_time, timeout_hours, invocation_type, "
        "input_s3_uri, output_s3_uri, processed_records, output_tokens) VALUES "
        "('abcdefghijkl', '123456789012', 'us-east-1', 'n', 'm', 'r', 'InProgress', 1, 2, 3, "
        "24, 'InvokeModel', 's3://in/', 's3://out/', 40, 99)"
    )
    conn.commit()
    conn.close()

    async def main() -> None:
        store = await SqliteStore.open(path)
        job = await store.get_by_id("abcdefghijkl")
        assert job is not None
        assert (job.counters.processed, job.counters.output_tokens) == (40, 99)
        assert job.counters.throttled == 0
        await store.close()

    asyncio.run(main())


OPEN_AND_CREATE = """
import asyncio, sys
from pathlib import Path
from batchrock.store.sqlite import SqliteStore

async def main() -> None:
    store = await SqliteStore.open(Path(sys.argv[1]))
    await store.close()

asyncio.run(main())
"""


def test_processes_opening_an_old_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    """`serve` and workers started together all open the database; the first migrates it and
    the others find it migrated (ALTER TABLE twice would fail)."""
    import subprocess
    import sys

    path = tmp_path / "old.sqlite3"
    version_1_database(path)
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN_AND_CREATE, str(path)], stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    conn = sqlite3.connect(path)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
    assert columns.count("throttled_requests") == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def version_2_database(path: Path) -> None:
    schema = resources.files("batchrock.store").joinpath("sqlite_schema.sql").read_text()
    old = "\n".join(line for line in schema.splitlines() if "row_version" not in line)
    old = old.replace("checkpoint            TEXT,", "checkpoint            TEXT")
    assert old != schema
    conn = sqlite3.connect(path)
    conn.executescript(old)
    conn.execute(
        "INSERT INTO jobs (job_id, account_id, region, name, model_id, role_arn, status, "
        "submit_time, last_modified_time, expiration_time, timeout_hours, invocation_type, "
        "input_s3_uri, output_s3_uri) VALUES ('abcdefghijkl', '123456789012', 'us-east-1', "
        "'n', 'm', 'r', 'InProgress', 1, 2, 3, 24, 'InvokeModel', 's3://in/', 's3://out/')"
    )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def test_version_2_database_gets_row_versions(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    version_2_database(path)

    async def main() -> None:
        store = await SqliteStore.open(path)
        key = await store.get_row_key("123456789012", "us-east-1", "abcdefghijkl")
        assert key == "abcdefghijkl:0"
        await store.save_progress(
            "abcdefghijkl", counters=Counters(total=5), now=SystemClock().now()
        )
        key = await store.get_row_key("123456789012", "us-east-1", "abcdefghijkl")
        assert key == "abcdefghijkl:1"
        await store.close()
        # Opened again: the trigger is there once, as it was.
        store = await SqliteStore.open(path)
        await store.close()

    asyncio.run(main())
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    triggers = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
    assert triggers == [("jobs_row_version",)]
    conn.close()


def test_version_3_listing_indexes_are_made_again_with_the_row_version(tmp_path: Path) -> None:
    """Schema version 4: the listing indexes end with row_version (a listing's keys are read
    from the index alone). A version 3 database's, without it, are made again at the first
    open, keeping its jobs listed; the next open leaves them as they are."""
    path = tmp_path / "old.sqlite3"
    version_2_database(path)
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE jobs ADD COLUMN row_version INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX jobs_listing ON jobs (account_id, region, submit_time, job_id)")
    conn.execute(
        "CREATE INDEX jobs_listing_by_status "
        "ON jobs (account_id, region, status, submit_time, job_id)"
    )
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()

    def listing_indexes() -> dict[str, str]:
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                "AND name LIKE 'jobs_listing%'"
            ).fetchall()
        finally:
            conn.close()
        return dict(rows)

    async def main() -> None:
        store = await SqliteStore.open(path)
        keys = await store.list_row_keys(
            JobFilter(account_id="123456789012", region="us-east-1"), PageRequest(limit=5)
        )
        assert keys == "abcdefghijkl:0"
        await store.close()

    asyncio.run(main())
    made = listing_indexes()
    assert sorted(made) == ["jobs_listing", "jobs_listing_by_status"]
    assert all(sql.endswith("job_id, row_key)") for sql in made.values()), made
    # Opened again: nothing is made again (the same rows of sqlite_master, same root pages).
    conn = sqlite3.connect(path)
    roots = conn.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'index'").fetchall()
    conn.close()
    asyncio.run(main())
    conn = sqlite3.connect(path)
    assert (
        conn.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'index'").fetchall()
        == roots
    )
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_version_4_databases_get_the_row_key_column_and_their_indexes_made_again(
    tmp_path: Path,
) -> None:
    """Schema version 5: ``row_key`` (``job_id:row_version``, a virtual generated column) ends
    the listing indexes, so a page's keys are read from the index as they are sent. A version
    4 database (the indexes ending with row_version) gets the column and the indexes at its
    first open; its keys follow every write as before."""
    path = tmp_path / "old.sqlite3"
    version_2_database(path)
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE jobs ADD COLUMN row_version INTEGER NOT NULL DEFAULT 0")
    conn.execute(
        "CREATE INDEX jobs_listing ON jobs (account_id, region, submit_time, job_id, row_version)"
    )
    conn.execute(
        "CREATE INDEX jobs_listing_by_status "
        "ON jobs (account_id, region, status, submit_time, job_id, row_version)"
    )
    conn.execute("UPDATE jobs SET row_version = 6")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    everything = JobFilter(account_id="123456789012", region="us-east-1")

    async def main() -> None:
        store = await SqliteStore.open(path)
        assert await store.list_row_keys(everything, PageRequest(limit=5)) == "abcdefghijkl:6"
        await store.save_progress(
            "abcdefghijkl", counters=Counters(total=5), now=SystemClock().now()
        )
        assert await store.list_row_keys(everything, PageRequest(limit=5)) == "abcdefghijkl:7"
        assert await store.get_row_key("123456789012", "us-east-1", "abcdefghijkl") == (
            "abcdefghijkl:7"
        )
        await store.close()
        store = await SqliteStore.open(path)  # again: nothing to do
        assert await store.list_row_keys(everything, PageRequest(limit=5)) == "abcdefghijkl:7"
        await store.close()

    asyncio.run(main())
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    indexes = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name LIKE 'jobs_listing%'"
    ).fetchall()
    assert len(indexes) == 2 and all(sql.endswith("job_id, row_key)") for (sql,) in indexes)
    conn.close()
