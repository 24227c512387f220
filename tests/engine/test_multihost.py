"""Workers anywhere: two API processes (`serve --no-engine`) and three `batchrock worker`
processes, each with a data dir of its own, sharing nothing but PostgreSQL (`database_url`)
and an S3 bucket (moto's server).

Where the test may make network namespaces (root, iproute2; CI runs as root), PostgreSQL and
the S3 server run in a namespace of their own and every worker in another, wired only to
that one (tests/engine/netns.py), and the test first proves that from a worker nothing but
the PostgreSQL and S3 ports can be reached. Elsewhere everything runs on loopback, still with
separate data dirs.

Jobs are created alternately through both APIs, seen and stopped through the other one; a
worker is SIGKILLed while a file is half done with a part of its output already uploaded
(seen in the store's checkpoint, with the worker SIGSTOPped first so that what was seen is
what it left, not guessed with a sleep), and every job's output must hold every record
exactly once, in input order, with an exact manifest, the killed worker's job finished by
another worker, which resumed the file after that part (its data dir has no spool of it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from tests import pg
from tests.conftest import bedrock_client

from . import netns
from .conftest import moto_server, s3_client
from .test_e2e import CLAUDE, FAST, claude_records
from .test_s3_e2e import s3_settings

pytestmark = pytest.mark.timeout(240)

WORKERS = 3
#: Records per input file, and how slowly the built-in model answers them: a file takes
#: about a second, so a worker can be caught half-way through one.
RECORDS = 300
ENGINE = {
    **FAST,
    "engine_sweep_seconds": 0.2,  # how soon an expired lease is noticed by the others
    "engine_record_concurrency": 4,
    "builtin_latency_ms": 10,
    # S3's smallest part (moto's server keeps S3's rule): the job killed mid-file has its
    # first part up after about half of a file of BIG_RECORDS.
    "s3_part_bytes": 5 * 1024 * 1024,
}
#: The killed job's files: BIG_RECORDS records of about 24 KB (an output line holds its
#: modelInput), just over one part of output, then TAIL_RECORDS small ones: the file is half
#: done with a part uploaded for as long as those take (about 4 s; the records go on while
#: the part uploads, which takes a while on a busy machine).
BIG_RECORDS = 220
TAIL_RECORDS = 1500
PADDING = "x" * 24_000
#: Files of the job stopped while it runs: far more than it can do before the stop arrives,
#: however slow the machine (a job of 4 files once ended before it).
LONG_FILES = 16


@dataclass
class Layout:
    """Where each kind of process finds PostgreSQL and S3."""

    server: pg.PgServer
    s3_url: str  # for the test and the API processes
    net: netns.Network | None
    database: str = ""
    logs: Path = Path()

    def worker_db(self, i: int) -> str:
        host = self.net.workers[i].services_ip if self.net else None
        return self.server.url(self.database, host=host)

    def worker_s3(self, i: int) -> str:
        if self.net is None:
            return self.s3_url
        port = self.s3_url.rsplit(":", 1)[1]
        return f"http://{self.net.workers[i].services_ip}:{port}"

    def worker_wrap(self, i: int) -> list[str]:
        return self.net.workers[i].wrap() if self.net else []


@pytest.fixture
def layout(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Layout]:
    if pg.server_bindir() is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    why_not = netns.available()
    if why_not is not None or os.environ.get("BATCHROCK_TEST_NO_NETNS"):
        # Loopback only: the session's PostgreSQL and moto servers.
        server = request.getfixturevalue("pg_server")
        s3_url = request.getfixturevalue("moto_url")
        found = Layout(server=server, s3_url=s3_url, net=None, logs=tmp_path)
        found.database = server.new_database().rsplit("/", 1)[1]
        yield found
        server.drop_database(server.url(found.database))
        return
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(netns.network(WORKERS))
        server = stack.enter_context(
            pg.pg_server(listen="*", reach=net.services_ip, wrap=net.services_wrap())
        )
        s3_url = stack.enter_context(
            moto_server(
                tmp_path / "moto.log",
                listen="0.0.0.0",
                reach=net.services_ip,
                wrap=net.services_wrap(),
            )
        )
        pg.create_template(server)
        found = Layout(server=server, s3_url=s3_url, net=net, logs=tmp_path)
        found.database = server.new_database().rsplit("/", 1)[1]
        yield found


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Workers:
    running: list[Worker] = field(default_factory=list)

    def by_owner(self, owner: str) -> Worker:
        """The worker whose engine holds a lease as ``owner`` (host:pid:random)."""
        pid = int(owner.split(":")[1])
        return next(w for w in self.running if w.proc.pid == pid)

    def logs(self) -> str:
        return "\n".join(f"--- worker {w.proc.pid}\n{w.log()[-2000:]}" for w in self.running)


@pytest.fixture
def workers(layout: Layout) -> Iterator[Workers]:
    started = Workers()
    yield started
    for w in started.running:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    for w in started.running:
        try:
            w.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()


def start_worker(layout: Layout, workers: Workers, i: int) -> Worker:
    data_dir = layout.logs / f"worker{i}" / "data"
    data_dir.mkdir(parents=True)
    settings = {
        **s3_settings(layout.worker_s3(i)),
        **ENGINE,
        "database_url": layout.worker_db(i),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHROCK_")}
    env.update({f"BATCHROCK_{k.upper()}": str(v) for k, v in settings.items()})
    log_path = layout.logs / f"worker{i}" / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                *layout.worker_wrap(i),
                *(sys.executable, "-m", "batchrock.admin", "worker", "--data-dir", str(data_dir)),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(proc=proc, data_dir=data_dir, log_path=log_path)
    workers.running.append(worker)
    return worker


# --- the store, read directly (what the test waits on) ------------------------------------


def job_row(db: str, arn: str) -> dict[str, Any]:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT status, processed_records, total_records, lease_owner, checkpoint "
            "FROM jobs WHERE job_id = %s",
            (arn.rsplit("/", 1)[1],),
        ).fetchone()
    assert row is not None
    status, processed, total, owner, checkpoint = row
    return {
        "status": status,
        "processed": processed,
        "total": total,
        "owner": owner,
        "checkpoint": checkpoint,
    }


def diagnose(db: str) -> str:
    """The jobs' statuses and leases, and what the database is doing (a failure's report)."""
    with psycopg.connect(db) as conn:
        jobs = conn.execute(
            "SELECT job_id, status, lease_owner, lease_expires, processed_records FROM jobs "
            "ORDER BY submit_time"
        ).fetchall()
        activity = conn.execute(
            "SELECT pid, state, xact_start, left(query, 120) FROM pg_stat_activity "
            "WHERE datname = current_database() AND state <> 'idle'"
        ).fetchall()
        now = conn.execute("SELECT (extract(epoch from now()) * 1e6)::bigint").fetchone()
    lines = [f"now {now}", *map(str, jobs), "activity:", *map(str, activity)]
    return "\n".join(lines) + "\n"


def mid_file(row: dict[str, Any]) -> bool:
    """The job's checkpoint is half-way through a file (records of it saved, not all), with a
    part of its output uploaded."""
    cp = row["checkpoint"]
    if row["status"] != "InProgress" or not cp or cp.get("done") or cp["file"] >= len(cp["files"]):
        return False
    return bool(cp.get("parts")) and 0 < cp["offset"] < cp["files"][cp["file"]]["size"]


def freeze_mid_file(db: str, arn: str, workers: Workers) -> tuple[Worker, dict[str, Any]]:
    """SIGSTOP the worker running ``arn`` at a moment its checkpoint is half-way through a
    file: the row read after the stop is what the frozen worker left (a worker seen mid-file
    but stopped only after it got past is let go again, and the next moment tried)."""

    def frozen() -> tuple[Worker, dict[str, Any]] | None:
        row = job_row(db, arn)
        assert row["status"] in ("Submitted", "Validating", "Scheduled", "InProgress"), (
            f"job 0 ended before it was seen half-way through a file: {row}"
        )
        if not mid_file(row):
            return None
        worker = workers.by_owner(row["owner"])
        worker.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.2)  # a write it had sent commits meanwhile
        row = job_row(db, arn)
        if mid_file(row) and workers.by_owner(row["owner"]) is worker:
            return worker, row
        worker.proc.send_signal(signal.SIGCONT)
        return None

    found: tuple[Worker, dict[str, Any]] = until(
        "job 0 half-way through a file", frozen, 90, lambda: diagnose(db) + workers.logs()
    )
    return found


def until(what: str, check: Any, timeout: float, logs: Any = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{logs()}")
        time.sleep(0.01)


# --- isolation ---------------------------------------------------------------------------

PROBE = """
import json, socket, sys
out = []
for host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=2).close()
        out.append("open")
    except OSError as exc:
        out.append(type(exc).__name__)
