"""Requests with a wrong SigV4 signature are bounded as failed console sign-ins are: per
client address and access key id, 10 within 5 minutes, then ThrottlingException (429) for
that address and key, right secret or wrong, until the oldest failure leaves the window; and
per address for any known key ids (50), except for keys that signed correctly from that
address; unknown key ids are not counted (docs/access.md, "Wrong signatures")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aws_bedrock_token_generator import BedrockTokenGenerator
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from batchrock.access.signin_limit import MAX_FAILURES, WINDOW_SECONDS
from batchrock.api.app import BedrockApp
from batchrock.api.openai.app import OpenAIApi
from batchrock.api.wrong_signatures import KNOWN_SECONDS, WrongSignatures
from batchrock.clock import FakeClock
from batchrock.objects.local import LocalObjectStore
from batchrock.service import JobService
from batchrock.settings import Settings
from batchrock.store.sqlite import SqliteStore
from tests.access.conftest import (
    ALICE,
    BOB,
    READER,
    Key,
    client,
    credentials_text,
    error_of,
    write_credentials,
)
from tests.api.wire import Reply, asgi_call

WRONG = "not-alice-secret-0000000000000000"
#: Known keys of one more account, to guess against from one address beyond one key's bound.
MANY = [Key("333333333333", f"AKIAMANY{i:012d}", f"many-secret-{i:028d}") for i in range(8)]


def _credentials(path: Path) -> Path:
    return write_credentials(path, credentials_text((ALICE, BOB, READER, *MANY)))


def _guess(i: int) -> Key:
    """The key of the ``i``-th wrong guess at MANY's secrets: 9 a key, under each one's bound."""
    return MANY[i // (MAX_FAILURES - 1)]


def test_wrong_signatures_are_throttled_per_address_and_key(
    server_factory: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With boto3 against a real server of two API processes: the guesses may reach either,
    and are counted together."""
    creds = write_credentials(tmp_path_factory.mktemp("creds") / "credentials.toml")
    server = server_factory(engine=False, credentials_file=creds, api_processes=2)
    guesser = client(server.url, secret=WRONG)
    for _ in range(MAX_FAILURES):
        assert error_of(guesser.list_model_invocation_jobs)[:2] == (
            "InvalidSignatureException",
            403,
        )
    code, status, message = error_of(guesser.list_model_invocation_jobs)
    assert (code, status) == ("ThrottlingException", 429)
    assert message.startswith(
        "Too many requests with a wrong signature for this access key from this address. Retry in "
    )
    # The right secret is refused alike from this address: no answer tells a guess apart.
    assert error_of(client(server.url).list_model_invocation_jobs)[:2] == (
        "ThrottlingException",
        429,
    )
    # Another key from the same address has its own count.
    assert client(server.url, BOB).list_model_invocation_jobs()["invocationJobSummaries"] == []
    assert error_of(client(server.url, BOB, secret=WRONG).list_model_invocation_jobs)[:2] == (
        "InvalidSignatureException",
        403,
    )
    logged = server.log_path.read_text()
    assert f"wrong signature from 127.0.0.1: access key {ALICE.access_key_id}" in logged
    assert WRONG not in logged and ALICE.secret not in logged and BOB.secret not in logged


def _signed(
    key: Key, secret: str, now: datetime, path: str = "/model-invocation-jobs"
) -> tuple[tuple[str, str], ...]:
    """Headers of a GET of ``path`` signed at ``now`` (the server's FakeClock time)."""
    request = AWSRequest("GET", f"http://127.0.0.1:8765{path}")
    auth = SigV4Auth(Credentials(key.access_key_id, secret), "bedrock", "us-east-1")
    with mock.patch("botocore.auth.get_current_datetime", lambda: now):
        auth.add_auth(request)
    return (("host", "127.0.0.1:8765"), *((k.lower(), v) for k, v in request.headers.items()))


class InProcess:
    """The real BedrockApp over a real SQLite store, on a FakeClock, called from any address."""

    def __init__(self, app: BedrockApp, clock: FakeClock) -> None:
        self.app = app
        self.clock = clock

    async def call(
        self,
        source: str,
        headers: tuple[tuple[str, str], ...],
        scheme: str = "http",
        path: str = "/model-invocation-jobs",
    ) -> Reply:
        async def from_source(scope: Any, receive: Any, send: Any) -> None:
            await self.app({**scope, "client": (source, 50000), "scheme": scheme}, receive, send)

        return await asgi_call(from_source, "GET", path, headers=headers)

    async def sigv4(self, source: str, secret: str) -> tuple[int, str]:
        reply = await self.call(source, _signed(ALICE, secret, self.clock.now()))
        return reply.status, reply.error_type


