"""SigV4 against a real server with a credentials file, through boto3 (botocore parses every
error, so the codes below are what SDK users see)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import botocore.auth
import pytest
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.access.conftest import ALICE, BOB, READER, Key, client, error_of, job_args
from tests.api.wire import call
from tests.conftest import ServerProcess

SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)


@pytest.fixture(scope="module")
def alice_job(secured: ServerProcess) -> str:
    arn: str = client(secured.url).create_model_invocation_job(**job_args("alice-job"))["jobArn"]
    return arn


@pytest.fixture
def shifted_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dt.timedelta], None]]:
    """Make the client sign as if its clock were off by ``delta`` (botocore's clock seam)."""
    real = botocore.auth.get_current_datetime

    def shift(delta: dt.timedelta) -> None:
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: real() + delta)

    yield shift


def test_the_right_secret_works_for_every_operation(secured: ServerProcess) -> None:
    bedrock = client(secured.url)
    arn = bedrock.create_model_invocation_job(**job_args("every-op"))["jobArn"]
    assert arn.startswith("arn:aws:bedrock:us-east-1:111111111111:model-invocation-job/")
    job_id = arn.rsplit("/", 1)[1]
    assert bedrock.get_model_invocation_job(jobIdentifier=arn)["jobName"] == "every-op"
    assert bedrock.get_model_invocation_job(jobIdentifier=job_id)["jobArn"] == arn
    listed = bedrock.list_model_invocation_jobs(nameContains="every-op")
    assert [j["jobArn"] for j in listed["invocationJobSummaries"]] == [arn]
    bedrock.tag_resource(resourceARN=arn, tags=[{"key": "team", "value": "a b/c+d=e@x"}])
    assert bedrock.list_tags_for_resource(resourceARN=arn)["tags"] == [
        {"key": "team", "value": "a b/c+d=e@x"}
    ]
    bedrock.untag_resource(resourceARN=arn, tagKeys=["team"])
    bedrock.stop_model_invocation_job(jobIdentifier=arn)
    assert bedrock.get_model_invocation_job(jobIdentifier=arn)["status"] == "Stopping"


def test_a_wrong_secret_is_an_invalid_signature(secured: ServerProcess, alice_job: str) -> None:
    bedrock = client(secured.url, secret="not-alice-secret-0000000000000000")
    code, status, message = error_of(
        lambda: bedrock.get_model_invocation_job(jobIdentifier=alice_job)
    )
    assert (code, status) == ("InvalidSignatureException", 403)
    assert message.startswith(SIGNATURE_MISMATCH + "\n\nThe Canonical String for this request")
    # The canonical request shows the ARN path encoded twice, as every SDK signs it.
    quoted = alice_job.replace(":", "%253A").replace("/", "%252F")
    assert f"\nGET\n/model-invocation-job/{quoted}\n" in "\n" + message.split("'")[1]
    assert "\n\nThe String-to-Sign should have been\n'AWS4-HMAC-SHA256\n" in message
    assert "alice/secret" not in message


def test_error_types_name_the_auth_layer(secured: ServerProcess) -> None:
    reply = call(secured.url, "GET", "/model-invocation-jobs")
    assert reply.status == 403
    assert reply.headers["x-amzn-errortype"] == (
        "MissingAuthenticationTokenException:"
        "http://internal.amazon.com/coral/com.amazon.coral.service/"
    )
    assert reply.json() == {"message": "Missing Authentication Token"}
    assert reply.headers["x-amzn-requestid"]


def test_an_unknown_key_is_an_unrecognized_client(secured: ServerProcess) -> None:
    stranger = Key("333333333333", "AKIASTRANGER00000009", "whatever-secret-0000000000000000")
    code, status, message = error_of(client(secured.url, stranger).list_model_invocation_jobs)
    assert (code, status, message) == (
        "UnrecognizedClientException",
        403,
        "The security token included in the request is invalid.",
    )


def test_no_credentials_is_a_missing_token(secured: ServerProcess) -> None:
    unsigned = client(secured.url, None, signature_version=UNSIGNED)
    assert error_of(unsigned.list_model_invocation_jobs) == (
        "MissingAuthenticationTokenException",
        403,
        "Missing Authentication Token",
    )


def test_session_tokens_are_refused(secured: ServerProcess) -> None:
    temporary = client(secured.url, session_token="FwoGZXIvYXdzEJr//////////wEaDM")
    assert error_of(temporary.list_model_invocation_jobs) == (
        "UnrecognizedClientException",
        403,
        "The security token included in the request is invalid.",
    )


