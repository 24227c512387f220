"""A signed GetModelInvocationJob with ``api_processes`` 1 and 2, side by side.

    .venv/bin/python benchmarks/api_processes_signed.py --rounds 7 --requests 2000

Starts ``batchrock serve --no-engine`` with a credentials file twice, on stores filled alike:
once with ``api_processes`` 1 (the wrong-signature bounds in its memory) and once with 2 (in
the file its processes share, src/batchrock/shared_state.py); with ``--before SRC`` a third,
``api_processes`` 2 again, runs the code of another source tree (e.g. main's, exported with
``git archive main src | tar -x -C /tmp/before``). Then, round after round, in an order that
rotates, the same signed Get goes ``--requests`` times to each over ``--connections``
keep-alive connections, and each server's CPU time (all its processes, from /proc schedstat)
per request, the requests a second and the requests' latency are measured. With
``--rate-limit`` every server also takes a token of the account's rate limit for each
request (a limit far above the load, so nothing is throttled: with several processes each
take is a write to the shared file). Prints
medians and ranges over the rounds. First, since a few microseconds drown in a loaded
machine's noise, the checks alone: a correctly signed request's wrong-signature check
(``WrongSignatures.succeeded``) and a rate-limit take, on a shared file with a second handle
open (another process), ``--calls`` times in a fresh interpreter per source tree. Nothing
passes or fails: the numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_listing import ACCESS_KEY, ACCOUNT, SECRET, fill, read_response, signed, wait_serving
from openai_backend import free_port

ROOT = Path(__file__).resolve().parent.parent


def tree_cpu_seconds(pid: int) -> float:
    """CPU time so far of ``pid`` and the API processes it forked, every thread of each
    (schedstat: nanoseconds, where /proc/PID/stat counts 10 ms ticks)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for member in [pid, *map(int, children)]:
        for task in Path(f"/proc/{member}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


#: Run in a fresh interpreter with a tree's src first on the path: CPU µs a call of each check.
_CHECKS = """
import sys, tempfile, time
from pathlib import Path
import batchrock.api.app  # first: the api package imports its modules in this order
from batchrock.api.throttle import SharedRateLimiter
from batchrock.api.wrong_signatures import WrongSignatures
from batchrock.clock import SystemClock
from batchrock.shared_state import SharedState
calls = int(sys.argv[1])
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "shared.sqlite3"
    SharedState.create(path)
    here, other = SharedState(path), SharedState(path)
    WrongSignatures(time.monotonic, 50, other).failed("10.0.0.9", "AKIAOTHER")
    bound = WrongSignatures(time.monotonic, 50, here)
    limiter = SharedRateLimiter(1e9, 1_000_000_000, SystemClock(), here)
    for label, check in (
        ("succeeded", lambda: bound.succeeded("10.0.0.1", "AKIAEXAMPLE")),
        ("rate limit", lambda: limiter.check("123456789012")),
    ):
        check()
        started = time.process_time()
        for _ in range(calls):
            check()
        print(label, (time.process_time() - started) / calls * 1e6)
    here.close()
    other.close()
"""


def check_costs(src: Path, calls: int) -> dict[str, float]:
    """CPU µs a call of each check in :data:`_CHECKS`, with the code of ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", _CHECKS, str(calls)],
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in out.splitlines()}


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    target: str
    cpu: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    longest: list[float] = field(default_factory=list)


async def hammer(port: int, raw: bytes, total: int, connections: int) -> list[float]:
    """``raw`` sent ``total`` times over ``connections`` keep-alive connections: each
    request's seconds."""
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    left = total
    took: list[float] = []

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            writer.write(raw)
            await read_response(reader)
            took.append(time.perf_counter() - started)

    await asyncio.gather(*(one(r, w) for r, w in streams))
    for _, writer in streams:
        writer.close()
    return took


async def start(
    name: str, processes: int, src: Path, work: Path, credentials: Path, rate_limit: bool
) -> tuple[subprocess.Popen[bytes], int, str]:
    data = work / name
    first_id = await fill(data / "batchrock.sqlite3", 20)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHROCK_")}
    env.update(BATCHROCK_LOG_LEVEL="warning", BATCHROCK_API_PROCESSES=str(processes))
    env["PYTHONPATH"] = str(src)
    if rate_limit:
        env.update(BATCHROCK_RATE_LIMIT_PER_SECOND="1000000")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "batchrock.admin", "serve", "--no-engine"),
            *("--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)),
            *("--credentials-file", str(credentials)),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port, f"/model-invocation-job/{first_id}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2000, help="per server, per round")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument(
        "--before", type=Path, help="another source tree to run a third server (api_processes 2)"
    )
    parser.add_argument(
        "--rate-limit", action="store_true", help="a per-account rate limit (never reached)"
    )
    parser.add_argument("--calls", type=int, default=20_000, help="of each check alone; 0: none")
    args = parser.parse_args()
    if args.calls > 0:
        measure_checks(args)
    if args.rounds <= 0:
        return
    with tempfile.TemporaryDirectory(prefix="batchrock-procs-bench-") as folder:
        await measure(args, Path(folder))


