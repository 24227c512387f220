"""The console's HTTP plumbing: security headers on every answer, bounded bodies, JSON.

Every answer forbids loading anything from elsewhere (``Content-Security-Policy``), framing,
MIME sniffing and referrers; JSON answers are never cached. Pages build their DOM with
``textContent`` only, so no value from a job reaches the page as markup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from batchrock.api.body import BodyTooLarge, json_object, read_body
from batchrock.errors import ServiceError, ValidationException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Only this server's own scripts, styles, images and fetches; no frames, plugins or forms
#: posted elsewhere.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: Output files shown in the browser run nothing at all, whatever they contain.
FILE_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"
#: Console request bodies (sign-in, create, stop) are small.
MAX_BODY_BYTES = 64 * 1024


def security_headers(csp: str = PAGE_CSP) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
    ]


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *security_headers(),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, data: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send_bytes(
        send,
        status,
        orjson.dumps(data),
        "application/json",
        [(b"cache-control", b"no-store"), *(extra or [])],
    )


async def send_error(send: Send, exc: ServiceError) -> None:
    """A typed error as the console's scripts read it: ``{"code", "message"}``."""
    await send_json(send, exc.http_status, {"code": exc.code, "message": exc.message})


async def send_stream(
    send: Send,
    headers: list[tuple[bytes, bytes]],
    chunks: AsyncIterator[bytes],
    limit: int | None,
) -> None:
    """Stream ``chunks`` (at most ``limit`` bytes of them) as a 200 answer: a large output
    file is never held in memory. The first chunk is read before anything is sent, so an
    object that cannot be read is still an error answer, not a broken 200."""
    iterator = aiter(chunks)
    first = await anext(iterator, b"")
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    sent = 0

    async def rest() -> AsyncIterator[bytes]:
        yield first
        async for chunk in iterator:
            yield chunk

    async for chunk in rest():
        if limit is not None and sent + len(chunk) >= limit:
            await send(
                {"type": "http.response.body", "body": chunk[: limit - sent], "more_body": True}
            )
            break
        sent += len(chunk)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def read_json(receive: Receive) -> dict[str, Any]:
    """The request body as a JSON object; a bad or oversized body is a ValidationException."""
    try:
        return json_object(await read_body(receive, MAX_BODY_BYTES))
    except BodyTooLarge as exc:
        raise ValidationException(str(exc)) from None


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def cookie(scope: Scope, name: str) -> str | None:
    raw = header(scope, b"cookie")
    if raw is None:
        return None
    for part in raw.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None
