"""Engine benchmarks (issue 3, item 10).

1. Throughput: records per second through the whole pipeline (submit -> Validating ->
   InProgress -> Completed: the validation pass, the model, the ordered writer, checkpoints,
   the .out upload and the manifest) with the built-in model at zero latency, against a plain
   orjson read-parse-write loop over the same file in the same run. Target: >= 0.3 of the loop,
   as the median of several jobs, each against the loops run just before and after it.
2. Latency-bound: the built-in model at 200 ms a record, 10,000 records; the job must finish
   within 1.1 x records x latency / concurrency.

    .venv/bin/python benchmarks/engine_throughput.py             # both
    .venv/bin/python benchmarks/engine_throughput.py throughput --records 50000
    .venv/bin/python benchmarks/engine_throughput.py latency --concurrency 256
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from batchrock import jobs
from batchrock.backends.base import MockBackend, ModelBackend, ModelRequest, ModelResult
from batchrock.backends.routing import build_resolver
from batchrock.clock import SystemClock
from batchrock.engine import Engine
from batchrock.jobs import Job, JobStatus
from batchrock.objects import LocalObjectStore
from batchrock.settings import Settings
from batchrock.store.sqlite import SqliteStore


def write_input(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for i in range(n):
            rec = {
                "recordId": f"CALL{i:07d}",
                "modelInput": {
                    "anthropic_version": "bedrock-2023-05-31",
                    "max_tokens": 64,
                    "messages": [{"role": "user", "content": f"Tell me about item {i}."}],
                },
            }
            fh.write(orjson.dumps(rec) + b"\n")


def plain_loop(src: Path, dst: Path) -> float:
    """The yardstick: read, parse, build an output record, serialise, write. Seconds."""
    start = time.perf_counter()
    with src.open("rb") as fin, dst.open("wb") as fout:
        for line in fin:
            rec = orjson.loads(line)
            out = {"recordId": rec["recordId"], "modelInput": rec["modelInput"], "modelOutput": {}}
            fout.write(orjson.dumps(out) + b"\n")
    return time.perf_counter() - start


class NoopResolver:
    """A model that costs nothing: isolates the engine's own per-record cost."""

    def __init__(self) -> None:
        result = ModelResult(output={"ok": True}, input_tokens=1, output_tokens=1)

        async def invoke(request: ModelRequest) -> ModelResult:
            return result

        self.backend = MockBackend(invoke)
        self.backend.invoke = invoke  # type: ignore[method-assign]  # skip the call log

    def for_model(self, model_id: str) -> ModelBackend:
        return self.backend

    async def aclose(self) -> None:
        return None


async def run_job(settings: Settings, n: int, noop: bool = False) -> tuple[float, float, Job]:
    """Submit one job over ``n`` records and time it to a final state.
    Returns (seconds from creation to Completed, seconds InProgress, job)."""
    store = await SqliteStore.open(settings.database_path)
    clock = SystemClock()
    resolver: Any = NoopResolver() if noop else build_resolver(settings)
    engine = Engine(settings, store, clock, resolver, LocalObjectStore(settings.data_dir / "s3"))
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    await asyncio.sleep(0.05)  # the engine starts, finds nothing and waits for its next poll
    now = clock.now()
    job = Job(
        job_id=jobs.new_job_id(),
        account_id="123456789012",
        region="us-east-1",
        name="bench",
        model_id="anthropic.claude-3-haiku-20240307-v1:0",
        role_arn="arn:aws:iam::123456789012:role/bench",
        submit_time=now,
        last_modified_time=now,
        input_s3_uri="s3://bench/in/",
        output_s3_uri="s3://bench/out/",
        expiration_time=jobs.expiration_for(now, 24),
    )
    await store.create(job, {})
    engine.wake()  # what `batchrock serve` does when its API creates a job
    while True:
        # Slow polling on purpose: it shares the event loop with the engine. The times come
        # from the job's own transition records, not from when this loop noticed them.
        got = await store.get_by_id(job.job_id)
        assert got is not None
        if got.is_terminal:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    times = {e.to_status: e.at for e in await store.events(job.job_id)}
    elapsed = (times[got.status] - times[JobStatus.SUBMITTED]).total_seconds()
    running = (times[got.status] - times[JobStatus.IN_PROGRESS]).total_seconds()
    await resolver.aclose()
    await store.close()
    if got.status is not JobStatus.COMPLETED or got.counters.processed != n:
        raise SystemExit(f"job ended {got.status} ({got.message}), {got.counters}")
    return elapsed, running, got


