"""A per-account request rate limit at the edge: one token bucket per account.

An account's bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second; a request
takes one, and a request finding the bucket empty is answered ``ThrottlingException`` (429),
which botocore, the AWS CLI and the JS SDK retry with backoff. Time comes from the
:class:`~batchrock.clock.Clock` (tests move a FakeClock); a check is a dict lookup and a little
arithmetic. Each ``batchrock serve`` keeps its own buckets (docs/access.md, "Throttling and
quotas"); its API processes share them (:class:`SharedRateLimiter`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from batchrock.clock import Clock
from batchrock.errors import ThrottlingException
from batchrock.settings import Settings
from batchrock.shared_state import WAIT_SECONDS, SharedState, SharedStateBusy

log = logging.getLogger("batchrock.api")

#: What a request is answered when the shared file stays locked past ``WAIT_SECONDS`` (the
#: words the API answers a busy job store with, api/app.py).
BUSY_MESSAGE = "The service is busy. Resubmit your request later."
#: Buckets are forgotten once full (a fresh one is the same) when more than this many are held.
TRACKED_ACCOUNTS = 10_000


class RateLimiter:
    """``check(account_id)`` takes a token or raises :class:`ThrottlingException`."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = float(burst if burst > 0 else max(1, math.ceil(rate)))
        self.clock = clock
        #: account -> [tokens, time they were counted (seconds)]
        self._buckets: dict[str, list[float]] = {}
        self._prune_at = TRACKED_ACCOUNTS

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> RateLimiter | None:
        """The limiter ``settings`` ask for; ``None`` when there is no limit (the default)."""
        if settings.rate_limit_per_second <= 0:
            return None
        return cls(settings.rate_limit_per_second, settings.rate_limit_burst, clock)

    def check(self, account_id: str) -> None:
        if not self.allow(account_id):
            raise ThrottlingException()

    async def acheck(self, account_id: str) -> None:
        """:meth:`check`, for a limiter that may have to wait (:class:`SharedRateLimiter`)."""
        self.check(account_id)

    def allow(self, account_id: str) -> bool:
        now = self.clock.now().timestamp()
        bucket = self._buckets.get(account_id)
        if bucket is None:
            if len(self._buckets) >= self._prune_at:
                self._prune(now)
            bucket = self._buckets[account_id] = [self.burst, now]
        else:
            # A clock set back counts as no time passed, never as tokens taken away.
            elapsed = max(0.0, now - bucket[1])
            bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate)
            bucket[1] = now
        if bucket[0] < 1.0:
            return False
        bucket[0] -= 1.0
        return True

    def _prune(self, now: float) -> None:
        """Drop the buckets that have filled up again. What stays was used within the last
        ``burst / rate`` seconds; the next prune waits until twice as many are held, so
        pruning costs O(1) a request however many accounts call."""
        full = [
            account
            for account, (tokens, at) in self._buckets.items()
            if tokens + max(0.0, now - at) * self.rate >= self.burst
        ]
        for account in full:
            del self._buckets[account]
        self._prune_at = max(TRACKED_ACCOUNTS, 2 * len(self._buckets))


