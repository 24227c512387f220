"""How long a rate-limit take holds the event loop, two API processes on one shared file.

    git archive main src | tar -x -C /tmp/before
    .venv/bin/python benchmarks/shared_state_loop_hold.py --rounds 5 --before /tmp/before/src

With ``api_processes`` > 1 every rate-limited request takes a token in the file the processes
share (src/batchrock/shared_state.py): a write transaction, and two processes' writes
collide. This starts two processes at once on one fresh shared file, each an event loop with
``--takers`` tasks that take tokens (``SharedRateLimiter.acheck``, a limit never reached) as
fast as they can, and a probe task that sleeps 1 ms again and again. Per process it counts
the takes, times every synchronous call of the take (``_take``: all of it runs on the loop,
and SQLite's busy handler, where one waits, sleeps inside it), counts the calls in which the
thread slept (a voluntary context switch, getrusage: SQLite waiting; the other long calls
were the process descheduled on a busy machine) and the probe's lateness (how long the loop
kept it from running). With ``--before SRC`` (e.g. main's code exported with
``git archive main src | tar -x -C /tmp/before``) the same runs with that tree's code,
rounds alternating. Prints medians and ranges over the rounds; nothing passes or fails: the
numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: One process of the pair: argv path, start (time.time()), seconds, takers. Prints JSON.
_CHILD = """
import asyncio, json, resource, sys, time
from pathlib import Path
import batchrock.api.app  # first: the api package imports its modules in this order
from batchrock.api.throttle import SharedRateLimiter
from batchrock.clock import SystemClock
from batchrock.shared_state import SharedState

path, start = Path(sys.argv[1]), float(sys.argv[2])
seconds, takers = float(sys.argv[3]), int(sys.argv[4])
state = SharedState(path)
limiter = SharedRateLimiter(1e9, 10**9, SystemClock(), state)
holds = []
slept = []  # the holds in which the thread slept (a voluntary context switch): SQLite's waits
take = limiter._take

def timed(account):
    switches = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
    began = time.perf_counter()
    try:
        return take(account)
    finally:
        held = time.perf_counter() - began
        holds.append(held)
        if resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw != switches:
            slept.append(held)

limiter._take = timed

async def main():
    while time.time() < start:
        await asyncio.sleep(min(0.01, max(0.0, start - time.time())))
    stop = time.perf_counter() + seconds
    takes = 0
    lags = []
    waits = []  # each acheck's whole time: the request's wait for its token
    cpu = time.process_time()

    async def taker(i):
        nonlocal takes
        while time.perf_counter() < stop:
            began = time.perf_counter()
            await limiter.acheck("123456789012")
            waits.append(time.perf_counter() - began)
            takes += 1
            await asyncio.sleep(0)

    async def probe():
        while time.perf_counter() < stop:
            began = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - began - 0.001)

    await asyncio.gather(probe(), *(taker(i) for i in range(takers)))
    cpu = time.process_time() - cpu
    holds.sort()
    lags.sort()
    slept.sort()
    waits.sort()
    print(json.dumps({
        "takes_per_s": takes / seconds,
        "cpu_us_a_take": cpu / max(1, takes) * 1e6,
        "tries_a_take": len(holds) / max(1, takes),
        "hold_max_ms": holds[-1] * 1e3,
        "hold_p999_ms": holds[int(len(holds) * 0.999)] * 1e3,
        "holds_over_1ms": sum(1 for h in holds if h > 0.001),
        "slept_a_1000": len(slept) / max(1, takes) * 1000,
        "slept_ms": sum(slept) * 1e3,
        "slept_max_ms": slept[-1] * 1e3 if slept else 0.0,
        "lag_max_ms": lags[-1] * 1e3,
        "wait_p99_ms": waits[int(len(waits) * 0.99)] * 1e3,
        "waits_over_100ms": sum(1 for w in waits if w >= 0.1),
        "lag_p99_ms": lags[int(len(lags) * 0.99)] * 1e3,
    }))

asyncio.run(main())
state.close()
"""

COLUMNS = (
    ("takes_per_s", "takes/s (both)", 0),
    ("cpu_us_a_take", "CPU µs a take", 1),
    ("tries_a_take", "tries a take", 2),
    ("hold_p999_ms", "hold p99.9 ms", 2),
    ("hold_max_ms", "longest hold ms", 2),
    ("holds_over_1ms", "holds > 1 ms", 0),
    ("slept_a_1000", "holds that slept, a 1000 takes", 1),
    ("slept_ms", "loop asleep in them ms", 0),
    ("slept_max_ms", "longest of them ms", 2),
    ("lag_p99_ms", "probe lag p99 ms", 2),
    ("lag_max_ms", "probe lag max ms", 2),
    ("wait_p99_ms", "take p99 ms", 2),
    ("waits_over_100ms", "takes >= 0.1 s", 0),
)


def one_round(src: Path, seconds: float, takers: int) -> dict[str, float]:
    """Two processes of ``src``'s code on one fresh file: the pair's figures (takes/s
    summed, holds and lags the worse of the two, the others averaged)."""
    from_src = {**os.environ, "PYTHONPATH": str(src)}
    with tempfile.TemporaryDirectory(prefix="batchrock-hold-") as folder:
        path = Path(folder) / "shared.sqlite3"
        subprocess.run(
            [sys.executable, "-c", f"from batchrock.shared_state import SharedState as S; "
             f"S.create(__import__('pathlib').Path({str(path)!r}))"],
            env=from_src, check=True,
        )  # fmt: skip
        start = time.time() + 1.0  # both import first, then start together
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(path), str(start), str(seconds), str(takers)],
                env=from_src,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outs = [json.loads(proc.communicate(timeout=seconds + 60)[0]) for proc in procs]
    pair: dict[str, float] = {}
    for key, _, _ in COLUMNS:
        values = [out[key] for out in outs]
        if key in ("takes_per_s", "holds_over_1ms", "slept_ms", "waits_over_100ms"):
            pair[key] = sum(values)
        elif key.endswith("_ms") and key != "slept_ms":
            pair[key] = max(values)
        else:
            pair[key] = statistics.mean(values)
    return pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="of each round's takes")
    parser.add_argument("--takers", type=int, default=8, help="tasks taking, per process")
    parser.add_argument("--before", type=Path, help="another source tree, rounds alternating")
    args = parser.parse_args()
    trees = [("this tree", ROOT / "src")]
    if args.before is not None:
        trees.append(("--before", args.before.resolve()))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    load = os.getloadavg()[0]
    for r in range(args.rounds):
        shift = r % len(trees)
        for name, src in trees[shift:] + trees[:shift]:
            results[name].append(one_round(src, args.seconds, args.takers))
    print(
        f"{args.rounds} rounds of {args.seconds:g} s, 2 processes x {args.takers} takers, "
        f"load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    )
    print("| source | " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("| --- |" + " ---: |" * len(COLUMNS))
    for name, rounds in results.items():
        cells = []
        for key, _, digits in COLUMNS:
            values = [one[key] for one in rounds]
            cells.append(
                f"{statistics.median(values):.{digits}f} "
                f"({min(values):.{digits}f}-{max(values):.{digits}f})"
            )
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
