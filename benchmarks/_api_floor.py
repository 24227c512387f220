"""The floor for the API benchmarks: a bare uvicorn app answering canned bytes.

    python benchmarks/_api_floor.py --port 8001 --answers answers.json

``answers.json`` maps a request target (path and query, as the client sends it) to the body
batchrock gave for it (base64). The app answers each with those bytes, the same content type and
a request id, on the same event loop (uvloop, by default) and uvicorn HTTP implementation
(httptools) that ``batchrock serve`` uses (``--loop``/``--http`` choose others, to compare), so
a benchmark's ratio measures what batchrock does per request beyond HTTP itself: signature
checks, validation, the store, the codec, and the guards of api/connections.py.
"""

from __future__ import annotations

import argparse
import base64
import uuid
from pathlib import Path
from typing import Any

import orjson
import uvicorn


def make_app(answers: dict[bytes, bytes]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        target = scope["raw_path"]
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        body = answers.get(target, b"{}")
        headers = [
            (b"content-type", b"application/json"),
            (b"x-amzn-requestid", str(uuid.uuid4()).encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answers", type=Path, required=True)
    # What ``batchrock serve`` runs on by default: uvloop (setting event_loop) and httptools.
    parser.add_argument("--loop", default="uvloop", choices=["asyncio", "uvloop"])
    parser.add_argument("--http", default="httptools", choices=["h11", "httptools"])
    args = parser.parse_args()
    raw = orjson.loads(args.answers.read_bytes())
    answers = {k.encode(): base64.b64decode(v) for k, v in raw.items()}
    uvicorn.run(
        make_app(answers),
        host="127.0.0.1",
        port=args.port,
        loop=args.loop,
        http=args.http,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
