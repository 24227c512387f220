"""Behaviours checked against a live AWS CLI v2.36.7 run (not in the recorded oracle set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import Stub, run_cli

LIST = ["list-model-invocation-jobs"]
PAGING_CONFIG_ERROR = (
    'Parameter validation failed:\nUnknown parameter in input: "PaginationConfig", must be one '
    "of: submitTimeAfter, submitTimeBefore, statusEquals, nameContains, maxResults, nextToken, "
    "sortBy, sortOrder\n"
)


@pytest.mark.parametrize(
    ("args", "env", "rc", "message"),
    [
        (["--endpoint-url", "localhost:5097", *LIST], {}, 255, "Invalid endpoint: localhost:5097"),
        (["--endpoint-url", "http://a_b.com", *LIST], {}, 255, "Invalid endpoint: http://a_b.com"),
        ([*LIST], {"AWS_ENDPOINT_URL": "http://-bad-/"}, 255, "Invalid endpoint: http://-bad-/"),
        (
            ["--endpoint-url", "ftp://x", *LIST],
            {},
            255,
            "An HTTP Client raised an unhandled exception: Not supported URL scheme ftp",
        ),
        (
            [*LIST, "--cli-read-timeout", "-1"],
            {},
            255,
            "Attempted to set read timeout to -1, but the timeout cannot be set to a value less "
            "than or equal to 0.",
        ),
        (
            [*LIST],
            {"AWS_RETRY_MODE": "legacy"},
            255,
            'Invalid value provided to "mode": "legacy" must be one of: "standard" or "adaptive"',
        ),
        (
            [*LIST],
            {"AWS_MAX_ATTEMPTS": "0"},
            255,
            'Value provided to "max_attempts": 0 must be an integer greater than or equal to one.',
        ),
        ([*LIST], {"AWS_MAX_ATTEMPTS": "x"}, 255, "invalid literal for int() with base 10: 'x'"),
        (
            [*LIST, "--max-results", "1", "--page-size", "2"],
            {},
            252,
            "(ParamValidation): Cannot specify --no-paginate along with pagination arguments: "
            "--page-size",
        ),
        (
            [*LIST, "--cli-input-json", '{"maxResults": 1}', "--starting-token", "x"],
            {},
            252,
            PAGING_CONFIG_ERROR,
        ),
        (
            [*LIST, "--generate-cli-skeleton", "--cli-input-json", "{"],
            {},
            252,
            "Error parsing parameter 'cli-input-json': Invalid JSON received.",
        ),
    ],
)
def test_error_cases(
    stub: Stub, cli_env: dict[str, str], args: list[str], env: dict[str, str], rc: int, message: str
) -> None:
    stub.fixture("two")
    full = (
        args
        if "--endpoint-url" in args or "AWS_ENDPOINT_URL" in env
        else ["--endpoint-url", stub.url, *args]
    )
    result = run_cli(full, {**cli_env, **env})
    assert result.rc == rc, result.stderr
    assert message in result.stderr
    assert stub.requests() == []


def test_list_options_accept_no_values(stub: Stub, cli_env: dict[str, str]) -> None:
    stub.fixture("two")
    arn = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcd1234efgh"
    result = run_cli(
        ["--endpoint-url", stub.url, "untag-resource", "--resource-arn", arn, "--tag-keys"],
        cli_env,
    )
    assert result.rc == 254  # the stub has no tag routes: what matters is what was sent
    assert stub.requests()[-1]["body"] == f'{{"resourceARN": "{arn}", "tagKeys": []}}'


def test_yaml_stream_of_an_operation_without_output_prints_nothing(
    fresh_stub: Stub, cli_env: dict[str, str]
) -> None:
    result = run_cli(
        [
            "--endpoint-url",
            fresh_stub.url,
            "stop-model-invocation-job",
            "--job-identifier",
            "abcd1234efgh",
            "--output",
            "yaml-stream",
        ],
        cli_env,
    )
    assert (result.rc, result.stdout) == (0, "")


def test_parameter_order_with_a_starting_token(stub: Stub, cli_env: dict[str, str]) -> None:
    stub.fixture("gen:7")
    run_cli(
        [
            "--endpoint-url",
            stub.url,
            *LIST,
            "--starting-token",
            "garbage",
            "--sort-order",
            "Ascending",
            "--page-size",
            "2",
        ],
        cli_env,
    )
    # the command's parameters, then the token, then the page size
    assert stub.requests()[0]["raw_query"] == "sortOrder=Ascending&nextToken=garbage&maxResults=2"


def test_config_files_parse_as_botocore_parses_them(
    fresh_stub: Stub, cli_env: dict[str, str], aws_home: Path
) -> None:
    args = ["--endpoint-url", fresh_stub.url, *LIST, "--query", "length(invocationJobSummaries)"]
    (aws_home / "config").write_text("not an ini file\n[default\n")
    broken = run_cli(args, cli_env)
    assert (broken.rc, broken.stderr) == (
        255,
        f"\nbatchrock: [ERROR]: Unable to parse config file: {aws_home / 'config'}\n",
    )
    (aws_home / "config").write_text("")
    (aws_home / "credentials").write_text("garbage line\n")
    assert run_cli(args, cli_env).rc == 255
    (aws_home / "credentials").write_text("")
    # Option names are case-insensitive and [profile default] names the default profile.
    (aws_home / "config").write_text("[profile default]\nOutput = text\n")
    assert run_cli(args, cli_env).stdout == "2\n"


@pytest.mark.parametrize(
    ("extra", "listed"),
    [
        (["a", "b", "c"], "b, c, a"),
        (["a", "--foo", "b"], "--foo, b, a"),
        (["foo", "help"], "help, foo"),
    ],
)
def test_unknown_options_are_listed_in_aws_cli_order(
    cli_env: dict[str, str], extra: list[str], listed: str
) -> None:
    # AWS CLI takes the first stray word as a would-be "help" and lists it last.
    result = run_cli(["--endpoint-url", "http://127.0.0.1:9", *LIST, *extra], cli_env)
    assert result.rc == 252
    assert result.stderr.endswith(f"\nbatchrock: [ERROR]: Unknown options: {listed}\n")
