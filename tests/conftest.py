"""Shared fixtures: real `batchrock serve` processes on free loopback ports, and boto3 clients.

def test_x(server_factory):
    server = server_factory(engine=False)      # extra settings -> BATCHROCK_<NAME>
    client = bedrock_client(server.url)
    server.kill(); server.start()              # SIGKILL and restart, same port and data
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_serving(
    url: str, proc: subprocess.Popen[Any], timeout: float = 30.0, log_path: Path | None = None
) -> None:
    """Return once the server ``proc`` answers its health check at ``url``."""

    def log() -> str:
        return log_path.read_text(errors="replace")[-3000:] if log_path else ""

    deadline = time.monotonic() + timeout
    # Only "is it up yet": the tests themselves check the certificate.
    context = ssl._create_unverified_context() if url.startswith("https") else None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log()}")
        try:
            with urllib.request.urlopen(url + "/_batchrock/health", timeout=1, context=context):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not start: {log()}")


class ServerProcess:
    """One `batchrock serve` process and its data dir."""

    def __init__(self, data_dir: Path, settings: dict[str, Any], log_path: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.get("tls_cert") else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHROCK_")}
        for name, value in self.settings.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            env[f"BATCHROCK_{name.upper()}"] = str(value)
        return env

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = self._spawn(log)
        wait_until_serving(self.url, self.proc, timeout, self.log_path)

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchrock.admin",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def history(self, job: str) -> list[tuple[str, int]]:
        """A job's status history in the server's store (job id or ARN): (status, time in
        microseconds), oldest first. Tests wait on it rather than on passing states."""
        rows = self._query(
            "SELECT to_status, at FROM job_events WHERE job_id = ? ORDER BY id",
            (job.rsplit("/", 1)[-1],),
        )
        return [(str(status), int(at)) for status, at in rows]

    def progress(self, job: str) -> tuple[str, int]:
        """The job's status and checkpointed processedRecordCount, read from the store."""
        (row,) = self._query(
            "SELECT status, processed_records FROM jobs WHERE job_id = ?",
            (job.rsplit("/", 1)[-1],),
        )
        return str(row[0]), int(row[1])

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` (``?`` placeholders) in the server's store, read as another
        process would: its SQLite file, or the PostgreSQL database its ``database_url``
        names."""
        url = self.settings.get("database_url")
        if url:
            import psycopg

            with psycopg.connect(str(url), autocommit=True) as pg:
                return pg.execute(sql.replace("?", "%s"), params).fetchall()
        conn = sqlite3.connect(self.data_dir / "batchrock.sqlite3", timeout=10)
        try:
            return list(conn.execute(sql, params).fetchall())
        finally:
            conn.close()

    def wait_history(self, job: str, status: str, timeout: float = 60.0) -> list[tuple[str, int]]:
        """Wait until the job has been ``status`` (now or before); return its history."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.history(job)
            if any(s == status for s, _ in events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"job never {status}: {events} {self.log()[-3000:]}")
            time.sleep(0.02)


@pytest.fixture
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    servers: list[ServerProcess] = []

    def make(**settings: Any) -> ServerProcess:
        root = tmp_path_factory.mktemp("server")
        # Jobs are validated at once unless a test asks for Bedrock's Submitted dwell, and
        # answered in the engine process unless a test asks for worker processes (a pool per
        # server would cost every test its start-up on CI's two CPUs).
        settings = {"engine_min_submitted_seconds": 0, "engine_processes": 1, **settings}
        server = ServerProcess(root / "data", settings, root / "server.log")
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True, scope="session")
def one_cpu_by_default() -> Iterator[None]:
    """Resolvers built in the tests' own processes see one CPU, so ``engine_processes``'
    default (as many worker processes as CPUs) starts none; tests of the worker processes set
    ``engine_processes`` themselves (tests/backends/test_process_pool.py)."""
    from batchrock.backends import process_pool

    patch = pytest.MonkeyPatch()
    patch.setattr(process_pool, "available_cpus", lambda: 1)
    yield
    patch.undo()


@pytest.fixture
def sqlite_store_factory(tmp_path: Path) -> Any:
    """A fresh SQLite database (see tests/stores.py)."""
    from tests.stores import SqliteFactory

    return SqliteFactory(tmp_path / "db" / "batchrock.sqlite3")


@pytest.fixture
def pg_store_factory(pg_url: str) -> Any:
    """A fresh PostgreSQL database on the session's server (see tests/stores.py)."""
    from tests.stores import PostgresFactory

    return PostgresFactory(pg_url)


def _store_factory_params() -> list[str]:
    from tests.stores import STORE_FACTORIES

    return STORE_FACTORIES


@pytest.fixture(params=_store_factory_params())
def store_factory(request: pytest.FixtureRequest) -> Any:
    """Each store implementation in turn (tests/stores.py STORE_FACTORIES), on a fresh
    database."""
    return request.getfixturevalue(request.param)


def bedrock_client(
    url: str, region: str = "us-east-1", access_key: str = "AKIAEXAMPLE", **config: Any
) -> Any:
    """A real boto3 bedrock client pointed at ``url`` (no retries: tests see every answer)."""
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key="secret", region_name=region
    )
    return session.client(
        "bedrock",
        endpoint_url=url,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, **config),
    )


# CI sets BATCHROCK_NO_SKIPS=1: there a skipped test means a missing install step (an extra,
# shared/), which must fail the run rather than hide behind a green result. Tests marked
# `external` need something no install step can provide here, and may skip.
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "external" not in report.keywords:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("BATCHROCK_NO_SKIPS") and _skipped and exitstatus == 0:
        print(f"\nBATCHROCK_NO_SKIPS is set and {len(_skipped)} test(s) were skipped:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A PostgreSQL server of the tests' own for the session (tests/pg.py), with a template
    database already migrated. Skipped where the server binaries are missing, which fails a
    CI run (BATCHROCK_NO_SKIPS; the Makefile installs them there)."""
    from tests import pg

    if pg.server_bindir() is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    with pg.pg_server() as server:
        pg.create_template(server)
        yield server


@pytest.fixture
def pg_url(pg_server: Any) -> Iterator[str]:
    """A fresh database (schema applied, no jobs) on the session's server: its URL."""
    url: str = pg_server.new_database()
    yield url
    pg_server.drop_database(url)
