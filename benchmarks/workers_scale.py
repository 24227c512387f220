"""Many engines on one PostgreSQL database (issue 11, item 8).

1. Claims: ``--claims`` Submitted jobs in a fresh database, taken by 8 processes at once,
   each calling the engine's own claim (``PostgresStore.claim``, ``FOR UPDATE SKIP LOCKED``)
   until none is left; claims per second over the whole run, against 1 process in the same
   run, the two alternating. Every job must be claimed exactly once.
2. Workers: job throughput (records per second, first submit to last job Completed, from the
   jobs' own event times) with 1, 2 and 4 ``batchrock worker`` processes against the built-in
   model at ``--latency-ms`` a record, each worker running one job at a time with
   ``--concurrency`` records in flight, so one worker is bound by the model's latency, not by
   the CPU. The worker counts alternate, round after round. Target: each added worker adds at
   least 0.8 of one worker's throughput (median of N workers >= median of 1 x (1 + 0.8 (N-1))).

    .venv/bin/python benchmarks/workers_scale.py                  # both
    .venv/bin/python benchmarks/workers_scale.py claims --rounds 5
    .venv/bin/python benchmarks/workers_scale.py workers --rounds 3 --latency-ms 250

A throwaway PostgreSQL server is started (tests/pg.py); the workers share one data dir for the
input and output (the local object store): what is measured is how the store shares the jobs
out, which is the same with S3.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.engine_throughput import write_input  # noqa: E402
from tests import pg  # noqa: E402

from batchrock import jobs  # noqa: E402
from batchrock.jobs import Job, JobStatus  # noqa: E402
from batchrock.store.postgres import PostgresStore  # noqa: E402

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
WORKER_COUNTS = (1, 2, 4)
CLAIMERS = (1, 8)


def new_job(prefix: str, now: datetime | None = None) -> Job:
    now = now or datetime.now(UTC)
    return Job(
        job_id=jobs.new_job_id(),
        account_id="123456789012",
        region="us-east-1",
        name="bench",
        model_id=MODEL,
        role_arn="arn:aws:iam::123456789012:role/bench",
        submit_time=now,
        last_modified_time=now,
        input_s3_uri=f"s3://bench/in/{prefix}/",
        output_s3_uri="s3://bench/out/",
        expiration_time=jobs.expiration_for(now, 24),
    )


@contextmanager
def postgres() -> Iterator[Any]:
    with pg.pg_server() as server:
        pg.create_template(server)
        yield server


# --- 1. claims ---------------------------------------------------------------------------


async def _claimer(url: str) -> None:
    """One claiming process: connect, say ready, claim on "go" until nothing is left."""
    store = await PostgresStore.open(url, max_size=1)
    worker = f"bench:{os.getpid()}:{secrets.token_hex(4)}"
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    claimed = []
    start = time.time()
    statuses = {JobStatus.SUBMITTED, JobStatus.VALIDATING}
    while True:
        now = datetime.now(UTC)
        job = await store.claim(worker, statuses, now=now, lease_seconds=3600, submitted_by=now)
        if job is None:
            break
        claimed.append(job.job_id)
    end = time.time()
    await store.close()
    print(json.dumps({"start": start, "end": end, "ids": claimed}), flush=True)


async def _fill(url: str, n: int) -> None:
    store = await PostgresStore.open(url, max_size=4)
    sem = asyncio.Semaphore(4)

    async def one() -> None:
        async with sem:
            await store.create(new_job("claims"), {})

    await asyncio.gather(*(one() for _ in range(n)))
    await store.close()


def claims_round(server: Any, n: int, processes: int) -> float:
    url = server.new_database()
    asyncio.run(_fill(url, n))
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "_claimer", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(processes)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        results.append(json.loads(out.strip().splitlines()[-1]))
    server.drop_database(url)
    ids = [i for r in results for i in r["ids"]]
    if len(ids) != n or len(set(ids)) != n:
        raise SystemExit(f"{len(ids)} claims, {len(set(ids))} distinct, of {n} jobs")
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    return n / seconds


def claims(n: int, rounds: int) -> dict[str, Any]:
    rates: dict[int, list[float]] = {k: [] for k in CLAIMERS}
    with postgres() as server:
        for r in range(rounds):
            for k in CLAIMERS if r % 2 == 0 else reversed(CLAIMERS):
                rate = claims_round(server, n, k)
                rates[k].append(rate)
                print(f"  round {r + 1}: {k} process(es): {rate:,.0f} claims/s", flush=True)
    return {"jobs": n, "rates": rates}


# --- 2. workers --------------------------------------------------------------------------


def write_inputs(data: Path, count: int, records: int) -> None:
    for j in range(count):
        write_input(data / "s3" / "bench" / "in" / f"job{j}" / "records.jsonl", records)
    (data / "s3" / "bench" / "out").mkdir(parents=True, exist_ok=True)


async def _create_all(url: str, count: int) -> list[str]:
    """Create the jobs at once (as many clients would), so creating them takes no longer with
    one worker than with four."""
    store = await PostgresStore.open(url, max_size=count)
    made = await asyncio.gather(*(store.create(new_job(f"job{j}"), {}) for j in range(count)))
    await store.close()
    return [job.job_id for job, _ in made]


def _elapsed(url: str, ids: list[str], records: int) -> float | None:
    """Seconds from the first Submitted to the last Completed, once every job has ended."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status, processed_records FROM jobs WHERE job_id = ANY(%s)", (ids,)
        ).fetchall()
        if any(s not in {"Completed", "Failed", "Stopped", "PartiallyCompleted"} for s, _ in rows):
            return None
        if any(s != "Completed" or p != records for s, p in rows):
            raise SystemExit(f"jobs did not all complete: {rows}")
        row = conn.execute(
            "SELECT min(at) FILTER (WHERE to_status = 'Submitted'), "
            "max(at) FILTER (WHERE to_status = 'Completed') FROM job_events WHERE job_id = ANY(%s)",
            (ids,),
        ).fetchone()
    assert row is not None
    return float(row[1] - row[0]) / 1e6


