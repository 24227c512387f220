"""The outbox in one process, on a real SQLite store and the FakeClock: retries back off
1, 2, 4 ... seconds up to the cap (Clock time, nothing waits out real time), events are
delivered in the store's order and only then passed, one process at a time per sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchrock.clock import FakeClock
from batchrock.events.envelope import Envelope
from batchrock.events.outbox import Outbox
from batchrock.events.sinks import DeliveryFailed
from batchrock.jobs import JobStatus
from batchrock.settings import Settings
from batchrock.store.sqlite import SqliteStore
from tests.contract.test_store import make_job

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SETTINGS = Settings(
    events_retry_initial_seconds=1, events_retry_max_seconds=5, events_poll_seconds=0.5
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FlakySink:
    """Fails its first ``failures`` deliveries; records what it took."""

    name = "flaky"
    batch_size = 2

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.taken: list[str] = []
        self.event = asyncio.Event()

    async def deliver(self, envelopes: Sequence[Envelope]) -> int:
        self.attempts += 1
        self.event.set()
        if self.failures:
            self.failures -= 1
            raise DeliveryFailed("HTTP 503")
        self.taken.extend(f"{e.job_id}:{e.body['detail']['status']}" for e in envelopes)
        return len(envelopes)

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "db.sqlite3")
    yield s
    await s.close()


async def until(check: Callable[[], object]) -> None:
    """Let the event loop run until ``check()`` holds (the clock stays where it is)."""
    for _ in range(5000):
        if check():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("never happened")


async def test_retries_back_off_on_the_clock_and_keep_the_order(store: SqliteStore) -> None:
    clock = FakeClock(T0)
    sink = FlakySink(failures=5)
    outbox = Outbox(SETTINGS, store, clock, [sink])
    await outbox.start()  # the cursor starts here: the job below is new
    job, _ = await store.create(make_job(1), {})
    await store.transition(job.job_id, JobStatus.VALIDATING, now=T0)
    await store.transition(job.job_id, JobStatus.FAILED, now=T0, message="bad")
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    waits = []
    for attempt in range(1, 6):
        await until(lambda a=attempt: sink.attempts == a and clock.pending())
        due = clock.pending()[0] - clock.monotonic()
        waits.append(due)
        clock.advance(due)
    assert waits == [1, 2, 4, 5, 5]  # doubling, capped at events_retry_max_seconds
    # Two batches (batch_size 2), one after the other, with no wait between them.
    await until(lambda: len(sink.taken) == 3)
    assert sink.taken == [f"{job.job_id}:{s}" for s in ("Submitted", "Validating", "Failed")]
    (last,) = (await store.events_since(0, limit=10))[-1:]
    stop.set()
    await task
    # Delivered and passed: a new owner starts after the last event.
    assert await store.hold_sink("flaky", "other", now=T0, lease_seconds=1) == last.seq


async def test_one_process_delivers_per_sink_until_its_lease_lapses(
    store: SqliteStore, tmp_path: Path
) -> None:
    """``a`` takes the sink and dies (it never delivers, never hands the lease back); ``b``
    delivers nothing until the lease (engine_lease_seconds, 30) has run out, then all."""
    other_store = await SqliteStore.open(tmp_path / "db.sqlite3")
    clock = FakeClock(T0)
    dead, alive = FlakySink(0), FlakySink(0)
    a = Outbox(SETTINGS, store, clock, [dead])
    b = Outbox(SETTINGS, other_store, clock, [alive])
    await a.start()
    await b.start()
    for n in range(3):
        await store.create(make_job(n), {})
    stop = asyncio.Event()
    task = asyncio.create_task(b.run(stop))
    for _ in range(4):  # 28 s: b looks every 7.5 s (a quarter of the lease), in vain
        clock.advance(7)
        await asyncio.sleep(0.01)
    assert alive.taken == []
    clock.advance(7)
    await until(lambda: len(alive.taken) == 3)
    stop.set()
    await task
    await other_store.close()
