"""Retries, backoff with jitter, a per-record deadline and bounded concurrency.

:class:`ResilientBackend` wraps any backend, so the engine awaits ``invoke`` once per record
and gets a final answer: retryable errors (throttling, 5xx, timeouts, dropped connections)
are tried again after an exponential, jittered pause until the attempts or the record's
deadline run out; then the last error is the record's error. ``ModelResult.info`` tells what
happened when it was more than one plain attempt: ``{"attempts": n, "throttled": t}``
(absent keys mean one attempt and no throttling).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from batchrock.backends.base import ModelBackend, ModelRequest, ModelResult, RecordError
from batchrock.metrics import process_metrics

Sleep = Callable[[float], Awaitable[None]]
log = logging.getLogger("batchrock.backends")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    #: Tries after the first one.
    max_retries: int = 4
    #: First pause; each retry doubles it, up to ``backoff_max_s``.
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    #: Wall-clock budget for one record, all attempts and pauses included (``None``: none).
    deadline_s: float | None = 600.0

    def pause(self, retry: int, rng: random.Random) -> float:
        """Pause before retry number ``retry`` (1-based): "equal jitter", half fixed and half
        random, so retries of records throttled together spread out without ever being
        immediate."""
        cap: float = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (retry - 1))
        return cap / 2 + rng.uniform(0, cap / 2)


def deadline_error(deadline_s: float) -> RecordError:
    return RecordError(
        408,
        f"Model invocation did not finish within the per-record deadline of {deadline_s:g} "
        "seconds.",
        retryable=False,
    )


class ResilientBackend:
    """Wraps ``inner`` with retries, a deadline and at most ``max_concurrency`` calls at once."""

    def __init__(
        self,
        inner: ModelBackend,
        policy: RetryPolicy | None = None,
        *,
        max_concurrency: int | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        route: str = "unnamed",
    ) -> None:
        self.inner = inner
        #: The metrics' label for this backend's requests (routing.route_label).
        self.route = route
        self._metrics = process_metrics()
        self.policy = policy or RetryPolicy()
        self.max_concurrency = max_concurrency
        self._semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._sleep = sleep
        self._rng = rng or random.Random()

    async def invoke(self, request: ModelRequest) -> ModelResult:
        deadline_s = self.policy.deadline_s
        if deadline_s is None:
            return await self._attempts(request, None)
        try:
            # The deadline starts when the record gets its first slot, so records queued
            # behind a busy backend are not failed for waiting their turn.
            async with asyncio.timeout(None) as scope:
                return await self._attempts(request, scope)
        except TimeoutError:
            return ModelResult(error=deadline_error(deadline_s))

    async def _attempts(self, request: ModelRequest, scope: asyncio.Timeout | None) -> ModelResult:
        result = await self._once(request, scope)
        error = result.error
        if error is None or not error.retryable:
            return result
        loop = asyncio.get_running_loop()
        attempts = 1
        throttled = 1 if error.code == 429 else 0
        while attempts <= self.policy.max_retries:
            pause = self.policy.pause(attempts, self._rng)
            hint = result.info.get("retry_after")
            if isinstance(hint, int | float) and hint > pause:
                pause = min(float(hint), self.policy.backoff_max_s)
            when = scope.when() if scope is not None else None
            if when is not None and loop.time() + pause >= when:
                break
            await self._sleep(pause)
            attempts += 1
            result = await self._once(request, scope)
            error = result.error
            if error is None or not error.retryable:
                break
            if error.code == 429:
                throttled += 1
        info = {k: v for k, v in result.info.items() if k != "retry_after"}
        result.info = {**info, "attempts": attempts, "throttled": throttled}
        if result.error is not None and result.error.retryable:
            # Out of retries: this is the record's final error.
            result.error = RecordError(result.error.code, result.error.message, retryable=False)
        return result

    async def _once(self, request: ModelRequest, scope: asyncio.Timeout | None) -> ModelResult:
        try:
            if self._semaphore is None:
                self._start_deadline(scope)
                return await self._timed(request)
            async with self._semaphore:
                self._start_deadline(scope)
                return await self._timed(request)
        except Exception as exc:
            # Backends report record failures as results; one that raises anyway (a plug-in's
            # bug, an outage it did not expect) gets the same treatment as a 5xx.
            if scope is not None and scope.expired():
                raise
            log.exception("model backend raised on record %s", request.record_id)
            message = f"The model backend failed: {type(exc).__name__}: {exc}"
            return ModelResult(error=RecordError(500, message, retryable=True))

    async def _timed(self, request: ModelRequest) -> ModelResult:
        """The model's answer, timed from when the request has its slot (not while it
        waits for one)."""
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self.inner.invoke(request)
            error = result.error
            outcome = "ok" if error is None else "throttled" if error.code == 429 else "error"
            return result
        finally:
            self._metrics.model_request(self.route, outcome, time.perf_counter() - started)

    def _start_deadline(self, scope: asyncio.Timeout | None) -> None:
        if scope is not None and scope.when() is None and self.policy.deadline_s is not None:
            scope.reschedule(asyncio.get_running_loop().time() + self.policy.deadline_s)

    async def aclose(self) -> None:
        await self.inner.aclose()
