"""The console's parts without a browser: error-record pages, progress, sessions."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrock.access.credfile import LiveDirectory
from batchrock.console import outputs
from batchrock.console.progress import progress
from batchrock.console.sessions import SESSION_SECONDS, Sessions, SignInRefused
from batchrock.jobs import Counters, Job, JobEvent, JobStatus
from batchrock.objects import LocalObjectStore
from batchrock.settings import Settings
from batchrock.store.sqlite import SqliteStore
from tests.access.conftest import ALICE, ALICE_API_KEY, BOB, credentials_text, write_credentials
from tests.api.wire import asgi_call

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(**changes: Any) -> Job:
    base = Job(
        job_id="abcdefabcdef",
        account_id="123456789012",
        region="us-east-1",
        name="j",
        model_id="m",
        role_arn="arn:aws:iam::123456789012:role/r",
        submit_time=T0,
        last_modified_time=T0,
        input_s3_uri="s3://bucket/in/",
        output_s3_uri="s3://bucket/out/",
        expiration_time=T0 + timedelta(hours=24),
    )
    return base.evolve(**changes)


def line(i: int, error: bool) -> bytes:
    record: dict[str, Any] = {"recordId": f"R{i}", "modelInput": {"i": i}}
    if error:
        record["error"] = {"errorCode": 500, "errorMessage": f"failed {i}"}
    else:
        record["modelOutput"] = {"ok": True}
    return orjson.dumps(record) + b"\n"


def test_error_records_page_through_files_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "s3" / "bucket" / "out" / "abcdefabcdef"
    folder.mkdir(parents=True)
    # a.jsonl.out: every third record failed (17 errors); b.jsonl.out: 10 errors, no newline
    # at the end; the manifest is no record file.
    (folder / "a.jsonl.out").write_bytes(b"".join(line(i, i % 3 == 0) for i in range(50)))
    (folder / "b.jsonl.out").write_bytes(b"".join(line(i, True) for i in range(100, 110))[:-1])
    (folder / "manifest.json.out").write_bytes(b'{"error": {"errorCode": 1}}')
    store = LocalObjectStore(tmp_path / "s3")

    async def pages() -> list[list[tuple[str, int, str | None]]]:
        out = []
        cursor = None
        while True:
            page = await outputs.error_records(store, job(), cursor)
            out.append([(r.file, r.line, r.record_id) for r in page.records])
            if page.next is None:
                return out
            cursor = page.next

    got = asyncio.run(pages())
    flat = [r for page in got for r in page]
    expected = [("a.jsonl.out", i + 1, f"R{i}") for i in range(50) if i % 3 == 0]
    expected += [("b.jsonl.out", i - 99, f"R{i}") for i in range(100, 110)]
    assert flat == expected
    assert [len(p) for p in got] == [20, 7]

    with pytest.raises(ValueError):
        asyncio.run(outputs.error_records(store, job(), "0:x:1"))


def test_output_files_are_the_jobs_own(tmp_path: Path) -> None:
    root = tmp_path / "s3" / "bucket" / "out"
    (root / "abcdefabcdef" / "sub").mkdir(parents=True)
    (root / "abcdefabcdef" / "sub" / "a.jsonl.out").write_bytes(b"x\n")
    (root / "abcdefabcdef" / "manifest.json.out").write_bytes(b"{}")
    (root / "abcdefabcdef0" / "other.out").parent.mkdir(parents=True)
    (root / "abcdefabcdef0" / "other.out").write_bytes(b"y\n")  # a longer job id's folder
    store = LocalObjectStore(tmp_path / "s3")
    files = asyncio.run(outputs.output_files(store, job()))
    assert [f.key for f in files] == ["sub/a.jsonl.out", "manifest.json.out"]
    assert asyncio.run(outputs.find_output(store, job(), "../abcdefabcdef0/other.out")) is None


def test_progress_rate_and_time_left() -> None:
    events = [
        JobEvent("abcdefabcdef", None, JobStatus.SUBMITTED, T0),
        JobEvent("abcdefabcdef", JobStatus.SCHEDULED, JobStatus.IN_PROGRESS, T0),
    ]
    running = job(status=JobStatus.IN_PROGRESS, counters=Counters(total=1000, processed=250))
    p = progress(running, events, T0 + timedelta(seconds=10))
    assert (p.fraction, p.records_per_second, p.seconds_left) == (0.25, 25.0, 30.0)
    done = running.evolve(
        status=JobStatus.COMPLETED,
        counters=Counters(total=1000, processed=1000),
        end_time=T0 + timedelta(seconds=20),
    )
    p = progress(done, events, T0 + timedelta(hours=1))
    assert (p.fraction, p.records_per_second, p.seconds_left) == (1.0, 50.0, None)
    p = progress(job(), events[:1], T0)
    assert (p.fraction, p.records_per_second, p.seconds_left) == (None, None, None)


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _sessions(tmp_path: Path, settings: Settings, directory: Any, ticks: Ticks) -> Sessions:
    store = SqliteStore.open_sync(tmp_path / "jobs.sqlite3")
    return Sessions(settings, directory, store.sessions, lambda: T0 + timedelta(seconds=ticks()))


def test_sessions_follow_the_credentials_file(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / "credentials.toml")
    ticks = Ticks()
    directory = LiveDirectory(path, interval=0, monotonic=ticks)
    sessions = _sessions(tmp_path, Settings(credentials_file=path), directory, ticks)

    async def main() -> None:
        with pytest.raises(SignInRefused):
            await sessions.sign_in(ALICE.access_key_id, "wrong", None)
        with pytest.raises(SignInRefused):
            await sessions.sign_in("AKIANOSUCHKEY0000000", ALICE.secret, None)
        with pytest.raises(SignInRefused):
            await sessions.sign_in(None, None, "ABSK" + "x" * 40)
        alice = await sessions.sign_in(ALICE.access_key_id, ALICE.secret, None)
        by_api_key = await sessions.sign_in(None, None, ALICE_API_KEY)
        bob = await sessions.sign_in(BOB.access_key_id, BOB.secret, None)
        assert "secret" not in repr(alice) and ALICE.secret not in repr(alice)
        for session, account in ((alice, ALICE.account), (by_api_key, ALICE.account)):
            who = await sessions.identity(session)
            assert who is not None and who.caller.account_id == account
        found = await sessions.session(alice.token)
        assert found is not None and found.credential == alice.credential
        assert not alice.csrf_ok(None) and not alice.csrf_ok(bob.csrf) and alice.csrf_ok(alice.csrf)
        # The store holds neither a cookie's token nor an API key.
        dump = "\n".join((tmp_path / "jobs.sqlite3").read_bytes().decode("latin-1").split("\0"))
        for secret in (alice.token, by_api_key.token, ALICE_API_KEY, alice.csrf):
            assert secret not in dump

        # Alice's key leaves the file: her session ends at its next request; Bob's goes on.
        # Inside a loop the file is re-read in a thread: one that looked before the edit
        # ends first, then one looks after it.
        await directory.settled()
        path.write_text(credentials_text(keys=(BOB,), api_keys={}))
        ticks.now += 1
        await directory.settled()
        assert await sessions.identity(alice) is None
        assert await sessions.session(alice.token) is None
        assert await sessions.identity(by_api_key) is None
        assert await sessions.identity(bob) is not None
        # Sessions end after their lifetime.
        ticks.now += SESSION_SECONDS
        assert await sessions.session(bob.token) is None

    asyncio.run(main())


def test_open_mode_sessions_are_the_default_account(tmp_path: Path) -> None:
    settings = Settings(default_account_id="000000000042")
    sessions = _sessions(tmp_path, settings, None, Ticks())

    async def main() -> None:
        session = await sessions.sign_in(None, None, None)
        who = await sessions.identity(session)
        assert who is not None and who.caller.account_id == "000000000042"
        assert who.principal is None
        name, value = sessions.cookie_header(session, secure=False)
        assert name == b"set-cookie"
        assert b"HttpOnly" in value and b"SameSite=Strict" in value and b"Secure" not in value
        assert b"Secure" in sessions.cookie_header(session, secure=True)[1]

    asyncio.run(main())


@pytest.mark.parametrize(
    ("sizes", "limit", "expected"),
    [
        ([4, 4, 4], None, 12),
        ([4, 4, 4], 8, 8),  # the limit falls on a chunk's end
        ([4, 4, 4], 6, 6),
        ([], 6, 0),
    ],
)
def test_streamed_files_stop_at_the_limit(
    sizes: list[int], limit: int | None, expected: int
) -> None:
    from batchrock.console import web

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def chunks() -> Any:
        for n in sizes:
            yield b"x" * n

    asyncio.run(web.send_stream(send, [], chunks(), limit))
    assert sent[0]["type"] == "http.response.start"
    bodies = sent[1:]
    assert sum(len(m["body"]) for m in bodies) == expected
    # Exactly one message ends the answer, and it is the last.
    assert [m.get("more_body", False) for m in bodies] == [True] * (len(bodies) - 1) + [False]


def test_switching_region_and_account(tmp_path: Path) -> None:
    from batchrock.console.sessions import Session

    sessions = _sessions(tmp_path, Settings(), None, Ticks())

    async def main() -> None:
        session = await sessions.open_session()
        await sessions.switch(session, "eu-central-2", "444455556666")
        # Kept in the store: the next request (on any API process) sees it.
        again = await sessions.session(session.token)
        assert again is not None
        who = await sessions.identity(again)
        assert who is not None and (who.caller.account_id, who.caller.region) == (
            "444455556666",
            "eu-central-2",
        )
        for region, account in (("us-east", None), ("US-EAST-1", None), ("us-east-1", "12345")):
            with pytest.raises(ValueError):
                await sessions.switch(session, region, account)
        signed = Session(token="t", expires=T0, credential=("key", "AKIA"), account_id="1")
        with pytest.raises(ValueError, match="own account"):
            await sessions.switch(signed, "us-east-1", "444455556666")

    asyncio.run(main())


def asgi_post(app: Any, path: str, body: bytes, scheme: str = "http") -> tuple[int, bytes]:
    """One POST through the whole ASGI app (guard included), in process, as ``scheme``."""

    def app_as(scope: Any, receive: Any, send: Any) -> Any:
        return app({**scope, "scheme": scheme}, receive, send)

    headers = (("host", "10.1.2.3:8765"), ("content-type", "application/json"))
    reply = asyncio.run(asgi_call(app_as, "POST", path, headers=headers, body=body))
    return reply.status, reply.body


def test_sign_in_beyond_loopback_needs_tls(tmp_path: Path) -> None:
    from batchrock.api.app import BedrockApp
    from batchrock.clock import FakeClock
    from batchrock.service import JobService
    from batchrock.store.sqlite import SqliteStore

    path = write_credentials(tmp_path / "credentials.toml")
    settings = Settings(host="0.0.0.0", credentials_file=path, data_dir=tmp_path / "data")
    store = asyncio.run(SqliteStore.open(tmp_path / "s.sqlite3"))
    try:
        app = BedrockApp(JobService(store, FakeClock(T0)), settings)
        body = orjson.dumps({"accessKeyId": ALICE.access_key_id, "secretAccessKey": ALICE.secret})
        status, payload = asgi_post(app, "/console/api/session", body)
        assert status == 403
        assert b"--tls-cert" in payload
        status, payload = asgi_post(app, "/console/api/session", body, scheme="https")
        assert status == 200
        assert orjson.loads(payload)["account"] == ALICE.account
    finally:
        asyncio.run(store.close())


def test_failed_sign_ins_are_limited_per_source_and_per_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After MAX_FAILURES refused sign-ins in the window, a source (any key) and a key (any
    source) get 429, the right secret too, until the window moves on (the Clock seam)."""
    from batchrock.access.signin_limit import MAX_FAILURES, WINDOW_SECONDS
    from batchrock.api.app import BedrockApp
    from batchrock.clock import FakeClock
    from batchrock.service import JobService
    from batchrock.store.sqlite import SqliteStore

    path = write_credentials(tmp_path / "credentials.toml")
    settings = Settings(credentials_file=path, data_dir=tmp_path / "data")
    clock = FakeClock(T0)
    store = asyncio.run(SqliteStore.open(tmp_path / "s.sqlite3"))

    def sign_in(app: Any, source: str, **body: str) -> tuple[int, bytes]:
        def app_from(scope: Any, receive: Any, send: Any) -> Any:
            return app({**scope, "client": (source, 50000)}, receive, send)

        headers = (("host", "127.0.0.1:8765"), ("content-type", "application/json"))
        reply = asyncio.run(
            asgi_call(app_from, "POST", "/console/api/session", headers=headers,
                      body=orjson.dumps(body))
        )  # fmt: skip
        return reply.status, reply.body

    alice = {"accessKeyId": ALICE.access_key_id, "secretAccessKey": ALICE.secret}
    wrong = {"accessKeyId": ALICE.access_key_id, "secretAccessKey": "wrong-secret-xyz"}
    try:
        app = BedrockApp(JobService(store, clock), settings)
        caplog.set_level("INFO", logger="batchrock.console")
        for _ in range(MAX_FAILURES):
            assert sign_in(app, "10.0.0.1", **wrong)[0] == 401
        # Alice's key is now limited from anywhere, the right secret included.
        status, body = sign_in(app, "10.0.0.2", **alice)
        assert status == 429, body
        assert orjson.loads(body)["code"] == "TooManySignInAttempts"
        # And the source is limited for any key.
        bob = {"accessKeyId": BOB.access_key_id, "secretAccessKey": BOB.secret}
        assert sign_in(app, "10.0.0.1", **bob)[0] == 429
        # Another source with another key is not.
        assert sign_in(app, "10.0.0.3", **bob)[0] == 200
        # API keys count too, per key (kept as a digest), from their source.
        for i in range(MAX_FAILURES):
            assert sign_in(app, f"10.0.1.{i}", apiKey="ABSK" + "y" * 40)[0] == 401
        assert sign_in(app, "10.0.2.1", apiKey="ABSK" + "y" * 40)[0] == 429
        assert sign_in(app, "10.0.2.1", apiKey=ALICE_API_KEY)[0] == 200
        # The window moves on with the clock: Alice signs in again.
        clock.advance(WINDOW_SECONDS)
        status, body = sign_in(app, "10.0.0.1", **alice)
        assert status == 200, body
        logged = caplog.text
        assert "too many failed attempts" in logged and "10.0.0.1" in logged
        assert ALICE.secret not in logged and "wrong-secret-xyz" not in logged
        assert "y" * 40 not in logged and ALICE_API_KEY not in logged
    finally:
        asyncio.run(store.close())


