"""A route with several model servers (``base_urls``): least busy first, unhealthy ones taken
out and probed again after a backoff on the Clock, one concurrency limit for them all.

The servers are real fake OpenAI-compatible processes (fake_openai.py); one is down from the
start, one dies mid-run (``--die-after``), one comes back. Time only moves when the test moves
its FakeClock, so "not probed before the backoff" is an observation, not a race.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrock.backends.base import ModelRequest, ModelResult
from batchrock.backends.openai_compat import OpenAIBackend
from batchrock.backends.replicas import ReplicaSet
from batchrock.backends.resilience import ResilientBackend
from batchrock.backends.routing import BackendResolver, ConfigError, build_resolver
from batchrock.clock import FakeClock
from batchrock.metrics import process_metrics
from batchrock.settings import Settings

from .conftest import FakeServer, free_port, start
from .test_jobs_e2e import FAST, claude, results, routes, submit, wait

pytestmark = pytest.mark.timeout(120)

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


def text_of(result: ModelResult) -> str:
    assert result.output is not None, result.error
    return str(result.output["content"][0]["text"])


def spans(server: FakeServer) -> list[dict[str, Any]]:
    path = server.log.with_suffix(".spans")
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_text().splitlines()]


def fake(tmp: Path, *args: str, port: int | None = None) -> FakeServer:
    tmp.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    spans_path = tmp / f"fake_openai.py-{port}.spans"
    return start("fake_openai.py", tmp, "--spans", str(spans_path), *args, port=port)


def most_in_flight(*servers: FakeServer) -> int:
    """The most requests the servers were answering at one moment, all of them together
    (each server's span of a request lies within the client's)."""
    edges = sorted(
        (t, step)
        for server in servers
        for span in spans(server)
        for t, step in ((span["t0"], 1), (span["t1"], -1))
    )
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def routes_file(tmp: Path, urls: list[str], extra: str = "") -> Path:
    """A models config whose one route lists ``urls`` (quick retries, 10 s probe backoff)."""
    listed = ", ".join(f'"{url}/v1"' for url in urls)
    return routes(
        tmp,
        f"""
