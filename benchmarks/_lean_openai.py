"""A lean OpenAI-compatible fake server for the record-path benchmark: one fixed answer.

    python benchmarks/_lean_openai.py --port 8000 [--latency-ms 50] [--uvloop]

The fake server of the tests (tests/backends/fake_openai.py) reads every request into Python
objects over asyncio streams, looks for fault markers and builds each answer from the request:
about 120 µs of CPU a request, more than batchrock's record path itself, on the same cores.
A model server in real use runs on its GPU host. This one does the least an HTTP/1.1 server
can: an asyncio.Protocol per connection with httptools (llhttp) as the parser, and for each
complete request, ``--latency-ms`` later (one ``call_later`` timer, no task), the same
prepared chat completion (``echo``, finish_reason ``stop``, usage counts), written as one
block of bytes with its head. Keep-alive, Content-Length bodies, requests answered in order.
benchmarks/record_path.py runs batchrock and the raw-socket floor against it with ``--server
lean``, so both sides meet the same server; docs/benchmarks.md gives both servers' numbers.

Prints ``ready`` once listening (benchmarks/openai_backend.py's ``services`` waits for it).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import httptools
import orjson

ANSWER = orjson.dumps(
    {
        "id": "cmpl-1",
        "object": "chat.completion",
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "echo"},
                "finish_reason": "stop",
                "stop_reason": None,
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    }
)
REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(ANSWER)
    + ANSWER
)


class _Connection(asyncio.Protocol):
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_complete(self) -> None:
        if self.latency:
            self.loop.call_later(self.latency, self._reply)
        else:
            self._reply()

    def _reply(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(REPLY)


async def serve(port: int, latency: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(latency), "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    coro = serve(args.port, args.latency_ms / 1000)
    if args.uvloop:
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
