"""What a Get's key read costs with each cross-process change signal of a SQLite file.

    .venv/bin/python benchmarks/sqlite_change_signal.py

In-process and warm, CPU µs per call (the least of ``--tries`` runs of ``--calls``), on a
store of ten jobs (benchmarks/api_listing.py's): the key query itself (store/sqlite.py
``_row_key``); ``PRAGMA data_version`` (changes when another connection commits; with a
count of this connection's own commits it would be signal (a)); ``total_changes`` (that
count, read from the connection); the WAL-index header's two copies read from the mapped
``-shm`` file (signal (b), store/sqlite_wal_index.py); and ``get_row_key`` answered from
the kept key (the header unchanged), with nothing kept (the key read and kept), and
without the signal (main's path: the key read every time). Nothing passes or fails:
the numbers, and the choice they made, are in docs/benchmarks.md ("Get without its key
query").
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_listing import ACCOUNT, REGION, fill

from batchrock.store.sqlite import SqliteStore


def cpu_per_call(call: Callable[[], object], calls: int, tries: int) -> float:
    best = float("inf")
    for _ in range(tries):
        start = time.process_time()
        for _ in range(calls):
            call()
        best = min(best, (time.process_time() - start) / calls)
    return best * 1e6


def run(coroutine: Callable[[], Coroutine[Any, Any, object]]) -> Callable[[], object]:
    """A coroutine that never suspends, run to its end without an event loop's turn."""

    def call() -> object:
        try:
            coroutine().send(None)
        except StopIteration as done:
            return done.value
        raise AssertionError("it suspended")

    return call


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--tries", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchrock-signal-") as folder:
        path = Path(folder) / "batchrock.sqlite3"
        job_id = await fill(path, 10)
        store = await SqliteStore.open(path)
        try:
            header = store._wal_index
            assert header is not None, "no WAL-index signal on this platform"
            conn = store._conn
            cursor = conn.cursor()

            def get() -> object:
                return run(lambda: store.get_row_key(ACCOUNT, REGION, job_id))()

            def forgotten_then_get() -> object:
                store._keys.clear()
                return get()

            n, tries = args.calls, args.tries
            key = cpu_per_call(lambda: store._row_key(ACCOUNT, REGION, job_id), n, tries)
            rows = [
                ("the key query (_row_key)", key),
                (
                    "PRAGMA data_version",
                    cpu_per_call(
                        lambda: cursor.execute("PRAGMA data_version").fetchone(), n, tries
                    ),
                ),
                ("total_changes", cpu_per_call(lambda: conn.total_changes, n, tries)),
                ("WAL-index header, both copies", cpu_per_call(header.read, n, tries)),
                ("get_row_key, kept key (nothing committed)", cpu_per_call(get, n, tries)),
                (
                    "get_row_key, nothing kept (reads, keeps)",
                    cpu_per_call(forgotten_then_get, n, tries),
                ),
            ]
            store._wal_index = None
            rows.append(("get_row_key without the signal (reads)", cpu_per_call(get, n, tries)))
            store._wal_index = header
        finally:
            await store.close()
    print(f"best of {args.tries} x {args.calls} calls, CPU µs per call (this process)")
    print("| read | µs |\n| --- | ---: |")
    for name, micros in rows:
        print(f"| {name} | {micros:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
