"""The console sessions seam's contract (store/sessions.py): every store implementation runs
it, through the ``store`` and ``second_store`` fixtures (two connections, as two API processes
have), once per implementation in ``tests/stores.py`` STORE_FACTORIES."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batchrock.store.base import JobStore
from batchrock.store.sessions import StoredSession, session_id

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


def a_session(token: str, *, hours: float = 12, **changes: object) -> StoredSession:
    values: dict[str, object] = {
        "session_id": session_id(token),
        "expires_at": T0 + timedelta(hours=hours),
        "credential_kind": "key",
        "credential": "AKIAEXAMPLE000000001",
        "account_id": "111111111111",
        "region": "us-east-1",
    }
    values.update(changes)
    return StoredSession(**values)  # type: ignore[arg-type]


class TestSessionsContract:
    async def test_a_session_added_on_one_connection_is_seen_on_another(
        self, store: JobStore, second_store: JobStore
    ) -> None:
        alice = a_session("alice-token")
        await store.sessions.add_session(alice, now=T0)
        assert await second_store.sessions.get_session(alice.session_id, now=T0) == alice
        assert await second_store.sessions.get_session(session_id("other"), now=T0) is None
        # What it shows moves with it; unknown ids are no-ops.
        await second_store.sessions.update_session(
            alice.session_id, account_id="111111111111", region="eu-west-3"
        )
        await second_store.sessions.update_session("nope", account_id="1", region="x")
        got = await store.sessions.get_session(alice.session_id, now=T0)
        assert got is not None and got.region == "eu-west-3"
        # Signing out on one ends it on the other.
        await second_store.sessions.remove_session(alice.session_id)
        await second_store.sessions.remove_session("nope")
        assert await store.sessions.get_session(alice.session_id, now=T0) is None

    async def test_expired_sessions_are_not_returned_and_go_at_the_next_add(
        self, store: JobStore
    ) -> None:
        short = a_session("short", hours=1, credential_kind=None, credential=None)
        long = a_session("long", hours=24)
        await store.sessions.add_session(short, now=T0)
        await store.sessions.add_session(long, now=T0)
        an_hour = T0 + timedelta(hours=1)
        assert await store.sessions.get_session(short.session_id, now=an_hour) is None
        assert await store.sessions.get_session(short.session_id, now=T0) == short
        # The next sign-in removes it for good: even an earlier clock does not see it again.
        await store.sessions.add_session(a_session("next", hours=30), now=an_hour)
        assert await store.sessions.get_session(short.session_id, now=T0) is None
        assert await store.sessions.get_session(long.session_id, now=an_hour) == long

    async def test_an_id_added_again_is_replaced(self, store: JobStore) -> None:
        first = a_session("t", account_id="111111111111")
        await store.sessions.add_session(first, now=T0)
        again = a_session("t", account_id="222222222222", credential_kind="api", credential="ab")
        await store.sessions.add_session(again, now=T0)
        assert await store.sessions.get_session(first.session_id, now=T0) == again
