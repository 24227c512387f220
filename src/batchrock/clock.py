"""Time as an injectable seam.

The service reads the time and waits only through a :class:`Clock`, so tests can freeze or
move it, and ``time_scale`` (a setting) can make 24-168 hour timeouts pass in seconds. The
engine never waits out time with ``asyncio.sleep`` or ``asyncio.wait(timeout=...)`` itself:
every wait goes through :meth:`Clock.sleep` or :meth:`Clock.wait`, which :class:`FakeClock`
ends only when a test moves its time on. (What remains are yields, not waits: ``sleep(0)``,
and the file pass's 0.1 ms pause that lets worker threads take the GIL.)
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

#: What :meth:`Clock.wait` waits for: an event being set or a future/task being done.
Waitable = asyncio.Event | asyncio.Future[Any]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (to measure how long something took)."""
        ...

    def scaled(self, duration: timedelta) -> timedelta:
        """How long ``duration`` of service time lasts in wall-clock time."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of wall-clock time."""
        ...

    async def wait(self, *waitables: Waitable, timeout: float | None) -> bool:
        """Wait until one of ``waitables`` is set (an event) or done (a future), or
        ``timeout`` seconds pass; ``True`` if one of them did. Cancelling the caller cancels
        the wait (never swallowed), and nothing is left waiting afterwards."""
        ...


def _ready(waitables: Iterable[Waitable]) -> bool:
    return any(w.is_set() if isinstance(w, asyncio.Event) else w.done() for w in waitables)


async def _first_of(
    waitables: tuple[Waitable, ...],
    timeout: float | None,
    timer: Callable[[], asyncio.Future[None]] | None = None,
) -> bool:
    """Wait for the first of ``waitables``, or ``timeout`` seconds, or the future ``timer()``
    makes (a FakeClock's timeout; cancelled afterwards)."""
    if _ready(waitables):
        await asyncio.sleep(0)  # still a suspension point: a loop around a wait cannot spin
        return True
    helpers: list[asyncio.Future[Any]] = []
    futures: set[asyncio.Future[Any]] = set()
    for w in waitables:
        if isinstance(w, asyncio.Event):
            helper: asyncio.Future[Any] = asyncio.ensure_future(w.wait())
            helpers.append(helper)
            futures.add(helper)
        else:
            futures.add(w)
    if timer is not None:
        timer_future = timer()
        helpers.append(timer_future)
        futures.add(timer_future)
    try:
        # asyncio.wait, not wait_for: it never swallows a cancellation of the caller.
        await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for helper in helpers:
            helper.cancel()
    return _ready(waitables)


class SystemClock:
    """Wall-clock time. ``time_scale`` > 1 makes timeouts and expiry pass faster.

    Timestamps stay real (submitTime is the real submission time); only durations that the
    service waits out (timeouts, expiry, the Submitted dwell) are divided by ``time_scale``.
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def scaled(self, duration: timedelta) -> timedelta:
        return duration / self.time_scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, *waitables: Waitable, timeout: float | None) -> bool:
        return await _first_of(waitables, timeout)


class FakeClock:
    """A clock that only moves when told to (tests).

    Sleeps and wait timeouts end when :meth:`advance` moves the time past them, never on
    their own: with a frozen clock a lease never lapses and a poll never comes, so a test
    sees exactly what wake-ups and events alone make happen.
    """

    def __init__(self, start: datetime | None = None, time_scale: float = 1.0) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._elapsed = 0.0
        self.time_scale = time_scale
        #: (due, seq, future) of every pending sleep, soonest first.
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._elapsed

    def scaled(self, duration: timedelta) -> timedelta:
        return duration / self.time_scale

    def advance(self, delta: timedelta | float) -> None:
        """Move the time on by ``delta`` (seconds or a timedelta); sleeps that are due end.
        A negative ``delta`` sets the wall clock back (as NTP may): ``now()`` goes back,
        ``monotonic()`` and pending sleeps do not."""
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        self._now += timedelta(seconds=seconds)
        if seconds <= 0:
            return
        self._elapsed += seconds
        while self._timers and self._timers[0][0] <= self._elapsed:
            _, _, future = heapq.heappop(self._timers)
            if not future.done():
                future.set_result(None)

    def pending(self) -> list[float]:
        """When the pending sleeps and wait timeouts end, in :meth:`monotonic` seconds,
        soonest first (a test can see what the code under test waits for)."""
        return sorted(due for due, _, f in self._timers if not f.done())

    def _timer(self, seconds: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(self._timers) > 1024:  # drop cancelled waits, which a frozen clock keeps
            self._timers = [t for t in self._timers if not t[2].done()]
            heapq.heapify(self._timers)
        heapq.heappush(self._timers, (self._elapsed + seconds, next(self._seq), future))
        return future

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future = self._timer(seconds)
        try:
            await future
        finally:
            future.cancel()  # a cancelled sleep leaves no timer behind (advance skips it)

    async def wait(self, *waitables: Waitable, timeout: float | None) -> bool:
        if timeout is None or timeout <= 0:
            return await _first_of(waitables, timeout)
        return await _first_of(waitables, None, lambda: self._timer(timeout))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: datetime) -> int:
    """Integer microseconds since the Unix epoch (how stores and tokens keep times)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    seconds, micros = divmod(value, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
