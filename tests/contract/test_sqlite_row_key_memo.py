"""The SQLite store keeps the row keys it read while nothing commits to the file (store/sqlite.py
``get_row_key`` and ``list_row_keys``, store/sqlite_wal_index.py): a Get (or a listing's key
read) after no change runs no statement, and one after any committed change (this connection,
another one, another process, a checkpoint that starts the WAL over) reads the database again
and answers the new key."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batchrock.jobs import JobStatus
from batchrock.store import sqlite as sqlite_store
from batchrock.store.base import JobFilter, PageRequest, key_job_id
from batchrock.store.sqlite import SqliteStore
from batchrock.store.sqlite_wal_index import WalIndexHeader

from .test_store import T0, make_job

pytestmark = pytest.mark.anyio
ACCOUNT, REGION = "123456789012", "us-east-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "db" / "batchrock.sqlite3"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(path)
    yield opened
    await opened.close()


class Statements:
    """The statements a connection runs (its trace callback)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.seen: list[str] = []
        conn.set_trace_callback(self.seen.append)

    def take(self) -> list[str]:
        seen, self.seen[:] = list(self.seen), []
        return seen


def _key_now(path: Path, job_id: str) -> str | None:
    """The row's key as a connection of its own reads it now."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT row_key FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


def _current(path: Path, packed: str) -> bool:
    """Whether every key of a page is its job's key now."""
    keys = packed.split(",")
    return [_key_now(path, key_job_id(k)) for k in keys] == keys


async def _created(store: SqliteStore, n: int = 0) -> str:
    job, created = await store.create(make_job(n), {})
    assert created
    return job.job_id


async def test_a_get_with_nothing_committed_runs_no_statement(store: SqliteStore) -> None:
    job_id = await _created(store)
    statements = Statements(store._conn)
    key = await store.get_row_key(ACCOUNT, REGION, job_id)
    assert key == _key_now(store.path, job_id)
    assert len(statements.take()) == 1  # the key query
    for _ in range(3):
        assert await store.get_row_key(ACCOUNT, REGION, job_id) == key
    assert await store.get_row_key(ACCOUNT, REGION, "nosuchjob") is None
    assert len(statements.take()) == 1  # the absent job's, once
    assert await store.get_row_key(ACCOUNT, REGION, "nosuchjob") is None
    # Another account's or region's read is its own: the job is not theirs.
    assert await store.get_row_key("210987654321", REGION, job_id) is None
    assert await store.get_row_key(ACCOUNT, "eu-west-1", job_id) is None
    assert len(statements.take()) == 2


async def test_own_writes_are_seen_at_once(store: SqliteStore) -> None:
    job_id = await _created(store)
    first = await store.get_row_key(ACCOUNT, REGION, job_id)
    await store.transition(job_id, JobStatus.STOPPING, now=T0)
    second = await store.get_row_key(ACCOUNT, REGION, job_id)
    assert second != first and second == _key_now(store.path, job_id)
    # A write of a table the key is not in (the job's tags) forgets the keys all the same.
    statements = Statements(store._conn)
    await store.put_tags(job_id, {"k": "v"}, max_tags=50)
    statements.take()
    assert await store.get_row_key(ACCOUNT, REGION, job_id) == second
    assert statements.take() != []
    # A job created after it was asked for (and found absent) is found.
    assert await store.get_row_key(ACCOUNT, REGION, "job000000001") is None
    assert await store.get_row_key(ACCOUNT, REGION, await _created(store, 1)) is not None


async def test_another_connections_commit_is_seen_at_once(path: Path, store: SqliteStore) -> None:
    job_id = await _created(store)
    other = await SqliteStore.open(path)
    try:
        first = await store.get_row_key(ACCOUNT, REGION, job_id)
        assert await store.get_row_key(ACCOUNT, REGION, job_id) == first
        await other.transition(job_id, JobStatus.STOPPING, now=T0)
        second = await store.get_row_key(ACCOUNT, REGION, job_id)
        assert second != first and second == _key_now(path, job_id)
    finally:
        await other.close()
    # A plain connection's (no store, no checkpointer of its own) update of the row.
    conn = sqlite3.connect(path)
    conn.execute("UPDATE jobs SET message = 'changed' WHERE job_id = ?", (job_id,))
    conn.commit()
    conn.close()
    third = await store.get_row_key(ACCOUNT, REGION, job_id)
    assert third != second and third == _key_now(path, job_id)


