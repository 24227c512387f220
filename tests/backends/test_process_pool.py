"""Records of remote routes answered in worker processes (engine_processes, process_pool.py).

Through real ``batchrock serve`` processes and the fake OpenAI-compatible server: the output
is the same as in one process, every record exactly once when a worker or the engine is
SIGKILLed mid-job, no worker outlives its engine, and a route's ``max_concurrency`` holds
across the workers. In this process: retries and throttling counts, cancellation, closing,
and workers that cannot start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrock.backends.base import Block, BlockAnswer, ModelRequest, ModelResult
from batchrock.backends.pool_child import Worker
from batchrock.backends.process_pool import (
    FRAME,
    OFFLOAD_WINDOW_S,
    Offload,
    PooledBackend,
    PooledRoute,
    WorkerPool,
    decode,
    idle_cpu_seconds,
)
from batchrock.backends.routing import build_resolver, parse_route
from batchrock.engine.file_pass import answer_block
from batchrock.metrics import process_metrics
from batchrock.settings import Settings

from .conftest import FakeServer, free_port, run, start
from .test_jobs_e2e import FAST, claude, results, routes, submit, wait

pytestmark = pytest.mark.timeout(180)

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


def all_to_children(data_dir: Path) -> Settings:
    """Settings whose pool sends every record to its children, however idle this loop is."""
    return Settings(data_dir=data_dir, engine_offload_load=0)


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids.extend(int(k) for k in (task / "children").read_text().split())
    return [k for k in kids if alive(k)]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def route_file(tmp_path: Path, fake: FakeServer, extra: str = "") -> Path:
    return routes(
        tmp_path,
        f'[[routes]]\nmodels = ["anthropic.*"]\nbackend = "openai"\n'
        f'base_url = "{fake.url}/v1"\nbackoff_base_s = 0.01\nbackoff_max_s = 0.05\n{extra}',
    )


def records(count: int, faults: dict[int, str] | None = None) -> list[dict[str, Any]]:
    faults = faults or {}
    return [
        {"recordId": f"R{i:04d}", "modelInput": claude(f"question {i} {faults.get(i, '')}")}
        for i in range(count)
    ]


def assert_exactly_once(lines: list[dict[str, Any]], recs: list[dict[str, Any]]) -> None:
    assert [line["recordId"] for line in lines] == [r["recordId"] for r in recs]
    assert all("modelOutput" in line for line in lines), [x for x in lines if "error" in x][:3]


def test_workers_write_what_one_process_writes(server_factory: Any, tmp_path: Path) -> None:
    """The same job (answers, a 400, records throttled and failing before they succeed) gives
    the same bytes and counts in one process and with two workers; the workers exist."""
    recs = records(150, {3: "FAULT:429:2", 40: "FAULT:400", 77: "FAULT:500:1", 90: "FAULT:drop:1"})
    outputs = []
    for processes in (1, 2):
        fake = start("fake_openai.py", tmp_path)
        try:
            folder = tmp_path / f"p{processes}"
            folder.mkdir()
            server = server_factory(
                **FAST,
                models_config=route_file(folder, fake),
                engine_processes=processes,
                engine_offload_load=0,  # every record to the workers, however idle the loop
                engine_record_concurrency=8,
            )
            arn = submit(server, MODEL, recs)
            job = wait(server, arn)
            assert job["status"] == "Completed"
            assert len(children(server.proc.pid)) == (2 if processes == 2 else 0)
            folder_out = server.data_dir / "s3" / "bucket" / "out" / arn.rsplit("/", 1)[-1]
            manifest = orjson.loads((folder_out / "manifest.json.out").read_bytes())
            counts = {k: v for k, v in manifest.items() if k.endswith("Count")}
            outputs.append(((folder_out / "records.jsonl.out").read_bytes(), counts))
            lines, _ = results(server, arn)
            assert lines[40]["error"]["errorCode"] == 400
            assert sum("modelOutput" in x for x in lines) == 149
        finally:
            fake.stop()
    assert outputs[0] == outputs[1]
    assert "model worker process 2 started" in server.log()


@contextmanager
def job_under_way(
    server_factory: Any, tmp_path: Path, **settings: Any
) -> Iterator[tuple[Any, str, list[dict[str, Any]]]]:
    """A server with two workers running a 600-record job (60 of them answered already)
    against a fake server answering after 20 ms: (server, job ARN, records)."""
    fake = start("fake_openai.py", tmp_path, "--latency-ms", "20")
    try:
        server = server_factory(
            **{**FAST, **settings},
            models_config=route_file(tmp_path, fake),
            engine_processes=2,
            engine_offload_load=0,
            engine_record_concurrency=16,
        )
        recs = records(600)
        arn = submit(server, MODEL, recs)
        wait_for(lambda: server.progress(arn)[1] >= 60, "records answered")
        yield server, arn, recs
        job = wait(server, arn, timeout=120)
        assert job["status"] == "Completed"
        lines, manifest = results(server, arn)
        assert_exactly_once(lines, recs)
        assert manifest["successRecordCount"] == 600
        assert manifest["errorRecordCount"] == 0
    finally:
        fake.stop()


def test_a_worker_killed_mid_job_loses_and_doubles_nothing(
    server_factory: Any, tmp_path: Path
) -> None:
    with job_under_way(server_factory, tmp_path) as (server, _arn, _recs):
        victim = children(server.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
    replaced = children(server.proc.pid)
    assert len(replaced) == 2 and victim not in replaced
    assert "(exit status -9); its" in server.log()
    assert "model worker process 3 started" in server.log()


def test_killed_engine_leaves_no_workers_and_its_job_resumes(
    server_factory: Any, tmp_path: Path
) -> None:
    with job_under_way(server_factory, tmp_path, engine_lease_seconds=1) as (server, _, _):
        workers = children(server.proc.pid)
        assert len(workers) == 2
        server.kill()
        # Their socket to the engine ended with it: they exit at once, by themselves.
        wait_for(lambda: not any(alive(w) for w in workers), "the workers to exit", 20)
        server.start()


def test_route_concurrency_holds_across_workers(server_factory: Any, tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    fake = start("fake_openai.py", tmp_path, "--latency-ms", "30", "--spans", str(spans))
    try:
        server = server_factory(
            **FAST,
            models_config=route_file(tmp_path, fake, "max_concurrency = 3\n"),
            engine_processes=2,
            engine_offload_load=0,
            engine_record_concurrency=32,
        )
        recs = records(120)
        arn = submit(server, MODEL, recs)
        assert wait(server, arn)["status"] == "Completed"
        lines, _ = results(server, arn)
        assert_exactly_once(lines, recs)
        assert len(children(server.proc.pid)) == 2
    finally:
        fake.stop()
    events = []
    for line in spans.read_text().splitlines():
        span = orjson.loads(line)
        events += [(span["t0"], 1), (span["t1"], -1)]
    in_flight = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        in_flight += step
        peak = max(peak, in_flight)
    assert len(events) == 240
    assert 2 <= peak <= 3


# --- in this process ----------------------------------------------------------------------


def request(text: str, number: int = 0) -> ModelRequest:
    return ModelRequest(MODEL, "InvokeModel", claude(text), f"R{number}")


def per_record(backend: Any) -> Any:
    """The record-by-record stack of a route whose blocks go to the workers whole."""
    return backend.backend if isinstance(backend, PooledRoute) else backend


def pool_settings(tmp_path: Path, fake: FakeServer, extra: str = "") -> Settings:
    return Settings(
        data_dir=tmp_path,
        models_config=route_file(tmp_path, fake, extra),
        engine_processes=2,
        engine_offload_load=0,
    )


def test_retries_and_throttling_are_counted_in_the_engine(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    async def go() -> tuple[list[ModelResult], list[int]]:
        resolver = build_resolver(pool_settings(tmp_path, fake_openai))
        try:
            backend = per_record(resolver.for_model(MODEL))
            inner = getattr(backend, "inner")  # noqa: B009
            assert isinstance(inner, PooledBackend)
            answers = await asyncio.gather(
                backend.invoke(request(f"pool-retry FAULT:429:2 {time.time_ns()}")),
                backend.invoke(request("plain", 1)),
            )
            assert resolver.pool is not None
            return list(answers), resolver.pool.pids
        finally:
            await resolver.aclose()

    (throttled, plain), pids = asyncio.run(go())
    assert throttled.ok and throttled.info == {"attempts": 3, "throttled": 2}
    assert plain.ok and plain.output is not None
    assert orjson.loads(orjson.dumps(plain.output))["content"][0]["text"] == "echo: plain"
    assert len(pids) == 2
    wait_for(lambda: not any(alive(p) for p in pids), "the closed pool's workers to exit", 10)


class Readings:
    """The event loop's CPU seconds, the idle seconds of the process's CPUs and the monotonic
    time, as a test sets them."""

    def __init__(self) -> None:
        self.cpu = self.now = self.idle = 0.0

    def offload(self, load: float = 0.8) -> Offload:
        offload = Offload(
            load, cpu=lambda: self.cpu, idle=lambda: self.idle, clock=lambda: self.now
        )
        offload.to_children()  # the first record starts the first look (in the loop's thread)
        return offload

    def window(self, busy: float, free: float = 1.0) -> None:
        """One look's worth of time passes, the loop using ``busy`` of its core and ``free``
        cores' worth of the process's CPUs idle."""
        self.now += OFFLOAD_WINDOW_S
        self.cpu += busy * OFFLOAD_WINDOW_S
        self.idle += free * OFFLOAD_WINDOW_S


def test_records_go_to_the_workers_only_while_the_engine_loop_is_busy() -> None:
    readings = Readings()
    offload = readings.offload(0.8)

    def look(busy: float) -> int:
        readings.window(busy)
        return sum(offload.to_children() for _ in range(8))

    assert look(0.5) == 0  # time to spare: the engine answers every record itself
    assert look(0.79) == 0
    # Busy: a quarter more of the records go to the workers at each look, up to all.
    assert [look(0.9), look(1.0), look(0.95), look(1.0), look(1.0)] == [2, 4, 6, 8, 8]
    assert look(0.7) == 8  # within the band below the load: held
    assert [look(0.3), look(0.5), look(0.59)] == [6, 4, 2]
    assert [look(0.1), look(0.1)] == [0, 0]
    assert all(Readings().offload(0).to_children() for _ in range(8))  # 0: always
    # The first record sets where the first look starts: the CPU time of the pool's builder
    # (maybe another thread) is not the loop's.
    other = Readings()
    late = Offload(0.8, cpu=lambda: other.cpu, idle=lambda: other.idle, clock=lambda: other.now)
    other.window(1.0)  # what the builder's thread did meanwhile, by the loop thread's clock
    assert sum(late.to_children() for _ in range(8)) == 0 and late.share == 0


def test_a_busy_engine_on_busy_cores_keeps_its_records() -> None:
    """A loop using its whole core while the process's other CPUs have no time to spare (a
    small machine shared with the model server) keeps answering its records: workers would
    take their CPU from the loop and the model server, and each record would pay the
    crossing for nothing."""
    readings = Readings()
    offload = readings.offload(0.8)

    def look(busy: float, free: float) -> int:
        readings.window(busy, free)
        return sum(offload.to_children() for _ in range(8))

    assert [look(1.0, 0.0), look(0.95, 0.3), look(0.9, 0.49)] == [0, 0, 0]
    # Cores come free: the share rises; it holds while the loop is busy and the workers use
    # what was free, and falls as before once the loop has time to spare.
    assert [look(1.0, 1.2), look(1.0, 0.6), look(1.0, 0.1), look(0.9, 0.0)] == [2, 4, 4, 4]
    assert [look(0.5, 0.0), look(0.5, 0.0)] == [2, 0]
    # Where the idle time cannot be read (not Linux) only the loop's CPU decides.
    unknown = Offload(0.8, cpu=lambda: readings.cpu, idle=lambda: None, clock=lambda: readings.now)
    unknown.to_children()
    readings.window(1.0, 0.0)
    assert sum(unknown.to_children() for _ in range(8)) == 2


def test_the_idle_time_of_this_process_cpus_is_read() -> None:
    idle = idle_cpu_seconds()
    assert idle is not None and idle > 0
    assert idle_cpu_seconds() >= idle  # type: ignore[operator]


def test_an_idle_engine_answers_remote_records_itself(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    """With time to spare on the engine's loop (a latency-bound job, or a machine whose
    other work keeps the loop off its core) no worker starts: the records do not cross."""
    readings = Readings()

    async def go() -> tuple[list[ModelResult], list[int]]:
        settings = Settings(
            data_dir=tmp_path, models_config=route_file(tmp_path, fake_openai), engine_processes=2
        )
        resolver = build_resolver(settings)
        assert resolver.pool is not None and resolver.pool.offload.load == 0.8
        resolver.pool.offload = readings.offload()
        try:
            backend = per_record(resolver.for_model(MODEL))
            answers = []
            for busy in (0.1, 0.5, 0.7):
                readings.window(busy)
                answers += await asyncio.gather(
                    *(backend.invoke(request(f"q{i}", i)) for i in range(8))
                )
            return answers, resolver.pool.pids
        finally:
            await resolver.aclose()

    answers, pids = asyncio.run(go())
    assert [orjson.loads(orjson.dumps(a.output))["content"][0]["text"] for a in answers] == [
        f"echo: q{i}" for i in range(8)
    ] * 3
    assert pids == []


def test_a_busy_engine_sends_its_workers_the_share_it_cannot_answer(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    readings = Readings()

    async def go() -> tuple[list[ModelResult], list[int], list[int]]:
        settings = Settings(
            data_dir=tmp_path, models_config=route_file(tmp_path, fake_openai), engine_processes=2
        )
        resolver = build_resolver(settings)
        pool = resolver.pool
        assert pool is not None
        pool.offload = readings.offload()
        backend = per_record(resolver.for_model(MODEL))
        answered = []
        answers = []
        try:
            for busy in (0.3, 1.0, 1.0, 0.1, 0.1):
                readings.window(busy)
                answers += await asyncio.gather(
                    *(backend.invoke(request(f"q{i}", i)) for i in range(8))
                )
                answered.append(sum(child.answered for child in pool._children))
                if len(answered) == 2:
                    await until(lambda: pool._ready, "a worker to be ready")
            return answers, answered, pool.pids
        finally:
            await resolver.aclose()

    answers, answered, pids = asyncio.run(go())
    assert all(a.ok for a in answers)
    # None while idle; busy, a quarter of the records are for the workers, but they have
    # only just been started: the engine answers those itself; then half of the records go
    # to them; idle again, a quarter, then none.
    assert answered == [0, 0, 4, 6, 6]
    assert len(pids) == 2


async def until(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class _Here:
    """A local leaf that answers at once, counting what it answered."""

    def __init__(self) -> None:
        self.answered = 0

    async def invoke(self, request: ModelRequest) -> ModelResult:
        self.answered += 1
        return ModelResult(output={"here": request.record_id})

    async def aclose(self) -> None:
        return None


def test_no_record_waits_for_a_worker_to_start(tmp_path: Path) -> None:
    """Records the busy engine would send to its workers are answered in the engine until a
    worker has said it is ready: a worker's start (a Python process importing the backends,
    seconds on a busy machine) does not hold records, and the concurrency slots they take,
    while the engine could answer them. Here the workers never become ready."""
    route = parse_route(0, {"model": MODEL, "backend": "builtin"})
    sent = tmp_path / "sent.bin"
    readings = Readings()

    async def go() -> tuple[list[ModelResult], int, list[int]]:
        command = [sys.executable, "-c", RECORDER, str(sent)]
        pool = WorkerPool(Settings(data_dir=tmp_path), 2, command, offload=readings.offload())
        here = _Here()
        backend = pool.backend(route, here)
        answers: list[ModelResult] = []
        try:
            for _ in range(4):
                readings.window(1.0)
                answers += await asyncio.wait_for(
                    asyncio.gather(*(backend.invoke(request("x", i)) for i in range(8))), 10
                )
            await until(lambda: len(pool.pids) == 2, "the workers to be started")
            return answers, here.answered, pool.pids
        finally:
            await pool.aclose()

    answers, here, pids = asyncio.run(go())
    assert [a.output for a in answers] == [{"here": f"R{i}"} for i in range(8)] * 4
    assert here == 32 and len(pids) == 2
    # The workers got their configuration (a pickle) and nothing else.
    got = frames(sent.read_bytes()) if sent.exists() else []
    assert all(f.startswith(b"\x80") for f in got), got


def test_workers_that_cannot_start_leave_the_records_to_the_engine(tmp_path: Path) -> None:
    """With ``engine_offload_load`` above 0 the engine can answer every record itself: a
    pool whose workers cannot start (the log says why) leaves them all to it."""
    route = parse_route(0, {"model": MODEL, "backend": "builtin"})
    readings = Readings()

    async def go() -> tuple[list[ModelResult], str | None]:
        command = [sys.executable, "-c", "raise SystemExit(3)"]
        pool = WorkerPool(Settings(data_dir=tmp_path), 2, command, offload=readings.offload())
        backend = pool.backend(route, _Here())
        try:
            readings.window(1.0)
            answers = [await backend.invoke(request("x", i)) for i in range(8)]
            await until(lambda: pool._broken is not None, "the pool to give up")
            readings.window(1.0)
            answers += [await backend.invoke(request("x", i)) for i in range(8)]
            return answers, pool._broken
        finally:
            await pool.aclose()

    answers, broken = asyncio.run(go())
    assert [a.output for a in answers] == [{"here": f"R{i}"} for i in range(8)] * 2
    assert broken is not None and "cannot start" in broken


#: A stand-in worker that answers nothing and keeps every byte the engine sends it.
RECORDER = """
import socket, sys
sock = socket.socket(fileno=int(sys.argv[-1]))
with open(sys.argv[1], "ab", buffering=0) as out:
    while data := sock.recv(65536):
        out.write(data)
