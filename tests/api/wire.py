"""Raw HTTP against the server, for what boto3 would refuse to send (or hides); and one
request straight through an ASGI app in the test's own loop (:func:`asgi_call`)."""

from __future__ import annotations

import http.client
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import orjson


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error_type(self) -> str:
        return self.headers.get("x-amzn-errortype", "").split(":", 1)[0]


def call(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> Reply:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        all_headers = {"Content-Type": "application/json"} if body is not None else {}
        all_headers.update(headers or {})
        conn.request(method, path, body=body, headers=all_headers)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


async def asgi_call(
    app: Any,
    method: str,
    raw_path: str,
    *,
    query: str = "",
    headers: Sequence[tuple[str, str]] = (("host", "127.0.0.1"),),
    body: bytes = b"",
    content_length: bool = True,
) -> Reply:
    """One request through the ASGI ``app`` (``raw_path`` percent-encoded, as sent); with
    a Content-Length header unless ``content_length`` is false (then the body is sent all
    the same, for an app that asks)."""
    scope = {
        "type": "http",
        "method": method,
        "scheme": "http",
        "path": unquote_plus(raw_path),
        "raw_path": raw_path.encode("utf-8", "surrogateescape"),
        "query_string": query.encode("utf-8"),
        "headers": [(k.encode(), v.encode("utf-8")) for k, v in headers]
        + ([(b"content-length", str(len(body)).encode())] if content_length else []),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    answer: dict[str, Any] = {"body": b""}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message["headers"]
            }
        else:
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return Reply(answer["status"], answer["headers"], answer["body"])
