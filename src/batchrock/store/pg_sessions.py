"""The console sessions seam (:mod:`batchrock.store.sessions`) on the PostgreSQL store's pool:
one table (migration 3 in :mod:`.pg_schema`)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from batchrock.clock import to_micros
from batchrock.store.sessions import COLUMNS, StoredSession, session_from_row, session_row

if TYPE_CHECKING:
    from batchrock.store.postgres import PostgresStore

SCHEMA = """
CREATE TABLE console_sessions (
    session_id       text COLLATE "C" PRIMARY KEY,
    expires_at       bigint NOT NULL,
    credential_kind  text,
    credential       text,
    account_id       text NOT NULL,
    region           text NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
"""


class PostgresSessionStore:
    """:class:`batchrock.store.sessions.SessionStore` on the job store's connection pool."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def add_session(self, session: StoredSession, *, now: datetime) -> None:
        async with self._store._tx() as conn:
            await conn.execute(
                "DELETE FROM console_sessions WHERE expires_at <= %s", (to_micros(now),)
            )
            await conn.execute(
                f"INSERT INTO console_sessions ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (session_id) DO UPDATE SET expires_at = excluded.expires_at, "
                "credential_kind = excluded.credential_kind, credential = excluded.credential, "
                "account_id = excluded.account_id, region = excluded.region",
                session_row(session),
            )

    async def get_session(self, session_id: str, *, now: datetime) -> StoredSession | None:
        row = await self._store._one(
            f"SELECT {COLUMNS} FROM console_sessions WHERE session_id = %s AND expires_at > %s",
            (session_id, to_micros(now)),
        )
        return None if row is None else session_from_row(row)

    async def update_session(self, session_id: str, *, account_id: str, region: str) -> None:
        async with self._store._tx() as conn:
            await conn.execute(
                "UPDATE console_sessions SET account_id = %s, region = %s WHERE session_id = %s",
                (account_id, region, session_id),
            )

    async def remove_session(self, session_id: str) -> None:
        async with self._store._tx() as conn:
            await conn.execute("DELETE FROM console_sessions WHERE session_id = %s", (session_id,))