"""


def frames(data: bytes) -> list[bytes]:
    found = []
    while len(data) >= FRAME.size:
        (size,) = FRAME.unpack(data[: FRAME.size])
        if len(data) < FRAME.size + size:
            break
        found.append(data[FRAME.size : FRAME.size + size])
        data = data[FRAME.size + size :]
    return found


#: A stand-in worker that says it is ready, then answers each record with its own pid,
#: except records whose recordId is "hold", which it keeps for ever.
#: The start of a stand-in worker: it reads its configuration and says it is ready.
STUB = """
import os, socket, struct, sys, msgspec
sock = socket.socket(fileno=int(sys.argv[-1]))
stream = sock.makefile("rb")
def read():
    head = stream.read(4)
    if len(head) < 4:
        sys.exit(0)
    return stream.read(struct.unpack(">I", head)[0])
def send(message):
    data = msgspec.msgpack.encode(message)
    sock.sendall(struct.pack(">I", len(data)) + data)
read()
send([])
"""
ANSWERER = (
    STUB
    + """
me = str(os.getpid()).encode()
while True:
    requests, cancelled, blocks, blocks_cancelled = msgspec.msgpack.decode(read())
    answer = b'{"pid":' + me + b"}"
    send([[[r[0], answer, 0, "", False, 1, 2, {}] for r in requests if r[5] != "hold"], [], []])
