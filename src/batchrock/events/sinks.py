"""Where events go: an HTTP webhook, a JSONL file, an EventBridge bus (PutEvents).

A sink delivers a batch of envelopes, oldest first, and says how many of the first ones got
through (:meth:`Sink.deliver`); it raises :class:`DeliveryFailed` when none did. Retrying,
ordering and the durable cursor are the outbox's (:mod:`.outbox`), not the sinks'. Nothing
here logs a secret: the webhook's key signs, it is never part of a message or an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson

from batchrock.clock import Clock
from batchrock.events.envelope import DETAIL_TYPE, Envelope
from batchrock.settings import Settings, SettingsError

#: Headers of a webhook delivery (docs/events.md, "Webhook").
SIGNATURE_HEADER = "X-Batchrock-Signature"
TIMESTAMP_HEADER = "X-Batchrock-Timestamp"
EVENT_ID_HEADER = "X-Batchrock-Event-Id"


class DeliveryFailed(Exception):
    """Nothing of the batch was delivered; the message says why (no secrets in it)."""


class Sink(Protocol):
    #: The name the sink's delivery cursor has in the store.
    name: str
    #: Most envelopes one :meth:`deliver` takes.
    batch_size: int

    async def deliver(self, envelopes: Sequence[Envelope]) -> int:
        """Deliver ``envelopes`` in order; how many of the first ones were delivered (at
        least 1), or :class:`DeliveryFailed`."""
        ...

    async def aclose(self) -> None: ...


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature: HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``, hex."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookSink:
    """POSTs each event, alone, as its JSON envelope; any 2xx answer is a delivery."""

    name = "webhook"
    batch_size = 1

    def __init__(self, url: str, secret: str | None, timeout: float, clock: Clock) -> None:
        self._url = url
        self._secret = secret
        self._clock = clock
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def deliver(self, envelopes: Sequence[Envelope]) -> int:
        (envelope,) = envelopes
        timestamp = str(int(self._clock.now().timestamp()))
        headers = {
            "content-type": "application/json",
            EVENT_ID_HEADER: envelope.event_id,
            TIMESTAMP_HEADER: timestamp,
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, envelope.json)
        try:
            response = await self._client.post(self._url, content=envelope.json, headers=headers)
        except httpx.TimeoutException:
            raise DeliveryFailed("timed out") from None
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"HTTP {response.status_code}")
        return 1

    async def aclose(self) -> None:
        await self._client.aclose()


class JsonlSink:
    """Appends one envelope per line to a file, fsynced before the batch counts as delivered.
    The file is created 0600. A line torn by a crash mid-write is left alone on its own line:
    the next append starts on a fresh one (and the event is written again, whole)."""

    name = "jsonl"
    batch_size = 100

    def __init__(self, path: Path) -> None:
        self.path = path

    async def deliver(self, envelopes: Sequence[Envelope]) -> int:
        data = b"".join(e.json + b"\n" for e in envelopes)
        try:
            await asyncio.to_thread(_append, self.path, data)
        except OSError as exc:
            raise DeliveryFailed(f"cannot append to {self.path}: {exc.strerror or exc}") from None
        return len(envelopes)

    async def aclose(self) -> None:
        return None


def _append(path: Path, data: bytes) -> None:
    # Read-write: the last byte is read back (a torn line); every write still appends.
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if size == 0:  # a new file: make its directory entry durable too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class EventBridgeSink:
    """PutEvents to a bus, up to 10 entries a call (EventBridge's limit), with botocore: AWS
    itself or any EventBridge-compatible endpoint. Credentials come from botocore's usual
    chain (environment, profile, instance role)."""

    name = "eventbridge"
    batch_size = 10

    def __init__(
        self,
        bus: str,
        *,
        region: str,
        endpoint_url: str | None,
        source: str,
        timeout: float,
    ) -> None:
        import botocore.session
        from botocore.config import Config

        self._bus = bus
        self._source = source
        self._client: Any = botocore.session.get_session().create_client(
            "events",
            region_name=region,
            endpoint_url=endpoint_url,
            # The outbox retries (and keeps the order); botocore's own retries would only
            # hold the batch longer.
            config=Config(
                retries={"total_max_attempts": 1},
                connect_timeout=timeout,
                read_timeout=timeout,
            ),
        )

    def _entry(self, envelope: Envelope) -> dict[str, Any]:
        body = envelope.body
        return {
            "Time": envelope.time,
            "Source": self._source,
            "Resources": body["resources"],
            "DetailType": DETAIL_TYPE,
            "Detail": orjson.dumps(body["detail"]).decode(),
            "EventBusName": self._bus,
        }

    async def deliver(self, envelopes: Sequence[Envelope]) -> int:
        entries = [self._entry(e) for e in envelopes]
        try:
            answer = await asyncio.to_thread(self._client.put_events, Entries=entries)
        except Exception as exc:  # botocore's errors share no base worth naming here
            raise DeliveryFailed(f"PutEvents: {type(exc).__name__}: {exc}") from None
        results = answer.get("Entries", [])
        delivered = 0
        for result in results:
            if result.get("ErrorCode"):
                break
            delivered += 1
        if len(results) != len(entries) and delivered == len(results):
            delivered = 0  # an answer that does not account for every entry proves nothing
        if delivered == 0:
            first = results[0] if results else {}
            code = first.get("ErrorCode", "no result entries")
            raise DeliveryFailed(f"PutEvents: {code}: {first.get('ErrorMessage', '')}".strip())
        return delivered

    async def aclose(self) -> None:
        self._client.close()


def check_settings(settings: Settings) -> None:
    """SettingsError (one line) for a sink setting that cannot work, before anything starts."""
    if settings.events_webhook_url:
        parts = urlsplit(settings.events_webhook_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise SettingsError("setting events_webhook_url: not an http:// or https:// URL")
    path = settings.events_jsonl_path
    if path is not None and (path.is_dir() or not path.parent.is_dir()):
        raise SettingsError(f"setting events_jsonl_path: {path} is not a file in a folder")
    if settings.events_eventbridge_bus:
        try:  # botocore checks the Region's form and the endpoint URL as it builds a client
            _eventbridge_sink(settings)._client.close()
        except Exception as exc:
            raise SettingsError(
                f"setting events_eventbridge_region or events_eventbridge_endpoint_url: {exc}"
            ) from None


def sinks_from(settings: Settings, clock: Clock) -> list[Sink]:
    """The sinks the settings configure, in a fixed order (see :func:`check_settings`)."""
    check_settings(settings)
    sinks: list[Sink] = []
    if settings.events_webhook_url:
        sinks.append(
            WebhookSink(
                settings.events_webhook_url,
                settings.events_webhook_secret,
                settings.events_timeout_seconds,
                clock,
            )
        )
    if settings.events_jsonl_path is not None:
        sinks.append(JsonlSink(settings.events_jsonl_path))
    if settings.events_eventbridge_bus:
        sinks.append(_eventbridge_sink(settings))
    return sinks


def _eventbridge_sink(settings: Settings) -> EventBridgeSink:
    assert settings.events_eventbridge_bus
    return EventBridgeSink(
        settings.events_eventbridge_bus,
        region=settings.events_eventbridge_region or settings.default_region,
        endpoint_url=settings.events_eventbridge_endpoint_url,
        source=settings.events_eventbridge_source,
        timeout=settings.events_timeout_seconds,
    )
