"""Time as an injectable seam.

The service reads the time only through a :class:`Clock`, so tests can freeze or move it,
and ``time_scale`` (a setting) can make 24-168 hour timeouts pass in seconds.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def scaled(self, duration: timedelta) -> timedelta:
        """How long ``duration`` of service time lasts in wall-clock time."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of wall-clock time."""
        ...


class SystemClock:
    """Wall-clock time. ``time_scale`` > 1 makes timeouts and expiry pass faster.

    Timestamps stay real (submitTime is the real submission time); only durations that the
    service waits out (timeouts, expiry) are divided by ``time_scale``.
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale

    def now(self) -> datetime:
        return datetime.now(UTC)

    def scaled(self, duration: timedelta) -> timedelta:
        return duration / self.time_scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: datetime | None = None, time_scale: float = 1.0) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.time_scale = time_scale

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def scaled(self, duration: timedelta) -> timedelta:
        return duration / self.time_scale

    async def sleep(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        await asyncio.sleep(0)


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
