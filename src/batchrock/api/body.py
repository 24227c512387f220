"""Reading a request body whole, within a size limit, and as a JSON object (the API's and the
console's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from batchrock.errors import ValidationException

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class ClientDisconnected(Exception):
    """The connection closed before the request body was complete."""


class BodyTooLarge(Exception):
    """The body grew past ``limit`` bytes (the caller answers in its own shape)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body is larger than the limit of {limit} bytes.")
        self.limit = limit


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole body; raises :class:`BodyTooLarge` as soon as it passes ``limit`` (nothing
    more is buffered) and :class:`ClientDisconnected` when the client leaves first."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON object body (empty: ``{}``); anything else is a ValidationException."""
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationException(f"Could not parse request body into json: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationException("Request body must be a JSON object.")
    return data