class SharedRateLimiter(RateLimiter):
    """The same buckets, kept in the file every API process of one ``serve`` shares (setting
    ``api_processes``): an account's rate is the same however its calls spread over the
    processes. A check is one short SQLite transaction on a connection that never waits for
    another process's lock (:mod:`batchrock.shared_state`). One that finds the file locked
    waits for it with the event loop free: one task of the process at a time tries again,
    after pauses (``asyncio.sleep``, 1 ms doubling to 5 ms), and the process's other takes
    queue behind it in order, so a wait costs one try every few milliseconds however many
    requests wait. After :data:`~batchrock.shared_state.WAIT_SECONDS` a request is
    answered ``ThrottlingException`` ("busy"), as one that finds the job store locked is
    (SDKs retry it), never let through unchecked. A warning says so once the file has been
    waited for :attr:`WARN_AFTER_SECONDS` (it is held for microseconds: that long means
    another process is stopped or stuck)."""

    #: Checks between two removals of the buckets that have filled up again.
    PRUNE_EVERY = 10_000
    #: Pauses between tries on a locked file: short at first (it is held for microseconds),
    #: doubling up to the cap, which bounds what a long wait costs (a try is microseconds).
    PAUSE_FIRST_SECONDS = 0.001
    PAUSE_MAX_SECONDS = 0.005
    WAIT_SECONDS = WAIT_SECONDS
    WARN_AFTER_SECONDS = 0.1

    def __init__(self, rate: float, burst: int, clock: Clock, state: SharedState) -> None:
        super().__init__(rate, burst, clock)
        self._state = state
        self._checks = 0
        #: Held by the one task of this process that waits for the file; the others queue.
        self._waiting = asyncio.Lock()

    @classmethod
    def shared_from_settings(
        cls, settings: Settings, clock: Clock, state: SharedState
    ) -> SharedRateLimiter | None:
        if settings.rate_limit_per_second <= 0:
            return None
        return cls(settings.rate_limit_per_second, settings.rate_limit_burst, clock, state)

    def allow(self, account_id: str) -> bool:
        """One try, no wait: :class:`~batchrock.shared_state.SharedStateBusy` if the file is
        locked (the API takes its tokens with :meth:`acheck`, which waits for it)."""
        return self._take(account_id)

    async def acheck(self, account_id: str) -> None:
        if self._waiting.locked():
            allowed = await self._wait_and_take(account_id)  # behind the one waiting
        else:
            try:
                allowed = self._take(account_id)
            except SharedStateBusy:
                allowed = await self._wait_and_take(account_id)
        if not allowed:
            raise ThrottlingException()

    async def _wait_and_take(self, account_id: str) -> bool:
        # Real time, not the Clock seam: this is a wait on another process's lock, which a
        # test's frozen clock must not stretch into a hang (as the store's, store/sqlite.py).
        started = time.monotonic()
        if asyncio.current_task() is None:
            # Still in the request's first step, which serve's cycle runs outside any task
            # (api/cycle.py): asyncio.timeout needs one, and this hands the request to one.
            await asyncio.sleep(0)
        try:
            async with asyncio.timeout(self.WAIT_SECONDS):
                await self._waiting.acquire()
        except TimeoutError:
            log.debug("rate limit: waited %.1f s in line for the shared file", self.WAIT_SECONDS)
            raise ThrottlingException(BUSY_MESSAGE) from None
        try:
            return await self._take_when_free(account_id, started + self.WAIT_SECONDS)
        finally:
            self._waiting.release()

    async def _take_when_free(self, account_id: str, deadline: float) -> bool:
        """Try, pause, try again, until the take gets the file or ``deadline`` passes."""
        polling = time.monotonic()
        pause = self.PAUSE_FIRST_SECONDS
        warned = False
        while True:
            try:
                return self._take(account_id)
            except SharedStateBusy as exc:
                now = time.monotonic()
                if now >= deadline:
                    log.warning(
                        "rate limit: the shared file stayed locked %.1f s; answered busy: %s",
                        now - polling,
                        exc,
                    )
                    raise ThrottlingException(BUSY_MESSAGE) from exc
                if not warned and now - polling >= self.WARN_AFTER_SECONDS:
                    warned = True
                    log.warning(
                        "rate limit: the shared file has been locked by another API process "
                        "for %.1f s; the request waits for it (the event loop free)",
                        now - polling,
                    )
                await asyncio.sleep(min(pause, deadline - now))
                pause = min(pause * 2, self.PAUSE_MAX_SECONDS)

    def _take(self, account_id: str) -> bool:
        now = self.clock.now().timestamp()
        self._checks += 1
        if self._checks % self.PRUNE_EVERY == 0:
            try:
                self._state.forget_full_buckets(now, self.rate, self.burst)
            except SharedStateBusy as exc:  # the next prune will do
                log.debug("full buckets not pruned, the shared file is locked: %s", exc)
        return self._state.take_token(account_id, now, self.rate, self.burst)
