"""A lean HTTP/1.1 client for one model server, for hundreds of small requests in flight.

A batch job sends thousands of small JSON POSTs to one origin. General clients spend most of a
record's CPU on that: httpx builds a Request and a Response object with header tables per
call, h11 parses in Python, asyncio streams add a reader, a writer and their awaits, and each
request opens an ``asyncio.timeout`` context (issue 12: about 60 % of a record's cost). This
client keeps only what the record path needs:

- one :class:`asyncio.Protocol` per connection, parsing with httptools (llhttp, the C parser
  of Node.js; kept by the uvloop authors, and what uvicorn uses);
- keep-alive connections to the one origin, reused last-in first-out (the warmest socket);
  a connection goes back to the pool from the parser callback that completes its response;
- the request head built once per path from a template: each request is one bytes join and
  one ``transport.write``;
- one timer per request (``loop.call_at``) as its deadline, not a timeout context;
- the response as one small :class:`HttpResponse` (status, raw headers, body).

What it keeps of HTTP: Content-Length, chunked and close-delimited bodies, ``Connection:
close``, HTTPS (an :class:`ssl.SSLContext`), a connect timeout, a response-size bound. A
kept-alive connection the server closed while idle is noticed when it closes (it leaves the
pool) or, in the race where it closes just as a request is written, by the request getting no
byte back: that request is sent again once on a new connection, as browsers and httpx do.

Failures are the typed errors below, so the backend maps them to record errors in one place.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

from batchrock import __version__

#: Largest response body accepted (an embedding of 8,192 floats is ~150 KiB): a bigger one is a
#: :class:`ProtocolError`, so a broken server cannot make a worker buffer without bound.
MAX_BODY = 64 * 1024 * 1024
#: Largest status line plus headers accepted.
MAX_HEAD = 64 * 1024


class HttpError(Exception):
    """The exchange failed: no complete response came."""


class ConnectError(HttpError):
    """Nothing answered at the address: refused, unknown host, TLS handshake failed."""


class ConnectTimeout(ConnectError):
    """The connection was not established within the connect timeout."""


class ReadTimeout(HttpError):
    """The response was not complete within the request timeout."""


class ConnectionDropped(HttpError):
    """The server closed the connection before the response was complete."""


class ProtocolError(HttpError):
    """The server's bytes are not an HTTP/1.1 response, or too large a one."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    reason: str
    #: As received, names lower-cased.
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), or None."""
        key = name.encode("latin-1")
        for got, value in self.headers:
            if got == key:
                return value.decode("latin-1")
        return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class HttpTransport(Protocol):
    """What the OpenAI-compatible backend needs of HTTP: POST a body to a path under its base
    URL, get the whole response. A test double implements these two methods."""

    async def post(self, path: str, body: bytes) -> HttpResponse: ...

    async def aclose(self) -> None: ...


class HttpClient:
    """Keep-alive HTTP/1.1 (or HTTPS) POSTs to paths under one base URL."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 512,
        max_body: int = MAX_BODY,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if url.scheme == "https" else None
        self._base_path = url.path.rstrip("/") + "/"
        lines = [f"Host: {url.netloc.rsplit('@', 1)[-1]}", f"User-Agent: batchrock/{__version__}"]
        for name, value in (headers or {}).items():
            if not _token(name) or any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {name!r} is not a valid HTTP header")
            lines.append(f"{name}: {value}")
        self._lines = "\r\n".join(lines) + "\r\n"
        self._heads: dict[str, bytes] = {}
        self.timeout_s = timeout_s
        self._connect_timeout = connect_timeout_s
        self._max_idle = max_idle
        self.max_body = max_body
        self.idle: list[_Connection] = []
        self.open: set[_Connection] = set()

    async def post(self, path: str, body: bytes) -> HttpResponse:
        head = self._heads.get(path)
        if head is None:
            if any(c in path for c in " \r\n\0?#"):
                raise ValueError(f"not a request path: {path!r}")
            target = self._base_path + path.lstrip("/")
            head = self._heads[path] = (
                f"POST {target} HTTP/1.1\r\n{self._lines}Content-Length: ".encode("latin-1")
            )
        data = b"%b%d\r\n\r\n%b" % (head, len(body), body)
        idle = self.idle
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            try:
                return await self._exchange(connection, data)
            except _Stale:
                continue  # closed by the server just as it was reused: a new connection
        connection = await self._connect()
        try:
            return await self._exchange(connection, data)
        except _Stale as exc:
            raise ConnectionDropped("the server closed the connection without answering") from exc

    @staticmethod
    async def _exchange(connection: _Connection, data: bytes) -> HttpResponse:
        waiter = connection.send(data)
        try:
            return await waiter
        except asyncio.CancelledError:
            connection.abort()  # its response would come to the next request on it
            raise

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        where = f"{self._host}:{self._port}"
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self, loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError as exc:
            raise ConnectTimeout(f"connecting to {where} timed out") from exc
        except OSError as exc:  # refused, unreachable, DNS, ssl.SSLError
            raise ConnectError(f"cannot connect to {where}: {exc}") from exc
        connection = protocol
        self.open.add(connection)
        return connection

    def release(self, connection: _Connection) -> None:
        """A connection whose response is complete and that may be kept alive."""
        if len(self.idle) < self._max_idle:
            self.idle.append(connection)
        else:
            connection.abort()

    async def aclose(self) -> None:
        for connection in list(self.open):
            connection.abort()
        self.open.clear()
        self.idle.clear()


