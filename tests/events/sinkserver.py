"""A real HTTP server standing in for a webhook receiver (or an EventBridge endpoint): it
records every request and answers each as the test's ``policy`` says (accept, refuse with a
status, hold the answer until released, or drop the connection)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

#: What to do with a request: an int status, "hold" (200 once released), "slow" (200 after
#: 0.3 s), "drop" (close the connection unanswered).
Policy = Callable[["Received"], "int | str"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answer: int | str = 0

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class SinkServer:
    def __init__(self, policy: Policy, reply: Callable[[Received], bytes] | None = None) -> None:
        self.policy = policy
        self.reply = reply or (lambda r: b"{}")
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with owner.lock:
                    answer = owner.policy(got)
                    got.answer = answer
                    owner.received.append(got)
                if answer == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if answer == "hold":
                    owner.released.wait(60)
                    answer = 200
                elif answer == "slow":
                    time.sleep(0.3)
                    answer = 200
                payload = owner.reply(got)
                self.send_response(int(answer))
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.answer in (200, "slow")]

    def wait_for(self, check: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"sink server never saw it: {len(self.received)} requests")
            time.sleep(0.02)


@contextmanager
def sink_server(
    policy: Policy, reply: Callable[[Received], bytes] | None = None
) -> Iterator[SinkServer]:
    server = SinkServer(policy, reply)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.released.set()
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(10)
