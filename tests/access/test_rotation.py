"""Keys change under a running server: no restart, no window where a rotated key still works
once refused, and no disruption for the other keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from tests.access.conftest import ALICE, BOB, Key, client, write_credentials

BATCHROCK = Path(sys.executable).parent / "batchrock"


def _until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _keys(creds: Path, *args: str) -> Any:
    env = {**os.environ, "BATCHROCK_CREDENTIALS_FILE": str(creds)}
    done = subprocess.run(
        [str(BATCHROCK), "keys", *args], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.startswith("{") else None


class Caller(threading.Thread):
    """Lists jobs in a loop with one key, recording each outcome in order."""

    def __init__(self, url: str, key: Key, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.bedrock = client(url, key)
        self.stop = stop
        self.outcomes: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.bedrock.list_model_invocation_jobs(maxResults=1)
                self.outcomes.append("ok")
            except ClientError as exc:
                self.outcomes.append(exc.response["Error"]["Code"])


def test_a_key_rotated_while_clients_run(server_factory: Any, tmp_path: Path) -> None:
    creds = write_credentials(tmp_path / "credentials.toml")
    server = server_factory(engine=False, credentials_file=creds)
    stop = threading.Event()
    alice, bob = Caller(server.url, ALICE, stop), Caller(server.url, BOB, stop)
    alice.start()
    bob.start()
    try:
        _until(lambda: alice.outcomes.count("ok") >= 3 and bob.outcomes.count("ok") >= 3, "calls")
        new = _keys(creds, "rotate", ALICE.access_key_id)["AccessKey"]
        rotated = Key(ALICE.account, new["AccessKeyId"], new["SecretAccessKey"], "alice")

        def new_key_works() -> bool:
            try:
                client(server.url, rotated).list_model_invocation_jobs(maxResults=1)
            except ClientError:
                return False
            return True

        _until(new_key_works, "the new key to work")
        _until(lambda: "UnrecognizedClientException" in alice.outcomes, "the old key refused")
        refused_at = alice.outcomes.index("UnrecognizedClientException")
        seen = len(alice.outcomes)
        _until(lambda: len(alice.outcomes) >= seen + 5, "more calls with the old key")
        arn = client(server.url, rotated).create_model_invocation_job(
            jobName="after-rotation",
            roleArn="arn:aws:iam::111111111111:role/BedrockBatch",
            modelId="anthropic.claude-3-haiku-20240307-v1:0",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://team-a-in/x/"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://team-a-out/x/"}},
        )["jobArn"]
        assert ":111111111111:" in arn
    finally:
        stop.set()
        alice.join(timeout=30)
        bob.join(timeout=30)
    assert set(alice.outcomes[:refused_at]) == {"ok"}
    assert set(alice.outcomes[refused_at:]) == {"UnrecognizedClientException"}, (
        "once refused, the old key never works again"
    )
    assert set(bob.outcomes) == {"ok"}, "the other account's key never stopped working"


def test_a_bad_edit_keeps_the_last_good_file(server_factory: Any, tmp_path: Path) -> None:
    creds = write_credentials(tmp_path / "credentials.toml")
    server = server_factory(engine=False, credentials_file=creds)
    alice = client(server.url, ALICE)
    good = creds.read_text()
    creds.write_text(good.replace("[[accounts]]", "[[accounts]", 1))

    def noticed(line: str) -> Callable[[], bool]:
        def check() -> bool:
            # The file is looked at (at most once a second) when requests come.
            alice.list_model_invocation_jobs()
            return line in server.log()

        return check

    _until(noticed("keeping the last good version"), "the server to notice the bad edit")
    for _ in range(3):
        alice.list_model_invocation_jobs()
    assert server.log().count("keeping the last good version") == 1
    assert "at line 2" in server.log()
    creds.write_text(good.replace(BOB.access_key_id, "AKIABOBBB00000000009"))
    _until(noticed("re-read"), "the fixed file to be read")
    moved = Key(BOB.account, "AKIABOBBB00000000009", BOB.secret)
    assert client(server.url, moved).list_model_invocation_jobs()["invocationJobSummaries"] == []
