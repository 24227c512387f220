"""How many records a second one engine process can feed to worker processes.

    .venv/bin/python benchmarks/engine_ceiling.py --records 100000 --rounds 5

With ``engine_processes`` above 1 a job's rate is bounded by the workers (about 80 us of CPU
a record each, ``--worker-us``) and by what the engine process does for every record: read
it, send it, take its answer, write it in order. This measures the second bound alone, on
any machine: one real :class:`~batchrock.engine.file_pass.FilePass` in this process, over
``--records`` Claude Messages records in memory fed as the runner feeds them
(``records.iter_blocks`` over 64 KiB chunks), ``engine_record_concurrency``
``--concurrency``, its output taken as the runner's checkpointer takes it (not written),
against ``--workers`` stand-in worker processes (started through ``WorkerPool``'s
``command`` seam, ``engine_offload_load`` 0) that answer at once and cost almost nothing.

Two settings, in turns and the order reversed every other round: ``blocks``, the route a
:class:`~batchrock.backends.process_pool.PooledRoute` (the pass sends blocks of whole lines,
the stand-in answers each with its own bytes), and ``records``, the record-by-record pool (a
``ResilientBackend`` over a ``PooledBackend``, what ``PooledRoute.backend`` is; the stand-in
answers each request with a small JSON object). Per run: records/s (the wall time of
``fp.run()``), this process's CPU a record (getrusage, user + system) and the stand-ins' CPU
a record (/proc/PID/stat). Then the median and range of each, and what one engine process
feeds at the median: records/s at its CPU a record, in workers of ``--worker-us``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.openai_backend import MODEL, cpu_seconds, write_records  # noqa: E402

from batchrock.admin import loop_factory  # noqa: E402
from batchrock.backends.base import ModelBackend  # noqa: E402
from batchrock.backends.process_pool import PooledBackend, WorkerPool  # noqa: E402
from batchrock.backends.resilience import ResilientBackend  # noqa: E402
from batchrock.backends.routing import backend_types, parse_route, route_label, wrap  # noqa: E402
from batchrock.engine.file_pass import FilePass  # noqa: E402
from batchrock.engine.records import iter_blocks  # noqa: E402
from batchrock.settings import Settings  # noqa: E402

CHUNK = 64 * 1024
#: A stand-in worker: reads its configuration (not unpickled), says it is ready, then answers
#: every request and every block of each frame at once, in one frame. A block's answer is
#: its own bytes (the engine writes what it gets, it does not parse it), all lines a success.
SCRIPT = """
import socket, struct, sys, msgspec
sock = socket.socket(fileno=int(sys.argv[-1]))
stream = sock.makefile("rb")
encode, decode = msgspec.msgpack.encode, msgspec.msgpack.Decoder().decode
def read():
    head = stream.read(4)
    if len(head) < 4:
        sys.exit(0)
    return stream.read(struct.unpack(">I", head)[0])
def send(message):
    data = encode(message)
    try:
        sock.sendall(struct.pack(">I", len(data)) + data)
    except OSError:  # the engine closed the socket
        sys.exit(0)
read()
send([])
while True:
    requests, cancelled, blocks, blocks_cancelled = decode(read())
    answers = [[r[0], b'{"x":1}', 0, "", False, 1, 1, {}] for r in requests]
    done = []
    for b in blocks:
        data = b[10]
        n = data.count(b"\\n")
        done.append([b[0], data, b[7] + n, b[8] + len(data), n, n, 0, 0, 0, 0])
    send([answers, done, []])
