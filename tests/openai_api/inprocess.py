"""An in-process server for the OpenAI API (real SQLite, the local object store, a FakeClock)
for tests that reach inside: crash points, the expiry sweep."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchrock.api.app import BedrockApp
from batchrock.api.openai.app import OpenAIApi
from batchrock.clock import FakeClock
from batchrock.jobs import JobStatus
from batchrock.objects.local import LocalObjectStore
from batchrock.service import JobService
from batchrock.settings import Settings
from batchrock.store.sqlite import SqliteStore
from tests.api.wire import Reply, asgi_call

HEADERS = (("host", "127.0.0.1"), ("authorization", "Bearer k"))


class Harness:
    def __init__(
        self, app: BedrockApp, store: SqliteStore, objects: LocalObjectStore, clock: FakeClock
    ) -> None:
        self.app, self.store, self.objects, self.clock = app, store, objects, clock

    def account(self) -> str:
        """The account an unknown key acts as in open mode."""
        return Settings().default_account_id

    async def call(self, method: str, path: str, body: bytes = b"", **kw: Any) -> Reply:
        return await asgi_call(self.app, method, path, headers=HEADERS, body=body, **kw)

    async def upload(self, **fields: str) -> str:
        """Upload a one-line batch file (``fields``: more form fields, e.g. its expiry)."""
        line = {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        }
        extra = b"".join(
            f'--bnd\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        )
        body = extra + (
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
        yield Harness(app, store, objects, clock)
    finally:
        await objects.aclose()
        await store.close()
