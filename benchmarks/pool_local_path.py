"""The CPU a record costs through a route's backend in this process, with and without a pool.

    .venv/bin/python benchmarks/pool_local_path.py --records 20000 --rounds 12

With ``engine_processes`` above 1 every record of a remote route passes the pool's proxy
(process_pool.PooledBackend), which answers it with the leaf built in the engine while the
loop has time to spare. This measures what that path costs against ``engine_processes = 1``:
the backend that ``build_resolver`` gives for the model (the retry layer, the proxy, the
OpenAI-compatible backend and its HTTP client) against benchmarks/_lean_openai.py, all in
this process on uvloop, ``--concurrency`` records in flight. Settings, in turns and the order
reversed every other round: ``engine_processes`` 1, 2 (``engine_offload_load`` 1, so no record
leaves this process: the run fails if a worker starts) and 1 again (the noise floor). Prints
the median and range of the process CPU per record of each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.openai_backend import MODEL, free_port  # noqa: E402

from batchrock.backends.base import ModelRequest  # noqa: E402
from batchrock.backends.routing import build_resolver  # noqa: E402
from batchrock.settings import Settings  # noqa: E402

LEAN = ROOT / "benchmarks" / "_lean_openai.py"
BODY = {
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Summarize record 1."}],
}


async def cpu_per_record(settings: Settings, records: int, concurrency: int) -> float:
    resolver = build_resolver(settings)
    backend = resolver.for_model(MODEL)
    slots = asyncio.Semaphore(concurrency)

    async def one(number: int) -> None:
        async with slots:
            result = await backend.invoke(ModelRequest(MODEL, "InvokeModel", BODY, f"R{number}"))
            assert result.ok, result.error

    try:
        await asyncio.gather(*(one(i) for i in range(500)))  # connections, caches
        before = time.process_time()
        await asyncio.gather(*(one(i) for i in range(records)))
        used = time.process_time() - before
        if resolver.pool is not None and resolver.pool.pids:
            raise SystemExit("a worker process started: the measurement is not of the local path")
        return used / records * 1e6
    finally:
        await resolver.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(LEAN), "--port", str(port), "--uvloop"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        # Removed at the end, on an error or Ctrl-C too (the engines run in this process,
        # done by then).
        with tempfile.TemporaryDirectory(prefix="pool-local-path-") as name:
            folder = Path(name)
            routes = folder / "models.toml"
            routes.write_text(
                f'[[routes]]\nmodel = "{MODEL}"\nbackend = "openai"\n'
                f'base_url = "http://127.0.0.1:{port}/v1"\nserved_model = "bench"\n'
                f"max_concurrency = {args.concurrency}\n"
            )
            settings = {
                "engine_processes=1": Settings(
                    data_dir=folder, models_config=routes, engine_processes=1
                ),
                "engine_processes=2, below the threshold": Settings(
                    data_dir=folder, models_config=routes, engine_processes=2, engine_offload_load=1
                ),
                "engine_processes=1 again": Settings(
                    data_dir=folder, models_config=routes, engine_processes=1
                ),
            }
            results: dict[str, list[float]] = {name: [] for name in settings}
            for number in range(args.rounds):
                order = list(settings) if number % 2 == 0 else list(settings)[::-1]
                for name in order:
                    run = cpu_per_record(settings[name], args.records, args.concurrency)
                    results[name].append(uvloop.run(run))
                print(
                    f"round {number + 1}: "
                    + ", ".join(f"{name} {values[-1]:.1f} us" for name, values in results.items()),
                    flush=True,
                )
    finally:
        server.kill()
        server.wait()
    print(f"\n{args.records} records, {args.concurrency} in flight, {args.rounds} rounds")
    for name, values in results.items():
        print(
            f"{name:<40} median {statistics.median(values):5.1f} us a record  "
            f"range {min(values):.1f}-{max(values):.1f}"
        )


if __name__ == "__main__":
    main()
