"""One job's rate and CPU with its records answered in 1 and in N processes (engine_processes).

    .venv/bin/python benchmarks/engine_processes.py --records 10000 --latency-ms 0 \\
        --concurrency 256 --processes 1 2 2:0 --rounds 5 [--server lean]

Each ``--processes`` value is one setting: ``engine_processes``, and after a colon the
``engine_offload_load`` (``2:0``: every record to the 2 workers); without one, the
``--offload-load`` given (default 0, every record to the workers: the benchmark then measures
what the workers do, not whether the engine's loop was busy enough to send them records;
``--offload-load 0.8`` is the setting's default). After an ``@``, a source tree to run that
``batchrock serve`` from (its ``PYTHONPATH``), to compare two commits in one run, e.g.
``2:0.8@/tmp/before/src`` with ``git archive main src | tar -x -C /tmp/before``.

For each setting a fake OpenAI-compatible server (the tests', or with ``--server lean``
benchmarks/_lean_openai.py, one prepared answer at a fraction of the CPU) and a ``batchrock
serve`` routing a Claude model to it (``max_concurrency`` = ``engine_record_concurrency`` =
``--concurrency``) are started once, side by side, and each runs a 200-record warm-up job
(with ``engine_offload_load`` 0 it starts the workers). Then, round after round, each runs one
job of ``--records`` Claude Messages records, the settings taking turns and the order reversed
every other round (a busy moment of the machine, or a position in the round, weighs on every
setting alike); the idle services wait meanwhile.

Per job: records per second from InProgress to Completed (the store's transition times),
the CPU per record of the engine process and of its worker processes (user + system, those
started during the job counted from their start), the engine process's CPU over the job's
time (how much of one core its loop used: ``engine_offload_load`` compares that, measured
every 0.5 s, with its threshold) and the workers there were at the end. Then per setting the
median and range of each over the rounds, and the median and range of its rate over the first
setting's, round by round. On a machine with few cores the fake server competes with
batchrock for them, so a speed-up is bounded by what is left: its CPU is printed to show it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.openai_backend import (  # noqa: E402
    FAKE,
    MODEL,
    bedrock_client,
    cpu_seconds,
    job_times,
    services,
    write_records,
)

from batchrock.backends.process_pool import idle_cpu_seconds  # noqa: E402

FINAL = ("Completed", "PartiallyCompleted", "Failed", "Stopped")
SERVERS = {"tests": FAKE, "lean": ROOT / "benchmarks" / "_lean_openai.py"}


def children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids.extend(int(k) for k in (task / "children").read_text().split())
    return kids


@dataclass
class Setup:
    label: str
    processes: int
    offload: float
    client: Any
    data: Path
    pid: int
    fake: int
    jobs: int = 0


@dataclass
class Job:
    rate: float
    engine_us: float
    workers_us: float
    fake_us: float
    engine_load: float
    #: Idle cores' worth of this machine's CPUs over the job (what Offload also looks at).
    idle: float
    workers: int


def job_seconds(data: Path, arn: str) -> float:
    """InProgress to the end, from the store's transition times."""
    times = job_times(data, arn.rsplit("/", 1)[-1])
    end = next(times[s] for s in FINAL if s in times)
    return float(end - times["InProgress"]) / 1e6


def submit(setup: Setup, folder: str) -> tuple[str, str]:
    """Run a job over ``s3://bench-bucket/{folder}/``; (ARN, final status)."""
    setup.jobs += 1
    arn = setup.client.create_model_invocation_job(
        jobName=f"bench-{setup.jobs}",
        roleArn="arn:aws:iam::123456789012:role/bench",
        modelId=MODEL,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://bench-bucket/{folder}/"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://bench-bucket/out-{folder}/"}},
    )["jobArn"]
    while True:
        status = setup.client.get_model_invocation_job(jobIdentifier=arn)["status"]
        if status in FINAL:
            return arn, str(status)
        time.sleep(0.05)


def one(setup: Setup, records: int) -> Job:
    """One job of ``records`` records on ``setup``, measured."""
    before = {p: cpu_seconds(p) for p in [setup.pid, *children(setup.pid)]}
    fake_before = cpu_seconds(setup.fake)
    idle_before, wall_before = idle_cpu_seconds() or 0.0, time.monotonic()
    arn, status = submit(setup, "main")
    idle = ((idle_cpu_seconds() or 0.0) - idle_before) / (time.monotonic() - wall_before)
    if status != "Completed":
        raise SystemExit(f"{setup.label}: the job ended {status}")
    workers = children(setup.pid)
    used = {p: cpu_seconds(p) - before.get(p, 0.0) for p in [setup.pid, *workers]}
    seconds = job_seconds(setup.data, arn)
    engine = used[setup.pid]
    job = Job(
        rate=records / seconds,
        engine_us=engine / records * 1e6,
        workers_us=sum(used[p] for p in workers) / records * 1e6,
        fake_us=(cpu_seconds(setup.fake) - fake_before) / records * 1e6,
        # The engine's CPU from submit to end over the InProgress time: a little high (the
        # submit, the polls, the validation), close enough to read against the threshold.
        engine_load=engine / seconds,
        idle=idle,
        workers=len(workers),
    )
    print(
        f"  {setup.label:<40} {job.rate:7.0f} records/s, engine process {job.engine_us:3.0f} us "
        f"a record ({job.engine_load:.2f} of a core), workers {job.workers_us:3.0f} us "
        f"({job.workers} running), fake server {job.fake_us:3.0f} us, {job.idle:.2f} cores idle",
        flush=True,
    )
    return job


