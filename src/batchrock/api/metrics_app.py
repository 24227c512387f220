"""A ``batchrock worker``'s own HTTP listener (setting ``metrics_port``): ``GET /metrics`` and
the health check, behind the same Host / Origin guard as the API. A worker's engine counts
in its own process, which ``serve``'s ``/metrics`` cannot show (docs/metrics.md)."""

from __future__ import annotations

import time

import orjson

from batchrock.api import guard
from batchrock.api.app import (
    HEALTH_PATH,
    METRICS_PATH,
    MetricsEndpoint,
    Receive,
    Scope,
    Send,
    UnknownOperation,
    error_response,
)
from batchrock.errors import ServiceError
from batchrock.settings import Settings
from batchrock.store.base import JobStore


class MetricsApp:
    """ASGI: ``GET /metrics`` and ``GET /_batchrock/health``; anything else is a 404."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self._guard = guard.RequestGuard(settings)
        self.metrics = MetricsEndpoint(settings, store)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no lifespan to run; websockets are not ours
            return
        started = time.perf_counter()
        scope["batchrock.operation"] = "unknown"
        path = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
        try:
            self._guard.check(scope)
            if scope["method"] != "GET" or path not in (
                METRICS_PATH.encode(),
                HEALTH_PATH.encode(),
            ):
                raise UnknownOperation()
            if path == METRICS_PATH.encode():
                await self.metrics.answer(scope, send, started)
                return
            scope["batchrock.operation"] = "Health"
            status, payload = 200, orjson.dumps({"status": "ok"})
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ]
        except ServiceError as exc:
            status, headers, payload = error_response(exc)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        self.metrics.process.api_request(
            scope["batchrock.operation"], status, time.perf_counter() - started
        )
