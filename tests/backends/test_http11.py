"""The lean HTTP/1.1 client against raw socket servers that misbehave on purpose, and the
OpenAI-compatible backend's mapping of its errors (through a test double of the transport)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from batchrock.backends.base import ModelRequest
from batchrock.backends.http11 import (
    ConnectError,
    ConnectionDropped,
    ConnectTimeout,
    HttpClient,
    HttpError,
    HttpResponse,
    ProtocolError,
    ReadTimeout,
)
from batchrock.backends.openai_compat import OpenAIBackend, OpenAIOptions, from_route
from batchrock.backends.replicas import UNREACHABLE
from batchrock.backends.resilience import RetryPolicy
from batchrock.backends.routing import ConfigError, Route
from batchrock.settings import Settings
from tests.certs import self_signed

from .conftest import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Check = Callable[[Callable[..., HttpClient]], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), extra, body)


def serve(
    handler: Handler, check: Check, ssl_server: ssl.SSLContext | None = None
) -> list[asyncio.StreamWriter]:
    """Run ``handler`` for each connection to a local server while ``check`` runs with a
    factory of clients for it (closed afterwards); returns the connections' writers."""
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def go() -> None:
        server = await asyncio.start_server(tracked, "127.0.0.1", 0, ssl=ssl_server)
        port = server.sockets[0].getsockname()[1]
        scheme = "https" if ssl_server else "http"
        clients: list[HttpClient] = []

        def make(**options: Any) -> HttpClient:
            options.setdefault("timeout_s", 5.0)
            client = HttpClient(f"{scheme}://127.0.0.1:{port}/v1", **options)
            clients.append(client)
            return client

        try:
            await check(make)
        finally:
            for client in clients:
                await client.aclose()
            server.close()
            for writer in writers:
                writer.close()
            await asyncio.sleep(0.05)

    asyncio.run(go())
    return writers


