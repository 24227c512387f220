"""``GET /metrics``: a real ``batchrock serve`` runs a job through the built-in model, and the
scraped exposition text (parsed by prometheus-client's own parser) counts it."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
import types
from typing import Any

import botocore.exceptions
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import bedrock_client, free_port, wait_until_serving
from tests.engine.test_e2e import CLAUDE, FAST, claude_records, create, get, manifest, put, wait

pytestmark = pytest.mark.timeout(120)

#: Every label name the metrics may carry: none of them can hold a job id or an account.
BOUNDED_LABELS = {"status", "operation", "code", "model_id", "route", "outcome", "le"}


def scrape(server: Any, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read().decode()
    finally:
        conn.close()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(found: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    matches = [v for n, lab, v in found if n == name and lab == labels]
    assert len(matches) == 1, (name, labels, [s for s in found if s[0] == name])
    return matches[0]


@pytest.mark.parametrize("api_processes", [1, 2])
def test_a_job_through_the_built_in_model_shows_in_the_metrics(
    server_factory: Any, api_processes: int
) -> None:
    # A latency makes the built-in model a real model request (timed per route). With two
    # API processes a scrape, answered by either, counts both (and the engine's, in one).
    server = server_factory(**FAST, builtin_latency_ms=1, api_processes=api_processes)
    put(server, "in/a.jsonl", claude_records(7))
    arn = create(server)
    job = wait(server, arn)
    assert job["status"] == "Completed"
    client = bedrock_client(server.url)
    missing = arn[:-3] + "zzz"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.get_model_invocation_job(jobIdentifier=missing)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    gets_ok = 1
    client.get_model_invocation_job(jobIdentifier=arn)

    status, content_type, text = scrape(server)
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    found = samples(text)

    assert value(found, "batchrock_jobs", status="Completed") == 1
    assert value(found, "batchrock_jobs", status="InProgress") == 0
    # A job started and validated by one engine, never taken over from another.
    assert value(found, "batchrock_lease_takeovers_total") == 0
    m = manifest(server, arn)
    assert value(found, "batchrock_records_processed_total", model_id=CLAUDE) == 7
    assert value(found, "batchrock_records_succeeded_total", model_id=CLAUDE) == 7
    assert m["inputTokenCount"] > 0 and m["outputTokenCount"] > 0
    assert value(found, "batchrock_input_tokens_total", model_id=CLAUDE) == m["inputTokenCount"]
    assert value(found, "batchrock_output_tokens_total", model_id=CLAUDE) == m["outputTokenCount"]
    # Bedrock's CloudWatch names: the job just ran, so its tokens are within the minute.
    assert (
        value(found, "NumberOfInputTokensProcessedPerMinute", model_id=CLAUDE)
        == (m["inputTokenCount"])
    )
    assert (
        value(found, "NumberOfOutputTokensProcessedPerMinute", model_id=CLAUDE)
        == (m["outputTokenCount"])
    )
    assert not [s for s in found if s[0] == "NumberOfRecordsPendingProcessing"]  # none left

    # API requests by operation and status code, 2xx and 4xx.
    create_ok = value(
        found, "batchrock_api_requests_total", operation="CreateModelInvocationJob", code="200"
    )
    assert create_ok == 1
    get_ok = value(
        found, "batchrock_api_requests_total", operation="GetModelInvocationJob", code="200"
    )
    assert get_ok >= gets_ok + 1  # wait() polled at least once
    assert (
        value(found, "batchrock_api_requests_total", operation="GetModelInvocationJob", code="404")
        == 1
    )
    # Latency histograms: buckets, and +Inf counting every request of the operation.
    buckets = [
        (lab["le"], v)
        for n, lab, v in found
        if n == "batchrock_api_request_duration_seconds_bucket"
        and lab["operation"] == "GetModelInvocationJob"
    ]
    assert len(buckets) > 5
    assert dict(buckets)["+Inf"] == get_ok + 1
    model_count = value(
        found,
        "batchrock_model_request_duration_seconds_count",
        route="builtin-fallback",
        outcome="ok",
    )
    assert model_count == 7

    # Bounded labels: no job id anywhere, and only the known label names.
    job_id = arn.rsplit("/", 1)[-1]
    for name, labels, _ in found:
        assert set(labels) <= BOUNDED_LABELS, (name, labels)
        assert not any(job_id in v or "arn:" in v for v in labels.values()), (name, labels)

    # The scrape itself is counted, as operation Metrics.
    _, _, again = scrape(server)
    assert value(samples(again), "batchrock_api_requests_total", operation="Metrics", code="200")


def test_metrics_obey_the_host_and_origin_guard(server_factory: Any) -> None:
    server = server_factory(engine=False)
    status, _, body = scrape(server, {"Host": "attacker.example"})
    assert status == 403 and "attacker.example" in body
    status, _, _ = scrape(server, {"Origin": "http://attacker.example"})
    assert status == 403
    status, _, text = scrape(server)
    assert status == 200
    refused = value(samples(text), "batchrock_api_requests_total", operation="unknown", code="403")
    assert refused == 2


def test_a_restarted_server_counts_its_lease_takeover(server_factory: Any) -> None:
    """SIGKILL mid-job: the next process takes the job over once its lease runs out, counts
    the takeover, and counts only the records it processed itself."""
    server = server_factory(
        **{**FAST, "engine_lease_seconds": 1},
        builtin_latency_ms=10,
        engine_record_concurrency=4,
    )
    put(server, "in/a.jsonl", claude_records(2000))  # at least 5 s at 10 ms and 4 at once
    arn = create(server)
    deadline = time.monotonic() + 30
    while (seen := get(server, arn)["processedRecordCount"]) < 100:
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.05)
    assert seen < 2000, "the job finished before the kill"
    server.kill()
    # What the store held at the kill is at least what was seen: the restarted process
    # resumes there (its start may take long enough on a loaded machine that it finishes the
    # job before a first Get, so the count is read before the kill, not after the start).
    server.start()
    assert wait(server, arn)["status"] == "Completed"
    found = samples(scrape(server)[2])
    assert value(found, "batchrock_lease_takeovers_total") == 1
    processed = value(found, "batchrock_records_processed_total", model_id=CLAUDE)
    # Its own records only: a file restarted from its start would count all 2000 again.
    assert 0 < processed <= 2000 - seen


def test_a_workers_engine_counts_on_its_own_metrics_port(server_factory: Any) -> None:
    """Separate workers count their own work: `batchrock worker --metrics-port` exposes it,
    behind the same guard; the API's process shows the jobs (from the store) but no records."""
    server = server_factory(**FAST, engine=False)
    put(server, "in/a.jsonl", claude_records(5))
    arn = create(server)
    port = free_port()
    env = {**server.env(), "BATCHROCK_METRICS_PORT": str(port)}
    cmd = [sys.executable, "-m", "batchrock.admin", "worker", "--data-dir", str(server.data_dir)]
    log_path = server.data_dir.parent / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", proc, 30, log_path)
        assert wait(server, arn)["status"] == "Completed"
        worker = types.SimpleNamespace(port=port)
        status, _, text = scrape(worker)
        assert status == 200
        found = samples(text)
        assert value(found, "batchrock_records_processed_total", model_id=CLAUDE) == 5
        assert value(found, "batchrock_jobs", status="Completed") == 1
        assert scrape(worker, {"Host": "attacker.example"})[0] == 403
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/model-invocation-jobs")
        assert conn.getresponse().status == 404
        conn.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0, log_path.read_text()
    api = samples(scrape(server)[2])
    assert value(api, "batchrock_jobs", status="Completed") == 1
    assert not [s for s in api if s[0] == "batchrock_records_processed_total"]


