"""The record path (engine, OpenAI-compatible backend, HTTP client) against a raw-socket floor.

    .venv/bin/python benchmarks/record_path.py --records 10000 --rounds 3 --latencies 0,50 \\
        [--concurrency 256] [--floor-uvloop]

For each latency, starts the fake OpenAI-compatible server from the tests (or, with ``--server
lean``, benchmarks/_lean_openai.py: one prepared answer, a fraction of the tests' server's CPU
a request) and a ``batchrock serve`` routing a Claude model to it
(benchmarks/openai_backend.py's helpers), writes one input file of ``--records`` Claude
Messages records, then, round after round (the order alternating), runs a job over it through
boto3 and the floor (benchmarks/_socket_floor.py: the same file, the same chat completions, the
same server, raw asyncio sockets, one output line per answer). Each side's CPU time (user +
system of its process and the processes under it, never the fake server's) is divided by the
records. Prints, per latency, the median CPU per record of each side, the median and range of
their ratio over the rounds, and the median and range of batchrock's InProgress time over the
ideal ``records * latency / concurrency`` (from the store's transition times), beside the
floor's wall-clock time (its first connection to its last line) over the same ideal: what the
machine allowed a bare client at that moment. With ``--floor-uvloop`` the floor also runs on
uvloop each round (reported apart, the ratio is always to the plain-asyncio floor).

``--breakdown`` has the fake server log every request's arrival and answer (``--spans``: it
costs the server some CPU, so the ratios of such a run are not the benchmark's) and prints,
per batchrock round, where the InProgress time went: until the first request reached the
server, the ramp to ``--concurrency`` requests in flight, the model period (first arrival to
last answer) with the mean number in flight during it, and the tail from the last answer to
Completed.

Targets (issue 12): CPU ratio at most 2 at 0 and 50 ms; InProgress / ideal within 1.2 at 50 ms
and 1.1 at 200 ms in every round. Exit status 1 when a measured target is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_backend import FAKE, bedrock_client, routes_for, run_job, services, write_records

FLOOR = Path(__file__).resolve().parent / "_socket_floor.py"
#: The model servers to measure against: the tests' fake, or the lean one of the benchmarks.
SERVERS = {"tests": FAKE, "lean": Path(__file__).resolve().parent / "_lean_openai.py"}
CPU_TARGET = 2.0
TIME_TARGETS = {50.0: 1.2, 200.0: 1.1}


def floor_run(
    port: int, source: Path, target: Path, concurrency: int, uvloop: bool
) -> tuple[float, float]:
    """CPU seconds the floor spent on the file and its wall-clock seconds from its first
    connection to its last line (it measures itself, start-up excluded)."""
    command = [sys.executable, str(FLOOR), "--port", str(port), "--input", str(source)]
    command += ["--output", str(target), "--concurrency", str(concurrency)]
    if uvloop:
        command.append("--uvloop")
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout.split()
    return float(out[1]), float(out[5])


def spread(values: list[float], digits: int = 2) -> str:
    return (
        f"**{statistics.median(values):.{digits}f}** "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


@dataclass
class Measured:
    ours: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    floor_uvloop: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    floor_times: list[float] = field(default_factory=list)


def breakdown(spans: list[dict[str, float]], times: dict[str, int], concurrency: int) -> str:
    """Where one job's InProgress time went, from the fake server's request spans (monotonic
    seconds) and the store's transition times (wall-clock microseconds)."""
    # CLOCK_MONOTONIC is the machine's: this process's offset to the wall clock is theirs.
    offset = time.time() - time.monotonic()
    start = times["InProgress"] / 1e6
    end = max(v for k, v in times.items() if k != "InProgress") / 1e6
    arrivals = sorted(s["t0"] + offset for s in spans)
    answers = sorted(s["t1"] + offset for s in spans)
    first, last = arrivals[0], answers[-1]
    full = arrivals[min(concurrency, len(arrivals)) - 1]
    busy = sum(s["t1"] - s["t0"] for s in spans)
    return (
        f"to first request {(first - start) * 1e3:.0f} ms, ramp to {concurrency} in flight "
        f"{(full - first) * 1e3:.0f} ms, model period {last - first:.3f} s (mean in flight "
        f"{busy / (last - first):.0f}, mean server time {busy / len(spans) * 1e3:.1f} ms), "
        f"tail {(end - last) * 1e3:.0f} ms"
    )


def read_spans(path: Path, start: int) -> tuple[list[dict[str, float]], int]:
    """The spans the fake server wrote to ``path`` from byte ``start`` on, and where they end."""
    with path.open("rb") as fh:
        fh.seek(start)
        data = fh.read()
    return [json.loads(line) for line in data.splitlines() if line.strip()], start + len(data)


