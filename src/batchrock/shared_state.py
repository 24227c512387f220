"""What the API processes of one ``batchrock serve`` must agree on (setting ``api_processes``):
the console's failed sign-ins, the API's wrong signatures and the per-account rate limit's
buckets (console sessions live in the job store, store/sessions.py, valid on every API
process and host).

With one process these live in its memory. With several, a browser's next request, or an
account's next call, may reach any of them, so they live in one small SQLite file instead,
private to the user like everything in the data dir, made afresh when ``serve`` starts (a
restart forgets them) and removed when it ends. Nothing in it is a secret that works
elsewhere: failed sign-ins are kept under what :mod:`batchrock.access.signin_limit` counts.

Every call is one short transaction (microseconds) run on the event loop, on a connection
that never waits for another process's lock (SQLite's busy handler would sleep in the calling
thread, holding the loop and every other request of the process): a call that finds the file
locked raises :class:`SharedStateBusy` at once, and the caller waits off the loop. The rate
limit pauses with ``asyncio.sleep`` and tries again (:class:`batchrock.api.throttle.
SharedRateLimiter`); a failure to count (:meth:`SharedState.add_failure`, called from
synchronous code) goes to a thread of its own with its own connection, which waits up to
:data:`WAIT_SECONDS` for the lock, and is counted by this process's reads meanwhile.

Failures are read on every correctly signed request (two keys: its address and key, its
address) and change rarely, so each process keeps the answers it read, for as long as a
second file beside it, :data:`GENERATION_SUFFIX`, holds the same 8 bytes: every commit that
changes the failures writes fresh random ones there, after the commit and before it returns,
and a process that finds them changed forgets every answer it kept. A request whose keys
have no recorded failures is then one 8-byte read of shared memory, no SQLite read (and no
file lock). An answer kept is one read after the bytes were last seen unchanged, so it holds
every change whose writer has written its bytes by the time they are read: a failure (a
lockout) recorded by one process counts on the others' next request after the recording
call returns (where the file was locked, after the writer thread has written it; on the
recording process itself at once, as pending). The bytes are random, not a counter, because
they are written outside the file's lock (after the commit): two writers racing can leave
either's, never one a reader already holds (2^-64). Guide: docs/architecture.md, "Several
API processes".
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("batchrock.shared_state")

#: How long a write waits, off the event loop, for another process's lock before it gives up
#: (the lock is held for microseconds; this long means that process is stopped or stuck).
WAIT_SECONDS = 5.0
#: Failures handed to the writer thread and not yet in the file, at most; past it
#: :meth:`SharedState.add_failure` raises :class:`SharedStateBusy` (the file is stuck).
PENDING_FAILURES = 1_000
#: Beside the file (its name plus this): 8 bytes that change with every change of the failures.
GENERATION_SUFFIX = "-generation"
#: Answers a process keeps at most (forgotten all at once past it; about 200 bytes each).
KEPT_ANSWERS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sign_in_failures (key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sign_in_failures_key ON sign_in_failures (key, at);
CREATE TABLE IF NOT EXISTS buckets (
    account_id TEXT PRIMARY KEY, tokens REAL NOT NULL, at REAL NOT NULL
);
"""


