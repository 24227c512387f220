"""Fixtures for backend tests: fake model servers run as real processes."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from batchrock.backends.base import ModelRequest, ModelResult
from batchrock.backends.routing import build_resolver
from batchrock.settings import Settings

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FakeServer:
    url: str
    log: Path
    process: subprocess.Popen[str]

    def requests(self) -> list[dict[str, object]]:
        if not self.log.exists():
            return []
        return [orjson.loads(line) for line in self.log.read_text().splitlines()]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def clear(self) -> None:
        self.log.write_text("")


def start(script: str, tmp: Path, *args: str, port: int | None = None) -> FakeServer:
    """Run a fake server process on ``port`` (a free one when not given)."""
    port = port or free_port()
    log = tmp / f"{script}-{port}.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(HERE / script), "--port", str(port), "--log", str(log), *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        raise RuntimeError(f"{script} did not start: {line!r}")
    return FakeServer(f"http://127.0.0.1:{port}", log, process)


@pytest.fixture(scope="module")
def fake_openai(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    server = start("fake_openai.py", tmp_path_factory.mktemp("openai"))
    yield server
    server.stop()


def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials botocore's standard chain finds (here and in server processes started
    after this), and no shared config or credentials file of the machine's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


@pytest.fixture(scope="module")
def fake_bedrock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    server = start("fake_bedrock.py", tmp_path_factory.mktemp("bedrock"))
    yield server
    server.stop()


def run(settings: Settings, *requests: ModelRequest) -> list[ModelResult]:
    """Answer ``requests`` with the backends ``settings`` route them to."""

    async def go() -> list[ModelResult]:
        resolver = build_resolver(settings)
        try:
            return list(
                await asyncio.gather(*(resolver.for_model(r.model_id).invoke(r) for r in requests))
            )
        finally:
            await resolver.aclose()

    return asyncio.run(go())