class _Stale(Exception):
    """A reused connection closed before any byte of the response came."""


class _Connection(asyncio.Protocol):
    """One kept-alive connection: one request at a time, its response parsed by httptools."""

    __slots__ = (
        "body",
        "client",
        "closed",
        "has_length",
        "head_size",
        "headers",
        "headers_done",
        "loop",
        "parser",
        "reason",
        "received",
        "reused",
        "size",
        "status",
        "timer",
        "transport",
        "waiter",
    )

    def __init__(self, client: HttpClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[HttpResponse] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.reused = False
        self._reset()

    def _reset(self) -> None:
        self.received = False
        self.headers_done = False
        self.has_length = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.head_size = 0

    # --- requests -----------------------------------------------------------------------

    def send(self, data: bytes) -> asyncio.Future[HttpResponse]:
        assert self.transport is not None and self.waiter is None
        waiter = self.waiter = self.loop.create_future()
        self.transport.write(data)
        self.timer = self.loop.call_at(self.loop.time() + self.client.timeout_s, self._timed_out)
        return waiter

    def _timed_out(self) -> None:
        self.timer = None
        self._fail(ReadTimeout(f"no complete answer within {self.client.timeout_s:g} s"))
        self.abort()

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def abort(self) -> None:
        self.closed = True
        self.client.open.discard(self)
        if self.transport is not None:
            self.transport.abort()

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            self.abort()  # bytes nobody asked for: the connection's state is unknown
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            self._fail(exc.__context__ if isinstance(exc.__context__, HttpError) else exc)
            self.abort()
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"the server's answer is not HTTP/1.1: {exc}"))
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client.open.discard(self)
        if self.waiter is None:
            return
        if self.headers_done and not self.has_length:
            self.on_message_complete()  # a body delimited by the connection's end
        elif not self.received and self.reused:
            self._fail(_Stale())
        else:
            what = "mid-response" if self.received else "without answering"
            self._fail(ConnectionDropped(f"the server closed the connection {what}"))

    # --- httptools callbacks ------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason
        self._count_head(len(reason))

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self.has_length = True
            if value.strip().isdigit() and int(value) > self.client.max_body:
                raise ProtocolError(f"the answer is larger than {self.client.max_body} bytes")
        elif name == b"transfer-encoding":
            self.has_length = True
        self.headers.append((name, value))
        self._count_head(len(name) + len(value))

    def _count_head(self, size: int) -> None:
        self.head_size += size
        if self.head_size > MAX_HEAD:
            raise ProtocolError(f"the answer's headers are larger than {MAX_HEAD} bytes")

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.client.max_body:
            raise ProtocolError(f"the answer is larger than {self.client.max_body} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is None:  # a second answer to one request: the connection is out of step
            self.abort()
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        response = HttpResponse(
            self.status,
            self.reason.decode("latin-1"),
            tuple(self.headers),
            self.body[0] if len(self.body) == 1 else b"".join(self.body),
        )
        keep = not self.closed and self.has_length and self.parser.should_keep_alive()
        self._reset()
        if not waiter.done():
            waiter.set_result(response)
        if keep:
            self.reused = True
            self.client.release(self)
        else:
            self.abort()


def _token(name: str) -> bool:
    return bool(name) and all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in name)
