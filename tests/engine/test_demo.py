"""`batchrock demo` runs end to end: four jobs, one stopped, one failed, a manifest and a result
shown whole, and closing commands that work as printed."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from batchrock import demo
from tests.conftest import free_port, wait_until_serving

pytestmark = pytest.mark.timeout(180)

FINAL_STATES = {
    "demo-claude": "Completed",
    "demo-embeddings": "Completed",
    "demo-nova-stopped": "Stopped",
    "demo-bad-input": "Failed",
}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("BATCHROCK_", "AWS_"))}


def test_demo_runs_every_job_to_a_final_state_and_its_hints_work(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo-data"
    port = free_port()  # the port the closing hint's server gets (8765 may be taken here)
    result = subprocess.run(
        [sys.executable, "-m", "batchrock.admin", "demo", "--data-dir", str(data_dir)],
        env={**_env(), "BATCHROCK_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "aws bedrock list-model-invocation-jobs:" not in out  # the table is not its output
    listing = out.split("The jobs as ListModelInvocationJobs returns them, oldest first:\n", 1)[1]
    rows = {line.split()[0]: line.split()[1] for line in listing.splitlines()[1:5]}
    assert rows == FINAL_STATES
    table = listing.split("\n\n", 1)[0]
    assert max(len(line) for line in table.splitlines()) <= 96  # the message is wrapped
    message = " ".join(table.split("message:", 1)[1].split())
    assert message.startswith(
        "Line 42 of the input file s3://demo-bucket/input/bad/questions.jsonl"
    )
    assert '"totalRecordCount": 300' in out and '"successRecordCount": 300' in out
    outputs = list((data_dir / "s3" / "demo-bucket" / "output").glob("*/part-1.jsonl.out"))
    assert len(outputs) == 1
    # The first result is shown whole (indented), not cut: it reads back as the file's line.
    shown = out.split("part-1.jsonl.out, indented:\n", 1)[1].split("\n}\n", 1)[0] + "\n}"
    first_line = outputs[0].read_bytes().split(b"\n", 1)[0]
    assert orjson.loads(shown) == orjson.loads(first_line)
    run_hints(out, port, data_dir)


def hint_commands(out: str) -> list[str]:
    """The indented command lines after "To look at them again"."""
    tail = out.split("To look at them again", 1)[1]
    return [line[2:] for line in tail.splitlines() if line.startswith("  ")]


def run_hints(out: str, port: int, data_dir: Path) -> None:
    """Run the printed commands as a user would: the server in another terminal (here: the
    background, until it answers), then the client lines in one shell."""
    serve, *client = hint_commands(out)
    assert f"--data-dir {data_dir}" in serve and f"--port {port}" in serve
    proc = subprocess.Popen(
        shlex.split(serve), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", proc)
        assert client[0].startswith("export AWS_DEFAULT_REGION=")
        for command in client[1:]:
            listed = subprocess.run(
                ["bash", "-c", f"{client[0]}\n{command}"],
                env=_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert listed.returncode == 0, (command, listed.stderr)
            jobs = dict(line.split("\t") for line in listed.stdout.splitlines())
            assert jobs == FINAL_STATES, command
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_hint_uses_the_default_port_when_it_is_free_and_another_when_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = free_port()
    monkeypatch.setattr(demo, "DEFAULT_PORT", free)
    serve, _export, listing, *_ = hint_commands(demo.try_it_yourself(tmp_path, free))
    assert "--port" not in serve and "--endpoint-url" not in listing
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free))
        busy.listen()
        serve, _export, listing, *_ = hint_commands(demo.try_it_yourself(tmp_path, free))
    other = int(serve.rsplit("--port ", 1)[1])
    assert other != free and f"--endpoint-url http://127.0.0.1:{other} " in listing


def test_hint_names_a_batchrock_that_runs_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Path(sys.executable).parent / "batchrock"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert demo.batchrock_command() == shlex.quote(str(script.absolute()))
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert demo.batchrock_command() == "batchrock"
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert demo.batchrock_command() == f"{tmp_path / 'python'} -m batchrock.cli"