def _in_process(tmp_path: Path, test: Callable[[InProcess], Awaitable[None]]) -> None:
    creds = _credentials(tmp_path / "credentials.toml")

    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "db.sqlite3")
        clock = FakeClock(datetime.now(UTC))
        objects = LocalObjectStore(tmp_path / "s3")
        settings = Settings(data_dir=tmp_path, credentials_file=creds)
        service = JobService(store, clock)
        app = BedrockApp(service, settings)
        app.openai = OpenAIApi(service, objects, settings, app.gate)
        try:
            await test(InProcess(app, clock))
        finally:
            await objects.aclose()
            await store.close()

    asyncio.run(main())


def test_the_lockout_ends_with_the_window_and_other_addresses_are_not_locked_out(
    tmp_path: Path,
) -> None:
    """An address that guessed holds only itself off, and only until its oldest counted
    failure is WINDOW_SECONDS old (guesses refused meanwhile do not count, so they cannot
    stretch the window)."""

    async def test(server: InProcess) -> None:
        for _ in range(MAX_FAILURES):
            assert await server.sigv4("10.0.0.1", WRONG) == (403, "InvalidSignatureException")
        assert await server.sigv4("10.0.0.1", ALICE.secret) == (429, "ThrottlingException")
        # The key's holder elsewhere is not locked out by the guesser.
        assert await server.sigv4("10.0.0.2", ALICE.secret) == (200, "")
        server.clock.advance(WINDOW_SECONDS - 1)
        assert await server.sigv4("10.0.0.1", WRONG) == (429, "ThrottlingException")
        server.clock.advance(1)
        assert await server.sigv4("10.0.0.1", ALICE.secret) == (200, "")
        assert await server.sigv4("10.0.0.1", WRONG) == (403, "InvalidSignatureException")

    _in_process(tmp_path, test)


def test_the_throttled_answer_is_the_aws_shape(tmp_path: Path) -> None:
    async def test(server: InProcess) -> None:
        for _ in range(MAX_FAILURES):
            await server.sigv4("10.0.0.1", WRONG)
        reply = await server.call("10.0.0.1", _signed(ALICE, WRONG, server.clock.now()))
        assert reply.status == 429
        assert reply.headers["x-amzn-errortype"].startswith("ThrottlingException:")
        assert reply.json()["message"].endswith(f"Retry in {int(WINDOW_SECONDS) + 1} seconds.")
        # The OpenAI-compatible API answers it in OpenAI's shape.
        signed = _signed(ALICE, ALICE.secret, server.clock.now(), "/v1/batches")
        reply = await server.call("10.0.0.1", signed, path="/v1/batches")
        assert reply.status == 429
        assert reply.json()["error"]["type"] == "rate_limit_error"
        signed = _signed(ALICE, ALICE.secret, server.clock.now(), "/v1/batches")
        assert (await server.call("10.0.0.2", signed, path="/v1/batches")).status == 200

    _in_process(tmp_path, test)


def test_short_term_api_keys_with_a_wrong_signature_count_against_their_access_key(
    tmp_path: Path,
) -> None:
    """A short-term API key is a presigned request: forging one is guessing the secret of the
    access key it names, so it is counted as a wrong signature of that key."""
    generator = BedrockTokenGenerator()
    genuine = generator.get_token(Credentials(ALICE.access_key_id, ALICE.secret), "us-east-1")
    forged = generator.get_token(Credentials(ALICE.access_key_id, WRONG), "us-east-1")

    async def test(server: InProcess) -> None:
        def bearer(token: str) -> tuple[tuple[str, str], ...]:
            return (("host", "127.0.0.1:8765"), ("authorization", f"Bearer {token}"))

        for _ in range(MAX_FAILURES):
            reply = await server.call("10.0.0.1", bearer(forged), "https")
            assert (reply.status, reply.error_type) == (403, "UnrecognizedClientException")
        reply = await server.call("10.0.0.1", bearer(genuine), "https")
        assert (reply.status, reply.error_type) == (429, "ThrottlingException")
        # The same key's SigV4 requests from there too: one secret, one count.
        assert await server.sigv4("10.0.0.1", ALICE.secret) == (429, "ThrottlingException")
        assert (await server.call("10.0.0.2", bearer(genuine), "https")).status == 200

    _in_process(tmp_path, test)


def _unknown(i: int) -> Key:
    return Key("444444444444", f"AKIAUNKNOWN{i:09d}", "unknown-secret-000000000000000000000")


