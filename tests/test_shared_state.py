"""What the API processes of one ``serve`` share (api_processes > 1): failed sign-ins
and rate-limit buckets in one SQLite file. Two handles on the file stand for two
processes: what one keeps, the other sees."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from batchrock import shared_state
from batchrock.access.signin_limit import SharedSignInLimiter
from batchrock.api.throttle import BUSY_MESSAGE, SharedRateLimiter
from batchrock.clock import FakeClock
from batchrock.errors import ThrottlingException
from batchrock.shared_state import SharedState, SharedStateBusy


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


def test_the_loops_connection_never_waits_for_another_processs_lock(tmp_path: Path) -> None:
    """SQLite's busy handler sleeps in the calling thread: on the event loop's connection it
    is off (busy timeout 0), so a call that finds the file locked fails at once, and the
    caller waits off the loop (the limiter below; failures: the writer thread)."""
    one, _ = _two(tmp_path)
    (timeout,) = one._connection().execute("PRAGMA busy_timeout").fetchone()
    assert timeout == 0
    holder = sqlite3.connect(str(tmp_path / "shared.sqlite3"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(SharedStateBusy):
        one.take_token("111111111111", 0.0, 1.0, 1.0)
    holder.execute("ROLLBACK")
    assert one.take_token("111111111111", 0.0, 1.0, 1.0)
    holder.close()


def test_a_take_that_finds_the_file_locked_past_the_wait_is_answered_busy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the wait the request is throttled with the job store's "busy" words (the SDKs
    retry it), never let through unchecked; a warning said it was waiting before that."""
    one, _ = _two(tmp_path)
    limiter = SharedRateLimiter(rate=1000.0, burst=1000, clock=FakeClock(), state=one)
    limiter.WAIT_SECONDS = 0.2
    limiter.WARN_AFTER_SECONDS = 0.05
    holder = sqlite3.connect(str(tmp_path / "shared.sqlite3"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(ThrottlingException) as refused:
        asyncio.run(limiter.acheck("111111111111"))
    assert refused.value.message == BUSY_MESSAGE
    assert "the request waits for it (the event loop free)" in caplog.text
    assert "stayed locked" in caplog.text
    holder.execute("ROLLBACK")
    holder.close()
    asyncio.run(limiter.acheck("111111111111"))  # free again: a token


def test_a_failure_that_finds_the_file_locked_counts_here_at_once_and_there_once_written(
    tmp_path: Path,
) -> None:
    """A failure is counted from synchronous code on the loop: it cannot wait for the lock
    there, so it goes to the writer thread, and counts on its own process at once (no
    request lets a guess through meanwhile), on the others once written, and once only."""
    one, other = _two(tmp_path)
    ticks = Ticks()
    here = SharedSignInLimiter(ticks, one, max_failures=3, window_seconds=10)
    there = SharedSignInLimiter(ticks, other, max_failures=3, window_seconds=10)
    assert there.retry_after(["a"]) is None
    holder = sqlite3.connect(str(tmp_path / "shared.sqlite3"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    for _ in range(3):
        here.failed(["a"])  # returns: the write waits in the writer thread
        ticks.now += 1
    assert here.retry_after(["a"]) == 7  # counted here at once: the first at 0, now 3
    assert there.retry_after(["a"]) is None  # not written yet
    holder.execute("ROLLBACK")
    holder.close()
    assert one.settle(timeout=30)
    assert there.retry_after(["a"]) == 7
    assert len(one.recent_failures("a", -1.0)) == 3  # written, and no longer pending too
    conn = sqlite3.connect(tmp_path / "shared.sqlite3")
    (rows,) = conn.execute("SELECT count(*) FROM sign_in_failures WHERE key = 'a'").fetchone()
    conn.close()
    assert rows == 3
    one.close()


def test_failures_that_wait_for_the_writer_are_bounded_and_given_up_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(shared_state, "WAIT_SECONDS", 0.05)
    monkeypatch.setattr(shared_state, "PENDING_FAILURES", 2)
    one, _ = _two(tmp_path)
    holder = sqlite3.connect(str(tmp_path / "shared.sqlite3"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    gate = threading.Event()  # the writer's first write waits until both are pending
    one._writer = ThreadPoolExecutor(1)
    one._writer.submit(gate.wait)
    one.add_failure("key:A", 1.0, 10, 10)
    one.add_failure("key:A", 2.0, 10, 10)
    with pytest.raises(SharedStateBusy):
        one.add_failure("key:B", 3.0, 10, 10)  # two already wait: the file is stuck
    assert one.recent_failures("key:A", 0.0) == [1.0, 2.0]
    gate.set()
    assert one.settle(timeout=30)  # both given up after WAIT_SECONDS, the lock still held
    assert one.recent_failures("key:A", 0.0) == []
    assert "a failure (key) was not counted in the shared file: database is locked" in caplog.text
    holder.execute("ROLLBACK")
    holder.close()
    one.close()


def test_takes_that_find_the_file_locked_wait_in_line_behind_one_that_tries(
    tmp_path: Path,
) -> None:
    """However many of a process's requests wait for the file, one of them tries again every
    few milliseconds; the others wait in line and take theirs once it is free."""
    one, _ = _two(tmp_path)
    limiter = SharedRateLimiter(rate=1000.0, burst=1000, clock=FakeClock(), state=one)
    tried: list[str] = []
    take = one.take_token

    def counted(account_id: str, now: float, rate: float, burst: float) -> bool:
        tried.append(account_id)
        return take(account_id, now, rate, burst)

    one.take_token = counted  # type: ignore[method-assign]
    holder = sqlite3.connect(str(tmp_path / "shared.sqlite3"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    async def main() -> None:
        accounts = [f"{n:012d}" for n in range(50)]
        checks = [asyncio.create_task(limiter.acheck(a)) for a in accounts]
        while len(tried) < 5:  # the first has tried again, after pauses
            await asyncio.sleep(0.001)
        assert set(tried) == {accounts[0]} and not any(c.done() for c in checks)
        holder.execute("ROLLBACK")
        await asyncio.gather(*checks)  # every one took its token
        assert set(tried) == set(accounts)

    asyncio.run(main())
    holder.close()
