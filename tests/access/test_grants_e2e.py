"""Bucket grants from the credentials file, end to end: a real `batchrock serve` with its engine,
two accounts, jobs on their own and each other's buckets, and a grant changed in the file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.access.conftest import ALICE, BOB, client, credentials_text, job_args, write_credentials

pytestmark = pytest.mark.timeout(120)

FINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}
RECORD = {
    "modelInput": {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello"}],
    }
}


def _put(data_dir: Path, bucket: str, key: str, count: int = 3) -> None:
    path = data_dir / "s3" / bucket / key
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [orjson.dumps({"recordId": f"R{i:010d}", **RECORD}) + b"\n" for i in range(count)]
    path.write_bytes(b"".join(lines))


def _finished(bedrock: Any, arn: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in FINAL:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job still {job['status']}")
        time.sleep(0.05)


def test_jobs_use_only_their_accounts_buckets(server_factory: Any, tmp_path: Path) -> None:
    creds = write_credentials(tmp_path / "credentials.toml")
    server = server_factory(
        credentials_file=creds,
        engine_poll_seconds=0.05,
        engine_checkpoint_seconds=0.1,
        quota_min_records_per_job=1,
    )
    for bucket in ("team-a-data", "team-b-data"):
        _put(server.data_dir, bucket, "input/records.jsonl")
    alice, bob = client(server.url, ALICE), client(server.url, BOB)

    own = alice.create_model_invocation_job(**job_args("own", "team-a-data"))["jobArn"]
    assert _finished(alice, own)["status"] == "Completed"
    assert (server.data_dir / "s3" / "team-a-data" / "output").is_dir()

    theirs = bob.create_model_invocation_job(**job_args("theirs", "team-a-data"))["jobArn"]
    job = _finished(bob, theirs)
    assert job["status"] == "Failed"
    assert "Access denied to the input S3 bucket 'team-a-data'" in job["message"]
    assert "222222222222" in job["message"]

    claimed = job_args("claimed", "team-b-data")
    claimed["inputDataConfig"]["s3InputDataConfig"]["s3BucketOwner"] = "111111111111"
    job = _finished(bob, bob.create_model_invocation_job(**claimed)["jobArn"])
    assert job["status"] == "Failed" and "s3BucketOwner" in job["message"]

    # A grant added to the file applies to the next job, without a restart.
    text = credentials_text().replace(
        'buckets = ["team-b-*"]', 'buckets = ["team-b-*", "team-a-data"]'
    )
    assert text != credentials_text()
    write_credentials(creds, text)
    deadline = time.monotonic() + 30
    while True:
        arn = bob.create_model_invocation_job(**job_args("granted", "team-a-data"))["jobArn"]
        if _finished(bob, arn)["status"] == "Completed":
            break
        assert time.monotonic() < deadline, "the new grant was never applied"