def test_the_sign_in_limiter_is_bounded_and_slides() -> None:
    from batchrock.access.signin_limit import SignInLimiter

    ticks = Ticks()
    limiter = SignInLimiter(ticks, max_failures=3, window_seconds=10, max_tracked=5)
    for _ in range(3):
        assert limiter.retry_after(["a"]) is None
        limiter.failed(["a"])
        ticks.now += 2  # failures at 0, 2, 4
    assert limiter.retry_after(["a"]) == 4  # at 6: the first leaves the window at 10
    ticks.now = 10
    assert limiter.retry_after(["a"]) is None  # two left in the window
    limiter.failed(["a"])
    assert limiter.retry_after(["a"]) == 2  # the one at 2 leaves at 12
    # At most max_tracked names: the oldest are forgotten first.
    for i in range(10):
        limiter.failed([f"s{i}"])
    assert len(limiter._failures) == 5
    assert limiter.retry_after(["a"]) is None


def test_recent_rate_after_a_restart() -> None:
    """A job taken over after a restart stayed InProgress through the downtime, and its
    counters hold the earlier process's records: the history's estimate is far off; the
    console's own reads over the last minute give the rate it runs at now."""
    from batchrock.console.progress import RATE_WINDOW_S, RecentRates, with_recent_rate

    events = [JobEvent("abcdefabcdef", JobStatus.SCHEDULED, JobStatus.IN_PROGRESS, T0)]
    ticks = Ticks()
    rates = RecentRates(ticks)
    # Ran 1000 records in its first 10 s, then the server was down for an hour.
    now = T0 + timedelta(hours=1, seconds=10)
    running = job(status=JobStatus.IN_PROGRESS, counters=Counters(total=5000, processed=1000))
    p = progress(running, events, now)
    assert p.records_per_second is not None and p.records_per_second < 0.3
    assert with_recent_rate(p, running, rates.sample("j", 1000)) == p  # one read: no rate yet
    ticks.now += 1
    assert rates.sample("j", 1100) is None  # under RATE_MIN_SPAN_S
    ticks.now += 1
    rate = rates.sample("j", 1200)
    assert rate == 100.0
    fixed = with_recent_rate(p, running.evolve(counters=Counters(total=5000, processed=1200)), rate)
    assert (fixed.records_per_second, fixed.seconds_left) == (100.0, 38.0)
    # Only the last minute counts: it slowed to 10 a second.
    for _ in range(int(RATE_WINDOW_S) + 5):
        ticks.now += 1
        last = rates.sample("j", 1200 + 10 * int(ticks.now - 2))
    assert last is not None and abs(last - 10.0) < 0.5
    # Counters that go back start the samples over; a finished job's rate is the history's.
    assert rates.sample("j", 5) is None
    done = running.evolve(status=JobStatus.COMPLETED)
    assert with_recent_rate(p, done, 100.0) == p


