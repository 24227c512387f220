"""The API under load: many concurrent clients mixing Create, Get, List and Stop.

    .venv/bin/python benchmarks/api_load.py --clients 200 --seconds 20

Starts ``batchrock serve --no-engine`` on a store holding ``--jobs`` jobs (no quota on
unfinished jobs, so every Create is accepted), then ``--clients`` keep-alive connections each
send, one after the other, a request drawn at random: 40 % GetModelInvocationJob, 30 %
ListModelInvocationJobs (first page of 100, or a page after a token), 20 % Create, 10 % Stop.
Requests are SigV4-signed once beforehand (the signatures stay valid for five minutes), so the
clients spend little CPU; they still share the machine with the server. Prints the latency
percentiles per operation and over all. Target (issue 12): p99 under 250 ms with 200 clients.
``--api-processes 1,2`` runs the server once with each ``api_processes`` setting, one after
the other, and prints the server's CPU time (all its processes, from /proc) next to the
latencies. The first request of each connection is timed from the moment the client's
connect returned (the kernel completes the handshake before the server accepts), so it
includes the wait for the server to accept the connection; its own line shows that wait
apart, and so does the line of ``--burst``: that many new connections opened at once halfway
through, while the server is busy with the others, one Get each. Nothing passes or fails:
the numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_listing import (
    REGION,
    fetch_once,
    fill,
    free_port,
    read_response,
    signed,
    wait_serving,
)

WEIGHTS = {"Get": 40, "List": 30, "Create": 20, "Stop": 10}


def signed_post(port: int, target: str, body: bytes) -> bytes:
    url = f"http://127.0.0.1:{port}{target}"
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(Credentials("AKIAEXAMPLE", "secret"), "bedrock", REGION).add_auth(request)
    head = [f"POST {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() != "host"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--jobs", type=int, default=1100)
    parser.add_argument(
        "--burst",
        type=int,
        default=100,
        help="new connections opened at once halfway through the run, one Get each, timed "
        "apart (0: none)",
    )
    parser.add_argument(
        "--api-processes",
        default="1",
        help="setting api_processes of the server; several, comma-separated (1,2): one run "
        "each, one after the other, each on a fresh store",
    )
    args = parser.parse_args()
    for processes in args.api_processes.split(","):
        # Removed after each run, on an error or Ctrl-C too, once run has stopped the server.
        with tempfile.TemporaryDirectory(prefix="batchrock-api-load-") as folder:
            await run(args, int(processes), Path(folder))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def family(pid: int) -> list[int]:
    """``pid`` and the API processes it forked."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


