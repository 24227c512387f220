"""Connections are bounded in time and number: real sockets against a real `batchrock serve`."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson

from tests.api.conftest import create_args
from tests.api.test_validation import assert_error
from tests.api.wire import Reply, call
from tests.conftest import ServerProcess

HEALTH = b"GET /_batchrock/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_reply(sock: socket.socket) -> Reply:
    """One HTTP/1.1 response with a Content-Length, off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return Reply(int(lines[0].split()[1]), headers, body)


def read_replies(sock: socket.socket, count: int) -> list[Reply]:
    """``count`` HTTP/1.1 responses with a Content-Length, read in order off one socket (a
    read may carry several of them)."""
    stream = sock.makefile("rb")
    replies = []
    for _ in range(count):
        status_line = stream.readline()
        assert status_line, "connection closed before the reply"
        headers = {}
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.lower()] = value.strip()
        body = stream.read(int(headers["content-length"]))
        replies.append(Reply(int(status_line.split()[1]), headers, body))
    return replies


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (EOF or reset)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@contextlib.contextmanager
def sockets(count: int, server: ServerProcess, first: bytes = b"") -> Iterator[list[socket.socket]]:
    opened = []
    try:
        for _ in range(count):
            sock = connect(server)
            if first:
                sock.sendall(first)
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


BUSY = (
    b"POST /model-invocation-job HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
)  # a request in progress: its body is still coming


@contextlib.contextmanager
def busy_connections(count: int, server: ServerProcess) -> Iterator[list[socket.socket]]:
    """``count`` connections, each with a request in progress (its head read, its body
    awaited), until the block ends."""
    with sockets(count, server, first=BUSY) as working:
        for sock in working:  # the server has read the head and waits for the body
            assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        yield working


def test_a_silent_new_connection_is_closed_after_the_keepalive_timeout(
    server_factory: Any,
) -> None:
    server = server_factory(
        engine=False, http_keepalive_timeout_seconds=0.5, http_client_timeout_seconds=60
    )
    with connect(server) as sock:
        assert closed_within(sock, 10)  # before: held forever


def test_an_idle_keepalive_connection_is_closed_after_the_timeout(server_factory: Any) -> None:
    server = server_factory(
        engine=False, http_keepalive_timeout_seconds=0.5, http_client_timeout_seconds=60
    )
    with connect(server) as sock:
        sock.sendall(HEALTH)
        assert read_reply(sock).status == 200
        sock.sendall(HEALTH)  # still open for the next request
        assert read_reply(sock).status == 200
        assert closed_within(sock, 4)  # the setting, not uvicorn's 5 s default


def test_a_half_sent_head_is_cut_off_however_slowly_it_trickles(server_factory: Any) -> None:
    server = server_factory(
        engine=False, http_keepalive_timeout_seconds=60, http_client_timeout_seconds=1
    )
    with connect(server) as sock:
        sock.sendall(b"GET /_batchrock/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        deadline = time.monotonic() + 20
        closed = False
        while time.monotonic() < deadline and not closed:
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                closed = closed_within(sock, 1)
                break
            try:
                sock.sendall(b"X-Slow: 1\r\n")  # a header line every 0.2 s: never idle
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        assert closed, "a trickling request head was kept open for 20 s"


def test_a_half_sent_body_is_cut_off_and_nothing_is_created(server_factory: Any) -> None:
    server = server_factory(
        engine=False, http_keepalive_timeout_seconds=60, http_client_timeout_seconds=1
    )
    body = orjson.dumps(create_args("half-sent"))
    with connect(server) as sock:
        head = (
            f"POST /model-invocation-job HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body) + 10}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)  # the whole JSON, but 10 bytes short of the length
        assert closed_within(sock, 15)
    listing = call(server.url, "GET", "/model-invocation-jobs")
    assert listing.status == 200
    assert listing.json()["invocationJobSummaries"] == []


def test_many_idle_connections_do_not_lock_out_other_clients(server_factory: Any) -> None:
    server = server_factory(
        engine=False,
        http_max_connections=20,
        http_keepalive_timeout_seconds=60,
        http_client_timeout_seconds=60,
    )
    with sockets(30, server) as idle, sockets(30, server, first=b"GET / HTTP/1.1\r\n") as half:
        for _ in range(5):
            reply = call(server.url, "GET", "/model-invocation-jobs?maxResults=1", timeout=5)
            assert reply.status == 200
        # The oldest idle ones made room (before: all 60 were kept, with no limit).
        assert closed_within(idle[0], 5)
        assert closed_within(half[0], 5)
        assert not closed_within(half[-1], 0.2)


def test_when_every_connection_is_busy_a_new_one_gets_a_429(server_factory: Any) -> None:
    server = server_factory(
        engine=False,
        http_max_connections=4,
        http_keepalive_timeout_seconds=60,
        http_client_timeout_seconds=60,
    )
    with busy_connections(4, server):
        with connect(server) as sock:
            sock.sendall(HEALTH)
            reply = read_reply(sock)
        assert_error(reply, 429, "ThrottlingException")
        assert "connections" in reply.json()["message"]
    assert call(server.url, "GET", "/_batchrock/health").status == 200


def test_an_oversized_request_head_is_a_400_in_the_api_error_shape(
    api_server: ServerProcess,
) -> None:
    reply = call(api_server.url, "GET", "/model-invocation-jobs?nameContains=" + "a" * 20_000)
    assert_error(reply, 400, "ValidationException")
    assert "16384 bytes" in reply.json()["message"]
    pieces = {
        "a query": b"GET /model-invocation-jobs?nameContains=",
        # On a path answered before any other check, and one header whose pieces llhttp keeps
        # without a callback until it ends.
        "a header": b"GET /_batchrock/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ",
    }
    for start in pieces.values():
        with connect(api_server) as sock:  # arriving in pieces, never finished
            sock.sendall(start + b"a" * 10_000)
            sock.sendall(b"a" * 10_000)
            reply = read_reply(sock)
            assert closed_within(sock, 5)
        assert_error(reply, 400, "ValidationException")
        assert "16384 bytes" in reply.json()["message"]
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 100) for i in range(200))
    with connect(api_server) as sock:  # many headers, sent at once
        sock.sendall(HEALTH.removesuffix(b"\r\n") + many + b"\r\n")
        reply = read_reply(sock)
    assert_error(reply, 400, "ValidationException")