print(json.dumps(out))
"""


def reachable(wrap: list[str], targets: list[tuple[str, int]]) -> list[bool]:
    done = subprocess.run(
        [*wrap, sys.executable, "-c", PROBE, json.dumps(targets)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [answer == "open" for answer in json.loads(done.stdout)]


def prove_isolation(layout: Layout, apis: list[Any]) -> None:
    """From a worker's namespace exactly two ports can be reached: PostgreSQL's and S3's."""
    net = layout.net
    assert net is not None
    pg_port = layout.server.port
    s3_port = int(layout.s3_url.rsplit(":", 1)[1])
    # The services namespace runs nothing else.
    assert netns.listening_ports(net.services) == {pg_port, s3_port}
    # Something the root namespace offers to every address: no worker may reach it.
    with socket.socket() as canary:
        canary.bind(("0.0.0.0", 0))
        canary.listen()
        canary_port = canary.getsockname()[1]
        for i, link in enumerate(net.workers):
            names, routes = netns.links_and_routes(link.netns)
            assert names == {"lo", f"{link.netns.split('-')[0]}w{i + 1}"}, names
            assert len(routes) == 1 and routes[0].startswith(link.services_ip.rsplit(".", 1)[0])
            others = [w.own_ip for w in net.workers if w is not link]
            targets = [
                (link.services_ip, pg_port),
                (link.services_ip, s3_port),
                (link.services_ip, canary_port),
                (net.services_ip, pg_port),  # the services namespace's other link
                (net.root_ip, canary_port),
                *((net.root_ip, api.port) for api in apis),
                *(("127.0.0.1", api.port) for api in apis),
                ("127.0.0.1", pg_port),
                *((ip, 22) for ip in others),
            ]
            assert reachable(link.wrap(), targets) == [True, True] + [False] * (len(targets) - 2)
        # The same canary is there for the root namespace itself: the probe can see it.
        assert reachable([], [("127.0.0.1", canary_port)]) == [True]


