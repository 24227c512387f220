"""`batchrock serve` and `batchrock worker` sharing jobs through PostgreSQL (`--database-url`),
real processes and boto3; the worker is woken by NOTIFY, not by its poll."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from batchrock import admin
from batchrock.settings import Settings, SettingsError, load
from batchrock.store.postgres import PostgresStore
from batchrock.store.sqlite import SqliteStore
from tests.pg import listeners

from .test_e2e import FAST, claude_records, create, out_lines, put, wait

pytestmark = pytest.mark.timeout(120)


def test_a_worker_runs_a_job_created_through_another_process_at_once(
    server_factory: Any, pg_url: str
) -> None:
    slow_polls = {**FAST, "engine_poll_seconds": 60, "engine_sweep_seconds": 60}
    server = server_factory(**slow_polls, engine=False, database_url=pg_url)
    put(server, "in/a.jsonl", claude_records(20))
    worker = subprocess.Popen(
        [sys.executable, "-m", "batchrock.admin", "worker", "--data-dir", str(server.data_dir)],
        env=server.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while listeners(pg_url) < 1:  # the worker's engine has subscribed
            assert worker.poll() is None and time.monotonic() < deadline, "worker never listened"
            time.sleep(0.05)
        arn = create(server)
        # Polls are a minute apart: only the notification of the new job can start it now.
        job = wait(server, arn, timeout=20)
    finally:
        worker.terminate()
        worker.wait(timeout=15)
    assert job["status"] == "Completed"
    assert len(out_lines(server, arn, "a.jsonl.out")) == 20
    # Nothing went to the embedded store.
    assert not (server.data_dir / "batchrock.sqlite3").exists()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_open_store_follows_database_url(pg_url: str, tmp_path: Any) -> None:
    store = await admin.open_store(Settings(data_dir=tmp_path, database_url=pg_url))
    try:
        assert isinstance(store, PostgresStore)
    finally:
        await store.close()
    embedded = await admin.open_store(Settings(data_dir=tmp_path))
    try:
        assert isinstance(embedded, SqliteStore)
    finally:
        await embedded.close()


def test_database_url_must_be_postgresql_and_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as exc:
        load({}, env={"BATCHROCK_DATABASE_URL": "mysql://app:s3cret@db/jobs"})
    assert "postgresql://" in str(exc.value) and "s3cret" not in str(exc.value)
    assert load({"database_url": ""}, env={}).database_url is None
    url = "postgres://app@db/jobs"
    assert load({"database_url": url}, env={}).database_url == url
