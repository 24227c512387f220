"""How an engine hands claimed jobs to runners: every job it claims is run at once, never left
leased to nobody until the lease runs out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from batchrock.clock import FakeClock
from batchrock.jobs import JobStatus

from .harness import Harness, jsonl, records

S = JobStatus
BURSTS, PER_BURST = 6, 50


def test_bursts_of_small_jobs_never_wait_out_a_lease(tmp_path: Path) -> None:
    """A validated job is started by the next tick while the task that validated it ends.
    That task used to leave the engine's table of running jobs a loop iteration after it gave
    the lease back, so the claim that started the job was skipped as "already running": the job
    sat InProgress, leased to nobody, until the lease ran out (about 2 % of small jobs, 30 s
    each with the default lease).

    The clock is frozen here, so no lease can ever lapse: every job must be carried through by
    wake-ups alone, and a job claimed but not run would stay InProgress for good."""
    start = datetime.now(UTC)
    clock = FakeClock(start)
    h = Harness(tmp_path, clock=clock)
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(2)))

    async def main() -> None:
        ids: list[str] = []
        async with h.running() as engine:
            for burst in range(BURSTS):
                ids += [(await h.submit("s3://in-bucket/in/")).job_id for _ in range(PER_BURST)]
                engine.wake()  # as `serve` does when the API creates a job
                # The next burst arrives while this one is being validated and run.
                await h.wait_until_final(ids[: burst * PER_BURST + 5], engine=engine)
            done = await h.wait_until_final(ids, engine=engine)
            assert clock.monotonic() == 0
        assert all(job.status is S.COMPLETED for job in done)
        for job_id in ids:
            assert await h.statuses(job_id) == [
                "Submitted",
                "Validating",
                "Scheduled",
                "InProgress",
                "Completed",
            ]
            # No time passed: nothing in a job's history waited for a lease or a poll.
            assert {e.at for e in await h.store.events(job_id)} == {start}
        assert not await h.leases(), "a finished job kept its lease"

    asyncio.run(main())


@pytest.mark.parametrize(
    ("time_scale", "dwell", "lasts"),
    [(1, 5, 5.0), (3600, 3600, 1.0)],
    ids=["plain", "time_scale"],
)
def test_a_new_job_stays_submitted_for_the_dwell_and_starts_when_it_ends(
    tmp_path: Path, time_scale: float, dwell: float, lasts: float
) -> None:
    """As on Bedrock, a job read straight after Create is Submitted: the engine leaves a new
    job alone for engine_min_submitted_seconds, then wakes at the end of that dwell to
    validate it, without waiting for its next poll. The dwell is service time, divided by
    time_scale as timeouts are (an hour lasts a second at 3600)."""
    clock = FakeClock(datetime.now(UTC), time_scale=time_scale)
    h = Harness(tmp_path, clock=clock, engine_min_submitted_seconds=dwell, engine_poll_seconds=30)
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(3)))

    async def main() -> None:
        async with h.running() as engine:
            job = await h.submit("s3://in-bucket/in/")
            engine.wake()  # as `serve` does when the API creates a job
            # The engine looked, left the job Submitted and sleeps until its dwell ends.
            await h.until(lambda: lasts in clock.pending())
            assert await h.statuses(job.job_id) == ["Submitted"]
            assert not engine.running_jobs
            clock.advance(lasts * 0.9)
            await h.until(lambda: lasts in clock.pending())
            assert await h.statuses(job.job_id) == ["Submitted"]
            clock.advance(lasts - clock.monotonic())
            (done,) = await h.wait_until_final([job.job_id], engine=engine)
        assert done.status is S.COMPLETED, done.message
        events = await h.store.events(job.job_id)
        assert [e.to_status for e in events][:2] == [S.SUBMITTED, S.VALIDATING]
        assert events[1].at - events[0].at == timedelta(seconds=lasts)

    asyncio.run(main())
