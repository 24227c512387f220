"""A lean HTTP/1.1 transport for httpx, for hundreds of requests in flight.

httpx's default transport (httpcore over anyio) spends about a millisecond of CPU per request
at high concurrency here: its pool scans every connection on every request and checks each
socket's state through several layers. A batch job sends thousands of small JSON requests to
one model server, so this transport keeps only what that needs: keep-alive connections to one
origin taken last-in first-out, h11 for the protocol, asyncio streams for the sockets. httpx's
client still builds requests and responses, so the backend code is plain httpx.

Errors are raised as httpx's own exceptions (ConnectTimeout, ReadTimeout, ConnectError,
ReadError, RemoteProtocolError), so callers handle them the same way for either transport.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import defaultdict
from typing import Any

import h11
import httpx

_READ_SIZE = 65536


class _Connection:
    __slots__ = ("h11", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class Http11Transport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 (and HTTPS) without per-request pool scans."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, max_idle: int = 512) -> None:
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._idle: defaultdict[tuple[str, str, int], list[_Connection]] = defaultdict(list)
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        key = (request.url.scheme, request.url.host, request.url.port or _default_port(request))
        body = await request.aread()
        idle = self._idle[key]
        while idle:
            connection = idle.pop()
            if not connection.usable():
                self._discard(connection)
                continue
            try:
                return await self._exchange(connection, key, request, body, timeouts)
            except _StaleConnection:
                # The server closed a kept-alive connection before we used it: a new one.
                continue
        connection = await self._connect(key, request, timeouts.get("connect"))
        try:
            return await self._exchange(connection, key, request, body, timeouts)
        except _StaleConnection as exc:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from exc

    async def _connect(
        self, key: tuple[str, str, int], request: httpx.Request, timeout: float | None
    ) -> _Connection:
        scheme, host, port = key
        context = None
        if scheme == "https":
            context = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, limit=_READ_SIZE
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = _Connection(reader, writer)
        self._open.add(connection)
        return connection

    async def _exchange(
        self,
        connection: _Connection,
        key: tuple[str, str, int],
        request: httpx.Request,
        body: bytes,
        timeouts: dict[str, Any],
    ) -> httpx.Response:
        conn = connection.h11
        headers = [(k, v) for k, v in request.headers.raw]
        target = request.url.raw_path
        fresh = True
        try:
            data = conn.send(h11.Request(method=request.method, target=target, headers=headers))
            if body:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
            connection.writer.write(data)
            async with asyncio.timeout(timeouts.get("write")):
                await connection.writer.drain()
            async with asyncio.timeout(timeouts.get("read")):
                response: h11.Response | None = None
                chunks: list[bytes] = []
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        received = await connection.reader.read(_READ_SIZE)
                        if not received and fresh:
                            raise _StaleConnection
                        fresh = False
                        conn.receive_data(received)
                        continue
                    fresh = False
                    if isinstance(event, h11.Response):
                        response = event
                    elif isinstance(event, h11.Data):
                        chunks.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        raise httpx.RemoteProtocolError(
                            "Server closed the connection mid-response.", request=request
                        )
        except _StaleConnection:
            self._discard(connection)
            raise
        except TimeoutError as exc:
            self._discard(connection)
            raise httpx.ReadTimeout("the server did not answer in time", request=request) from exc
        except h11.RemoteProtocolError as exc:
            self._discard(connection)
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except h11.LocalProtocolError as exc:
            self._discard(connection)
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._discard(connection)
            raise httpx.ReadError(f"connection failed: {exc}", request=request) from exc
        except BaseException:
            self._discard(connection)
            raise
        assert response is not None
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            idle = self._idle[key]
            if len(idle) < self._max_idle:
                idle.append(connection)
            else:
                self._discard(connection)
        else:
            self._discard(connection)
        return httpx.Response(
            response.status_code,
            headers=list(response.headers),
            content=b"".join(chunks),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": bytes(response.reason)},
        )

    def _discard(self, connection: _Connection) -> None:
        self._open.discard(connection)
        connection.close()

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()


class _StaleConnection(Exception):
    """A kept-alive connection turned out closed before any response byte."""


def _default_port(request: httpx.Request) -> int:
    return 443 if request.url.scheme == "https" else 80
