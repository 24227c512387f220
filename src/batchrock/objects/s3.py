"""Any S3-compatible service (AWS S3, MinIO, moto's server) through obstore.

obstore (Rust ``object_store``) does signing, retries, multipart uploads and streaming; this
module only maps its errors to :mod:`.base`'s and keeps one client per bucket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import PreconditionError
from obstore.store import S3Store

from batchrock.objects.base import (
    NoSuchBucket,
    NoSuchKey,
    ObjectChanged,
    ObjectInfo,
    ObjectStoreError,
    ReadStalled,
)

#: object_store's default limit on a whole request, body included, is 30 seconds: a job reads
#: its input as the model goes, so one GET can rightly stay open for as long as a job runs
#: (a week at most). Stalls are caught by the read timeout instead.
_REQUEST_TIMEOUT = timedelta(days=8)


def _is_no_such_bucket(exc: BaseException) -> bool:
    return "NoSuchBucket" in str(exc)


def _info(meta: Any) -> ObjectInfo:
    return ObjectInfo(
        meta["path"], int(meta["size"]), etag=meta.get("e_tag"), modified=meta["last_modified"]
    )


def _short(exc: BaseException) -> str:
    """obstore messages carry a long debug dump after the first line; users need the first."""
    return str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__


def _timed_out(exc: BaseException) -> bool:
    """Whether the client gave up waiting (its read timeout): the first line of its message
    only says "request or response body error", the debug dump says why."""
    return "kind: Timeout" in str(exc)


class S3ObjectStore:
    """S3 through obstore.

    >>> store = S3ObjectStore(endpoint_url="http://127.0.0.1:9000", region="us-east-1")
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        virtual_hosted_style: bool = False,
        max_retries: int = 3,
        read_timeout: float = 60.0,
    ) -> None:
        self._config: dict[str, Any] = {"region": region}
        if endpoint_url:
            self._config["endpoint"] = endpoint_url
            self._config["virtual_hosted_style_request"] = virtual_hosted_style
        if access_key_id:
            self._config["access_key_id"] = access_key_id
        if secret_access_key:
            self._config["secret_access_key"] = secret_access_key
        if session_token:
            self._config["session_token"] = session_token
        plain_http = bool(endpoint_url and endpoint_url.startswith("http:"))
        # read_timeout: no byte for that long on a connection (a response that never comes,
        # or stops halfway) fails the request, or the retry, instead of waiting for ever.
        self._read_timeout = read_timeout
        self._client_options: Any = {
            "allow_http": plain_http,
            "timeout": _REQUEST_TIMEOUT,
            "read_timeout": timedelta(seconds=read_timeout),
        }
        self._retry: Any = {"max_retries": max_retries, "retry_timeout": timedelta(seconds=30)}
        self._stores: dict[str, S3Store] = {}

    def _store(self, bucket: str) -> S3Store:
        store = self._stores.get(bucket)
        if store is None:
            store = S3Store(
                bucket,
                client_options=self._client_options,
                retry_config=self._retry,
                **self._config,
            )
            self._stores[bucket] = store
        return store

    def local_folder(self, bucket: str, key: str = "") -> Path | None:
        return None

    async def bucket_exists(self, bucket: str) -> bool:
        try:
            async for _ in obstore.list(self._store(bucket), None, chunk_size=1):
                break
        except Exception as exc:
            if _is_no_such_bucket(exc):
                return False
            raise ObjectStoreError(f"Cannot read S3 bucket {bucket!r}: {self._why(exc)}") from exc
        return True

    async def list_objects(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        try:
            async for batch in obstore.list(self._store(bucket), prefix or None, chunk_size=1000):
                found.extend(_info(m) for m in batch)
        except Exception as exc:
            raise self._error(exc, bucket, f"list s3://{bucket}/{prefix}") from exc
        # object_store lists keys below a "folder" prefix; keep S3's plain string-prefix rule.
        found = [o for o in found if o.key.startswith(prefix)]
        found.sort(key=lambda o: o.key)
        return found

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            meta = await obstore.head_async(self._store(bucket), key)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._error(exc, bucket, f"read s3://{bucket}/{key}") from exc
        return _info(meta)

    async def read(
        self, bucket: str, key: str, start: int = 0, *, if_match: str | None = None
    ) -> AsyncIterator[bytes]:
        options: Any = {"range": {"offset": start}} if start else {}
        if if_match is not None:
            # A conditional GET: S3 answers 412 if the object is no longer that one, and
            # streams that one version otherwise, whatever is written meanwhile.
            options["if_match"] = if_match
        # The client's read timeout gives up on a silent connection; this bound, later, on
        # anything else that would keep a step waiting.
        bound = 2 * self._read_timeout
        try:
            result = await asyncio.wait_for(
                obstore.get_async(self._store(bucket), key, options=options or None), bound
            )
            stream = result.stream(min_chunk_size=1024 * 1024)
            while True:
                try:
                    chunk = await asyncio.wait_for(anext(stream), bound)
                except StopAsyncIteration:
                    return
                yield bytes(chunk)
        except TimeoutError:
            raise ReadStalled(bucket, key, self._read_timeout) from None
        except FileNotFoundError as exc:
            raise NoSuchKey(bucket, key) from exc
        except PreconditionError as exc:
            raise ObjectChanged(bucket, key) from exc
        except ObjectStoreError:
            raise
        except Exception as exc:
            if _timed_out(exc) and not _is_no_such_bucket(exc):
                raise ReadStalled(bucket, key, self._read_timeout) from exc
            raise self._error(exc, bucket, f"read s3://{bucket}/{key}") from exc

    def _error(self, exc: BaseException, bucket: str, doing: str) -> ObjectStoreError:
        """obstore's error as one of ours: :class:`NoSuchBucket`, or ``Cannot {doing}: ...``."""
        if _is_no_such_bucket(exc):
            return NoSuchBucket(bucket)
        return ObjectStoreError(f"Cannot {doing}: {self._why(exc)}")

    def _why(self, exc: BaseException) -> str:
        if _timed_out(exc):
            return (
                f"no answer came for {self._read_timeout:g} seconds (the setting "
                f"object_read_timeout_seconds)"
            )
        return _short(exc)

    async def put(self, bucket: str, key: str, data: bytes) -> None:
        await self._put(bucket, key, data)

    async def put_file(self, bucket: str, key: str, path: Path, *, move: bool = False) -> None:
        await self._put(bucket, key, path)
        if move:
            path.unlink(missing_ok=True)

    async def _put(self, bucket: str, key: str, data: bytes | Path) -> None:
        try:
            await obstore.put_async(self._store(bucket), key, data)
        except Exception as exc:
            raise self._error(exc, bucket, f"write s3://{bucket}/{key}") from exc

    async def delete(self, bucket: str, key: str) -> None:
        try:
            await obstore.delete_async(self._store(bucket), key)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self._error(exc, bucket, f"remove s3://{bucket}/{key}") from exc

    async def aclose(self) -> None:
        self._stores.clear()
