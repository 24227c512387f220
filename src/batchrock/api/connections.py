"""HTTP connections as ``batchrock serve`` keeps them: bounded in number, size and time.

The protocol is uvicorn's httptools one (llhttp, Node.js's C parser): on h11, a pure-Python
state machine, h11 and its two socket writes a response were half the server's CPU of a
GetModelInvocationJob (docs/benchmarks.md, "API: listings and Get"). uvicorn's protocol closes a
keep-alive connection that stays idle after a response, but a connection that never sends a
byte, or sends half a request head and then trickles (slowloris), or half a body, is kept
forever, there is no limit on how many are open, and llhttp has no limit on a head's size. This
subclass adds, for each connection:

- **idle**: a new connection that sends nothing is closed after ``keepalive_timeout``, as an
  idle one between requests already is;
- **receiving**: once the first byte of a request has arrived, the whole request (head and
  body) must arrive within ``client_timeout``, however slowly it trickles; else the connection
  is closed (a half-received request is never handed on);
- **sending**: a client that leaves a response unread (the write buffer stays full) for
  ``client_timeout`` is cut off;
- **one send a response**: its head and body leave in one write (:class:`CoalescingTransport`);
- **how many**: at most ``max_connections`` open. One more arrives: the connection idle the
  longest (no request in progress: fresh, between requests, or with a half-sent head) is
  closed to make room, so idle sockets cannot lock out real clients. When every connection is
  working on a request, the new one is answered ``429 ThrottlingException`` (SDKs retry it)
  and closed;
- **a head's size**: a request line and headers over ``max_head_bytes`` are refused, whether
  they arrive at once or in pieces (counted here, since llhttp keeps any amount);
- **what h11 refused too**: a version other than HTTP/1.1 and 1.0 (llhttp reads 0.9 and 2.0
  heads), and an HTTP/1.1 request without exactly one ``Host`` header (RFC 9112 section 3.2: a
  server must answer it 400);
- **Upgrade**: never done (HTTP/1.1 only); since llhttp stops reading at such a head, one with a
  body is refused and one without is answered and its connection closed.

A head llhttp cannot read, or refused above, is answered 400 in the API's error shape
(``x-amzn-ErrorType``, a JSON ``message``) and the connection closed. Each such head, and each
Upgrade request, is a warning, but a bounded number of them (:class:`~batchrock.logs.
BoundedWarnings`, setting ``bad_request_log_seconds``): one client sending bad heads in a loop
cannot fill the log, as uvicorn's line for each did. So with the 429s for too many connections:
each is a warning, bounded the same way (its own tally and lines), and each refused client
still gets its 429.

**The request cycle** is the project's own (api/cycle.py), not uvicorn's: uvicorn's (a task,
an ``asyncio.Event``, a scope built key by key, a regex a header name and a value, a
keep-alive timer armed and cancelled a response) was most of the floor's 21 µs a Get warm,
its app 2-3 of them, and it costs the floor and batchrock alike, so no work in the app alone
could bring a Get to 0.8 of the floor's requests/s (docs/benchmarks.md, issue 12's Get: with
this cycle the floor's app costs 15-20 µs on serve's protocol). This protocol therefore replaces
uvicorn's parser callbacks (``on_message_begin`` to ``on_response_complete``) and
``connection_lost``: the scope is copied from a template made when the connection is, the
app is started in ``on_headers_complete`` itself and given a task only if it suspends
(pipelined requests after the first in flight still wait their turn and get a task each, so
they never nest), what its first step writes is sent when the step ends (no loop callback),
and one keep-alive timer lives with the connection, looking at when it became idle when it
fires, instead of one armed and cancelled a response (with uvloop that pair alone was about
5 µs). What reaches the wire is uvicorn's, byte for byte (tests/api/test_cycle.py feeds both
the same requests and apps); uvicorn is bounded below its next release and that test holds
its protocol's source to the one reviewed.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, cast
from urllib.parse import unquote

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from batchrock.api import cycle as cycles
from batchrock.api.app import Receive, Scope, Send, bad_head_message, error_response
from batchrock.errors import ThrottlingException, ValidationException
from batchrock.logs import BoundedWarnings

log = logging.getLogger("batchrock.api")
#: When each connection last became idle, in order (``_idle_since``): the one idle longest is
#: the least. Not ``loop.time()``: uvloop's is the loop iteration's, the same for every
#: connection accepted in one, and ``connections`` is a set, so among those "idle longest"
#: was picked at random (tests/api/test_connections.py's idle test failed 1 run in 3 or so).
_idle_order = itertools.count()


@dataclass(frozen=True, slots=True)
class Limits:
    keepalive_timeout: float
    client_timeout: float
    max_connections: int
    max_head_bytes: int
    #: The window bad heads, and connections refused 429, are logged in
    #: (:class:`~batchrock.logs.BoundedWarnings`).
    bad_request_log_seconds: float = 60.0


def protocol_class(limits: Limits) -> type[GuardedProtocol]:
    """What uvicorn's ``Config(http=...)`` takes: the protocol, bound to ``limits`` (and
    to one tally of bad heads, and one of connections refused, for all its connections)."""
    bad_heads = BoundedWarnings(
        log, "bad request head", "bad request heads", limits.bad_request_log_seconds
    )
    # Apart from the bad heads: a flood of one does not hide the first lines of the other,
    # and each summary says what it counts.
    refusals = BoundedWarnings(
        log,
        "connection refused",
        "connections refused",
        limits.bad_request_log_seconds,
        action="connection_refused",
        summary_action="connections_refused_summary",
    )
    return type(
        "BoundGuardedProtocol",
        (GuardedProtocol,),
        {"limits": limits, "bad_heads": bad_heads, "refusals": refusals},
    )


async def _too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    status, headers, body = error_response(
        ThrottlingException("Too many open connections to the service. Retry later.")
    )
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class CoalescingTransport:
    """The connection's transport, with the writes of one response sent as one.

    uvicorn writes a response's head and its body separately, and each ``write`` on an idle
    socket is a ``send`` system call right away: on loopback under load that was a fifth of
    the server's CPU (py-spy, docs/benchmarks.md "API under load"), half of it for heads.
    Here writes are held until the response is complete (the protocol's
    ``on_response_complete``), the connection closes, or the loop comes round once (a
    streamed answer's chunks never wait longer than that), then sent together: with
    ``writelines``, which uvloop sends as one ``writev`` without copying them into one buffer
    (a page of 1000 jobs is 800 kB; asyncio's loop joins them, as this did before)."""

    __slots__ = ("_loop", "_pending", "_scheduled", "_transport", "holding", "is_closing")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False
        #: Set while an app's first step runs in the protocol's callback (api/cycle.py): what
        #: it writes is flushed when the step ends, without a loop callback scheduled.
        self.holding = False
        # Asked several times a request (by uvicorn and the guards): the transport's own
        # method, not a lookup through ``__getattr__`` each time.
        self.is_closing = transport.is_closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        if not self._scheduled and not self.holding:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if not self.is_closing():
            if len(pending) == 1:
                self._transport.write(pending[0])
            else:
                self._transport.writelines(pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Refused(Exception):
    """Raised in a parser callback: llhttp stops, and the head is answered 400 (our shape)."""


def _why(exc: httptools.HttpParserError) -> str:
    """What was wrong with a head, in words that hold nothing the client sent: llhttp's
    reason (a fixed string), our refusal, or only the type of an error raised in a callback
    (its message might quote the head: parse_url's quotes the URL)."""
    cause = exc.__context__
    if isinstance(exc, httptools.HttpParserCallbackError) and cause is not None:
        if isinstance(cause, _Refused):
            return str(cause)
        return f"a head that could not be read ({type(cause).__name__})"
    return f"unreadable ({exc})"


class GuardedProtocol(HttpToolsProtocol):
    limits: ClassVar[Limits]
    bad_heads: ClassVar[BoundedWarnings]
    refusals: ClassVar[BoundedWarnings]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn annotates its keep-alive as int seconds; call_later takes any float.
        self.timeout_keep_alive = self.limits.keepalive_timeout  # type: ignore[assignment]
        self._receive_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._idle_since = next(_idle_order)
        # From a message's end to the next head's end ``_in_head``, with ``_head_bytes`` of
        # that head received so far (0: none yet). The reads that carry a body are not counted.
        self._in_head = True
        self._head_bytes = 0
        # Inside ``_feed``: data_received sets the receive timer when the read is parsed, so a
        # response completed within it (started at once: api/cycle.py) leaves it alone.
        self._feeding = False
        # When the connection last became idle (loop time; ``None``: busy since), for the one
        # keep-alive timer (:meth:`_became_idle`).
        self._idle_at: float | None = None
        self._scope: dict[str, Any] = {}  # what every request's scope starts from
        self.cycle: cycles.Cycle = None  # type: ignore[assignment]
        #: ``transport``, typed as what it is (set by connection_made).
        self._writes: CoalescingTransport = None  # type: ignore[assignment]

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # The request cycles write through it; uvicorn's flow control keeps the raw transport.
        self._writes = CoalescingTransport(transport, self.loop)
        self.transport = cast(asyncio.Transport, self._writes)
        self._idle_since = next(_idle_order)
        self._scope = {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
        }
        # uvicorn arms its keep-alive timer only after a response: a new connection that never
        # sends a byte is idle too.
        self._became_idle()
        open_now = sum(1 for c in self.connections if not c.transport.is_closing())
        if open_now > self.limits.max_connections:
            self._make_room(open_now)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # answered 400 or 429, or cut off: the rest is not read
        if self._in_head:
            self._head_bytes += len(data)
        self._feed(data)
        if self.transport.is_closing():
            return
        if self._in_head and self._head_bytes > self.limits.max_head_bytes:
            # A head still unfinished past the limit (llhttp would keep taking its pieces).
            # A read that ends one message and starts the next is not counted: one read
            # (at most 256 KiB) more, and the whole head is measured when it ends.
            self._bad_head(f"a request head over {self.limits.max_head_bytes} bytes")
            return
        if not self._in_head or self._head_bytes > 0 or self._receive_timer is not None:
            self._update_receive_timer()  # (usually: the read was a whole request, answered)

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received``, with its warning a bad head bounded, and saying why
        (uvicorn's says "Invalid HTTP request received." to each), and no WebSocket."""
        self._idle_at = None  # busy: the keep-alive timer, when it fires, leaves it be
        self._feeding = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # llhttp stops at a head that asks for another protocol: on_headers_complete
            # refused it (a body) or started it as HTTP/1.1, its connection closed after.
            self._note_bad_head("an Upgrade request (never done: answered as HTTP/1.1, closed)")
        except httptools.HttpParserError as exc:
            self._bad_head(_why(exc))
        finally:
            self._feeding = False

    def connection_lost(self, exc: Exception | None) -> None:
        """uvicorn's, for our cycle (and its keep-alive timer cancelled in every case)."""
        self._cancel_timers()
        self._unset_keepalive_if_required()
        self.connections.discard(self)
        cycle = self.cycle
        if cycle is not None:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.wake()
        if self.flow is not None:
            self.flow.resume_writing()
        if exc is None:
            self.transport.close()
        self.parser = None  # type: ignore[assignment]

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.client_timeout, self._cut_off)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    # --- parser callbacks (an exception here makes the request a 400) ----------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._head_bytes = self._head_bytes or 1  # begun, if within the read that ended the last
        self._idle_at = None  # busy (a request read after a response within the same read)

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's, but Expect: 100-continue is looked for in on_headers_complete's pass.
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        """uvicorn's, with the guards, the scope from the connection's template, and our
        cycle, started at once (api/cycle.py)."""
        self._in_head = False
        headers = self.headers
        size = len(self.url) + 16  # the request line, about
        hosts = 0
        has_body = expect_100_continue = False
        for name, value in headers:
            size += len(name) + len(value) + 4
            if name == b"host":
                hosts += 1
            elif name == b"content-length" or name == b"transfer-encoding":
                has_body = has_body or value != b"0"
            elif name == b"expect" and value.lower() == b"100-continue":
                expect_100_continue = True
        if size > self.limits.max_head_bytes:
            self._refuse(f"a request head of {size} bytes")
        parser = self.parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":  # llhttp reads 0.9 and 2.0 heads too
            self._refuse(f"an HTTP/{version} request")
        if hosts != 1 and version == "1.1":
            self._refuse(f"an HTTP/1.1 request with {hosts} Host headers")
        # No protocol is ever switched to, but llhttp stops reading at the end of a head that
        # asks (Connection: Upgrade): a body would be lost, and what follows left unanswered.
        # One without a body is answered as usual, and the connection then closed.
        upgrade = parser.should_upgrade()
        if upgrade and has_body:
            self._refuse("an Upgrade request with a body")
        if self.transport.is_closing():
            # The request before it in the same read was answered and its connection closed
            # (Connection: close, HTTP/1.0): as uvicorn, nothing after it is answered.
            return
        parsed = httptools.parse_url(self.url)
        raw_path = parsed.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        scope = self._scope.copy()
        scope["method"] = parser.get_method().decode("ascii")
        if version != "1.1":
            scope["http_version"] = version
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed.query or b""
        scope["headers"] = headers
        scope["state"] = self.app_state.copy()
        self.scope = scope  # type: ignore[assignment]
        app = self.app
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency
            or len(self.tasks) >= self.limit_concurrency
        ):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        existing = self.cycle
        self.expect_100_continue = expect_100_continue
        self.cycle = cycles.Cycle(  # keep-alive, a body, Expect: 100-continue
            self,
            scope,
            version != "1.0" and parser.should_keep_alive() and not upgrade,
            has_body,
            expect_100_continue,
        )
        if existing is None or existing.response_complete:
            self._run(self.cycle, app, eager=True)
        else:
            # Pipelined: started when the one before is complete, in order.
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, app))  # type: ignore[arg-type]

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.more_body:
            return
        cycle.more_body = False
        cycle.wake()

    def _run(self, cycle: cycles.Cycle, app: Any, eager: bool) -> None:
        """Start ``app`` on ``cycle``: at once in the parser's callback (``eager``), or, for
        a pipelined request started from the response before it, in a task (started at once
        there, a pipeline of a thousand requests in one read would nest a thousand deep)."""
        context = (
            contextvars.Context() if self.config.reset_contextvars else contextvars.copy_context()
        )
        coro = cycle.run_asgi(app)
        if eager:
            transport = self._writes
            transport.holding = True
            try:
                task = cycles.start(coro, context, self.loop)
            finally:
                transport.holding = False
                transport.flush()  # what the step wrote, if it did not complete a response
            if task is None:
                if not cycle.response_complete:
                    self.transport.close()  # the cycle failed: logged in cycles.start
                return
        else:
            task = self.loop.create_task(coro, context=context)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _refuse(self, what: str) -> None:
        raise _Refused(what)  # logged (bounded) when llhttp hands it back: _feed

    # --- uvicorn hooks ---------------------------------------------------------------------

    def on_response_complete(self) -> None:
        """uvicorn's, with the response's writes sent as one and the guards' state kept."""
        self._writes.flush()
        self._idle_since = next(_idle_order)
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._run(cast(cycles.Cycle, cycle), app, eager=False)
        else:
            self._became_idle()
        if not self._feeding:
            self._update_receive_timer()

    def _became_idle(self) -> None:
        """Close the connection if it stays idle for the keep-alive timeout. uvicorn arms a
        timer after each response and cancels it at the next read: with uvloop that pair
        costs about 5 µs, a quarter of a bare Get. Here one timer is kept while the
        connection lives; when it fires it closes the connection if idle long enough, or is
        armed again for what is left (busy: armed again when idle)."""
        self._idle_at = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def timeout_keep_alive_handler(self) -> None:
        self.timeout_keep_alive_task = None
        idle_at = self._idle_at
        if idle_at is None or self._in_request() or self.transport.is_closing():
            return  # busy: armed again when it is idle
        left = idle_at + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(
                left, self.timeout_keep_alive_handler
            )
        else:
            self.transport.close()

    def _bad_head(self, why: str) -> None:
        """Answer a head llhttp cannot read, or refused, 400; and say so, bounded."""
        if self.transport.is_closing():
            return
        self._note_bad_head(f"{why}; answered 400")
        self.send_400_response(why)

    def _note_bad_head(self, what: str) -> None:
        self.bad_heads.warn(self.loop, self._source(), self._peer(), what)

    def send_400_response(self, msg: str) -> None:
        """A head llhttp cannot read, or refused above, in the API's error shape instead of
        uvicorn's plain text."""
        if self.transport.is_closing():
            return
        status, headers, body = error_response(
            ValidationException(bad_head_message(self.limits.max_head_bytes))
        )
        headers.append((b"connection", b"close"))
        lines = [STATUS_LINE[status], *(name + b": " + value + b"\r\n" for name, value in headers)]
        self.transport.write(b"".join([*lines, b"\r\n", body]))
        self.transport.close()

    # --- state -----------------------------------------------------------------------------

    def _in_request(self) -> bool:
        """A request head has arrived and its response is not complete."""
        return self.cycle is not None and not self.cycle.response_complete

    def _receiving(self) -> bool:
        """Part of a request has arrived, not all of it: a head begun, or a body under way."""
        return not self._in_head or self._head_bytes > 0

    def _update_receive_timer(self) -> None:
        # Twice a request: nothing to do in the usual case (a whole request read at once, or
        # its response sent), found without a call.
        if not self._in_head or self._head_bytes > 0:  # receiving (see _receiving)
            if self._receive_timer is None and not (
                self.transport is None or self.transport.is_closing()
            ):  # counted from the request's first byte
                self._receive_timer = self.loop.call_later(
                    self.limits.client_timeout, self._cut_off
                )
        elif self._receive_timer is not None:
            self._receive_timer.cancel()
            self._receive_timer = None

    def _cut_off(self) -> None:
        self._receive_timer = self._send_timer = None
        if not self.transport.is_closing():
            log.debug(
                "closing a connection from %s: no progress for %.1f s",
                self._peer(),
                self.limits.client_timeout,
            )
            self.transport.abort()

    def _make_room(self, open_now: int) -> None:
        idle = [
            c
            for c in self.connections
            if c is not self
            and isinstance(c, GuardedProtocol)
            and not c._in_request()
            and not c.transport.is_closing()
        ]
        if idle:
            oldest = min(idle, key=lambda c: c._idle_since)
            log.debug(
                "%d connections open (max_connections): closing the one idle longest, from %s",
                open_now,
                oldest._peer(),
            )
            oldest.transport.abort()
            return
        # One line a refusal was one a connection a client opens in a loop: bounded. The
        # reason is the same for each (no count of the moment), so the summary sums them up.
        self.refusals.warn(
            self.loop,
            self._source(),
            self._peer(),
            f"{self.limits.max_connections} connections open (http_max_connections), each with"
            " a request in progress; answered 429",
        )
        self.app = _too_many_connections

    def _source(self) -> str:
        return str(self.client[0]) if self.client else "?"

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "?"

    def _cancel_timers(self) -> None:
        for timer in (self._receive_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._receive_timer = self._send_timer = None
