"""Fixtures for the command line's tests: the oracle's stub server, an isolated AWS
environment, and a runner for the real ``batchrock`` console script."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"
ORACLE = SHARED / "tools" / "awscli-oracle"
BATCHROCK = Path(sys.executable).parent / "batchrock"


def need_oracle() -> None:
    if not (ORACLE / "stub_server.py").exists():
        pytest.skip(f"the AWS CLI oracle is not next to the repository ({ORACLE} is missing)")


@dataclass
class Stub:
    """The oracle's stub Bedrock service (records every request it gets)."""

    url: str
    proc: subprocess.Popen[bytes]

    def admin(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        method = "GET" if path == "requests" else "POST"
        req = urllib.request.Request(f"{self.url}/__admin/{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else None

    def fixture(self, name: str) -> None:
        self.admin("reset", {})
        self.admin(f"fixture?name={name}", {})

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.admin("requests")
        return result


@pytest.fixture(scope="session")
def stub() -> Iterator[Stub]:
    need_oracle()
    folder = tempfile.mkdtemp(prefix="stubport")
    port_file = os.path.join(folder, "port")
    proc = subprocess.Popen(
        [sys.executable, str(ORACLE / "stub_server.py"), "--port", "0", "--port-file", port_file],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        if os.path.exists(port_file):
            text = Path(port_file).read_text().strip()
            if text:
                break
        time.sleep(0.02)
    port = int(text)
    shutil.rmtree(folder, ignore_errors=True)
    yield Stub(f"http://127.0.0.1:{port}", proc)
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def fresh_stub(stub: Stub) -> Stub:
    stub.fixture("two")
    return stub


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def aws_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config").write_text("")
    (home / "credentials").write_text("")
    return home


@pytest.fixture
def cli_env(aws_home: Path) -> dict[str, str]:
    """Like the oracle's per-case environment: own HOME and AWS files, keys test/test."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "BATCHROCK_"))
        and k not in ("COLUMNS", "LINES", "PAGER")
        and k.lower() not in ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
    }
    env.update(
        {
            "HOME": str(aws_home),
            "AWS_CONFIG_FILE": str(aws_home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(aws_home / "credentials"),
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
            "TZ": "UTC",
            "LC_ALL": "C.UTF-8",
        }
    )
    return env


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(
    args: list[str], env: dict[str, str], *, stdin: str = "", timeout: float = 60
) -> Result:
    proc = subprocess.run(
        [str(BATCHROCK), *args],
        env=env,
        input=stdin.encode(),
        capture_output=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