def measure(args: argparse.Namespace, latency: float) -> Measured:
    """``args.rounds`` rounds of batchrock and the floor at ``latency`` ms, alternating."""
    fake_ports: list[int] = []
    routes = routes_for(args.concurrency)

    def routes_capturing(port: int) -> str:
        fake_ports.append(port)
        return routes(port)

    setup = argparse.Namespace(latency_ms=latency, concurrency=args.concurrency)
    got = Measured()
    loop = {"BATCHROCK_EVENT_LOOP": args.event_loop} if args.event_loop else {}
    if args.engine_processes is not None:
        loop["BATCHROCK_ENGINE_PROCESSES"] = str(args.engine_processes)
    # The spans' folder is removed at the end (on an error or Ctrl-C too), after services
    # has stopped the servers.
    spans_folder = tempfile.TemporaryDirectory(prefix="record-path-")
    spans_path = Path(spans_folder.name) / "spans.jsonl"
    fake_args = ["--spans", str(spans_path)] if args.breakdown else []
    if args.server == "lean":
        fake_args = ["--uvloop"]
    spans_at = 0
    with (
        spans_folder,
        services(setup, routes_capturing, fake_args, SERVERS[args.server], **loop) as (
            url,
            data,
            pid,
        ),
    ):
        source = data / "s3" / "bench-bucket" / "in" / "records.jsonl"
        write_records(source, args.records)
        target = data / "floor.jsonl.out"
        client = bedrock_client(url)
        ideal = args.records * latency / 1000 / args.concurrency
        for round_ in range(args.rounds):
            sides = ["batchrock", "floor"] if round_ % 2 == 0 else ["floor", "batchrock"]
            for side in sides:
                if side == "floor":
                    cpu, wall = floor_run(fake_ports[0], source, target, args.concurrency, False)
                    got.floor.append(cpu / args.records)
                    if latency:
                        got.floor_times.append(wall / ideal)
                    if args.floor_uvloop:
                        cpu, _ = floor_run(fake_ports[0], source, target, args.concurrency, True)
                        got.floor_uvloop.append(cpu / args.records)
                    continue
                if args.breakdown:
                    spans_at = read_spans(spans_path, spans_at)[1]
                run = run_job(client, data, pid, f"record-path-{round_}")
                if args.breakdown:
                    spans, spans_at = read_spans(spans_path, spans_at)
                    print("  batchrock: " + breakdown(spans, run.times, args.concurrency))
                if run.ok != args.records:
                    raise SystemExit(f"job {run.status}: {run.ok} ok, {run.errors} errors")
                got.ours.append(run.cpu_s / args.records)
                if latency:
                    got.times.append(run.in_progress_s / ideal)
            got.ratios.append(got.ours[-1] / got.floor[-1])
            print(
                f"{latency:g} ms round {round_ + 1}: batchrock {got.ours[-1] * 1e6:.0f} us, "
                f"floor {got.floor[-1] * 1e6:.0f} us a record, ratio {got.ratios[-1]:.2f}"
                + (
                    f", InProgress/ideal {got.times[-1]:.3f} (floor {got.floor_times[-1]:.3f})"
                    if got.times
                    else ""
                ),
                flush=True,
            )
    return got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latencies", default="0,50", help="model latencies in ms, commas")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--floor-uvloop", action="store_true")
    parser.add_argument("--engine-processes", type=int, help="the engine_processes setting")
    parser.add_argument(
        "--breakdown", action="store_true", help="where the InProgress time goes (see above)"
    )
    parser.add_argument(
        "--server",
        choices=sorted(SERVERS),
        default="tests",
        help="the model server: the tests' fake (default) or benchmarks/_lean_openai.py",
    )
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        help="batchrock serve's event_loop setting (unset: its default)",
    )
    args = parser.parse_args()
    if args.breakdown and args.server != "tests":
        parser.error("--breakdown needs the tests' fake server (its --spans)")
    missed: list[str] = []
    rows: list[str] = []
    for latency in [float(v) for v in args.latencies.split(",")]:
        got = measure(args, latency)
        uv = f" | {statistics.median(got.floor_uvloop) * 1e6:.0f}" if got.floor_uvloop else ""
        rows.append(
            f"| {latency:g} ms | {statistics.median(got.ours) * 1e6:.0f} "
            f"| {statistics.median(got.floor) * 1e6:.0f}{uv} | {spread(got.ratios)} "
            f"| {spread(got.times, 3) if got.times else 'n/a'} "
            f"| {spread(got.floor_times, 3) if got.floor_times else 'n/a'} |"
        )
        if max(got.ratios) > CPU_TARGET and latency in (0.0, 50.0):
            missed.append(f"CPU ratio at {latency:g} ms (max {max(got.ratios):.2f})")
        if latency in TIME_TARGETS and got.times and max(got.times) > TIME_TARGETS[latency]:
            missed.append(f"InProgress/ideal at {latency:g} ms (max {max(got.times):.3f})")
    uv_head = " floor on uvloop µs |" if args.floor_uvloop else ""
    print(
        f"\n{args.records} records, concurrency {args.concurrency}, {args.rounds} rounds, "
        f"event_loop {args.event_loop or 'default'}, {args.server} server\n"
    )
    print(
        "| latency | batchrock CPU µs a record | floor CPU µs |" + uv_head + " CPU ratio "
        "(median, range) | InProgress / ideal (median, range) | floor wall / ideal |"
    )
    print("| --- | ---: | ---: |" + (" ---: |" if uv_head else "") + " ---: | ---: | ---: |")
    print("\n".join(rows))
    if missed:
        print("missed: " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
