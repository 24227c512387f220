"""The request cycle of ``batchrock serve``'s protocol (api/cycle.py) against uvicorn's own.

In-process: both protocols fed the same bytes on one event loop, writing to a transport that
keeps them. The cycle must answer byte for byte as uvicorn's does (framing, HEAD, HTTP/1.0,
chunked bodies both ways, 100-continue, pipelining, an app's errors), while it starts the app
in the parser's callback and makes a task only when the app suspends.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import inspect
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http import flow_control, httptools_impl
from uvicorn.server import ServerState

from batchrock.admin import http_config
from batchrock.settings import Settings

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
HOST = b"Host: 127.0.0.1\r\n"
DEFAULTS = [(b"date", b"Wed, 02 Dec 2026 02:00:00 GMT"), (b"server", b"uvicorn")]


class Kept(asyncio.Transport):
    """A connection's transport that keeps what is written (each ``write`` one entry)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self.writes.append(b"".join(chunks))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        extra = {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8765)}
        return extra.get(name, default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0


def protocol(app: App, guarded: bool, tmp_path: Path) -> Any:
    if guarded:
        config = http_config(Settings(data_dir=tmp_path), app, lifespan="off")
    else:
        config = uvicorn.Config(app, http="httptools", ws="none", lifespan="off")
    config.load()
    state = ServerState()
    state.default_headers = list(DEFAULTS)
    made = config.http_protocol_class(config=config, server_state=state, app_state={})
    made.connection_made(Kept())
    return made


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def exchange(app: App, guarded: bool, tmp_path: Path, *reads: bytes) -> tuple[bytes, bool]:
    """Feed ``reads`` one after the other (the loop coming round between them): what was
    written, and whether the connection was closed."""
    made = protocol(app, guarded, tmp_path)
    for data in reads:
        if not made.transport.is_closing():
            made.data_received(data)
        await settle()
    kept = made.transport._transport if guarded else made.transport
    written = b"".join(kept.writes)
    made.connection_lost(None)
    await settle()
    return written, kept.closed


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers what it was asked: the scope (but its state) and the body, in pieces."""
    pieces = []
    while True:
        message = await receive()
        pieces.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    seen = {k: v for k, v in scope.items() if k != "state"}
    body = repr(sorted(seen.items())).encode() + b"\n" + b"|".join(pieces)
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def streamed(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """No Content-Length: chunked, in three pieces, one of them after a suspension."""
    await send({"type": "http.response.start", "status": 201, "headers": [(b"X-A", b"1")]})
    await send({"type": "http.response.body", "body": b"one", "more_body": True})
    await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"", "more_body": True})
    await send({"type": "http.response.body", "body": b"two", "more_body": False})


def answering(status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> App:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def raising_first(scope: dict[str, Any], receive: Any, send: Any) -> None:
    raise ValueError("before the response")


async def raising_midway(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"part", "more_body": True})
    raise ValueError("in the middle of the response")


async def silent(scope: dict[str, Any], receive: Any, send: Any) -> None:
    return None


BODY = b'{"a": 1}'
CASES: dict[str, tuple[App, tuple[bytes, ...]]] = {
    "get": (echo, (b"GET /a%20b/c?x=1&y=%2F HTTP/1.1\r\n" + HOST + b"X-Y: z\r\n\r\n",)),
    "head": (echo, (b"HEAD /h HTTP/1.1\r\n" + HOST + b"\r\n",)),
    "http/1.0": (echo, (b"GET /old HTTP/1.0\r\n\r\n",)),
    "http/1.0 keep-alive": (echo, (b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",)),
    "connection: close": (echo, (b"GET /c HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n",)),
    "post, one read": (
        echo,
        (b"POST /p HTTP/1.1\r\n" + HOST + b"Content-Length: 8\r\n\r\n" + BODY,),
    ),
    "post, body later": (
        echo,
        (b"POST /p HTTP/1.1\r\n" + HOST + b"Content-Length: 8\r\n\r\n", BODY[:3], BODY[3:]),
    ),
    "content-length 0": (echo, (b"POST /p HTTP/1.1\r\n" + HOST + b"Content-Length: 0\r\n\r\n",)),
    "chunked request": (
        echo,
        (
            b"POST /p HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            b"2\r\nde\r\n0\r\n\r\n",
        ),
    ),
    "expect 100-continue": (
        echo,
        (
            b"POST /p HTTP/1.1\r\n" + HOST + b"Expect: 100-continue\r\nContent-Length: 8\r\n\r\n",
            BODY,
        ),
    ),
    "pipelined": (
        echo,
        (
            b"GET /1 HTTP/1.1\r\n" + HOST + b"\r\n"
            b"POST /2 HTTP/1.1\r\n" + HOST + b"Content-Length: 8\r\n\r\n" + BODY + b""
            b"GET /3 HTTP/1.1\r\n" + HOST + b"\r\nGET /4 HTTP/1.1\r\n" + HOST + b"\r\n",
        ),
    ),
    "pipelined after close": (
        echo,
        (
            b"GET /1 HTTP/1.1\r\n"
            + HOST
            + b"Connection: close\r\n\r\nGET /2 HTTP/1.1\r\n"
            + HOST
            + b"\r\n",
        ),
    ),
    "chunked response": (streamed, (b"GET /s HTTP/1.1\r\n" + HOST + b"\r\n",)),
    "chunked response to HEAD": (streamed, (b"HEAD /s HTTP/1.1\r\n" + HOST + b"\r\n",)),
    "pipelined, first suspends": (
        streamed,
        (b"GET /1 HTTP/1.1\r\n" + HOST + b"\r\nGET /2 HTTP/1.1\r\n" + HOST + b"\r\n",),
    ),
    "204": (answering(204, []), (b"DELETE /d HTTP/1.1\r\n" + HOST + b"\r\n",)),
    "app says close": (
        answering(200, [(b"Connection", b"Keep-Alive, Close"), (b"Content-Length", b"2")], b"ok"),
        (b"GET /c HTTP/1.1\r\n" + HOST + b"\r\nGET /d HTTP/1.1\r\n" + HOST + b"\r\n",),
    ),
    "two content-lengths": (
        answering(200, [(b"content-length", b"2"), (b"content-length", b"9")], b"ok"),
        (b"GET /c HTTP/1.1\r\n" + HOST + b"\r\n",),
    ),
    "chunked by the app": (
        answering(200, [(b"Transfer-Encoding", b"Chunked")], b"abc"),
        (b"GET /c HTTP/1.1\r\n" + HOST + b"\r\n",),
    ),
    "body longer than content-length": (
        answering(200, [(b"content-length", b"2")], b"toolong"),
        (b"GET /c HTTP/1.1\r\n" + HOST + b"\r\n",),
    ),
    "body shorter than content-length": (
        answering(200, [(b"content-length", b"20")], b"short"),
        (b"GET /c HTTP/1.1\r\n" + HOST + b"\r\n",),
    ),
    "bad header value": (
        answering(200, [(b"x-bad", b"a\nb"), (b"content-length", b"0")]),
        (b"GET /c HTTP/1.1\r\n" + HOST + b"\r\n",),
    ),
    "bad header name": (
        answering(200, [(b"x bad", b"a"), (b"content-length", b"0")]),
        (b"GET /c HTTP/1.1\r\n" + HOST + b"\r\n",),
    ),
    "app raises first": (raising_first, (b"GET /r HTTP/1.1\r\n" + HOST + b"\r\n",)),
    "app raises midway": (raising_midway, (b"GET /r HTTP/1.1\r\n" + HOST + b"\r\n",)),
    "app answers nothing": (silent, (b"GET /r HTTP/1.1\r\n" + HOST + b"\r\n",)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_cycle_answers_as_uvicorns_does(case: str, tmp_path: Path) -> None:
    app, reads = CASES[case]

    async def both() -> tuple[tuple[bytes, bool], tuple[bytes, bool]]:
        return (
            await exchange(app, False, tmp_path, *reads),
            await exchange(app, True, tmp_path, *reads),
        )

    (theirs, they_closed), (ours, we_closed) = asyncio.run(both())
    assert theirs.startswith(b"HTTP/1.1 ") or case.startswith("bad header")
    assert ours == theirs
    assert we_closed == they_closed


def test_a_get_is_answered_in_the_read_that_carries_it(tmp_path: Path) -> None:
    """No task and no loop iteration for an app that never suspends; one that does is
    carried on by a task, in its own context, and what it sets there stays there."""
    seen: list[tuple[bool, str]] = []
    tasks: set[asyncio.Task[None]] = set()  # the protocol's request tasks
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        before = var.get()
        var.set(scope["path"])
        if scope["path"] == "/wait":
            await asyncio.sleep(0)
        seen.append((asyncio.current_task() in tasks, before))
        await answering(200, [(b"content-length", b"2")], b"ok")(scope, receive, send)

    async def scenario() -> None:
        made = protocol(app, True, tmp_path)
        tasks.update(made.tasks)
        made.tasks = tasks
        kept = made.transport._transport
        made.data_received(b"GET /now HTTP/1.1\r\n" + HOST + b"\r\n")
        assert made.cycle.response_complete and not made.tasks
        assert kept.writes[-1].endswith(b"\r\n\r\nok")  # head and body in one write
        assert var.get() == "unset"
        made.data_received(b"GET /wait HTTP/1.1\r\n" + HOST + b"\r\n")
        assert not made.cycle.response_complete and len(made.tasks) == 1
        await settle()
        assert made.cycle.response_complete and not made.tasks
        assert len(kept.writes) == 2 and kept.writes[-1].endswith(b"\r\n\r\nok")
        assert seen == [(False, "unset"), (True, "unset")]
        assert var.get() == "unset"
        made.connection_lost(None)

    asyncio.run(scenario())


def test_a_client_leaving_mid_request_is_a_disconnect_to_the_app(tmp_path: Path) -> None:
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        events.append((await receive())["type"])  # the body's first piece
        events.append((await receive())["type"])  # ...then the client leaves
        await send({"type": "http.response.start", "status": 200, "headers": []})
        events.append("sent")

    async def scenario() -> None:
        made = protocol(app, True, tmp_path)
        made.data_received(b"POST /p HTTP/1.1\r\n" + HOST + b"Content-Length: 8\r\n\r\nabc")
        await settle()
        assert events == ["http.request"] and len(made.tasks) == 1
        made.connection_lost(ConnectionResetError())
        await settle()
        assert events == ["http.request", "http.disconnect", "sent"]
        assert not made.tasks
        assert made.transport._transport.writes == []

    asyncio.run(scenario())


def test_a_cancelled_request_task_cancels_the_app(tmp_path: Path) -> None:
    """uvicorn cancels the request tasks left at shutdown: the app, started outside the
    task, gets the cancellation where it waits."""
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def scenario() -> None:
        for steps in (0, 3):  # before the task's first step, and after
            made = protocol(app, True, tmp_path)
            made.data_received(b"GET /p HTTP/1.1\r\n" + HOST + b"\r\n")
            (task,) = made.tasks
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            await settle()
            assert task.done() and not made.tasks
            made.connection_lost(None)
        assert events == ["cancelled", "cancelled"]

    asyncio.run(scenario())


def test_the_keepalive_timer_closes_only_a_connection_idle_long_enough(tmp_path: Path) -> None:
    async def scenario() -> None:
        made = protocol(answering(200, [(b"content-length", b"0")]), True, tmp_path)
        loop = asyncio.get_running_loop()
        timeout = made.timeout_keep_alive
        made.data_received(b"GET /p HTTP/1.1\r\n" + HOST + b"\r\n")
        timer = made.timeout_keep_alive_task
        assert timer is not None  # one timer, kept from the connection's start
        made.data_received(b"GET /p HTTP/1.1\r\n" + HOST + b"\r\n")
        assert made.timeout_keep_alive_task is timer  # not one a response
        timer.cancel()
        made._idle_at = loop.time() - timeout / 2  # idle half the time: armed for the rest
        made.timeout_keep_alive_handler()
        again = made.timeout_keep_alive_task
        assert again is not None and not made.transport.is_closing()
        assert again.when() == pytest.approx(made._idle_at + timeout, abs=0.05)
        again.cancel()
        made.data_received(b"GET /p HTTP/1.1\r\n")  # busy: a head under way
        made.timeout_keep_alive_handler()
        assert made.timeout_keep_alive_task is None and not made.transport.is_closing()
        made.data_received(HOST + b"\r\n")  # answered: idle again, armed again
        assert made.timeout_keep_alive_task is not None
        made.timeout_keep_alive_task.cancel()
        made._idle_at = loop.time() - timeout
        made.timeout_keep_alive_handler()
        assert made.transport.is_closing()
        made.connection_lost(None)

    asyncio.run(scenario())


#: The source of the uvicorn parts api/connections.py and api/cycle.py replace or build on,
#: as reviewed against uvicorn 0.54.0. A change there may be a fix the cycle must take too.
UVICORN_REVIEWED = {
    "httptools_impl": "1d4e1c579df41684",
    "flow_control": "d39d16560df512f3",
}


def _digest(module: Any) -> str:
    return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()[:16]


def test_uvicorns_protocol_is_the_one_the_cycle_was_written_against() -> None:
    found = {"httptools_impl": _digest(httptools_impl), "flow_control": _digest(flow_control)}
    assert found == UVICORN_REVIEWED, (
        f"uvicorn {uvicorn.__version__}'s HTTP protocol changed under api/connections.py and"
        " api/cycle.py (they replace its request cycle and most of HttpToolsProtocol's"
        " callbacks): review the change, port what applies, then update UVICORN_REVIEWED"
        f" to {found}"
    )


def test_a_cancelled_receive_leaves_another_one_waiting(tmp_path: Path) -> None:
    got: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        first = asyncio.ensure_future(receive())
        second = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        first.cancel()
        got.append(await second)
        await answering(200, [(b"content-length", b"0")])(scope, receive, send)

    async def scenario() -> None:
        made = protocol(app, True, tmp_path)
        made.data_received(b"POST /p HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\n")
        await settle()
        made.data_received(b"abc")
        await settle()
        assert got == [{"type": "http.request", "body": b"abc", "more_body": False}]
        assert made.cycle.response_complete
        made.connection_lost(None)

    asyncio.run(scenario())


def test_an_app_that_waits_with_a_timeout_in_its_first_step_is_answered(tmp_path: Path) -> None:
    """The object stores' reads wait with ``asyncio.wait_for`` (from Python 3.12 built on
    ``asyncio.timeout``, which needs a task): in the first step, where 3.11 runs the app
    outside any task and 3.12 in an eagerly started one, both are answered, not a 500. The
    read is delivered as the loop delivers one, from a callback outside any task."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.wait_for(asyncio.sleep(0), 5)
        if sys.version_info >= (3, 12):
            async with asyncio.timeout(5):
                await asyncio.sleep(0)
        await answering(200, [(b"content-length", b"2")], b"ok")(scope, receive, send)

    async def scenario() -> bytes:
        made = protocol(app, True, tmp_path)
        asyncio.get_running_loop().call_soon(
            made.data_received, b"GET /x HTTP/1.1\r\n" + HOST + b"\r\n"
        )
        await settle()
        written = b"".join(made.transport._transport.writes)
        made.connection_lost(None)
        await settle()
        return written

    written = asyncio.run(scenario())
    assert written.startswith(b"HTTP/1.1 200 OK\r\n") and written.endswith(b"\r\n\r\nok"), written
