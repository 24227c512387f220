"""A seeded fuzz of signed requests: mutated Authorization headers, presigned query strings,
dates, paths and bodies. Nothing may answer 5xx, and nothing that differs from what was signed
may be accepted.

The app runs in-process (the real BedrockApp over a real SQLite store) so thousands of
requests take seconds; everything else about it is as `batchrock serve` runs it.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.utils import normalize_url_path

from batchrock.access.signin_limit import SignInLimiter
from batchrock.api.app import BedrockApp
from batchrock.api.wrong_signatures import WrongSignatures
from batchrock.clock import FakeClock
from batchrock.service import JobService
from batchrock.settings import Settings
from batchrock.store.sqlite import SqliteStore
from tests.access.conftest import ALICE, job_args, write_credentials
from tests.api.wire import asgi_call

HOST = "127.0.0.1:8765"
CASES_PER_SEED = 1000


@dataclass(frozen=True)
class Wire:
    method: str
    path: str  # raw, percent-encoded
    query: str  # raw
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


def _signed(method: str, path: str, query: str = "", body: bytes = b"") -> Wire:
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    headers = {"Content-Type": "application/json"} if body else {}
    request = AWSRequest(method, url, data=body, headers=headers)
    SigV4Auth(Credentials(ALICE.access_key_id, ALICE.secret), "bedrock", "us-east-1").add_auth(
        request
    )
    pairs = tuple((k.lower(), v) for k, v in request.headers.items())
    return Wire(method, path, query, (("host", HOST), *pairs), body)


def _presigned(path: str, query: str = "") -> Wire:
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    request = AWSRequest("GET", url, headers={"host": HOST})
    creds = Credentials(ALICE.access_key_id, ALICE.secret)
    SigV4QueryAuth(creds, "bedrock", "us-east-1", expires=300).add_auth(request)
    parts = urlsplit(request.url)
    return Wire("GET", parts.path, parts.query, (("host", HOST),), b"")


def _originals(job_arn: str) -> list[Wire]:
    arn_path = "/model-invocation-job/" + quote(job_arn, safe="")
    tag = json.dumps({"resourceARN": job_arn, "tags": [{"key": "k", "value": "v"}]}).encode()
    return [
        _signed("GET", "/model-invocation-jobs", "maxResults=5&nameContains=fuzz"),
        _signed("GET", arn_path),
        _signed("POST", "/model-invocation-job", body=json.dumps(job_args("fuzz")).encode()),
        _signed("POST", "/tagResource", body=tag),
        _presigned(arn_path),
        _presigned("/model-invocation-jobs", "statusEquals=Submitted&maxResults=2"),
    ]


# --- what counts as the same request ---------------------------------------------------------

_AUTH_PART = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]*)")


def _meaning(wire: Wire) -> tuple[Any, ...]:
    """What the signature vouches for, read independently of the server's code: a mutated
    request may only be accepted if this is unchanged."""
    query = sorted(
        (unquote_plus(k), unquote_plus(v))
        for k, _, v in (p.partition("=") for p in wire.query.split("&") if p)
    )
    auth = wire.header("authorization") or ""
    parts = sorted(_AUTH_PART.findall(auth))
    signed = dict(parts).get("SignedHeaders", "host")
    for name, value in query:
        if name == "X-Amz-SignedHeaders":
            signed = value
    headers = sorted((k, " ".join(v.split())) for k, v in wire.headers if k in signed.split(";"))
    # The router reads a path without its leading "/" as the same path, and so does the check.
    path = normalize_url_path(wire.path if wire.path.startswith("/") else "/" + wire.path)
    return (wire.method, path, query, auth and parts, headers, wire.body)


# --- mutations -----------------------------------------------------------------------------------

_ALPHABET = "abcdefxyzABCXYZ0189=,;/ %+-_.~:&?#\t\\\"'\x7f\u00e9"


def _flip(text: str, rng: random.Random) -> str:
    if not text:
        return rng.choice(_ALPHABET)
    i = rng.randrange(len(text))
    roll = rng.random()
    if roll < 0.4:
        return text[:i] + rng.choice(_ALPHABET) + text[i + 1 :]
    if roll < 0.7:
        return text[:i] + text[i + 1 :]
    if roll < 0.9:
        return text[:i] + rng.choice(_ALPHABET) + text[i:]
    return text[:i] + text[i:].upper()


def _set_header(wire: Wire, name: str, value: str | None) -> Wire:
    headers = [(k, v) for k, v in wire.headers if k != name]
    if value is not None:
        headers.append((name, value))
    return replace(wire, headers=tuple(headers))


def _mutate(wire: Wire, rng: random.Random) -> Wire:
    auth = wire.header("authorization")
    params = wire.query.split("&")
    choices: list[Callable[[], Wire]] = [
        lambda: replace(wire, path=_flip(wire.path, rng)),
        lambda: replace(wire, query=_flip(wire.query, rng)),
        lambda: replace(wire, body=_flip(wire.body.decode(), rng).encode()),
        lambda: replace(wire, method="POST" if wire.method == "GET" else "GET"),
        lambda: _set_header(wire, "host", _flip(HOST, rng)),
        lambda: _set_header(wire, "x-amz-date", _flip(wire.header("x-amz-date") or "", rng)),
        lambda: _set_header(wire, "x-amz-security-token", "IQoJb3JpZ2luX2VjE"),
        lambda: _set_header(wire, "x-unsigned-extra", "anything"),
        lambda: replace(
            wire, query="&".join(rng.sample(wire.query.split("&"), k=len(wire.query.split("&"))))
        ),
    ]
    if auth:
        choices += [
            lambda: _set_header(wire, "authorization", _flip(auth, rng)),
            lambda: _set_header(wire, "authorization", _flip(_flip(auth, rng), rng)),
            lambda: _set_header(wire, "authorization", auth.replace(", ", ",")),
            lambda: _set_header(wire, "authorization", auth + ", Signature=" + "0" * 64),
            lambda: _set_header(wire, "authorization", None),
            lambda: _set_header(
                wire,
                "authorization",
                "AWS4-HMAC-SHA256 "
                + "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(80))),
            ),
        ]
    else:

        def edit_param() -> Wire:
            i = rng.randrange(len(params))
            changed = [*params[:i], _flip(params[i], rng), *params[i + 1 :]]
            return replace(wire, query="&".join(changed))

        def drop_param() -> Wire:
            i = rng.randrange(len(params))
            return replace(wire, query="&".join(params[:i] + params[i + 1 :]))

        def double_param() -> Wire:
            return replace(wire, query=wire.query + "&" + rng.choice(params))

        choices += [edit_param, edit_param, edit_param, drop_param, double_param]
    mutated = rng.choice(choices)()
    if rng.random() < 0.3:  # sometimes two things at once
        mutated = _mutate(mutated, rng)
    return mutated


# --- the app in-process ------------------------------------------------------------------------


async def _send(app: BedrockApp, wire: Wire) -> tuple[int, bytes, str]:
    reply = await asgi_call(
        app, wire.method, wire.path, query=wire.query, headers=wire.headers, body=wire.body
    )
    return reply.status, reply.body, reply.error_type


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutated_requests_are_never_accepted_and_never_crash(seed: int, tmp_path: Path) -> None:
    asyncio.run(_fuzz(seed, tmp_path))


async def _fuzz(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    creds = write_credentials(tmp_path / "credentials.toml")
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        clock = FakeClock(datetime.now(UTC))
        settings = Settings(data_dir=tmp_path, credentials_file=creds)
        app = BedrockApp(JobService(store, clock), settings)
        # Every mutation must be checked, not answered 429 after the tenth wrong signature
        # (that bound has its own tests: test_wrong_signatures.py).
        app.gate.wrong_signatures = WrongSignatures(clock.monotonic, per_address=0)
        app.gate.wrong_signatures.per_key = SignInLimiter(clock.monotonic, max_failures=10**9)
        created = _signed("POST", "/model-invocation-job", body=json.dumps(job_args("x")).encode())
        status, body, _ = await _send(app, created)
        assert status == 200, body
        originals = _originals(json.loads(body)["jobArn"])
        for original in originals:
            status, body, _ = await _send(app, original)
            assert status == 200, body
        refusals: dict[str, int] = {}
        for _ in range(CASES_PER_SEED):
            original = rng.choice(originals)
            mutated = _mutate(original, rng)
            status, body, error_type = await _send(app, mutated)
            assert status < 500, (mutated, body)
            if 200 <= status < 300:
                assert _meaning(mutated) == _meaning(original), (
                    f"accepted a request that differs from the signed one: {mutated}"
                )
            else:
                answer = json.loads(body)
                assert error_type and ("message" in answer or "Message" in answer), body
                refusals[error_type] = refusals.get(error_type, 0) + 1
        # The mutations reach every stage of verification.
        assert {
            "InvalidSignatureException",
            "IncompleteSignatureException",
            "UnrecognizedClientException",
            "MissingAuthenticationTokenException",
        } <= set(refusals), refusals
        assert "ThrottlingException" not in refusals
    finally:
        await store.close()
