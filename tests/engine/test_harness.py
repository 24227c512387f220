"""The engine harness closes what it opens: a test leaves no database connection or pool
behind (on every store: tests/engine/conftest.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from batchrock.clock import FakeClock
from batchrock.jobs import JobStatus
from tests.pg import listeners, sessions, sessions_left
from tests.stores import PostgresFactory, SqliteFactory

from . import harness
from .harness import Harness, jsonl, records


def open_connections(h: Harness, *, settled: bool = False) -> int:
    """How many connections to the harness's database are open: this process's file
    descriptors on the SQLite file (and its WAL), or the server's sessions on the PostgreSQL
    database (this check's own aside; ``settled``: once the closed ones have ended there)."""
    factory = h.store_factory
    if isinstance(factory, SqliteFactory):
        fds = Path("/proc/self/fd")
        names = {str(factory.path), f"{factory.path}-wal", f"{factory.path}-shm"}
        count = 0
        for fd in os.listdir(fds):
            try:
                count += os.readlink(fds / fd) in names
            except OSError:  # closed meanwhile (the listing's own descriptor)
                continue
        return count
    assert isinstance(factory, PostgresFactory)
    return sessions_left(factory.url) if settled else sessions(factory.url)


def run_one_job(h: Harness, *, close: bool) -> None:
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(3)))

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/")
        (done,) = await h.run(job.job_id)
        assert done.status is JobStatus.COMPLETED, done.message
        assert open_connections(h) > 0
        if close:
            await h.close()
            await h.close()  # again: nothing

    asyncio.run(main())


def test_closing_a_harness_closes_its_store(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    run_one_job(h, close=True)
    assert open_connections(h, settled=True) == 0


def test_a_harness_left_open_is_closed_after_its_test(tmp_path: Path) -> None:
    """What the engine conftest does after every test, for the harnesses it did not close."""
    h = Harness(tmp_path)
    run_one_job(h, close=False)
    harness.close_all()
    assert open_connections(h, settled=True) == 0
    assert not harness._OPEN


def test_a_job_another_process_creates_is_found_by_notification_or_poll(tmp_path: Path) -> None:
    """The harness's engine is woken by the store where the store announces changes
    (PostgreSQL's NOTIFY): a job created through another connection runs with the clock
    frozen, so no poll or sweep can have found it. SQLite announces nothing: there the
    engine's next poll (the clock moved on once) finds it."""
    clock = FakeClock()
    h = Harness(tmp_path, clock=clock)
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(3)))

    async def main() -> None:
        other = Harness(tmp_path / "other", clock=clock, store_factory=h.store_factory)
        wakes = isinstance(h.store_factory, PostgresFactory)
        async with h.running() as engine:
            await h.until(lambda: listening(h) if wakes else True)
            job = await other.submit("s3://in-bucket/in/")
            if not wakes:
                clock.advance(h.settings.engine_poll_seconds)
            (done,) = await h.wait_until_final([job.job_id], engine=engine)
            assert clock.monotonic() == (0 if wakes else h.settings.engine_poll_seconds)
        assert done.status is JobStatus.COMPLETED, done.message
        await other.close()

    asyncio.run(main())


def listening(h: Harness) -> bool:
    """Whether an engine of the harness's PostgreSQL database LISTENs (tests/pg.py)."""
    assert isinstance(h.store_factory, PostgresFactory)
    return listeners(h.store_factory.url) >= 1
