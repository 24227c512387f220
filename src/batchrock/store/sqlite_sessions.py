"""The console sessions seam (:mod:`batchrock.store.sessions`) on the job store's SQLite
connection: one table, created with the job store's schema, written in the same
``BEGIN IMMEDIATE`` discipline and with the same typed errors (``sqlite._typed_errors``)."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from batchrock.clock import to_micros
from batchrock.store.sessions import COLUMNS, StoredSession, session_from_row, session_row
from batchrock.store.sqlite import _typed_errors, _write

SCHEMA = """
CREATE TABLE IF NOT EXISTS console_sessions (
    session_id       TEXT PRIMARY KEY,
    expires_at       INTEGER NOT NULL,
    credential_kind  TEXT,
    credential       TEXT,
    account_id       TEXT NOT NULL,
    region           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_expiry ON console_sessions (expires_at);
"""


class SqliteSessionStore:
    """:class:`batchrock.store.sessions.SessionStore` on one SQLite connection."""

    def __init__(self, conn: sqlite3.Connection, busy_timeout: float) -> None:
        self._conn = conn
        #: Read by ``_typed_errors``: how long a call waits for another connection's lock.
        self.busy_timeout = busy_timeout

    @_typed_errors
    async def add_session(self, session: StoredSession, *, now: datetime) -> None:
        with _write(self._conn):
            self._conn.execute(
                "DELETE FROM console_sessions WHERE expires_at <= ?", (to_micros(now),)
            )
            self._conn.execute(
                f"INSERT OR REPLACE INTO console_sessions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                session_row(session),
            )

    @_typed_errors
    async def get_session(self, session_id: str, *, now: datetime) -> StoredSession | None:
        row = self._conn.execute(
            f"SELECT {COLUMNS} FROM console_sessions WHERE session_id = ? AND expires_at > ?",
            (session_id, to_micros(now)),
        ).fetchone()
        return None if row is None else session_from_row(row)

    @_typed_errors
    async def update_session(self, session_id: str, *, account_id: str, region: str) -> None:
        with _write(self._conn):
            self._conn.execute(
                "UPDATE console_sessions SET account_id = ?, region = ? WHERE session_id = ?",
                (account_id, region, session_id),
            )

    @_typed_errors
    async def remove_session(self, session_id: str) -> None:
        with _write(self._conn):
            self._conn.execute("DELETE FROM console_sessions WHERE session_id = ?", (session_id,))
