"""ListModelInvocationJobs at scale: the SQLite store holding N jobs (default one million).

    .venv/bin/python benchmarks/store_scale.py --jobs 1000000

Fills a fresh database through the store's own ``create`` and ``transition`` (so the indexes
are the real ones, and every job reached its status through the lifecycle), then times each
kind of listing the API issues, repeated, and prints medians. Nothing here is a pass/fail
test: the numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import string
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from batchrock import jobs
from batchrock.jobs import Job, JobStatus, new_job_id
from batchrock.store.base import Cursor, JobFilter, PageRequest
from batchrock.store.sqlite import SqliteStore

ACCOUNT = "123456789012"
REGION = "us-east-1"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
WORDS = ["nightly", "adhoc", "eval", "summaries", "embed", "classify", "backfill", "retry"]


def job_at(i: int, rng: random.Random) -> Job:
    submit = T0 + timedelta(seconds=i * 3)
    name = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{i:07d}"
    if i % 100_000 == 7:
        name = f"needle-zq-{i}"  # a rare name: the index must find it without a scan
    status = JobStatus.COMPLETED if i % 10 else rng.choice(list(JobStatus))
    return Job(
        job_id=new_job_id(),
        account_id=ACCOUNT,
        region=REGION if i % 20 else "eu-west-1",
        name=name,
        model_id="anthropic.claude-3-haiku-20240307-v1:0",
        role_arn="arn:aws:iam::123456789012:role/R",
        status=status,
        submit_time=submit,
        last_modified_time=submit,
        input_s3_uri="s3://bucket/in/",
        output_s3_uri="s3://bucket/out/",
        expiration_time=submit + timedelta(hours=24),
        client_request_token="".join(rng.choices(string.ascii_lowercase, k=24)),
    )


async def fill(store: SqliteStore, n: int) -> float:
    rng = random.Random(7)
    started = time.perf_counter()
    for i in range(n):
        job = job_at(i, rng)
        await store.create(job.evolve(status=jobs.INITIAL), {})
        for status in jobs.path_to(job.status):
            await store.transition(job.job_id, status, now=job.submit_time)
    return time.perf_counter() - started


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, int]:
    samples = []
    size = 0
    for _ in range(repeat):
        t = time.perf_counter()
        result = await fn()
        samples.append(time.perf_counter() - t)
        size = len(result) if isinstance(result, list) else 1
    return statistics.median(samples) * 1000, size


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--db", type=Path, default=None)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="batchrock-scale-"))
    path = args.db or folder / "scale.sqlite3"
    store = await SqliteStore.open(path)
    existing = sum((await store.snapshot()).jobs_by_status.values())
    if existing < args.jobs:
        seconds = await fill(store, args.jobs - existing)
        print(
            f"filled {args.jobs - existing} jobs in {seconds:.1f}s "
            f"({(args.jobs - existing) / seconds:,.0f} jobs/s, each created and moved on)"
        )
    size_mb = path.stat().st_size / 1e6
    print(f"database: {path} ({size_mb:,.0f} MB)")

    f = JobFilter(account_id=ACCOUNT, region=REGION)
    mid = T0 + timedelta(seconds=args.jobs * 3 // 2)
    deep = Cursor(mid, "zzzzzzzzzzzz")
    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "first page (100), newest first": lambda: store.list_jobs(f, PageRequest(limit=100)),
        "page of 1000": lambda: store.list_jobs(f, PageRequest(limit=1000)),
        "deep page via token (mid-table)": lambda: store.list_jobs(
            f, PageRequest(limit=100, after=deep)
        ),
        "statusEquals=Failed (rare status)": lambda: store.list_jobs(
            JobFilter(account_id=ACCOUNT, region=REGION, status=JobStatus.FAILED),
            PageRequest(limit=100),
        ),
        "nameContains=nightly (common)": lambda: store.list_jobs(
            JobFilter(account_id=ACCOUNT, region=REGION, name_contains="nightly"),
            PageRequest(limit=100),
        ),
        "nameContains=needle (rare, 6 chars)": lambda: store.list_jobs(
            JobFilter(account_id=ACCOUNT, region=REGION, name_contains="needle"),
            PageRequest(limit=100),
        ),
        "nameContains=zq (rare, 2 chars)": lambda: store.list_jobs(
            JobFilter(account_id=ACCOUNT, region=REGION, name_contains="zq"),
            PageRequest(limit=100),
        ),
        "nameContains=x (absent, 1 char)": lambda: store.list_jobs(
            JobFilter(account_id=ACCOUNT, region=REGION, name_contains="x"),
            PageRequest(limit=100),
        ),
        "nameContains=a (common, 1 char)": lambda: store.list_jobs(
            JobFilter(account_id=ACCOUNT, region=REGION, name_contains="a"),
            PageRequest(limit=100),
        ),
        "submit-time window (1 hour)": lambda: store.list_jobs(
            JobFilter(
                account_id=ACCOUNT,
                region=REGION,
                submitted_after=mid,
                submitted_before=mid + timedelta(hours=1),
            ),
            PageRequest(limit=1000),
        ),
        "status + name + window, ascending": lambda: store.list_jobs(
            JobFilter(
                account_id=ACCOUNT,
                region=REGION,
                status=JobStatus.COMPLETED,
                name_contains="eval",
                submitted_after=mid,
            ),
            PageRequest(limit=100, descending=False),
        ),
        "claim (no claimable job)": lambda: store.claim(
            "bench", {JobStatus.SUBMITTED}, now=T0 - timedelta(days=1), lease_seconds=1
        ),
    }
    print(f"\n| query at {args.jobs:,} jobs | median ms | rows |")
    print("| --- | ---: | ---: |")
    for label, fn in cases.items():
        ms, rows = await timed(fn, args.repeat)
        print(f"| {label} | {ms:.2f} | {rows} |")
    (some,) = await store.list_jobs(f, PageRequest(limit=1, after=deep))
    any_job = some.job_id
    ms, _ = await timed(lambda: store.get(ACCOUNT, REGION, any_job), args.repeat)
    print(f"| get by id | {ms:.3f} | 1 |")
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