"""
)


def test_records_go_to_the_least_busy_ready_worker_and_never_to_a_dead_one(
    tmp_path: Path,
) -> None:
    """The engine picks the ready worker with the fewest records in flight (from the list of
    ready workers it keeps, not by looking at every worker per record): records dispatched
    in one turn alternate between two idle workers. A worker that dies leaves that list at
    once: the record it held goes to the live one, and no later record goes to it."""
    route = parse_route(0, {"model": MODEL, "backend": "builtin"})

    async def go() -> None:
        pool = WorkerPool(all_to_children(tmp_path), 2, [sys.executable, "-c", ANSWERER])
        backend = pool.backend(route, _Unused())
        try:
            await asyncio.wait_for(backend.invoke(request("warm")), 30)
            await until(lambda: len(pool._ready_children) == 2, "both workers to be ready")
            first, second = pool._ready_children
            answers = await asyncio.wait_for(
                asyncio.gather(*(backend.invoke(request("x", i)) for i in range(40))), 30
            )
            pids = [orjson.loads(orjson.dumps(a.output))["pid"] for a in answers]
            assert sorted(pids) == sorted([first.process.pid, second.process.pid] * 20)
            assert all((a.input_tokens, a.output_tokens) == (1, 2) for a in answers)

            held = ModelRequest(MODEL, "InvokeModel", claude("held"), "hold")
            holds = [asyncio.create_task(backend.invoke(held)) for _ in range(2)]
            await until(lambda: len(first.inflight) == len(second.inflight) == 1, "one held each")
            os.kill(first.process.pid, signal.SIGKILL)
            await until(lambda: first not in pool._children, "the dead worker to be reaped")
            assert first not in pool._ready_children and first.dead
            # Its record went to the worker that was ready, not to the one starting after it.
            assert len(second.inflight) == 2
            await until(lambda: len(pool._ready_children) == 2, "its replacement to be ready")
            live = {child.process.pid for child in pool._ready_children}
            assert first.process.pid not in live and second.process.pid in live
            later = await asyncio.wait_for(
                asyncio.gather(*(backend.invoke(request("y", i)) for i in range(20))), 30
            )
            assert {orjson.loads(orjson.dumps(a.output))["pid"] for a in later} <= live
            for hold in holds:
                hold.cancel()
        finally:
            await pool.aclose()

    asyncio.run(go())


def test_a_cancelled_record_is_cancelled_in_its_worker(tmp_path: Path) -> None:
    """The engine tells the worker (its deadline, a halted job), so the worker's request
    ends too and the route's bound on requests in flight holds there as well."""
    route = parse_route(0, {"model": MODEL, "backend": "builtin"})
    sent = tmp_path / "sent.bin"

    async def go() -> None:
        command = [sys.executable, "-c", RECORDER, str(sent)]
        pool = WorkerPool(all_to_children(tmp_path), 1, command)
        backend = pool.backend(route, _Unused())
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(backend.invoke(request("never answered")), 0.2)

            def three() -> bool:
                return sent.exists() and len(frames(sent.read_bytes())) >= 3

            await asyncio.to_thread(wait_for, three, "the cancellation to be sent")
        finally:
            await pool.aclose()

    asyncio.run(go())
    _config, asked, cancelled = frames(sent.read_bytes())
    [[number, leaf, model, _, body, rid]], [], [], [] = decode(asked)
    assert (leaf, model, rid) == (0, MODEL, "R0") and body == claude("never answered")
    assert decode(cancelled) == [[], [number], [], []]