"""


@dataclass
class Run:
    rate: float
    engine_us: float
    workers_us: float


def engine_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


async def one(
    backend: ModelBackend, pool: WorkerPool, data: bytes, records: int, concurrency: int
) -> Run:
    """One pass over ``data`` (``records`` lines), measured; checks every line came back."""
    fp = FilePass(
        blocks=iter_blocks(chunks(data)),
        backend=backend,
        model_id=MODEL,
        invocation_type="InvokeModel",
        job_id="bench",
        file_index=0,
        start_offset=0,
        start_line=0,
        concurrency=concurrency,
        halt=asyncio.Event(),
    )
    lines = 0

    async def drain() -> None:  # the checkpointer's part, without the spool's write
        nonlocal lines
        while True:
            await fp.output_ready.wait()
            lines += sum(part.count(b"\n") for part in fp.take_output()[0])

    pids = pool.pids
    before = {pid: cpu_seconds(pid) for pid in pids}
    cpu, wall = engine_cpu(), time.perf_counter()
    drainer = asyncio.create_task(drain())
    await fp.run()
    seconds, used = time.perf_counter() - wall, engine_cpu() - cpu
    drainer.cancel()
    lines += sum(part.count(b"\n") for part in fp.take_output()[0])
    workers = sum(cpu_seconds(pid) - before[pid] for pid in pids)
    assert not pids or pool.pids == pids, "a worker was replaced during the run"
    assert fp.finished and lines == records, (fp.finished, lines)
    assert fp.progress.processed == fp.progress.success == records, fp.progress
    return Run(records / seconds, used / records * 1e6, workers / records * 1e6)


def spread(values: list[float], digits: int = 1) -> str:
    return (
        f"median {statistics.median(values):8.{digits}f}  "
        f"range {min(values):.{digits}f}-{max(values):.{digits}f}"
    )


async def bench(args: argparse.Namespace, folder: Path) -> dict[str, list[Run]]:
    settings = Settings(data_dir=folder, engine_offload_load=0, engine_processes=args.workers)
    route = parse_route(
        0,
        {
            "model": MODEL,
            "backend": "openai",
            "base_url": "http://127.0.0.1:9/v1",  # never asked: the stand-ins answer
            "served_model": "bench",
            "max_concurrency": args.concurrency,
        },
    )
    command = [sys.executable, "-c", SCRIPT]
    factory = backend_types()["openai"]
    pools: dict[str, WorkerPool] = {}
    backends: dict[str, ModelBackend] = {}
    for name in ("blocks", "records"):
        # As build_resolver builds a route with one base_url over a pool.
        pool = pools[name] = WorkerPool(settings, args.workers, command)
        leaf = pool.backend(route, factory(route, settings))
        stack = wrap(leaf, route.retry, route.max_concurrency, route_label(route))
        assert isinstance(stack, ResilientBackend) and isinstance(stack.inner, PooledBackend)
        local = stack.over(stack.inner.local)
        pooled = pool.route(stack.inner, stack, local, stack.slots)
        backends[name] = pooled if name == "blocks" else pooled.backend
    path = folder / "records.jsonl"
    write_records(path, args.records)
    data = path.read_bytes()
    warm = b"".join(data.splitlines(keepends=True)[:2000])
    results: dict[str, list[Run]] = {name: [] for name in backends}
    try:
        for name, backend in backends.items():  # starts the stand-ins, fills the caches
            await one(backend, pools[name], warm, warm.count(b"\n"), args.concurrency)
            assert len(pools[name].pids) == args.workers
        for number in range(args.rounds):
            order = list(backends) if number % 2 == 0 else list(backends)[::-1]
            for name in order:
                run = await one(backends[name], pools[name], data, args.records, args.concurrency)
                results[name].append(run)
            print(
                f"round {number + 1}: "
                + ", ".join(
                    f"{name} {runs[-1].rate:7.0f} records/s, engine {runs[-1].engine_us:4.1f} us, "
                    f"stand-ins {runs[-1].workers_us:4.1f} us"
                    for name, runs in results.items()
                ),
                flush=True,
            )
    finally:
        for name, backend in backends.items():
            await backend.aclose()
            await pools[name].aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="stand-in worker processes")
    parser.add_argument("--worker-us", type=float, default=80.0, help="a real worker's CPU/record")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="engine-ceiling-") as name:
        with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
            results = runner.run(bench(args, Path(name)))
    print(
        f"\n{args.records} records, concurrency {args.concurrency}, {args.workers} stand-in "
        f"workers, {args.rounds} rounds"
    )
    for name, runs in results.items():
        engine = statistics.median(r.engine_us for r in runs)
        feeds = 1e6 / engine
        print(name)
        print(f"  records/s                  {spread([r.rate for r in runs], 0)}")
        print(f"  engine process us/record   {spread([r.engine_us for r in runs])}")
        print(f"  stand-in workers us/record {spread([r.workers_us for r in runs])}")
        print(
            f"  one engine feeds up to {feeds:,.0f} records/s, i.e. "
            f"{feeds * args.worker_us / 1e6:.1f} workers at {args.worker_us:g} us a record"
        )


if __name__ == "__main__":
    main()
