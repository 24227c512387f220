"""The metrics module on its own: the store's snapshot (and that it stays cheap at a million
jobs), the per-minute window, the bound on model-id labels, and who may read /metrics."""

from __future__ import annotations

import asyncio
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from batchrock.api.app import BedrockApp
from batchrock.clock import FakeClock
from batchrock.jobs import Counters, JobStatus
from batchrock.metrics import _API_BUCKETS, _MODEL_BUCKETS, MAX_MODEL_LABELS, OTHER_MODEL, Metrics
from batchrock.service import JobService
from batchrock.settings import Settings
from batchrock.store.sqlite import SqliteStore
from tests.access.conftest import write_credentials

S = JobStatus


def gauges(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_tokens_per_minute_cover_the_last_sixty_seconds() -> None:
    now = [1000.0]
    metrics = Metrics(monotonic=lambda: now[0])
    metrics.progress("m", Counters(), Counters(processed=1, input_tokens=10, output_tokens=3))
    now[0] += 30
    metrics.progress(
        "m",
        Counters(processed=1, input_tokens=10, output_tokens=3),
        Counters(processed=2, input_tokens=15, output_tokens=4),
    )
    per_minute = gauges(metrics)
    assert per_minute[("NumberOfInputTokensProcessedPerMinute", (("model_id", "m"),))] == 15
    assert per_minute[("NumberOfOutputTokensProcessedPerMinute", (("model_id", "m"),))] == 4
    now[0] += 45  # the first second is out of the window, the second not
    per_minute = gauges(metrics)
    assert per_minute[("NumberOfInputTokensProcessedPerMinute", (("model_id", "m"),))] == 5
    assert per_minute[("batchrock_input_tokens_total", (("model_id", "m"),))] == 15
    # Counters that went back (a file restarted) add nothing.
    metrics.progress("m", Counters(processed=2, input_tokens=15), Counters(processed=1))
    assert gauges(metrics)[("batchrock_records_processed_total", (("model_id", "m"),))] == 2


def test_model_id_labels_are_bounded() -> None:
    metrics = Metrics()
    for i in range(MAX_MODEL_LABELS + 50):
        metrics.progress(f"model-{i}", Counters(), Counters(processed=1))
    processed = {
        labels[0][1]: v
        for (name, labels), v in gauges(metrics).items()
        if name == "batchrock_records_processed_total"
    }
    assert len(processed) == MAX_MODEL_LABELS + 1
    assert processed[OTHER_MODEL] == 50
    assert sum(processed.values()) == MAX_MODEL_LABELS + 50


async def _get_metrics(app: BedrockApp) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/metrics",
        "raw_path": b"/metrics",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8765")],
        "scheme": "http",
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


@pytest.mark.parametrize(
    ("host", "public", "status"),
    [("0.0.0.0", False, 403), ("0.0.0.0", True, 200), ("127.0.0.1", False, 200)],
)
def test_who_may_read_metrics_with_a_credentials_file(
    tmp_path: Path, host: str, public: bool, status: int
) -> None:
    async def scenario() -> tuple[int, bytes]:
        creds = write_credentials(tmp_path / "credentials.toml")
        store = await SqliteStore.open(tmp_path / "db.sqlite3")
        try:
            settings = Settings(
                data_dir=tmp_path, host=host, credentials_file=creds, metrics_public=public
            )
            app = BedrockApp(JobService(store, FakeClock(datetime.now(UTC))), settings)
            return await _get_metrics(app)
        finally:
            await store.close()

    got, body = asyncio.run(scenario())
    assert got == status, body
    if status == 403:
        assert b"metrics_public" in body
    else:
        assert b"batchrock_jobs{" in body


def test_a_worker_metrics_port_follows_the_open_mode_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Open mode is loopback only, for a worker's metrics port as for serve's API."""
    from batchrock import admin

    argv = ["worker", "--data-dir", str(tmp_path), "--host", "0.0.0.0", "--metrics-port", "9"]
    assert admin.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("batchrock worker: ") and "--credentials-file" in err
    assert not (tmp_path / "batchrock.sqlite3").exists()


def test_a_busy_worker_metrics_port_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchrock import admin

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["worker", "--data-dir", str(tmp_path), "--metrics-port", str(port)]
        assert admin.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"batchrock worker: cannot listen on 127.0.0.1:{port}: ")
    assert "\n" not in err


def test_model_request_latencies_are_exposed_as_a_prometheus_histogram_would() -> None:
    """The model-request histogram keeps its own counts (it is observed once per attempt);
    its exposition text is prometheus-client's Histogram's, byte for byte bar the creation
    times."""
    registry = CollectorRegistry(auto_describe=True)
    reference = Histogram(
        "batchrock_model_request_duration_seconds",
        "One model request (one attempt) by model route and outcome.",
        ["route", "outcome"],
        buckets=_MODEL_BUCKETS,
        registry=registry,
    )
    metrics = Metrics()
    observed = [
        ("a", "ok", 0.0),
        ("a", "ok", 0.005),  # on a bound: counted in it
        ("a", "ok", 0.0051),
        ("a", "throttled", 0.3),
        ("b", "error", 61.0),  # past every bound
        ("a", "ok", 1.0),
    ]
    for route, outcome, seconds in observed:
        metrics.model_request(route, outcome, seconds)
        reference.labels(route, outcome).observe(seconds)
    name = "batchrock_model_request_duration_seconds"
    ours = _section(metrics.render().decode(), name)
    assert f"{name}_bucket" in ours
    assert ours == _section(generate_latest(registry).decode(), name)


def test_api_request_latencies_are_exposed_as_a_prometheus_histogram_would() -> None:
    """The API's latency histogram (observed once per request) keeps its own counts too, and
    is exposed as prometheus-client's Histogram is; the request counter beside it as before."""
    registry = CollectorRegistry(auto_describe=True)
    name = "batchrock_api_request_duration_seconds"
    reference = Histogram(
        name,
        "Time from a request's arrival to its answer, by operation.",
        ["operation"],
        buckets=_API_BUCKETS,
        registry=registry,
    )
    metrics = Metrics()
    observed = [
        ("GetModelInvocationJob", 200, 0.0),
        ("GetModelInvocationJob", 200, _API_BUCKETS[0]),  # on a bound: counted in it
        ("GetModelInvocationJob", 404, 0.02),
        ("ListModelInvocationJobs", 200, 0.7),
        ("CreateModelInvocationJob", 400, 1e6),  # past every bound
    ]
    for operation, code, seconds in observed:
        metrics.api_request(operation, code, seconds)
        reference.labels(operation).observe(seconds)
    text = metrics.render().decode()
    ours = _section(text, name)
    assert f'{name}_bucket{{le="+Inf",operation="GetModelInvocationJob"}} 3.0' in ours
    assert ours == _section(generate_latest(registry).decode(), name)
    assert 'batchrock_api_requests_total{code="200",operation="GetModelInvocationJob"} 2.0' in text
    assert 'batchrock_api_requests_total{code="404",operation="GetModelInvocationJob"} 1.0' in text


def test_api_request_counts_are_exposed_as_a_prometheus_counter_would() -> None:
    """The API's request counter keeps plain counts too (incremented once per request), and
    is exposed as prometheus-client's Counter is, byte for byte bar the creation times."""
    registry = CollectorRegistry(auto_describe=True)
    name = "batchrock_api_requests"
    reference = Counter(
        name,
        "API requests answered, by operation and HTTP status code.",
        ["operation", "code"],
        registry=registry,
    )
    metrics = Metrics()
    observed = [
        ("GetModelInvocationJob", 200),
        ("ListModelInvocationJobs", 200),
        ("GetModelInvocationJob", 404),
        ("GetModelInvocationJob", 200),
        ("unknown", 403),
    ]
    for operation, code in observed:
        metrics.api_request(operation, code, 0.001)
        reference.labels(operation, str(code)).inc()
    ours = _section(metrics.render().decode(), name)
    assert f'{name}_total{{code="200",operation="GetModelInvocationJob"}} 2.0' in ours
    assert f"{name}_created" in ours
    assert ours == _section(generate_latest(registry).decode(), name)
    assert metrics.api_requests_answered() == {
        ("GetModelInvocationJob", 200): 2,
        ("ListModelInvocationJobs", 200): 1,
        ("GetModelInvocationJob", 404): 1,
        ("unknown", 403): 1,
    }


def _section(text: str, name: str) -> str:
    """The lines of metric ``name``, creation times masked."""
    lines = [line for line in text.splitlines() if name in line]
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", "\n".join(lines))
