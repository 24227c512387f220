"""The ASGI application serving Bedrock's model-invocation-job API (restJson1).

Routes, member locations and constraints come from the botocore model (:mod:`.model`); this
module decodes a request into typed arguments, calls :class:`batchrock.service.JobService`, and
encodes the answer. Every failure leaves as ``{"message": ...}`` with ``x-amzn-ErrorType`` and
``x-amzn-RequestId``: never a traceback.

Routing uses the raw path, because SDKs percent-encode the ARN (``%3A``, ``%2F``) into
``/model-invocation-job/{jobIdentifier}`` and a decoded ``/`` would split it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from batchrock import console, logs, metrics
from batchrock.access.credfile import LiveDirectory
from batchrock.api import auth, codec, guard, identity, model, pagination, throttle, validation
from batchrock.api.body import BodyTooLarge, ClientDisconnected, json_object, read_body
from batchrock.api.openai.app import OpenAIApi
from batchrock.api.summaries import Encoded, SummaryCache
from batchrock.api.wrong_signatures import WrongSignatures
from batchrock.errors import (
    AccessDeniedException,
    InternalServerException,
    ResourceNotFoundException,
    ServiceError,
    ThrottlingException,
    TooManyTagsException,
    ValidationException,
)
from batchrock.jobs import JobStatus
from batchrock.service import Caller, JobService, NewJob
from batchrock.settings import Settings
from batchrock.shared_state import SharedState, SharedStateBusy
from batchrock.store.base import JobFilter, JobStore, PageRequest, StoreBusy

log = logging.getLogger("batchrock.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Lifespan = Callable[[], AbstractAsyncContextManager[None]]

HEALTH_PATH = "/_batchrock/health"
METRICS_PATH = "/metrics"
#: GetModelInvocationJob's route (``GET /model-invocation-job/{jobIdentifier}``): a GET with
#: one segment after it is a Get (api/model.py's routes; a test checks they agree).
_GET_PREFIX = "/model-invocation-job/"
_JSON_TYPE = (b"content-type", b"application/json")
_GET_REFS_KEPT = 4096
#: The operation label of requests that named none: refused before routing, or no route.
UNROUTED = "unknown"


class UnknownOperation(ServiceError):
    """The requested operation is not recognized by the service."""

    code = "UnknownOperationException"
    http_status = 404


class MethodNotAllowed(ServiceError):
    """The requested operation is not recognized by the service."""

    code = "UnknownOperationException"
    http_status = 405


class PayloadTooLarge(ValidationException):
    http_status = 413


def bad_head_message(limit: int) -> str:
    return (
        f"The request is not a valid HTTP/1.1 request, or its request line and headers are "
        f"larger than {limit} bytes."
    )


class MetricsEndpoint:
    """``GET /metrics`` (docs/metrics.md), for ``serve``'s API and a worker's metrics port."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.process = metrics.process_metrics()
        self._store = store
        # A server with a credentials file reachable beyond loopback shows its metrics only
        # when told to (docs/metrics.md, "Access").
        self._open = (
            settings.credentials_file is None
            or guard.is_loopback(settings.host)
            or settings.metrics_public
        )

    async def answer(self, scope: Scope, send: Send, started: float) -> None:
        """Send the exposition text, or raise AccessDeniedException (the caller answers it)."""
        scope["batchrock.operation"] = "Metrics"
        if not self._open:
            raise AccessDeniedException(
                "The metrics of a server with a credentials file that listens beyond loopback "
                "are not public (setting metrics_public)."
            )
        payload = await self.process.scrape(self._store)
        headers = [
            (b"content-type", metrics.CONTENT_TYPE.encode()),
            (b"content-length", str(len(payload)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        self.process.api_request("Metrics", 200, time.perf_counter() - started)


class Request:
    """What a handler needs from one HTTP request."""

    def __init__(self, caller: Caller, params: dict[str, Any]) -> None:
        self.caller = caller
        self.params = params


Handler = Callable[[Request], Awaitable[dict[str, Any] | Encoded]]
Body = dict[str, Any] | Encoded


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where an operation's input members come from (read from the model once, not per
    request)."""

    shape: Any  # botocore StructureShape, or None for an operation without input
    #: (member, URI label)
    uri: tuple[tuple[str, str], ...]
    #: (member, query parameter, member type)
    query: tuple[tuple[str, str, str], ...]
    #: Whether members come from a JSON body (a POST with members outside the URI and query).
    json_body: bool

    @classmethod
    def of(cls, op_model: Any) -> _Plan:
        shape = op_model.input_shape
        members = shape.members if shape is not None else {}
        uri, query = [], []
        for name, member in members.items():
            location = member.serialization.get("location")
            wire = member.serialization.get("name", name)
            if location == "uri":
                uri.append((name, wire))
            elif location == "querystring":
                query.append((name, wire, member.type_name))
        json_body = op_model.http["method"] == "POST" and any(
            "location" not in m.serialization for m in members.values()
        )
        return cls(shape, tuple(uri), tuple(query), json_body)


class BedrockApp:
    """``BedrockApp(service, settings)`` is an ASGI app; ``lifespan`` runs around serving
    (``batchrock serve`` starts the engine there)."""

    def __init__(
        self,
        service: JobService,
        settings: Settings,
        lifespan: Lifespan | None = None,
        directory: LiveDirectory | None = None,
        process_index: int = 0,
        shared: SharedState | None = None,
    ) -> None:
        self.service = service
        #: Which of the server's API processes this is (0: the one with the engine); the
        #: health check says so in ``x-batchrock-process`` (setting api_processes).
        self._process_header = (b"x-batchrock-process", str(process_index).encode())
        self.settings = settings
        self._lifespan = lifespan
        # Wrong signatures are bounded as the console's failed sign-ins are, in the file the
        # API processes share when there are several (a guess may reach any of them).
        wrong_signatures = WrongSignatures(
            service.clock.monotonic, settings.wrong_signatures_per_address, shared
        )
        self.gate = auth.Gate(settings, service.clock.now, directory, wrong_signatures)
        self._routes = model.routes()
        self._plans = {name: _Plan.of(model.operation(name)) for name in model.OPERATIONS}
        self._get_shape = self._plans["GetModelInvocationJob"].shape
        #: GetModelInvocationJob's identifiers validated and parsed lately (_get_job).
        self._get_refs: dict[str, identity.JobRef] = {}
        self._guard = guard.RequestGuard(settings)
        # With several API processes (``shared``), what they must agree on lives in their
        # shared file: the rate limit's buckets, the console's sessions and failed sign-ins.
        self._limiter: throttle.RateLimiter | None = (
            throttle.RateLimiter.from_settings(settings, service.clock)
            if shared is None
            else throttle.SharedRateLimiter.shared_from_settings(settings, service.clock, shared)
        )
        self._summaries = SummaryCache(service, settings.summary_cache_jobs)
        self.metrics = MetricsEndpoint(settings, service.store)
        self.console = console.Console(service, settings, self.gate, self.invoke, shared)
        #: The OpenAI-compatible Files and Batch API under ``/v1/`` (api/openai), when set.
        self.openai: OpenAIApi | None = None
        validation.prepare(model.operation(name).input_shape for name in model.OPERATIONS)
        self._handlers: dict[str, Handler] = {
            "CreateModelInvocationJob": self._create,
            "GetModelInvocationJob": self._get,
            "ListModelInvocationJobs": self._list,
            "StopModelInvocationJob": self._stop,
            "TagResource": self._tag,
            "UntagResource": self._untag,
            "ListTagsForResource": self._list_tags,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._run_lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: not ours
            return
        request_id = logs.new_request_id()
        logs.request_id.set(request_id)  # on every line logged while serving it
        started = time.perf_counter()
        scope["batchrock.operation"] = UNROUTED
        try:
            # Before anything else, the health check included.
            authorization, has_body = self._guard.check(scope)
            path = _path_of(scope)
            label = path[len(_GET_PREFIX) :] if path.startswith(_GET_PREFIX) else ""
            body: Body
            if label and "/" not in label and scope["method"] == "GET":
                status = 200
                body = await self._get_job(scope, receive, path, label, authorization, has_body)
                headers = [_JSON_TYPE]
            else:
                if path == METRICS_PATH and scope["method"] == "GET":
                    await self.metrics.answer(scope, send, started)
                    return
                if console.owns(path):
                    status = await self.console(scope, receive, send)
                    elapsed = time.perf_counter() - started
                    self.metrics.process.api_request("Console", status, elapsed)
                    return
                if self.openai is not None and path.startswith("/v1/"):
                    sent = await self.openai(scope, receive, send)
                    if sent:
                        self.metrics.process.api_request(
                            scope["batchrock.operation"], sent, time.perf_counter() - started
                        )
                    return
                status, body = await self._dispatch(scope, receive, path, authorization)
                headers = [_JSON_TYPE]
                if scope["batchrock.operation"] == "Health":
                    headers.append(self._process_header)
        except ClientDisconnected:
            # The client left (or was cut off for sending too slowly) before its request was
            # whole: nothing was done and there is no one to answer.
            log.debug("client disconnected mid-request", extra={"request_id": request_id})
            return
        except ServiceError as exc:
            status, body, headers = _error(exc)
        except (StoreBusy, SharedStateBusy) as exc:
            # Another process holds the database (or the API processes' shared file) for
            # longer than the store waits: nothing was done, and the client's retry (SDKs
            # retry throttling) may well succeed.
            what = "job store" if isinstance(exc, StoreBusy) else "shared state file"
            log.warning("%s busy: %s", what, exc, extra={"request_id": request_id})
            status, body, headers = _error(
                ThrottlingException("The service is busy. Resubmit your request later.")
            )
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            status, body, headers = _error(InternalServerException())
        status, headers, payload = _finish(status, body, headers, request_id)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        elapsed = time.perf_counter() - started
        self.metrics.process.api_request(scope["batchrock.operation"], status, elapsed)
        _log_request(scope, status, elapsed)

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        manager = self._lifespan() if self._lifespan else None
        try:
            if manager is not None:
                await manager.__aenter__()
        except Exception as exc:
            log.exception("start-up failed")
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        try:
            if manager is not None:
                await manager.__aexit__(None, None, None)
        finally:
            await send({"type": "lifespan.shutdown.complete"})

    # --- decoding -----------------------------------------------------------------------

    async def _dispatch(
        self, scope: Scope, receive: Receive, path: str, authorization: bytes | None
    ) -> tuple[int, Body]:
        method: str = scope["method"]
        if path == HEALTH_PATH and method == "GET":
            scope["batchrock.operation"] = "Health"
            return 200, {"status": "ok"}
        operation, labels = self._route(method, path)
        scope["batchrock.operation"] = operation
        plan = self._plans[operation]
        query = scope.get("query_string", b"").decode("latin-1")
        body = await self._read_body(receive, scope["headers"])
        who = self._identify(scope, path, query, body, authorization)

        params: dict[str, Any] = {name: labels[wire] for name, wire in plan.uri}
        if query and plan.query:
            query_values = parse_qs(query, keep_blank_values=True)
            for name, wire, kind in plan.query:
                if wire in query_values:
                    params[name] = _query_value(name, kind, query_values[wire][0])
        if plan.json_body:
            params.update(json_object(body))
        # For the request's log line: whose request, and which job it was about.
        scope["batchrock.account"] = who.caller.account_id
        # Not validated yet: a member of the wrong type is the validator's to refuse.
        job = params.get("jobIdentifier") or params.get("resourceARN")
        if isinstance(job, str) and job:
            scope["batchrock.job"] = job.rsplit("/", 1)[-1]
        result = await self._invoke(who, operation, params)
        if isinstance(result, dict) and "jobArn" in result:
            scope["batchrock.job"] = result["jobArn"].rsplit("/", 1)[-1]
        return 200, result

    def _get_job(
        self,
        scope: Scope,
        receive: Receive,
        path: str,
        label: str,
        authorization: bytes | None,
        has_body: bool,
    ) -> Awaitable[Encoded]:
        """GetModelInvocationJob, the most frequent request (clients poll it), by the steps of
        :meth:`_dispatch` and :meth:`_invoke` in their order, without the route's walk over
        every pattern and the handler's layers: on a real server every piece of Python a
        request runs is paid about twice (docs/benchmarks.md, "Where a Get's CPU goes"). A
        request with nothing to wait for before the store (no body, no rate limit) is
        checked here and the store's answer awaited by the caller: one coroutine less."""
        scope["batchrock.operation"] = "GetModelInvocationJob"
        raw_query: bytes = scope.get("query_string", b"")
        query = raw_query.decode("latin-1") if raw_query else ""
        if has_body or self._limiter is not None:
            return self._get_job_waiting(
                scope, receive, path, label, query, authorization, has_body
            )
        who, identifier, ref = self._get_checked(scope, path, label, query, authorization, b"")
        caller = who.caller
        if ref is not None and ref.owned_by(caller):  # the parse kept: the caller's job
            return self._summaries.get(caller, ref.job_id)
        return self._summaries.get(caller, self._get_owned(identifier, ref, caller))

    async def _get_job_waiting(
        self,
        scope: Scope,
        receive: Receive,
        path: str,
        label: str,
        query: str,
        authorization: bytes | None,
        has_body: bool,
    ) -> Encoded:
        """:meth:`_get_job` for a request with a body to read or a rate limit to keep."""
        # A request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112
        # section 6.3, the guard's Head): nothing to wait for (uvicorn's receive is a
        # coroutine, an event and a message a request). Either header: read, bounded, as
        # every request's body is.
        body = await self._read_body(receive, scope["headers"]) if has_body else b""
        who, identifier, ref = self._get_checked(scope, path, label, query, authorization, body)
        caller = who.caller
        if self._limiter is not None:
            await self._limiter.acheck(caller.account_id)
        return await self._summaries.get(caller, self._get_owned(identifier, ref, caller))

    def _get_checked(
        self,
        scope: Scope,
        path: str,
        label: str,
        query: str,
        authorization: bytes | None,
        body: bytes,
    ) -> tuple[auth.Identity, str, identity.JobRef | None]:
        """A Get's caller, identifier and its kept parse (if any): identified, validated and
        authorized, in :meth:`_invoke`'s order."""
        gate = self.gate
        if gate.directory is None:  # open mode (_identify)
            who = gate.open_identity(authorization, query)
        else:
            who = gate.identify(scope, path, query, body)
        identifier = unquote(label) if "%" in label else label
        scope["batchrock.account"] = who.caller.account_id
        scope["batchrock.job"] = identifier.rsplit("/", 1)[-1] if "/" in identifier else identifier
        # An identifier read before (a client polls with the same one) was valid then and
        # is now: its parse is kept (bounded). A bare job id meets the model's pattern and
        # length for jobIdentifier (tests/api/test_get_path.py holds the model to that).
        # Anything else is validated as every identifier is, before anything else is done.
        ref = self._get_refs.get(identifier)
        if ref is None and not identity.is_job_id(identifier):
            validation.validate(self._get_shape, {"jobIdentifier": identifier})
        if who.principal is not None:  # open mode allows everything (Gate.authorize)
            gate.authorize(who, "GetModelInvocationJob", {"jobIdentifier": identifier})
        return who, identifier, ref

    def _get_owned(self, identifier: str, ref: identity.JobRef | None, caller: Caller) -> str:
        """The job id a checked Get names, when the caller's (the parse kept, bounded)."""
        if ref is None:
            ref = identity.parse_job_identifier(identifier)
            if ref is not None:
                if len(self._get_refs) >= _GET_REFS_KEPT:
                    self._get_refs.clear()
                self._get_refs[identifier] = ref
        return _owned(ref, identifier, caller)

    def _identify(
        self, scope: Scope, path: str, query: str, body: bytes, authorization: bytes | None
    ) -> auth.Identity:
        """Who sent the request; ``authorization``: its first Authorization header, which
        the guard read (open mode needs nothing else of the headers)."""
        if self.gate.directory is None:
            return self.gate.open_identity(authorization, query)
        return self.gate.identify(scope, path, query, body)

    async def invoke(
        self, who: auth.Identity, operation: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Run ``operation`` with its wire parameters as ``who``: validated against the model,
        authorized, rate limited, then handled. The API's path after decoding, and the web
        console's (one set of rules for both)."""
        result = await self._invoke(who, operation, params)
        return result.decoded() if isinstance(result, Encoded) else result

    async def _invoke(self, who: auth.Identity, operation: str, params: dict[str, Any]) -> Body:
        validation.validate(self._plans[operation].shape, params)
        self.gate.authorize(who, operation, params)
        if self._limiter is not None:
            await self._limiter.acheck(who.caller.account_id)
        return await self._handlers[operation](Request(who.caller, params))

    def _route(self, method: str, path: str) -> tuple[str, dict[str, str]]:
        segments = path.strip("/").split("/")
        path_matched = False
        for route_method, pattern, operation in self._routes:
            if len(pattern) != len(segments):
                continue
            labels: dict[str, str] = {}
            for want, got in zip(pattern, segments, strict=True):
                if want.startswith("{"):
                    if not got:
                        break
                    labels[want.strip("{}+")] = unquote(got)
                elif want != got:
                    break
            else:
                path_matched = True
                if route_method == method:
                    return operation, labels
        if path_matched:
            raise MethodNotAllowed()
        raise UnknownOperation()

    async def _read_body(self, receive: Receive, headers: list[tuple[bytes, bytes]]) -> bytes:
        limit = self.settings.max_body_bytes
        declared = None
        for name, value in headers:
            if name.lower() == b"content-length":
                declared = value
                break
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        try:
            return await read_body(receive, limit)
        except BodyTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None

    # --- operations ---------------------------------------------------------------------

    async def _create(self, request: Request) -> dict[str, Any]:
        p = request.params
        s3_in = p["inputDataConfig"]["s3InputDataConfig"]
        s3_out = p["outputDataConfig"]["s3OutputDataConfig"]
        vpc = p.get("vpcConfig")
        new = NewJob(
            name=p["jobName"],
            model_id=p["modelId"],
            role_arn=p["roleArn"],
            client_request_token=p.get("clientRequestToken"),
            input_s3_uri=s3_in["s3Uri"],
            input_format=s3_in.get("s3InputFormat"),
            input_bucket_owner=s3_in.get("s3BucketOwner"),
            output_s3_uri=s3_out["s3Uri"],
            output_kms_key_id=s3_out.get("s3EncryptionKeyId"),
            output_bucket_owner=s3_out.get("s3BucketOwner"),
            vpc_subnet_ids=tuple(vpc["subnetIds"]) if vpc else None,
            vpc_security_group_ids=tuple(vpc["securityGroupIds"]) if vpc else None,
            timeout_hours=p.get("timeoutDurationInHours"),
            invocation_type=p.get("modelInvocationType"),
            tags=[(t["key"], t["value"]) for t in p.get("tags") or ()],
        )
        job, _ = await self.service.create(request.caller, new)
        return {"jobArn": identity.job_arn(job.region, job.account_id, job.job_id)}

    async def _get(self, request: Request) -> Encoded:
        job_id = _owned_job_id(request.params["jobIdentifier"], request.caller)
        return await self._summaries.get(request.caller, job_id)

    async def _stop(self, request: Request) -> dict[str, Any]:
        job_id = _owned_job_id(request.params["jobIdentifier"], request.caller)
        await self.service.stop(request.caller, job_id)
        return {}

    async def _list(self, request: Request) -> Encoded:
        p = request.params
        caller = request.caller
        status = p.get("statusEquals")
        job_filter = JobFilter(
            account_id=caller.account_id,
            region=caller.region,
            status=JobStatus(status) if status else None,
            name_contains=p.get("nameContains"),
            submitted_after=_time_param(p, "submitTimeAfter"),
            submitted_before=_time_param(p, "submitTimeBefore"),
        )
        # Newest first unless asked otherwise (the console's order).
        descending = p.get("sortOrder", "Descending") == "Descending"
        listing = pagination.fingerprint(caller, job_filter, descending)
        after = pagination.decode(p["nextToken"], listing) if "nextToken" in p else None
        limit = p.get("maxResults") or self.settings.default_page_size
        request_page = PageRequest(limit=limit, descending=descending, after=after)
        return await self._summaries.listing(job_filter, request_page, listing)

    async def _tag(self, request: Request) -> dict[str, Any]:
        arn = request.params["resourceARN"]
        job_id = _owned_job_id(arn, request.caller)
        tags = [(t["key"], t["value"]) for t in request.params["tags"]]
        await self.service.tag(request.caller, job_id, tags, arn)
        return {}

    async def _untag(self, request: Request) -> dict[str, Any]:
        job_id = _owned_job_id(request.params["resourceARN"], request.caller)
        await self.service.untag(request.caller, job_id, request.params["tagKeys"])
        return {}

    async def _list_tags(self, request: Request) -> dict[str, Any]:
        job_id = _owned_job_id(request.params["resourceARN"], request.caller)
        tags = await self.service.list_tags(request.caller, job_id)
        return {"tags": [{"key": k, "value": v} for k, v in tags.items()]}


def _path_of(scope: Scope) -> str:
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    return raw_path.split(b"?", 1)[0].decode("latin-1")


def _owned_job_id(identifier: str, caller: Caller) -> str:
    return _owned(identity.parse_job_identifier(identifier), identifier, caller)


def _owned(ref: identity.JobRef | None, identifier: str, caller: Caller) -> str:
    """The job id ``identifier`` (parsed: ``ref``) names, when the caller's; else
    ResourceNotFoundException."""
    if ref is None or not ref.owned_by(caller):
        raise ResourceNotFoundException(f"Could not find model invocation job {identifier}.")
    return ref.job_id


def _time_param(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    return None if value is None else codec.parse_time(value)


def _query_value(name: str, kind: str, raw: str) -> Any:
    if kind in {"integer", "long"}:
        try:
            return int(raw)
        except ValueError:
            raise ValidationException(
                f"1 validation error detected: Value '{raw}' at '{name}' failed to satisfy "
                f"constraint: Member must be an integer"
            ) from None
    if kind == "timestamp":
        try:
            codec.parse_time(raw)
        except codec.TimeOutOfRange:
            raise ValidationException(
                f"1 validation error detected: Value '{raw}' at '{name}' failed to satisfy "
                f"constraint: Member must be a time between 0001-01-01T00:00:00Z and "
                f"9999-12-31T23:59:59Z"
            ) from None
        except ValueError:
            raise ValidationException(
                f"1 validation error detected: Value '{raw}' at '{name}' failed to satisfy "
                f"constraint: Member must be a timestamp in ISO 8601 format "
                f"(for example 2024-08-01T12:34:56Z)"
            ) from None
    return raw


def error_response(exc: ServiceError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """``exc`` as the wire carries it (status, headers, body), for the HTTP layer's own
    answers (a malformed request head, too many connections)."""
    status, body, headers = _error(exc)
    return _finish(status, body, headers, logs.new_request_id())


def _log_request(scope: Scope, status: int, elapsed: float) -> None:
    """One line per request: what was asked (never its headers or body: no signatures or
    keys), by which account, about which job, the answer, and the x-amzn-RequestId."""
    operation = scope["batchrock.operation"]
    if operation == "Health" or not log.isEnabledFor(logging.INFO):
        return
    job = scope.get("batchrock.job")
    account = scope.get("batchrock.account")
    log.info(
        "%s %s -> %d in %.1f ms%s",
        operation,
        f"account {account}" if account else "(no account)",
        status,
        elapsed * 1000,
        f" (job {job})" if job else "",
        extra={
            "action": "api_request",
            "operation": operation,
            "account_id": account,
            "job_id": job,
            "http_status": status,
            "duration_ms": round(elapsed * 1000, 3),
        },
    )


def _finish(
    status: int, body: Body, headers: list[tuple[bytes, bytes]], request_id: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The answer's payload, and ``headers`` (a list of this request's own) completed."""
    payload = body.body if isinstance(body, Encoded) else orjson.dumps(body)
    headers.append((b"x-amzn-requestid", request_id.encode()))
    headers.append((b"content-length", str(len(payload)).encode()))
    return status, headers, payload


def _error(exc: ServiceError) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
    body: dict[str, Any] = {exc.message_member: exc.message}
    if isinstance(exc, TooManyTagsException) and exc.resource_name:
        body["resourceName"] = exc.resource_name
    error_type = f"{exc.code}:http://internal.amazon.com/coral/{exc.namespace}/"
    headers = [
        (b"content-type", b"application/json"),
        (b"x-amzn-errortype", error_type.encode()),
    ]
    return exc.http_status, body, headers