def test_waiting_jobs_and_throttled_model_requests_show_in_the_metrics(
    server_factory: Any,
) -> None:
    """One job at a time per model: the second waits in Scheduled (a gauge by model); the
    built-in model throttles some attempts, which the retry layer retries and counts."""
    server = server_factory(
        **FAST,
        quota_max_concurrent_jobs_per_model=1,
        builtin_latency_ms=100,
        builtin_throttle_rate=0.3,
        builtin_seed=7,
        engine_record_concurrency=2,
    )
    put(server, "in/a.jsonl", claude_records(40))
    first = create(server)
    server.wait_history(first, "InProgress")
    second = create(server)
    server.wait_history(second, "Scheduled")
    # Scraped while the first still runs: 40 records two at a time, 100 ms each, take two
    # seconds at least (at 20 ms, the 0.4 s and the short pauses of the built-in model's
    # retries were over before the scrape now and then, on a busy machine or a fast loop).
    status, _, text = scrape(server)
    assert status == 200
    found = samples(text)
    assert value(found, "batchrock_jobs_scheduled", model_id=CLAUDE) == 1
    assert value(found, "batchrock_jobs", status="Scheduled") == 1
    assert get(server, first)["status"] == "InProgress"
    assert wait(server, first)["status"] == "Completed"
    assert wait(server, second)["status"] == "Completed"
    time.sleep(1.1)  # the store's gauges are cached for SNAPSHOT_TTL_S
    found = samples(scrape(server)[2])
    # Nothing waits or runs: the gauges of the model's pending work are gone.
    assert not [s for s in found if s[0] == "batchrock_jobs_scheduled"]
    assert value(found, "batchrock_jobs", status="Scheduled") == 0
    throttled = value(found, "batchrock_model_requests_throttled_total", route="builtin-fallback")
    assert throttled > 0
    assert throttled == value(
        found,
        "batchrock_model_request_duration_seconds_count",
        route="builtin-fallback",
        outcome="throttled",
    )
    # Every record is counted once, as the jobs count it. A record whose every attempt met
    # throttling (a busy machine stretches the retries past their deadline) is an error
    # record, so the split between the two depends on the machine, not the sum.
    jobs = [get(server, job) for job in (first, second)]
    succeeded = sum(job["successRecordCount"] for job in jobs)
    failed = sum(job["errorRecordCount"] for job in jobs)
    assert succeeded + failed == 80
    assert value(found, "batchrock_records_succeeded_total", model_id=CLAUDE) == succeeded
