"""Terminal behaviour through a pseudo-terminal: auto-prompt, pager, colour."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from typing import Any

from tests.cli.conftest import BATCHROCK, Stub, run_cli


class Terminal:
    """``batchrock`` running on a pseudo-terminal of a given width."""

    def __init__(self, args: list[str], env: dict[str, str], columns: int = 120) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("hhhh", 40, columns, 0, 0))
        self.proc = subprocess.Popen(
            [str(BATCHROCK), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            # No cursor-position answers come from this fake terminal; tell prompt-toolkit.
            env={**env, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"},
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        self.master = master
        self.output = b""

    def read_until(self, pattern: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while pattern not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{pattern!r} not seen in {self.output[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"EOF before {pattern!r}: {self.output[-2000:]!r}")
                self.output += chunk
        return self.output

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                self.output += chunk
            elif self.proc.poll() is not None:
                break
        rc = self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        os.close(self.master)
        return rc


def _plain(data: bytes) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]", "", data.decode("utf-8", "replace"))


def test_auto_prompt_completes_options_and_enum_values_then_runs(
    fresh_stub: Stub, cli_env: dict[str, str]
) -> None:
    term = Terminal(["--endpoint-url", fresh_stub.url, "--cli-auto-prompt"], cli_env)
    term.read_until(b"> batchrock")
    # Type, let the completion menu appear, then Tab takes the (only) completion.
    for typed, completed in (
        (b"list-model-invocation-jo", b"list-model-invocation-jobs"),
        (b" --status-eq", b"--status-equals"),
        (b" Comp", b"Completed"),
    ):
        term.send(typed)
        term.read_until(completed)
        time.sleep(0.3)
        term.send(b"\t")
        time.sleep(0.3)
    term.send(b" --output text --query invocationJobSummaries[].jobName\r")
    assert term.finish() == 0, term.output
    assert "batch-job-1" in _plain(term.output).splitlines()[-1]
    assert fresh_stub.requests()[-1]["raw_query"] == "statusEquals=Completed"


def test_auto_prompt_ctrl_c_exits_130(cli_env: dict[str, str]) -> None:
    term = Terminal(["--cli-auto-prompt"], cli_env)
    term.read_until(b"> batchrock")
    term.send(b"\x03")
    assert term.finish() == 130


def test_auto_prompt_needs_a_terminal(cli_env: dict[str, str]) -> None:
    result = run_cli(["list-model-invocation-jobs", "--cli-auto-prompt"], cli_env)
    assert result.rc == 255
    assert "Input is not a terminal" in result.stderr + result.stdout
    both = run_cli(
        ["list-model-invocation-jobs", "--cli-auto-prompt", "--no-cli-auto-prompt"], cli_env
    )
    assert both.rc == 252


def test_pager_runs_only_on_a_terminal_and_gets_less_flags(
    fresh_stub: Stub, cli_env: dict[str, str]
) -> None:
    args = [
        "--endpoint-url",
        fresh_stub.url,
        "list-model-invocation-jobs",
        "--output",
        "text",
        "--query",
        "invocationJobSummaries[].jobName",
    ]
    env: dict[str, Any] = {**cli_env, "AWS_PAGER": "sed s/^/[$LESS]/"}
    env.pop("LESS", None)
    term = Terminal(args, env)
    assert term.finish() == 0
    assert _plain(term.output) == "[FRX]batch-job-1\tbatch-job-2\r\n"
    no_pager = Terminal([*args, "--no-cli-pager"], env)
    assert no_pager.finish() == 0
    assert _plain(no_pager.output) == "batch-job-1\tbatch-job-2\r\n"
    piped = run_cli(args, env)
    assert piped.stdout == "batch-job-1\tbatch-job-2\n"


def test_table_colour_follows_the_terminal(fresh_stub: Stub, cli_env: dict[str, str]) -> None:
    args = [
        "--endpoint-url",
        fresh_stub.url,
        "list-model-invocation-jobs",
        "--output",
        "table",
        "--query",
        "invocationJobSummaries[].[jobName,status]",
    ]
    on_tty = Terminal(args, cli_env)
    assert on_tty.finish() == 0
    assert b"\x1b[1m\x1b[34mbatch-job-1\x1b[0m" in on_tty.output
    off = Terminal([*args, "--color", "off"], cli_env)
    assert off.finish() == 0
    assert b"\x1b[" not in off.output
    piped = run_cli(args, cli_env)
    assert "\x1b[" not in piped.stdout
    forced = run_cli([*args, "--color", "on"], cli_env)
    assert "\x1b[1m\x1b[34mbatch-job-1\x1b[0m" in forced.stdout


def test_on_partial_prompts_only_for_incomplete_commands(
    fresh_stub: Stub, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "AWS_CLI_AUTO_PROMPT": "on-partial"}
    complete = run_cli(
        [
            "--endpoint-url",
            fresh_stub.url,
            "list-model-invocation-jobs",
            "--query",
            "length(invocationJobSummaries)",
        ],
        env,
    )
    assert (complete.rc, complete.stdout) == (0, "2\n")
    incomplete = run_cli(["--endpoint-url", fresh_stub.url, "get-model-invocation-job"], env)
    assert incomplete.rc == 255
    assert "Input is not a terminal" in incomplete.stderr
    term = Terminal(["--endpoint-url", fresh_stub.url, "get-model-invocation-job"], env)
    term.read_until(b"> batchrock")
    term.send(b" --job-identifier abcd1234efgh --query jobName\r")
    assert term.finish() == 0
    assert _plain(term.output).splitlines()[-1] == '"batch-job-1"'


def test_pager_starts_only_when_there_is_output(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "AWS_PAGER": "echo PAGER-STARTED; cat", "AWS_MAX_ATTEMPTS": "1"}
    term = Terminal(["--endpoint-url", "http://127.0.0.1:9", "list-model-invocation-jobs"], env)
    assert term.finish() == 255
    assert "PAGER-STARTED" not in _plain(term.output)
    assert "Could not connect to the endpoint URL" in _plain(term.output)


def test_colour_through_a_pager_has_no_per_write_resets(
    fresh_stub: Stub, cli_env: dict[str, str]
) -> None:
    args = [
        "--endpoint-url",
        fresh_stub.url,
        "list-model-invocation-jobs",
        "--output",
        "table",
        "--query",
        "invocationJobSummaries[].[jobName,status]",
    ]
    term = Terminal(args, {**cli_env, "AWS_PAGER": "cat"})
    assert term.finish() == 0
    # colours, but colorama's resets only wrap direct writes to the terminal, plus one at exit
    assert b"\x1b[1m\x1b[34mbatch-job-1\x1b[0m" in term.output
    assert b"\x1b[0m\x1b[0m" not in term.output
    assert term.output.endswith(b"\x1b[0m")
