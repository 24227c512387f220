"""Input that is not a plain file, and the data dir's permissions, through a real
`batchrock serve` process and boto3."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerProcess, bedrock_client

from .test_e2e import FAST, claude_records, create, out_folder, put, wait

pytestmark = pytest.mark.timeout(120)


def test_fifo_input_fails_stop_works_and_sigterm_exits(server_factory: Any) -> None:
    server = server_factory(**FAST)
    put(server, "in/a.jsonl", claude_records(3))
    os.mkfifo(server.data_dir / "s3" / "bucket" / "in" / "b.jsonl")
    job = wait(server, create(server), timeout=20)
    assert job["status"] == "Failed"
    assert job["message"] == (
        "The input file s3://bucket/in/b.jsonl is a FIFO (named pipe), not a regular file: "
        "the local object store reads regular files only."
    )
    # A stop right after Create ends the job, whichever comes first: the stop or the failure.
    arn = create(server)
    try:
        bedrock_client(server.url).stop_model_invocation_job(jobIdentifier=arn)
    except ClientError as exc:  # it failed already
        assert "State was: Failed" in str(exc), exc
    assert wait(server, arn, timeout=20)["status"] in {"Stopped", "Failed"}
    # A third job is left in flight for the shutdown.
    create(server)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    # uvicorn re-raises the signal once it has shut down cleanly.
    assert server.proc.wait(timeout=20) in {0, -signal.SIGTERM}
    assert time.monotonic() - started < 15
    assert "Application shutdown complete" in server.log()


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _serve(tmp_path: Path, **settings: Any) -> ServerProcess:
    return ServerProcess(tmp_path / "data", {**FAST, **settings}, tmp_path / "server.log")


def _run_one_job(server: ServerProcess) -> str:
    put(server, "in/a.jsonl", claude_records(5))
    arn = create(server)
    job = wait(server, arn, timeout=30)
    assert job["status"] == "Completed", job.get("message")
    return arn


def test_data_dir_and_what_it_holds_are_private_to_the_user(tmp_path: Path) -> None:
    """Under umask 022: an existing data dir left open to others is made private once (with
    a warning), stale temporary files are removed at start, and the database, its WAL files
    and a job's outputs are the user's only."""
    old_umask = os.umask(0o022)
    server = _serve(tmp_path)
    try:
        tmp = server.data_dir / "s3" / ".tmp"
        tmp.mkdir(parents=True)
        (tmp / "5eeded0000000000.tmp").write_bytes(b"x" * 4096)  # left by a SIGKILL
        os.chmod(server.data_dir, 0o755)
        server.start()
        assert _mode(server.data_dir) == 0o700
        assert server.log().count("was open to other users (mode 755); it is now 700") == 1
        assert not (tmp / "5eeded0000000000.tmp").exists()

        arn = _run_one_job(server)
        db = server.data_dir / "batchrock.sqlite3"
        wal = [db.with_name(db.name + s) for s in ("-wal", "-shm")]
        for path in [db, *wal]:
            assert _mode(path) == 0o600, path
        folder = out_folder(server, arn)
        assert _mode(folder) == 0o700
        assert _mode(folder / "a.jsonl.out") == _mode(folder / "manifest.json.out") == 0o600

        server.stop()
        server.start()  # nothing more to say on the second start
        assert server.log().count("open to other users") == 1
    finally:
        server.stop()
        os.umask(old_umask)


def test_private_files_off_leaves_modes_to_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    server = _serve(tmp_path, private_files=False)
    try:
        server.start()
        arn = _run_one_job(server)
        assert _mode(server.data_dir) == 0o755
        assert _mode(server.data_dir / "batchrock.sqlite3") == 0o644
        folder = out_folder(server, arn)
        assert _mode(folder) == 0o755
        assert _mode(folder / "a.jsonl.out") == _mode(folder / "manifest.json.out") == 0o644
    finally:
        server.stop()
        os.umask(old_umask)