# --- the jobs ----------------------------------------------------------------------------


@dataclass
class Job:
    arn: str
    files: dict[str, list[dict[str, Any]]]  # input file name -> its records


def put_job_input(
    s3: Any, bucket: str, prefix: str, files: int, start: int, *, big: bool = False
) -> dict[str, Any]:
    made = {}
    n = BIG_RECORDS + TAIL_RECORDS if big else RECORDS
    for f in range(files):
        recs = claude_records(n, start=start + f * n)
        if big:
            for r in recs[:BIG_RECORDS]:
                r["modelInput"]["messages"][0]["content"] += PADDING
        name = f"part{f}.jsonl"
        s3.put_object(
            Bucket=bucket,
            Key=f"{prefix}{name}",
            Body=b"".join(orjson.dumps(r) + b"\n" for r in recs),
        )
        made[name] = recs
    return made


def create_job(client: Any, bucket_in: str, prefix: str, bucket_out: str) -> str:
    response = client.create_model_invocation_job(
        jobName=f"multihost-{uuid.uuid4().hex[:8]}",
        roleArn="arn:aws:iam::123456789012:role/batch",
        modelId=CLAUDE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{bucket_in}/{prefix}"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{bucket_out}/results/"}},
    )
    return str(response["jobArn"])


def output_of(s3: Any, bucket: str, job_id: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"results/{job_id}/").get("Contents", [])
    return {
        o["Key"].rsplit("/", 1)[1]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in listed
    }


def record_ids(data: bytes) -> list[str]:
    return [orjson.loads(line)["recordId"] for line in data.splitlines()]


