"""Error-response parsing, proxy selection and timeouts, with botocore's rules."""

from __future__ import annotations

import json
import socket

import pytest

from batchrock.cli.transport import Response, error_code, proxy_for
from tests.cli.conftest import Stub, run_cli


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (
            400,
            {"x-amzn-errortype": "ValidationException:http://x"},
            b'{"message": "m"}',
            ("ValidationException", "m"),
        ),
        (
            404,
            {},
            b'{"__type": "com.amazon#ResourceNotFoundException", "Message": "gone"}',
            ("ResourceNotFoundException", "gone"),
        ),
        (
            409,
            {},
            b'{"code": "ConflictException", "message": "busy"}',
            ("ConflictException", "busy"),
        ),
        (403, {}, b"", ("403", "")),
        (403, {}, b"<html>denied</html>", ("403", "")),
        (502, {}, b"<html>bad gateway</html>", ("502", "Bad Gateway")),
        (503, {}, b"", ("503", "Service Unavailable")),
        (500, {}, b'{"message": "boom"}', ("500", "boom")),
    ],
)
def test_error_code_and_message(
    status: int, headers: dict[str, str], body: bytes, expected: tuple[str, str]
) -> None:
    code, message, _ = error_code(Response(status, headers, body))
    assert (code, message) == expected


def test_proxy_selection() -> None:
    env = {"HTTPS_PROXY": "proxy:3128", "http_proxy": "http://p2:80", "NO_PROXY": ".internal,h:81"}
    assert proxy_for("https://bedrock.us-east-1.amazonaws.com", env) == "http://proxy:3128"
    assert proxy_for("http://127.0.0.1:8765", env) == "http://p2:80"
    assert proxy_for("https://api.internal", env) is None
    assert proxy_for("http://h:81/x", env) is None
    assert proxy_for("http://h:82/x", env) == "http://p2:80"
    assert proxy_for("http://h", {"no_proxy": "*", "HTTP_PROXY": "http://p"}) is None
    assert proxy_for("http://h", {}) is None


def test_read_timeout_is_reported_with_the_url(cli_env: dict[str, str]) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        result = run_cli(
            [
                "--endpoint-url",
                f"http://127.0.0.1:{port}",
                "--cli-read-timeout",
                "1",
                "list-model-invocation-jobs",
                "--page-size",
                "3",
            ],
            {**cli_env, "AWS_MAX_ATTEMPTS": "1"},
        )
    assert result.rc == 255
    assert result.stderr == (
        "\nbatchrock: [ERROR]: Read timeout on endpoint URL: "
        f'"http://127.0.0.1:{port}/model-invocation-jobs?maxResults=3"\n'
    )


def test_retries_follow_the_configured_attempts(stub: Stub, cli_env: dict[str, str]) -> None:
    stub.fixture("two")
    stub.admin(
        "fail",
        {"status": 503, "code": "ServiceUnavailableException", "message": "busy", "times": 10},
    )
    try:
        result = run_cli(
            ["--endpoint-url", stub.url, "list-model-invocation-jobs"],
            {**cli_env, "AWS_MAX_ATTEMPTS": "2"},
        )
    finally:
        stub.admin("fail", {"times": 0})
    assert result.rc == 254
    assert "operation (reached max retries: 1): busy" in result.stderr
    attempts = [r["headers"]["amz-sdk-request"] for r in stub.requests()]
    assert attempts[0] == "attempt=1"
    assert attempts[1].endswith("; attempt=2; max=2")
    assert len(attempts) == 2


def test_structured_and_enhanced_error_formats(stub: Stub, cli_env: dict[str, str]) -> None:
    stub.fixture("two")
    args = ["--endpoint-url", stub.url, "list-model-invocation-jobs"]

    def fail_once() -> None:
        stub.admin(
            "fail", {"status": 403, "code": "AccessDeniedException", "message": "no", "times": 1}
        )

    fail_once()
    as_json = run_cli([*args, "--cli-error-format", "json"], cli_env)
    assert as_json.rc == 254
    assert json.loads(as_json.stderr) == {
        "Message": "no",
        "Code": "AccessDeniedException",
        "message": "no",
    }
    fail_once()
    as_text = run_cli(args, {**cli_env, "AWS_CLI_ERROR_FORMAT": "text"})
    assert as_text.stderr == "AccessDeniedException\tno\tno\n"
    validation = run_cli([*args, "--page-size", "0", "--cli-error-format", "yaml"], cli_env)
    assert validation.rc == 252
    # (the same bytes AWS CLI v2's YAML dumper prints)
    assert validation.stderr == (
        "Code: ParamValidation\nMessage: 'Parameter validation failed:\n\n  Invalid value for "
        "parameter maxResults, value: 0, valid min value: 1'\n"
    )
    stub.admin(
        "fail", {"status": 400, "code": "TooManyTagsException", "message": "too many", "times": 1}
    )
    enhanced = run_cli(
        [
            "--endpoint-url",
            stub.url,
            "tag-resource",
            "--resource-arn",
            "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcd1234efgh",
            "--tags",
            "key=a,value=b",
        ],
        cli_env,
    )
    assert enhanced.rc == 254
    assert enhanced.stderr.startswith(
        "\nbatchrock: [ERROR]: An error occurred (TooManyTagsException) when calling the "
        "TagResource operation: too many\n"
    )