def measure_checks(args: argparse.Namespace) -> None:
    trees = [("this tree", ROOT / "src")]
    if args.before is not None:
        trees.append(("--before", args.before.resolve()))
    costs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    for _ in range(3):  # alternately
        for name, src in trees:
            costs[name].append(check_costs(src, args.calls))
    print(f"The checks alone, {args.calls} calls, 3 runs each, alternately (CPU µs a call):")
    print("| source | succeeded (right signature) | rate-limit take |")
    print("| --- | ---: | ---: |")
    for name, runs in costs.items():
        cells = []
        for label in ("succeeded", "rate limit"):
            values = [run[label] for run in runs]
            cells.append(
                f"**{statistics.median(values):.1f}** ({min(values):.1f}-{max(values):.1f})"
            )
        print(f"| {name} | {' | '.join(cells)} |")
    print()


async def measure(args: argparse.Namespace, work: Path) -> None:
    credentials = work / "credentials.toml"
    credentials.write_text(
        f'[[accounts]]\nid = "{ACCOUNT}"\n'
        f'keys = [{{ access_key_id = "{ACCESS_KEY}", secret_access_key = "{SECRET}" }}]\n'
    )
    credentials.chmod(0o600)
    plan = [("api_processes=1", 1, ROOT / "src"), ("api_processes=2", 2, ROOT / "src")]
    if args.before is not None:
        plan.append(("api_processes=2, --before", 2, args.before.resolve()))
    servers: list[Server] = []
    try:
        for name, processes, src in plan:
            proc, port, target = await start(
                f"data{len(servers)}", processes, src, work, credentials, args.rate_limit
            )
            servers.append(Server(name, port, proc, target))
        for server in servers:
            wait_serving(server.port, "/_batchrock/health")
        for r in range(args.rounds):
            shift = r % len(servers)
            for server in servers[shift:] + servers[:shift]:
                raw = signed(server.port, server.target)
                await hammer(server.port, raw, 50, args.connections)  # warm, every process
                before = tree_cpu_seconds(server.proc.pid)
                began = time.perf_counter()
                took = sorted(await hammer(server.port, raw, args.requests, args.connections))
                server.rate.append(args.requests / (time.perf_counter() - began))
                used = tree_cpu_seconds(server.proc.pid) - before
                server.longest.append(took[-1])
                server.cpu.append(used / args.requests)
                server.p50.append(took[len(took) // 2])
                server.p99.append(took[int(len(took) * 0.99)])
        print(
            f"{args.rounds} rounds of {args.requests} signed Gets per server, "
            f"{args.connections} connections"
            + (", a rate limit (never reached)" if args.rate_limit else "")
            + f", load average {os.getloadavg()[0]:.2f} at the end"
        )
        print(
            "| server | CPU µs a request (median, range) | requests/s | p50 ms | p99 ms | max ms |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: |")

        def cell(values: list[float], scale: float, digits: int) -> str:
            return (
                f"**{statistics.median(values) * scale:.{digits}f}** "
                f"({min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f})"
            )

        for server in servers:
            print(
                f"| {server.name} | {cell(server.cpu, 1e6, 0)} | {cell(server.rate, 1, 0)} "
                f"| {cell(server.p50, 1e3, 2)} | {cell(server.p99, 1e3, 2)} "
                f"| {cell(server.longest, 1e3, 1)} |"
            )
    finally:
        for server in servers:
            server.proc.terminate()
        for server in servers:
            server.proc.wait(timeout=15)


if __name__ == "__main__":
    asyncio.run(main())
