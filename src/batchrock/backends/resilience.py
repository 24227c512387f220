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
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from batchrock.backends.base import ModelBackend, ModelRequest, ModelResult, RecordError
from batchrock.backends.deadlines import (
    ACTIVE,
    EXPIRED,
    WAITING,
    Deadlines,
    Entry,
    current_task,
)
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


class AttemptSink(Protocol):
    """Where a retry layer reports each attempt (the process's metrics, or, in a worker
    process, what it sends back to the engine for the engine's metrics)."""

    def model_request(self, route: str, outcome: str, seconds: float) -> None: ...


class Slots:
    """At most ``size`` holders at once, with ``asyncio.Semaphore``'s contract: first come,
    first served (a released slot goes straight to the longest waiter, so no newcomer takes
    it first), and a waiter cancelled after it was handed a slot passes the slot on.

    Taken on every record's attempt: where a slot is free, taking it is two reads and a
    decrement in the caller (``free and not waiting``, then ``free -= 1``), where ``await
    Semaphore.acquire()`` makes a coroutine and scans its waiters for cancelled ones (about
    a microsecond a record in the engine's loop). :meth:`wait` is for the other case.
    """

    __slots__ = ("free", "size", "waiting")

    def __init__(self, size: int) -> None:
        self.size = size
        #: Slots not held and not handed to a waiter.
        self.free = size
        #: Waiters in arrival order; a cancelled one stays until a release passes it over.
        self.waiting: deque[asyncio.Future[None]] = deque()

    async def wait(self) -> None:
        """Take a slot, waiting for one when none is free (or others wait already)."""
        if self.free and not self.waiting:
            self.free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot as it was cancelled: the next one has it
            raise

    def release(self) -> None:
        waiting = self.waiting
        while waiting:
            future = waiting.popleft()
            if not future.done():  # cancelled waiters are skipped
                future.set_result(None)
                return
        self.free += 1


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
        metrics: AttemptSink | None = None,
    ) -> None:
        self.inner = inner
        #: The metrics' label for this backend's requests (routing.route_label).
        self.route = route
        self._metrics: AttemptSink = metrics or process_metrics()
        self.policy = policy or RetryPolicy()
        self.max_concurrency = max_concurrency
        self._slots = Slots(max_concurrency) if max_concurrency else None
        self._sleep = sleep
        self._rng = rng or random.Random()
        #: The per-record deadlines of the event loop this backend is used from.
        self._deadlines: Deadlines | None = None

    @property
    def slots(self) -> Slots | None:
        """The ``max_concurrency`` bound's slots (``None``: no bound)."""
        return self._slots

    def over(self, inner: ModelBackend) -> ResilientBackend:
        """The same retries, deadline and metrics' label over ``inner``, holding the same
        ``max_concurrency`` slots: one bound for both."""
        twin = ResilientBackend(
            inner,
            self.policy,
            sleep=self._sleep,
            rng=self._rng,
            route=self.route,
            metrics=self._metrics,
        )
        twin.max_concurrency, twin._slots = self.max_concurrency, self._slots
        return twin

    async def invoke(self, request: ModelRequest) -> ModelResult:
        # One coroutine for every attempt, with the deadline kept by the loop's Deadlines
        # (one timer for all records) rather than an asyncio.timeout each: this layer is
        # awaited once per record, and each level of coroutines costs on every suspension.
        policy, inner, slots = self.policy, self.inner, self._slots
        metrics, route = self._metrics, self.route
        deadline_s = policy.deadline_s
        entry: Entry | None = None
        deadlines: Deadlines | None = None
        cancelling = 0
        if deadline_s is not None:
            deadlines = self._deadlines
            task = current_task(deadlines)
            if deadlines is None or deadlines.loop is not task.get_loop():
                deadlines = self._deadlines = Deadlines(task.get_loop())
            entry = Deadlines.new(task)
            cancelling = task.cancelling()
        try:
            attempts = 1
            throttled = 0
            while True:
                # One attempt, inline (each level of coroutines costs on every suspension),
                # timed from when it has its slot, not while it waits for one; the deadline
                # starts with the first slot, so records queued behind a busy backend are not
                # failed for waiting their turn.
                if slots is not None:
                    if slots.free and not slots.waiting:
                        slots.free -= 1
                    else:
                        await slots.wait()
                if entry is not None and entry[2] is WAITING:
                    assert deadlines is not None and deadline_s is not None
                    deadlines.start(entry, deadline_s)
                started = time.perf_counter()
                outcome = "error"
                try:
                    result = await inner.invoke(request)
                    error = result.error
                    if error is None:
                        outcome = "ok"
                    elif error.code == 429:
                        outcome = "throttled"
                except Exception as exc:
                    # Backends report record failures as results; one that raises anyway (a
                    # plug-in's bug, an outage it did not expect) is treated like a 5xx.
                    if entry is not None and entry[2] is EXPIRED:
                        raise
                    log.exception("model backend raised on record %s", request.record_id)
                    message = f"The model backend failed: {type(exc).__name__}: {exc}"
                    result = ModelResult(error=RecordError(500, message, retryable=True))
                    error = result.error
                finally:
                    if slots is not None:
                        slots.release()
                    metrics.model_request(route, outcome, time.perf_counter() - started)
                if error is None or not error.retryable:
                    if attempts == 1:
                        return result
                    break
                if error.code == 429:
                    throttled += 1
                if attempts > policy.max_retries:
                    break
                pause = policy.pause(attempts, self._rng)
                hint = result.info.get("retry_after")
                if isinstance(hint, int | float) and hint > pause:
                    pause = min(float(hint), policy.backoff_max_s)
                if entry is not None and entry[2] is ACTIVE:
                    if asyncio.get_running_loop().time() + pause >= entry[0]:
                        break
                await self._sleep(pause)
                attempts += 1
        except (asyncio.CancelledError, Exception):
            # The deadline cancels the record's task; any other cancellation goes on.
            if entry is not None and entry[2] is EXPIRED and entry[1].uncancel() <= cancelling:
                assert deadline_s is not None
                return ModelResult(error=deadline_error(deadline_s))
            raise
        finally:
            if deadlines is not None and entry is not None:
                deadlines.finish(entry)
        info = {k: v for k, v in result.info.items() if k != "retry_after"}
        result.info = {**info, "attempts": attempts, "throttled": throttled}
        if result.error is not None and result.error.retryable:
            # Out of retries: this is the record's final error.
            result.error = RecordError(result.error.code, result.error.message, retryable=False)
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()
