"""A busy database is the client's ThrottlingException (429, retryable), never a 500: another
connection holds SQLite's exclusive lock for longer than the store waits."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrock.api.app import BedrockApp
from batchrock.clock import FakeClock
from batchrock.jobs import JobStatus
from batchrock.service import JobService
from batchrock.settings import Settings
from batchrock.store.base import StoreBusy
from batchrock.store.sqlite import SqliteStore
from tests.api.wire import asgi_call


def create_body(name: str) -> bytes:
    return orjson.dumps(
        {
            "jobName": name,
            "roleArn": "arn:aws:iam::123456789012:role/BedrockBatch",
            "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://in-bucket/input/"}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://out-bucket/output/"}},
        }
    )


async def call(app: BedrockApp, method: str, path: str, body: bytes = b"") -> tuple[int, Any, str]:
    """(status, decoded body, x-amzn-ErrorType) of one request through the ASGI app."""
    headers = (("host", "127.0.0.1"), ("content-type", "application/json"))
    reply = await asgi_call(app, method, path, headers=headers, body=body)
    return reply.status, reply.json(), reply.error_type


class ExclusiveLock:
    """Another connection holding the database's exclusive lock (in WAL mode it keeps every
    writer out)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def test_a_busy_database_answers_throttling_and_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "db.sqlite3"
        store = await SqliteStore.open(path, busy_timeout=0.05)
        try:
            settings = Settings(data_dir=tmp_path)
            app = BedrockApp(JobService(store, FakeClock(datetime.now(UTC))), settings)
            status, created, _ = await call(app, "POST", "/model-invocation-job", create_body("a"))
            assert status == 200, created
            arn = created["jobArn"]
            job_id = arn.rsplit("/", 1)[-1]

            lock = ExclusiveLock(path)
            try:
                busy_create = await call(app, "POST", "/model-invocation-job", create_body("b"))
                busy_stop = await call(app, "POST", f"/model-invocation-job/{job_id}/stop")
            finally:
                lock.release()
            for status, body, error_type in (busy_create, busy_stop):
                assert (status, error_type) == (429, "ThrottlingException"), body
                assert "busy" in body["message"]
            # Nothing was half-done: one job, still Submitted; the retries succeed now.
            jobs = await store.jobs_in(set(JobStatus), limit=10)
            assert [(j.job_id, j.status.value) for j in jobs] == [(job_id, "Submitted")]
            status, _, _ = await call(app, "POST", "/model-invocation-job", create_body("b"))
            assert status == 200
            status, _, _ = await call(app, "POST", f"/model-invocation-job/{job_id}/stop")
            assert status == 200
        finally:
            await store.close()

    asyncio.run(scenario())


def test_the_store_raises_store_busy_after_its_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "db.sqlite3"
        store = await SqliteStore.open(path, busy_timeout=0.05)
        lock = ExclusiveLock(path)
        try:
            with pytest.raises(StoreBusy) as exc:
                await store.put_tags("nosuchjob000", {"k": "v"}, max_tags=50)
            assert isinstance(exc.value.__cause__, sqlite3.OperationalError)
        finally:
            lock.release()
            await store.close()

    asyncio.run(scenario())
