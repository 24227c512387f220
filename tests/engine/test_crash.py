"""SIGKILL the server at random moments while jobs run; after restarts every job must reach a
final state with each record exactly once in its ``.out`` and exact manifest counts."""

from __future__ import annotations

import os
import random
import time
from typing import Any

import pytest

from tests.conftest import bedrock_client

from .test_e2e import FAST, claude_records, create, get, manifest, out_lines, put, wait

pytestmark = pytest.mark.timeout(150)


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(server_factory: Any) -> None:
    rng = random.Random(int(os.environ.get("CRASH_SEED", "20261128")))
    server = server_factory(
        **{**FAST, "engine_lease_seconds": 1},
        builtin_latency_ms=10,
        engine_record_concurrency=4,
        builtin_error_rate=0.05,
    )
    jobs: dict[str, list[dict[str, Any]]] = {}
    for j in range(3):
        recs = claude_records(700, start=j * 1000)
        put(server, f"in{j}/a.jsonl", recs[:300])
        put(server, f"in{j}/b.jsonl", recs[300:])
        jobs[create(server, prefix=f"in{j}/")] = recs

    kills = 0
    while kills < 6:
        time.sleep(rng.uniform(0.05, 0.7))
        if all(get(server, arn)["status"] in {"Completed", "Failed"} for arn in jobs):
            break
        server.kill()
        kills += 1
        server.start()
    print(f"{kills} kills")
    assert kills >= 2, "jobs finished before the server could be killed: make them longer"

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


def test_a_killed_workers_job_is_taken_over_by_another_worker(server_factory: Any) -> None:
    import subprocess
    import sys

    server = server_factory(**{**FAST, "engine_lease_seconds": 1}, engine=False)
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
