"""One process of a multi-process race on a store (the contract suite starts several):

    python -m tests.contract.racer URL ACTION WORKER [ARG]

opens the store at URL (tests/stores.py ``open_url``), waits until the start file ARG names
exists (so every process has opened its store and they race for real), and prints one line
per job it won:

- ``claim``: claims Submitted jobs until none is left;
- ``start MAX``: starts Scheduled jobs (start_next, at most MAX InProgress per model) until
  none may start;
- ``takeover``: one claim of InProgress jobs, at a time after every lease has run out;
- ``create N``: creates 10 jobs (numbered from N * 100) under a quota of 7 unfinished jobs.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from batchrock.jobs import JobStatus
from batchrock.store.base import UnfinishedJobsQuota
from tests.contract.test_store import T0, make_job
from tests.stores import open_url


async def main(url: str, action: str, worker: str, start_file: str, arg: str) -> None:
    store = await open_url(url)
    try:
        deadline = time.monotonic() + 30
        while not Path(start_file).exists():
            assert time.monotonic() < deadline, "the race never started"
            await asyncio.sleep(0.005)
        if action == "claim":
            while (
                job := await store.claim(
                    worker, {JobStatus.SUBMITTED}, now=datetime.now(UTC), lease_seconds=600
                )
            ) is not None:
                print(job.job_id, flush=True)
        elif action == "start":
            while (
                job := await store.start_next(
                    worker, now=T0, lease_seconds=600, max_in_progress=int(arg)
                )
            ) is not None:
                print(job.job_id, flush=True)
        elif action == "takeover":
            later = T0 + timedelta(hours=1)
            job = await store.claim(worker, {JobStatus.IN_PROGRESS}, now=later, lease_seconds=600)
            if job is not None:
                print(job.job_id, flush=True)
        elif action == "create":
            for i in range(10):
                new = make_job(int(arg) * 100 + i)
                try:
                    await store.create(new, {}, max_unfinished=7)
                except UnfinishedJobsQuota:
                    continue
                print(new.job_id, flush=True)
        else:
            raise SystemExit(f"unknown action {action}")
    finally:
        await store.close()


if __name__ == "__main__":
    url, action, worker, start_file, *rest = sys.argv[1:]
    asyncio.run(main(url, action, worker, start_file, rest[0] if rest else ""))