def setup(tmp: Path, n: int, **settings: Any) -> Settings:
    data = tmp / "data"
    write_input(data / "s3" / "bench" / "in" / "records.jsonl", n)
    (data / "s3" / "bench" / "out").mkdir(parents=True)
    return Settings(
        data_dir=data,
        quota_min_records_per_job=1,
        # The time from Submitted counts the engine's work, not Bedrock's Submitted dwell.
        engine_min_submitted_seconds=0,
        **settings,
    )


def throughput(n: int, concurrency: int, noop: bool = False, runs: int = 7) -> dict[str, Any]:
    """``runs`` jobs, each between two plain loops over the same file. Each job's ratio is
    against the mean of its two loops, so both sides of a ratio saw the same machine; the
    machine is shared and noisy, so the median ratio decides and the range is reported."""
    ratios: list[float] = []
    running_ratios: list[float] = []
    loops: list[float] = []
    jobs_: list[float] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for run in range(runs):
            settings = setup(tmp / f"run{run}", n, engine_record_concurrency=concurrency)
            src = settings.data_dir / "s3" / "bench" / "in" / "records.jsonl"
            before = plain_loop(src, tmp / "plain.out")
            job_s, running_s, _ = asyncio.run(run_job(settings, n, noop))
            after = plain_loop(src, tmp / "plain.out")
            loop_s = (before + after) / 2
            loops.append(loop_s)
            jobs_.append(job_s)
            ratios.append(loop_s / job_s)
            running_ratios.append(loop_s / running_s)
    ratio = statistics.median(ratios)
    return {
        "model": "no-op (engine only)" if noop else "built-in, zero latency",
        "records": n,
        "concurrency": concurrency,
        "runs": runs,
        "plain_loop_rps_median": round(n / statistics.median(loops)),
        "pipeline_rps_median": round(n / statistics.median(jobs_)),
        "ratio_median": round(ratio, 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        # The InProgress phase alone (without Validating's pass over the file).
        "in_progress_ratio_median": round(statistics.median(running_ratios), 3),
        "target": 0.3,
        "ok": ratio >= 0.3,
    }


def latency(n: int, latency_ms: float, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        settings = setup(
            Path(tmp_name), n, engine_record_concurrency=concurrency, builtin_latency_ms=latency_ms
        )
        job_s, _, _ = asyncio.run(run_job(settings, n))
    ideal = n * latency_ms / 1000 / concurrency
    return {
        "records": n,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "ideal_s": round(ideal, 2),
        "job_s": round(job_s, 2),
        "ratio": round(job_s / ideal, 3),
        "target": 1.1,
        "ok": job_s <= 1.1 * ideal,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", choices=["throughput", "latency", "all"], default="all")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--runs", type=int, default=7, help="throughput jobs (median decides)")
    parser.add_argument(
        "--noop", action="store_true", help="throughput with a no-op model (engine cost only)"
    )
    args = parser.parse_args(argv)
    results = []
    if args.which in ("throughput", "all"):
        n, c = args.records or 50_000, args.concurrency or 64
        results.append(("throughput", throughput(n, c, args.noop, args.runs)))
    if args.which in ("latency", "all"):
        results.append(
            ("latency", latency(args.records or 10_000, args.latency_ms, args.concurrency or 256))
        )
    for name, result in results:
        print(name, orjson.dumps(result).decode())
    return 0 if all(r["ok"] for _, r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