def spread(values: list[float], digits: int = 0) -> str:
    return (
        f"median {statistics.median(values):8.{digits}f}  "
        f"range {min(values):.{digits}f}-{max(values):.{digits}f}"
    )


def parse_setting(text: str, offload: float) -> tuple[int, float, str]:
    """``P[:LOAD][@SRC]``: (engine_processes, engine_offload_load, source tree or "")."""
    text, _, source = text.partition("@")
    processes, _, load = text.partition(":")
    return int(processes), float(load) if load else offload, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument(
        "--processes",
        nargs="+",
        default=["1", "2"],
        help="settings: engine_processes, optionally :engine_offload_load (e.g. 1 2 2:0.8)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--offload-load",
        type=float,
        default=0.0,
        help="engine_offload_load of the settings that give none (default 0: all to workers)",
    )
    parser.add_argument("--server", choices=sorted(SERVERS), default="tests")
    args = parser.parse_args()
    settings = [parse_setting(text, args.offload_load) for text in args.processes]
    fake_args = ["--uvloop"] if args.server == "lean" else []
    setups: list[Setup] = []
    with contextlib.ExitStack() as stack:
        for processes, offload, source in settings:

            def routes_for(fake_port: int) -> str:
                return (
                    f'[[routes]]\nmodel = "{MODEL}"\nbackend = "openai"\n'
                    f'base_url = "http://127.0.0.1:{fake_port}/v1"\nserved_model = "bench"\n'
                    f"max_concurrency = {args.concurrency}\n"
                )

            known = {p for s in setups for p in (s.pid, s.fake)}
            url, data, pid = stack.enter_context(
                services(
                    args,
                    routes_for,
                    fake_args,
                    SERVERS[args.server],
                    BATCHROCK_ENGINE_PROCESSES=str(processes),
                    BATCHROCK_ENGINE_OFFLOAD_LOAD=str(offload),
                    **({"PYTHONPATH": source} if source else {}),
                )
            )
            fake = next(p for p in children(os.getpid()) if p not in known and p != pid)
            label = f"engine_processes={processes} offload_load={offload:g}"
            label += f" @{Path(source).parent.name}" if source else ""
            if any(s.label == label for s in setups):  # the same setting twice: the noise
                label += f" #{len(setups) + 1}"
            setups.append(Setup(label, processes, offload, bedrock_client(url), data, pid, fake))
            bucket = data / "s3" / "bench-bucket"
            write_records(bucket / "warm" / "records.jsonl", 200, "W")
            write_records(bucket / "main" / "records.jsonl", args.records, "R")
        for setup in setups:
            submit(setup, "warm")
        results: dict[str, list[Job]] = {s.label: [] for s in setups}
        for number in range(args.rounds):
            print(f"round {number + 1}", flush=True)
            order = setups if number % 2 == 0 else setups[::-1]
            for setup in order:
                results[setup.label].append(one(setup, args.records))
    first = results[setups[0].label]
    print(
        f"\n{args.records} records at {args.latency_ms:g} ms, concurrency {args.concurrency}, "
        f"{args.rounds} rounds, {args.server} fake server"
    )
    for label, jobs in results.items():
        ratios = [j.rate / base.rate for j, base in zip(jobs, first, strict=True)]
        print(label)
        print(f"  records/s                {spread([j.rate for j in jobs])}")
        print(f"  engine process us/record {spread([j.engine_us for j in jobs])}")
        print(f"  engine process, cores    {spread([j.engine_load for j in jobs], 2)}")
        print(f"  workers us/record        {spread([j.workers_us for j in jobs])}")
        print(f"  fake server us/record    {spread([j.fake_us for j in jobs])}")
        print(f"  workers running at end   {spread([float(j.workers) for j in jobs])}")
        print(f"  idle cores               {spread([j.idle for j in jobs], 2)}")
        print(f"  rate / first setting     {spread(ratios, 2)}")


if __name__ == "__main__":
    main()
