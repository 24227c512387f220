"""Files: uploads streamed to the object store, and the blocks of a stored file worked on
off the event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from batchrock.clock import Clock
from batchrock.objects.base import ObjectStore, ObjectStoreError
from batchrock.store.files import FileStore, StoredFile

log = logging.getLogger("batchrock.api.openai")

_ALNUM = string.ascii_letters + string.digits
#: Upload data is written in pieces of about this size, each in a worker thread.
WRITE_BYTES = 1024 * 1024
#: How often ``batchrock serve`` removes expired files (their bytes, then their records).
EXPIRY_SWEEP_SECONDS = 300.0
#: Files removed per store query of the sweep.
EXPIRY_SWEEP_BATCH = 100


def new_file_id() -> str:
    return "file-" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def bucket_for(prefix: str, account_id: str) -> str:
    return f"{prefix}-{account_id}"


def file_object(f: StoredFile) -> dict[str, Any]:
    return {
        "id": f.file_id,
        "object": "file",
        "bytes": f.size,
        "created_at": int(f.created_at.timestamp()),
        "expires_at": None if f.expires_at is None else int(f.expires_at.timestamp()),
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "status_details": None,
    }


async def remove_file(files: FileStore, objects: ObjectStore, stored: StoredFile) -> None:
    """Remove a file: its bytes first, then its record, so that a crash or an object-store
    failure between the two leaves a record to try again from, never bytes nothing points at
    (removing bytes already gone is no error)."""
    await objects.delete(stored.bucket, stored.key)
    await files.delete_file(stored.account_id, stored.file_id)


async def remove_expired(files: FileStore, objects: ObjectStore, clock: Clock) -> int:
    """Remove every file expired by now; how many. A file whose bytes cannot be removed stays
    (it is not found, being expired) and is tried again by the next sweep."""
    removed = 0
    while True:
        due = await files.expired_files(clock.now(), limit=EXPIRY_SWEEP_BATCH)
        failed = 0
        for stored in due:
            try:
                await remove_file(files, objects, stored)
                removed += 1
            except ObjectStoreError:
                failed += 1
                log.warning(
                    "file %s: expired, its bytes could not be removed",
                    stored.file_id,
                    exc_info=True,
                )
        if len(due) < EXPIRY_SWEEP_BATCH or failed == len(due):
            return removed


async def sweep_expired(
    files: FileStore, objects: ObjectStore, clock: Clock, stop: asyncio.Event
) -> None:
    """Run :func:`remove_expired` every :data:`EXPIRY_SWEEP_SECONDS` until ``stop`` is set."""
    while not stop.is_set():
        try:
            count = await remove_expired(files, objects, clock)
            if count:
                log.info("removed %d expired file(s)", count)
        except Exception:
            log.warning("the expired files sweep failed; it runs again later", exc_info=True)
        try:
            await asyncio.wait_for(stop.wait(), EXPIRY_SWEEP_SECONDS)
        except TimeoutError:
            pass


async def ensure_bucket(objects: ObjectStore, bucket: str) -> bool:
    """Make the local store's bucket folder if missing; whether the bucket exists now."""
    folder = objects.local_folder(bucket)
    if folder is not None:
        await asyncio.to_thread(folder.mkdir, mode=0o700, parents=True, exist_ok=True)
    return await objects.bucket_exists(bucket)


class SpoolFile:
    """A temporary file written in pieces off the event loop, then moved into the store."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{secrets.token_hex(12)}.part"
        self._folder = folder
        self._fh: IO[bytes] | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.size = 0

    async def open(self) -> None:
        def make() -> IO[bytes]:
            self._folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            return self.path.open("xb")

        self._fh = await asyncio.to_thread(make)

    async def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.size += len(data)
        if self._pending_bytes >= WRITE_BYTES:
            await self._drain()

    async def _drain(self) -> None:
        if self._pending and self._fh is not None:
            data, self._pending, self._pending_bytes = b"".join(self._pending), [], 0
            await asyncio.to_thread(self._fh.write, data)

    async def close(self) -> None:
        await self._drain()
        if self._fh is not None:
            fh, self._fh = self._fh, None
            await asyncio.to_thread(fh.close)

    async def discard(self) -> None:
        self._pending = []
        await self.close()
        await asyncio.to_thread(_unlink, self.path)

    async def store(self, objects: ObjectStore, bucket: str, key: str) -> None:
        await self.close()
        try:
            await objects.put_file(bucket, key, self.path, move=True)
        finally:
            await asyncio.to_thread(_unlink, self.path)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


async def whole_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Regroup a chunk stream into blocks of whole lines (a final line gets a newline)."""
    rest = b""
    async for chunk in chunks:
        data = rest + chunk if rest else chunk
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            yield data[:cut]
    if rest:
        yield rest + b"\n"


async def transform(chunks: AsyncIterator[bytes], work: Callable[[bytes], Awaitable[None]]) -> None:
    """``work`` on each block of whole lines of ``chunks``, in order."""
    async for block in whole_lines(chunks):
        await work(block)