_OTHER_PROCESS = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute(sys.argv[2], sys.argv[3:])
conn.commit()
conn.close()
"""


def _in_another_process(path: Path, sql: str, *params: str) -> None:
    subprocess.run([sys.executable, "-c", _OTHER_PROCESS, str(path), sql, *params], check=True)


async def test_another_processes_commit_is_seen_at_once(path: Path, store: SqliteStore) -> None:
    job_id = await _created(store)
    first = await store.get_row_key(ACCOUNT, REGION, job_id)
    assert await store.get_row_key(ACCOUNT, REGION, job_id) == first
    _in_another_process(path, "UPDATE jobs SET status = 'Stopping' WHERE job_id = ?", job_id)
    second = await store.get_row_key(ACCOUNT, REGION, job_id)
    assert second != first and second == _key_now(path, job_id)
    assert await store.get_row_key(ACCOUNT, REGION, job_id) == second
    _in_another_process(path, "DELETE FROM jobs WHERE job_id = ?", job_id)
    assert await store.get_row_key(ACCOUNT, REGION, job_id) is None


async def test_a_rolled_back_read_is_not_kept(store: SqliteStore) -> None:
    # What this connection reads inside its own transaction may yet be rolled back; the
    # header does not change when it is.
    job_id = await _created(store)
    committed = await store.get_row_key(ACCOUNT, REGION, job_id)
    store._conn.execute("BEGIN IMMEDIATE")
    store._conn.execute("UPDATE jobs SET message = 'never' WHERE job_id = ?", (job_id,))
    assert await store.get_row_key(ACCOUNT, REGION, job_id) != committed
    store._conn.execute("ROLLBACK")
    assert await store.get_row_key(ACCOUNT, REGION, job_id) == committed


async def test_checkpoints_and_wal_restarts_only_make_it_read_again(
    path: Path, store: SqliteStore
) -> None:
    job_id = await _created(store)
    key = await store.get_row_key(ACCOUNT, REGION, job_id)
    conn = sqlite3.connect(path)
    try:
        for mode in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
            assert await store.get_row_key(ACCOUNT, REGION, job_id) == key
        # A write into the WAL started over (its salts change, its frames count from 0).
        await store.transition(job_id, JobStatus.STOPPING, now=T0)
        after = await store.get_row_key(ACCOUNT, REGION, job_id)
        assert after != key and after == _key_now(path, job_id)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        conn.execute("UPDATE jobs SET message = 'again' WHERE job_id = ?", (job_id,))
        conn.commit()
        last = await store.get_row_key(ACCOUNT, REGION, job_id)
        assert last != after and last == _key_now(path, job_id)
    finally:
        conn.close()


async def test_the_kept_keys_are_bounded(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_ROW_KEYS_KEPT", 3)
    ids = [await _created(store, n) for n in range(10)]
    for job_id in ids:
        assert await store.get_row_key(ACCOUNT, REGION, job_id) == _key_now(store.path, job_id)
        assert len(store._keys) <= 3
    for job_id in ids:  # the ones forgotten are read again
        assert await store.get_row_key(ACCOUNT, REGION, job_id) == _key_now(store.path, job_id)


async def test_close_unmaps_the_header(store: SqliteStore) -> None:
    header = store._wal_index
    assert header is not None
    await store.close()
    assert store._wal_index is None
    with pytest.raises(ValueError):
        header.read()


def _header_of(path: Path, *pragmas: str) -> tuple[sqlite3.Connection, WalIndexHeader | None]:
    """A plain connection to a new file with ``pragmas``, and the file's signal."""
    conn = sqlite3.connect(path)
    for pragma in pragmas:
        conn.execute(f"PRAGMA {pragma}")
    conn.execute("CREATE TABLE t (x)")
    return conn, WalIndexHeader.open(conn, path)


