"""ListModelInvocationJobs and GetModelInvocationJob against a bare uvicorn floor.

    .venv/bin/python benchmarks/api_listing.py --rounds 9 --requests 200

Fills a fresh SQLite store with ``--jobs`` jobs (every status, optional members present and
absent), starts ``batchrock serve`` on it (``--no-engine``: nothing else runs in the process)
and the floor (benchmarks/_api_floor.py: a bare uvicorn app answering the very bytes batchrock
gave for each request); with ``--credentials`` batchrock verifies every request's signature
against a credentials file (without, open mode). Then, round after round, the same signed
requests go to one and then the other (the order alternates), over ``--connections``
keep-alive connections, and each server's CPU time (user + system of its process, from
/proc) per request is measured; wall time gives requests per second. With ``--churn N`` the
newest job's progress is written N times a second meanwhile (through a connection of the
benchmark's own), so listings keep finding a changed job on their page, as while a job runs.
Prints, per kind of request, the median ratio of batchrock to the floor and its range over the
rounds. Nothing passes or fails: the numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from batchrock import jobs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_backend import free_port

from batchrock.jobs import Counters, Job, JobStatus
from batchrock.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "123456789012"
REGION = "us-east-1"
ACCESS_KEY, SECRET = "AKIAEXAMPLE000000001", "benchmark-secret-0001"


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far, in nanosecond resolution (schedstat; the
    10 ms ticks of /proc/PID/stat are too coarse for a few hundred requests)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def varied_job(i: int, rng: random.Random, base: datetime) -> Job:
    statuses = list(JobStatus)
    status = statuses[i % len(statuses)]
    submit = base + timedelta(seconds=i, microseconds=rng.randrange(1_000_000))
    some = rng.random() < 0.5
    return Job(
        job_id=jobs.new_job_id(),
        account_id=ACCOUNT,
        region=REGION,
        name=f"bench-job-{i}",
        model_id="anthropic.claude-3-haiku-20240307-v1:0",
        role_arn="arn:aws:iam::123456789012:role/BatchRole",
        client_request_token=f"token-{i}" if some else None,
        status=status,
        message="Input file not found" if status is JobStatus.FAILED else None,
        submit_time=submit,
        last_modified_time=submit + timedelta(seconds=5),
        end_time=submit + timedelta(minutes=3) if status in jobs.TERMINAL else None,
        input_s3_uri="s3://bench-bucket/in/",
        input_bucket_owner=ACCOUNT if some else None,
        output_s3_uri="s3://bench-bucket/out/",
        output_kms_key_id="alias/bench" if not some else None,
        vpc_subnet_ids=("subnet-1", "subnet-2") if i % 3 == 0 else None,
        vpc_security_group_ids=("sg-1",) if i % 3 == 0 else None,
        expiration_time=submit + timedelta(hours=24),
        counters=Counters(total=i, processed=i, success=i - i // 10, error=i // 10),
    )


async def fill(path: Path, n: int) -> str:
    store = await SqliteStore.open(path)
    # The UPDATEs below go around the store's lock waiting (it waits off the event loop): let
    # SQLite's busy handler wait instead, for the store's own WAL checkpointer's truncations.
    store._conn.execute(f"PRAGMA busy_timeout = {int(store.busy_timeout * 1000)}")
    rng = random.Random(12)
    base = datetime(2026, 11, 1, tzinfo=UTC)
    first = ""
    for i in range(n):
        job = varied_job(i, rng, base)
        first = first or job.job_id
        await store.create(job.evolve(status=jobs.INITIAL), {})
        # Straight to the final state and counters (the store's transition would check the
        # lifecycle path, which the benchmark does not need to walk).
        store._conn.execute(
            "UPDATE jobs SET status = ?, message = ?, end_time = ?, last_modified_time = ?, "
            "total_records = ?, processed_records = ?, success_records = ?, error_records = ? "
            "WHERE job_id = ?",
            (
                job.status.value,
                job.message,
                None if job.end_time is None else int(job.end_time.timestamp() * 1e6),
                int(job.last_modified_time.timestamp() * 1e6),
                job.counters.total,
                job.counters.processed,
                job.counters.success,
                job.counters.error,
                job.job_id,
            ),
        )
    await store.close()
    return first


def signed(port: int, target: str) -> bytes:
    url = f"http://127.0.0.1:{port}{target}"
    request = AWSRequest(method="GET", url=url, headers={"Accept": "application/json"})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET), "bedrock", REGION).add_auth(request)
    head = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() != "host"]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


async def fetch_once(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await read_response(reader)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length)
    if status != b"200":
        raise RuntimeError(f"{status!r}: {body[:300]!r}")
    return body


async def hammer(port: int, raw: bytes, total: int, connections: int) -> float:
    """Send ``raw`` ``total`` times over ``connections`` keep-alive connections; wall seconds."""
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    left = total

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            writer.write(raw)
            await read_response(reader)

    started = time.perf_counter()
    await asyncio.gather(*(one(r, w) for r, w in streams))
    elapsed = time.perf_counter() - started
    for _, writer in streams:
        writer.close()
    return elapsed


async def churn(path: Path, per_second: float) -> None:
    """Write the newest job's progress ``per_second`` times a second, through a connection of
    its own (another process's write, as far as the server can tell): the first page of every
    listing then has a job that changed since the last listing, as while a job runs."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        (newest,) = conn.execute(
            "SELECT job_id FROM jobs ORDER BY submit_time DESC, job_id DESC LIMIT 1"
        ).fetchone()
        done = 0
        while True:
            done += 1
            conn.execute("UPDATE jobs SET processed_records = ? WHERE job_id = ?", (done, newest))
            await asyncio.sleep(1 / per_second)
    finally:
        conn.close()


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]