def test_a_worker_cancels_what_the_engine_cancels(tmp_path: Path) -> None:
    route = parse_route(0, {"model": MODEL, "backend": "builtin", "latency_ms": 60_000})
    written: list[bytes] = []

    class Writer:
        def write(self, data: bytes) -> None:
            written.append(data)

    async def go() -> None:
        worker = Worker(Settings(data_dir=tmp_path), [route], Writer())  # type: ignore[arg-type]
        worker.take([[[7, 0, MODEL, "InvokeModel", claude("slow"), "R7"]], [], [], []])
        worker.take([[[8, 0, MODEL, "InvokeModel", claude("slow"), "R8"]], [], [], []])
        await asyncio.sleep(0.05)
        task = worker._tasks[7]
        worker.take([[], [7], [], []])
        with pytest.raises(asyncio.CancelledError):
            await task
        assert list(worker._tasks) == [8]
        worker._tasks[8].cancel()
        # Cancelled before its frame left: the request and its cancellation come together.
        worker.take([[[9, 0, MODEL, "InvokeModel", claude("slow"), "R9"]], [9], [], []])
        assert 9 not in worker._tasks

    asyncio.run(go())
    assert written == []


def test_workers_that_cannot_start_fail_records_not_the_engine(tmp_path: Path) -> None:
    route = parse_route(0, {"model": MODEL, "backend": "openai", "base_url": "http://x/v1"})

    async def go() -> list[ModelResult]:
        pool = WorkerPool(
            all_to_children(tmp_path), 2, [sys.executable, "-c", "raise SystemExit(3)"]
        )
        backend = pool.backend(route, _Unused())
        try:
            return list(
                await asyncio.wait_for(
                    asyncio.gather(*(backend.invoke(request("x", i)) for i in range(5))), 30
                )
            )
        finally:
            await pool.aclose()

    answers = asyncio.run(go())
    assert all(a.error is not None and a.error.code == 500 for a in answers)
    assert all("cannot start" in a.error.message for a in answers if a.error)


