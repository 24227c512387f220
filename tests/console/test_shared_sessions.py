"""Console sessions across API processes: two ``batchrock serve --no-engine`` on one
PostgreSQL database (as behind a load balancer) take each other's session cookies, a sign-out
on one ends the session on both, and the Region shown follows the session, not the process."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.access.conftest import ALICE, client, job_args, write_credentials

COOKIE = "batchrock_console"


def call(
    url: str, path: str, body: dict[str, Any] | None = None, *, cookie: str = "", csrf: str = ""
) -> tuple[int, dict[str, Any], str]:
    """One console request: (status, JSON answer, the session cookie it set, if any)."""
    headers = {"Content-Type": "application/json"}
    if cookie:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    if csrf:
        headers["X-Batchrock-Csrf"] = csrf
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, set_cookie = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, raw, set_cookie = exc.code, exc.read(), exc.headers
    given = ""
    for value in set_cookie.get_all("Set-Cookie") or []:
        if value.startswith(COOKIE + "="):
            given = value.split(";", 1)[0].split("=", 1)[1]
    return status, json.loads(raw or b"{}"), given


def test_a_sign_in_on_one_api_process_is_valid_on_another(
    server_factory: Any, pg_url: str, tmp_path: Path
) -> None:
    creds = write_credentials(tmp_path / "credentials.toml")
    settings = {"engine": False, "credentials_file": creds, "database_url": pg_url}
    one, two = server_factory(**settings), server_factory(**settings)
    arn = client(one.url, ALICE).create_model_invocation_job(**job_args("alice-job"))["jobArn"]

    status, signed, cookie = call(
        one.url,
        "/console/api/session",
        {"accessKeyId": ALICE.access_key_id, "secretAccessKey": ALICE.secret},
    )
    assert status == 200 and cookie and signed["account"] == ALICE.account
    # The other process knows the session: its jobs, its CSRF token, its scope.
    status, info, _ = call(two.url, "/console/api/session", cookie=cookie)
    assert status == 200 and info["signedIn"] and info["csrf"] == signed["csrf"]
    status, listed, _ = call(two.url, "/console/api/jobs", cookie=cookie)
    assert status == 200, listed
    assert [j["jobArn"] for j in listed["invocationJobSummaries"]] == [arn]
    status, _, _ = call(
        two.url,
        "/console/api/session/scope",
        {"region": "eu-west-3"},
        cookie=cookie,
        csrf=signed["csrf"],
    )
    assert status == 200
    assert call(one.url, "/console/api/session", cookie=cookie)[1]["region"] == "eu-west-3"
    # A made-up cookie is nobody, on either.
    assert call(two.url, "/console/api/jobs", cookie="x" * 43)[0] == 401
    # Signing out on the second ends the session on the first.
    status, _, _ = call(two.url, "/console/api/session/end", {}, cookie=cookie)
    assert status == 200
    assert call(one.url, "/console/api/jobs", cookie=cookie)[0] == 401
    assert not call(one.url, "/console/api/session", cookie=cookie)[1]["signedIn"]
