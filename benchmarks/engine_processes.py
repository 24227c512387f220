"""One job's rate and CPU with its records answered in 1 and in N processes (engine_processes).

    .venv/bin/python benchmarks/engine_processes.py --records 10000 --latency-ms 0 \\
        --concurrency 256 --processes 1 2 --rounds 3

For each round and each ``--processes`` value in turn (alternating, so a busy machine weighs
on every setting alike): the fake OpenAI-compatible server from the tests (answering after
``--latency-ms``) and a ``batchrock serve`` with ``engine_processes`` set to that value and a
route to the fake server (``max_concurrency`` = ``engine_record_concurrency`` =
``--concurrency``); a warm-up job of 200 records (it starts the worker processes), then one
job of ``--records`` Claude Messages records, timed from InProgress to Completed. Every
record goes to the workers (``engine_offload_load`` 0) unless ``--offload-load`` says
otherwise: the benchmark measures what the workers do, not whether the engine's loop was busy
enough to send them records.

Prints, per setting, the median and range over the rounds of the job's records per second and
of the CPU per record of the service (the engine process and its worker processes, user +
system) and of the fake server, then the median ratio of each setting's rate to the first
one's. On a machine with few cores the fake server competes with batchrock for them, so the
speed-up is bounded by what is left: the fake server's CPU is printed to show it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.openai_backend import MODEL, cpu_seconds, services, write_records  # noqa: E402

FINAL = ("Completed", "PartiallyCompleted", "Failed", "Stopped")


def family(pid: int) -> list[int]:
    """``pid`` and its child processes (the engine's worker processes)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids.extend(int(k) for k in text)
    return [pid, *kids]


def fake_pid(server_pid: int) -> int | None:
    """The fake model server: the other python process the benchmark started."""
    me = Path("/proc/self/stat").read_text().split()[0]
    for task in Path(f"/proc/{me}/task").iterdir():
        for kid in (task / "children").read_text().split():
            if int(kid) != server_pid:
                return int(kid)
    return None


def run_job(client: Any, name: str, folder: str) -> tuple[float, str]:
    """Submit a job on ``s3://bench-bucket/{folder}/``; (seconds InProgress, final status)."""
    arn = client.create_model_invocation_job(
        jobName=name,
        roleArn="arn:aws:iam::123456789012:role/bench",
        modelId=MODEL,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://bench-bucket/{folder}/"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://bench-bucket/out-{folder}/"}},
    )["jobArn"]
    started = None
    while True:
        job = client.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] == "InProgress" and started is None:
            started = time.perf_counter()
        if job["status"] in FINAL:
            return time.perf_counter() - (started or time.perf_counter()), str(job["status"])
        time.sleep(0.05)


def one(args: argparse.Namespace, processes: int) -> tuple[float, float, float]:
    """(records/s, service CPU µs a record, fake server CPU µs a record) of one job."""

    def routes_for(fake_port: int) -> str:
        return (
            f'[[routes]]\nmodel = "{MODEL}"\nbackend = "openai"\n'
            f'base_url = "http://127.0.0.1:{fake_port}/v1"\nserved_model = "bench"\n'
            f"max_concurrency = {args.concurrency}\n"
        )

    extra = {
        "BATCHROCK_ENGINE_PROCESSES": str(processes),
        "BATCHROCK_ENGINE_OFFLOAD_LOAD": str(args.offload_load),
    }
    with services(args, routes_for, **extra) as (url, data, pid):
        bucket = data / "s3" / "bench-bucket"
        write_records(bucket / "warm" / "records.jsonl", 200, "W")
        write_records(bucket / "main" / "records.jsonl", args.records, "R")
        client: Any = boto3.client(
            "bedrock",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="AKIAEXAMPLE",
            aws_secret_access_key="secret",
            config=Config(retries={"max_attempts": 1}),
        )
        run_job(client, "warm-up", "warm")
        fake = fake_pid(pid)
        pids = family(pid)
        before = {p: cpu_seconds(p) for p in pids}
        fake_before = cpu_seconds(fake) if fake else 0.0
        elapsed, status = run_job(client, "bench", "main")
        used = {p: cpu_seconds(p) - before[p] for p in pids}
        service_cpu = sum(used.values())
        fake_cpu = (cpu_seconds(fake) - fake_before) if fake else 0.0
        if status != "Completed":
            raise SystemExit(f"the job ended {status}")
        workers = len(pids) - 1
        rate = args.records / elapsed
        print(
            f"  engine_processes={processes} ({workers} workers): {rate:7.0f} records/s, "
            f"service {service_cpu / args.records * 1e6:4.0f} us/record "
            f"(engine process {used[pid] / args.records * 1e6:.0f}), "
            f"fake server {fake_cpu / args.records * 1e6:4.0f} us/record",
            flush=True,
        )
        return rate, service_cpu / args.records * 1e6, fake_cpu / args.records * 1e6


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):7.0f}  range {min(values):.0f}-{max(values):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--offload-load",
        type=float,
        default=0.0,
        help="the engine_offload_load setting (default 0: every record to the workers)",
    )
    args = parser.parse_args()
    results: dict[int, list[tuple[float, float, float]]] = {n: [] for n in args.processes}
    for number in range(args.rounds):
        print(f"round {number + 1}", flush=True)
        for processes in args.processes:
            results[processes].append(one(args, processes))
    first = args.processes[0]
    print(
        f"\n{args.records} records at {args.latency_ms:g} ms, concurrency {args.concurrency}, "
        f"{args.rounds} rounds"
    )
    for processes, runs in results.items():
        rates = [r[0] for r in runs]
        ratios = [r[0] / base[0] for r, base in zip(runs, results[first], strict=True)]
        print(f"engine_processes={processes}")
        print(f"  records/s              {spread(rates)}")
        print(f"  service CPU us/record  {spread([r[1] for r in runs])}")
        print(f"  fake server us/record  {spread([r[2] for r in runs])}")
        print(
            f"  rate / processes={first}     median {statistics.median(ratios):.2f}  "
            f"range {min(ratios):.2f}-{max(ratios):.2f}"
        )


if __name__ == "__main__":
    main()