def wait_serving(port: int, path: str) -> None:
    for _ in range(400):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never answered")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1100)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=200, help="per round, per page of 100")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument(
        "--loop",
        default="uvloop",
        choices=["asyncio", "uvloop"],
        help="event loop of both servers (batchrock serve's default, event_loop=auto, is uvloop)",
    )
    parser.add_argument(
        "--floor-http",
        default="httptools",
        choices=["h11", "httptools"],
        help="the floor's HTTP parser (batchrock serve's is httptools; h11 for older numbers)",
    )
    parser.add_argument(
        "--churn",
        type=float,
        default=0,
        help="times a second the newest job's progress is written (by another connection, "
        "as a running job's engine would) while the servers are measured; 0: never",
    )
    parser.add_argument(
        "--credentials",
        action="store_true",
        help="serve with a credentials file: every request's SigV4 signature is verified "
        "(without it, open mode: the credential scope is only read)",
    )
    args = parser.parse_args()
    # Removed at the end, on an error or Ctrl-C too, once measure has stopped the servers.
    with tempfile.TemporaryDirectory(prefix="batchrock-api-bench-") as folder:
        await measure(args, Path(folder))


def write_credentials(path: Path) -> Path:
    """A credentials file holding the benchmark's signing key, in its jobs' account."""
    path.write_text(
        f'[[accounts]]\nid = "{ACCOUNT}"\n'
        f'keys = [{{ access_key_id = "{ACCESS_KEY}", secret_access_key = "{SECRET}" }}]\n'
    )
    path.chmod(0o600)
    return path


async def measure(args: argparse.Namespace, work: Path) -> None:
    """The servers on a store of ``args.jobs`` jobs in ``work``, measured; stopped at the end."""
    data = work / "data"
    first_id = await fill(data / "batchrock.sqlite3", args.jobs)
    access: list[str] = []
    if args.credentials:
        # The benchmark's signing key, in the account its jobs belong to.
        credentials = write_credentials(work / "credentials.toml")
        access = ["--credentials-file", str(credentials)]
    api_port, floor_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHROCK_")}
    env.update(BATCHROCK_LOG_LEVEL="warning")
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchrock.admin",
            "serve",
            "--event-loop",
            args.loop,
            "--no-engine",
            "--host",
            "127.0.0.1",
            "--port",
            str(api_port),
            "--data-dir",
            str(data),
            *access,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    floor: subprocess.Popen[bytes] | None = None
    churning: asyncio.Task[None] | None = None
    kinds = {
        "List, page of 100": ("/model-invocation-jobs?maxResults=100", args.requests),
        "List, page of 1000": ("/model-invocation-jobs?maxResults=1000", args.requests // 10),
        "Get": (f"/model-invocation-job/{first_id}", args.requests * 5),
    }
    try:
        wait_serving(api_port, "/_batchrock/health")
        answers = {}
        for target, _ in kinds.values():
            answers[target] = base64.b64encode(
                await fetch_once(api_port, signed(api_port, target))
            ).decode()
        (work / "answers.json").write_bytes(orjson.dumps(answers))
        floor = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "_api_floor.py"),
                "--port",
                str(floor_port),
                "--answers",
                str(work / "answers.json"),
                "--loop",
                args.loop,
                "--http",
                args.floor_http,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_serving(floor_port, "/")
        if args.churn > 0:
            churning = asyncio.create_task(churn(data / "batchrock.sqlite3", args.churn))
        servers = [Server("batchrock", api_port, api), Server("floor", floor_port, floor)]
        cpu: dict[tuple[str, str], list[float]] = {}
        rps: dict[tuple[str, str], list[float]] = {}
        for r in range(args.rounds):
            for kind, (target, n) in kinds.items():
                order = servers if r % 2 == 0 else servers[::-1]
                for server in order:
                    raw = signed(server.port, target)
                    # Both answer the same bytes (the floor was given batchrock's).
                    await fetch_once(server.port, raw)
                    before = cpu_seconds(server.proc.pid)
                    wall = await hammer(server.port, raw, n, args.connections)
                    used = cpu_seconds(server.proc.pid) - before
                    cpu.setdefault((kind, server.name), []).append(used / n)
                    rps.setdefault((kind, server.name), []).append(n / wall)
        print(
            f"{args.rounds} rounds, {args.connections} connections, {args.jobs} jobs stored, "
            f"{args.loop} event loop, floor on {args.floor_http}, "
            f"newest job written {args.churn:g} times a second"
            + (", signatures verified (credentials file)" if args.credentials else ", open mode")
        )
        print(
            "| request | batchrock CPU µs | floor CPU µs | CPU ratio (median, range) "
            "| requests/s ratio (median, range) |"
        )
        print("| --- | ---: | ---: | ---: | ---: |")
        for kind in kinds:
            ours, base = cpu[(kind, "batchrock")], cpu[(kind, "floor")]
            ratios = [a / b for a, b in zip(ours, base, strict=True) if b > 0]
            speed = [
                a / b for a, b in zip(rps[(kind, "batchrock")], rps[(kind, "floor")], strict=True)
            ]
            print(
                f"| {kind} | {statistics.median(ours) * 1e6:.0f} "
                f"| {statistics.median(base) * 1e6:.0f} "
                f"| **{statistics.median(ratios):.2f}** ({min(ratios):.2f}-{max(ratios):.2f}) "
                f"| **{statistics.median(speed):.2f}** ({min(speed):.2f}-{max(speed):.2f}) |"
            )
    finally:
        if churning is not None:
            churning.cancel()
        for proc in (api, floor):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=15)


if __name__ == "__main__":
    asyncio.run(main())
