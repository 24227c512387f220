"""The embedded object store: ``s3://bucket/key`` is the file ``ROOT/bucket/key``.

``ROOT`` is ``DATA_DIR/s3``. A bucket is a folder directly under it; a key is a relative path
inside that folder. Keys that would leave their bucket (``..`` segments, absolute paths, links
pointing outside) are rejected. Writes go to a temporary file first and are renamed into
place, so a reader never sees half an object.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from batchrock.objects.base import (
    READ_CHUNK_BYTES,
    InvalidLocation,
    NoSuchBucket,
    NoSuchKey,
    ObjectChanged,
    ObjectInfo,
    ObjectStoreError,
)

# S3's bucket naming rules (lowercase, digits, dots, hyphens; 3-63 characters). Holding local
# buckets to them also keeps our temporary folder (".tmp") out of the bucket namespace.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TMP_DIR = ".tmp"


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        key,
        st.st_size,
        etag=_etag(st),
        modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC),
    )


def _etag(st: os.stat_result) -> str:
    """What stands in for an ETag: a file rewritten in place gets a new modification time,
    one replaced (written beside and renamed over, as most tools do) a new inode."""
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


class LocalObjectStore:
    """Buckets as folders under ``root``.

    >>> store = LocalObjectStore(Path("/data/s3"))   # s3://in/a.jsonl -> /data/s3/in/a.jsonl
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    # --- path mapping ------------------------------------------------------------------

    def _bucket_dir(self, bucket: str) -> Path:
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise InvalidLocation(f"{bucket!r} is not a valid S3 bucket name.")
        return self.root / bucket

    def path_for(self, bucket: str, key: str) -> Path:
        """The file that holds ``s3://bucket/key``; raises :class:`InvalidLocation` if the key
        would leave the bucket's folder."""
        base = self._bucket_dir(bucket)
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or "\\" in key
            or "\x00" in key
            or any(p in {".", ".."} for p in parts)
        ):
            raise InvalidLocation(f"s3://{bucket}/{key} is not a valid object key here.")
        path = base.joinpath(*[p for p in parts if p])
        # Links may point anywhere: check where the path really lands.
        real_base = os.path.realpath(base)
        real = os.path.realpath(path)
        if os.path.commonpath([real_base, real]) != real_base:
            raise InvalidLocation(f"s3://{bucket}/{key} leaves its bucket.")
        return path

    # --- ObjectStore -------------------------------------------------------------------

    def local_folder(self, bucket: str, key: str = "") -> Path | None:
        parts = [p for p in key.split("/") if p]
        try:
            base = self._bucket_dir(bucket)
        except InvalidLocation:
            return None
        if any(p in (".", "..") for p in parts):
            return None  # not a place in the bucket; path_for says why when it is used
        return Path(os.path.abspath(base.joinpath(*parts)))

    async def bucket_exists(self, bucket: str) -> bool:
        return self._bucket_dir(bucket).is_dir()

    async def list_objects(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        base = self._bucket_dir(bucket)
        if not base.is_dir():
            raise NoSuchBucket(bucket)
        return await asyncio.to_thread(self._list_sync, base, prefix)

    @staticmethod
    def _list_sync(base: Path, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        real_base = os.path.realpath(base)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, base)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            for name in filenames:
                key = rel_dir + name
                if not key.startswith(prefix):
                    continue
                full = os.path.join(dirpath, name)
                real = os.path.realpath(full)
                if os.path.commonpath([real_base, real]) != real_base:
                    continue  # a link out of the bucket is not an object of it
                try:
                    st = os.stat(full)
                except OSError:
                    continue  # removed while listing
                found.append(_info(key, st))
        found.sort(key=lambda o: o.key)
        return found

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        path = self.path_for(bucket, key)
        try:
            st = await asyncio.to_thread(path.stat)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return _info(key, st)

    async def read(
        self, bucket: str, key: str, start: int = 0, *, if_match: str | None = None
    ) -> AsyncIterator[bytes]:
        path = self.path_for(bucket, key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NoSuchKey(bucket, key) from exc
        try:
            # The open file is the object read from here on, whatever replaces the path: it
            # is checked as opened, and again at the end (a write in place changes its time).
            if if_match is not None and _etag(os.fstat(handle.fileno())) != if_match:
                raise ObjectChanged(bucket, key)
            if start:
                handle.seek(start)
            while True:
                chunk = await asyncio.to_thread(handle.read, READ_CHUNK_BYTES)
                if not chunk:
                    break
                yield chunk
            if if_match is not None and _etag(os.fstat(handle.fileno())) != if_match:
                raise ObjectChanged(bucket, key)
        finally:
            handle.close()

    def _tmp_dir(self) -> Path:
        tmp = self.root / _TMP_DIR
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def _check_writable(self, bucket: str, key: str) -> Path:
        if key.endswith("/"):
            raise InvalidLocation(f"s3://{bucket}/{key} names a folder, not an object.")
        path = self.path_for(bucket, key)
        if not self._bucket_dir(bucket).is_dir():
            raise NoSuchBucket(bucket)
        return path

    async def put(self, bucket: str, key: str, data: bytes) -> None:
        path = self._check_writable(bucket, key)
        await asyncio.to_thread(self._replace_with, path, lambda f: f.write(data))

    async def put_file(self, bucket: str, key: str, source: Path, *, move: bool = False) -> None:
        path = self._check_writable(bucket, key)
        if move:
            try:
                await asyncio.to_thread(self._move_into_place, source, path)
                return
            except OSError:
                pass  # another file system: copy instead

        def copy(f: IO[bytes]) -> None:
            with source.open("rb") as src:
                shutil.copyfileobj(src, f, READ_CHUNK_BYTES)

        await asyncio.to_thread(self._replace_with, path, copy)

    def _move_into_place(self, source: Path, path: Path) -> None:
        with source.open("rb") as fh:
            os.fsync(fh.fileno())
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, path)

    def _replace_with(self, path: Path, fill: Callable[[IO[bytes]], object]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        name = self._tmp_dir() / f"{secrets.token_hex(8)}.tmp"
        # Mode 0o666 less the umask, as for any file a program writes (a temporary file
        # would otherwise be private to its owner, unlike the .out files next to it).
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as tmp:
            try:
                fill(tmp)
                tmp.flush()
                os.fsync(tmp.fileno())
            except BaseException:
                os.unlink(name)
                raise
        os.replace(name, path)

    async def delete(self, bucket: str, key: str) -> None:
        path = self.path_for(bucket, key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise ObjectStoreError(f"Cannot remove s3://{bucket}/{key}: {exc.strerror}") from exc

    async def aclose(self) -> None:
        return None
