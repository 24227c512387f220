"""The SQLite store's WAL is checkpointed on a thread of its own, never in a commit on the loop
(store/sqlite_checkpoint.py): with synchronous=NORMAL the checkpoint is where the fsyncs are,
and on a slow disk the Create whose commit crossed SQLite's automatic threshold held the event
loop for as long as the disk took."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from batchrock.store.sqlite import SqliteStore
from batchrock.store.sqlite_checkpoint import Checkpoints, WalCheckpointer
from tests.contract.test_store import make_job

# SQLite's automatic checkpoint runs once the WAL holds 1000 pages (each frame: a page and a
# 24-byte header, after the WAL's 32-byte header).
_AUTO_PAGES = 1000


def _wal_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def _frames(path: Path, page_size: int) -> int:
    return max(_wal_bytes(path) - 32, 0) // (page_size + 24)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait for ``condition()`` (the checkpointer's thread works meanwhile)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


async def _copied_after_now(stores: list[SqliteStore]) -> None:
    """Wait until each store's checkpointer has run a pass that began after this call and
    copied the whole WAL (a pass under way now may have read the WAL before the last write)."""
    for store in stores:
        await _copied_after_now_by(store.checkpointer)


async def _copied_after_now_by(checkpointer: WalCheckpointer) -> None:
    seen = checkpointer.last
    await _until(lambda: checkpointer.last is not seen, "a pass ended")
    ended = checkpointer.last

    def copied() -> bool:
        # Mode NONE: the WAL held only the checkpointer's own restart write, nothing to copy.
        last = checkpointer.last
        return (
            last is not ended
            and last is not None
            and (last.mode == "NONE" or (not last.busy and last.checkpointed == last.wal_frames))
        )

    await _until(copied, "a pass begun after the last write copied the whole WAL")


def test_commits_on_the_loop_connection_never_checkpoint(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "db.sqlite3"
        # The checkpointer waits an hour before its first pass: only the loop's commits act.
        store = await SqliteStore.open(path, checkpoints=Checkpoints(interval=3600.0))
        try:
            conn = store._conn
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            await store.create(make_job(0), {})
            # In WAL mode only a checkpoint writes the database file itself.
            before = _digest(path)
            n = 1
            while _frames(path, page_size) <= 2 * _AUTO_PAGES:
                await store.create(make_job(n), {"k": "v" * 200})
                n += 1
                assert n < 5_000, "the WAL did not grow"
            # Before the fix SQLite checkpointed inside the commit that crossed 1000 pages.
            assert _digest(path) == before, "a commit on the loop's connection checkpointed"
            assert store.checkpointer.last is None
            # One pass of the checkpointer (driven here) copies it all and leaves the file.
            # The WAL is past SQLite's threshold but under the bound that adds a FULL pass:
            # the pass takes no lock a writer waits on (before the fix it truncated the WAL,
            # holding writers up to 20 ms), so another process's write transaction, open
            # meanwhile, neither waits for it nor stops it.
            grown = _wal_bytes(path)
            assert Checkpoints().wal_limit_bytes < grown < store.checkpointer.wal_bound_bytes
            writer = sqlite3.connect(str(path), isolation_level=None, timeout=0)
            writer.execute("BEGIN IMMEDIATE")
            try:
                done = store.checkpointer.checkpoint()
            finally:
                writer.execute("ROLLBACK")
                writer.close()
            assert done is not None and done.mode == "PASSIVE" and not done.busy
            assert done.checkpointed == done.wal_frames
            assert _digest(path) != before and _wal_bytes(path) == grown
            # The next commit starts the WAL over and cuts the file back to the store's
            # journal_size_limit (SQLite's own behaviour, which the checkpointer relies on).
            await store.create(make_job(n), {})
            assert _wal_bytes(path) <= Checkpoints().wal_limit_bytes < grown
        finally:
            await store.close()

    asyncio.run(scenario())


def _wal_header(path: Path) -> bytes:
    """The WAL file's 32-byte header (https://www.sqlite.org/fileformat.html#walformat): its
    checkpoint sequence and salts change when, and only when, the WAL starts over."""
    with open(f"{path}-wal", "rb") as wal:
        return wal.read(32)


def test_a_pass_that_copied_the_whole_wal_starts_it_over_off_the_loop(tmp_path: Path) -> None:
    """The first commit into a restarted WAL writes its new header and fdatasyncs it: before
    the fix that was the loop's next commit. Now the pass that copied everything starts the
    WAL over on the checkpointer's thread, and the loop's commits only append."""

    async def scenario() -> None:
        path = tmp_path / "db.sqlite3"
        limit = Checkpoints().wal_limit_bytes
        # The checkpointer waits an hour before its first pass: passes are driven here.
        store = await SqliteStore.open(path, checkpoints=Checkpoints(interval=3600.0))
        try:
            page_size = store._conn.execute("PRAGMA page_size").fetchone()[0]
            n = 0
            while _wal_bytes(path) <= limit:  # past the limit, so the cut back shows
                await store.create(make_job(n), {"k": "v" * 200})
                n += 1
            grown, before = _wal_bytes(path), _wal_header(path)
            done = store.checkpointer.checkpoint()
            assert done is not None and not done.busy and done.checkpointed == done.wal_frames
            # Started over (and cut back to the limit) by the pass, before any loop commit.
            restarted = _wal_header(path)
            assert restarted != before, "the pass left the WAL's start to the loop's commit"
            assert done.restarted
            assert _wal_bytes(path) <= limit < grown
            assert _frames(path, page_size) >= 1
            # The loop's next commit appends: the header stays.
            await store.create(make_job(n), {})
            assert _wal_header(path) == restarted
            # An idle pass: the WAL holds the restart's write and the commit above, so it is
            # copied and started over again; then one with only the restart's write copies
            # nothing (and writes nothing), and the loop's commit after it still appends.
            again = store.checkpointer.checkpoint()
            assert again is not None and again.restarted and _wal_header(path) != restarted
            idle = store.checkpointer.checkpoint()
            assert idle is not None and idle.mode == "NONE" and not idle.restarted
            header = _wal_header(path)
            await store.create(make_job(n + 1), {})
            assert _wal_header(path) == header
            # Every job is read back through the loop's connection.
            for i in range(n + 2):
                assert await store.get_by_id(make_job(i).job_id) is not None
        finally:
            await store.close()

    asyncio.run(scenario())


def test_another_stores_checkpointer_leaves_a_restart_alone(tmp_path: Path) -> None:
    """Two stores on one file (api_processes, workers): one's restart write is not copied
    and started over by the other's next pass (they would write at every pass, idle), and
    the loop's next commit still appends."""

    async def scenario() -> None:
        path = tmp_path / "db.sqlite3"
        policy = Checkpoints(interval=3600.0)  # passes are driven here
        first, second = [await SqliteStore.open(path, checkpoints=policy) for _ in range(2)]
        try:
            for n in range(20):
                await first.create(make_job(n), {})
            done = first.checkpointer.checkpoint()
            assert done is not None and done.restarted
            header = _wal_header(path)
            for _ in range(3):
                idle = second.checkpointer.checkpoint()
                assert idle is not None and idle.mode == "NONE" and not idle.restarted
                idle = first.checkpointer.checkpoint()
                assert idle is not None and idle.mode == "NONE"
            assert _wal_header(path) == header
            await second.create(make_job(20), {})
            assert _wal_header(path) == header
        finally:
            for store in (first, second):
                await store.close()

    asyncio.run(scenario())


