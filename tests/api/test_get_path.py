"""GetModelInvocationJob's own path (``BedrockApp._get_job``) answers exactly what the generic
route, validation and handler answer: the same status, headers and bytes, the same log line
and metrics, for every kind of identifier; a GET without a body is answered without waiting
for one; and the model still says what the path assumes (its route, and that a bare job id
meets jobIdentifier's constraints)."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

import batchrock.api.app as app_module
from batchrock.api import model, validation
from batchrock.api.app import BedrockApp
from batchrock.clock import FakeClock
from batchrock.service import JobService
from batchrock.settings import Settings
from batchrock.store.sqlite import SqliteStore
from tests.api.test_store_busy import create_body
from tests.api.wire import Reply, asgi_call

ACCOUNT = "111111111111"
OTHER = "222222222222"


def auth(account: str, region: str = "us-east-1") -> tuple[str, str]:
    return (
        "authorization",
        f"AWS4-HMAC-SHA256 Credential={account}/20261201/{region}/bedrock/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
    )


def comparable(reply: Reply) -> tuple[int, dict[str, str], bytes]:
    headers = dict(reply.headers)
    assert re.fullmatch(r"[0-9a-f-]{36}", headers.pop("x-amzn-requestid"))
    return reply.status, headers, reply.body


@pytest.mark.parametrize("rate_limited", [False, True])
def test_the_get_path_answers_as_the_generic_route(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    rate_limited: bool,
) -> None:
    # With a rate limit (one no request here reaches) the path waits on the limiter.
    limit = {"rate_limit_per_second": 1.0, "rate_limit_burst": 1000} if rate_limited else {}

    async def scenario() -> None:
        store = await SqliteStore.open(tmp_path / "db.sqlite3")
        try:
            app = BedrockApp(
                JobService(store, FakeClock(datetime(2026, 12, 1, tzinfo=UTC))),
                Settings(data_dir=tmp_path, max_body_bytes=1000, **limit),
            )
            assert (app._limiter is not None) == rate_limited
            mine = await asgi_call(
                app,
                "POST",
                "/model-invocation-job",
                headers=(("host", "127.0.0.1"), auth(ACCOUNT)),
                body=create_body("mine"),
            )
            arn = mine.json()["jobArn"]
            job_id = arn.rsplit("/", 1)[-1]
            other_region_arn = arn.replace(":us-east-1:", ":eu-west-1:")
            cases: list[tuple[str, tuple[tuple[str, str], ...], bytes]] = [
                (job_id, (auth(ACCOUNT),), b""),
                (quote(arn, safe=""), (auth(ACCOUNT),), b""),
                (quote(other_region_arn, safe=""), (auth(ACCOUNT),), b""),
                # Again, and the bare id with another account: identifiers read before.
                (quote(arn, safe=""), (auth(ACCOUNT),), b""),
                (quote(other_region_arn, safe=""), (auth(ACCOUNT),), b""),
                (quote(arn, safe=""), (auth(OTHER),), b""),
                ("NotAJobId", (auth(ACCOUNT),), b""),
                (job_id, (auth(OTHER),), b""),  # another account's job: not found
                (job_id, (auth(ACCOUNT, "eu-west-1"),), b""),  # another region's
                ("zzzzzzzzzzzz", (auth(ACCOUNT),), b""),  # no such job
                ("NotAJobId", (auth(ACCOUNT),), b""),  # the model's pattern refuses it
                ("%20", (auth(ACCOUNT),), b""),
                ("a" * 1100, (auth(ACCOUNT),), b""),  # longer than the model allows
                (quote("arn:aws:bedrock:us-east-1:" + "٣" * 12, safe=""), (auth(ACCOUNT),), b""),
                (job_id, (), b""),  # no credentials: the default account
                (job_id, (auth(ACCOUNT),), b"ignored"),  # a body, read and ignored
                (job_id, (auth(ACCOUNT),), b"x" * 1001),  # a body over the limit: 413
                (job_id, (auth(ACCOUNT), ("origin", "http://elsewhere.example")), b""),
            ]

            presigned = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=" + quote(
                f"{ACCOUNT}/20261201/us-east-1/bedrock/aws4_request", safe=""
            )

            def requests() -> list[tuple[int, str, tuple[tuple[str, str], ...], bytes, bool, str]]:
                """Each case (and its place), each without a body also without Content-Length
                (as SDKs send a GET: then the path waits for nothing), each of the bare id's
                also presigned (the caller from the query when no header decides it)."""
                made = []
                for place, (label, headers, body) in enumerate(cases):
                    for content_length in (True, False) if not body else (True,):
                        for query in ("", presigned) if label == job_id else ("",):
                            made.append((place, label, headers, body, content_length, query))
                return made

            async def answers() -> list[tuple[int, dict[str, str], bytes]]:
                replies = []
                for _, label, headers, body, content_length, query in requests():
                    reply = await asgi_call(
                        app,
                        "GET",
                        f"/model-invocation-job/{label}",
                        query=query,
                        headers=(("host", "127.0.0.1"), *headers),
                        body=body,
                        content_length=content_length,
                    )
                    replies.append(comparable(reply))
                return replies

            def lines() -> list[str]:
                found = [
                    re.sub(r"in [0-9.]+ ms", "in _ ms", r.getMessage())
                    for r in caplog.records
                    if r.name == "batchrock.api"
                ]
                caplog.clear()
                return found

            def counts() -> dict[tuple[str, int], float]:
                return app.metrics.process.api_requests_answered()

            caplog.set_level(logging.INFO, logger="batchrock.api")
            caplog.clear()
            before = counts()
            fast = await answers()
            fast_lines = lines()
            fast_counts = {k: v - before.get(k, 0) for k, v in counts().items()}
            after_fast = counts()
            # The same requests through the route's walk, the generic validation and handler.
            monkeypatch.setattr(app_module, "_GET_PREFIX", "/never/")
            generic = await answers()
            generic_lines = lines()
            generic_counts = {k: v - after_fast.get(k, 0) for k, v in counts().items()}
            assert fast == generic
            assert fast_lines == generic_lines
            assert generic_counts == fast_counts
            statuses = [status for status, _, _ in fast]
            each = [200, 200, 404, 200, 404, 404, 400, 404, 404, 404, 400, 400, 400, 400]
            each += [404, 200, 413, 403]
            made = requests()
            # Without an Authorization header, the presigned query names the job's owner.
            assert statuses == [
                200 if query and not headers else each[place]
                for place, _, headers, _, _, query in made
            ]
            assert orjson.loads(fast[0][2])["jobArn"] == arn
            assert fast_counts[("GetModelInvocationJob", 200)] == statuses.count(200)
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_get_without_a_body_is_answered_without_waiting_for_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await SqliteStore.open(tmp_path / "db.sqlite3")
        try:
            app = BedrockApp(
                JobService(store, FakeClock(datetime(2026, 12, 1, tzinfo=UTC))),
                Settings(data_dir=tmp_path),
            )
            created = await asgi_call(
                app, "POST", "/model-invocation-job", body=create_body("polled")
            )
            job_id = created.json()["jobArn"].rsplit("/", 1)[-1]
            expected = await asgi_call(app, "GET", f"/model-invocation-job/{job_id}")
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                raise AssertionError("a request without a body was asked for one")

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "method": "GET",
                "scheme": "http",
                "path": f"/model-invocation-job/{job_id}",
                "raw_path": f"/model-invocation-job/{job_id}".encode(),
                "query_string": b"",
                "headers": [(b"host", b"127.0.0.1")],
            }
            await app(scope, receive, send)
            assert sent[0]["status"] == 200
            assert sent[1]["body"] == expected.body
        finally:
            await store.close()

    asyncio.run(scenario())


def test_the_model_says_what_the_get_path_assumes() -> None:
    # The route: a GET with one segment after the prefix is a Get, and no other operation's.
    gets = [(pattern, op) for method, pattern, op in model.routes() if method == "GET"]
    prefix = app_module._GET_PREFIX.strip("/")
    assert (["model-invocation-job", "{jobIdentifier}"], "GetModelInvocationJob") in gets
    assert [op for pattern, op in gets if len(pattern) == 2 and pattern[0] == prefix] == [
        "GetModelInvocationJob"
    ]
    # A bare job id meets jobIdentifier's constraints (length and pattern), which the path
    # skips for one.
    shape = model.operation("GetModelInvocationJob").input_shape
    validation.prepare([shape])
    for job_id in ("000000000000", "zzzzzzzzzzzz", "a1b2c3d4e5f6", "9" * 12):
        validation.validate(shape, {"jobIdentifier": job_id})
