"""How an engine hands claimed jobs to runners: every job it claims is run at once, never left
leased to nobody until the lease runs out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

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
        assert not h.leases(), "a finished job kept its lease"

    asyncio.run(main())
