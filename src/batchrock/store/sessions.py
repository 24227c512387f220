"""The console sessions seam: who is signed in to the web console, in the job store, so that a
session opened on one API process is valid on every other (behind a load balancer).

A session is stored under the SHA-256 of its cookie's token (:func:`session_id`), never the
token: reading the database does not sign anyone in. What it acts as is named, not held: an
access key id, or the SHA-256 of a Bedrock API key, both looked up in the credentials file on
every request. Expired sessions are never returned, and are removed when the next one is
added. Contract: ``tests/contract/test_sessions.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from batchrock.clock import from_micros, to_micros

#: The columns of a stored session, in the order of :func:`session_row` and
#: :func:`session_from_row` (both stores' tables have them).
COLUMNS = "session_id, expires_at, credential_kind, credential, account_id, region"


def session_id(token: str) -> str:
    """The id a session is stored under: the SHA-256 (hex) of its cookie's token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSession:
    session_id: str
    expires_at: datetime
    #: ``"key"`` (an access key id), ``"api"`` (an API key's SHA-256) or ``None`` (open mode).
    credential_kind: str | None
    credential: str | None
    account_id: str
    #: The Region the console shows.
    region: str


def session_row(session: StoredSession) -> tuple[Any, ...]:
    """``session`` as the values of :data:`COLUMNS` (times in microseconds)."""
    return (
        session.session_id,
        to_micros(session.expires_at),
        session.credential_kind,
        session.credential,
        session.account_id,
        session.region,
    )


def session_from_row(row: Sequence[Any]) -> StoredSession:
    """A stored session from a row of :data:`COLUMNS`."""
    return StoredSession(
        session_id=row[0],
        expires_at=from_micros(row[1]),
        credential_kind=row[2],
        credential=row[3],
        account_id=row[4],
        region=row[5],
    )


class SessionStore(Protocol):
    async def add_session(self, session: StoredSession, *, now: datetime) -> None:
        """Insert ``session`` (an id that exists is replaced), and remove the sessions that
        expired by ``now``."""
        ...

    async def get_session(self, session_id: str, *, now: datetime) -> StoredSession | None:
        """The session, unless unknown or expired by ``now``."""
        ...

    async def update_session(self, session_id: str, *, account_id: str, region: str) -> None:
        """What the session shows (no-op for an unknown id)."""
        ...

    async def remove_session(self, session_id: str) -> None:
        """Sign out (no-op for an unknown id)."""
        ...