def test_refused_sign_ins_are_logged_a_bounded_number_of_times(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Failed sign-ins are bounded per address and per key (then 429), but each wrote a
    line: a client with many addresses wrote one per attempt, and one past its limit a
    warning per attempt, with no end. Now each kind is logged 3 an address and 10 in all a
    window (batchrock.logs.BoundedWarnings), the rest summed up when the window ends. An
    access key id no account holds is not logged (it may be a secret in the wrong field)."""
    from batchrock.access.signin_limit import MAX_FAILURES
    from batchrock.api.app import BedrockApp
    from batchrock.clock import FakeClock
    from batchrock.service import JobService

    path = write_credentials(tmp_path / "credentials.toml")
    settings = Settings(credentials_file=path, data_dir=tmp_path / "data")

    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "s.sqlite3")
        app = BedrockApp(JobService(store, FakeClock(T0)), settings)

        async def sign_in(source: str, **body: str) -> int:
            def app_from(scope: Any, receive: Any, send: Any) -> Any:
                return app({**scope, "client": (source, 50000)}, receive, send)

            headers = (("host", "127.0.0.1:8765"), ("content-type", "application/json"))
            reply = await asgi_call(
                app_from, "POST", "/console/api/session", headers=headers,
                body=orjson.dumps(body),
            )  # fmt: skip
            return reply.status

        try:
            caplog.set_level("INFO", logger="batchrock.console")
            wrong_secret = {"accessKeyId": ALICE.access_key_id, "secretAccessKey": "wrong-xyz"}
            assert await sign_in("10.0.0.9", **wrong_secret) == 401
            for i in range(200):  # a different key and address each: no limit is reached
                wrong = {"accessKeyId": f"AKIAGUESS{i:011d}", "secretAccessKey": "wrong-xyz"}
                assert await sign_in(f"2001:db8::{i:x}", **wrong) == 401
            for i in range(MAX_FAILURES):
                assert await sign_in("10.0.0.1", apiKey=f"ABSK{i:040d}") == 401
            for _ in range(100):  # past the limit, each attempt is refused 429
                assert await sign_in("10.0.0.1", apiKey="ABSK" + "z" * 40) == 429
            messages = [r.getMessage() for r in caplog.records]
            refused = [m for m in messages if m.startswith("console sign-in refused")]
            assert len(refused) == 10, len(refused)  # before: 210
            assert refused[0] == (
                f"console sign-in refused from 10.0.0.9: {ALICE.access_key_id}; answered 401"
            )
            # An id no account holds may be a secret in the wrong field: not logged.
            assert refused[1] == (
                "console sign-in refused from 2001:db8::0: an unknown access key id; answered 401"
            )
            throttled = [m for m in messages if "too many failed attempts" in m]
            assert len(throttled) == 3, len(throttled)  # before: 100
            assert throttled[0] == (
                "console sign-in from 10.0.0.1: refused: too many failed attempts; answered 429"
            )
            app.console.refused_log.summarize()  # the window's end (its timer's call)
            app.console.throttled_log.summarize()
            summaries = {
                vars(r)["action"]: r for r in caplog.records if "count" in vars(r)
            }  # fmt: skip
            refused_summary = summaries["console_sign_ins_refused_summary"]
            assert refused_summary.levelno == logging.INFO
            assert vars(refused_summary)["count"] == 201  # 191 guesses, the 10 from 10.0.0.1
            assert refused_summary.getMessage().startswith(
                "201 more console sign-ins refused in the last 60 s, not logged one by one: "
                "10 from 10.0.0.1, "
            ), refused_summary.getMessage()
            throttled_summary = summaries["console_sign_ins_throttled_summary"]
            assert throttled_summary.levelno == logging.WARNING
            assert throttled_summary.getMessage() == (
                "97 more console sign-ins throttled in the last 60 s, not logged one by one: "
                "97 from 10.0.0.1; most for: refused: too many failed attempts; answered 429 (97)"
            )
            assert "wrong-xyz" not in caplog.text and "ABSK" not in caplog.text
            assert "AKIAGUESS" not in caplog.text
        finally:
            await store.close()

    asyncio.run(main())


def test_a_busy_database_is_a_429_on_the_console_not_a_500(tmp_path: Path) -> None:
    """Signing in writes the session to the store: with another connection holding the
    database's lock for longer than the store waits, the console answers the API's busy
    ThrottlingException (429, nothing done) and the next try, once free, signs in."""
    from batchrock.api.app import BedrockApp
    from batchrock.clock import FakeClock
    from batchrock.service import JobService
    from batchrock.store.sqlite import SqliteStore
    from tests.api.test_store_busy import ExclusiveLock

    async def main() -> None:
        path = tmp_path / "s.sqlite3"
        store = await SqliteStore.open(path, busy_timeout=0.05)
        try:
            app = BedrockApp(JobService(store, FakeClock(T0)), Settings(data_dir=tmp_path / "d"))
            headers = (("host", "127.0.0.1:8765"), ("content-type", "application/json"))
            lock = ExclusiveLock(path)
            try:
                busy = await asgi_call(
                    app, "POST", "/console/api/session", headers=headers, body=b"{}"
                )
            finally:
                lock.release()
            assert busy.status == 429, busy.body
            assert orjson.loads(busy.body)["code"] == "ThrottlingException"
            again = await asgi_call(
                app, "POST", "/console/api/session", headers=headers, body=b"{}"
            )
            assert again.status == 200, again.body
        finally:
            await store.close()

    asyncio.run(main())