def workers_round(
    server: Any, data: Path, n: int, count: int, records: int, latency_ms: float, concurrency: int
) -> float:
    url = server.new_database()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHROCK_")}
    settings = {
        "database_url": url,
        "builtin_latency_ms": latency_ms,
        "engine_max_jobs": 1,
        "engine_record_concurrency": concurrency,
        "engine_min_submitted_seconds": 0,
        "quota_min_records_per_job": 1,
        "log_level": "warning",
    }
    env.update({f"BATCHROCK_{k.upper()}": str(v) for k, v in settings.items()})
    env["PYTHONPATH"] = str(ROOT / "src")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "batchrock.admin", "worker", "--data-dir", str(data)], env=env
        )
        for _ in range(n)
    ]
    try:
        deadline = time.monotonic() + 120
        while pg.listeners(url) < n:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit("the workers did not start")
            time.sleep(0.05)
        ids = asyncio.run(_create_all(url, count))
        while (seconds := _elapsed(url, ids, records)) is None:
            time.sleep(0.05)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    server.drop_database(url)
    return count * records / seconds


def workers(rounds: int, count: int, records: int, latency_ms: float, concurrency: int) -> Any:
    rates: dict[int, list[float]] = {k: [] for k in WORKER_COUNTS}
    with postgres() as server, tempfile.TemporaryDirectory(prefix="batchrock-workers-") as tmp:
        data = Path(tmp) / "data"
        write_inputs(data, count, records)
        for r in range(rounds):
            for k in WORKER_COUNTS if r % 2 == 0 else reversed(WORKER_COUNTS):
                rate = workers_round(server, data, k, count, records, latency_ms, concurrency)
                rates[k].append(rate)
                print(f"  round {r + 1}: {k} worker(s): {rate:,.1f} records/s", flush=True)
    return rates


def _summary(values: list[float]) -> str:
    return f"median {statistics.median(values):,.1f} (range {min(values):,.1f}-{max(values):,.1f})"


def main(argv: list[str]) -> int:
    if argv[:1] == ["_claimer"]:
        asyncio.run(_claimer(argv[1]))
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("which", nargs="?", choices=("claims", "workers", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--claims", type=int, default=3000, help="jobs to claim per round")
    parser.add_argument("--jobs", type=int, default=16, help="jobs per workers round")
    parser.add_argument("--records", type=int, default=96, help="records per job")
    parser.add_argument("--latency-ms", type=float, default=250)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    ok = True
    if args.which in ("claims", "both"):
        print(f"claims: {args.claims} Submitted jobs per round, {args.rounds} rounds", flush=True)
        found = claims(args.claims, args.rounds)
        for k, values in found["rates"].items():
            print(f"claims/s with {k} process(es): {_summary(values)}")
    if args.which in ("workers", "both"):
        print(
            f"workers: {args.jobs} jobs x {args.records} records, model {args.latency_ms} ms a "
            f"record, {args.concurrency} in flight per worker, {args.rounds} rounds",
            flush=True,
        )
        rates = workers(args.rounds, args.jobs, args.records, args.latency_ms, args.concurrency)
        one = statistics.median(rates[1])
        for k, values in rates.items():
            target = one * (1 + 0.8 * (k - 1))
            med = statistics.median(values)
            added = (med - one) / (k - 1) / one if k > 1 else 1.0
            verdict = "" if k == 1 else f"; each added worker adds {added:.2f} of one"
            print(f"{k} worker(s): {_summary(values)} records/s{verdict}")
            if med < target:
                print(f"  MISSED: {k} workers need >= {target:,.1f} records/s")
                ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
