"""A busy job database (a write waiting on another connection's lock) is a 429 in OpenAI's
shape on /v1 (the SDK retries it), never a 500."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from batchrock.api.app import BedrockApp
from batchrock.api.openai.app import OpenAIApi
from batchrock.clock import FakeClock
from batchrock.objects.local import LocalObjectStore
from batchrock.service import JobService
from batchrock.settings import Settings
from batchrock.store.files import StoredFile
from batchrock.store.sqlite import SqliteStore
from tests.api.test_store_busy import ExclusiveLock
from tests.api.wire import asgi_call


def test_a_busy_database_answers_429_rate_limit_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "db.sqlite3"
        store = await SqliteStore.open(path, busy_timeout=0.05)
        objects = LocalObjectStore(tmp_path / "s3")
        try:
            settings = Settings(data_dir=tmp_path)
            service = JobService(store, FakeClock(datetime.now(UTC)))
            app = BedrockApp(service, settings)
            app.openai = OpenAIApi(service, objects, settings, app.gate)
            headers = (("host", "127.0.0.1"), ("authorization", "Bearer k"))
            # A file to delete: the delete reads it, then writes (the write waits on the lock).
            known = StoredFile(
                file_id="file-abc",
                account_id=settings.default_account_id,
                purpose="batch",
                filename="in.jsonl",
                size=1,
                created_at=datetime.now(UTC),
                bucket="files",
                key="files/file-abc",
            )
            await store.files.add_file(known)
            folder = objects.local_folder("files")
            assert folder is not None
            folder.mkdir(parents=True)
            lock = ExclusiveLock(path)
            try:
                busy = await asgi_call(app, "DELETE", "/v1/files/file-abc", headers=headers)
            finally:
                lock.release()
            assert busy.status == 429, busy.json()
            assert busy.json()["error"]["type"] == "rate_limit_error"
            after = await asgi_call(app, "DELETE", "/v1/files/file-abc", headers=headers)
            assert after.status == 200 and after.json()["deleted"] is True, after.json()
        finally:
            await objects.aclose()
            await store.close()

    asyncio.run(scenario())
