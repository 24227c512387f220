"""The floor for the record path: a bare client on raw asyncio sockets.

    python benchmarks/_socket_floor.py --port 8000 --input records.jsonl --output out.jsonl \\
        [--concurrency 256] [--model bench] [--uvloop]

Reads the Claude Messages records of a batchrock input file (one ``{"recordId", "modelInput"}``
JSON line each), sends each as the chat completion batchrock's OpenAI-compatible backend sends
(``model``, ``messages``, ``max_tokens``) to the fake server of the tests, over ``--concurrency``
kept-alive connections with one request in flight on each (asyncio.Protocol, Content-Length
bodies, no HTTP library), and writes one output line per answer: the record id, its input and a
Claude Messages body made from the answer's text, stop reason and usage. No retries, no
checkpoints, no validation beyond what the JSON parser does: what is left is the least work a
Python client on the same event loop does for one record, which is what benchmarks/record_path.py
compares batchrock with.

When done it prints ``cpu <seconds> records <n> wall <seconds>``: this process's CPU time (user
+ system) from just before the first request to just after the last line was written, so
start-up and the interpreter's import time are not counted, and the wall-clock time from just
before it connects to the server to the same end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import orjson

_STOP = {"length": "max_tokens", "stop": "end_turn", "tool_calls": "tool_use"}


class _Exchange(asyncio.Protocol):
    """One kept-alive connection: write a request, wait for one Content-Length response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.body_at = -1
        self.length = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.body_at < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.body_at = end + 4
            self.length = 0
            for line in bytes(buffer[:end]).lower().split(b"\r\n")[1:]:
                if line.startswith(b"content-length:"):
                    self.length = int(line[15:])
        if len(buffer) >= self.body_at + self.length:
            body = bytes(buffer[self.body_at : self.body_at + self.length])
            del buffer[: self.body_at + self.length]
            self.body_at = -1
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(body)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection"))

    def send(self, request: bytes) -> asyncio.Future[bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter


def _render(record: dict[str, Any], answer: dict[str, Any]) -> bytes:
    choice = answer["choices"][0]
    usage = answer.get("usage") or {}
    output = {
        "id": answer.get("id", ""),
        "type": "message",
        "role": "assistant",
        "model": record["modelInput"].get("model", ""),
        "content": [{"type": "text", "text": choice["message"]["content"]}],
        "stop_reason": _STOP.get(choice.get("finish_reason"), "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        },
    }
    return orjson.dumps({**record, "modelOutput": output}) + b"\n"


async def run(
    port: int, lines: Iterator[bytes], out: Any, concurrency: int, model: str
) -> tuple[float, float, int]:
    loop = asyncio.get_running_loop()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    head += "Content-Type: application/json\r\nContent-Length: "
    prefix = head.encode()
    done = 0
    pending: list[bytes] = []

    async def worker(exchange: _Exchange) -> None:
        nonlocal done
        for line in lines:
            record = orjson.loads(line)
            body = record["modelInput"]
            payload = orjson.dumps(
                {"model": model, "messages": body["messages"], "max_tokens": body["max_tokens"]}
            )
            raw = await exchange.send(prefix + b"%d\r\n\r\n" % len(payload) + payload)
            pending.append(_render(record, orjson.loads(raw)))
            done += 1
            if len(pending) >= 256:
                out.write(b"".join(pending))
                pending.clear()

    wall = time.monotonic()  # the connections are part of the job's time, as in batchrock's
    exchanges = []
    for _ in range(concurrency):
        _, protocol = await loop.create_connection(_Exchange, "127.0.0.1", port)
        exchanges.append(protocol)
    started = _cpu()
    await asyncio.gather(*(worker(e) for e in exchanges))
    out.write(b"".join(pending))
    out.flush()
    os.fsync(out.fileno())
    cpu, wall = _cpu() - started, time.monotonic() - wall
    for exchange in exchanges:
        assert exchange.transport is not None
        exchange.transport.close()
    return cpu, wall, done


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, not asyncio's loop")
    args = parser.parse_args()
    with args.input.open("rb") as source, args.output.open("wb") as out:
        lines = (line for line in source if line.strip())
        coro = run(args.port, lines, out, args.concurrency, args.model)
        if args.uvloop:
            import uvloop

            cpu, wall, done = uvloop.run(coro)
        else:
            cpu, wall, done = asyncio.run(coro)
    print(f"cpu {cpu:.6f} records {done} wall {wall:.6f}", flush=True)


if __name__ == "__main__":
    main()
