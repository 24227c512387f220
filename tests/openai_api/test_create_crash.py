"""A batch is two writes (its record in the files store, then its job): a crash between them,
or at either, never leaves a job that ListModelInvocationJobs shows and /v1/batches does not
(or the reverse); a record a crash left without its job is removed once it is old."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batchrock.api.app import BedrockApp
from batchrock.api.openai import batches
from batchrock.api.openai.app import OpenAIApi
from batchrock.clock import FakeClock
from batchrock.jobs import JobStatus
from batchrock.objects.local import LocalObjectStore
from batchrock.service import JobService
from batchrock.settings import Settings
from batchrock.store.sqlite import SqliteStore
from tests.api.wire import Reply, asgi_call

HEADERS = (("host", "127.0.0.1"), ("authorization", "Bearer k"))


class Crash(BaseException):
    """The process dying at this point: nothing after it runs (not an error to answer)."""


class Harness:
    def __init__(self, app: BedrockApp, store: SqliteStore, clock: FakeClock) -> None:
        self.app, self.store, self.clock = app, store, clock

    def account(self) -> str:
        """The account an unknown key acts as in open mode."""
        return Settings().default_account_id

    async def call(self, method: str, path: str, body: bytes = b"", **kw: Any) -> Reply:
        return await asgi_call(self.app, method, path, headers=HEADERS, body=body, **kw)

    async def upload(self) -> str:
        line = {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        }
        body = (
            b'--bnd\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
            + json.dumps(line).encode()
            + b"\n\r\n--bnd--\r\n"
        )
        headers = (*HEADERS, ("content-type", "multipart/form-data; boundary=bnd"))
        reply = await asgi_call(self.app, "POST", "/v1/files", headers=headers, body=body)
        assert reply.status == 200, reply.json()
        file_id: str = reply.json()["id"]
        return file_id

    async def create(self, file_id: str) -> Reply:
        body = {
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        return await self.call("POST", "/v1/batches", json.dumps(body).encode())

    async def both_views(self) -> tuple[set[str], set[str]]:
        """The job ids ListModelInvocationJobs can show (every job in the store) and those
        /v1/batches lists."""
        jobs = await self.store.jobs_in(list(JobStatus), limit=1000)
        reply = await self.call("GET", "/v1/batches", query="limit=100")
        assert reply.status == 200, reply.json()
        listed = {b["id"].removeprefix("batch_") for b in reply.json()["data"]}
        return {j.job_id for j in jobs}, listed


@asynccontextmanager
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    objects = LocalObjectStore(tmp_path / "s3")
    try:
        settings = Settings(data_dir=tmp_path, allow_any_model=True)
        clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
        service = JobService(store, clock)
        app = BedrockApp(service, settings)
        app.openai = OpenAIApi(service, objects, settings, app.gate)
        yield Harness(app, store, clock)
    finally:
        await objects.aclose()
        await store.close()


def crash_at(target: Any, name: str) -> Callable[..., Awaitable[Any]]:
    async def crashing(*args: Any, **kwargs: Any) -> Any:
        raise Crash(name)

    original: Callable[..., Awaitable[Any]] = getattr(target, name)
    setattr(target, name, crashing)
    return original


@pytest.mark.parametrize("point", ["record", "job"])
def test_a_crash_at_either_write_leaves_both_apis_agreeing(tmp_path: Path, point: str) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            file_id = await h.upload()
            kept = await h.create(file_id)
            assert kept.status == 200, kept.json()
            # The crash: the process dies at the record's write or at the job's.
            if point == "record":
                target, name = h.store.files, "add_file_job"
            else:
                target, name = h.store, "create"
            original = crash_at(target, name)
            with pytest.raises(Crash):
                await h.create(file_id)
            setattr(target, name, original)
            jobs, listed = await h.both_views()
            assert jobs == listed == {kept.json()["id"].removeprefix("batch_")}

    asyncio.run(scenario())


def test_a_record_left_without_its_job_is_ignored_then_removed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            file_id = await h.upload()
            original = crash_at(h.store, "create")
            with pytest.raises(Crash):
                await h.create(file_id)
            h.store.create = original  # type: ignore[method-assign]
            records = await h.store.files.list_file_jobs(h.account(), limit=10)
            assert len(records) == 1  # the record the crash left, without its job
            orphan = batches.batch_id(records[0].job_id)
            assert (await h.call("GET", f"/v1/batches/{orphan}")).status == 404
            assert await h.both_views() == (set(), set())
            # Within the grace a creation may still be in flight: the record stays.
            assert len(await h.store.files.list_file_jobs(h.account(), limit=10)) == 1
            h.clock.advance(batches.ORPHAN_GRACE + timedelta(seconds=1))
            assert await h.both_views() == (set(), set())
            assert await h.store.files.list_file_jobs(h.account(), limit=10) == []

    asyncio.run(scenario())
