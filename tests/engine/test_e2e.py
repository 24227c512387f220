"""The lifecycle end to end: a real `batchrock serve` process, real boto3, the built-in model.

Input is written into the embedded object store (``DATA_DIR/s3/bucket/key``); results are
read back from there, record by record.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import bedrock_client

pytestmark = pytest.mark.timeout(120)

FINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}
FAST: dict[str, Any] = {
    "engine_poll_seconds": 0.05,
    "engine_checkpoint_seconds": 0.1,
    "engine_lease_seconds": 2,
    "quota_min_records_per_job": 1,
}
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


def claude_records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "recordId": f"R{i:010d}",
            "modelInput": {
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 32,
                "messages": [{"role": "user", "content": f"Say something about {i}."}],
            },
        }
        for i in range(start, start + n)
    ]


def put(server: Any, key: str, recs: list[dict[str, Any]] | bytes) -> None:
    path = server.data_dir / "s3" / "bucket" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    data = recs if isinstance(recs, bytes) else b"".join(orjson.dumps(r) + b"\n" for r in recs)
    path.write_bytes(data)


def create(
    server: Any, prefix: str = "in/", model_id: str = CLAUDE, client: Any = None, **extra: Any
) -> str:
    (server.data_dir / "s3" / "bucket").mkdir(parents=True, exist_ok=True)
    client = client or bedrock_client(server.url)
    response = client.create_model_invocation_job(
        jobName=f"e2e-{time.monotonic_ns()}",
        roleArn="arn:aws:iam::123456789012:role/batch",
        modelId=model_id,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://bucket/{prefix}"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bucket/out/"}},
        **extra,
    )
    return str(response["jobArn"])


def get(server: Any, arn: str) -> dict[str, Any]:
    return dict(bedrock_client(server.url).get_model_invocation_job(jobIdentifier=arn))


def wait(server: Any, arn: str, statuses: set[str] = FINAL, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = get(server, arn)
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job still {job['status']}: {server.log()[-3000:]}")
        time.sleep(0.05)


def out_folder(server: Any, arn: str) -> Path:
    path: Path = server.data_dir / "s3" / "bucket" / "out" / arn.rsplit("/", 1)[-1]
    return path


def out_lines(server: Any, arn: str, name: str) -> list[dict[str, Any]]:
    data = (out_folder(server, arn) / name).read_bytes()
    return [orjson.loads(x) for x in data.splitlines()]


def manifest(server: Any, arn: str) -> dict[str, Any]:
    path = out_folder(server, arn) / "manifest.json.out"
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


def test_job_runs_to_completed_with_exact_output_and_manifest(server_factory: Any) -> None:
    server = server_factory(**FAST)
    recs = claude_records(120)
    recs[7]["modelInput"] = {"messages": []}  # not a Messages body: a per-record 400
    put(server, "in/part-1.jsonl", recs[:80])
    put(server, "in/part-2.jsonl", recs[80:])
    arn = create(server)
    job = wait(server, arn)
    assert job["status"] == "Completed", job.get("message")
    assert "endTime" in job
    assert (
        job["totalRecordCount"],
        job["processedRecordCount"],
        job["successRecordCount"],
        job["errorRecordCount"],
    ) == (120, 120, 119, 1)

    lines = out_lines(server, arn, "part-1.jsonl.out") + out_lines(server, arn, "part-2.jsonl.out")
    assert [x["recordId"] for x in lines] == [r["recordId"] for r in recs]
    for line, rec in zip(lines, recs, strict=True):
        assert line["modelInput"] == rec["modelInput"]
        if line["recordId"] == recs[7]["recordId"]:
            assert set(line) == {"recordId", "modelInput", "error"}
            assert line["error"]["errorCode"] == 400
            assert isinstance(line["error"]["errorMessage"], str)
        else:
            out = line["modelOutput"]
            assert out["type"] == "message" and out["role"] == "assistant"
            assert out["usage"]["input_tokens"] > 0 and out["usage"]["output_tokens"] > 0

    m = manifest(server, arn)
    ok = [x["modelOutput"] for x in lines if "modelOutput" in x]
    assert m == {
        "totalRecordCount": 120,
        "processedRecordCount": 120,
        "successRecordCount": 119,
        "errorRecordCount": 1,
        "inputTokenCount": sum(o["usage"]["input_tokens"] for o in ok),
        "outputTokenCount": sum(o["usage"]["output_tokens"] for o in ok),
        "throttledRequestCount": 0,
    }


def test_serve_starts_a_created_job_at_once_not_at_its_next_poll(server_factory: Any) -> None:
    server = server_factory(**{**FAST, "engine_poll_seconds": 30.0})
    put(server, "in/a.jsonl", claude_records(10))
    time.sleep(0.3)  # the engine's first poll is over: it now waits 30 s unless woken
    arn = create(server)
    job = wait(server, arn, timeout=10)
    assert job["status"] == "Completed", job.get("message")


def test_a_job_is_submitted_right_after_create_then_runs(server_factory: Any) -> None:
    """Clients (the Terraform provider's acceptance test) read a job right after Create and
    expect Submitted, as on Bedrock. The engine validates it once the dwell is over, at once
    rather than at its next poll (30 s here)."""
    dwell = 2.0
    server = server_factory(
        **{**FAST, "engine_poll_seconds": 30.0}, engine_min_submitted_seconds=dwell
    )
    put(server, "in/a.jsonl", claude_records(10))
    client = bedrock_client(server.url)
    arn = create(server, client=client)
    assert client.get_model_invocation_job(jobIdentifier=arn)["status"] == "Submitted"
    (listed,) = client.list_model_invocation_jobs()["invocationJobSummaries"]
    assert listed["status"] == "Submitted"
    job = wait(server, arn, timeout=60)
    assert job["status"] == "Completed", job.get("message")
    history = server.history(arn)
    assert [s for s, _ in history] == [
        "Submitted",
        "Validating",
        "Scheduled",
        "InProgress",
        "Completed",
    ]
    waited = (history[1][1] - history[0][1]) / 1e6
    # Not before the dwell; long before the next poll would have come.
    assert dwell <= waited < dwell + 15, waited


def test_stop_mid_run_through_boto3(server_factory: Any) -> None:
    server = server_factory(**FAST, builtin_latency_ms=20, engine_record_concurrency=4)
    recs = claude_records(2000)
    put(server, "in/a.jsonl", recs)
    arn = create(server)
    deadline = time.monotonic() + 30
    while get(server, arn)["processedRecordCount"] < 20:
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.05)
    bedrock_client(server.url).stop_model_invocation_job(jobIdentifier=arn)
    assert get(server, arn)["status"] in {"Stopping", "Stopped"}
    job = wait(server, arn, timeout=15)
    assert job["status"] == "Stopped"
    n = job["processedRecordCount"]
    assert 20 <= n < 2000
    lines = out_lines(server, arn, "a.jsonl.out")
    assert [x["recordId"] for x in lines] == [r["recordId"] for r in recs[:n]]
    m = manifest(server, arn)
    assert (m["totalRecordCount"], m["processedRecordCount"], m["successRecordCount"]) == (
        2000,
        n,
        n,
    )


def test_timeout_gives_partially_completed_and_waiting_job_expires(server_factory: Any) -> None:
    # time_scale: the minimum timeout of 24 hours passes in 2 seconds. The waiting job
    # (24 h) expires while the running one (96 h, from its own submission: 8 s) still holds
    # the model's only slot; its 2,000 records need 20 s at 20 ms, two at a time. (At 48 h the
    # waiting job, created once the first was InProgress, had under a second of margin, and a
    # loaded CI machine once started it before it expired.)
    server = server_factory(
        **FAST,
        time_scale=24 * 3600 / 2,
        builtin_latency_ms=20,
        engine_record_concurrency=2,
        quota_max_concurrent_jobs_per_model=1,
    )
    put(server, "in/a.jsonl", claude_records(2000))
    running = create(server, timeoutDurationInHours=96)
    server.wait_history(running, "InProgress")
    waiting = create(server, timeoutDurationInHours=24)
    r = wait(server, running, timeout=30)
    w = wait(server, waiting, timeout=30)
    assert w["status"] == "Expired"
    assert [s for s, _ in server.history(waiting)] == [
        "Submitted",
        "Validating",
        "Scheduled",
        "Expired",
    ]
    assert r["status"] == "PartiallyCompleted"
    n = r["processedRecordCount"]
    assert 0 < n < 2000
    assert len(out_lines(server, running, "a.jsonl.out")) == n
    assert manifest(server, running)["processedRecordCount"] == n


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b'{"modelInput": {"x": 1}}\nnot json\n',
            "Line 2 of the input file s3://bucket/in/a.jsonl",
        ),
        (b'{"recordId": "a"}\n', '"modelInput"'),
    ],
)
def test_malformed_input_fails_through_boto3(
    server_factory: Any, content: bytes, expected: str
) -> None:
    server = server_factory(**FAST)
    put(server, "in/a.jsonl", content)
    job = wait(server, create(server))
    assert job["status"] == "Failed"
    assert expected in job["message"]


def test_separate_worker_process_runs_jobs(server_factory: Any) -> None:
    import subprocess
    import sys

    server = server_factory(**FAST, engine=False)
    put(server, "in/a.jsonl", claude_records(50))
    arn = create(server)
    time.sleep(0.3)
    assert get(server, arn)["status"] == "Submitted"  # no engine in this server
    env = server.env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchrock.admin", "worker", "--data-dir", str(server.data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        job = wait(server, arn, timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert job["status"] == "Completed"
    assert len(out_lines(server, arn, "a.jsonl.out")) == 50
