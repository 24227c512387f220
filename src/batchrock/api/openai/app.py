"""The ``/v1/files`` and ``/v1/batches`` routes, mounted in :class:`batchrock.api.app.BedrockApp`.

Every answer is JSON in OpenAI's shapes; every failure ``{"error": {...}}`` (errors.py).
Uploads are read as a stream (multipart.py), written to a spool file in worker threads and
moved into the object store whole; input files are checked and converted block by block in
worker threads (lines.py): no request holds the event loop for more than a block's time.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import orjson

from batchrock.api import auth
from batchrock.api.openai import batches, lines
from batchrock.api.openai.errors import OpenAIError, bad_request, not_found, server_error
from batchrock.api.openai.files import (
    SpoolFile,
    bucket_for,
    ensure_bucket,
    file_object,
    new_file_id,
    remove_file,
    transform,
)
from batchrock.api.openai.multipart import (
    MultipartError,
    MultipartReader,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
)
from batchrock.errors import (
    AccessDeniedException,
    ServiceError,
    ServiceQuotaExceededException,
    ThrottlingException,
    ValidationException,
)
from batchrock.jobs import OPENAI_BATCH_PREFIX, TERMINAL, new_job_id
from batchrock.objects.base import NoSuchKey, ObjectStore, ObjectStoreError
from batchrock.service import Caller, JobService, NewJob
from batchrock.settings import Settings
from batchrock.shared_state import SharedStateBusy
from batchrock.store.base import StoreBusy
from batchrock.store.files import FileJob, StoredFile

log = logging.getLogger("batchrock.api.openai")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_DEFAULT_BATCH_FILE_TTL = timedelta(days=30)
_FIELD_BYTES = 64 * 1024
_ACCOUNT = re.compile(r"\d{12}")
#: Which Bedrock action each operation needs from a key of the credentials file.
ACTIONS = {
    "CreateFile": "CreateModelInvocationJob",
    "ListFiles": "ListModelInvocationJobs",
    "GetFile": "GetModelInvocationJob",
    "GetFileContent": "GetModelInvocationJob",
    "DeleteFile": "StopModelInvocationJob",
    "CreateBatch": "CreateModelInvocationJob",
    "ListBatches": "ListModelInvocationJobs",
    "GetBatch": "GetModelInvocationJob",
    "CancelBatch": "StopModelInvocationJob",
}


class Disconnected(Exception):
    """The client left before its request was whole."""


class OpenAIApi:
    """Serves one request whose path starts with ``/v1/``."""

    def __init__(
        self, service: JobService, objects: ObjectStore, settings: Settings, gate: auth.Gate
    ) -> None:
        self.service = service
        self.files = service.store.files
        self.objects = objects
        self.settings = settings
        self.gate = gate
        self._spool = settings.data_dir / "uploads"
        self.finisher = batches.Finisher(
            self.files, objects, self._spool, settings.files_bucket_prefix, service.clock
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer the request; the status sent (0: the client left first)."""
        method: str = scope["method"]
        path: str = scope["path"]
        try:
            operation, resource = _route(method, path)
            scope["batchrock.operation"] = operation
            caller = self._caller(scope, path, operation, resource)
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if operation == "GetFileContent":
                return await self._content(caller, resource, send)
            if operation == "CreateFile":
                status, body = 200, await self._upload(caller, scope, receive)
            else:
                payload = await self._json(scope, receive) if method == "POST" else {}
                status, body = 200, await self._handle(operation, caller, resource, query, payload)
        except Disconnected:
            return 0
        except OpenAIError as exc:
            status, body = exc.status, exc.body()
        except (StoreBusy, SharedStateBusy) as exc:
            # Another process holds the database (or the API processes' shared file) longer
            # than the store waits: nothing was done, and the SDK retries a 429 on its own.
            log.warning(
                "%s busy: %s",
                "job store" if isinstance(exc, StoreBusy) else "shared state file",
                exc,
            )
            busy = OpenAIError(
                429, "The service is busy. Resubmit your request later.", type="rate_limit_error"
            )
            status, body = busy.status, busy.body()
        except Exception:
            log.exception("unhandled error in the OpenAI API")
            status, body = (
                500,
                server_error("The server had an error processing your request.").body(),
            )
        payload_bytes = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload_bytes)).encode()),
                    (b"x-request-id", ("req_" + secrets.token_hex(16)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload_bytes})
        return status

    # --- who ----------------------------------------------------------------------------

    def _caller(self, scope: Scope, path: str, operation: str, resource: str) -> Caller:
        settings = self.settings
        if self.gate.directory is None:
            # Open mode: any key; one of 12 digits acts as that account (as an access key
            # id does on the Bedrock API), so tests and users can keep accounts apart.
            token = ""
            for key, value in scope["headers"]:
                if key.lower() == b"authorization":
                    scheme, _, rest = value.decode("latin-1").strip().partition(" ")
                    token = rest.strip() if scheme.lower() == "bearer" else ""
            account = token if _ACCOUNT.fullmatch(token) else settings.default_account_id
            return Caller(account, settings.default_region)
        try:
            who = self.gate.identify(scope, path, "", b"")
            action = ACTIONS[operation]
            params = {"jobIdentifier": resource} if resource else {}
            self.gate.authorize(who, action, params)
        except ThrottlingException as exc:  # too many wrong signatures (api/auth.py)
            raise OpenAIError(429, exc.message, type="rate_limit_error") from None
        except ServiceError as exc:
            # OpenAI answers a key it does not know with 401 (invalid_api_key) and a key that
            # may not do this with 403; Bedrock answers both 403.
            status = 403 if isinstance(exc, AccessDeniedException) else 401
            raise OpenAIError(
                status,
                exc.message,
                type="invalid_request_error",
                code="invalid_api_key" if status == 401 else None,
            ) from None
        return who.caller

    # --- bodies -------------------------------------------------------------------------

    async def _chunks(self, receive: Receive) -> Any:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected()
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def _json(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        limit = self.settings.max_body_bytes
        parts: list[bytes] = []
        size = 0
        async for chunk in self._chunks(receive):
            size += len(chunk)
            if size > limit:
                raise OpenAIError(413, f"The request body is larger than {limit} bytes.")
            parts.append(chunk)
        raw = b"".join(parts)
        if not raw.strip():
            return {}
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise bad_request("We could not parse the JSON body of your request.") from None
        if not isinstance(data, dict):
            raise bad_request("The JSON body of your request must be an object.")
        return data

    async def _handle(
        self,
        operation: str,
        caller: Caller,
        resource: str,
        query: dict[str, list[str]],
        payload: dict[str, Any],
    ) -> dict[str, Any]:
        if operation == "ListFiles":
            return await self._list_files(caller, query)
        if operation == "GetFile":
            return file_object(await self._file(caller, resource))
        if operation == "DeleteFile":
            return await self._delete_file(caller, resource)
        if operation == "CreateBatch":
            return await self._create_batch(caller, payload)
        if operation == "ListBatches":
            return await self._list_batches(caller, query)
        if operation == "GetBatch":
            return await self._get_batch(caller, resource, wait=True)
        if operation == "CancelBatch":
            return await self._cancel(caller, resource)
        raise AssertionError(operation)  # pragma: no cover - _route names only these

    # --- files --------------------------------------------------------------------------

    async def _file(self, caller: Caller, file_id: str) -> StoredFile:
        found = await self.files.get_file(caller.account_id, file_id)
        if found is None or (
            found.expires_at is not None and found.expires_at <= self.service.clock.now()
        ):
            raise not_found(f"No such File object: {file_id}", param="id")
        return found

    async def _upload(self, caller: Caller, scope: Scope, receive: Receive) -> dict[str, Any]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        boundary = boundary_of(headers.get("content-type"))
        if boundary is None:
            raise bad_request("The body must be multipart/form-data with 'file' and 'purpose'.")
        limit = self.settings.openai_max_file_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + _FIELD_BYTES:
            raise _too_large(limit)
        reader = MultipartReader(boundary)
        fields: dict[str, bytes] = {}
        filename: str | None = None
        current: str | None = None
        spool: SpoolFile | None = None
        stored = False
        try:
            async for chunk in self._chunks(receive):
                for event in reader.feed(chunk):
                    if isinstance(event, PartStart):
                        current = event.name
                        if event.filename is not None and event.name == "file":
                            if spool is not None:
                                raise bad_request("Only one file may be uploaded at a time.")
                            filename = event.filename
                            spool = SpoolFile(self._spool)
                            await spool.open()
                        else:
                            fields[current] = b""
                    elif isinstance(event, PartData):
                        if current == "file" and spool is not None and filename is not None:
                            await spool.write(event.data)
                            if spool.size > limit:
                                raise _too_large(limit)
                        elif current is not None:
                            fields[current] += event.data
                            if len(fields[current]) > _FIELD_BYTES:
                                raise bad_request(f"The field {current!r} is too large.")
                    elif isinstance(event, PartEnd):
                        current = None
            reader.close()
            purpose = fields.get("purpose", b"").decode("utf-8", "replace")
            if not purpose:
                raise bad_request("Missing required parameter: 'purpose'.", param="purpose")
            if purpose not in PURPOSES:
                raise bad_request(
                    f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'", param="purpose"
                )
            if spool is None or filename is None:
                raise bad_request("Missing required parameter: 'file'.", param="file")
            if purpose == "batch" and not filename.endswith(".jsonl"):
                raise bad_request("Invalid file format for Batch API. Must be .jsonl")
            now = self.service.clock.now()
            expires = self._expiry(fields, purpose)
            bucket = bucket_for(self.settings.files_bucket_prefix, caller.account_id)
            await self._bucket(bucket)
            file_id = new_file_id()
            key = f"files/{file_id}"
            await spool.store(self.objects, bucket, key)
            stored = True
            record = StoredFile(
                file_id=file_id,
                account_id=caller.account_id,
                purpose=purpose,
                filename=filename,
                size=spool.size,
                created_at=now,
                expires_at=None if expires is None else now + expires,
                bucket=bucket,
                key=key,
            )
            await self.files.add_file(record)
            return file_object(record)
        except MultipartError as exc:
            raise bad_request(str(exc)) from None
        except ObjectStoreError as exc:
            log.warning("cannot store an upload: %s", exc)
            raise server_error(f"The file could not be stored: {exc}") from None
        finally:
            if spool is not None and not stored:
                await spool.discard()

    def _expiry(self, fields: dict[str, bytes], purpose: str) -> timedelta | None:
        anchor = fields.get("expires_after[anchor]")
        seconds = fields.get("expires_after[seconds]")
        if anchor is None and seconds is None:
            return _DEFAULT_BATCH_FILE_TTL if purpose == "batch" else None
        if anchor != b"created_at":
            raise bad_request("expires_after[anchor] must be 'created_at'.", param="expires_after")
        try:
            value = int(seconds or b"")
        except ValueError:
            value = -1
        if not 3600 <= value <= 2_592_000:
            raise bad_request(
                "expires_after[seconds] must be between 3600 and 2592000.", param="expires_after"
            )
        return timedelta(seconds=value)

    async def _bucket(self, bucket: str) -> None:
        if not await ensure_bucket(self.objects, bucket):
            raise server_error(
                f"The files bucket {bucket!r} does not exist in the object store; create it "
                "(setting files_bucket_prefix)."
            )

    async def _list_files(self, caller: Caller, query: dict[str, list[str]]) -> dict[str, Any]:
        limit = _int_param(query, "limit", 10000, 1, 10000)
        order = _one(query, "order") or "desc"
        if order not in ("asc", "desc"):
            raise bad_request("'order' must be 'asc' or 'desc'.", param="order")
        rows = await self.files.list_files(
            caller.account_id,
            limit=limit + 1,
            purpose=_one(query, "purpose"),
            after=_one(query, "after"),
            descending=order == "desc",
        )
        now = self.service.clock.now()
        shown = [f for f in rows[:limit] if f.expires_at is None or f.expires_at > now]
        data = [file_object(f) for f in shown]
        return _page(data, has_more=len(rows) > limit)

    async def _delete_file(self, caller: Caller, file_id: str) -> dict[str, Any]:
        found = await self.files.get_file(caller.account_id, file_id)
        if found is None:
            raise not_found(f"No such File object: {file_id}", param="id")
        try:
            await remove_file(self.files, self.objects, found)
        except ObjectStoreError as exc:
            # The file stays, bytes and record: the client's retry can finish the removal.
            raise server_error(f"The file's bytes could not be removed: {exc}") from None
        return {"id": file_id, "object": "file", "deleted": True}

    async def _content(self, caller: Caller, file_id: str, send: Send) -> int:
        found = await self._file(caller, file_id)
        chunks = self.objects.read(found.bucket, found.key)
        try:
            first = await anext(chunks, b"")
        except NoSuchKey:
            # A file whose bytes are gone (removed under it, or a removal half done).
            raise not_found(f"No such File object: {file_id}", param="id") from None
        except ObjectStoreError as exc:
            log.warning("file %s: its content could not be read: %s", file_id, exc)
            raise server_error(f"The file's content could not be read: {exc}") from None
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    (b"content-length", str(found.size).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": first, "more_body": True})
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except ObjectStoreError as exc:
            # The status is sent: the answer can only be cut short (the server closes the
            # connection, the client sees fewer bytes than Content-Length), never completed
            # as if the file were whole.
            log.warning("file %s: reading its content failed midway: %s", file_id, exc)
            return 200
        await send({"type": "http.response.body", "body": b""})
        return 200

    # --- batches ------------------------------------------------------------------------

    async def _create_batch(self, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
        input_file_id = p.get("input_file_id")
        endpoint = p.get("endpoint")
        window = p.get("completion_window")
        metadata = p.get("metadata")
        for name, value in (
            ("input_file_id", input_file_id),
            ("endpoint", endpoint),
            ("completion_window", window),
        ):
            if value is None:
                raise bad_request(f"Missing required parameter: '{name}'.", param=name)
            if not isinstance(value, str):
                raise bad_request(f"'{name}' must be a string.", param=name)
        assert isinstance(input_file_id, str) and isinstance(endpoint, str)
        if endpoint not in batches.ENDPOINTS:
            raise bad_request(
                f"'{endpoint}' is not one of {list(batches.ENDPOINTS)} - 'endpoint'",
                param="endpoint",
            )
        if window != "24h":
            raise bad_request(
                f"'{window}' is not one of ['24h'] - 'completion_window'", param="completion_window"
            )
        _check_metadata(metadata)
        source = await self._file(caller, input_file_id)
        if source.purpose != "batch":
            raise bad_request(
                f"The file {input_file_id} has purpose '{source.purpose}'; a batch's input file "
                "must be uploaded with purpose 'batch'.",
                param="input_file_id",
            )
        bucket = bucket_for(self.settings.files_bucket_prefix, caller.account_id)
        await self._bucket(bucket)
        folder = f"batches/{secrets.token_hex(8)}"
        check = lines.InputCheck(
            endpoint=endpoint,
            max_requests=self.settings.openai_max_requests_per_batch,
            max_embedding_inputs=50_000,
        )
        spool = SpoolFile(self._spool)
        await spool.open()

        async def one_block(block: bytes) -> None:
            records = await asyncio.to_thread(check.feed, block)
            if records and not check.errors:
                await spool.write(records)

        try:
            await transform(self.objects.read(source.bucket, source.key), one_block)
            check.finish()
            if not check.errors:
                await spool.store(self.objects, bucket, f"{folder}/{batches.INPUT_NAME}")
            else:
                await spool.discard()
        except NoSuchKey:
            await spool.discard()
            raise not_found(
                f"No such File object: {input_file_id}", param="input_file_id"
            ) from None
        except BaseException:
            await spool.discard()
            raise
        refused = None
        if check.errors:
            first = check.errors[0]
            where = f"line {first['line']}: " if first["line"] is not None else ""
            refused = f"The input file {input_file_id} is not valid: {where}{first['message']}"
        # The record first, then the job: a crash between the two leaves a record without
        # its job, which every reader ignores (and removes once it is old), never a job that
        # ListModelInvocationJobs shows and /v1/batches does not.
        job_id = new_job_id()
        now = self.service.clock.now()
        record = FileJob(
            job_id=job_id,
            account_id=caller.account_id,
            created_at=now.replace(microsecond=now.microsecond // 1000 * 1000),
            endpoint=endpoint,
            input_file_id=input_file_id,
            metadata=metadata,
            errors=tuple(check.errors),
        )
        await self.files.add_file_job(record)
        try:
            job, _ = await self.service.create(
                caller,
                NewJob(
                    job_id=job_id,
                    name="openai-batch",
                    model_id=check.model or "",
                    role_arn=f"arn:aws:iam::{caller.account_id}:role/batchrock-openai-batch",
                    input_s3_uri=f"s3://{bucket}/{folder}/{batches.INPUT_NAME}",
                    output_s3_uri=f"s3://{bucket}/{folder}/",
                    timeout_hours=24,
                    invocation_type=OPENAI_BATCH_PREFIX + endpoint,
                    refused=refused,
                ),
            )
        except ServiceQuotaExceededException as exc:
            await self._forget(caller, job_id)
            raise OpenAIError(429, exc.message, type="rate_limit_error") from None
        except ValidationException:
            await self._forget(caller, job_id)
            raise bad_request(
                f"The model '{check.model}' is not served here: route it to a backend "
                "(docs/models.md) or allow any model (setting allow_any_model).",
                param="body.model",
                code="model_not_found",
            ) from None
        return batches.to_wire(job, record, await self.service.store.events(job.job_id))

    async def _batch(self, caller: Caller, batch: str) -> tuple[Any, FileJob]:
        job_id = batches.job_id_of(batch)
        record = await self.files.get_file_job(caller.account_id, job_id) if job_id else None
        job = (
            await self.service.store.get(caller.account_id, caller.region, job_id)
            if job_id
            else None
        )
        if record is not None and job is None:
            await self._orphan(record)
        if record is None or job is None:
            raise not_found(f"No batch found with id '{batch}'.", param="batch_id")
        return job, record

    async def _forget(self, caller: Caller, job_id: str) -> None:
        """Remove the record of a job the service refused to make (nothing was stored)."""
        try:
            await self.files.delete_file_job(caller.account_id, job_id)
        except Exception:
            # Left behind, it is a record without its job: ignored, removed later.
            log.warning("batch %s: its record could not be removed", job_id, exc_info=True)

    async def _orphan(self, record: FileJob) -> None:
        """A record whose job does not exist: a creation in flight (left alone) or one a
        crash cut short (removed once older than any creation takes)."""
        if record.created_at > self.service.clock.now() - batches.ORPHAN_GRACE:
            return
        log.info("batch %s: its job was never made; removing its record", record.job_id)
        await self.files.delete_file_job(record.account_id, record.job_id)

    async def _get_batch(self, caller: Caller, batch: str, *, wait: bool) -> dict[str, Any]:
        job, record = await self._batch(caller, batch)
        record = await self._results(job, record, wait=wait)
        return batches.to_wire(job, record, await self.service.store.events(job.job_id))

    async def _results(self, job: Any, record: FileJob, *, wait: bool) -> FileJob:
        """The record, its result files written first when its job has ended. A write the
        object store refuses leaves the record as it was (the batch reads ``finalizing``, and
        a later read tries again) until the Finisher gives it up (``failed``): never a 500
        that the SDK's polling loop would raise."""
        if not batches.has_results(job) or record.finished_at is not None:
            return record
        task = self.finisher.start(job, record, self.service.clock.now())
        if not wait:
            return record
        return await asyncio.shield(task)

    async def _list_batches(self, caller: Caller, query: dict[str, list[str]]) -> dict[str, Any]:
        limit = _int_param(query, "limit", 20, 1, 100)
        after = _one(query, "after")
        after_job = batches.job_id_of(after) if after else None
        if after and after_job is None:
            return _page([], has_more=False)
        rows = await self.files.list_file_jobs(caller.account_id, limit=limit + 1, after=after_job)
        page = rows[:limit]
        # Three queries for the page however long it is: records, their jobs, their events.
        ids = [r.job_id for r in page]
        found = await self.service.store.get_many(caller.account_id, caller.region, ids)
        history = await self.service.store.events_of(list(found))
        data = []
        for record in page:
            job = found.get(record.job_id)
            if job is None:
                await self._orphan(record)
                continue
            record = await self._results(job, record, wait=False)
            data.append(batches.to_wire(job, record, history.get(job.job_id, [])))
        return _page(data, has_more=len(rows) > limit)

    async def _cancel(self, caller: Caller, batch: str) -> dict[str, Any]:
        job, record = await self._batch(caller, batch)
        if job.status in TERMINAL:
            raise bad_request(
                f"Cannot cancel a batch with status '{batches.STATUS[job.status]}'.",
                param="batch_id",
            )
        try:
            job = await self.service.stop(caller, job.job_id)
        except ValidationException:
            job = await self.service.get(caller, job.job_id)
            raise bad_request(
                f"Cannot cancel a batch with status '{batches.STATUS[job.status]}'.",
                param="batch_id",
            ) from None
        return batches.to_wire(job, record, await self.service.store.events(job.job_id))


def _page(data: list[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    """A cursor page as OpenAI lists files and batches (the SDK goes on with after=last_id)."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _too_large(limit: int) -> OpenAIError:
    return OpenAIError(
        413,
        f"The file is larger than the maximum of {limit} bytes.",
        param="file",
        code="file_too_large",
    )


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _int_param(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    raw = _one(query, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"'{name}' must be an integer.", param=name) from None
    if not low <= value <= high:
        raise bad_request(f"'{name}' must be between {low} and {high}.", param=name)
    return value


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise bad_request("'metadata' must be an object of strings.", param="metadata")
    if len(metadata) > 16:
        raise bad_request("'metadata' may hold at most 16 pairs.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise bad_request(
                "'metadata' keys must be at most 64 characters and values strings of at most 512.",
                param="metadata",
            )


_ROUTES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("POST", ("files",), "CreateFile"),
    ("GET", ("files",), "ListFiles"),
    ("GET", ("files", "*"), "GetFile"),
    ("DELETE", ("files", "*"), "DeleteFile"),
    ("GET", ("files", "*", "content"), "GetFileContent"),
    ("POST", ("batches",), "CreateBatch"),
    ("GET", ("batches",), "ListBatches"),
    ("GET", ("batches", "*"), "GetBatch"),
    ("POST", ("batches", "*", "cancel"), "CancelBatch"),
)


def _route(method: str, path: str) -> tuple[str, str]:
    """(operation, the id in the path or "")."""
    segments = path.removeprefix("/v1/").strip("/").split("/")
    for want_method, pattern, operation in _ROUTES:
        if want_method != method or len(pattern) != len(segments):
            continue
        resource = ""
        for want, got in zip(pattern, segments, strict=True):
            if want == "*":
                if not got:
                    break
                resource = got
            elif want != got:
                break
        else:
            return operation, resource
    raise OpenAIError(404, f"Invalid URL ({method} {path})")
