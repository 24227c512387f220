"""SIGKILL the server at moments picked from what the store shows (a status change just
recorded, a file just published, records just checkpointed); after restarts every job must
reach a final state with each record exactly once in its ``.out`` and exact manifest counts.

The kill schedule follows the jobs' progress rather than the wall clock, so a slow (busy)
machine moves it along with the jobs: it cannot run out of jobs to kill."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import bedrock_client

from .test_e2e import FAST, claude_records, create, get, manifest, out_folder, out_lines, put, wait

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(params=["sqlite", "pg"])
def store(request: pytest.FixtureRequest) -> dict[str, str]:
    """The server's settings naming its job store: the embedded SQLite file, or a fresh
    PostgreSQL database (tests/pg.py) that the killed processes and their successors share."""
    if request.param == "sqlite":
        return {}
    # Engines are woken by NOTIFY for new work; a lease that ran out (the killed process's)
    # is announced by no one, so only the sweep finds it: every half second here, not 5.
    return {"database_url": request.getfixturevalue("pg_url"), "engine_sweep_seconds": "0.5"}


KILLS = 6
DONE = {"Completed", "Failed", "PartiallyCompleted", "Stopped", "Expired"}


def kill_when(server: Any, arns: list[str], moment: Callable[[], bool]) -> bool:
    """SIGKILL the server (and start it again) as soon as ``moment()`` holds; ``False``,
    without a kill, if every job in ``arns`` was final first."""
    deadline = time.monotonic() + 60
    while not moment():
        if all(server.progress(arn)[0] in DONE for arn in arns):
            return False
        assert time.monotonic() < deadline, f"no progress in 60 s: {server.log()[-3000:]}"
        time.sleep(0.005)
    server.kill()
    server.start()
    return True


def test_sigkill_at_chosen_moments_loses_and_duplicates_nothing(
    server_factory: Any, store: dict[str, str]
) -> None:
    rng = random.Random(int(os.environ.get("CRASH_SEED", "20261128")))
    server = server_factory(
        **{**FAST, "engine_lease_seconds": 1},
        builtin_latency_ms=10,
        engine_record_concurrency=4,
        builtin_error_rate=0.05,
        **store,
    )
    jobs: dict[str, list[dict[str, Any]]] = {}
    for j in range(3):
        recs = claude_records(700, start=j * 1000)
        put(server, f"in{j}/a.jsonl", recs[:300])
        put(server, f"in{j}/b.jsonl", recs[300:])
        jobs[create(server, prefix=f"in{j}/")] = recs
    arns = list(jobs)

    def open_jobs() -> list[str]:
        return [arn for arn in arns if server.progress(arn)[0] not in DONE]

    kills: list[str] = []
    # Right after the last job's Validating is recorded (its files being counted).
    if kill_when(server, arns, lambda: any(s == "Validating" for s, _ in server.history(arns[-1]))):
        kills.append("validating")
    while len(kills) < KILLS and (left := open_jobs()):
        arn = rng.choice(left)
        status, processed = server.progress(arn)
        published = (out_folder(server, arn) / "a.jsonl.out").exists()
        if len(kills) == 1 or (len(kills) == 3 and published):
            # As soon as the resumed job checkpoints once more.
            kind, moment = "resumed", lambda a=arn, p=processed: server.progress(a)[1] > p
        elif len(kills) == 3:
            # Right after its first file is published (before or after the checkpoint that
            # moves on to the next file).
            kind = "published"
            moment = lambda a=arn: (out_folder(server, a) / "a.jsonl.out").exists()  # noqa: E731
        else:
            # A few dozen records on: somewhere mid-file.
            target = processed + rng.randint(10, 80)
            kind, moment = f"at {target}", lambda a=arn, t=target: server.progress(a)[1] >= t
        if kill_when(server, [arn], moment):
            kills.append(f"{kind} ({status}, {processed} processed before)")
    print(f"{len(kills)} kills: {kills}")
    assert len(kills) == KILLS, f"every job ended before {KILLS} kills: {kills}"

    client = bedrock_client(server.url)
    for arn, recs in jobs.items():
        job = wait(server, arn, timeout=60)
        assert job["status"] == "Completed", job.get("message")
        lines = out_lines(server, arn, "a.jsonl.out") + out_lines(server, arn, "b.jsonl.out")
        assert [x["recordId"] for x in lines] == [r["recordId"] for r in recs]
        errors = sum(1 for x in lines if "error" in x)
        ok = [x["modelOutput"] for x in lines if "modelOutput" in x]
        assert len(ok) + errors == 700
        m = manifest(server, arn)
        assert m == {
            "totalRecordCount": 700,
            "processedRecordCount": 700,
            "successRecordCount": len(ok),
            "errorRecordCount": errors,
            "inputTokenCount": sum(o["usage"]["input_tokens"] for o in ok),
            "outputTokenCount": sum(o["usage"]["output_tokens"] for o in ok),
            "throttledRequestCount": 0,
        }
        listed = client.get_model_invocation_job(jobIdentifier=arn)
        assert listed["successRecordCount"] == len(ok)
        assert listed["errorRecordCount"] == errors


def test_a_killed_workers_job_is_taken_over_by_another_worker(
    server_factory: Any, store: dict[str, str]
) -> None:
    import subprocess
    import sys

    server = server_factory(**{**FAST, "engine_lease_seconds": 1}, engine=False, **store)
    recs = claude_records(1500)
    put(server, "in/a.jsonl", recs)
    arn = create(server)

    def worker() -> subprocess.Popen[bytes]:
        env = {**server.env(), "BATCHROCK_BUILTIN_LATENCY_MS": "10"}
        env["BATCHROCK_ENGINE_RECORD_CONCURRENCY"] = "4"
        data_dir = str(server.data_dir)
        cmd = [sys.executable, "-m", "batchrock.admin", "worker", "--data-dir", data_dir]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    first = worker()
    try:
        deadline = time.monotonic() + 30
        while get(server, arn)["processedRecordCount"] < 100:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.kill()
        first.wait()
        before = get(server, arn)["processedRecordCount"]
        assert get(server, arn)["status"] == "InProgress" and before < 1500
        second = worker()
        try:
            job = wait(server, arn, timeout=60)
        finally:
            second.terminate()
            second.wait(timeout=15)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert job["status"] == "Completed"
    lines = out_lines(server, arn, "a.jsonl.out")
    assert [x["recordId"] for x in lines] == [r["recordId"] for r in recs]
    assert manifest(server, arn)["processedRecordCount"] == 1500