def test_a_record_messagepack_cannot_carry_gets_a_400(tmp_path: Path) -> None:
    route = parse_route(0, {"model": MODEL, "backend": "builtin"})
    sent = tmp_path / "sent.bin"

    async def go() -> ModelResult:
        pool = WorkerPool(all_to_children(tmp_path), 1, [sys.executable, "-c", RECORDER, str(sent)])
        backend = pool.backend(route, _Unused())
        odd = ModelRequest(MODEL, "InvokeModel", {"n": 2**70}, "R0")
        try:
            return await asyncio.wait_for(backend.invoke(odd), 10)
        finally:
            await pool.aclose()

    answer = asyncio.run(go())
    assert answer.error is not None and answer.error.code == 400
    assert answer.error.message.startswith("The record could not be sent to the model: ")


def test_a_closed_pool_answers_at_once(tmp_path: Path) -> None:
    route = parse_route(0, {"model": MODEL, "backend": "openai", "base_url": "http://x/v1"})

    async def go() -> ModelResult:
        pool = WorkerPool(all_to_children(tmp_path), 2)
        backend = pool.backend(route, _Unused())
        await pool.aclose()
        return await asyncio.wait_for(backend.invoke(request("late")), 10)

    answer = asyncio.run(go())
    assert answer.error is not None and answer.error.code == 500 and answer.error.retryable
    assert answer.error.message == "The engine is shutting down."