def test_no_signal_without_the_wal_index_in_a_file(tmp_path: Path) -> None:
    rollback, none = _header_of(tmp_path / "rollback.sqlite3")
    assert none is None
    rollback.close()
    # Exclusive locking keeps the WAL index in the process's memory, not the -shm file.
    exclusive, none = _header_of(
        tmp_path / "exclusive.sqlite3", "locking_mode = EXCLUSIVE", "journal_mode = WAL"
    )
    assert none is None
    exclusive.close()
    # In WAL mode with shared memory: the header, its two copies equal.
    shared, header = _header_of(tmp_path / "shared.sqlite3", "journal_mode = WAL")
    assert header is not None
    before = header.read()
    assert before[:48] == before[48:]
    shared.execute("INSERT INTO t VALUES (1)")
    assert header.read() == before  # not committed yet
    shared.commit()
    assert header.read() != before
    header.close()
    shared.close()


async def test_a_store_without_the_signal_reads_every_time(path: Path) -> None:
    store = await SqliteStore.open(path)
    try:
        header, store._wal_index = store._wal_index, None
        assert header is not None
        header.close()
        job_id = await _created(store)
        statements = Statements(store._conn)
        for _ in range(2):
            assert await store.get_row_key(ACCOUNT, REGION, job_id) == _key_now(path, job_id)
        assert len(statements.take()) == 2
    finally:
        await store.close()


async def test_a_listings_keys_are_kept_the_same_way(path: Path, store: SqliteStore) -> None:
    ids = [await _created(store, n) for n in range(3)]
    everyone = JobFilter(account_id=ACCOUNT, region=REGION)
    first = PageRequest(limit=2)
    statements = Statements(store._conn)
    packed = await store.list_row_keys(everyone, first)
    assert _current(path, packed) and len(packed.split(",")) >= 2
    assert statements.take() != []
    assert await store.list_row_keys(everyone, first) == packed
    assert statements.take() == []  # nothing committed: the page's keys from memory
    # Another page, another filter: each its own read.
    assert await store.list_row_keys(everyone, PageRequest(limit=1)) == packed.split(",")[0]
    assert (
        await store.list_row_keys(JobFilter(account_id="210987654321", region=REGION), first) == ""
    )
    assert len(statements.take()) == 2
    # Another process's change of a job on the page, and a job it adds at the top.
    _in_another_process(path, "UPDATE jobs SET status = 'Stopping' WHERE job_id = ?", ids[1])
    changed = await store.list_row_keys(everyone, first)
    assert changed != packed and _current(path, changed)
    assert _key_now(path, ids[1]) in changed.split(",")
    await store.create(make_job(3), {})
    assert (await store.list_row_keys(everyone, first)).split(",")[0] == _key_now(
        path, "job000000003"
    )


async def test_the_kept_pages_are_bounded(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_PAGE_KEYS_KEPT", 2)
    await _created(store)
    for limit in range(1, 6):
        await store.list_row_keys(
            JobFilter(account_id=ACCOUNT, region=REGION), PageRequest(limit=limit)
        )
        assert len(store._page_keys) <= 2


_WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
for line in sys.stdin:
    conn.execute("UPDATE jobs SET message = ? WHERE job_id = ?", (line.strip(), sys.argv[2]))
    print("committed", flush=True)
"""


async def test_every_commit_of_another_process_is_seen_by_the_next_get(
    path: Path, store: SqliteStore
) -> None:
    # One writer process, many commits: after each (its answer read), the very next Get
    # answers the row's new key, whether the key was kept a moment before or not.
    job_id = await _created(store)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), job_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdin is not None and writer.stdout is not None
    try:
        key = await store.get_row_key(ACCOUNT, REGION, job_id)
        for n in range(60):
            for _ in range(n % 3):  # kept, or not, before the commit
                assert await store.get_row_key(ACCOUNT, REGION, job_id) == key
            writer.stdin.write(f"message {n}\n")
            writer.stdin.flush()
            assert writer.stdout.readline() == "committed\n"
            new = await store.get_row_key(ACCOUNT, REGION, job_id)
            assert new != key and new == _key_now(path, job_id)
            key = new
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
        writer.stdout.close()