def test_content_length_and_chunked_bodies_over_one_kept_alive_connection() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        heads.append(head)
        writer.write(ok(body, b"Retry-After: 3\r\n"))
        heads.append((await read_request(reader))[0])
        writer.write(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Test: yes\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await writer.drain()
        await reader.read()

    async def check(make: Callable[..., HttpClient]) -> None:
        client = make(headers={"Authorization": "Bearer k"})
        first = await client.post("chat/completions", b'{"x": 1}')
        assert (first.status, first.body, first.header("retry-after")) == (200, b'{"x": 1}', "3")
        second = await client.post("/embeddings", b"{}")
        assert (second.status, second.reason, second.text) == (201, "Created", "hello world")
        assert second.header("x-test") == "yes" and second.header("retry-after") is None

    assert len(serve(handler, check)) == 1
    first = heads[0].split(b"\r\n")
    assert first[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert b"Authorization: Bearer k" in first and b"Content-Length: 8" in first
    assert any(line.startswith(b"Host: 127.0.0.1:") for line in first)
    assert heads[1].startswith(b"POST /v1/embeddings HTTP/1.1\r\n")


def test_connections_are_kept_alive_and_reused_last_in_first_out() -> None:
    served: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = len(served)
        served.append(0)
        while True:
            _, body = await read_request(reader)
            served[me] += 1
            if body == b"slow":
                await asyncio.sleep(0.2)
            writer.write(ok(b"%d" % me))

    async def check(make: Callable[..., HttpClient]) -> None:
        client = make()
        # Three at once need three connections; afterwards the one that finished last (the
        # slow one) is the warmest and serves everything sequential.
        answers = await asyncio.gather(
            client.post("a", b"fast"), client.post("a", b"fast"), client.post("a", b"slow")
        )
        slow = int(answers[2].body)
        for _ in range(5):
            assert int((await client.post("a", b"x")).body) == slow

    serve(handler, check)
    assert len(served) == 3 and sorted(served) == [1, 1, 6]


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok())
        await writer.drain()
        writer.close()  # no Connection: close header: the client only finds out later

    async def check(make: Callable[..., HttpClient]) -> None:
        client = make()
        for _ in range(3):
            assert (await client.post("x", b"x")).text == "ok"
            await asyncio.sleep(0.05)

    assert len(serve(handler, check)) == 3


def test_a_reused_connection_closed_as_the_request_goes_out_is_retried_on_a_new_one() -> None:
    """The race the idle check cannot see: the server closes a kept-alive connection just as
    the next request is written, without answering it. That request goes again, once."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(ok(b"first" if connections == 1 else b"again"))
        await writer.drain()
        if connections == 1:
            await read_request(reader)  # the second request arrives ... and is not answered
            return
        await reader.read()

    async def check(make: Callable[..., HttpClient]) -> None:
        client = make()
        assert (await client.post("x", b"1")).text == "first"
        assert (await client.post("x", b"2")).text == "again"

    serve(handler, check)
    assert connections == 2


def test_connection_close_and_close_delimited_bodies() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        if connections == 1:
            writer.write(ok(b"bye", b"Connection: close\r\n"))
            await writer.drain()
            await reader.read()  # the client must close it
        else:
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
            await writer.drain()

    async def check(make: Callable[..., HttpClient]) -> None:
        client = make()
        assert (await client.post("x", b"x")).text == "bye"
        assert (await client.post("x", b"x")).text == "until the end"
        assert not client.idle

    serve(handler, check)
    assert connections == 2


def test_an_answer_nobody_asked_for_closes_the_connection() -> None:
    """Two answers to one request: the second must not become the next request's answer,
    nor put the connection in the pool twice."""

    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        _, body = await read_request(reader)
        writer.write(ok(body) + (ok(b"extra") if connections == 1 else b""))
        while True:
            _, body = await read_request(reader)
            writer.write(ok(body))

    async def check(make: Callable[..., HttpClient]) -> None:
        client = make()
        assert (await client.post("x", b"one")).body == b"one"
        await asyncio.sleep(0.05)
        assert len(client.idle) <= 1
        assert (await client.post("x", b"two")).body == b"two"
        assert (await client.post("x", b"three")).body == b"three"

    assert len(serve(handler, check)) == 2


def test_a_drop_without_answer_on_a_fresh_connection_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async def check(make: Callable[..., HttpClient]) -> None:
        with pytest.raises(ConnectionDropped, match="without answering"):
            await make().post("x", b"x")

    assert len(serve(handler, check)) == 1  # sent once: no retry on a fresh connection


def test_a_server_dying_mid_response_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        await writer.drain()

    async def check(make: Callable[..., HttpClient]) -> None:
        with pytest.raises(ConnectionDropped, match="mid-response"):
            await make().post("x", b"x")

    serve(handler, check)


def test_oversize_and_garbage_answers_are_protocol_errors() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader)
        if body == b"declared":
            writer.write(ok(b"x" * 101))
        elif body == b"chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(20):
                writer.write(b"10\r\n" + b"y" * 16 + b"\r\n")
            writer.write(b"0\r\n\r\n")
        elif body == b"headers":
            writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"z" * 70_000 + b"\r\n\r\n")
        else:
            writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def check(make: Callable[..., HttpClient]) -> None:
        client = make(max_body=100)
        with pytest.raises(ProtocolError, match="larger than 100 bytes"):
            await client.post("x", b"declared")
        with pytest.raises(ProtocolError, match="larger than 100 bytes"):
            await client.post("x", b"chunked")
        with pytest.raises(ProtocolError, match="headers are larger"):
            await client.post("x", b"headers")
        with pytest.raises(ProtocolError, match=r"not HTTP/1\.1"):
            await client.post("x", b"garbage")
        assert not client.idle and not client.open  # none of them is reused

    assert len(serve(handler, check)) == 4


def test_read_timeout_discards_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader)
        if body == b"hang":
            await asyncio.sleep(3)
        writer.write(ok())
        await reader.read()

    async def check(make: Callable[..., HttpClient]) -> None:
        client = make(timeout_s=0.1)
        with pytest.raises(ReadTimeout):
            await client.post("x", b"hang")
        assert (await client.post("x", b"fine")).text == "ok"

    assert len(serve(handler, check)) == 2


def test_a_cancelled_request_does_not_leave_its_connection_in_the_pool() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader)
        if body == b"slow":
            await asyncio.sleep(0.3)
        writer.write(ok(body))
        while True:
            _, body = await read_request(reader)
            writer.write(ok(body))

    async def check(make: Callable[..., HttpClient]) -> None:
        client = make()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await client.post("x", b"slow")
        await asyncio.sleep(0.4)  # the late answer to "slow" must not become this one's
        assert (await client.post("x", b"mine")).body == b"mine"

    assert len(serve(handler, check)) == 2


def test_connection_refused_and_connect_timeout() -> None:
    async def go() -> None:
        with pytest.raises(ConnectError, match="cannot connect"):
            await HttpClient(f"http://127.0.0.1:{free_port()}/v1").post("x", b"x")
        # A listener that never accepts, its backlog full: the next SYN gets no answer.
        with socket.socket() as full:
            full.bind(("127.0.0.1", 0))
            full.listen(0)
            port = full.getsockname()[1]
            fillers = []
            for _ in range(3):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            try:
                client = HttpClient(f"http://127.0.0.1:{port}/v1", connect_timeout_s=0.2)
                with pytest.raises(ConnectTimeout):
                    await client.post("x", b"x")
            finally:
                for filler in fillers:
                    filler.close()

    asyncio.run(go())


def test_https_checks_the_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(reader)
            writer.write(ok(body))

    async def check(make: Callable[..., HttpClient]) -> None:
        trusting = make(ssl_context=ssl.create_default_context(cafile=str(cert)))
        assert (await trusting.post("x", b"secret")).body == b"secret"
        assert (await trusting.post("x", b"again")).body == b"again"
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await make().post("x", b"x")  # the system's CAs do not know this certificate

    serve(handler, check, ssl_server=server_ctx)


def test_headers_http_cannot_carry_are_refused_when_the_route_is_built() -> None:
    with pytest.raises(ValueError, match="not a valid HTTP header"):
        HttpClient("http://h/v1", headers={"X-Evil": "a\r\nHost: other"})
    route = Route(
        index=0,
        patterns=("m",),
        backend="openai",
        options={"base_url": "http://h/v1", "headers": {"Bad Name": "v"}},
        retry=RetryPolicy(),
    )
    with pytest.raises(ConfigError, match=r"route 1 \(openai\): header 'Bad Name'"):
        from_route(route, Settings())


class ScriptedTransport:
    """A test double of the backend's transport: each post takes the next scripted step."""

    def __init__(self, *steps: HttpResponse | HttpError) -> None:
        self.steps = list(steps)
        self.sent: list[tuple[str, bytes]] = []

    async def post(self, path: str, body: bytes) -> HttpResponse:
        self.sent.append((path, body))
        step = self.steps.pop(0)
        if isinstance(step, HttpError):
            raise step
        return step

    async def aclose(self) -> None:
        pass


CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


def invoke(transport: ScriptedTransport) -> Any:
    backend = OpenAIBackend(OpenAIOptions(base_url="http://h/v1"), transport=transport)
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return asyncio.run(backend.invoke(ModelRequest(CLAUDE, "InvokeModel", body, "R1")))


@pytest.mark.parametrize(
    ("step", "code", "unreachable"),
    [
        (ReadTimeout("slow"), 408, False),
        (ConnectTimeout("no SYN-ACK"), 408, True),
        (ConnectError("refused"), 503, True),
        (ConnectionDropped("gone"), 503, False),
        (ProtocolError("garbage"), 503, False),
    ],
)
def test_transport_errors_become_retryable_record_errors(
    step: HttpError, code: int, unreachable: bool
) -> None:
    result = invoke(ScriptedTransport(step))
    assert result.error is not None and result.error.retryable
    assert result.error.code == code
    assert result.info.get(UNREACHABLE, False) is unreachable


def test_http_answers_through_the_transport_double() -> None:
    answer = (
        b'{"choices": [{"message": {"content": "hello"}, "finish_reason": "stop"}],'
        b' "usage": {"prompt_tokens": 3, "completion_tokens": 1}}'
    )
    transport = ScriptedTransport(HttpResponse(200, "OK", (), answer))
    result = invoke(transport)
    assert result.error is None and result.output["content"][0]["text"] == "hello"
    assert transport.sent[0][0] == "chat/completions"
    throttled = HttpResponse(
        429, "Too Many", ((b"retry-after", b"2"),), b'{"error": {"message": "slow down"}}'
    )
    result = invoke(ScriptedTransport(throttled))
    assert (result.error.code, result.error.retryable, result.info["retry_after"]) == (429, True, 2)
    assert "slow down" in result.error.message
    result = invoke(ScriptedTransport(HttpResponse(502, "Bad Gateway", (), b"")))
    assert result.error.code == 502 and "Bad Gateway" in result.error.message
