"""Any S3-compatible service (AWS S3, MinIO, moto's server) through obstore.

obstore (Rust ``object_store``) does signing, retries, multipart uploads and streaming; this
module only maps its errors to :mod:`.base`'s and keeps one client per bucket.

Resumable uploads (:class:`.base.ResumableUploads`: the engine checkpoints the file in
progress as parts of a multipart upload that another machine can complete) need the upload's
id and its parts to outlive the process; obstore keeps those inside its own writer, so they
go through botocore (already the service's dependency), in worker threads.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import botocore.session
import obstore
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from obstore.exceptions import PreconditionError
from obstore.store import S3Store

from batchrock.objects.base import (
    NoSuchBucket,
    NoSuchKey,
    ObjectChanged,
    ObjectInfo,
    ObjectStoreError,
    ReadStalled,
    UploadedPart,
    UploadGone,
)

#: S3's smallest part but the last; the setting ``s3_part_bytes`` is raised to it.
MIN_PART_BYTES = 5 * 1024 * 1024

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
        part_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        #: Output a part of a resumable upload holds (all parts but the last): at least 5 MiB
        #: on AWS S3; smaller only for a service that allows it (moto, configured so).
        self.part_bytes = part_bytes
        self._boto_args: dict[str, Any] = {
            "region_name": region,
            "endpoint_url": endpoint_url or None,
            "aws_access_key_id": access_key_id or None,
            "aws_secret_access_key": secret_access_key or None,
            "aws_session_token": session_token or None,
            "config": Config(
                s3={"addressing_style": "virtual" if virtual_hosted_style else "path"},
                read_timeout=read_timeout,
                retries={"max_attempts": max_retries + 1, "mode": "standard"},
            ),
        }
        self._boto: Any = None
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

    # --- resumable uploads (botocore) -----------------------------------------------------

    def _client(self) -> Any:
        if self._boto is None:  # made once, on the loop; botocore clients are thread-safe
            self._boto = botocore.session.get_session().create_client("s3", **self._boto_args)
        return self._boto

    async def _call(self, bucket: str, key: str, doing: str, fn: Callable[[], Any]) -> Any:
        try:
            return await asyncio.to_thread(fn)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchUpload":
                raise UploadGone(bucket, key) from exc
            if code == "NoSuchBucket":
                raise NoSuchBucket(bucket) from exc
            raise ObjectStoreError(f"Cannot {doing} s3://{bucket}/{key}: {_short(exc)}") from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(f"Cannot {doing} s3://{bucket}/{key}: {_short(exc)}") from exc

    async def create_upload(self, bucket: str, key: str) -> str:
        c = self._client()
        fn = functools.partial(c.create_multipart_upload, Bucket=bucket, Key=key)
        answer = await self._call(bucket, key, "start an upload of", fn)
        return str(answer["UploadId"])

    async def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, data: bytes
    ) -> UploadedPart:
        c = self._client()
        fn = functools.partial(
            c.upload_part, Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        try:
            answer = await self._call(bucket, key, f"upload part {number} of", fn)
        except UploadGone:
            raise
        except ObjectStoreError:
            # Not every S3-compatible service says NoSuchUpload here (moto's server answers
            # 500): ask for the upload's parts, which it does answer so for.
            listing = functools.partial(
                c.list_parts, Bucket=bucket, Key=key, UploadId=upload_id, MaxParts=1
            )
            await self._call(bucket, key, "read the upload of", listing)
            raise
        return UploadedPart(number, str(answer["ETag"]), len(data))

    async def complete_upload(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[UploadedPart]
    ) -> None:
        c = self._client()
        listed = [{"PartNumber": p.number, "ETag": p.etag} for p in parts]
        fn = functools.partial(
            c.complete_multipart_upload,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": listed},
        )
        await self._call(bucket, key, "complete the upload of", fn)

    async def abort_uploads(self, bucket: str, prefix: str) -> int:
        c = self._client()
        fn = functools.partial(self._abort_all, c, bucket, prefix)
        result: int = await self._call(bucket, prefix, "abort the uploads under", fn)
        return result

    @staticmethod
    def _abort_all(client: Any, bucket: str, prefix: str) -> int:
        aborted = 0
        for page in client.get_paginator("list_multipart_uploads").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            for upload in page.get("Uploads", []):
                try:
                    client.abort_multipart_upload(
                        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                except ClientError as exc:  # finished meanwhile
                    if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                        raise
                    continue
                aborted += 1
        return aborted

    async def aclose(self) -> None:
        self._stores.clear()
        if self._boto is not None:
            self._boto.close()
            self._boto = None
