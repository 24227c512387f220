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

from batchrock.clock import Clock
from batchrock.errors import ThrottlingException
from batchrock.settings import Settings
from batchrock.shared_state import SharedState, SharedStateBusy

log = logging.getLogger("batchrock.api")

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
    processes. A check is one short SQLite transaction; one that finds the file busy past
    :data:`batchrock.shared_state.BUSY_SECONDS` tries again after a pause (the event loop
    free meanwhile), and after about 0.1 s of that lets the request through, with a warning."""

    #: Checks between two removals of the buckets that have filled up again.
    PRUNE_EVERY = 10_000

    def __init__(self, rate: float, burst: int, clock: Clock, state: SharedState) -> None:
        super().__init__(rate, burst, clock)
        self._state = state
        self._checks = 0

    @classmethod
    def shared_from_settings(
        cls, settings: Settings, clock: Clock, state: SharedState
    ) -> SharedRateLimiter | None:
        if settings.rate_limit_per_second <= 0:
            return None
        return cls(settings.rate_limit_per_second, settings.rate_limit_burst, clock, state)

    #: A check that finds the file busy tries again after a pause off the event loop, this
    #: many times, before it lets the request through (another process descheduled while it
    #: holds the lock, on a loaded machine, holds it for milliseconds).
    BUSY_TRIES = 20
    BUSY_PAUSE_SECONDS = 0.005

    def allow(self, account_id: str) -> bool:
        try:
            return self._take(account_id)
        except SharedStateBusy as exc:
            log.warning("rate limit not checked, its shared file is busy: %s", exc)
            return True

    async def acheck(self, account_id: str) -> None:
        for _ in range(self.BUSY_TRIES):
            try:
                allowed = self._take(account_id)
            except SharedStateBusy:
                await asyncio.sleep(self.BUSY_PAUSE_SECONDS)
                continue
            if not allowed:
                raise ThrottlingException()
            return
        self.check(account_id)  # a last try, through the warning

    def _take(self, account_id: str) -> bool:
        now = self.clock.now().timestamp()
        self._checks += 1
        if self._checks % self.PRUNE_EVERY == 0:
            self._state.forget_full_buckets(now, self.rate, self.burst)
        return self._state.take_token(account_id, now, self.rate, self.burst)
