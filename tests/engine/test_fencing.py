"""Fencing: a worker that lost its lease while it was frozen (a GC or VM pause, a network
partition, a step longer than the lease) writes nothing once it wakes up, whatever it was
about to write: its checkpoint, its progress, the job's status, or the file it finished.

Two engines share one store and one bucket, each with a data dir of its own (two hosts). The
first is frozen at an exact store call: that call and every later one (its heartbeat
included) wait until the test thaws it. Its lease then runs out on the FakeClock, the second
engine takes the job over and finishes it (or is mid-way through it), and only then does the
first wake up, its frozen call going through first. The two workers' models answer
differently (the first's records all fail), so any line or count the stale worker got in
shows in the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from batchrock.backends.base import MockBackend, ModelRequest, ModelResult, RecordError
from batchrock.clock import FakeClock
from batchrock.engine import Engine
from batchrock.jobs import JobStatus

from .crashpoints import check_output_matches_counts
from .harness import Harness, OneBackend, jsonl, records, yielding_echo

S = JobStatus
LEASE = 5.0
OUT = "s3://out-bucket/results/"
RECS = {"a.jsonl": records(300)}


async def refuses(request: ModelRequest) -> ModelResult:
    """The frozen worker's model: every record fails (its lines are told from the other's)."""
    await asyncio.sleep(0)
    return ModelResult(error=RecordError(500, f"stale worker answered {request.record_id}"))


class Freezer:
    """What the frozen worker's store and bucket calls go through: once a call matches
    ``at``, it and every call after it wait for :meth:`thaw`."""

    def __init__(self, at: Callable[[str, dict[str, Any]], bool]) -> None:
        self.at = at
        self.frozen = asyncio.Event()
        self._thawed = asyncio.Event()

    def thaw(self) -> None:
        self._thawed.set()

    async def gate(self, name: str, kwargs: dict[str, Any]) -> None:
        if not self.frozen.is_set() and self.at(name, kwargs):
            self.frozen.set()
        if self.frozen.is_set():
            await self._thawed.wait()


class _Frozen:
    def __init__(self, inner: Any, freezer: Freezer) -> None:
        self._inner, self._freezer = inner, freezer

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or not asyncio.iscoroutinefunction(attr):
            return attr
        freezer = self._freezer

        async def call(*args: Any, **kwargs: Any) -> Any:
            await freezer.gate(name, kwargs)
            return await attr(*args, **kwargs)

        return call

    def read(self, *args: Any, **kwargs: Any) -> AsyncIterator[bytes]:  # an async generator
        async def chunks() -> AsyncIterator[bytes]:
            await self._freezer.gate("read", kwargs)
            async for chunk in self._inner.read(*args, **kwargs):
                yield chunk

        return chunks()


def mid_file(name: str, kw: dict[str, Any]) -> bool:
    cp = kw.get("checkpoint") or {}
    return name == "save_progress" and not cp.get("done") and kw["counters"].processed >= 60


def file_done(name: str, kw: dict[str, Any]) -> bool:
    cp = kw.get("checkpoint") or {}
    return name == "save_progress" and bool(cp.get("done"))


@pytest.mark.parametrize(
    "at",
    [
        # Its checkpoint's write, half-way through the file: it would put its stale progress
        # over the successor's finished job (and, carrying on, its own records).
        mid_file,
        # The checkpoint saying the file is done (the first phase of publishing it): it would
        # count its own records and publish its .out over the successor's.
        file_done,
    ],
    ids=["checkpoint", "file-done"],
)
def test_a_worker_frozen_past_its_lease_writes_nothing_after_the_takeover(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, at: Any
) -> None:
    clock = FakeClock()
    # The successor: another host (a data dir of its own), same store and bucket.
    h = Harness(tmp_path / "two", clock=clock, engine_lease_seconds=LEASE)
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(RECS["a.jsonl"]))
    h.backend = MockBackend(yielding_echo)
    h.resolver = OneBackend(h.backend)
    first = Harness(
        tmp_path / "one",
        clock=clock,
        store_factory=h.store_factory,
        objects=h.objects,
        engine_lease_seconds=LEASE,
    )
    freezer = Freezer(at)
    stale = Engine(
        first.settings,
        _Frozen(first.store, freezer),  # type: ignore[arg-type]
        clock,
        OneBackend(MockBackend(refuses)),
        _Frozen(h.objects, freezer),  # type: ignore[arg-type]
    )

    async def ticking(until: Callable[[], Any]) -> None:
        """Let time pass on the FakeClock (10 ms per wall-clock ms) until ``until()``."""
        while not await _holds(until):
            await asyncio.sleep(0.001)
            clock.advance(0.01)

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/", OUT)
        stop_stale = asyncio.Event()
        stale_task = asyncio.create_task(stale.run(stop_stale))
        await asyncio.wait_for(ticking(freezer.frozen.is_set), 30)
        assert (await h.get(job.job_id)).status is S.IN_PROGRESS
        # The frozen worker renews nothing: its lease runs out, the other engine takes over.
        clock.advance(LEASE + 1)
        async with h.running():
            await asyncio.wait_for(ticking(lambda: _final(h, job.job_id)), 30)
        with caplog.at_level(logging.WARNING, logger="batchrock.engine"):
            freezer.thaw()
            # The stale worker wakes up, finds out and leaves the job.
            await asyncio.wait_for(ticking(lambda: not stale.running_jobs), 30)
        stop_stale.set()
        await asyncio.wait_for(ticking(stale_task.done), 30)
        done = await check_output_matches_counts(h, OUT, job.job_id, RECS)
        assert done.status is S.COMPLETED, done.message
        # Every record exactly once, in order, answered by the successor's model only.
        assert (done.counters.success, done.counters.error) == (300, 0)
        assert any("lease lost" in r.getMessage() for r in caplog.records), caplog.text
        with contextlib.suppress(Exception):
            await first.store.close()

    asyncio.run(main())


async def _holds(condition: Callable[[], Any]) -> bool:
    result = condition()
    if asyncio.iscoroutine(result):
        result = await result
    return bool(result)


async def _final(h: Harness, job_id: str) -> bool:
    return (await h.get(job_id)).is_terminal
