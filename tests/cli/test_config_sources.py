"""Configuration and credential sources AWS CLI v2 reads, against the stub service.

What the service received (the SigV4 credential scope, headers, the URL) is the evidence.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

from tests.cli.conftest import Stub, run_cli


def _credential(stub: Stub) -> tuple[str, str]:
    auth = stub.requests()[-1]["headers"]["Authorization"]
    match = re.search(r"Credential=([^/]+)/\d{8}/([^/]+)/bedrock/aws4_request", auth)
    assert match, auth
    return match.group(1), match.group(2)


def _list(stub: Stub, env: dict[str, str], *extra: str) -> None:
    result = run_cli(["--endpoint-url", stub.url, "list-model-invocation-jobs", *extra], env)
    assert result.rc == 0, result.stderr


def test_profile_keys_from_credentials_and_config_files(
    fresh_stub: Stub, cli_env: dict[str, str], aws_home: Path
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        del cli_env[key]
    (aws_home / "credentials").write_text(
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s\n"
        "[p1]\naws_access_key_id = AKIDCREDS\naws_secret_access_key = s\n"
    )
    (aws_home / "config").write_text(
        "[profile p2]\naws_access_key_id = AKIDCONFIG\naws_secret_access_key = s\n"
        "region = eu-west-3\n"
    )
    _list(fresh_stub, cli_env)
    assert _credential(fresh_stub) == ("AKIDDEFAULT", "us-east-1")
    _list(fresh_stub, cli_env, "--profile", "p1")
    assert _credential(fresh_stub)[0] == "AKIDCREDS"
    cli_env.pop("AWS_DEFAULT_REGION")
    _list(fresh_stub, {**cli_env, "AWS_PROFILE": "p2"})
    assert _credential(fresh_stub) == ("AKIDCONFIG", "eu-west-3")


def test_environment_keys_beat_the_profile_and_session_tokens_are_sent(
    fresh_stub: Stub, cli_env: dict[str, str], aws_home: Path
) -> None:
    (aws_home / "credentials").write_text(
        "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s\n"
    )
    _list(fresh_stub, {**cli_env, "AWS_SESSION_TOKEN": "tok123"})
    assert _credential(fresh_stub)[0] == "test"
    headers = fresh_stub.requests()[-1]["headers"]
    assert headers["X-Amz-Security-Token"] == "tok123"
    assert "x-amz-security-token" in headers["Authorization"]


def test_credential_process_goes_through_botocore(
    fresh_stub: Stub, cli_env: dict[str, str], aws_home: Path
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        del cli_env[key]
    script = aws_home / "creds.py"
    script.write_text(
        "import json\nprint(json.dumps({'Version': 1, 'AccessKeyId': 'AKIDPROCESS',"
        " 'SecretAccessKey': 's', 'SessionToken': 'proc-token'}))\n"
    )
    (aws_home / "config").write_text(
        f"[profile proc]\ncredential_process = {sys.executable} {script}\n"
    )
    _list(fresh_stub, cli_env, "--profile", "proc")
    assert _credential(fresh_stub)[0] == "AKIDPROCESS"
    assert fresh_stub.requests()[-1]["headers"]["X-Amz-Security-Token"] == "proc-token"


def test_no_credentials_anywhere(fresh_stub: Stub, cli_env: dict[str, str]) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        del cli_env[key]
    result = run_cli(["--endpoint-url", fresh_stub.url, "list-model-invocation-jobs"], cli_env)
    assert result.rc == 253
    assert "(NoCredentials): Unable to locate credentials" in result.stderr
    assert fresh_stub.requests() == []


def test_region_precedence(fresh_stub: Stub, cli_env: dict[str, str], aws_home: Path) -> None:
    (aws_home / "config").write_text("[default]\nregion = ap-south-1\n")
    _list(fresh_stub, cli_env)
    assert _credential(fresh_stub)[1] == "us-east-1"
    _list(fresh_stub, {**cli_env, "AWS_REGION": "eu-north-1"})
    assert _credential(fresh_stub)[1] == "eu-north-1"
    _list(fresh_stub, {**cli_env, "AWS_REGION": "eu-north-1"}, "--region", "ca-central-1")
    assert _credential(fresh_stub)[1] == "ca-central-1"
    cli_env.pop("AWS_DEFAULT_REGION")
    _list(fresh_stub, cli_env)
    assert _credential(fresh_stub)[1] == "ap-south-1"


def test_endpoint_sources_in_order(stub: Stub, cli_env: dict[str, str], aws_home: Path) -> None:
    stub.fixture("two")
    dead = "http://127.0.0.1:9"
    env = {**cli_env, "AWS_MAX_ATTEMPTS": "1"}
    (aws_home / "config").write_text(
        f"[default]\nservices = mine\nendpoint_url = {dead}/profile\n"
        f"[services mine]\nbedrock =\n  endpoint_url = {stub.url}/services\n"
    )
    args = ["list-model-invocation-jobs", "--query", "length(invocationJobSummaries)"]

    def path_seen(extra_env: dict[str, str]) -> str:
        result = run_cli(args, {**env, **extra_env})
        if result.rc != 0:
            return result.stderr
        return str(stub.requests()[-1]["path"])

    # [services] section beats the profile's endpoint_url (the stub answers 404 for the
    # prefixed path, but it is the stub that answers).
    assert "/services/model-invocation-jobs" in path_seen({})
    assert "/env/model-invocation-jobs" in path_seen({"AWS_ENDPOINT_URL": stub.url + "/env"})
    assert path_seen({"AWS_ENDPOINT_URL": dead, "AWS_ENDPOINT_URL_BEDROCK": stub.url}).endswith(
        "/model-invocation-jobs"
    )
    ignored = run_cli(
        args, {**env, "AWS_ENDPOINT_URL": stub.url, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}
    )
    # With configured endpoints ignored, the default is the local batchrock server.
    assert ignored.rc == 255
    assert '"http://127.0.0.1:8765/model-invocation-jobs"' in ignored.stderr


def test_nothing_configured_means_the_local_batchrock_server(cli_env: dict[str, str]) -> None:
    result = run_cli(["list-model-invocation-jobs"], {**cli_env, "AWS_MAX_ATTEMPTS": "1"})
    assert result.rc == 255
    assert (
        'Could not connect to the endpoint URL: "http://127.0.0.1:8765/model-invocation-jobs"'
        in result.stderr
    )


def test_output_and_timestamp_format_from_profile(
    fresh_stub: Stub, cli_env: dict[str, str], aws_home: Path
) -> None:
    (aws_home / "config").write_text("[profile t]\noutput = text\ncli_timestamp_format = wire\n")
    env = {**cli_env, "AWS_PROFILE": "t"}
    args = [
        "--endpoint-url",
        fresh_stub.url,
        "list-model-invocation-jobs",
        "--query",
        "invocationJobSummaries[].submitTime",
    ]
    result = run_cli(args, env)
    assert result.stdout == "2024-05-01T10:00:00.123Z\t2024-05-02T08:15:00Z\n"
    as_json = run_cli(args, {**env, "AWS_DEFAULT_OUTPUT": "json"})
    assert json.loads(as_json.stdout) == ["2024-05-01T10:00:00.123Z", "2024-05-02T08:15:00Z"]
    default = run_cli(args, cli_env)
    assert json.loads(default.stdout) == [
        "2024-05-01T10:00:00.123000+00:00",
        "2024-05-02T08:15:00+00:00",
    ]


def test_an_explicit_profile_ignores_keys_in_the_environment(
    fresh_stub: Stub, cli_env: dict[str, str], aws_home: Path
) -> None:
    # botocore (so AWS CLI) drops its environment provider for --profile, not for AWS_PROFILE.
    (aws_home / "config").write_text("[profile bare]\nregion = eu-west-1\n")
    args = ["--endpoint-url", fresh_stub.url, "list-model-invocation-jobs"]
    flagged = run_cli([*args, "--profile", "bare"], cli_env)
    assert flagged.rc == 253
    assert "(NoCredentials)" in flagged.stderr
    _list(fresh_stub, {**cli_env, "AWS_PROFILE": "bare"})
    assert _credential(fresh_stub)[0] == "test"


def test_bearer_token_replaces_sigv4(fresh_stub: Stub, cli_env: dict[str, str]) -> None:
    _list(fresh_stub, {**cli_env, "AWS_BEARER_TOKEN_BEDROCK": "br-token"})
    headers = fresh_stub.requests()[-1]["headers"]
    assert headers["Authorization"] == "Bearer br-token"


class _ForwardProxy(http.server.BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy that remembers what it forwarded."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append((self.path, self.headers.get("Proxy-Authorization")))
        headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-authorization"}
        req = urllib.request.Request(self.path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_http_proxy_and_no_proxy(fresh_stub: Stub, cli_env: dict[str, str]) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForwardProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proxy = f"http://user:p%40ss@127.0.0.1:{server.server_address[1]}"
        _ForwardProxy.seen.clear()
        _list(fresh_stub, {**cli_env, "HTTP_PROXY": proxy})
        assert len(_ForwardProxy.seen) == 1
        path, auth = _ForwardProxy.seen[0]
        assert path == fresh_stub.url + "/model-invocation-jobs"
        assert auth == "Basic " + base64.b64encode(b"user:p@ss").decode()
        # The signature still names the service's host, so it verifies behind the proxy.
        assert fresh_stub.requests()[-1]["headers"]["Host"] == fresh_stub.url[len("http://") :]
        _list(fresh_stub, {**cli_env, "http_proxy": proxy, "NO_PROXY": "localhost,127.0.0.1"})
        assert len(_ForwardProxy.seen) == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_default_endpoint_is_where_batchrock_serve_listens() -> None:
    from batchrock.cli.config import DEFAULT_ENDPOINT
    from batchrock.settings import Settings

    settings = Settings()
    assert DEFAULT_ENDPOINT == f"http://{settings.host}:{settings.port}"
