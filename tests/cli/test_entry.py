"""Entry points, version, help, admin dispatch, debug logging and Ctrl-C."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from batchrock.cli.main import ADMIN_COMMANDS, main
from batchrock.cli.model import load
from tests.cli.conftest import BATCHROCK, Stub, run_cli

VERSION = re.compile(r"^batchrock-cli/\d+\.\d+\.\d+\S* Python/\S+ \S+/\S+ source/\S+\n$")


def test_version_line_in_aws_cli_v2_shape(cli_env: dict[str, str]) -> None:
    result = run_cli(["--version"], cli_env)
    assert result.rc == 0
    assert VERSION.match(result.stdout), result.stdout
    module = subprocess.run(
        [sys.executable, "-m", "batchrock.cli", "--version"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert module.returncode == 0
    assert module.stdout == result.stdout


def test_main_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert VERSION.match(capsys.readouterr().out)
    # Global options and no command: the AWS CLI's usage error.
    assert main(["--region", "us-east-1"]) == 252
    assert "the following arguments are required: command" in capsys.readouterr().err


@pytest.mark.parametrize("args", [[], ["--help"], ["-h"], ["--no-cli-pager", "--help"]])
def test_no_command_or_help_flag_prints_batchrock_usage(
    cli_env: dict[str, str], args: list[str]
) -> None:
    result = run_cli(args, cli_env)
    assert (result.rc, result.stderr) == (0, "")
    text = result.stdout
    assert text.startswith("usage: batchrock <command> [options]\n")
    for name, description in ADMIN_COMMANDS.items():
        line = next(line for line in text.splitlines() if line.startswith(f"  {name} "))
        assert description.split()[0] in line
    for operation in load().operations:
        assert f"\n  {operation}\n" in text
    assert "batchrock serve --help" in text and "batchrock <operation> help" in text
    assert max(len(line) for line in text.splitlines()) <= 79


def test_help_flag_after_a_command_shows_its_page(cli_env: dict[str, str]) -> None:
    for command in (["list-model-invocation-jobs"], ["bedrock", "get-model-invocation-job"]):
        flag = run_cli([*command, "--help"], cli_env)
        word = run_cli([*command, "help"], cli_env)
        assert flag.rc == word.rc == 0
        assert flag.stdout == word.stdout and flag.stdout.startswith(command[-1] + "\n")
    service = run_cli(["bedrock", "-h"], cli_env)
    assert service.rc == 0 and service.stdout == run_cli(["bedrock", "help"], cli_env).stdout


@pytest.mark.parametrize("command", sorted(ADMIN_COMMANDS))
def test_admin_commands_are_dispatched_to_the_service(
    cli_env: dict[str, str], command: str
) -> None:
    result = run_cli([command, "--help"], cli_env)
    assert result.rc == 0, result.stderr
    assert result.stdout.startswith(f"usage: batchrock {command} ")
    assert ADMIN_COMMANDS[command] in " ".join(result.stdout.split())
    # keys edits the credentials file; the others run on a data dir.
    assert ("--credentials-file" if command == "keys" else "--data-dir") in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["list-model-invocation-jobs", "help"],
        ["bedrock", "list-model-invocation-jobs", "help"],
    ],
)
def test_operation_help(cli_env: dict[str, str], args: list[str]) -> None:
    result = run_cli(args, cli_env)
    assert result.rc == 0
    text = result.stdout
    assert text.startswith("list-model-invocation-jobs\n")
    for needle in (
        "--submit-time-after (timestamp)",
        "--status-equals (string)",
        "o PartiallyCompleted",
        "--max-items (integer)",
        "--no-cli-pager",
        "is a paginated operation",
    ):
        assert needle in text
    assert "--max-results" not in text  # hidden by pagination, as in AWS CLI
    assert "OUTPUT\n    nextToken -> (string)" in text
    assert "inputDataConfig -> (tagged union structure)" in text


def test_structure_options_show_shorthand_and_json_syntax(cli_env: dict[str, str]) -> None:
    text = run_cli(["create-model-invocation-job", "help"], cli_env).stdout
    assert "s3InputDataConfig={s3InputFormat=string,s3Uri=string,s3BucketOwner=string}" in text
    assert "key=string,value=string ..." in text
    assert '"s3Uri": "string"' in text


def test_top_and_service_help(cli_env: dict[str, str]) -> None:
    top = run_cli(["help"], cli_env)
    assert top.rc == 0 and "o create-model-invocation-job" in top.stdout
    assert "o serve, worker, models, demo" in top.stdout
    service = run_cli(["bedrock", "help"], cli_env)
    assert service.rc == 0 and "o untag-resource" in service.stdout


def test_typo_suggests_operations(cli_env: dict[str, str]) -> None:
    result = run_cli(["bedrock", "get-model-invocation-jobs"], cli_env)
    assert result.rc == 252
    assert "Found invalid choice 'get-model-invocation-jobs'" in result.stderr
    assert "  * get-model-invocation-job" in result.stderr


def test_debug_logs_the_exchange_without_touching_stdout(
    fresh_stub: Stub, cli_env: dict[str, str]
) -> None:
    args = [
        "--endpoint-url",
        fresh_stub.url,
        "list-model-invocation-jobs",
        "--query",
        "length(invocationJobSummaries)",
    ]
    plain = run_cli(args, cli_env)
    debug = run_cli([*args, "--debug"], cli_env)
    assert debug.stdout == plain.stdout == "2\n"
    assert "CLI version: batchrock-cli/" in debug.stderr
    assert "Arguments entered to CLI:" in debug.stderr
    assert "GET /model-invocation-jobs" in debug.stderr


def test_ctrl_c_exits_130_with_a_newline(cli_env: dict[str, str]) -> None:
    # A server that accepts and never answers keeps the CLI waiting.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            [
                str(BATCHROCK),
                "--endpoint-url",
                f"http://127.0.0.1:{port}",
                "list-model-invocation-jobs",
            ],
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        conn, _ = listener.accept()
        with conn:
            time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert out == b"\n"
