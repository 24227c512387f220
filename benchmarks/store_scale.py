"""ListModelInvocationJobs at scale: the SQLite and the PostgreSQL store each holding the same N
jobs (default one million), every filter, first page and a deep page via token.

    .venv/bin/python benchmarks/store_scale.py --jobs 1000000
    .venv/bin/python benchmarks/store_scale.py --stores sqlite --db /tmp/scale/batchrock.sqlite3
    .venv/bin/python benchmarks/store_scale.py --database-url postgresql://u@host/db --no-api
    .venv/bin/python benchmarks/store_scale.py --claims --jobs 50000

``--claims``: instead of the listings, the engine's polls (engine/engine.py ``tick``) at N jobs
in mixed states (:func:`mixed_job`): each ``claim`` shape the engine calls, ``start_next`` and
the sweep's ``jobs_in`` (until 2026-12-02), and a tick's sweep (``engine.tick`` with its
claims left out: the code of whichever ``src`` is on ``PYTHONPATH``), timed the same way (the
stores' answers checked the same).

Both stores are filled with the same jobs in bulk, straight into their tables (SQLite: one
``executemany`` transaction, then the trigram name index from the table; PostgreSQL: ``COPY``
with the secondary indexes dropped and rebuilt after, then ``VACUUM ANALYZE``), with the schema and
indexes the stores create themselves. Listings read neither events nor tags, so none are
written. Without ``--database-url`` a throwaway PostgreSQL server is started (tests/pg.py).

Each case runs through the stores' own ``list_jobs``, the two stores taking turns sample by
sample, and is timed, repeated, as medians of wall and CPU time (this process's, plus the
PostgreSQL backends' when the benchmark runs that server); the two stores' answers are checked
to be the same jobs. Then the same listings go over HTTP
(``--no-api`` skips it): ``batchrock serve --no-engine`` on each store, SigV4-signed
ListModelInvocationJobs requests (a deep page with the token the API would have handed out)
over one keep-alive connection per server, the medians of the client's wall time per request
and of the serving processes' CPU time;
the servers' answers are checked to be the same jobs. Target: PostgreSQL within 2x of SQLite
in the same run. Nothing here is a pass/fail test: the numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sqlite3
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from api_listing import cpu_seconds, read_response, signed, wait_serving
from openai_backend import free_port

from batchrock.api import pagination
from batchrock.jobs import Job, JobStatus, new_job_id
from batchrock.service import Caller
from batchrock.store.base import Cursor, JobFilter, JobStore, PageRequest
from batchrock.store.postgres import PostgresStore
from batchrock.store.rows import JOB_COLUMNS, job_params
from batchrock.store.sqlite import SqliteStore, _tripled

ACCOUNT = "123456789012"
REGION = "us-east-1"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
WORDS = ["nightly", "adhoc", "eval", "summaries", "embed", "classify", "backfill", "retry"]
CHUNK = 20_000


def job_at(i: int, rng: random.Random) -> Job:
    submit = T0 + timedelta(seconds=i * 3)
    name = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{i:07d}"
    if i % 100_000 == 7:
        name = f"needle-zq-{i}"  # a rare name: the index must find it without a scan
    status = JobStatus.COMPLETED if i % 10 else rng.choice(list(JobStatus))
    return Job(
        job_id=new_job_id(),
        account_id=ACCOUNT,
        region=REGION if i % 20 else "eu-west-1",
        name=name,
        model_id="anthropic.claude-3-haiku-20240307-v1:0",
        role_arn="arn:aws:iam::123456789012:role/R",
        status=status,
        submit_time=submit,
        last_modified_time=submit,
        input_s3_uri="s3://bucket/in/",
        output_s3_uri="s3://bucket/out/",
        expiration_time=submit + timedelta(hours=24),
        client_request_token="".join(rng.choices(string.ascii_lowercase, k=24)),
    )


def chunks(
    n: int, make: Callable[[int, random.Random], Job] = job_at
) -> Iterator[list[tuple[Any, ...]]]:
    rng = random.Random(7)
    for start in range(0, n, CHUNK):
        yield [job_params(make(i, rng)) for i in range(start, min(n, start + CHUNK))]


# --- the engine's polls (--claims) ---------------------------------------------------------

#: Of the mixed fill (jobs submitted 3 s apart, oldest first): the newest fifth Submitted, a
#: backlog of Scheduled jobs in the middle, and the jobs engines run, leased (LEASED).
SUBMITTED_SHARE, SCHEDULED_SHARE = 0.2, 0.02
LEASED = {JobStatus.IN_PROGRESS: 300, JobStatus.VALIDATING: 100, JobStatus.STOPPING: 10}


def mixed_status(i: int, n: int) -> JobStatus:
    """Job ``i``'s status of ``n``: mostly ended, a Submitted burst at the end, a Scheduled
    backlog mid-table, and the running jobs (LEASED) just before that."""
    if i >= n - int(n * SUBMITTED_SHARE):
        return JobStatus.SUBMITTED
    start = n // 2
    if start <= i < start + int(n * SCHEDULED_SHARE):
        return JobStatus.SCHEDULED
    for status, count in LEASED.items():
        start -= count
        if start <= i < start + count:
            return status
    return (JobStatus.COMPLETED, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED)[i % 4]


def mixed_jobs(n: int) -> Callable[[int, random.Random], Job]:
    def make(i: int, rng: random.Random) -> Job:
        return replace(job_at(i, rng), status=mixed_status(i, n))

    return make


async def lease_running(store: JobStore, now: datetime) -> None:
    """The running jobs held by live engines, as an engine claims them (LEASED)."""
    for status, count in LEASED.items():
        for _ in range(count):
            if await store.claim("running", {status}, now=now, lease_seconds=86_400) is None:
                raise SystemExit(f"fewer than {count} {status.value} jobs to lease")


def engine_cases(n: int) -> dict[str, Callable[[JobStore], Awaitable[Any]]]:
    """The engine's polls at ``n`` mixed jobs: each claim shape engine.py ``_next_job`` calls,
    with the engine's dwell (submitted_by) before every Submitted job (a burst of creates: all
    still in their dwell) and after all of them."""
    S = JobStatus
    now = claims_now(n)
    first_submitted = T0 + timedelta(seconds=3 * (n - int(n * SUBMITTED_SHARE)))
    young, old = first_submitted - timedelta(seconds=1), now

    def claim(
        statuses: set[JobStatus], by: datetime | None = None
    ) -> Callable[[JobStore], Awaitable[Any]]:
        return lambda s: s.claim("bench", statuses, now=now, lease_seconds=3600, submitted_by=by)

    return {
        "claim Stopping (10, all leased): none": claim({S.STOPPING}),
        "claim InProgress (300, all leased): none": claim({S.IN_PROGRESS}),
        "claim Submitted+Validating, every Submitted in its dwell: none": claim(
            {S.SUBMITTED, S.VALIDATING}, young
        ),
        "claim Submitted+Validating, dwell over: the oldest": claim(
            {S.SUBMITTED, S.VALIDATING}, old
        ),
        "start_next (every model at its quota): none": lambda s: s.start_next(
            "bench", now=now, lease_seconds=3600, max_in_progress=10
        ),
        "jobs_in Scheduled+Submitted, 1000 (the sweep until 2026-12-02)": lambda s: s.jobs_in(
            {S.SCHEDULED, S.SUBMITTED}, limit=1000
        ),
        # The store's side of a poll's sweep (expiry and the next dwell end), as the engine's
        # tick runs it: the code of whichever src is on PYTHONPATH (main's export too).
        "tick's sweep, none overdue, dwell 1 h (engine.tick, no claims)": sweep_tick(now),
    }


def sweep_tick(now: datetime) -> Callable[[JobStore], Awaitable[Any]]:
    """An engine's tick on a store at ``now`` with its claims left out (``_next_job`` finds
    nothing): what the poll asks the store before it claims. One engine per store, kept."""
    from batchrock.clock import FakeClock
    from batchrock.engine.engine import Engine
    from batchrock.settings import Settings

    engines: dict[int, Engine] = {}
    folder = Path(tempfile.mkdtemp(prefix="batchrock-tick-"))

    async def nothing() -> None:
        return None

    async def tick(store: JobStore) -> None:
        engine = engines.get(id(store))
        if engine is None:
            settings = Settings(data_dir=folder, engine_min_submitted_seconds=3600)
            engine = engines[id(store)] = Engine(settings, store, FakeClock(now))
            engine._next_job = nothing  # type: ignore[method-assign]
        await engine.tick()

    return tick


def claims_now(n: int) -> datetime:
    """The engines' clock in the mixed fill: a second after the newest job."""
    return T0 + timedelta(seconds=3 * n + 1)