class SharedStateBusy(Exception):
    """Another API process holds the shared file's lock (a call on the event loop's
    connection: now; the writer thread's: for longer than :data:`WAIT_SECONDS`)."""


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class SharedState:
    """The shared file of one ``serve``'s API processes; each process opens its own
    connection (:meth:`open`) after the fork."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generation_path = Path(f"{path}{GENERATION_SUFFIX}")
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection; the console's file reads use threads
        #: Failures whose write found the file locked, handed to :attr:`_writer`: key -> times.
        self._pending: dict[str, list[float]] = {}
        self._pending_count = 0
        #: One thread (started on the first busy write) with a connection that waits.
        self._writer: ThreadPoolExecutor | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._generation: mmap.mmap | None = None
        #: The generation bytes the answers in :attr:`_answers` were read under.
        self._seen = b""
        #: key -> (the ``since`` it was read for, its failures after that, oldest first).
        self._answers: dict[str, tuple[float, tuple[float, ...]]] = {}

    @classmethod
    def create(cls, path: Path) -> SharedState:
        """Make the file afresh (before forking): the schema, nothing in it."""
        for suffix in ("", "-wal", "-shm", GENERATION_SUFFIX):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        state = cls(path)
        with state._transaction() as conn:
            conn.execute("SELECT 1")
        state._generation_bytes()
        state.close()
        return state

    def _generation_bytes(self) -> mmap.mmap:
        """The generation file, mapped (made, zeros, where it is not there yet: it is only
        ever extended to its 8 bytes, so two processes making it at once agree)."""
        if self._generation is None:
            fd = os.open(self.generation_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < 8:
                    os.ftruncate(fd, 8)
                self._generation = mmap.mmap(fd, 8)
            finally:
                os.close(fd)  # the mapping keeps the file
        return self._generation

    def _open(self, timeout: float) -> sqlite3.Connection:
        """A connection that waits up to ``timeout`` for another's lock (0: never)."""
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, timeout=timeout, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = OFF")  # lost with the server anyway
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self) -> sqlite3.Connection:
        """The event loop's connection: it never waits for a lock."""
        if self._conn is None:
            self._conn = self._open(timeout=0)
        return self._conn

    def close(self) -> None:
        if self._writer is not None:
            # Failures still queued die with the server's shared file (removed on exit); the
            # one being written, if any, ends within WAIT_SECONDS.
            self._writer.shutdown(wait=True, cancel_futures=True)
            self._writer = None
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._generation is not None:
            self._generation.close()
            self._generation = None
        self._seen = b""
        self._answers.clear()
        self._pending.clear()
        self._pending_count = 0

    @contextmanager
    def _transaction(self, failures: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction on the loop's connection, which does not wait: another
        process holding the lock is :class:`SharedStateBusy` at once. ``failures``: it
        changes the failures, so once it has committed, the generation bytes change (the
        lock still held: this process's other threads see it at once too)."""
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise SharedStateBusy(str(exc)) from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._commit(conn, failures)

    def _commit(self, conn: sqlite3.Connection, failures: bool) -> None:
        """COMMIT (``self._lock`` held), then, for a change of the failures, new generation
        bytes and nothing kept."""
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # pragma: no cover - WAL commits don't wait
            conn.execute("ROLLBACK")
            raise SharedStateBusy(str(exc)) from exc
        if failures:
            self._answers.clear()
            self._seen = b""
            self._generation_bytes()[:8] = os.urandom(8)

    # --- failed sign-ins ------------------------------------------------------------------

    def recent_failures(self, key: str, since: float) -> list[float]:
        """When ``key``'s failures within the window (after ``since``) happened, oldest first.

        A read without the write lock, and mostly not even that: the API asks it on every
        signed request, and the answer kept from an earlier read serves while the generation
        bytes are unchanged (see the module's docstring; a key's older failures are dropped
        by :meth:`add_failure`, which keeps its latest few)."""
        with self._lock:
            seen = self._generation_bytes()[:8]
            if seen != self._seen:
                self._answers.clear()
                self._seen = seen
            pending = self._pending.get(key, ())
            kept = self._answers.get(key)
            if kept is not None and kept[0] <= since:
                return _merged([at for at in kept[1] if at > since], pending, since)
            try:
                rows = (
                    self._connection()
                    .execute(
                        "SELECT at FROM sign_in_failures WHERE key = ? AND at > ? ORDER BY at",
                        (key, since),
                    )
                    .fetchall()
                )
            except sqlite3.OperationalError as exc:
                raise SharedStateBusy(str(exc)) from exc
            if len(self._answers) >= KEPT_ANSWERS:
                self._answers.clear()
            self._answers[key] = (since, tuple(at for (at,) in rows))
            return _merged([at for (at,) in rows], pending, since)

    def add_failure(self, key: str, at: float, keep: int, max_tracked: int) -> None:
        """Count a failure of ``key``: its ``keep`` latest are kept, and at most
        ``max_tracked`` keys (the one failed longest ago is forgotten).

        Called from synchronous code on the event loop, so it does not wait for another
        process's lock: a write that finds the file locked is handed to the writer thread
        (its own connection, which waits up to :data:`WAIT_SECONDS`) and returns at once;
        until the thread has written it, this process's :meth:`recent_failures` counts it
        (the other processes once it is written, as soon as the lock is let go). Raises
        :class:`SharedStateBusy` only with :data:`PENDING_FAILURES` already waiting."""
        try:
            with self._transaction(failures=True) as conn:
                _record_failure(conn, key, at, keep, max_tracked)
        except SharedStateBusy as exc:
            self._hand_to_writer(key, at, keep, max_tracked, exc)

    def _hand_to_writer(
        self, key: str, at: float, keep: int, max_tracked: int, busy: SharedStateBusy
    ) -> None:
        with self._lock:
            if self._pending_count >= PENDING_FAILURES:
                raise SharedStateBusy(f"{self._pending_count} failures wait to be written: {busy}")
            self._pending.setdefault(key, []).append(at)
            self._pending_count += 1
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="shared-state-writer")
            writer = self._writer
        writer.submit(self._write_pending, key, at, keep, max_tracked)

    def _write_pending(self, key: str, at: float, keep: int, max_tracked: int) -> None:
        """On the writer thread: wait for the lock (``self._lock`` not held meanwhile, so the
        loop's calls go on), write the failure, and at the commit stop counting it as
        pending (both under ``self._lock``: a read sees it once, in the file or pending)."""
        written = False
        try:
            if self._writer_conn is None:
                self._writer_conn = self._open(timeout=WAIT_SECONDS)
            conn = self._writer_conn
            conn.execute("BEGIN IMMEDIATE")  # the wait, in this thread
            try:
                _record_failure(conn, key, at, keep, max_tracked)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            with self._lock:
                self._commit(conn, failures=True)
                self._unpend(key, at)
                written = True
        except (sqlite3.Error, SharedStateBusy) as exc:
            # Only the key's kind: a key names an address and an access key id.
            kind = key.split(":", 1)[0]
            log.warning("a failure (%s) was not counted in the shared file: %s", kind, exc)
        except Exception:  # on a pool's thread an exception would go nowhere: say so here
            log.exception("a failure was not counted in the shared file")
        finally:
            if not written:
                with self._lock:
                    self._unpend(key, at)

    def _unpend(self, key: str, at: float) -> None:
        times = self._pending.get(key)
        if times is not None and at in times:
            times.remove(at)
            self._pending_count -= 1
            if not times:
                del self._pending[key]

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the failures handed to the writer thread to be
        written (or given up); ``True`` when none are left (tests; a server never waits)."""
        with self._lock:
            writer = self._writer
        if writer is None:
            return True
        done = writer.submit(lambda: None)
        try:
            done.result(timeout)
        except TimeoutError:
            return False
        return not self._pending

    # --- rate-limit buckets ---------------------------------------------------------------

    def take_token(self, account_id: str, now: float, rate: float, burst: float) -> bool:
        """One token bucket per account, as :class:`batchrock.api.throttle.RateLimiter`
        keeps them in memory: refill, then take one if there is one."""
        with self._transaction() as conn:
            found = conn.execute(
                "SELECT tokens, at FROM buckets WHERE account_id = ?", (account_id,)
            ).fetchone()
            tokens = (
                burst if found is None else min(burst, found[0] + max(0.0, now - found[1]) * rate)
            )
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            conn.execute(
                "INSERT OR REPLACE INTO buckets VALUES (?, ?, ?)", (account_id, tokens, now)
            )
        return allowed

    def forget_full_buckets(self, now: float, rate: float, burst: float) -> None:
        """Drop the buckets that have filled up again (a fresh one is the same)."""
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM buckets WHERE tokens + max(0.0, ? - at) * ? >= ?", (now, rate, burst)
            )


def _merged(read: list[float], pending: list[float] | tuple[()], since: float) -> list[float]:
    """The failures read from the file and those still waiting for the writer, oldest first."""
    if not pending:
        return read
    return sorted(read + [at for at in pending if at > since])


def _record_failure(
    conn: sqlite3.Connection, key: str, at: float, keep: int, max_tracked: int
) -> None:
    """The statements of :meth:`SharedState.add_failure`, in a transaction already begun."""
    conn.execute("INSERT INTO sign_in_failures VALUES (?, ?)", (key, at))
    conn.execute(
        "DELETE FROM sign_in_failures WHERE key = ? AND rowid NOT IN "
        "(SELECT rowid FROM sign_in_failures WHERE key = ? ORDER BY at DESC LIMIT ?)",
        (key, key, keep),
    )
    (tracked,) = conn.execute("SELECT count(DISTINCT key) FROM sign_in_failures").fetchone()
    if tracked > max_tracked:
        conn.execute(
            "DELETE FROM sign_in_failures WHERE key IN (SELECT key FROM "
            "sign_in_failures GROUP BY key ORDER BY max(at) LIMIT ?)",
            (tracked - max_tracked,),
        )