def test_jobs_survive_a_killed_worker_across_hosts_sharing_only_postgres_and_s3(
    layout: Layout, workers: Workers, server_factory: Any
) -> None:
    api_settings = {
        **s3_settings(layout.s3_url),
        "engine": False,
        "database_url": layout.server.url(layout.database),
    }
    apis = [server_factory(**api_settings), server_factory(**api_settings)]

    def fresh() -> list[Any]:
        """New clients, for a call after seconds of quiet: the test's clients do not retry,
        and a kept-alive connection the server closes as its idle time (5 s) ends would
        fail the next request sent on it (an SDK retries that)."""
        return [bedrock_client(api.url) for api in apis]

    clients = fresh()
    if layout.net is not None:
        prove_isolation(layout, apis)
    db = layout.server.url(layout.database)
    for i in range(WORKERS):
        start_worker(layout, workers, i)
    until("every worker's engine", lambda: pg.listeners(db) >= WORKERS, 60, workers.logs)

    s3 = s3_client(layout.s3_url)
    bucket_in, bucket_out = f"in-{uuid.uuid4().hex[:8]}", f"out-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket_in)
    s3.create_bucket(Bucket=bucket_out)

    # Six jobs of two files each, created alternately through the two APIs.
    jobs = []
    for n in range(6):
        files = put_job_input(s3, bucket_in, f"job{n}/", files=2, start=n * 10_000, big=n == 0)
        client = fresh()[n % 2]  # after the uploads' quiet
        jobs.append(Job(create_job(client, bucket_in, f"job{n}/", bucket_out), files))
    # One more, long enough to be stopped while it runs: created on API 1, stopped on API 2.
    long_files = put_job_input(s3, bucket_in, "long/", files=LONG_FILES, start=900_000)
    stopped = Job(create_job(fresh()[0], bucket_in, "long/", bucket_out), long_files)

    # Each API sees the jobs the other created.
    clients = fresh()
    for client in clients:
        listed = {
            j["jobArn"]
            for j in client.list_model_invocation_jobs(maxResults=100)["invocationJobSummaries"]
        }
        assert {j.arn for j in [*jobs, stopped]} <= listed

    # Kill the worker running job 0 half-way through one of its files, past its first part.
    target = jobs[0].arn
    victim, row = freeze_mid_file(db, target, workers)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    killed_owner = row["owner"]
    # The dead worker wrote nothing after the check: the file is still half done.
    after = job_row(db, target)
    assert mid_file(after) and after == row, (after, row)
    cp = after["checkpoint"]
    in_progress = cp["files"][cp["file"]]

    # Stop the long job through the other API once it runs.
    until(
        "the long job running",
        lambda: job_row(db, stopped.arn)["processed"] > 0,
        60,
        workers.logs,
    )
    clients = fresh()
    clients[1].stop_model_invocation_job(jobIdentifier=stopped.arn)

    # Job 0 passes to another worker (once its lease expires) and every job ends.
    owners_after_kill: set[str] = set()

    def all_ended() -> bool:
        owner = job_row(db, target)["owner"]
        if owner:
            owners_after_kill.add(owner)
        for k, j in enumerate([*jobs, stopped]):
            states[j.arn] = job_row(db, j.arn)
            states[j.arn]["api"] = clients[k % 2].get_model_invocation_job(jobIdentifier=j.arn)[
                "status"
            ]
        final = {"Completed", "PartiallyCompleted", "Failed", "Stopped"}
        return all(row["api"] in final for row in states.values())

    states: dict[str, dict[str, Any]] = {}
    until("every job to end", all_ended, 150, lambda: f"{states}\n{workers.logs()}")
    # Its lease stayed with the dead worker until it expired; then another one held it.
    successors = owners_after_kill - {killed_owner}
    assert successors, owners_after_kill
    assert all(workers.by_owner(o).proc.poll() is None for o in successors)
    # The file in progress was resumed after its last uploaded part, not from its start: its
    # first records did not go to the model again (the successor has no spool of it).
    resumed = (
        f"spool lost, resuming s3://{in_progress['bucket']}/{in_progress['key']} "
        f"after part {cp['parts'][-1]['n']} (line {cp['parts_line']})"
    )
    assert cp["parts_line"] > 0
    assert any(resumed in workers.by_owner(o).log() for o in successors), workers.logs()

    for job in jobs:
        job_id = job.arn.rsplit("/", 1)[1]
        for client in clients:
            got = client.get_model_invocation_job(jobIdentifier=job.arn)
            assert got["status"] == "Completed", (got.get("message"), workers.logs())
        out = output_of(s3, bucket_out, job_id)
        assert set(out) == {f"{name}.out" for name in job.files} | {"manifest.json.out"}
        total = 0
        tokens = 0
        for name, recs in job.files.items():
            # Every record exactly once, in input order.
            assert record_ids(out[f"{name}.out"]) == [r["recordId"] for r in recs], name
            lines = [orjson.loads(x) for x in out[f"{name}.out"].splitlines()]
            assert all(x["modelOutput"]["type"] == "message" for x in lines)
            tokens += sum(x["modelOutput"]["usage"]["input_tokens"] for x in lines)
            total += len(recs)
        m = orjson.loads(out["manifest.json.out"])
        assert m["totalRecordCount"] == m["processedRecordCount"] == total
        assert m["successRecordCount"] == total and m["errorRecordCount"] == 0
        assert m["inputTokenCount"] == tokens
        assert got["processedRecordCount"] == total

    # The stopped job: seen Stopped through both APIs; what it published is each file's
    # processed part, in order, once, and its manifest counts exactly that.
    for client in clients:
        assert client.get_model_invocation_job(jobIdentifier=stopped.arn)["status"] == "Stopped"
    out = output_of(s3, bucket_out, stopped.arn.rsplit("/", 1)[1])
    published = 0
    for name, recs in stopped.files.items():
        ids = record_ids(out.get(f"{name}.out", b""))
        assert ids == [r["recordId"] for r in recs[: len(ids)]], name
        published += len(ids)
    m = orjson.loads(out["manifest.json.out"])
    assert m["processedRecordCount"] == published
    got = clients[0].get_model_invocation_job(jobIdentifier=stopped.arn)
    assert got["processedRecordCount"] == published < LONG_FILES * RECORDS

    # No upload was left half-made, and nothing went to a file store of its own.
    assert not s3.list_multipart_uploads(Bucket=bucket_out).get("Uploads")
    for data_dir in [*(api.data_dir for api in apis), *(w.data_dir for w in workers.running)]:
        assert not (data_dir / "batchrock.sqlite3").exists()
        assert not (data_dir / "s3").exists()
