"""New connections are accepted in batches however busy the event loop is (api/accepting.py).

The server runs in this process on a real listening socket, with `batchrock serve`'s protocol
and server class; time is counted in turns of the event loop, not seconds, so a busy machine
does not move the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from batchrock import admin
from batchrock.api import accepting
from batchrock.settings import Settings
from tests.certs import self_signed

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[tuple[Any, int]]:
    """`batchrock serve`'s uvicorn server and protocol around a small app, with uvicorn's
    ``options``; (server, port)."""
    config = admin.http_config(Settings(), hello, lifespan="off", **options)
    server = admin._make_server(config, None)
    sock = admin.listen("127.0.0.1", 0)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield server, sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


def status_lines(clients: list[socket.socket]) -> list[bytes]:
    """Each client's response status line (blocking: run off the server's loop)."""
    lines = []
    for client in clients:
        client.settimeout(30)
        data = b""
        while b"\r\n" not in data:
            chunk = client.recv(4096)
            assert chunk, "closed before the response"
            data += chunk
        lines.append(data.split(b"\r\n", 1)[0])
    return lines


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_burst_of_connections_is_accepted_in_a_few_turns_of_the_loop(loop: str) -> None:
    pending = 150

    async def main() -> None:
        async with serving() as (server, port):
            # Connected by the kernel (the handshake needs no accept) while the loop is held
            # here: all of them wait in the accept queue before the loop looks.
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(pending)]
            try:
                counts: list[int] = []
                finished = asyncio.get_running_loop().create_future()

                def turn() -> None:
                    counts.append(len(server.server_state.connections))
                    if counts[-1] >= pending or len(counts) >= 1000:
                        finished.set_result(None)
                    else:
                        asyncio.get_running_loop().call_soon(turn)

                turn()
                await finished
                assert counts[-1] == pending
                # 150 in batches of at most 64: three wake-ups, and a turn or two for the
                # transports' connection_made (libuv alone takes one connection a turn: 150).
                assert len(counts) <= 8, counts
                grown = [later - earlier for earlier, later in itertools.pairwise(counts)]
                assert max(grown) <= accepting.ACCEPT_BATCH, counts
                # Every one of them is served.
                for client in clients:
                    client.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                statuses = await asyncio.to_thread(status_lines, clients)
                assert statuses == [b"HTTP/1.1 200 OK"] * pending
            finally:
                for client in clients:
                    client.close()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(main())


class ShortOfDescriptors(socket.socket):
    """A listening socket whose accept() fails with EMFILE the first ``failures`` times: the
    kernel's answer when the process has no file descriptor left, which a test cannot bring
    about without starving pytest itself."""

    failures = 0

    def accept(self) -> tuple[socket.socket, Any]:
        if ShortOfDescriptors.failures > 0:
            ShortOfDescriptors.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


@pytest.mark.parametrize("loop", list(LOOPS))
def test_out_of_descriptors_pauses_accepting_and_then_serves(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        sock = ShortOfDescriptors(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        made: list[asyncio.BaseTransport] = []

        class Made(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                made.append(transport)

        ShortOfDescriptors.failures = 3
        loop = asyncio.get_running_loop()
        acceptor = accepting.Acceptor(sock, Made, retry_after=0.05)
        client = socket.create_connection(sock.getsockname())
        started = loop.time()
        try:
            for _ in range(1000):
                if made:
                    break
                await asyncio.sleep(0.01)
            assert len(made) == 1  # taken once the pauses were over
            # Three failures, each followed by a pause, not three turns of a spinning loop (a
            # lower bound: a busy machine only makes it longer).
            assert loop.time() - started >= 3 * 0.05
        finally:
            acceptor.close()
            client.close()
            for transport in made:
                transport.close()
            sock.close()

    with caplog.at_level(logging.WARNING, logger="batchrock.api"):
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(main())
    assert any("Too many open files" in r.getMessage() for r in caplog.records)


def tls_get(port: int, cafile: Path) -> bytes:
    """A GET over TLS, checking the certificate; the response's status line."""
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            return status_lines([tls])[0]


def plain_get_on_tls(port: int) -> bytes:
    """Plain HTTP to the TLS port: what comes back before the server closes (no HTTP)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := raw.recv(4096):
                got += chunk
        return got


@pytest.mark.parametrize("loop", list(LOOPS))
def test_over_tls_a_failed_handshake_is_closed_and_the_next_client_served(
    loop: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = self_signed(tmp_path)

    async def main() -> None:
        async with serving(ssl_certfile=str(cert), ssl_keyfile=str(key)) as (_, port):
            got = await asyncio.to_thread(plain_get_on_tls, port)
            assert not got.startswith(b"HTTP/")
            assert await asyncio.to_thread(tls_get, port, cert) == b"HTTP/1.1 200 OK"

    with caplog.at_level(logging.DEBUG, logger="batchrock.api"):
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(main())
    # The client's failed handshake is a debug line, not an error.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("SSL" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