class _Unused:
    async def invoke(self, request: ModelRequest) -> ModelResult:
        raise AssertionError("the pool's proxy answers, not the local leaf")

    async def aclose(self) -> None:
        return None


def test_bedrock_routes_are_answered_by_workers_as_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_bedrock import CLAUDE, settings_for

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    answers = []
    for processes in (1, 2):
        fake = start("fake_bedrock.py", tmp_path)  # its own fault counts
        settings = dataclasses.replace(
            settings_for(tmp_path, fake.url, "max_retries = 3"),
            engine_processes=processes,
            engine_offload_load=0,
        )
        assert (build_resolver(settings).pool is not None) == (processes == 2)
        try:
            results = run(
                settings,
                ModelRequest(CLAUDE, "InvokeModel", claude("hi"), "a"),
                ModelRequest(CLAUDE, "InvokeModel", claude("FAULT:throttle:2"), "b"),
                ModelRequest(CLAUDE, "InvokeModel", {"messages": []}, "c"),
                ModelRequest(CLAUDE, "Converse", {"messages": "x"}, "d"),
            )
        finally:
            fake.stop()
        answers.append(
            [
                (orjson.loads(orjson.dumps(r.output)), r.error, r.input_tokens, r.info)
                for r in results
            ]
        )
    assert answers[0] == answers[1]
    assert answers[1][1][3] == {"attempts": 3, "throttled": 2}
    assert answers[1][2][1] is not None and answers[1][2][1].code == 400