def test_one_address_guessing_many_keys_is_throttled_but_not_with_keys_it_used_rightly(
    server_factory: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With boto3 against a real server of two API processes: wrong secrets for any known keys
    from one address count together; past the bound every such request from it is 429, and so
    is a right one with a key not used rightly from there before, but the key a user there has
    been using keeps working."""
    creds = _credentials(tmp_path_factory.mktemp("creds") / "credentials.toml")
    per_address = 20
    server = server_factory(
        engine=False,
        credentials_file=creds,
        api_processes=2,
        wrong_signatures_per_address=per_address,
    )
    assert client(server.url).list_model_invocation_jobs()["invocationJobSummaries"] == []
    bob_guesses = MAX_FAILURES - 1  # under BOB's own bound from this address
    for _ in range(bob_guesses):
        assert error_of(client(server.url, BOB, secret=WRONG).list_model_invocation_jobs)[:2] == (
            "InvalidSignatureException",
            403,
        )
    for i in range(per_address - bob_guesses):
        guessed = client(server.url, _guess(i), secret=WRONG).list_model_invocation_jobs
        assert error_of(guessed)[:2] == ("InvalidSignatureException", 403)
    code, status, message = error_of(
        client(server.url, MANY[-1], secret=WRONG).list_model_invocation_jobs
    )
    assert (code, status) == ("ThrottlingException", 429)
    assert message.startswith(
        "Too many requests with a wrong signature from this address. Retry in "
    )
    # BOB's right secret is refused alike: BOB never signed rightly from here.
    assert error_of(client(server.url, BOB).list_model_invocation_jobs)[:2] == (
        "ThrottlingException",
        429,
    )
    # ALICE did: her requests go on, and a wrong secret for her is answered as it was.
    for _ in range(3):
        assert client(server.url).list_model_invocation_jobs()["invocationJobSummaries"] == []
    assert error_of(client(server.url, secret=WRONG).list_model_invocation_jobs)[:2] == (
        "InvalidSignatureException",
        403,
    )
    logged = server.log_path.read_text()
    # The first lines from the address (3 a window in each process: the rest are summed up).
    assert f"wrong signature from 127.0.0.1: access key {BOB.access_key_id}" in logged
    assert WRONG not in logged and BOB.secret not in logged and ALICE.secret not in logged
    assert MANY[0].secret not in logged


def test_unknown_key_ids_are_not_counted_so_a_rotated_out_key_locks_nobody_out(
    server_factory: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Clients still sending a key that was rotated out (an unknown key id) get
    UnrecognizedClientException however many they send, and a key never used from their
    address before (the one that replaced it) works from it at once; unknown ids are not
    logged."""
    creds = _credentials(tmp_path_factory.mktemp("creds") / "credentials.toml")
    server = server_factory(engine=False, credentials_file=creds, wrong_signatures_per_address=5)
    for i in range(3 * MAX_FAILURES):
        assert error_of(client(server.url, _unknown(i % 2)).list_model_invocation_jobs)[:2] == (
            "UnrecognizedClientException",
            403,
        )
    assert client(server.url, BOB).list_model_invocation_jobs()["invocationJobSummaries"] == []
    logged = server.log_path.read_text()
    assert "AKIAUNKNOWN" not in logged and "unknown-secret" not in logged


def test_the_address_lockout_ends_with_the_window_and_a_key_is_known_for_a_day(
    tmp_path: Path,
) -> None:
    async def test(server: InProcess) -> None:
        async def guess(source: str, key: Key) -> tuple[int, str]:
            reply = await server.call(source, _signed(key, WRONG, server.clock.now()))
            return reply.status, reply.error_type

        assert await server.sigv4("10.0.0.1", ALICE.secret) == (200, "")  # known from .1
        server.clock.advance(KNOWN_SECONDS)  # ... no longer
        for i in range(50):
            assert await guess("10.0.0.1", _guess(i)) == (403, "InvalidSignatureException")
        assert await guess("10.0.0.1", MANY[-1]) == (429, "ThrottlingException")
        assert await server.sigv4("10.0.0.1", ALICE.secret) == (429, "ThrottlingException")
        # Other addresses are not locked out, the guesser's address only for the window.
        assert await guess("10.0.0.2", MANY[-1]) == (403, "InvalidSignatureException")
        assert await server.sigv4("10.0.0.2", ALICE.secret) == (200, "")
        server.clock.advance(WINDOW_SECONDS - 1)
        assert await guess("10.0.0.1", MANY[-1]) == (429, "ThrottlingException")  # not counted
        server.clock.advance(1)
        assert await server.sigv4("10.0.0.1", ALICE.secret) == (200, "")
        assert await guess("10.0.0.1", MANY[-1]) == (403, "InvalidSignatureException")

    _in_process(tmp_path, test)


def test_the_address_lockout_on_the_openai_api_is_a_rate_limit_error(tmp_path: Path) -> None:
    async def test(server: InProcess) -> None:
        async def v1(source: str, key: Key, secret: str | None = None) -> int:
            signed = _signed(key, secret or key.secret, server.clock.now(), "/v1/batches")
            reply = await server.call(source, signed, path="/v1/batches")
            if reply.status == 429:
                assert reply.json()["error"]["type"] == "rate_limit_error"
            return reply.status

        assert await v1("10.0.0.1", ALICE) == 200
        for i in range(50):
            assert await v1("10.0.0.1", _guess(i), WRONG) in (401, 403)
        assert await v1("10.0.0.1", MANY[-1], WRONG) == 429
        assert await v1("10.0.0.1", BOB) == 429
        assert await v1("10.0.0.1", ALICE) == 200  # known from there

    _in_process(tmp_path, test)


def test_a_right_signature_is_remembered_once_a_minute_not_on_every_request() -> None:
    """With several API processes the record is a write to their shared file: not one for
    each request."""
    clock = FakeClock(datetime.now(UTC))
    bound = WrongSignatures(clock.monotonic, per_address=50)
    with mock.patch.object(bound._known, "failed", wraps=bound._known.failed) as record:
        for _ in range(100):
            bound.succeeded("10.0.0.1", ALICE.access_key_id)
        assert record.call_count == 1
        clock.advance(WrongSignatures.REMEMBER_EVERY)
        bound.succeeded("10.0.0.1", ALICE.access_key_id)
        bound.succeeded("10.0.0.2", ALICE.access_key_id)
        assert record.call_count == 3


def test_wrong_signatures_from_many_addresses_are_logged_a_bounded_number_of_times(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each address's wrong signatures are bounded (10 a key, 50 in all, then 429), but a
    client with many addresses (an IPv6 /64) is not: it wrote one INFO line for each. Now 3
    an address and 10 in all a window are logged one by one, and one line sums up the rest
    when the window ends; every request is still answered as before."""

    async def test(server: InProcess) -> None:
        caplog.set_level(logging.INFO, logger="batchrock.api")
        for _ in range(5):  # one address: its first 3 logged
            assert await server.sigv4("10.0.0.1", WRONG) == (403, "InvalidSignatureException")
        for i in range(300):
            source = f"2001:db8::{i:x}"
            assert await server.sigv4(source, WRONG) == (403, "InvalidSignatureException")
        for _ in range(MAX_FAILURES - 5):  # the per-key bound holds as before
            assert await server.sigv4("10.0.0.1", WRONG) == (403, "InvalidSignatureException")
        assert await server.sigv4("10.0.0.1", WRONG) == (429, "ThrottlingException")
        one_by_one = [r for r in caplog.records if r.getMessage().startswith("wrong signature")]
        assert len(one_by_one) == 10, len(one_by_one)  # before: 310
        assert all(r.levelno == logging.INFO for r in one_by_one)
        assert all(getattr(r, "action", "") == "wrong_signature" for r in one_by_one)
        first = [r.getMessage() for r in one_by_one]
        assert first[0] == f"wrong signature from 10.0.0.1: access key {ALICE.access_key_id}"
        assert first[2].endswith(" are counted, not logged one by one"), first
        assert first[3].startswith("wrong signature from 2001:db8::0: "), first
        assert first[9].startswith("wrong signature from 2001:db8::6: "), first
        assert "more in the next " in first[9], first
        server.app.gate.wrong_signature_log.summarize()  # the window's end (its timer's call)
        summaries = [
            r for r in caplog.records if getattr(r, "action", "") == "wrong_signatures_summary"
        ]
        assert len(summaries) == 1 and summaries[0].levelno == logging.INFO
        assert vars(summaries[0])["count"] == 300  # 7 from 10.0.0.1, 293 from the /64
        message = summaries[0].getMessage()
        assert message.startswith(
            "300 more wrong signatures in the last 60 s, not logged"
            " one by one: 7 from 10.0.0.1, 1 from 2001:db8::7, "
        ), message
        assert message.endswith(f"most for: access key {ALICE.access_key_id} (300)"), message
        assert WRONG not in caplog.text and ALICE.secret not in caplog.text

    _in_process(tmp_path, test)
