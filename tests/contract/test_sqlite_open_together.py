"""Processes that open one new SQLite file at the same moment all start: ``serve`` with
``api_processes`` forks several servers onto one data dir, and workers may share one too.
Switching a fresh file to WAL can answer "database is locked" at once, without the busy
handler (a CI run failed so: one of the forked servers exited at start)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from batchrock.store.sqlite import SCHEMA_VERSION, SqliteStore

_PROCESSES = 8


def _open(path: str, start: Barrier, results: Queue[str]) -> None:
    start.wait()
    try:
        store = SqliteStore.open_sync(Path(path), busy_timeout=30.0)
    except Exception as exc:  # the test reports what each process saw
        results.put(f"{type(exc).__name__}: {exc}")
        return
    store._conn.close()
    results.put("opened")


def test_processes_opening_one_new_file_together_all_open(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    for attempt in range(5):  # each attempt a new file: the race is at the first open
        path = tmp_path / f"db{attempt}.sqlite3"
        start = context.Barrier(_PROCESSES)
        results: Queue[str] = context.Queue()
        procs = [
            context.Process(target=_open, args=(str(path), start, results))
            for _ in range(_PROCESSES)
        ]
        for proc in procs:
            proc.start()
        seen = [results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
        assert seen == ["opened"] * _PROCESSES, seen
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        finally:
            conn.close()
