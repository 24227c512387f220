"""The HTTP/1.1 the fake model servers speak: keep-alive and Content-Length bodies over
asyncio streams, just enough for botocore and httpx, so that a fake controls every byte.

A fake gives an ``answer(method, path, headers, body)`` coroutine returning ``(status,
payload, extra header lines)``, or ``None`` to drop the connection without answering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Reply = tuple[int, bytes, list[str]]
Answer = Callable[[str, str, dict[str, str], bytes], Awaitable[Reply | None]]


def handler(
    answer: Answer,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                reply = await answer(method, path, headers, body)
                if reply is None:
                    return  # a dropped connection
                status, payload, extra = reply
                out = [f"HTTP/1.1 {status} X", f"Content-Length: {len(payload)}"]
                out += ["Content-Type: application/json", *extra]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    return handle


async def serve(answer: Answer, port: int) -> None:
    """Serve on 127.0.0.1:``port`` until killed; prints ``ready`` once listening (the tests'
    process wrapper waits for it)."""
    server = await asyncio.start_server(handler(answer), "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()
