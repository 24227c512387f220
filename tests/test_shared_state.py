"""What the API processes of one ``serve`` share (api_processes > 1): failed sign-ins
and rate-limit buckets in one SQLite file. Two handles on the file stand for two
processes: what one keeps, the other sees."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from batchrock.access.signin_limit import SharedSignInLimiter
from batchrock.api.throttle import SharedRateLimiter
from batchrock.clock import FakeClock
from batchrock.errors import ThrottlingException
from batchrock.shared_state import SharedState


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _two(tmp_path: Path) -> tuple[SharedState, SharedState]:
    path = tmp_path / "shared.sqlite3"
    SharedState.create(path)
    return SharedState(path), SharedState(path)


def _wal(tmp_path: Path) -> bytes:
    wal = tmp_path / "shared.sqlite3-wal"
    return wal.read_bytes() if wal.exists() else b""


def test_failed_sign_ins_count_across_processes_and_slide(tmp_path: Path) -> None:
    one, other = _two(tmp_path)
    ticks = Ticks()
    here = SharedSignInLimiter(ticks, one, max_failures=3, window_seconds=10, max_tracked=5)
    there = SharedSignInLimiter(ticks, other, max_failures=3, window_seconds=10, max_tracked=5)
    for limiter in (here, there, here):
        assert limiter.retry_after(["a"]) is None
        limiter.failed(["a"])
        ticks.now += 2  # failures at 0, 2, 4
    assert there.retry_after(["a"]) == 4  # at 6: the first leaves the window at 10
    ticks.now = 10
    assert here.retry_after(["a"]) is None  # two left in the window
    there.failed(["a"])
    assert here.retry_after(["a"]) == 2  # the one at 2 leaves at 12
    for i in range(10):
        here.failed([f"s{i}"])
    conn = sqlite3.connect(tmp_path / "shared.sqlite3")
    (tracked,) = conn.execute("SELECT count(DISTINCT key) FROM sign_in_failures").fetchone()
    conn.close()
    assert tracked == 5
    assert there.retry_after(["a"]) is None  # forgotten first: it failed longest ago


def test_an_accounts_rate_is_shared_by_the_processes(tmp_path: Path) -> None:
    one, other = _two(tmp_path)
    clock = FakeClock()
    here = SharedRateLimiter(rate=1.0, burst=3, clock=clock, state=one)
    there = SharedRateLimiter(rate=1.0, burst=3, clock=clock, state=other)
    for limiter in (here, there, here):
        limiter.check("111111111111")
    with pytest.raises(ThrottlingException):
        there.check("111111111111")
    here.check("222222222222")  # another account has its own bucket
    clock.advance(timedelta(seconds=1))
    there.check("111111111111")
    with pytest.raises(ThrottlingException):
        here.check("111111111111")


def test_a_check_that_finds_the_file_busy_waits_off_the_loop_and_still_counts(
    tmp_path: Path,
) -> None:
    """Another process holding the file's lock past the short wait (descheduled on a loaded
    machine, say) must not let an account's calls through unchecked: the check pauses with
    the event loop free, tries again, and throttles as the bucket says."""
    one, _ = _two(tmp_path)
    limiter = SharedRateLimiter(rate=0.001, burst=1, clock=FakeClock(), state=one)
    limiter.check("111111111111")  # the one token
    holder = sqlite3.connect(str(tmp_path / "shared.sqlite3"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    async def main() -> None:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        ticker = asyncio.create_task(tick())
        checking = asyncio.create_task(limiter.acheck("111111111111"))
        await asyncio.sleep(0.03)
        assert not checking.done() and ticks > 0  # waiting, with the loop running
        holder.execute("COMMIT")
        with pytest.raises(ThrottlingException):
            await checking
        ticker.cancel()

    asyncio.run(main())
    holder.close()


def test_a_kept_answer_serves_without_sqlite_until_another_process_records_a_failure(
    tmp_path: Path,
) -> None:
    """A process keeps what it read of the failures (a correctly signed request reads them
    every time) while the generation bytes are unchanged; a failure recorded by another
    process changes them, so a lockout made there holds here on the next check, with no
    time passing."""
    one, other = _two(tmp_path)
    ticks = Ticks()
    here = SharedSignInLimiter(ticks, one, max_failures=3, window_seconds=10)
    there = SharedSignInLimiter(ticks, other, max_failures=3, window_seconds=10)
    assert there.retry_after(["a", "b"]) is None
    statements: list[str] = []
    other._connection().set_trace_callback(statements.append)
    for _ in range(5):
        ticks.now += 1
        assert there.retry_after(["a", "b"]) is None
    assert statements == []  # every answer kept: no SQLite read
    for _ in range(3):
        here.failed(["a"])
    assert there.retry_after(["a"]) == 10  # locked out at once, read afresh
    assert statements != []
    statements.clear()
    assert there.retry_after(["a"]) == 10 and statements == []
    # Its own failures count at once too, for every key (a kept "none" is forgotten).
    assert there.retry_after(["b"]) is None
    for _ in range(3):
        there.failed(["b"])
    assert there.retry_after(["b"]) == 10
    ticks.now += 10
    assert here.retry_after(["a", "b"]) is None  # the window slid past them: kept or not
    assert there.retry_after(["a", "b"]) is None


def test_the_generation_file_is_private_and_made_by_whichever_process_opens_first(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.sqlite3"
    SharedState.create(path)
    state = SharedState(path)
    assert state.generation_path.stat().st_mode & 0o777 == 0o600
    state.generation_path.unlink()  # an older serve's file, say: made again, zeros
    ticks = Ticks()
    assert SharedSignInLimiter(ticks, state).retry_after(["a"]) is None
    assert state.generation_path.read_bytes() == bytes(8)
    state.close()
