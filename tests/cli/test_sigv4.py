"""Our SigV4 signature equals botocore's for the same request (what AWS itself verifies)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from batchrock.cli import sigv4
from batchrock.cli.credentials import Credentials


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "token"),
    [
        ("GET", "/model-invocation-jobs", [], b"", None),
        (
            "GET",
            "/model-invocation-jobs",
            [
                ("statusEquals", "Completed"),
                ("submitTimeAfter", "2024-05-01T11:00:00Z"),
                ("nameContains", "a b+c"),
            ],
            b"",
            "session-token",
        ),
        ("POST", "/model-invocation-job", [], b'{"jobName": "x"}', None),
        (
            "GET",
            "/model-invocation-job/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Amodel-invocation-job%2Fab",
            [],
            b"",
            None,
        ),
    ],
)
def test_signature_matches_botocore(
    method: str, path: str, query: list[tuple[str, str]], body: bytes, token: str | None
) -> None:
    headers = {"Content-Type": "application/json"} if body else {}
    url = "http://127.0.0.1:8765" + path
    if query:
        url += "?" + sigv4.canonical_query(query)
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    signer = SigV4Auth(BotoCredentials("AKIDEXAMPLE", "secret", token), "bedrock", "us-west-2")
    signer.add_auth(request)
    now = datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    ours = sigv4.sign(
        method=method,
        host="127.0.0.1:8765",
        path=path,
        query=query,
        headers=headers,
        body=body,
        creds=Credentials("AKIDEXAMPLE", "secret", token),
        region="us-west-2",
        service="bedrock",
        now=now,
    )
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Date"] == request.headers["X-Amz-Date"]