def _stamp(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


def test_a_clock_within_five_minutes_is_fine(
    secured: ServerProcess, shifted_clock: Callable[[dt.timedelta], None]
) -> None:
    for minutes in (-4, 4):
        shifted_clock(dt.timedelta(minutes=minutes))
        client(secured.url).list_model_invocation_jobs(maxResults=1)


def test_a_slow_clock_is_an_expired_signature(
    secured: ServerProcess, shifted_clock: Callable[[dt.timedelta], None]
) -> None:
    shifted_clock(dt.timedelta(minutes=-6))
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    code, status, message = error_of(client(secured.url).list_model_invocation_jobs)
    after = dt.datetime.now(dt.UTC)
    assert (code, status) == ("InvalidSignatureException", 403)
    match = re.fullmatch(
        r"Signature expired: (\d{8}T\d{6}Z) is now earlier than (\d{8}T\d{6}Z) "
        r"\((\d{8}T\d{6}Z) - 5 min\.\)",
        message,
    )
    assert match, message
    signed, earliest, now = (_stamp(g) for g in match.groups())
    assert before <= now <= after
    assert earliest == now - dt.timedelta(minutes=5)
    assert signed < earliest


def test_a_fast_clock_is_a_signature_not_yet_current(
    secured: ServerProcess, shifted_clock: Callable[[dt.timedelta], None]
) -> None:
    shifted_clock(dt.timedelta(minutes=6))
    code, status, message = error_of(client(secured.url).list_model_invocation_jobs)
    assert (code, status) == ("InvalidSignatureException", 403)
    match = re.fullmatch(
        r"Signature not yet current: (\d{8}T\d{6}Z) is still later than (\d{8}T\d{6}Z) "
        r"\((\d{8}T\d{6}Z) \+ 5 min\.\)",
        message,
    )
    assert match, message
    signed, latest, now = (_stamp(g) for g in match.groups())
    assert latest == now + dt.timedelta(minutes=5) and signed > latest


def _get(url: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, _lower(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers), json.loads(exc.read())


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_presigned_urls(
    secured: ServerProcess, alice_job: str, shifted_clock: Callable[[dt.timedelta], None]
) -> None:
    bedrock = client(secured.url)
    url = bedrock.generate_presigned_url(
        "get_model_invocation_job", Params={"jobIdentifier": alice_job}, ExpiresIn=300
    )
    status, _, body = _get(url)
    assert (status, body["jobArn"]) == (200, alice_job)

    listing = bedrock.generate_presigned_url(
        "list_model_invocation_jobs", Params={"nameContains": "alice-job+x", "maxResults": 5}
    )
    status, _, body = _get(listing)
    assert status == 200 and body["invocationJobSummaries"] == [], body
    # A raw "+" reads as a space (as the API reads it), so it is not the signed "%2B".
    assert "%2B" in listing and _get(listing.replace("%2B", "+"))[0] == 403

    tampered = re.sub(
        r"X-Amz-Signature=([0-9a-f])",
        lambda m: "X-Amz-Signature=" + "0123456789abcdef"[(int(m.group(1), 16) + 1) % 16],
        url,
    )
    status, headers, body = _get(tampered)
    assert status == 403 and headers["x-amzn-errortype"].startswith("InvalidSignatureException:")
    assert body["message"].startswith(SIGNATURE_MISMATCH)

    other_path = url.replace(alice_job.rsplit("/", 1)[1], "zzzzzzzzzzzz")
    assert _get(other_path)[0] == 403

    shifted_clock(dt.timedelta(hours=-2))
    expired = bedrock.generate_presigned_url(
        "get_model_invocation_job", Params={"jobIdentifier": alice_job}, ExpiresIn=3600
    )
    status, headers, body = _get(expired)
    assert status == 403 and headers["x-amzn-errortype"].startswith("InvalidSignatureException:")
    assert re.fullmatch(
        r"Signature expired: \d{8}T\d{6}Z is now earlier than \d{8}T\d{6}Z "
        r"\(\d{8}T\d{6}Z - 3600 sec\.\)",
        body["message"],
    ), body


def test_presigned_urls_with_missing_parameters(secured: ServerProcess, alice_job: str) -> None:
    url = client(secured.url).generate_presigned_url(
        "get_model_invocation_job", Params={"jobIdentifier": alice_job}
    )
    without = re.sub(r"&X-Amz-SignedHeaders=[^&]*", "", url)
    status, headers, body = _get(without)
    assert status == 400
    assert headers["x-amzn-errortype"].startswith("IncompleteSignatureException:")
    assert body["message"] == (
        "AWS query-string parameters must include 'X-Amz-SignedHeaders'. "
        "Re-examine the query-string parameters."
    )


def test_the_scope_must_be_bedrock_and_a_region(secured: ServerProcess) -> None:
    def signed(service: str, region: str) -> dict[str, str]:
        request = AWSRequest("GET", secured.url + "/model-invocation-jobs")
        SigV4Auth(Credentials(ALICE.access_key_id, ALICE.secret), service, region).add_auth(request)
        return dict(request.headers)

    reply = call(secured.url, "GET", "/model-invocation-jobs", headers=signed("s3", "us-east-1"))
    assert (reply.status, reply.error_type) == (403, "InvalidSignatureException")
    assert reply.json()["message"] == "Credential should be scoped to correct service: 'bedrock'. "
    reply = call(secured.url, "GET", "/model-invocation-jobs", headers=signed("bedrock", "US_1"))
    assert reply.json()["message"] == "Credential should be scoped to a valid region, not 'US_1'. "


def test_the_region_is_the_signed_one(secured: ServerProcess) -> None:
    frankfurt = client(secured.url, region="eu-central-1")
    arn = frankfurt.create_model_invocation_job(**job_args("in-frankfurt"))["jobArn"]
    assert arn.startswith("arn:aws:bedrock:eu-central-1:111111111111:")
    names = [
        j["jobName"]
        for j in client(secured.url).list_model_invocation_jobs()["invocationJobSummaries"]
    ]
    assert "in-frankfurt" not in names


def _send_signed(
    server: ServerProcess,
    body: bytes,
    *,
    sent_body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    request = AWSRequest(
        "POST",
        server.url + "/model-invocation-job",
        data=body,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    SigV4Auth(Credentials(ALICE.access_key_id, ALICE.secret), "bedrock", "us-east-1").add_auth(
        request
    )
    return call(
        server.url,
        "POST",
        "/model-invocation-job",
        body=body if sent_body is None else sent_body,
        headers=dict(request.headers),
    )


def test_the_body_is_covered_by_the_signature(secured: ServerProcess) -> None:
    body = json.dumps(job_args("signed-body")).encode()
    assert _send_signed(secured, body).status == 200
    forged = body.replace(b"signed-body", b"forged-body")
    reply = _send_signed(secured, body, sent_body=forged)
    assert (reply.status, reply.error_type) == (403, "InvalidSignatureException")
    # A signed x-amz-content-sha256 must be the hash of the body that came.
    claimed = {"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    assert _send_signed(secured, body, headers=claimed).status == 200
    reply = _send_signed(secured, body, sent_body=forged, headers=claimed)
    assert (reply.status, reply.error_type) == (403, "InvalidSignatureException")
    unsigned = {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    assert _send_signed(secured, body, headers=unsigned).status == 403


SCOPE = "AKIAALICE00000000001/20260101/us-east-1/bedrock/aws4_request"


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (
            f"AWS4-HMAC-SHA256 Credential={SCOPE}",
            "Authorization header requires 'SignedHeaders' parameter. Authorization header "
            f"requires 'Signature' parameter. Authorization=AWS4-HMAC-SHA256 Credential={SCOPE}",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIAALICE00000000001/us-east-1/bedrock/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=abc",
            "Credential must have exactly 5 slash-delimited elements, e.g. "
            "keyid/date/region/service/term, got "
            "'AKIAALICE00000000001/us-east-1/bedrock/aws4_request'",
        ),
        (
            "AWS4-HMAC-SHA256 Credential, SignedHeaders=host, Signature=abc",
            "'Credential' not a valid key=value pair (missing equal-sign) in Authorization "
            "header: 'AWS4-HMAC-SHA256 Credential, SignedHeaders=host, Signature=abc'.",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=x-amz-date, Signature=abc",
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ),
        (
            f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=host, Signature=a, Signature=b",
            "'Signature' appears more than once in the Authorization header. Authorization="
            f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=host, Signature=a, Signature=b",
        ),
        (
            "Basic YWxpY2U6c2VjcmV0",
            "Authorization header requires 'Credential' parameter. Authorization header requires "
            "'SignedHeaders' parameter. Authorization header requires 'Signature' parameter. "
            "Authorization=Basic YWxpY2U6c2VjcmV0",
        ),
    ],
)
def test_malformed_authorization_headers(
    secured: ServerProcess, authorization: str, message: str
) -> None:
    """botocore parses these as IncompleteSignatureException (the header is swapped in after
    signing, so the response goes through boto3's own error parsing)."""
    bedrock = client(secured.url)

    def swap(request: Any, **_: Any) -> None:
        request.headers["Authorization"] = authorization

    bedrock.meta.events.register("before-send.bedrock.ListModelInvocationJobs", swap)
    assert error_of(bedrock.list_model_invocation_jobs) == (
        "IncompleteSignatureException",
        400,
        message,
    )


def test_a_malformed_date_is_named(secured: ServerProcess) -> None:
    bedrock = client(secured.url)

    def swap(request: Any, **_: Any) -> None:
        request.headers["X-Amz-Date"] = "2026-01-01T00:00:00Z"

    bedrock.meta.events.register("before-send.bedrock.ListModelInvocationJobs", swap)
    assert error_of(bedrock.list_model_invocation_jobs) == (
        "IncompleteSignatureException",
        400,
        "Date must be in ISO-8601 'basic format'. Got '2026-01-01T00:00:00Z'. "
        "See http://en.wikipedia.org/wiki/ISO_8601",
    )


def test_accounts_never_reach_each_other(secured: ServerProcess, alice_job: str) -> None:
    bob = client(secured.url, BOB)
    job_id = alice_job.rsplit("/", 1)[1]
    for identifier in (alice_job, job_id):
        code, status, _ = error_of(
            lambda i=identifier: bob.get_model_invocation_job(jobIdentifier=i)
        )
        assert (code, status) == ("ResourceNotFoundException", 404)
        code, _, _ = error_of(lambda i=identifier: bob.stop_model_invocation_job(jobIdentifier=i))
        assert code == "ResourceNotFoundException"
    code, _, _ = error_of(
        lambda: bob.tag_resource(resourceARN=alice_job, tags=[{"key": "k", "value": "v"}])
    )
    assert code == "ResourceNotFoundException"
    code, _, _ = error_of(lambda: bob.list_tags_for_resource(resourceARN=alice_job))
    assert code == "ResourceNotFoundException"
    assert bob.list_model_invocation_jobs()["invocationJobSummaries"] == []
    bob_arn = bob.create_model_invocation_job(**job_args("bob-job", "team-b-data"))["jobArn"]
    assert ":222222222222:" in bob_arn
    alice = client(secured.url)
    code, _, _ = error_of(lambda: alice.get_model_invocation_job(jobIdentifier=bob_arn))
    assert code == "ResourceNotFoundException"


def test_actions_limit_what_a_key_may_do(secured: ServerProcess, alice_job: str) -> None:
    reader = client(secured.url, READER)
    reader.list_model_invocation_jobs()
    assert reader.get_model_invocation_job(jobIdentifier=alice_job)["jobArn"] == alice_job
    denied = (
        "User: arn:aws:iam::111111111111:user/reader is not authorized to perform: {a} on "
        "resource: {r} because no identity-based policy allows the {a} action"
    )
    code, status, message = error_of(
        lambda: reader.stop_model_invocation_job(jobIdentifier=alice_job)
    )
    action = "bedrock:StopModelInvocationJob"
    assert (code, status) == ("AccessDeniedException", 403)
    assert message == denied.format(a=action, r=alice_job)
    job_id = alice_job.rsplit("/", 1)[1]
    code, _, message = error_of(lambda: reader.stop_model_invocation_job(jobIdentifier=job_id))
    assert message == denied.format(a=action, r=alice_job)
    code, _, message = error_of(lambda: reader.create_model_invocation_job(**job_args("nope")))
    assert message == denied.format(
        a="bedrock:CreateModelInvocationJob",
        r="arn:aws:bedrock:us-east-1:111111111111:model-invocation-job/*",
    )
    # bedrock:List* covers ListTagsForResource, not TagResource.
    assert reader.list_tags_for_resource(resourceARN=alice_job)["tags"] == []
    code, _, message = error_of(
        lambda: reader.tag_resource(resourceARN=alice_job, tags=[{"key": "k", "value": "v"}])
    )
    assert message == denied.format(a="bedrock:TagResource", r=alice_job)
    # Nothing was stopped or created on the way.
    alice = client(secured.url)
    assert alice.get_model_invocation_job(jobIdentifier=alice_job)["status"] == "Submitted"
    assert alice.list_model_invocation_jobs(nameContains="nope")["invocationJobSummaries"] == []


def test_the_health_check_needs_no_credentials(secured: ServerProcess) -> None:
    assert call(secured.url, "GET", "/_batchrock/health").json() == {"status": "ok"}
