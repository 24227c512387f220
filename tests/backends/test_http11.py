"""The lean HTTP/1.1 transport against raw socket servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from batchrock.backends.http11 import Http11Transport

from .conftest import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length)


def serve(handler: Handler, check: Callable[[httpx.AsyncClient, str], Awaitable[None]]) -> None:
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def go() -> None:
        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = httpx.AsyncClient(transport=Http11Transport(), timeout=httpx.Timeout(2.0))
        try:
            await check(client, f"http://127.0.0.1:{port}")
        finally:
            await client.aclose()
            server.close()
            for writer in writers:
                writer.close()
            await asyncio.sleep(0.05)

    asyncio.run(go())


def test_content_length_and_chunked_bodies_over_one_kept_alive_connection() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        body = await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Test: yes\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await writer.drain()
        await reader.read()

    async def check(client: httpx.AsyncClient, url: str) -> None:
        first = await client.post(url + "/echo", content=b'{"x": 1}')
        assert (first.status_code, first.content) == (200, b'{"x": 1}')
        second = await client.post(url + "/chunked", content=b"{}")
        assert (second.status_code, second.text, second.headers["x-test"]) == (
            201,
            "hello world",
            "yes",
        )

    serve(handler, check)
    assert connections == 1


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # no Connection: close header: the client only finds out later

    async def check(client: httpx.AsyncClient, url: str) -> None:
        for _ in range(3):
            response = await client.post(url, content=b"x")
            assert response.text == "ok"
            await asyncio.sleep(0.01)

    serve(handler, check)
    assert connections == 3


def test_dropped_connection_without_answer_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async def check(client: httpx.AsyncClient, url: str) -> None:
        with pytest.raises(httpx.RemoteProtocolError, match="disconnected"):
            await client.post(url, content=b"x")

    serve(handler, check)


def test_cut_off_body_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        await writer.drain()
        writer.close()

    async def check(client: httpx.AsyncClient, url: str) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(url, content=b"x")

    serve(handler, check)


def test_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(3)

    async def check(client: httpx.AsyncClient, url: str) -> None:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(url, content=b"x", timeout=0.1)

    serve(handler, check)


def test_connection_refused() -> None:
    async def go() -> None:
        async with httpx.AsyncClient(transport=Http11Transport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{free_port()}/")

    asyncio.run(go())
