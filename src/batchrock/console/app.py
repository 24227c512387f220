"""The web console at ``/console`` (docs/console.md): pages, and the JSON they fetch.

Job operations go through the API's own :meth:`BedrockApp.invoke` with Bedrock's wire
parameters (validation, permissions, rate limit, the service's rules: one set for both); the
console adds only what the API has no operation for (a job's history, files and error
records, a prefix browser), read through the service and the object store seam.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from batchrock.access.credfile import LiveDirectory
from batchrock.access.signin_limit import SharedSignInLimiter, SignInLimiter, limit_keys
from batchrock.api import codec, guard, identity
from batchrock.api.auth import Gate, Identity
from batchrock.api.body import ClientDisconnected
from batchrock.catalogue import load_catalogue
from batchrock.console import outputs, web
from batchrock.console.progress import RecentRates, progress, with_recent_rate
from batchrock.console.sessions import COOKIE, Session, Sessions, SignInRefused
from batchrock.errors import (
    AccessDeniedException,
    ResourceNotFoundException,
    ServiceError,
    ThrottlingException,
    ValidationException,
)
from batchrock.jobs import JobStatus
from batchrock.logs import BoundedWarnings
from batchrock.objects import (
    LocalObjectStore,
    ObjectStore,
    ObjectStoreError,
    build_object_store,
    parse_s3_uri,
)
from batchrock.service import JobService
from batchrock.settings import Settings
from batchrock.shared_state import SharedState, SharedStateBusy
from batchrock.store.base import StoreBusy

log = logging.getLogger("batchrock.console")

PREFIX = "/console"
Invoke = Callable[[Identity, str, dict[str, Any]], Awaitable[dict[str, Any]]]
_STATIC = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_JOB_ID = re.compile(r"[a-z0-9]{12}")
#: What "view" shows of an output file; "download" sends it whole.
VIEW_LIMIT_BYTES = 1024 * 1024
_LIST_STRINGS = ("statusEquals", "nameContains", "sortOrder", "sortBy", "nextToken")
_LIST_TIMES = ("submitTimeAfter", "submitTimeBefore")


def owns(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class NotSignedIn(ServiceError):
    """Sign in to use the console."""

    code = "NotSignedIn"
    http_status = 401


class TooManySignIns(ServiceError):
    """Too many failed sign-ins: wait and try again."""

    code = "TooManySignInAttempts"
    http_status = 429


class Console:
    """The ASGI handler of every ``/console`` path (``BedrockApp`` hands them over after its
    request guard: Host, Origin, Sec-Fetch-Site and browser-form bodies are checked first)."""

    def __init__(
        self,
        service: JobService,
        settings: Settings,
        gate: Gate,
        invoke: Invoke,
        shared: SharedState | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.directory: LiveDirectory | None = gate.directory
        # In the job store: a session is valid on every API process sharing it.
        self.sessions = Sessions(
            settings, gate.directory, service.store.sessions, service.clock.now
        )
        # Several API processes (``shared``): a browser's sign-ins may reach any of them.
        monotonic = service.clock.monotonic
        self.sign_in_limit: SignInLimiter = (
            SignInLimiter(monotonic) if shared is None else SharedSignInLimiter(monotonic, shared)
        )
        # Refused sign-ins are logged a bounded number of times (3 an address and 10 in all a
        # window, then one summary line): else many addresses, or one past its limit, could
        # write a line per request. Each kind has its own tally.
        window = settings.bad_request_log_seconds
        self.refused_log = BoundedWarnings(
            log,
            "console sign-in refused",
            "console sign-ins refused",
            window,
            action="console_sign_in_refused",
            summary_action="console_sign_ins_refused_summary",
            level=logging.INFO,
        )
        self.throttled_log = BoundedWarnings(
            log,
            "console sign-in",
            "console sign-ins throttled",
            window,
            action="console_sign_in_throttled",
            summary_action="console_sign_ins_throttled_summary",
        )
        self.rates = RecentRates(service.clock.monotonic)
        self._invoke = invoke
        self._objects: ObjectStore | None = None
        self._loopback = guard.is_loopback(settings.host)

    @property
    def objects(self) -> ObjectStore:
        if self._objects is None:  # built on first use: most API processes never need it
            self._objects = build_object_store(self.settings)
        return self._objects

    async def __call__(self, scope: web.Scope, receive: web.Receive, send: web.Send) -> int:
        """Answer one request; return its HTTP status (for the API's request metrics)."""
        status = 0

        async def sending(message: web.Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._route(scope, receive, sending)
        except ClientDisconnected:
            return 499  # nginx's "client closed request": nothing was answered
        except ServiceError as exc:
            if status:
                # A streamed file failed midway (removed, replaced): the answer has begun, so
                # it ends unfinished and the connection closes; the download shows it failed.
                log.warning("console answer cut short: %s", exc)
                return status
            await web.send_error(sending, exc)
        except (StoreBusy, SharedStateBusy) as exc:
            # Another process holds the database (or the API processes' shared file) for
            # longer than the store waits: nothing was done, and the page's retry may succeed.
            log.warning("console: store busy: %s", exc)
            if status:
                return status
            await web.send_error(
                sending, ThrottlingException("The service is busy. Resubmit your request later.")
            )
        except Exception:
            log.exception("console request failed")
            if status:
                return status
            await web.send_json(
                sending, 500, {"code": "InternalServerException", "message": "Internal error."}
            )
        return status

    async def _route(self, scope: web.Scope, receive: web.Receive, send: web.Send) -> None:
        method: str = scope["method"]
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        path = raw.split(b"?", 1)[0].decode("latin-1")
        query = {
            k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()
        }
        parts = path[len(PREFIX) :].strip("/").split("/") if path != PREFIX else [""]
        if method == "GET" and parts in ([""], ["index.html"]):
            return await self._page(send)
        if method == "GET" and len(parts) == 2 and parts[0] == "static":
            return await self._static(send, parts[1])
        if parts[0] == "files" and method == "GET" and len(parts) >= 3:
            who = await self._who(scope)
            # Each segment as the page encoded it; only a name the job's listing has is served.
            name = "/".join(unquote(p) for p in parts[2:])
            return await self._file(send, who, parts[1], name, query.get("download") == "1")
        if parts[0] != "api":
            raise ResourceNotFoundException("No such console page.")
        api = parts[1:]
        if api == ["session"]:
            if method == "GET":
                return await self._session_info(scope, send)
            if method == "POST":
                return await self._sign_in(scope, receive, send)
        if api == ["session", "end"] and method == "POST":
            await self._check_post(scope, signed_in=False)
            await self.sessions.sign_out(web.cookie(scope, COOKIE))
            secure = scope.get("scheme") == "https"
            return await web.send_json(send, 200, {}, [self.sessions.cookie_header(None, secure)])
        if method == "POST":
            session = await self._check_post(scope, signed_in=True)
            assert session is not None
            who = await self._identity(session)
            body = await web.read_json(receive)
            if api == ["session", "scope"]:
                region, account = body.get("region"), body.get("account")
                if not isinstance(region, str) or not isinstance(account, str | None):
                    raise ValidationException("Send a region (and, in open mode, an account).")
                try:
                    await self.sessions.switch(session, region.strip(), account and account.strip())
                except ValueError as exc:
                    raise ValidationException(str(exc)) from None
                return await web.send_json(send, 200, self._session_json(session))
            if api == ["jobs"]:
                result = await self._invoke(who, "CreateModelInvocationJob", body)
                return await web.send_json(send, 200, result)
            if len(api) == 3 and api[0] == "jobs" and api[2] == "stop":
                arn = self._arn(who, api[1])
                await self._invoke(who, "StopModelInvocationJob", {"jobIdentifier": arn})
                return await web.send_json(send, 200, {})
        elif method == "GET":
            who = await self._who(scope)
            if api == ["jobs"]:
                return await web.send_json(send, 200, await self._list(who, query))
            if api == ["models"]:
                return await web.send_json(send, 200, self._models(who))
            if api == ["browse"]:
                return await web.send_json(send, 200, await self._browse(who, query))
            if len(api) == 2 and api[0] == "jobs":
                return await web.send_json(send, 200, await self._detail(who, api[1]))
            if len(api) == 3 and api[0] == "jobs" and api[2] == "errors":
                return await web.send_json(
                    send, 200, await self._errors(who, api[1], query.get("cursor"))
                )
        raise ResourceNotFoundException("No such console request.")

    # --- sessions -------------------------------------------------------------------------

    async def _who(self, scope: web.Scope) -> Identity:
        session = await self.sessions.session(web.cookie(scope, COOKIE))
        if session is None:
            raise NotSignedIn("Sign in to use the console.")
        return await self._identity(session)

    async def _identity(self, session: Session) -> Identity:
        who = await self.sessions.identity(session)
        if who is None:
            raise NotSignedIn("Your key is no longer valid: sign in again.")
        return who

    async def _check_post(self, scope: web.Scope, *, signed_in: bool) -> Session | None:
        """State changes come from the console's own scripts: a JSON body (the request guard
        already refused the bodies a cross-site form sends) and, once signed in, the
        session's CSRF token in ``X-Batchrock-Csrf``."""
        content_type = (web.header(scope, b"content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise AccessDeniedException("Console requests send application/json.")
        session = await self.sessions.session(web.cookie(scope, COOKIE))
        if not signed_in:
            return session
        if session is None:
            raise NotSignedIn("Sign in to use the console.")
        if not session.csrf_ok(web.header(scope, b"x-batchrock-csrf")):
            raise AccessDeniedException("The request lacks this session's CSRF token.")
        return session

    async def _session_info(self, scope: web.Scope, send: web.Send) -> None:
        session = await self.sessions.session(web.cookie(scope, COOKIE))
        if session is not None and await self.sessions.identity(session) is None:
            session = None
        extra: list[tuple[bytes, bytes]] = []
        if session is None and self.sessions.open_mode:
            session = await self.sessions.open_session()
            extra.append(self.sessions.cookie_header(session, scope.get("scheme") == "https"))
        await web.send_json(send, 200, self._session_json(session), extra)

    def _session_json(self, session: Session | None) -> dict[str, Any]:
        mode = "open" if self.sessions.open_mode else "credentials"
        if session is None:
            return {"mode": mode, "signedIn": False}
        return {
            "mode": mode,
            "signedIn": True,
            "account": session.account_id,
            "region": session.region,
            "csrf": session.csrf,
        }

    async def _sign_in(self, scope: web.Scope, receive: web.Receive, send: web.Send) -> None:
        await self._check_post(scope, signed_in=False)
        secure = scope.get("scheme") == "https"
        if not secure and not self._loopback:
            raise AccessDeniedException(
                "Signing in sends a secret: serve with --tls-cert and --tls-key, or on loopback."
            )
        body = await web.read_json(receive)

        def text(name: str) -> str | None:
            value = body.get(name)
            return value.strip() if isinstance(value, str) and len(value) <= 4096 else None

        key_id, api_key = text("accessKeyId"), text("apiKey")
        client = scope.get("client")
        source = str(client[0]) if client else "unknown"
        # Open mode signs nobody in with a secret: nothing to guess, nothing to limit.
        keys = [] if self.sessions.open_mode else limit_keys(source, key_id, api_key)
        wait = self.sign_in_limit.retry_after(keys)
        if wait is not None:
            self.throttled_log.warn(
                asyncio.get_running_loop(),
                source,
                source,
                "refused: too many failed attempts; answered 429",
            )
            raise TooManySignIns(f"Too many failed sign-ins: try again in {int(wait) + 1} seconds.")
        try:
            session = await self.sessions.sign_in(key_id, text("secretAccessKey"), api_key)
        except SignInRefused:
            self.sign_in_limit.failed(keys)
            # A known access key id is no secret; the secret and an API key are never logged,
            # and neither is an id no account holds (it may be a secret pasted into the
            # wrong field), as on the API (docs/access.md, "Wrong signatures").
            if api_key:
                shown = "an API key"
            elif key_id and self.directory and self.directory.current().access_key(key_id):
                shown = key_id[:32]
            else:
                shown = "an unknown access key id"
            self.refused_log.warn(
                asyncio.get_running_loop(), source, source, f"{shown}; answered 401"
            )
            raise NotSignedIn("The key or secret is not right.") from None
        await self.sessions.sign_out(web.cookie(scope, COOKIE))
        await web.send_json(
            send, 200, self._session_json(session), [self.sessions.cookie_header(session, secure)]
        )

    # --- jobs -----------------------------------------------------------------------------

    def _arn(self, who: Identity, job_id: str) -> str:
        if not _JOB_ID.fullmatch(job_id):
            raise ResourceNotFoundException(f"Could not find model invocation job {job_id}.")
        return identity.job_arn(who.caller.region, who.caller.account_id, job_id)

    async def _list(self, who: Identity, query: dict[str, str]) -> dict[str, Any]:
        params: dict[str, Any] = {k: query[k] for k in _LIST_STRINGS if query.get(k)}
        for name in _LIST_TIMES:
            if query.get(name):
                try:
                    codec.parse_time(query[name])
                except ValueError:
                    raise ValidationException(f"{name} is not a time: {query[name]!r}") from None
                params[name] = query[name]
        if query.get("maxResults"):
            if not query["maxResults"].isdigit():
                raise ValidationException("maxResults must be a number.")
            params["maxResults"] = int(query["maxResults"])
        return await self._invoke(who, "ListModelInvocationJobs", params)

    async def _detail(self, who: Identity, job_id: str) -> dict[str, Any]:
        arn = self._arn(who, job_id)
        wire = await self._invoke(who, "GetModelInvocationJob", {"jobIdentifier": arn})
        job = await self.service.get(who.caller, job_id)
        events = await self.service.events(who.caller, job_id)
        try:
            tags = (await self._invoke(who, "ListTagsForResource", {"resourceARN": arn}))["tags"]
        except AccessDeniedException:
            tags = None  # the key may read the job but not its tags
        p = progress(job, events, self.service.clock.now())
        rate_key = f"{job.account_id}/{job.region}/{job.job_id}"
        if job.status is JobStatus.IN_PROGRESS:
            p = with_recent_rate(p, job, self.rates.sample(rate_key, job.counters.processed))
        else:
            self.rates.forget(rate_key)
        files = await outputs.output_files(self.objects, job)
        return {
            "job": wire,
            "tags": tags,
            "events": [
                {
                    "from": e.from_status.value if e.from_status else None,
                    "to": e.to_status.value,
                    "at": codec.format_time(e.at),
                    "message": e.message,
                }
                for e in events
            ],
            "progress": {
                "fraction": p.fraction,
                "recordsPerSecond": p.records_per_second,
                "secondsLeft": p.seconds_left,
            },
            "files": [
                {
                    "name": f.key,
                    "size": f.size,
                    "modified": codec.format_time(f.modified) if f.modified else None,
                }
                for f in files
            ],
            "manifest": await outputs.manifest(self.objects, job),
        }

    async def _errors(self, who: Identity, job_id: str, cursor: str | None) -> dict[str, Any]:
        arn = self._arn(who, job_id)
        await self._invoke(who, "GetModelInvocationJob", {"jobIdentifier": arn})
        job = await self.service.get(who.caller, job_id)
        try:
            page = await outputs.error_records(self.objects, job, cursor)
        except ValueError:
            raise ValidationException("Not a page of this job's error records.") from None
        return {"records": [r.to_json() for r in page.records], "next": page.next}

    async def _file(
        self, send: web.Send, who: Identity, job_id: str, name: str, download: bool
    ) -> None:
        arn = self._arn(who, job_id)
        await self._invoke(who, "GetModelInvocationJob", {"jobIdentifier": arn})
        job = await self.service.get(who.caller, job_id)
        info = await outputs.find_output(self.objects, job, name)
        if info is None:
            raise ResourceNotFoundException(f"The job has no output file {name[:200]!r}.")
        folder = outputs.output_folder(job)
        if name == outputs.MANIFEST_NAME:
            content_type = "application/json; charset=utf-8"
        elif download:
            content_type = (
                "application/x-ndjson" if name.endswith(".out") else "application/octet-stream"
            )
        else:
            content_type = "text/plain; charset=utf-8"
        base = name.rsplit("/", 1)[-1]
        ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", base) or "output"
        disposition = (
            f'{"attachment" if download else "inline"}; filename="{ascii_name}"; '
            f"filename*=UTF-8''{quote(base, safe='')}"
        )
        # No content-length: the file of a running job may still change; it is streamed.
        limit = None if download else VIEW_LIMIT_BYTES
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-disposition", disposition.encode()),
            (b"cache-control", b"no-store"),
            *web.security_headers(web.FILE_CSP),
        ]
        if limit is not None and info.size > limit:
            headers.append((b"x-batchrock-truncated", str(info.size).encode()))
        chunks = self.objects.read(folder.bucket, folder.child(name).key)
        try:
            await web.send_stream(send, headers, chunks, limit)
        except ObjectStoreError as exc:  # gone between the listing and the read
            raise ResourceNotFoundException(f"The output file {name[:200]!r}: {exc}") from None

    # --- the create form's helpers ----------------------------------------------------------

    def _models(self, who: Identity) -> dict[str, Any]:
        region = who.caller.region
        catalogue = load_catalogue()
        models = [
            {"id": m.id, "name": m.name}
            for m in sorted(catalogue.models.values(), key=lambda m: m.id)
            if self.service.catalogue.supports(m.id, region, who.caller.account_id)
        ]
        return {"models": models, "region": region}

    async def _browse(self, who: Identity, query: dict[str, str]) -> dict[str, Any]:
        if who.principal is not None and not who.principal.may("bedrock:CreateModelInvocationJob"):
            raise AccessDeniedException("This key may not create jobs.")
        uri = query.get("uri", "").strip()
        if not uri or uri == "s3://":
            return {"buckets": await self._buckets(who)}
        try:
            location = parse_s3_uri(uri)
        except ObjectStoreError as exc:
            raise ValidationException(str(exc)) from None
        if not self._may_use(who, location.bucket):
            raise AccessDeniedException(f"Your account may not use the bucket {location.bucket!r}.")
        prefix = location.key
        if prefix and not prefix.endswith("/"):
            prefix = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        try:
            listing = await outputs.browse(self.objects, location.bucket, prefix)
        except ObjectStoreError as exc:
            raise ValidationException(str(exc)) from None
        return {
            "bucket": listing.bucket,
            "prefix": listing.prefix,
            "folders": listing.folders,
            "files": [{"key": f.key, "size": f.size} for f in listing.files],
            "truncated": listing.truncated,
        }

    def _may_use(self, who: Identity, bucket: str) -> bool:
        if self.directory is None:
            return True
        return self.directory.current().may_access(who.caller.account_id, bucket)

    async def _buckets(self, who: Identity) -> list[str]:
        objects = self.objects
        if not isinstance(objects, LocalObjectStore):
            return []  # an S3 service's buckets are typed in

        def scan() -> list[str]:
            try:
                return sorted(
                    p.name
                    for p in objects.root.iterdir()
                    if p.is_dir() and not p.name.startswith(".")
                )
            except OSError as exc:
                log.debug("no local buckets to list: %s", exc)
                return []

        names = await asyncio.to_thread(scan)
        return [n for n in names if self._may_use(who, n)][: outputs.BROWSE_LIMIT]

    # --- assets -----------------------------------------------------------------------------

    async def _page(self, send: web.Send) -> None:
        body = _asset("index.html")
        await web.send_bytes(
            send, 200, body, "text/html; charset=utf-8", [(b"cache-control", b"no-cache")]
        )

    async def _static(self, send: web.Send, name: str) -> None:
        content_type = _STATIC.get(name)
        if content_type is None:
            raise ResourceNotFoundException("No such console file.")
        await web.send_bytes(
            send, 200, _asset(name), content_type, [(b"cache-control", b"no-cache")]
        )


@functools.cache
def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()