[[routes]]
model = "anthropic.*"
backend = "openai"
base_urls = [{listed}]
probe_after_s = 10
backoff_base_s = 0.001
backoff_max_s = 0.01
max_retries = 6
{extra}
""",
    )


def config(tmp: Path, urls: list[str], extra: str = "") -> Settings:
    path = routes_file(tmp, urls, extra)
    return Settings(data_dir=tmp / "data", models_config=path, builtin_fallback=False)


def replica_set(resolver: BackendResolver) -> ReplicaSet:
    backend = resolver.for_model(MODEL)
    assert isinstance(backend, ResilientBackend) and isinstance(backend.inner, ReplicaSet)
    return backend.inner


def drive(
    settings: Settings, clock: FakeClock, body: Callable[[BackendResolver, ReplicaSet], Any]
) -> None:
    """Run ``await body(resolver, replica set)`` on the routes of ``settings``."""

    async def go() -> None:
        resolver = build_resolver(settings, clock)
        try:
            await body(resolver, replica_set(resolver))
        finally:
            await resolver.aclose()

    asyncio.run(go())


async def ask(resolver: BackendResolver, texts: list[str]) -> list[str]:
    backend = resolver.for_model(MODEL)
    answers = await asyncio.gather(
        *(backend.invoke(ModelRequest(MODEL, "InvokeModel", claude(t), t)) for t in texts)
    )
    return [text_of(a) for a in answers]


@pytest.fixture
def servers() -> Iterator[list[FakeServer]]:
    running: list[FakeServer] = []
    yield running
    for server in running:
        server.stop()  # a server that died is only reaped and its pipe closed


def test_down_dying_and_returning_replicas(tmp_path: Path, servers: list[FakeServer]) -> None:
    a = fake(tmp_path / "a", "--latency-ms", "20")
    b = fake(tmp_path / "b", "--latency-ms", "20", "--die-after", "40")
    servers += [a, b]
    down_port = free_port()  # nothing listens here: the replica that is down from the start
    urls = [a.url, b.url, f"http://127.0.0.1:{down_port}"]
    settings = config(tmp_path, urls)
    clock = FakeClock()
    tag = tmp_path.name

    async def go(resolver: BackendResolver, replicas: ReplicaSet) -> None:
        # 1. One replica is down: its first refused connection takes it out; the records
        # sent there are retried on the others, and the two live ones share the load.
        first = [f"one {i} {tag}" for i in range(30)]
        assert await ask(resolver, first) == [f"echo: {t}" for t in first]
        assert not replicas.replicas[2].healthy
        assert replicas.replicas[2].out_until == clock.monotonic() + 10
        served = Counter(s["text"] for s in spans(a) + spans(b))
        assert served == Counter(first)  # each answered once
        assert len(spans(a)) >= 10 and len(spans(b)) >= 10

        # 2. The second replica dies on its 40th request, with requests in flight: they
        # are retried on the one left, and every record gets its answer.
        second = [f"two {i} {tag}" for i in range(60)]
        assert await ask(resolver, second) == [f"echo: {t}" for t in second]
        assert b.process.wait(timeout=10) == 3
        assert not replicas.replicas[1].healthy
        answered = Counter(s["text"] for s in spans(a) + spans(b))
        assert set(answered) == set(first) | set(second)
        # Only a record in flight on the dying server may have been answered twice (its
        # answer lost with the connection); none of the first round was.
        assert all(answered[t] == 1 for t in first)
        assert sum(n - 1 for n in answered.values()) <= 60

        # 3. The dead server comes back on its port, but gets nothing until its backoff
        # has passed on the clock...
        back = fake(tmp_path / "b2", "--latency-ms", "20", port=int(b.url.rsplit(":", 1)[1]))
        servers.append(back)
        third = [f"three {i} {tag}" for i in range(20)]
        assert await ask(resolver, third) == [f"echo: {t}" for t in third]
        assert spans(back) == []
        # ...then one request probes it and it is put back. The replica still down fails
        # its probe and stays out twice as long.
        clock.advance(10)
        fourth = [f"four {i} {tag}" for i in range(20)]
        assert await ask(resolver, fourth) == [f"echo: {t}" for t in fourth]
        assert replicas.replicas[1].healthy
        assert spans(back)  # the probe (others of this round went out while it was pending)
        assert replicas.replicas[2].out_until == clock.monotonic() + 20
        # Back in, it takes its share again.
        fifth = [f"five {i} {tag}" for i in range(20)]
        assert await ask(resolver, fifth) == [f"echo: {t}" for t in fifth]
        assert len(spans(back)) >= 8
        text = process_metrics().render().decode()
        assert 'batchrock_model_replica_healthy{replica="2",route="1:openai"} 1.0' in text
        assert 'batchrock_model_replica_healthy{replica="3",route="1:openai"} 0.0' in text

    drive(settings, clock, go)


def test_a_streak_of_server_errors_takes_a_replica_out_and_throttling_does_not(
    tmp_path: Path, servers: list[FakeServer]
) -> None:
    a = fake(tmp_path / "a")
    b = fake(tmp_path / "b")
    servers += [a, b]
    # One request at a time, so the attempts of a record alternate between the replicas.
    settings = config(tmp_path, [a.url, b.url], "unhealthy_after = 3\nmax_concurrency = 1")
    clock = FakeClock()
    tag = tmp_path.name

    async def go(resolver: BackendResolver, replicas: ReplicaSet) -> None:
        # Throttled three times on each replica (six 429s in a row): not ill health.
        throttled = [f"FAULT:429:3 {i} {tag}" for i in range(3)]
        assert await ask(resolver, throttled) == [f"echo: {t}" for t in throttled]
        assert all(r.healthy for r in replicas.replicas)
        # Two 500s on each (A, B, A, B, then A answers): two in a row each, below three.
        record = f"FAULT:500:2 {tag}"
        assert await ask(resolver, [record]) == [f"echo: {record}"]
        assert all(r.healthy for r in replicas.replicas)
        # 500s only: the one with two already goes out at its third, the other at its
        # third; the last attempts go to the replicas out (none is left in) and fail.
        backend = resolver.for_model(MODEL)
        body = claude(f"FAULT:500:99 {tag}")
        result = await backend.invoke(ModelRequest(MODEL, "InvokeModel", body, "x"))
        assert result.error is not None and result.error.code == 500
        assert result.info["attempts"] == 7
        assert not any(r.healthy for r in replicas.replicas)

    drive(settings, clock, go)


def test_one_concurrency_limit_for_all_replicas(tmp_path: Path, servers: list[FakeServer]) -> None:
    replicas = [fake(tmp_path / name, "--latency-ms", "30") for name in "abc"]
    servers += replicas
    settings = config(tmp_path, [r.url for r in replicas], "max_concurrency = 5")
    tag = tmp_path.name

    async def go(resolver: BackendResolver, _: ReplicaSet) -> None:
        texts = [f"c {i} {tag}" for i in range(60)]
        assert await ask(resolver, texts) == [f"echo: {t}" for t in texts]

    drive(settings, FakeClock(), go)
    assert most_in_flight(*replicas) <= 5
    assert all(len(spans(r)) >= 10 for r in replicas)


def test_a_job_over_replicas_one_down_and_one_dying(
    server_factory: Any, tmp_path: Path, servers: list[FakeServer]
) -> None:
    a = fake(tmp_path / "a", "--latency-ms", "10")
    b = fake(tmp_path / "b", "--latency-ms", "10", "--die-after", "30")
    servers += [a, b]
    path = routes_file(tmp_path, [a.url, b.url, f"http://127.0.0.1:{free_port()}"])
    server = server_factory(
        **FAST, models_config=path, builtin_fallback=False, engine_record_concurrency=6
    )
    tag = tmp_path.name
    records = [
        {"recordId": f"R{i:03d}", "modelInput": claude(f"job {i} {tag}")} for i in range(200)
    ]
    arn = submit(server, MODEL, records)
    job = wait(server, arn)
    lines, manifest = results(server, arn)
    assert job["status"] == "Completed"
    assert [line["recordId"] for line in lines] == [r["recordId"] for r in records]
    assert [line["modelOutput"]["content"][0]["text"] for line in lines] == [
        f"echo: job {i} {tag}" for i in range(200)
    ]
    assert manifest["successRecordCount"] == 200
    assert b.process.wait(timeout=10) == 3
    assert len(spans(b)) >= 20 and len(spans(a)) >= 100
    # The job's record concurrency is the limit for all replicas together.
    assert most_in_flight(a, b) <= 6


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('base_url = "http://x/v1"\nbase_urls = ["http://y/v1"]', "either 'base_url' or"),
        ("base_urls = []", "non-empty list of URLs"),
        ('base_urls = ["http://y/v1", "http://y/v1"]', "lists a URL twice"),
        ('base_url = "http://x/v1"\nprobe_after_s = 1', "need(s) 'base_urls'"),
        ('base_urls = ["http://y/v1", "http://z/v1"]\nunhealthy_after = 0', "at least 1"),
        ('base_urls = ["ftp://y/v1", "http://z/v1"]', "must be an http(s) URL"),
    ],
)
def test_bad_replica_settings_stop_start_up(tmp_path: Path, keys: str, message: str) -> None:
    path = routes(tmp_path, f'[[routes]]\nmodel = "a.*"\nbackend = "openai"\n{keys}\n')
    with pytest.raises(ConfigError, match="route 1") as caught:
        build_resolver(Settings(data_dir=tmp_path, models_config=path))
    assert message in str(caught.value)


def test_base_urls_is_for_openai_routes_and_one_url_is_a_plain_backend(tmp_path: Path) -> None:
    path = routes(tmp_path, '[[routes]]\nmodel = "a.*"\nbackend = "builtin"\nbase_urls = ["x"]\n')
    with pytest.raises(ConfigError, match="only openai routes take these"):
        build_resolver(Settings(data_dir=tmp_path, models_config=path))
    path = routes(
        tmp_path, '[[routes]]\nmodel = "a.*"\nbackend = "openai"\nbase_urls = ["http://y/v1"]\n'
    )
    resolver = build_resolver(Settings(data_dir=tmp_path, models_config=path))
    backend = resolver.for_model("a.b")
    assert isinstance(backend, ResilientBackend) and isinstance(backend.inner, OpenAIBackend)


def test_models_command_lists_the_replicas(tmp_path: Path) -> None:
    import subprocess

    path = routes(
        tmp_path,
        '[[routes]]\nmodel = "a.*"\nbackend = "openai"\n'
        'base_urls = ["http://h1:8000/v1", "http://h2:8000/v1"]\n',
    )
    out = subprocess.run(
        [sys.executable, "-m", "batchrock.admin", "models", "--models-config", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "2 replicas: OpenAI-compatible server at http://h1:8000/v1" in out
    assert "http://h2:8000/v1" in out
