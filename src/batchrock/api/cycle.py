"""One request's ASGI cycle on a ``batchrock serve`` connection (api/connections.py).

uvicorn's ``RequestResponseCycle`` with the same messages, checks and bytes, at less cost a
request: uvicorn's cycle was most of the floor's 21 µs a Get warm (a bare app on plain
uvicorn; its app is 2-3 µs), and batchrock paid it too (docs/benchmarks.md, "A request cycle
of the project's own"). What differs:

- no ``asyncio.Event`` a request: ``receive`` waits on a future only when nothing has
  arrived for it, and a request without a body (no ``Content-Length``, no
  ``Transfer-Encoding``: RFC 9112 section 6.3) is whole from its head on;
- the response head's header names are checked (uvicorn's ``HEADER_RE``) once for each
  name ever seen (a bounded table: an app sends the same few), and its values with one
  search over them all (``HEADER_VALUE_RE`` matches single bytes, so joining them changes
  nothing), the server's default headers (``date``, ``server``) once a second, when uvicorn
  changes them;
- the coroutine is started in the protocol's callback (:func:`start`), in a context of its
  own as a task's, and a task is made only if it suspends: most Gets and listings never do
  (the SQLite store answers without awaiting).

What the app sees is the same, except that on Python 3.11 until its first suspension it runs
outside any task (3.12 and later start a real task eagerly, :func:`start`):
``asyncio.current_task()`` is ``None`` there, and ``asyncio.timeout`` (which needs a task)
raises. The one API request path that uses ``asyncio.timeout``, the shared rate limiter's
wait for another process's lock (api/throttle.py), first hands itself to a task with ``await
asyncio.sleep(0)``, as code that must have a task can; 3.11's ``asyncio.wait_for`` needs none.
The one that asks for the current task is the PostgreSQL store's ``_checked_out``, which
keeps a cancellation psycopg_pool would drop: on 3.11 a request has no task when it first
waits for the pool, so that check is skipped for it, and a request is cancelled only at
shutdown, where its finishing is as good.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import logging
import sys
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

if TYPE_CHECKING:
    from batchrock.api.connections import GuardedProtocol

log = logging.getLogger("uvicorn.error")  # uvicorn's, as its cycle logs an app's errors

#: Header names checked and lowered: the few an app sends, bounded so that an app echoing
#: names it was sent cannot grow it.
_NAMES: dict[bytes, bytes] = {}
_MAX_NAMES = 512
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))

#: The server's default headers (uvicorn replaces the list when its date changes) as bytes,
#: for the list last seen; ``None`` for a list that holds a framing header (looped over then).
_defaults: tuple[list[tuple[bytes, bytes]] | None, bytes | None] = (None, None)


def _default_bytes(defaults: list[tuple[bytes, bytes]]) -> bytes | None:
    global _defaults
    seen, encoded = _defaults
    if seen is defaults:
        return encoded
    encoded = None
    if not any(name.lower() in _FRAMING for name, _ in defaults):
        for name, value in defaults:
            if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
                break
        else:
            encoded = b"".join(name.lower() + b": " + value + b"\r\n" for name, value in defaults)
    _defaults = (defaults, encoded)
    return encoded


class Cycle:
    """One request and its response, as uvicorn's ``RequestResponseCycle``."""

    __slots__ = (
        "_ready",
        "_waiters",
        "body",
        "chunked_encoding",
        "disconnected",
        "expected_content_length",
        "keep_alive",
        "more_body",
        "on_response",
        "protocol",
        "response_complete",
        "response_started",
        "scope",
        "waiting_for_100_continue",
    )

    def __init__(
        self,
        protocol: GuardedProtocol,
        scope: dict[str, Any],
        keep_alive: bool,
        has_body: bool,
        expect_100_continue: bool,
    ) -> None:
        self.protocol = protocol
        self.scope = scope
        self.on_response: Callable[[], None] = protocol.on_response_complete
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.body = bytearray()
        # A request without a body is whole: its one message can be received at once.
        self.more_body = has_body
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding: bool | None = None
        self.expected_content_length = 0
        self._ready = not has_body  # something new for receive (uvicorn's message_event set)
        self._waiters: list[asyncio.Future[None]] = []

    def wake(self) -> None:
        """Something happened that ``receive`` reports: a body's piece or end, the response's
        end, a disconnect."""
        self._ready = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def run_asgi(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            log.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self.protocol.transport.close()
        else:
            if result is not None:
                log.error("ASGI callable should return None, but returned '%s'.", result)
                self.protocol.transport.close()
            elif not self.response_started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self.send_500_response()
            elif not self.response_complete and not self.disconnected:
                log.error("ASGI callable returned without completing response.")
                self.protocol.transport.close()
        finally:
            self.on_response = _nothing

    async def send_500_response(self) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"21"),
                    (b"connection", b"close"),
                ],
            }
        )
        await self.send(
            {"type": "http.response.body", "body": b"Internal Server Error", "more_body": False}
        )

    async def send(self, message: Any) -> None:
        flow = self.protocol.flow
        if flow.write_paused and not self.disconnected:
            await flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
                )
            self._start(message)
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
                )
            self._body(message)
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent, after response already"
                " completed."
            )

    def _start(self, message: Any) -> None:
        self.response_started = True
        self.waiting_for_100_continue = False
        protocol = self.protocol
        status = message["status"]
        if protocol.access_log:
            scope = self.scope
            protocol.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),  # type: ignore[arg-type]
                scope["method"],
                get_path_with_query_string(scope),  # type: ignore[arg-type]
                scope["http_version"],
                status,
            )
        content = [STATUS_LINE[status]]
        defaults = protocol.server_state.default_headers
        seen, encoded = _defaults
        if seen is not defaults:
            encoded = _default_bytes(defaults)
        headers = message.get("headers", ())
        if encoded is None:
            headers = [*defaults, *headers]
        else:
            content.append(encoded)
        values = []
        has_connection_close = False
        names = _NAMES
        for name, value in headers:
            lowered = names.get(name)
            if lowered is None:
                if HEADER_RE.search(name):
                    raise RuntimeError("Invalid HTTP header name.")
                lowered = name.lower()
                if len(names) < _MAX_NAMES:
                    names[bytes(name)] = lowered
            values.append(value)
            if lowered in _FRAMING:
                if lowered == b"content-length":
                    if self.chunked_encoding is None:
                        self.expected_content_length = int(value.decode())
                        self.chunked_encoding = False
                elif lowered == b"transfer-encoding":
                    if value.lower() == b"chunked":
                        self.expected_content_length = 0
                        self.chunked_encoding = True
                elif b"close" in [token.lower().strip() for token in value.split(b",")]:
                    self.keep_alive = False
                    has_connection_close = True
            content += (lowered, b": ", value, b"\r\n")
        if HEADER_VALUE_RE.search(b"".join(values)):
            raise RuntimeError("Invalid HTTP header value.")
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status not in (204, 304)
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        protocol.transport.write(b"".join(content))

    def _body(self, message: Any) -> None:
        transport = self.protocol.transport
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
        elif self.chunked_encoding:
            content = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
            if not more_body:
                content.append(b"0\r\n\r\n")
            transport.write(b"".join(content))
        else:
            size = len(body)
            if size > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= size
            transport.write(body)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.wake()
            if not self.keep_alive:
                transport.close()
            self.on_response()

    async def receive(self) -> dict[str, Any]:
        transport = self.protocol.transport
        if self.waiting_for_100_continue and not transport.is_closing():
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.protocol.flow.resume_reading()
            if not self._ready:
                waiter = self.protocol.loop.create_future()
                self._waiters.append(waiter)  # one each, as an Event's: a cancelled one alone
                try:
                    await waiter
                finally:
                    self._waiters.remove(waiter)
            self._ready = False
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
        self.body = bytearray()
        return message