def test_the_checkpointers_keep_the_wal_bounded(tmp_path: Path) -> None:
    """Two stores on one file (as api_processes and workers are), each with its checkpointer,
    under a steady stream of writes: passive passes alone rarely find the WAL copied before
    the next write (it grew by the whole stream, tens of MiB, when they were all there was);
    the FULL pass past the bound lets the next writer start it over. Once the stream stops
    and a pass has copied everything, the next commit cuts the file back to the limit, and
    every job is in the database file."""
    limit, bound = 128 * 1024, 512 * 1024

    async def scenario() -> None:
        path = tmp_path / "db.sqlite3"
        policy = Checkpoints(0.01, limit, bound)
        stores = [await SqliteStore.open(path, checkpoints=policy) for _ in range(2)]
        try:
            total = 1500  # some 20,000 pages through the WAL: 80 MiB, 160 times its bound
            largest = 0
            for n in range(total):
                await stores[n % 2].create(make_job(n), {"k": "v" * 200})
                largest = max(largest, _wal_bytes(path))
            # Room for what the loop writes while a checkpointer waits for the CPU: a third of
            # the stream (measured: 8-12 MiB; with passive passes only, 63-97 MiB).
            page_size = stores[0]._conn.execute("PRAGMA page_size").fetchone()[0]
            streamed = 20_000 * (page_size + 24)
            assert largest < streamed / 3, f"the WAL grew to {largest} bytes"
            for store in stores:
                assert store.checkpointer.running
            await _copied_after_now(stores)
            await stores[0].create(make_job(total), {})
            assert _wal_bytes(path) <= limit, "the commit after it did not cut the WAL back"
        finally:
            for store in stores:
                await store.close()
        # Everything is in the database file itself.
        check = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            assert check.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == total + 1
        finally:
            check.close()

    asyncio.run(scenario())


def test_close_stops_the_checkpointer(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "db.sqlite3"
        store = await SqliteStore.open(path, checkpoints=Checkpoints(interval=0.01))
        await store.create(make_job(1), {})
        thread = store.checkpointer._thread
        assert thread.is_alive()
        await store.close()
        assert not thread.is_alive() and thread not in threading.enumerate()
        # The checkpointer's connection was the last: SQLite checkpointed and removed the WAL
        # as it closed, on the checkpointer's thread.
        assert not Path(f"{path}-wal").exists()

    asyncio.run(scenario())


def test_a_failed_checkpoint_is_logged_and_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "db.sqlite3"
    SqliteStore.open_sync(path).checkpointer.stop()  # the file, in WAL mode
    checkpointer = WalCheckpointer(path)  # not started: passes are driven here
    good = checkpointer._conn
    checkpointer._conn = sqlite3.connect(":memory:")
    checkpointer._conn.close()  # every pass now fails
    caplog.set_level(logging.DEBUG, logger="batchrock.store")
    assert checkpointer.checkpoint() is None
    assert checkpointer.checkpoint() is None
    failures = [r for r in caplog.records if "checkpointing the WAL" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.ERROR, logging.DEBUG]
    assert failures[0].exc_info is not None
    checkpointer._conn = good
    assert checkpointer.checkpoint() is not None
    assert "works again after 2 failures" in caplog.records[-1].getMessage()
    checkpointer.stop()