def test_a_head_that_is_not_one_http_1_1_request_is_a_400_in_the_api_error_shape(
    api_server: ServerProcess,
) -> None:
    heads = {
        "no Host (RFC 9112 3.2)": b"GET /_batchrock/health HTTP/1.1\r\n\r\n",
        "two Hosts": b"GET /_batchrock/health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "HTTP/0.9": b"GET /_batchrock/health\r\n\r\n",
        "HTTP/2.0": b"GET /_batchrock/health HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n",
        "length and chunked (smuggling)": HEALTH.removesuffix(b"\r\n")
        + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "not HTTP": b"hello\r\n\r\n",
        "Upgrade with a body": b"POST /model-invocation-job HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\n{}" + HEALTH,
    }
    for what, head in heads.items():
        with connect(api_server) as sock:
            sock.sendall(head)
            reply = read_reply(sock)
            assert closed_within(sock, 5), what
        assert_error(reply, 400, "ValidationException")
        assert reply.json()["message"].startswith("The request is not a valid HTTP/1.1"), what


def test_pipelined_chunked_continued_closing_and_http_1_0_requests(
    api_server: ServerProcess,
) -> None:
    body = orjson.dumps(create_args("framing"))
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
    create = (
        b"POST /model-invocation-job HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    )
    listing = b"GET /model-invocation-jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with connect(api_server) as sock:  # four at once; the one after Connection: close is not read
        sock.sendall(HEALTH + create + listing + HEALTH)
        health, created, listed = read_replies(sock, 3)
        assert closed_within(sock, 5)
    assert (health.status, created.status, listed.status) == (200, 200, 200), created.body
    assert listed.headers["connection"] == "close"
    arns = [job["jobArn"] for job in listed.json()["invocationJobSummaries"]]
    assert created.json()["jobArn"] in arns

    with connect(api_server) as sock:  # Expect: 100-continue, then the body
        sock.sendall(
            b"POST /model-invocation-job HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert read_reply(sock).status == 200
        sock.sendall(HEALTH)  # and the connection is kept
        assert read_reply(sock).status == 200

    with connect(api_server) as sock:  # Upgrade asked: answered in HTTP/1.1, then closed
        upgrade = HEALTH.removesuffix(b"\r\n") + b"Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        sock.sendall(upgrade + HEALTH)
        reply = read_reply(sock)
        assert (reply.status, reply.headers["connection"]) == (200, "close")
        assert closed_within(sock, 5)

    with connect(api_server) as sock:  # HTTP/1.0: answered, then closed
        sock.sendall(b"GET /_batchrock/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_reply(sock).status == 200
        assert closed_within(sock, 5)


def test_a_client_that_leaves_responses_unread_is_cut_off(server_factory: Any) -> None:
    server = server_factory(
        engine=False,
        log_level="debug",
        http_keepalive_timeout_seconds=60,
        http_client_timeout_seconds=0.5,
    )
    request = b"GET /console/static/console.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: fills soon
    sock.settimeout(10)
    with sock:
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(request * 400)  # about 10 MB of answers, and none of them read
        deadline = time.monotonic() + 60
        while "no progress for 0.5 s" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "no progress for 0.5 s" in server.log(), "an unread response was kept for 60 s"
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        assert received < 400 * 26_000  # cut off, not all sent


def test_a_responses_writes_leave_as_one() -> None:
    from batchrock.api.connections import CoalescingTransport

    class Recording:
        def __init__(self) -> None:
            self.writes: list[bytes] = []
            self.closed = self.aborted = False

        def write(self, data: bytes) -> None:
            self.writes.append(data)

        def writelines(self, data: list[bytes]) -> None:  # one send (uvloop: one writev)
            self.writes.append(b"".join(data))

        def is_closing(self) -> bool:
            return self.closed or self.aborted

        def close(self) -> None:
            self.closed = True

        def abort(self) -> None:
            self.aborted = True

        def get_extra_info(self, name: str) -> str:
            return f"extra {name}"

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        raw = Recording()
        transport = CoalescingTransport(raw, loop)  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"")
        transport.write(b"{}")
        assert raw.writes == []  # held until the response is complete...
        transport.flush()
        assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]  # ...then one write
        transport.write(b"chunk")
        await asyncio.sleep(0)  # ...or until the loop comes round (a streamed answer)
        assert raw.writes[-1] == b"chunk"
        transport.write(b"last")
        transport.close()  # closing sends what is held first
        assert raw.writes[-1] == b"last" and raw.closed
        assert transport.get_extra_info("peername") == "extra peername"
        other = Recording()
        cut = CoalescingTransport(other, loop)  # type: ignore[arg-type]
        cut.write(b"never")
        cut.abort()
        await asyncio.sleep(0)
        assert other.writes == [] and other.aborted

    asyncio.run(scenario())