def _nothing() -> None:
    pass


class _Rest(collections.abc.Coroutine[Any, Any, None]):
    """A coroutine that suspended in its first step (run by :func:`start`), for a task to
    drive on: the task's first step gets what it waits on, as if the task had run that step
    itself; everything after goes to the coroutine."""

    __slots__ = ("_coro", "_first", "_waited")

    def __init__(self, coro: collections.abc.Coroutine[Any, Any, None], waited: Any) -> None:
        self._coro = coro
        self._waited = waited
        self._first = True

    def send(self, value: Any) -> Any:
        if self._first:
            self._first = False
            return self._waited
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:  # a cancellation, even before the first step
        self._first = False
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, None]:  # not awaited: run by a task
        raise TypeError("run by a task only")


#: asyncio's own eager task start (Python 3.12+); 3.11 runs the first step outside a task.
_EAGER_TASKS = sys.version_info >= (3, 12)


def start(
    coro: collections.abc.Coroutine[Any, Any, None],
    context: contextvars.Context,
    loop: asyncio.AbstractEventLoop,
) -> asyncio.Task[None] | None:
    """Run ``coro`` (a cycle's ``run_asgi``) now, in ``context``, up to its first
    suspension; then, if it has not finished, hand it to a task in the same context. The
    task, or ``None`` when it finished.

    A task costs its creation, a step scheduled on the loop, a done callback and a loop
    iteration before the app even starts; a Get that never suspends needs none of it.
    ``run_asgi`` catches what the app raises; what it raises itself (an app's error the 500
    could not be sent for) is logged, as the loop logs a task's.

    From Python 3.12 asyncio starts a task eagerly itself (``eager_start``): the app's first
    step then runs inside its task, so ``asyncio.current_task()`` and ``asyncio.timeout``
    work there too (and 3.12's ``asyncio.wait_for``, which is built on ``timeout``, as the
    object stores' reads use it). A task is made for every request then, but still no loop
    iteration for one that never suspends."""
    if _EAGER_TASKS:
        task: asyncio.Task[None] = asyncio.Task(  # type: ignore[call-arg]  # 3.12+
            coro, loop=loop, context=context, eager_start=True
        )
        if not task.done():
            return task
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("Exception in ASGI cycle", exc_info=error)
        return None
    try:
        waited = context.run(coro.send, None)
    except StopIteration:
        return None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        log.exception("Exception in ASGI cycle")
        return None
    return loop.create_task(_Rest(coro, waited), context=context)
