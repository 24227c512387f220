"""The shortcuts on SigV4's path (access/sigv4.py) give what botocore and strptime give."""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from batchrock.access import sigv4


def _strptime(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, sigv4.TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def _ours(value: str) -> datetime | None:
    try:
        return sigv4.parse_timestamp(value)
    except ValueError:
        return None


def test_timestamps_are_read_as_strptime_reads_them() -> None:
    years = ["0000", "0001", "1999", "2024", "2023", "9999"]
    months = ["00", "01", "02", "09", "10", "12", "13", "99"]
    days = ["00", "01", "09", "28", "29", "30", "31", "32", "99"]
    hours = ["00", "09", "19", "23", "24", "99"]
    minutes = ["00", "59", "60"]
    seconds = ["00", "59", "60", "61"]
    valid = 0
    for y, m, d, hh, mm, ss in itertools.product(years, months, days, hours, minutes, seconds):
        value = f"{y}{m}{d}T{hh}{mm}{ss}Z"
        expected = _strptime(value)
        assert _ours(value) == expected, value
        valid += expected is not None
    assert valid > 1000
    # Other scripts' digits match the X-Amz-Date pattern's \d, and strptime reads some.
    for other in (
        "\u0662\u0660\u0662\u0664\u0661\u0662\u0663\u0661T000000Z",
        "20241231T00000\u0660Z",
    ):
        assert sigv4._BASIC_DATE.fullmatch(other)
        assert _ours(other) == _strptime(other), other
    for odd in (
        "20241231t000000Z",
        "20241231T000000z",
        "20241231T000000",
        "20241231T0000000Z",
        "2024-12-31T00:00:00Z",
        "+2024123T000000Z",
        " 2024123T000000Z",
        "2024123 T000000Z",
        "",
    ):
        # Refused, as the X-Amz-Date check before them refused them (strptime alone would
        # take a lower-case "t" or "z"; only values of the exact shape ever reach it).
        assert _ours(odd) is None, odd
        assert sigv4._BASIC_DATE.fullmatch(odd) is None or _strptime(odd) is None, odd


@pytest.mark.parametrize(
    ("secret", "stamp", "region"),
    [
        ("alice/secret+key-00000000000000001", "20261201T211639Z", "us-east-1"),
        ("alice/secret+key-00000000000000001", "20261202T000000Z", "us-east-1"),
        ("alice/secret+key-00000000000000001", "20261201T211639Z", "eu-west-1"),
        ("another-secret", "20261201T211639Z", "us-east-1"),
        ("s\u00e9cr\u00e8t", "20200229T235959Z", "ap-south-2"),
    ],
)
def test_signatures_are_botocores(secret: str, stamp: str, region: str) -> None:
    """The signing key is derived once per (secret, date, region): the signature over any
    string to sign is botocore's, for each of them, however often asked."""
    request = AWSRequest(method="GET", url="https://batchrock/model-invocation-jobs")
    request.context["timestamp"] = stamp
    reference = SigV4Auth(Credentials("AKIDEXAMPLE", secret), "bedrock", region)
    for text in ("AWS4-HMAC-SHA256\n" + stamp, "something else", ""):
        for _ in range(2):
            key = sigv4.signing_key(secret, stamp[:8], region)
            ours = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
            assert ours == reference.signature(text, request)


def test_signing_keys_kept_are_bounded() -> None:
    for n in range(sigv4._SIGNING_KEYS_KEPT + 10):
        sigv4.signing_key(f"secret-{n}", "20261201", "us-east-1")
    assert len(sigv4._signing_keys) <= sigv4._SIGNING_KEYS_KEPT
    request = AWSRequest(method="GET", url="https://batchrock/")
    request.context["timestamp"] = "20261201T000000Z"
    reference = SigV4Auth(Credentials("AKID", "secret-3"), "bedrock", "us-east-1")
    key = sigv4.signing_key("secret-3", "20261201", "us-east-1")
    assert hmac.new(key, b"x", hashlib.sha256).hexdigest() == reference.signature("x", request)


def test_canonical_paths_kept_are_bounded_and_the_same_as_made() -> None:
    sigv4._canonical_paths.clear()
    made = sigv4._canonical_path("/model-invocation-job/a%3Ab/../x y#z?q=1")
    assert sigv4._canonical_path("/model-invocation-job/a%3Ab/../x y#z?q=1") == made
    sigv4._canonical_paths.clear()
    assert sigv4._canonical_path("/model-invocation-job/a%3Ab/../x y#z?q=1") == made
    for n in range(sigv4._CANONICAL_PATHS_KEPT + 10):
        sigv4._canonical_path(f"/model-invocation-job/{n:012d}")
    assert len(sigv4._canonical_paths) <= sigv4._CANONICAL_PATHS_KEPT


# --- the canonical request, against botocore's signer over a rebuilt AWSRequest -------------


class _BotocoreSigner(SigV4Auth):  # type: ignore[misc]  # botocore has no type hints
    """How sigv4._sign computed it before: botocore's signer, signing exactly the headers the
    client named."""

    def __init__(self, credentials: Credentials, region: str, signed: Sequence[str]) -> None:
        super().__init__(credentials, sigv4.SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        chosen = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name, []):
                chosen[name] = value
        return chosen


def _botocore_sign(
    claim: sigv4.Claim, request: sigv4.HttpRequest, secret: str
) -> tuple[str, str, str]:
    body_hash = hashlib.sha256(request.body).hexdigest()
    path = request.raw_path if request.raw_path.startswith("/") else "/" + request.raw_path
    rebuilt = AWSRequest(
        method=request.method,
        url="https://batchrock" + path.replace("#", "%23"),
        data=request.body,
        params=list(claim.signed_query),
    )
    wanted = set(claim.signed_headers)
    for name, value in request.headers:
        if name in wanted:
            rebuilt.headers[name] = value
    if "x-amz-content-sha256" in rebuilt.headers:
        del rebuilt.headers["x-amz-content-sha256"]
        rebuilt.headers["x-amz-content-sha256"] = body_hash
    rebuilt.context["timestamp"] = claim.timestamp
    signer = _BotocoreSigner(
        Credentials(claim.access_key_id, secret), claim.region, claim.signed_headers
    )
    canonical: str = signer.canonical_request(rebuilt)
    string_to_sign: str = signer.string_to_sign(rebuilt, canonical)
    signature: str = signer.signature(string_to_sign, rebuilt)
    return signature, canonical, string_to_sign


_PATHS = [
    "/model-invocation-jobs",
    "/model-invocation-job/abcdef123456",
    "/model-invocation-job/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Amodel-invocation-job%2Fabcdef123456/stop",
    "model-invocation-jobs",
    "/a//b/./c/../d/",
    "/a b/\u00e9/~x/%7E/%2f",
    "/with#hash/and;semi=1",
    "/",
    "",
    "/..",
    "/a/%2E%2E/b",
    " /lead",
    "/tab\there",
    "/q?b=2&a=1&a=0&c",  # a query in the path itself (the router never passes one)
]
_QUERIES: list[tuple[tuple[str, str], ...]] = [
    (),
    (("maxResults", "10"),),
    (("b", "2"), ("a", "1"), ("a", "0"), ("A", "x")),
    (("nameContains", "a b+c/d~e*f"), ("nextToken", "abc=="), ("empty", "")),
    (("\u00e9", "\u00fc"), ("X-Amz-Credential", "AKID/20261201/us-east-1/bedrock/aws4_request")),
]
_HEADERS: list[list[tuple[str, str]]] = [
    [("host", "127.0.0.1:8765"), ("x-amz-date", "20261201T211639Z")],
    [
        ("host", "127.0.0.1:8765"),
        ("x-amz-date", "20261201T211639Z"),
        ("accept", "application/json"),
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ("content-type", "  application/json;   charset=utf-8  "),
        ("x-custom", "a"),
        ("x-custom", " b  c "),
        ("x-amz-content-sha256", "second"),
    ],
    [("host", "h"), ("x-amz-date", "20261201T211639Z"), ("x-empty", ""), ("x-tab", "a\tb")],
]
_SIGNED: list[tuple[str, ...]] = [
    ("host", "x-amz-date"),
    ("host", "x-amz-content-sha256", "x-amz-date", "x-custom"),
    ("Host", "X-Amz-Date", "x-custom", "content-type"),
    ("host", "host", "x-amz-date", "x-missing"),
    ("host", "Host", "x-empty", "x-tab", "accept"),
    ("x-amz-content-sha256", "host"),
    ("X-Amz-Content-Sha256", "host", "x-amz-date"),
]


def test_canonical_requests_are_botocores() -> None:
    """sigv4._sign builds the canonical request, string to sign and signature without
    botocore's request objects; on every combination of odd paths, queries, repeated and
    oddly cased signed headers and bodies, they are what botocore's signer gives."""
    compared = 0
    for path, query, headers, signed, body, method in itertools.product(
        _PATHS, _QUERIES, _HEADERS, _SIGNED, (b"", b'{"a": 1}'), ("GET", "post")
    ):
        claim = sigv4.Claim(
            "AKIDEXAMPLE",
            "20261201",
            "eu-west-1",
            "bedrock",
            "aws4_request",
            signed,
            "0" * 64,
            "20261201T211639Z",
            None,
            False,
            query,
        )
        request = sigv4.HttpRequest(method, path, "", headers, body, False)
        expected = _botocore_sign(claim, request, "secret/key")
        assert sigv4._sign(claim, request, "secret/key") == expected, (path, query, signed)
        compared += 1
    assert compared > 5000
