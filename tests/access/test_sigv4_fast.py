"""The shortcuts on SigV4's path (access/sigv4.py) give what botocore and strptime give."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
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
    ours = sigv4._Signer(Credentials("AKIDEXAMPLE", secret), region, ["host"])
    for text in ("AWS4-HMAC-SHA256\n" + stamp, "something else", ""):
        for _ in range(2):
            assert ours.signature(text, request) == reference.signature(text, request)


def test_signing_keys_kept_are_bounded() -> None:
    for n in range(sigv4._SIGNING_KEYS_KEPT + 10):
        sigv4.signing_key(f"secret-{n}", "20261201", "us-east-1")
    assert len(sigv4._signing_keys) <= sigv4._SIGNING_KEYS_KEPT
    request = AWSRequest(method="GET", url="https://batchrock/")
    request.context["timestamp"] = "20261201T000000Z"
    reference = SigV4Auth(Credentials("AKID", "secret-3"), "bedrock", "us-east-1")
    ours = sigv4._Signer(Credentials("AKID", "secret-3"), "us-east-1", ["host"])
    assert ours.signature("x", request) == reference.signature("x", request)
