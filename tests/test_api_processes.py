"""``batchrock serve`` with several API processes on one port (setting ``api_processes``):
real servers, real signals. Which process answered is the health check's
``x-batchrock-process`` header."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from prometheus_client.parser import text_string_to_metric_families

from batchrock import processes
from batchrock.access.signin_limit import MAX_FAILURES
from batchrock.api.wrong_signatures import pair_key
from tests.access.conftest import ALICE, BOB, Key, write_credentials
from tests.conftest import bedrock_client


def _children(pid: int) -> list[int]:
    """The processes ``pid`` forked (Linux's /proc)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


def _wait_gone(pids: list[int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"still running: {[p for p in pids if _alive(p)]}")
        time.sleep(0.05)


def _which_process(url: str) -> str:
    """One health check on a new connection: the index of the process that answered."""
    with urllib.request.urlopen(url + "/_batchrock/health", timeout=10) as answer:
        return str(answer.headers["x-batchrock-process"])


def _seen(url: str, want: set[str], timeout: float = 30.0) -> set[str]:
    """Health checks on new connections until every process in ``want`` answered one."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while seen != want and time.monotonic() < deadline:
        seen.add(_which_process(url))
    return seen


def _count(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        return str(answer.read().decode())


def test_both_processes_serve_and_metrics_count_them_all(server_factory: Any) -> None:
    server = server_factory(engine=False, api_processes=2)
    assert len(_children(server.proc.pid)) == 1
    assert _seen(server.url, {"0", "1"}) == {"0", "1"}
    client = bedrock_client(server.url)
    for _ in range(3):
        client.list_model_invocation_jobs()
    # Every scrape sums every process's counts, whichever process answers it: the health
    # checks are all there (those of the start-up wait as well), each time the same.
    first = _scrape(server.url)
    health = _count(first, "batchrock_api_requests_total", operation="Health", code="200")
    assert health >= 2
    assert _count(first, "batchrock_api_requests_total", operation="ListModelInvocationJobs") == 3
    for _ in range(8):
        again = _scrape(server.url)
        assert _count(again, "batchrock_api_requests_total", operation="Health") == health
        assert _count(
            again, "batchrock_api_request_duration_seconds_count", operation="Health"
        ) == (health)
    assert "serving http://127.0.0.1" in server.log() and "2 API processes" in server.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_stops_every_process(server_factory: Any, sig: signal.Signals) -> None:
    server = server_factory(engine=False, api_processes=3)
    children = _children(server.proc.pid)
    assert len(children) == 2
    server.proc.send_signal(sig)
    server.proc.wait(timeout=30)
    _wait_gone(children, timeout=1)  # the parent waited for them before it exited
    assert "ended on its own" not in server.log()


def test_sigkill_of_the_parent_leaves_no_process_behind(server_factory: Any) -> None:
    server = server_factory(engine=False, api_processes=2)
    children = _children(server.proc.pid)
    assert children
    server.kill()
    _wait_gone(children)


def test_a_process_that_dies_takes_the_server_down_with_one_line(server_factory: Any) -> None:
    server = server_factory(engine=False, api_processes=2)
    (child,) = _children(server.proc.pid)
    os.kill(child, signal.SIGKILL)
    assert server.proc.wait(timeout=30) == 1
    assert f"API process {child} ended on its own (signal SIGKILL)" in server.log()


def test_a_job_created_in_another_process_wakes_the_engine(server_factory: Any) -> None:
    # The engine runs in the first process only; a Create answered by another one wakes it
    # at once. The poll interval is long: a job validated within it was woken, not polled.
    server = server_factory(api_processes=2, engine_poll_seconds=60)
    time.sleep(0.5)  # let the engine's first look at the store (at start-up) pass
    body = json.dumps(
        {
            "jobName": "from-the-other-process",
            "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
            "roleArn": "arn:aws:iam::123456789012:role/r",
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://in-bucket/x.jsonl"}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://out-bucket/"}},
        }
    )
    # The Create goes to the second process (open mode takes an unsigned request).
    status, _, answer = _on_process(server.port, "1", "POST", "/model-invocation-job", body)
    assert status == 200
    arn = json.loads(answer)["jobArn"]
    server.wait_history(arn, "Validating", timeout=20)


def test_port_zero_with_several_processes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHROCK_")}
    command = [sys.executable, "-m", "batchrock.admin", "serve", "--port", "0", "--no-engine"]
    command += ["--api-processes", "2", "--data-dir", str(tmp_path / "d")]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "serving http://" in line:
                break
        url = line.split("serving ", 1)[1].split()[0]
        assert not url.endswith(":0")
        assert _seen(url, {"0", "1"}) == {"0", "1"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def _on_process(
    port: int, index: str, method: str, path: str, body: str | None = None, **headers: str
) -> Any:
    """``method path`` on a new connection that reached API process ``index`` (its health
    check, sent first on the same connection, said so): (status, headers, body)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/_batchrock/health")
            health = conn.getresponse()
            health.read()
            if health.headers["x-batchrock-process"] != index:
                continue
            conn.request(method, path, body=body, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.headers, answer.read()
        finally:
            conn.close()
    raise AssertionError(f"no connection reached API process {index}")


def test_an_accounts_rate_limit_holds_across_the_processes(server_factory: Any) -> None:
    # A burst of 4 and next to no refill: 4 calls pass in all, whichever processes they reach.
    server = server_factory(
        engine=False, api_processes=2, rate_limit_per_second=0.001, rate_limit_burst=4
    )
    statuses = [
        _on_process(server.port, index, "GET", "/model-invocation-jobs")[0]
        for index in ("0", "1", "0", "1", "0", "1")
    ]
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_a_console_session_is_known_to_every_process(server_factory: Any) -> None:
    server = server_factory(engine=False, api_processes=2)
    status, headers, body = _on_process(server.port, "0", "GET", "/console/api/session")
    assert status == 200
    cookie = headers["set-cookie"].split(";", 1)[0]
    csrf = json.loads(body)["csrf"]
    status, headers, body = _on_process(
        server.port, "1", "GET", "/console/api/session", Cookie=cookie
    )
    assert status == 200 and "set-cookie" not in headers  # the same session: no new one
    assert json.loads(body)["csrf"] == csrf


_TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ batchrock[\w.]*: ")
_LABELLED = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ batchrock[\w.]* \[api (\d+) pid (\d+)\]: "
)


def test_each_api_process_says_which_it_is_on_every_line(server_factory: Any) -> None:
    """With several API processes a line says which wrote it: the index (the health check's
    x-batchrock-process) and the pid, in our lines and in uvicorn's."""
    server = server_factory(engine=False, api_processes=2)
    assert _seen(server.url, {"0", "1"}) == {"0", "1"}
    (child,) = _children(server.proc.pid)
    lines = server.log().splitlines()
    ours = [line for line in lines if " batchrock" in line and line[:2] == "20"]
    assert ours and all(_LABELLED.match(line) for line in ours), ours
    writers = {_LABELLED.match(line).groups() for line in ours}  # type: ignore[union-attr]
    assert writers == {("0", str(server.proc.pid)), ("1", str(child))}
    assert any(
        line.endswith("API process 2 of 2 serving") and f"[api 1 pid {child}]" in line
        for line in ours
    )
    # uvicorn's own lines: "INFO:     [api 1 pid N] Started server process [N]".
    for pid, index in ((server.proc.pid, 0), (child, 1)):
        assert f"[api {index} pid {pid}] Started server process [{pid}]" in server.log()


def test_one_api_processes_lines_are_as_before(server_factory: Any) -> None:
    server = server_factory(engine=False, api_processes=1)
    ours = [line for line in server.log().splitlines() if " batchrock" in line and line[:2] == "20"]
    assert ours and all(_TEXT_LINE.match(line) for line in ours), ours
    assert "[api " not in server.log()


def test_json_lines_name_the_api_process(server_factory: Any) -> None:
    server = server_factory(engine=False, api_processes=2, log_format="json")
    assert _seen(server.url, {"0", "1"}) == {"0", "1"}
    (child,) = _children(server.proc.pid)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert lines
    assert {(line["api_process"], line["pid"]) for line in lines} == {
        (0, server.proc.pid),
        (1, child),
    }


def _signed_get(port: int, index: str, key: Key, secret: str) -> int:
    """The status of a GET of /model-invocation-jobs signed with ``key``'s id and ``secret``,
    answered by API process ``index``."""
    request = AWSRequest("GET", f"http://127.0.0.1:{port}/model-invocation-jobs")
    SigV4Auth(Credentials(key.access_key_id, secret), "bedrock", "us-east-1").add_auth(request)
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    return int(_on_process(port, index, "GET", "/model-invocation-jobs", **headers)[0])


def test_a_lockout_made_on_one_process_holds_at_once_on_the_other(
    server_factory: Any, tmp_path: Path
) -> None:
    """Process 1 keeps what it read of the wrong signatures (none) while its right-signed
    requests go on; the guesses that reach the bound on process 0 lock the key out from
    this address on process 1 too, on its very next request: right secret or wrong."""
    creds = write_credentials(tmp_path / "credentials.toml")
    server = server_factory(engine=False, credentials_file=creds, api_processes=2)
    for _ in range(3):
        assert _signed_get(server.port, "1", ALICE, ALICE.secret) == 200
    for _ in range(MAX_FAILURES):
        assert _signed_get(server.port, "0", ALICE, "not-the-secret") == 403
    assert _signed_get(server.port, "1", ALICE, ALICE.secret) == 429
    assert _signed_get(server.port, "1", ALICE, "not-the-secret") == 429
    # Another key from the address is not locked out, on either process.
    assert _signed_get(server.port, "0", BOB, BOB.secret) == 200
    assert _signed_get(server.port, "1", BOB, BOB.secret) == 200


@contextmanager
def _shared_file_locked(server: Any) -> Iterator[Path]:
    """The server's shared file with its write lock held from this process, as another API
    process holds it while it writes (here for as long as the block runs)."""
    path = server.data_dir / processes.RUN_FOLDER / str(server.proc.pid) / processes.SHARED_STATE
    holder = sqlite3.connect(str(path), isolation_level=None, timeout=10)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield path
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _wait_for_line(server: Any, text: str, done: list[Any], timeout: float = 30.0) -> str:
    """The server's first log line with ``text``, waited for (or until ``done`` has
    something in it: a request answered meanwhile)."""
    deadline = time.monotonic() + timeout
    while not done:
        found = [line for line in server.log().splitlines() if text in line]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no line with {text!r}: {server.log()[-3000:]}")
        time.sleep(0.02)
    return ""


def test_a_rate_limited_request_waits_for_a_locked_shared_file_with_the_loop_free(
    server_factory: Any,
) -> None:
    """A take that finds the shared file locked waits for it off the event loop: the same
    process answers others meanwhile, and the request takes its token once the file is let
    go (not let through unchecked, not after a hold of the loop)."""
    server = server_factory(
        engine=False, api_processes=2, rate_limit_per_second=1000, rate_limit_burst=1000
    )
    answers: list[int] = []

    def get() -> None:
        answers.append(_on_process(server.port, "0", "GET", "/model-invocation-jobs")[0])

    with _shared_file_locked(server):
        waiting = threading.Thread(target=get)
        waiting.start()
        line = _wait_for_line(server, "the request waits for it", answers)
        assert answers == [], "answered while the shared file was locked"
        assert "[api 0 pid" in line
        status, headers, _ = _on_process(server.port, "0", "GET", "/_batchrock/health")
        assert status == 200 and headers["x-batchrock-process"] == "0"
        assert answers == [] and waiting.is_alive()
    waiting.join(timeout=30)
    assert answers == [200]
    assert _on_process(server.port, "0", "GET", "/model-invocation-jobs")[0] == 200


def test_wrong_signatures_are_answered_and_counted_while_the_shared_file_is_locked(
    server_factory: Any, tmp_path: Path
) -> None:
    """Counting a wrong signature (and recording a right one) writes the shared file from a
    request: with the file locked, the request is answered as always without waiting, the
    count holds at once on its process, and on the others once the file is let go."""
    creds = write_credentials(tmp_path / "credentials.toml")
    server = server_factory(engine=False, credentials_file=creds, api_processes=2)
    with _shared_file_locked(server) as path:
        for _ in range(MAX_FAILURES):
            assert _signed_get(server.port, "0", ALICE, "not-the-secret") == 403
        assert _signed_get(server.port, "0", ALICE, ALICE.secret) == 429  # locked out at once
        assert _signed_get(server.port, "0", BOB, BOB.secret) == 200  # recorded as known
        assert _on_process(server.port, "0", "GET", "/_batchrock/health")[0] == 200
    deadline = time.monotonic() + 30
    key = pair_key("127.0.0.1", ALICE.access_key_id)
    while True:
        conn = sqlite3.connect(str(path), timeout=10)
        try:
            (written,) = conn.execute(
                "SELECT count(*) FROM sign_in_failures WHERE key = ?", (key,)
            ).fetchone()
        finally:
            conn.close()
        if written == MAX_FAILURES:
            break
        assert written < MAX_FAILURES and time.monotonic() < deadline, written
        time.sleep(0.02)
    assert _signed_get(server.port, "1", ALICE, ALICE.secret) == 429
    assert _signed_get(server.port, "1", BOB, BOB.secret) == 200


def test_a_console_sign_in_refused_while_the_shared_file_is_locked_is_counted(
    server_factory: Any, tmp_path: Path
) -> None:
    creds = write_credentials(tmp_path / "credentials.toml")
    server = server_factory(engine=False, credentials_file=creds, api_processes=2)
    wrong = json.dumps({"accessKeyId": ALICE.access_key_id, "secretAccessKey": "nope"})
    right = json.dumps({"accessKeyId": ALICE.access_key_id, "secretAccessKey": ALICE.secret})
    json_type = {"Content-Type": "application/json"}
    with _shared_file_locked(server):
        for _ in range(MAX_FAILURES):
            status, _, _ = _on_process(
                server.port, "0", "POST", "/console/api/session", wrong, **json_type
            )
            assert status == 401
        status, _, _ = _on_process(
            server.port, "0", "POST", "/console/api/session", right, **json_type
        )
        assert status == 429


def test_a_stop_answered_by_one_process_is_seen_by_the_next_get_on_the_other(
    server_factory: Any,
) -> None:
    # Each process keeps the row keys it read while nothing commits to the file (store/
    # sqlite.py get_row_key): the other's commit must make its very next Get read again.
    server = server_factory(engine=False, api_processes=2)
    for writer, reader in (("0", "1"), ("1", "0")):
        body = json.dumps(
            {
                "jobName": f"stopped-by-{writer}",
                "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
                "roleArn": "arn:aws:iam::123456789012:role/r",
                "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://in-bucket/x.jsonl"}},
                "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://out-bucket/"}},
            }
        )
        status, _, answer = _on_process(server.port, writer, "POST", "/model-invocation-job", body)
        assert status == 200
        job = "/model-invocation-job/" + json.loads(answer)["jobArn"].rsplit("/", 1)[1]
        for index in (reader, reader, writer):  # both processes have read (and kept) its key
            status, _, answer = _on_process(server.port, index, "GET", job)
            assert status == 200 and json.loads(answer)["status"] == "Submitted"
        status, _, _ = _on_process(server.port, writer, "POST", job + "/stop")
        assert status == 200
        status, _, answer = _on_process(server.port, reader, "GET", job)
        assert status == 200 and json.loads(answer)["status"] in ("Stopping", "Stopped")
