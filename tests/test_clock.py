"""The Clock seam: waits end on their event or their timeout, a FakeClock's only when moved."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from batchrock.clock import FakeClock, SystemClock

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_fake_sleep_ends_only_when_the_clock_passes_it() -> None:
    clock = FakeClock(START)

    async def main() -> None:
        sleeper = asyncio.create_task(clock.sleep(2))
        await asyncio.sleep(0)
        assert clock.pending() == [2.0]
        clock.advance(1.5)
        await asyncio.sleep(0)
        assert not sleeper.done()
        clock.advance(timedelta(seconds=0.5))
        await asyncio.wait_for(sleeper, 5)
        assert clock.now() == START + timedelta(seconds=2)
        assert clock.monotonic() == 2.0
        assert clock.pending() == []

    asyncio.run(main())


def test_fake_wait_ends_on_the_event_and_leaves_no_timer() -> None:
    clock = FakeClock(START)

    async def main() -> None:
        event = asyncio.Event()
        waiter = asyncio.create_task(clock.wait(event, timeout=10))
        await asyncio.sleep(0)
        assert clock.pending() == [10.0]
        event.set()
        assert await asyncio.wait_for(waiter, 5) is True
        assert clock.pending() == []
        assert clock.monotonic() == 0

    asyncio.run(main())


def test_fake_wait_times_out_when_advanced() -> None:
    clock = FakeClock(START)

    async def main() -> None:
        event = asyncio.Event()
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = asyncio.create_task(clock.wait(event, never, timeout=3))
        await asyncio.sleep(0)
        clock.advance(3)
        assert await asyncio.wait_for(waiter, 5) is False
        assert not never.cancelled()  # a caller's future is the caller's: left alone

    asyncio.run(main())


def test_a_wait_on_a_task_ends_when_it_is_done() -> None:
    clock = FakeClock(START)

    async def main() -> None:
        release = asyncio.Event()

        async def work() -> int:
            await release.wait()
            return 7

        task = asyncio.create_task(work())
        waiter = asyncio.create_task(clock.wait(task, timeout=None))
        await asyncio.sleep(0)
        release.set()
        assert await asyncio.wait_for(waiter, 5) is True
        assert task.result() == 7

    asyncio.run(main())


def test_cancelling_a_wait_cancels_it_and_its_timer() -> None:
    clock = FakeClock(START)

    async def main() -> None:
        waiter = asyncio.create_task(clock.wait(asyncio.Event(), timeout=5))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert clock.pending() == []

    asyncio.run(main())


def test_a_wait_already_satisfied_still_yields() -> None:
    """A loop around a satisfied wait must not starve the others (the heartbeat after a
    shutdown loops like that)."""
    clock = SystemClock()

    async def main() -> None:
        done = asyncio.Event()
        done.set()
        ran: list[int] = []

        async def other() -> None:
            ran.append(1)

        task = asyncio.create_task(other())
        assert await clock.wait(done, timeout=1) is True
        assert ran == [1]
        await task

    asyncio.run(main())


def test_system_wait_times_out_in_wall_time() -> None:
    clock = SystemClock()

    async def main() -> None:
        start = clock.monotonic()
        assert await clock.wait(asyncio.Event(), timeout=0.05) is False
        assert clock.monotonic() - start >= 0.04

    asyncio.run(main())


def test_time_scale_divides_service_durations() -> None:
    assert SystemClock(3600).scaled(timedelta(hours=24)) == timedelta(seconds=24)
    assert FakeClock(START, time_scale=2).scaled(timedelta(seconds=4)) == timedelta(seconds=2)
    with pytest.raises(ValueError):
        SystemClock(0)


def test_a_fake_wall_clock_set_back_leaves_monotonic_time_alone() -> None:
    clock = FakeClock(START)
    clock.advance(5)
    clock.advance(timedelta(seconds=-30))
    assert clock.now() == START - timedelta(seconds=25)
    assert clock.monotonic() == 5
