"""The console sessions seam (:mod:`batchrock.store.sessions`) on the PostgreSQL store's pool:
one table (migration 3 in :mod:`.pg_schema`)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from batchrock.clock import from_micros, to_micros
from batchrock.store.sessions import StoredSession

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
                "INSERT INTO console_sessions (session_id, expires_at, credential_kind, "
                "credential, account_id, region) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (session_id) DO UPDATE SET expires_at = excluded.expires_at, "
                "credential_kind = excluded.credential_kind, credential = excluded.credential, "
                "account_id = excluded.account_id, region = excluded.region",
                (
                    session.session_id,
                    to_micros(session.expires_at),
                    session.credential_kind,
                    session.credential,
                    session.account_id,
                    session.region,
                ),
            )

    async def get_session(self, session_id: str, *, now: datetime) -> StoredSession | None:
        row = await self._store._one(
            "SELECT session_id, expires_at, credential_kind, credential, account_id, region "
            "FROM console_sessions WHERE session_id = %s AND expires_at > %s",
            (session_id, to_micros(now)),
        )
        if row is None:
            return None
        return StoredSession(
            session_id=row[0],
            expires_at=from_micros(row[1]),
            credential_kind=row[2],
            credential=row[3],
            account_id=row[4],
            region=row[5],
        )

    async def update_session(self, session_id: str, *, account_id: str, region: str) -> None:
        async with self._store._tx() as conn:
            await conn.execute(
                "UPDATE console_sessions SET account_id = %s, region = %s WHERE session_id = %s",
                (account_id, region, session_id),
            )

    async def remove_session(self, session_id: str) -> None:
        async with self._store._tx() as conn:
            await conn.execute("DELETE FROM console_sessions WHERE session_id = %s", (session_id,))