def fill_sqlite(path: Path, rows: list[list[tuple[Any, ...]]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.create_function("tripled", 1, _tripled, deterministic=True)
    marks = ", ".join("?" * len(JOB_COLUMNS.split(",")))
    conn.execute("BEGIN")
    for chunk in rows:
        conn.executemany(f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({marks})", chunk)
    conn.execute("INSERT INTO job_names (rowid, name) SELECT rowid, tripled(name) FROM jobs")
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


async def fill_postgres(url: str, rows: list[list[tuple[Any, ...]]]) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs' "
            "AND indexname <> 'jobs_pkey'"
        )
        indexes = await cur.fetchall()
        for name, _ in indexes:
            await conn.execute(f"DROP INDEX {name}")
        async with conn.cursor() as copy_cur:
            async with copy_cur.copy(f"COPY jobs ({JOB_COLUMNS}) FROM STDIN") as copy:
                for chunk in rows:
                    for row in chunk:
                        await copy.write_row(row)
        await conn.execute("SET maintenance_work_mem = '512MB'")
        for _, definition in indexes:
            await conn.execute(definition)
        await conn.execute("VACUUM ANALYZE jobs")
        # The fill's dirty pages written now, not by a checkpoint during the timings.
        await conn.execute("CHECKPOINT")


async def timed(
    fns: list[Callable[[], Awaitable[Any]]],
    cpus: list[Callable[[], float]],
    repeat: int,
) -> list[tuple[float, float, Any]]:
    """Each of ``fns`` ``repeat`` times, taking turns (the order alternating, so that both
    meet the same load on a shared machine), after one warm-up round: the median wall time
    and the median CPU time (``cpus[i]``: seconds used so far by every process serving
    ``fns[i]``), in milliseconds, and the last result of each."""
    walls: list[list[float]] = [[] for _ in fns]
    used: list[list[float]] = [[] for _ in fns]
    results: list[Any] = [None] * len(fns)
    for r in range(repeat + 1):
        order = list(range(len(fns)))
        for i in order if r % 2 else order[::-1]:
            cpu = cpus[i]()
            started = time.perf_counter()
            results[i] = await fns[i]()
            wall = time.perf_counter() - started
            if r:  # the first round warms the caches
                walls[i].append(wall)
                used[i].append(cpus[i]() - cpu)
    return [
        (statistics.median(w) * 1000, statistics.median(c) * 1000, res)
        for w, c, res in zip(walls, used, results, strict=True)
    ]


class ServerCpu:
    """CPU seconds used so far by the PostgreSQL backends serving ``url``'s database (each
    client connection's server process), from /proc/PID/schedstat: the server's share of a
    query, without its background processes. :meth:`refresh` after new connections."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.pids: list[int] = []
        self.refresh()

    def refresh(self) -> None:
        if self.url is None:
            return
        import psycopg

        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchall()
        self.pids = [int(pid) for (pid,) in rows]

    def __call__(self) -> float:
        total = 0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
        return total / 1e9


def table_header(title: str, names: list[str], cpu: bool) -> None:
    cells = [f"{n} ms" for n in names] + (["ratio"] if len(names) == 2 else [])
    if cpu:
        cells += [f"{n} CPU ms" for n in names] + (["CPU ratio"] if len(names) == 2 else [])
    print(f"\n| {title} | {' | '.join(cells)} | rows |")
    print("| --- |" + " ---: |" * (len(cells) + 1))


def table_row(label: str, timings: list[tuple[float, float, Any]], rows: int, cpu: bool) -> float:
    """Print one row; the PostgreSQL / SQLite wall-time ratio (0 with one store)."""
    walls = [w for w, _, _ in timings]
    cpus = [c for _, c, _ in timings]
    cells = [f"{w:.2f}" for w in walls] + (
        [f"{walls[1] / walls[0]:.2f}"] if len(walls) == 2 else []
    )
    if cpu:
        cells += [f"{c:.2f}" for c in cpus]
        if len(cpus) == 2:
            cells.append(f"{cpus[1] / cpus[0]:.2f}" if cpus[0] else "-")
    print(f"| {label} | {' | '.join(cells)} | {rows} |")
    return walls[1] / walls[0] if len(walls) == 2 else 0.0


def filters(n: int) -> dict[str, dict[str, Any]]:
    """Every filter the API offers, as JobFilter fields; "ascending" in a label: that order."""
    mid = T0 + timedelta(seconds=n * 3 // 2)
    return {
        "no filter": {},
        "statusEquals=Failed (rare)": {"status": JobStatus.FAILED},
        "statusEquals=Completed (common)": {"status": JobStatus.COMPLETED},
        "nameContains=nightly (common)": {"name_contains": "nightly"},
        "nameContains=needle (rare, 6 chars)": {"name_contains": "needle"},
        "nameContains=zq (rare, 2 chars)": {"name_contains": "zq"},
        "nameContains=x (absent, 1 char)": {"name_contains": "x"},
        "nameContains=a (common, 1 char)": {"name_contains": "a"},
        "submit-time window (1 hour)": {
            "submitted_after": mid - timedelta(hours=1),
            "submitted_before": mid + timedelta(hours=1),
        },
        "status + name + after, ascending": {
            "status": JobStatus.COMPLETED,
            "name_contains": "eval",
            "submitted_after": mid - timedelta(days=1),
        },
    }


def deep_cursor(n: int, ascending: bool) -> Cursor:
    """The keyset cursor of a deep page: mid-table (a day before it when ascending)."""
    mid = T0 + timedelta(seconds=n * 3 // 2)
    return Cursor(mid - timedelta(days=1), "") if ascending else Cursor(mid, "zzzzzzzzzzzz")


def cases(n: int, any_id: str) -> dict[str, Callable[[JobStore], Awaitable[Any]]]:
    out: dict[str, Callable[[JobStore], Awaitable[Any]]] = {}
    for label, changes in filters(n).items():
        f = JobFilter(account_id=ACCOUNT, region=REGION, **changes)
        asc = "ascending" in label
        out[f"{label}: first page"] = lambda s, f=f, asc=asc: s.list_jobs(
            f, PageRequest(limit=100, descending=not asc)
        )
        deep = deep_cursor(n, asc)
        out[f"{label}: deep page via token"] = lambda s, f=f, asc=asc, c=deep: s.list_jobs(
            f, PageRequest(limit=100, descending=not asc, after=c)
        )
    every = JobFilter(account_id=ACCOUNT, region=REGION)
    out["page of 1000"] = lambda s: s.list_jobs(every, PageRequest(limit=1000))
    out["get by id"] = lambda s: s.get(ACCOUNT, REGION, any_id)
    out["claim (the oldest Submitted job)"] = lambda s: s.claim(
        "bench", {JobStatus.SUBMITTED}, now=T0 - timedelta(days=1), lease_seconds=1
    )
    return out


def api_targets(n: int) -> dict[str, str]:
    """The same listings as ListModelInvocationJobs requests (path and query); a deep page's
    token is the one the API would have handed out for that cursor."""
    out = {}
    for label, changes in filters(n).items():
        f = JobFilter(account_id=ACCOUNT, region=REGION, **changes)
        asc = "ascending" in label
        query: dict[str, str] = {"maxResults": "100"}
        if f.status is not None:
            query["statusEquals"] = f.status.value
        if f.name_contains is not None:
            query["nameContains"] = f.name_contains
        for key, when in (
            ("submitTimeAfter", f.submitted_after),
            ("submitTimeBefore", f.submitted_before),
        ):
            if when is not None:
                query[key] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        if asc:
            query["sortOrder"] = "Ascending"
        out[f"{label}: first page"] = "/model-invocation-jobs?" + urlencode(query)
        listing = pagination.fingerprint(Caller(ACCOUNT, REGION), f, not asc)
        query["nextToken"] = pagination.encode(deep_cursor(n, asc), listing)
        out[f"{label}: deep page via token"] = "/model-invocation-jobs?" + urlencode(query)
    out["page of 1000"] = "/model-invocation-jobs?maxResults=1000"
    return out


@contextlib.contextmanager
def api_server(data_dir: Path, database_url: str | None) -> Iterator[tuple[int, int]]:
    """``batchrock serve --no-engine`` on ``data_dir``'s SQLite file or on ``database_url``;
    its port and process id."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHROCK_")}
    env.update(BATCHROCK_LOG_LEVEL="warning")
    command = [sys.executable, "-m", "batchrock.admin", "serve", "--no-engine"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    if database_url is not None:
        command += ["--database-url", database_url]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(port, "/_batchrock/health")
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def request(raw: bytes, stream: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bytes:
    """One signed request (valid for five minutes) on a keep-alive connection: the body."""
    reader, writer = stream
    writer.write(raw)
    return await read_response(reader)


async def api_table(
    n: int,
    servers: dict[str, tuple[int, Callable[[], float]]],
    repeat: int,
    cpu: bool,
    connected: Callable[[], None],
) -> None:
    """Each listing through each server over one keep-alive connection, SigV4-signed: the
    median of ``repeat`` requests after one warm-up, the client's wall time (what a caller
    sees) and the CPU time of the processes serving it (the API process, and PostgreSQL's).
    ``connected`` is called once each server has answered (and so connected to its store)."""
    streams = {
        name: await asyncio.open_connection("127.0.0.1", port)
        for name, (port, _) in servers.items()
    }
    for name, (port, _) in servers.items():
        await request(signed(port, "/model-invocation-jobs?maxResults=1"), streams[name])
    connected()
    table_header(f"ListModelInvocationJobs at {n:,} jobs, over HTTP", list(servers), cpu)
    worst = 0.0
    for label, target in api_targets(n).items():
        raws = {name: signed(port, target) for name, (port, _) in servers.items()}
        timings = await timed(
            [lambda r=raws[name], s=streams[name]: request(r, s) for name in servers],
            [probe for _, probe in servers.values()],
            repeat,
        )
        answers = {
            tuple(j["jobArn"] for j in orjson.loads(body)["invocationJobSummaries"])
            for _, _, body in timings
        }
        if len(answers) > 1:
            raise SystemExit(f"{label}: the servers answered differently")
        worst = max(worst, table_row(label, timings, len(next(iter(answers))), cpu))
    if len(servers) == 2:
        print(f"\nworst PostgreSQL / SQLite ratio over HTTP: {worst:.2f} (target <= 2)")
    for _, writer in streams.values():
        writer.close()


@contextlib.asynccontextmanager
async def postgres_url(given: str | None) -> AsyncIterator[tuple[str, int | None]]:
    """The database's URL, and the server's postmaster process id where it runs here."""
    if given:
        yield given, None
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.pg import pg_server

    with pg_server() as server:
        import psycopg

        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE scale")
        postmaster = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
        yield server.url("scale"), postmaster


def ids(result: Any) -> Any:
    if isinstance(result, list):
        return [j.job_id for j in result]
    return None if result is None else result.job_id


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument(
        "--db", type=Path, default=None, help="SQLite file (kept; the API serves its folder)"
    )
    parser.add_argument("--no-api", action="store_true", help="only the stores' own figures")
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database")
    parser.add_argument(
        "--claims", action="store_true", help="the engine's polls on mixed jobs, no listings"
    )
    args = parser.parse_args()
    names = args.stores.split(",")

    given = args.database_url if "postgres" in names else "unused"
    async with postgres_url(given) as (url, postmaster):
        stores: dict[str, JobStore] = {}
        # Removed after the run (the SQLite file of --db is outside it, and kept).
        with tempfile.TemporaryDirectory(prefix="batchrock-scale-") as tmp:
            folder = Path(tmp)
            if "sqlite" in names:
                # The name `batchrock serve` opens in its data dir (the table over HTTP).
                path = args.db or folder / "batchrock.sqlite3"
                stores["sqlite"] = await SqliteStore.open(path)
            if "postgres" in names:
                # Both connections open from the start: the server's CPU is read from each.
                stores["postgres"] = await PostgresStore.open(url, min_size=2, max_size=2)
            started = time.perf_counter()
            rows = list(chunks(args.jobs, mixed_jobs(args.jobs) if args.claims else job_at))
            any_id = rows[len(rows) // 2][123][0]
            print(f"generated {args.jobs:,} jobs in {time.perf_counter() - started:.1f} s")
            for name in stores:
                started = time.perf_counter()
                if name == "sqlite":
                    existing = await stores[name].list_jobs(
                        JobFilter(account_id=ACCOUNT, region=REGION), PageRequest(limit=1)
                    )
                    if not existing:
                        await asyncio.to_thread(fill_sqlite, path, rows)
                else:
                    await fill_postgres(url, rows)
                if args.claims:
                    await lease_running(stores[name], claims_now(args.jobs))
                print(f"filled {name} in {time.perf_counter() - started:.1f} s")
            del rows

            # CPU: this process's for SQLite (it answers in-process); this process's and the
            # PostgreSQL server's for PostgreSQL (only when the benchmark started that server).
            cpu = postmaster is not None or "postgres" not in names
            server_cpu = ServerCpu(url if postmaster is not None else None)
            probes = {
                "sqlite": time.process_time,
                "postgres": lambda: time.process_time() + server_cpu(),
            }
            if args.claims:
                title, todo = "engine poll at {:,} mixed jobs", engine_cases(args.jobs)
            else:
                title, todo = "query at {:,} jobs", cases(args.jobs, any_id)
            table_header(title.format(args.jobs), list(stores), cpu)
            worst = 0.0
            for label, fn in todo.items():
                timings = await timed(
                    [lambda fn=fn, store=store: fn(store) for store in stores.values()],
                    [probes[name] for name in stores],
                    args.repeat,
                )
                answers = [ids(result) for _, _, result in timings]
                if len(answers) == 2 and answers[0] != answers[1]:
                    raise SystemExit(f"{label}: the stores answered differently")
                rows_n = (
                    len(answers[0]) if isinstance(answers[0], list) else int(answers[0] is not None)
                )
                worst = max(worst, table_row(label, timings, rows_n, cpu))
            if len(stores) == 2:
                print(f"\nworst PostgreSQL / SQLite ratio: {worst:.2f} (target <= 2)")
            for store in stores.values():
                await store.close()
            if args.no_api or args.claims:
                return
            with contextlib.ExitStack() as running:
                servers: dict[str, tuple[int, Callable[[], float]]] = {}
                if "sqlite" in names:
                    if path.name != "batchrock.sqlite3":
                        raise SystemExit("--db: name the file batchrock.sqlite3 for the API table")
                    port, pid = running.enter_context(api_server(path.parent, None))
                    servers["sqlite"] = (port, lambda pid=pid: cpu_seconds(pid))
                if "postgres" in names:
                    (folder / "pg-data").mkdir(exist_ok=True)
                    port, pid = running.enter_context(api_server(folder / "pg-data", url))
                    servers["postgres"] = (port, lambda pid=pid: cpu_seconds(pid) + server_cpu())
                await api_table(args.jobs, servers, args.repeat, cpu, server_cpu.refresh)


if __name__ == "__main__":
    asyncio.run(main())
