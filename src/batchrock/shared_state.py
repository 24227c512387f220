"""What the API processes of one ``batchrock serve`` must agree on (setting ``api_processes``):
the console's failed sign-ins, the API's wrong signatures and the per-account rate limit's
buckets (console sessions live in the job store, store/sessions.py, valid on every API
process and host).

With one process these live in its memory. With several, a browser's next request, or an
account's next call, may reach any of them, so they live in one small SQLite file instead,
private to the user like everything in the data dir, made afresh when ``serve`` starts (a
restart forgets them) and removed when it ends. Nothing in it is a secret that works
elsewhere: failed sign-ins are kept under what :mod:`batchrock.console.signin_limit` counts.

Every call is one short transaction (microseconds) run on the event loop; SQLite waits at
most :data:`BUSY_SECONDS` for another process's lock, and a call that still finds the file
locked raises :class:`SharedStateBusy` (the rate limit then lets the request through, with a
warning; the console answers that the service is busy).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: How long a call may wait for another process's lock (it holds the event loop meanwhile).
BUSY_SECONDS = 0.005

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sign_in_failures (key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sign_in_failures_key ON sign_in_failures (key, at);
CREATE TABLE IF NOT EXISTS buckets (
    account_id TEXT PRIMARY KEY, tokens REAL NOT NULL, at REAL NOT NULL
);
"""


class SharedStateBusy(Exception):
    """Another API process held the shared file for longer than :data:`BUSY_SECONDS`."""


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class SharedState:
    """The shared file of one ``serve``'s API processes; each process opens its own
    connection (:meth:`open`) after the fork."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection; the console's file reads use threads

    @classmethod
    def create(cls, path: Path) -> SharedState:
        """Make the file afresh (before forking): the schema, nothing in it."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        state = cls(path)
        with state._transaction() as conn:
            conn.execute("SELECT 1")
        state.close()
        return state

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                str(self.path), isolation_level=None, timeout=BUSY_SECONDS,
                check_same_thread=False,
            )  # fmt: skip
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = OFF")  # lost with the server anyway
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
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
            try:
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # pragma: no cover - WAL commits don't wait
                conn.execute("ROLLBACK")
                raise SharedStateBusy(str(exc)) from exc

    # --- failed sign-ins ------------------------------------------------------------------

    def recent_failures(self, key: str, since: float) -> list[float]:
        """When ``key``'s failures within the window (after ``since``) happened, oldest first.

        A read without the write lock: the API asks it on every signed request (a key's
        older failures are dropped by :meth:`add_failure`, which keeps its latest few)."""
        with self._lock:
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
        return [at for (at,) in rows]

    def add_failure(self, key: str, at: float, keep: int, max_tracked: int) -> None:
        """Count a failure of ``key``: its ``keep`` latest are kept, and at most
        ``max_tracked`` keys (the one failed longest ago is forgotten)."""
        with self._transaction() as conn:
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