def test_replicas_are_judged_in_the_engine_from_the_workers_answers(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    """Each replica of a ``base_urls`` route is a leaf of its own in the workers; one that
    cannot be reached is taken out at once by the engine's replica set (the answers carry
    why), and its records go to the other."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    path = routes(
        tmp_path,
        f'[[routes]]\nmodels = ["anthropic.*"]\nbackend = "openai"\n'
        f'base_urls = ["{fake_openai.url}/v1", "{dead}"]\n'
        "probe_after_s = 600\nunhealthy_after = 1000\n"
        "backoff_base_s = 0.01\nbackoff_max_s = 0.05\n",
    )

    async def go() -> tuple[list[ModelResult], list[bool]]:
        resolver = build_resolver(
            Settings(
                data_dir=tmp_path, models_config=path, engine_processes=2, engine_offload_load=0
            )
        )
        try:
            backend = per_record(resolver.for_model(MODEL))
            replica_set = getattr(backend, "inner")  # noqa: B009
            assert all(isinstance(r.backend, PooledBackend) for r in replica_set.replicas)
            answers = await asyncio.gather(
                *(backend.invoke(request(f"q{i}", i)) for i in range(20))
            )
            return list(answers), [r.healthy for r in replica_set.replicas]
        finally:
            await resolver.aclose()

    answers, healthy = asyncio.run(go())
    assert all(a.ok for a in answers)
    assert healthy == [True, False]


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_workers_run_on_the_engines_event_loop(tmp_path: Path, event_loop: str) -> None:
    """The HTTP exchanges happen in the workers: they run on the loop the ``event_loop``
    setting names, as the engine does (uvloop by default)."""
    route = parse_route(
        0, {"model": MODEL, "backend": "openai", "base_url": "http://127.0.0.1:9/v1"}
    )

    async def go() -> str:
        settings = Settings(data_dir=tmp_path, event_loop=event_loop, engine_offload_load=0)
        pool = WorkerPool(settings, 1)
        backend = pool.backend(route, _Unused())
        try:
            await asyncio.wait_for(backend.invoke(request("R0")), 30)  # port 9: refused
            (child,) = pool._children
            return Path(f"/proc/{child.process.pid}/maps").read_text()
        finally:
            await pool.aclose()

    maps = asyncio.run(go())
    assert ("uvloop" in maps) is (event_loop == "uvloop")


# --- blocks: a job's lines answered whole in a worker (PooledRoute) -----------------------


def block_of(recs: list[dict[str, Any]], start_line: int = 0) -> Block:
    data = b"".join(orjson.dumps(r) + b"\n" for r in recs)
    return Block(MODEL, "InvokeModel", "j", 0, start_line, 1000, data)


def model_attempts(route: str, outcome: str) -> float:
    """The engine process's count of model attempts of ``route`` with ``outcome``."""
    text = process_metrics().render().decode()
    for line in text.splitlines():
        if line.startswith("batchrock_model_request_duration_seconds_count{") and (
            f'route="{route}"' in line and f'outcome="{outcome}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("where", ["base_url", "base_urls"])
def test_a_block_is_answered_whole_in_a_worker_and_counted_in_the_engine(
    tmp_path: Path, fake_openai: FakeServer, where: str
) -> None:
    """Its lines answered as the engine answers them (recordIds, in order, the errors), its
    retries and throttling in its counts, each attempt in the engine's metrics; a route
    whose ``base_urls`` lists one server is such a route too."""
    recs = records(6, {1: f"FAULT:429:2 {time.time_ns()}", 4: "FAULT:400"})
    before = model_attempts("1:openai", "throttled"), model_attempts("1:openai", "ok")
    settings = pool_settings(tmp_path, fake_openai)
    if where == "base_urls":
        assert settings.models_config is not None
        text = settings.models_config.read_text()
        url = f"{fake_openai.url}/v1"
        settings.models_config.write_text(
            text.replace(f'base_url = "{url}"', f'base_urls = ["{url}"]')
        )

    async def go() -> tuple[BlockAnswer | None, list[int]]:
        resolver = build_resolver(settings)
        try:
            route = resolver.for_model(MODEL)
            assert isinstance(route, PooledRoute)
            answer = await asyncio.wait_for(
                route.answer_block(block_of(recs, 7), 4, answer_block), 60
            )
            assert resolver.pool is not None
            return answer, resolver.pool.pids
        finally:
            await resolver.aclose()

    answer, pids = asyncio.run(go())
    assert answer is not None and len(pids) == 2
    lines = [orjson.loads(line) for line in answer.output.splitlines()]
    assert [line["recordId"] for line in lines] == [r["recordId"] for r in recs]
    assert "error" in lines[4] and all("modelOutput" in x for i, x in enumerate(lines) if i != 4)
    assert (answer.line, answer.offset) == (13, 1000 + len(block_of(recs).data))
    c = answer.counts
    assert (c.processed, c.success, c.error, c.throttled) == (6, 5, 1, 2)
    assert c.input_tokens > 0 and c.output_tokens > 0
    assert model_attempts("1:openai", "throttled") == before[0] + 2
    assert model_attempts("1:openai", "ok") >= before[1] + 5


#: A stand-in worker that says it is ready, then dies at the first frame with a block.
DIES_ON_BLOCKS = (
    STUB
    + """
while True:
    if msgspec.msgpack.decode(read())[2]:
        sys.exit(9)
"""
)


def test_a_block_whose_workers_keep_dying_is_answered_in_the_engine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    route = parse_route(0, {"model": MODEL, "backend": "openai", "base_url": "http://x/v1"})

    async def go() -> BlockAnswer | None:
        pool = WorkerPool(all_to_children(tmp_path), 2, [sys.executable, "-c", DIES_ON_BLOCKS])
        pooled = pool.route(pool.backend(route, _Unused()), _Unused(), _Unused(), None)
        try:
            return await asyncio.wait_for(
                pooled.answer_block(block_of(records(3)), 2, answer_block), 60
            )
        finally:
            await pool.aclose()

    assert asyncio.run(go()) is None  # the pass answers it itself (tests/engine/test_blocks.py)
    deaths = [r for r in caplog.records if "its 3 record(s) in flight are sent" in r.getMessage()]
    assert 1 <= len(deaths) <= 3


def test_blocks_do_not_wait_for_workers_that_cannot_be_started(tmp_path: Path) -> None:
    """A worker command that cannot run at all (every start an OSError) breaks the pool
    after MAX_FAILED_STARTS tries, however few workers it has, and the block is answered in
    the engine instead of waiting for a worker for ever."""
    route = parse_route(0, {"model": MODEL, "backend": "openai", "base_url": "http://x/v1"})

    async def go() -> BlockAnswer | None:
        pool = WorkerPool(all_to_children(tmp_path), 1, [str(tmp_path / "no-such-python")])
        pooled = pool.route(pool.backend(route, _Unused()), _Unused(), _Unused(), None)
        try:
            return await asyncio.wait_for(
                pooled.answer_block(block_of(records(3)), 2, answer_block), 30
            )
        finally:
            await pool.aclose()

    assert asyncio.run(go()) is None


def test_a_worker_answers_blocks_and_cancels_what_the_engine_cancels(tmp_path: Path) -> None:
    quick = parse_route(0, {"model": MODEL, "backend": "builtin"})
    slow = parse_route(1, {"model": MODEL, "backend": "builtin", "latency_ms": 60_000})
    written: list[bytes] = []

    class Writer:
        def write(self, data: bytes) -> None:
            written.append(data)

    def item(number: int, route: int, block: Block) -> list[Any]:
        name = f"{answer_block.__module__}:{answer_block.__qualname__}"
        head = [number, route, name, block.model_id, block.invocation_type, block.job_id]
        return [*head, block.file_index, block.start_line, block.start_offset, 4, block.data]

    async def go() -> None:
        worker = Worker(Settings(data_dir=tmp_path), [], Writer(), [quick, slow])  # type: ignore[arg-type]
        worker.take([[], [], [item(1, 1, block_of(records(3)))], []])
        await asyncio.sleep(0.05)
        held = worker._block_tasks[1]
        worker.take([[], [], [], [1]])
        with pytest.raises(asyncio.CancelledError):
            await held
        assert written == [] and not worker._block_tasks
        worker.take([[], [], [item(2, 0, block_of(records(3), 5))], []])
        for _ in range(200):
            if written:
                break
            await asyncio.sleep(0.01)

    asyncio.run(go())
    (sent,) = frames(b"".join(written))
    answers, blocks, _attempts = decode(sent)
    assert answers == []
    [[number, output, line, offset, processed, success, error, *_]] = blocks
    assert (number, line, offset, processed, success, error) == (
        2,
        8,
        1000 + len(block_of(records(3)).data),
        3,
        3,
        0,
    )
    assert [orjson.loads(x)["recordId"] for x in output.splitlines()] == ["R0000", "R0001", "R0002"]
