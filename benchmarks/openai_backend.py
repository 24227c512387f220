"""A whole job against an OpenAI-compatible endpoint with a fixed latency.

    .venv/bin/python benchmarks/openai_backend.py --records 10000 --latency-ms 200 \\
        --concurrency 256

Starts the fault-injecting OpenAI-compatible server from the tests (no faults asked for, every
answer after ``--latency-ms``), a ``batchrock serve`` whose routes file sends the model to it
with ``max_concurrency`` = ``engine_record_concurrency`` = ``--concurrency``, submits one job of
``--records`` Claude Messages records through boto3 and waits for it to complete.

Reports the time from InProgress to Completed against the ideal ``records * latency /
concurrency``, and the service process's CPU time per record (user + system, whole process:
API, engine, backend and HTTP client). Nothing here passes or fails: the numbers go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import orjson
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
FAKE = ROOT / "tests" / "backends" / "fake_openai.py"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every process under it now (the engine's model
    worker processes with engine_processes above 1)."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            total += cpu_seconds(current)
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue  # it ended meanwhile
        todo.extend(int(c) for c in children)
    return total


@contextlib.contextmanager
def services(
    args: argparse.Namespace,
    routes_for: Callable[[int], str],
    fake_args: Sequence[str] = (),
    fake: Path = FAKE,
    **env_extra: str,
) -> Iterator[tuple[str, Path, int]]:
    """The fake OpenAI-compatible server ``fake`` (the tests' by default; answering after
    ``args.latency_ms``, with ``fake_args`` added to its command line) and a ``batchrock
    serve`` with the routes ``routes_for(fake_port)`` gives: (API URL, data dir, server pid),
    both stopped afterwards."""
    # Removed at the end, on an error or Ctrl-C too, after the servers are stopped.
    with tempfile.TemporaryDirectory(prefix="batchrock-openai-bench-") as folder:
        work = Path(folder)
        fake_port, api_port = free_port(), free_port()
        model_server = subprocess.Popen(
            [
                sys.executable,
                str(fake),
                "--port",
                str(fake_port),
                "--latency-ms",
                str(args.latency_ms),
                *fake_args,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        server: subprocess.Popen[bytes] | None = None
        try:
            out = model_server.stdout
            assert out is not None and out.readline().strip() == "ready"
            routes = work / "models.toml"
            routes.write_text(routes_for(fake_port))
            env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHROCK_")}
            env.update(
                BATCHROCK_MODELS_CONFIG=str(routes),
                BATCHROCK_BUILTIN_FALLBACK="false",
                BATCHROCK_ENGINE_RECORD_CONCURRENCY=str(args.concurrency),
                BATCHROCK_ENGINE_POLL_SECONDS="0.05",
                BATCHROCK_LOG_LEVEL="warning",
                **env_extra,
            )
            data = work / "data"
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "batchrock.admin",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(api_port),
                    "--data-dir",
                    str(data),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            url = f"http://127.0.0.1:{api_port}"
            for _ in range(300):
                try:
                    urllib.request.urlopen(url + "/_batchrock/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            yield url, data, server.pid
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=15)
            model_server.kill()
            model_server.wait()
            if model_server.stdout is not None:
                model_server.stdout.close()


def routes_for(concurrency: int) -> Callable[[int], str]:
    """The routes file sending :data:`MODEL` to the fake server, ``concurrency`` in flight."""

    def routes(fake_port: int) -> str:
        return f"""
[[routes]]
model = "{MODEL}"
backend = "openai"
base_url = "http://127.0.0.1:{fake_port}/v1"
served_model = "bench"
max_concurrency = {concurrency}
"""

    return routes


def write_records(path: Path, records: int, prefix: str = "R") -> None:
    """``records`` small Claude Messages records, one JSON line each, at ``path`` (record ids
    ``prefix`` and a number)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for i in range(records):
            body = {
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"Summarize record {i}."}],
            }
            out.write(orjson.dumps({"recordId": f"{prefix}{i:08d}", "modelInput": body}) + b"\n")


def bedrock_client(url: str) -> Any:
    return boto3.client(
        "bedrock",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}),
    )


@dataclass(frozen=True)
class JobRun:
    status: str
    ok: int
    errors: int
    #: Seconds from InProgress to the end, from the store's own transition times.
    in_progress_s: float
    #: The ``batchrock serve`` process's CPU seconds from CreateModelInvocationJob to the end.
    cpu_s: float
    #: When the job reached each status, wall-clock microseconds (the store's job_events).
    times: dict[str, int] = field(default_factory=dict)


def job_times(data: Path, job_id: str) -> dict[str, int]:
    """When the job reached each status, wall-clock microseconds: the transition times the
    store recorded (polling would add its interval to the measurement, or cost the server CPU
    to avoid it)."""
    with sqlite3.connect(data / "batchrock.sqlite3") as db:
        return dict(
            db.execute(
                "SELECT to_status, at FROM job_events WHERE job_id LIKE ? ORDER BY id",
                (f"%{job_id}",),
            ).fetchall()
        )


def run_job(client: Any, data: Path, pid: int, name: str, poll_s: float = 0.1) -> JobRun:
    """One job over ``s3://bench-bucket/in/`` (output under ``out/``), waited for."""
    cpu_before = tree_cpu_seconds(pid)
    arn = client.create_model_invocation_job(
        jobName=name,
        roleArn="arn:aws:iam::123456789012:role/bench",
        modelId=MODEL,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://bench-bucket/in/"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bench-bucket/out/"}},
    )["jobArn"]
    while True:
        job = client.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in ("Completed", "PartiallyCompleted", "Failed", "Stopped"):
            break
        time.sleep(poll_s)
    if job["status"] == "Failed":  # e.g. fewer records than quota_min_records_per_job (100)
        raise SystemExit(f"the benchmark's job failed: {job.get('message', '')}")
    cpu = tree_cpu_seconds(pid) - cpu_before
    job_id = arn.rsplit("/", 1)[-1]
    manifest = orjson.loads(
        (data / "s3" / "bench-bucket" / "out" / job_id / "manifest.json.out").read_bytes()
    )
    times = job_times(data, job_id)
    return JobRun(
        status=job["status"],
        ok=manifest["successRecordCount"],
        errors=manifest["errorRecordCount"],
        in_progress_s=(times[job["status"]] - times["InProgress"]) / 1e6,
        cpu_s=cpu,
        times=times,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()

    with services(args, routes_for(args.concurrency)) as (url, data, pid):
        write_records(data / "s3" / "bench-bucket" / "in" / "records.jsonl", args.records)
        run = run_job(bedrock_client(url), data, pid, "openai-bench", poll_s=0.02)
        ideal = args.records * args.latency_ms / 1000 / args.concurrency
        print(f"status            {run.status}  ({run.ok} ok, {run.errors} errors)")
        print(
            f"records           {args.records} at {args.latency_ms:g} ms, concurrency "
            f"{args.concurrency}"
        )
        print(f"InProgress time   {run.in_progress_s:.2f} s")
        print(f"ideal             {ideal:.2f} s")
        if ideal > 0:  # at 0 ms latency there is no ideal time to compare with
            print(f"ratio             {run.in_progress_s / ideal:.3f}")
        print(f"records/s         {args.records / run.in_progress_s:.0f}")
        print(
            f"service CPU       {run.cpu_s:.2f} s = {run.cpu_s / args.records * 1e6:.0f} us "
            "a record"
        )


if __name__ == "__main__":
    main()
