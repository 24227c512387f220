"""Input that is not a plain file, through a real `batchrock serve` process and boto3."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import bedrock_client

from .test_e2e import FAST, claude_records, create, put, wait

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
