"""A deleted or expired file's bytes leave the object store, not only its record; a removal
the object store refuses keeps the file, so that it is tried again (never bytes left behind
that nothing points at)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from batchrock.api.openai.files import remove_expired, sweep_expired
from batchrock.objects.base import ObjectStoreError, ReadStalled

from .inprocess import Harness, harness


async def stored(h: Harness, file_id: str) -> tuple[str, str]:
    found = await h.store.files.get_file(h.account(), file_id)
    assert found is not None
    assert await h.objects.head(found.bucket, found.key) is not None  # the bytes are there
    return found.bucket, found.key


def test_delete_removes_the_bytes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            file_id = await h.upload()
            bucket, key = await stored(h, file_id)
            reply = await h.call("DELETE", f"/v1/files/{file_id}")
            assert reply.json() == {"id": file_id, "object": "file", "deleted": True}
            assert await h.objects.head(bucket, key) is None
            assert await h.store.files.get_file(h.account(), file_id) is None

    asyncio.run(scenario())


def test_a_delete_the_object_store_refuses_keeps_the_file_for_a_retry(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            file_id = await h.upload()
            bucket, key = await stored(h, file_id)
            original = h.objects.delete

            async def refused(*args: Any) -> None:
                raise ObjectStoreError("the object store is down")

            h.objects.delete = refused  # type: ignore[method-assign]
            reply = await h.call("DELETE", f"/v1/files/{file_id}")
            assert reply.status == 500, reply.json()
            assert "could not be removed" in reply.json()["error"]["message"]
            h.objects.delete = original  # type: ignore[method-assign]
            assert (await h.call("GET", f"/v1/files/{file_id}")).status == 200
            assert (await h.call("DELETE", f"/v1/files/{file_id}")).json()["deleted"] is True
            assert await h.objects.head(bucket, key) is None

    asyncio.run(scenario())


def test_expired_files_lose_their_bytes_and_records(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            soon = await h.upload(
                **{"expires_after[anchor]": "created_at"}, **{"expires_after[seconds]": "3600"}
            )
            later = await h.upload()  # 30 days
            soon_at = await stored(h, soon)
            later_at = await stored(h, later)
            files, objects = h.store.files, h.objects
            assert await remove_expired(files, objects, h.clock) == 0
            h.clock.advance(timedelta(seconds=3600))
            assert (await h.call("GET", f"/v1/files/{soon}")).status == 404  # expired: gone
            # An object store that refuses: the expired file stays, to be tried again.
            original = h.objects.delete

            async def refused(*args: Any) -> None:
                raise ObjectStoreError("the object store is down")

            h.objects.delete = refused  # type: ignore[method-assign]
            assert await remove_expired(files, objects, h.clock) == 0
            assert await h.objects.head(*soon_at) is not None
            h.objects.delete = original  # type: ignore[method-assign]
            assert await remove_expired(files, objects, h.clock) == 1
            assert await h.objects.head(*soon_at) is None
            assert await files.get_file(h.account(), soon) is None
            assert await h.objects.head(*later_at) is not None  # not expired: kept
            assert await files.get_file(h.account(), later) is not None

    asyncio.run(scenario())


def test_the_sweep_serve_runs_removes_expired_files_and_stops_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            soon = await h.upload(
                **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
            )
            at = await stored(h, soon)
            h.clock.advance(timedelta(seconds=3600))
            stop = asyncio.Event()
            task = asyncio.create_task(sweep_expired(h.store.files, h.objects, h.clock, stop))

            async def removed() -> None:
                while await h.objects.head(*at) is not None:
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(removed(), 30)
            stop.set()  # it waits minutes for the next pass; the stop ends the wait
            await asyncio.wait_for(task, 30)
            assert await h.store.files.get_file(h.account(), soon) is None

    asyncio.run(scenario())


def test_content_whose_read_fails_midway_is_cut_short_never_completed(tmp_path: Path) -> None:
    # A read the object store gives up on after the status is sent (a stalled S3 stream,
    # which the local store cannot be made to do for real): the answer ends short of its
    # Content-Length, so the client sees a broken download, never a whole-looking file or a
    # second answer after the first.
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            file_id = await h.upload()
            bucket, key = await stored(h, file_id)

            async def stalls(*args: Any, **kw: Any) -> AsyncIterator[bytes]:
                yield b'{"custom_id"'
                raise ReadStalled(bucket, key, 30)

            h.objects.read = stalls  # type: ignore[method-assign]
            reply = await h.call("GET", f"/v1/files/{file_id}/content")
            assert reply.status == 200
            assert reply.body == b'{"custom_id"'
            assert int(reply.headers["content-length"]) > len(reply.body)

    asyncio.run(scenario())