async def run(args: argparse.Namespace, processes: int, work: Path) -> None:
    """One run against a server with ``processes`` API processes, its store in ``work``."""
    data = work / "data"
    await fill(data / "batchrock.sqlite3", args.jobs)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHROCK_")}
    env.update(BATCHROCK_LOG_LEVEL="warning", BATCHROCK_QUOTA_MAX_UNFINISHED_JOBS_PER_MODEL="0")
    env.update(BATCHROCK_API_PROCESSES=str(processes))
    api = subprocess.Popen(
        [
            *(sys.executable, "-m", "batchrock.admin", "serve", "--no-engine"),
            *("--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_serving(port, "/_batchrock/health")
        create = orjson.dumps(
            {
                "jobName": "load",
                "roleArn": "arn:aws:iam::123456789012:role/R",
                "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
                "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://load-bucket/in/"}},
                "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://load-bucket/out/"}},
            }
        )
        create_raw = signed_post(port, "/model-invocation-job", create)
        ids = []
        for _ in range(50):
            ids.append(orjson.loads(await fetch_once(port, create_raw))["jobArn"].rsplit("/")[-1])
        first = orjson.loads(
            await fetch_once(port, signed(port, "/model-invocation-jobs?maxResults=100"))
        )
        token = first["nextToken"]
        requests = {
            "Get": [signed(port, f"/model-invocation-job/{i}") for i in ids],
            "List": [
                signed(port, "/model-invocation-jobs?maxResults=100"),
                signed(port, f"/model-invocation-jobs?maxResults=100&nextToken={token}"),
            ],
            "Create": [create_raw],
            "Stop": [signed_post(port, f"/model-invocation-job/{i}/stop", b"") for i in ids],
        }
        names = list(WEIGHTS)
        weights = [WEIGHTS[n] for n in names]
        latencies: dict[str, list[float]] = {n: [] for n in names}
        statuses: dict[bytes, int] = {}
        firsts: list[float] = []  # the first request of each connection
        time.sleep(1.0)  # every API process started (they start at the same time as the first)
        pids = family(api.pid)
        cpu_before = [cpu_seconds(p) for p in pids]
        client_cpu = time.process_time()
        deadline = time.perf_counter() + args.seconds

        async def client(seed: int) -> None:
            rng = random.Random(seed)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            first = True
            try:
                while time.perf_counter() < deadline:
                    op = rng.choices(names, weights)[0]
                    raw = rng.choice(requests[op])
                    started = time.perf_counter()
                    writer.write(raw)
                    try:
                        await read_response(reader)
                        status = b"200"
                    except RuntimeError as exc:  # a non-200 answer still counts as answered
                        status = str(exc)[2:5].encode()
                    took = time.perf_counter() - started
                    latencies[op].append(took)
                    if first:  # it waited for the server to accept the connection, too
                        firsts.append(took)
                        first = False
                    statuses[status] = statuses.get(status, 0) + 1
            finally:
                writer.close()

        async def newcomer(raw: bytes) -> float:
            """One new connection and one request on it, timed from its connect's return."""
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                started = time.perf_counter()
                writer.write(raw)
                await read_response(reader)
                return time.perf_counter() - started
            finally:
                writer.close()

        async def burst() -> list[float]:
            """``--burst`` new connections at once, halfway through, while the server is busy
            with the others."""
            await asyncio.sleep(args.seconds / 2)
            if args.burst == 0:
                return []
            raws = [random.choice(requests["Get"]) for _ in range(args.burst)]
            return list(await asyncio.gather(*map(newcomer, raws)))

        *_, newcomers = await asyncio.gather(*(client(i) for i in range(args.clients)), burst())
        client_cpu = time.process_time() - client_cpu
        cpu = [cpu_seconds(p) - before for p, before in zip(pids, cpu_before, strict=True)]
        total = [v for values in latencies.values() for v in values]
        print(
            f"api_processes={processes}, {args.clients} clients for {args.seconds:g} s: "
            f"{len(total)} requests, {len(total) / args.seconds:.0f}/s, statuses {statuses}; "
            f"server CPU {sum(cpu):.1f} s ({', '.join(f'{c:.1f}' for c in cpu)} per process), "
            f"{sum(cpu) / max(1, len(total)) * 1e6:.0f} us a request; the clients' CPU "
            f"{client_cpu:.1f} s"
        )
        print("| operation | requests | p50 ms | p99 ms | max ms |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, values in [*latencies.items(), ("all", total)]:
            if values:
                print(
                    f"| {name} | {len(values)} | {statistics.median(values) * 1000:.0f} "
                    f"| {percentile(values, 0.99) * 1000:.0f} | {max(values) * 1000:.0f} |"
                )
        if firsts:
            print(
                f"first request of each connection (from the client's connect, so the "
                f"server's accept included): p50 {statistics.median(firsts) * 1000:.0f} ms, "
                f"max {max(firsts) * 1000:.0f} ms"
            )
        if newcomers:
            print(
                f"a burst of {len(newcomers)} new connections halfway, one Get each (from the "
                f"connect): p50 {statistics.median(newcomers) * 1000:.0f} ms, max "
                f"{max(newcomers) * 1000:.0f} ms"
            )
    finally:
        api.terminate()
        api.wait(timeout=15)


if __name__ == "__main__":
    asyncio.run(main())
