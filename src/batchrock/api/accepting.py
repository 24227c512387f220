"""New connections accepted in batches, not one a turn of the event loop.

libuv, under uvloop, accepts one connection each time the listening socket polls readable and
leaves the next to the next turn of the loop (libuv 1.45, "unix: don't accept() connections in
a loop"). Under load a turn is long: every connection with a request ready is served in it, 60
to 100 ms with 200 busy clients on this machine's share of a core. So a burst of new
connections waited in the kernel's accept queue, one more accepted a turn, and the first
request on the last of them waited seconds: the 1-9 s maxima of ``benchmarks/api_load.py``
(docs/benchmarks.md, "API under load": 200 connections opened at once, the last accepted 2.8 s
later). :class:`Acceptor` takes up to :data:`ACCEPT_BATCH` a wake-up instead. The bound keeps one
wake-up to a couple of milliseconds (10-40 µs a connection), as the rule that nothing holds
the loop longer asks; asyncio's own selector loop takes up to the whole backlog (2048) at once.

:class:`BatchAcceptingServer` is uvicorn's server with its listeners made so. A loop without
``add_reader`` (asyncio's proactor loop on Windows) keeps uvicorn's own listener.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable

import uvicorn

log = logging.getLogger("batchrock.api")

#: Connections accepted at most in one wake-up of the listening socket.
ACCEPT_BATCH = 64
#: After accept() failed for want of resources (no file descriptor left, no memory): how long
#: to leave the socket before trying again (asyncio's ACCEPT_RETRY_DELAY), rather than spin on
#: a socket that stays readable.
RETRY_AFTER_SECONDS = 1.0


class Acceptor:
    """Accepting on one listening socket, on the running loop, for ``protocol_factory``'s
    protocols (over TLS with ``tls``). Has what uvicorn's shutdown asks of a server: ``close``
    and ``wait_closed``. Raises ``NotImplementedError`` where the loop has no ``add_reader``."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        tls: ssl.SSLContext | None = None,
        batch: int = ACCEPT_BATCH,
        retry_after: float = RETRY_AFTER_SECONDS,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._fd = sock.fileno()
        self._factory = protocol_factory
        self._tls = tls
        self._batch = batch
        self._retry_after = retry_after
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        #: Connections accepted whose transport is being set up (a TLS handshake, or the turn
        #: until connection_made): held here, since the loop keeps only weak references.
        self._connecting: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        self._loop.add_reader(self._fd, self._accept)

    def _accept(self) -> None:
        for _ in range(self._batch):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # none left
            except ConnectionAbortedError:
                continue  # the client gave up while it waited in the queue
            except OSError as exc:
                # EMFILE, ENFILE, ENOBUFS, ENOMEM: the socket stays readable, so trying again
                # at once would spin; the waiting connections stay in the kernel's queue.
                log.warning(
                    "cannot accept connections on %s: %s; trying again in %g s",
                    self._sock.getsockname(),
                    exc.strerror or exc,
                    self._retry_after,
                )
                self._loop.remove_reader(self._fd)
                self._retry = self._loop.call_later(self._retry_after, self._resume)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, ssl=self._tls)
        except OSError as exc:
            # A failed TLS handshake (SSLError: plain HTTP to the TLS port, say), a client gone
            # (reset) or too slow (timeout): the client's doing, not the server's, and the
            # transport has closed the socket: a debug line only.
            log.debug("incoming connection not set up: %r", exc)
        except Exception:
            log.exception("incoming connection not set up")

    def _resume(self) -> None:
        self._retry = None
        if not self._closed:
            self._loop.add_reader(self._fd, self._accept)

    def close(self) -> None:
        """Stop accepting (the socket itself is its owner's to close)."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        else:
            self._loop.remove_reader(self._fd)

    async def wait_closed(self) -> None:
        """Nothing to wait for: the connections are uvicorn's to wait for."""


class BatchAcceptingServer(uvicorn.Server):
    """uvicorn's server, its listening sockets accepted by :class:`Acceptor`."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None:  # uvicorn binds the socket itself: its listener, as it is
            await super().startup(sockets)
            return
        # The lifespan's start-up, and no listener of uvicorn's own (an empty list of sockets).
        await super().startup(sockets=[])
        loop = asyncio.get_running_loop()
        config = self.config

        def protocol() -> asyncio.Protocol:
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=loop,
            )
            return made

        servers: list[Acceptor | asyncio.Server] = []
        for sock in sockets:
            try:
                servers.append(Acceptor(sock, protocol, tls=config.ssl))
            except NotImplementedError:  # no add_reader on this loop
                servers.append(
                    await loop.create_server(
                        protocol, sock=sock, ssl=config.ssl, backlog=config.backlog
                    )
                )
        self.servers = servers  # type: ignore[assignment]  # close() and wait_closed() alike
