"""Fixtures of the engine tests: a real S3-compatible server (moto's, as a process), and the
engine suites of _ON_EVERY_STORE run once per store in tests/stores.py (the Harness opening
that store)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import free_port
from tests.engine import harness
from tests.stores import STORE_FACTORIES

#: The engine suites that run on every store: each of their tests once per store (tests
#: driven by a Harness; the server-process suites, test_crash, choose their store themselves).
_ON_EVERY_STORE = {
    "tests.engine.test_changed_input",
    "tests.engine.test_claims",
    "tests.engine.test_fencing",
    "tests.engine.test_grants",
    "tests.engine.test_harness",
    "tests.engine.test_in_order",
    "tests.engine.test_inputs",
    "tests.engine.test_lifecycle",
    "tests.engine.test_media",
    "tests.engine.test_model_quotas",
    "tests.engine.test_output_invariant",
    "tests.engine.test_s3_resume",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__ in _ON_EVERY_STORE:
        ids = [name.removesuffix("_store_factory") for name in STORE_FACTORIES]
        metafunc.parametrize("harness_store", STORE_FACTORIES, indirect=True, ids=ids)


@pytest.fixture(autouse=True)
def harness_store(request: pytest.FixtureRequest) -> Iterator[None]:
    """The store the Harness opens for this test (tests/engine/harness.py DEFAULT_FACTORY):
    the parametrised factory's (SQLite's in its data dir, as before, for the first). Every
    Harness's store is closed after the test."""
    name = getattr(request, "param", None)
    if name is not None and name != STORE_FACTORIES[0]:
        harness.DEFAULT_FACTORY = request.getfixturevalue(name)
    try:
        yield
    finally:
        harness.DEFAULT_FACTORY = None
        harness.close_all()


#: The smallest part but the last that :func:`moto_small_parts_url`'s server accepts (S3's is
#: 5 MiB): the engine's multipart checkpoints can then be walked with small files.
SMALL_PART_BYTES = 1024


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``moto_server`` on a free loopback port, for the whole session."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@pytest.fixture(scope="session")
def moto_small_parts_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second ``moto_server`` whose multipart uploads take parts of ``SMALL_PART_BYTES``
    (moto's ``S3_UPLOAD_PART_MIN_SIZE``), otherwise the same S3 rules."""
    env = {"S3_UPLOAD_PART_MIN_SIZE": str(SMALL_PART_BYTES)}
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log", env=env) as url:
        yield url


@contextlib.contextmanager
def moto_server(
    log_path: Path,
    listen: str = "127.0.0.1",
    reach: str = "127.0.0.1",
    wrap: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Run ``moto_server`` on a free port for the block; its URL at ``reach``. ``wrap``
    prefixes its command (the multi-host test runs it in a network namespace of its own,
    listening on ``0.0.0.0`` there); ``env`` adds to its environment."""
    port = free_port()
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "moto.server"]
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [*wrap, *cmd, "-H", listen, "-p", str(port)],
        stdout=log,
        stderr=log,
        env={**os.environ, **(env or {})},
    )
    url = f"http://{reach}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def s3_client(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@contextlib.contextmanager
def fifo_watchdog(*fifos: Path, after: float = 10.0) -> Iterator[list[Path]]:
    """Should anything open one of ``fifos`` for reading and wait there (a reader waits for a
    writer), open it for writing after ``after`` seconds so the test fails instead of hanging;
    the list it yields names the FIFOs that had to be released."""
    released: list[Path] = []
    done = threading.Event()

    def release() -> None:
        if done.wait(after):
            return
        for fifo in fifos:
            try:  # succeeds only while a reader is waiting
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue
            released.append(fifo)
            os.close(fd)

    watchdog = threading.Thread(target=release, daemon=True)
    watchdog.start()
    try:
        yield released
    finally:
        done.set()
        watchdog.join()
