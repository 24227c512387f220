"""The shared job store: PostgreSQL, for API processes and workers on several hosts.

Selected by ``database_url`` (``postgresql://...``); SQLite stays the embedded default. It
keeps the SQLite store's semantics exactly (the one contract suite in ``tests/contract`` runs
on both, and a test compares their listings): the same columns, times as integer
microseconds, job ids in byte order, the same keyset over (submit_time, job_id).

Concurrency, the PostgreSQL way:

- connections come from a psycopg ``AsyncConnectionPool``, in autocommit; a write that is more
  than one statement runs in an explicit transaction;
- status changes lock the job's row (``SELECT ... FOR UPDATE``) and update it guarded by the
  status read, so two writers cannot both win;
- claims take the oldest free job with ``FOR UPDATE SKIP LOCKED``: engines racing for work
  each get a different job, none waits for another;
- the per-model quotas hold under concurrency through transaction-scoped advisory locks:
  ``create`` locks its (account, region, model) from the count to the insert; ``start_next``
  holds one lock from its count to its update (starts are a few per job, so one queue is
  cheap, and a job's model is only known once it is picked);
- every creation, status change and lease release ``NOTIFY``-s channel :data:`CHANNEL` (sent
  at commit): engines ``LISTEN`` (:meth:`PostgresStore.watch`) and look for work at once
  instead of waiting for their next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from batchrock import jobs
from batchrock.clock import from_micros, to_micros
from batchrock.jobs import Counters, InvalidTransition, Job, JobEvent, JobStatus, Transition
from batchrock.store.base import (
    JobFilter,
    JobNotFound,
    JobRow,
    Lease,
    LeaseLost,
    ModelWork,
    PageKeys,
    PageRequest,
    RowKey,
    StoreBusy,
    StoreConflict,
    StoreSnapshot,
    UnfinishedJobsQuota,
)
from batchrock.store.pg_files import PostgresFileStore
from batchrock.store.pg_schema import migrate
from batchrock.store.pg_sessions import PostgresSessionStore
from batchrock.store.rows import (
    JOB_COLUMNS,
    N_COLUMNS,
    Row,
    claim_candidate,
    first_submitted_query,
    job_params,
    log_transition,
    overdue_query,
    row_to_job,
    row_to_view,
)

log = logging.getLogger("batchrock.store")

#: The channel engines listen on; the payload is empty (a hint to look, not a message).
CHANNEL = "batchrock_jobs"
#: Advisory lock held by start_next from its count to its update (see the module docstring).
_START_LOCK = 0x62617463_68727374
#: Advisory lock every transaction recording an event holds until it commits: job_events ids
#: then follow commit order, which the event outbox relies on (JobStore.events_since).
_EVENTS_LOCK = 0x62617463_68657674


@contextlib.contextmanager
def _typed_errors() -> Iterator[None]:
    """psycopg's errors as the store's: "try again later" ones (a lost or refused connection,
    an exhausted pool, a deadlock, a serialization or lock failure) as :class:`StoreBusy`, a
    duplicate key as :class:`StoreConflict`; anything else propagates as it is."""
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        raise StoreConflict(str(exc)) from exc
    except (
        psycopg.errors.SerializationFailure,
        psycopg.errors.DeadlockDetected,
        psycopg.errors.LockNotAvailable,
        psycopg.errors.QueryCanceled,
        psycopg.errors.TooManyConnections,
        psycopg.errors.CannotConnectNow,
    ) as exc:
        raise StoreBusy(f"the job database is busy: {exc.sqlstate} {exc}") from exc
    except PoolTimeout as exc:
        raise StoreBusy(f"no job database connection is free: {exc}") from exc
    except psycopg.OperationalError as exc:  # AdminShutdown and a lost connection included
        raise StoreBusy(f"the job database is unavailable: {exc}") from exc


#: A rare ``nameContains`` listing (see PostgresStore._list_rare_name and pg_schema's 3), of
#: the columns put in its ``{}``.
_RARE_NAME_SQL = (
    "SELECT {} FROM batchrock_jobs_named("
    "%s, %s, %s, %s::bigint, %s::bigint, %s::bigint, %s, %s, %s, %s, %s)"
)
#: Where a listing's query goes in the query it is read through (PostgresStore._listed).
_PAGE = "{page}"
#: A row's key (store/base.py RowKey) as one value, its version moved on by pg_schema's
#: migration 5.
_KEY_COLUMNS = "job_id || ':' || row_version"


def _keyed(rows: Sequence[Row]) -> list[tuple[RowKey, JobRow]]:
    """Rows of :data:`_KEY_COLUMNS` then :data:`JOB_COLUMNS`: each key with its view."""
    return [(r[0], row_to_view(r[1:])) for r in rows]


#: How often the job names' statistics are re-read (PostgresStore._rare_name), in seconds.
_NAME_SAMPLE_SECONDS = 60.0


@dataclass(frozen=True)
class _NameStats:
    """``pg_stats`` of ``jobs.name``: the most common names with their shares, the histogram
    bounds (a sample of the other names) and their share, and the table's estimated rows."""

    read_at: float
    common: tuple[tuple[str, float], ...]
    bounds: tuple[str, ...]
    bounds_share: float
    rows: float

    @classmethod
    def of(cls, read_at: float, row: Row | None) -> _NameStats:
        if row is None:  # never analyzed
            return cls(read_at, (), (), 0.0, 0.0)
        common = tuple((v.lower(), float(f)) for v, f in zip(row[0], row[1], strict=True))
        return cls(
            read_at,
            common,
            tuple(v.lower() for v in row[2]),
            max(0.0, 1.0 - sum(f for _, f in common)),
            max(0.0, float(row[3])),
        )

    def share(self, needle: str) -> float | None:
        """The estimated share of names containing ``needle``; None without statistics."""
        if not self.common and not self.bounds:
            return None
        share = sum(f for v, f in self.common if needle in v)
        if self.bounds:
            hits = sum(needle in v for v in self.bounds)
            share += self.bounds_share * hits / len(self.bounds)
        return share


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _tripled(text: str) -> str:
    """The needle as ``batchrock_tripled`` writes names: ASCII lower-cased (Python's
    ``lower`` also folds other letters, which the column never holds lowered; as in the
    SQLite store, such a needle then matches nothing), every character three times."""
    return "".join(ch * 3 for ch in text.lower())


def _status_in(statuses: Collection[JobStatus]) -> tuple[str, list[str]]:
    """``status IN (...)`` with one placeholder per status: a single status as ``status = %s``,
    which a prepared (generic) plan serves from the ordered ``jobs_claim`` index; ``= ANY``
    of an array would be planned as several and sort every row of the status."""
    values = sorted(s.value for s in statuses)
    return f"status IN ({', '.join(['%s'] * len(values))})", values


def _key(*parts: str) -> str:
    return "\x1f".join(parts)


def _lease_until(now: datetime, lease_seconds: float) -> int:
    return to_micros(now) + int(lease_seconds * 1_000_000)


class PostgresStore:
    """:class:`batchrock.store.base.JobStore` on PostgreSQL (psycopg 3, async).

    >>> store = await PostgresStore.open("postgresql://batchrock@db.internal/batchrock")
    """

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 30.0):
        self._url = url
        self._pool: AsyncConnectionPool | None = None
        self._pool_options = {"min_size": min_size, "max_size": max_size, "timeout": timeout}
        self._opening: asyncio.Lock | None = None
        self._watchers: list[Callable[[], None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._pool_guard: asyncio.Task[None] | None = None
        #: The job names' statistics, as last read (see _rare_name).
        self._name_stats: _NameStats | None = None
        #: Every connection the pool made (see _close_at_loop_end).
        self._made: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()
        #: Uploaded files and the jobs made from them (store/files.py), on this pool.
        self.files = PostgresFileStore(self)
        #: The web console's sessions (store/sessions.py), on this pool.
        self.sessions = PostgresSessionStore(self)

    @classmethod
    async def open(
        cls, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 30.0
    ) -> PostgresStore:
        """Connect, and bring the schema up to date (see :mod:`.pg_schema`)."""
        store = cls(url, min_size=min_size, max_size=max_size, timeout=timeout)
        await store._ready()
        return store

    @classmethod
    def open_sync(cls, url: str, **options: Any) -> PostgresStore:
        """The store, made outside an event loop: it connects (and migrates) on its first
        call, in the loop that makes it."""
        return cls(url, **options)

    async def _ready(self) -> AsyncConnectionPool:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                timeout = float(self._pool_options["timeout"])
                pool: AsyncConnectionPool = AsyncConnectionPool(
                    self._url,
                    min_size=int(self._pool_options["min_size"]),
                    max_size=int(self._pool_options["max_size"]),
                    timeout=timeout,
                    kwargs={"autocommit": True},
                    configure=self._made_one,
                    open=False,
                    name="batchrock",
                )
                with _typed_errors():
                    await pool.open(wait=True, timeout=timeout)
                    try:
                        async with pool.connection() as conn:
                            await migrate(conn)
                    except BaseException:
                        await pool.close()
                        raise
                self._pool = pool
                self._pool_guard = asyncio.get_running_loop().create_task(
                    _close_at_loop_end(pool, self._made), name="batchrock-postgres-pool-guard"
                )
        return self._pool

    async def _made_one(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._made.add(conn)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        pool = await self._ready()
        with _typed_errors():
            async with _checked_out(pool) as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        pool = await self._ready()
        with _typed_errors():
            async with _checked_out(pool) as conn, conn.transaction():
                yield conn

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async with self._connection() as conn:
            cur = await conn.execute(sql, params)
            row: Row | None = await cur.fetchone()
            return row

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._connection() as conn:
            cur = await conn.execute(sql, params)
            rows: list[Row] = await cur.fetchall()
            return rows

    # --- jobs ---------------------------------------------------------------------------

    async def create(
        self, job: Job, tags: Mapping[str, str], *, max_unfinished: int | None = None
    ) -> tuple[Job, bool]:
        created = jobs.creation(job)
        select_token = (
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE account_id = %s AND client_request_token = %s"
        )
        async with self._tx() as conn:
            if job.client_request_token is not None:
                cur = await conn.execute(
                    select_token,
                    (job.account_id, job.client_request_token),
                )
                existing = await cur.fetchone()
                if existing is not None:
                    return row_to_job(existing), False
            if max_unfinished is not None:
                # From the count to the insert no other process adds a job of this model.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (_key("quota", job.account_id, job.region, job.model_id),),
                )
                cur = await conn.execute(
                    "SELECT count(*) FROM jobs WHERE account_id = %s AND region = %s "
                    "AND status = ANY(%s) AND model_id = %s",
                    (job.account_id, job.region, [s.value for s in jobs.ACTIVE], job.model_id),
                )
                (count,) = await cur.fetchone()  # type: ignore[misc]
                if count >= max_unfinished:
                    raise UnfinishedJobsQuota(max_unfinished)
            cur = await conn.execute(
                f"INSERT INTO jobs ({JOB_COLUMNS}) "
                f"VALUES ({', '.join(['%s'] * N_COLUMNS)}) "
                "ON CONFLICT (account_id, client_request_token) "
                "WHERE client_request_token IS NOT NULL DO NOTHING RETURNING job_id",
                job_params(job),
            )
            inserted = await cur.fetchone()
            if inserted is not None:
                await _record(conn, created)
                if tags:
                    async with conn.cursor() as tag_cur:
                        await tag_cur.executemany(
                            "INSERT INTO job_tags (job_id, key, value) VALUES (%s, %s, %s)",
                            [(job.job_id, k, v) for k, v in tags.items()],
                        )
                return job, True
        # Another process inserted the same token after our look-up: its job is the answer.
        row = await self._one(select_token, (job.account_id, job.client_request_token))
        if row is None:  # pragma: no cover - the conflicting row is committed before we see it
            raise StoreBusy("a job with this token was being created; try again")
        return row_to_job(row), False

    async def get(self, account_id: str, region: str, job_id: str) -> Job | None:
        row = await self._one(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = %s AND account_id = %s AND region = %s",
            (job_id, account_id, region),
        )
        return None if row is None else row_to_job(row)

    async def get_many(
        self, account_id: str, region: str, job_ids: Collection[str]
    ) -> dict[str, Job]:
        if not job_ids:
            return {}
        rows = await self._all(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ANY(%s) AND account_id = %s "
            "AND region = %s",
            (list(job_ids), account_id, region),
        )
        return {r[0]: row_to_job(r) for r in rows}

    async def list_rows(self, filter: JobFilter, page: PageRequest) -> list[JobRow]:
        return [row_to_view(r) for r in await self._listed(filter, page)]

    async def get_row(self, account_id: str, region: str, job_id: str) -> JobRow | None:
        row = await self._one(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = %s AND account_id = %s AND region = %s",
            (job_id, account_id, region),
        )
        return None if row is None else row_to_view(row)

    async def list_row_keys(self, filter: JobFilter, page: PageRequest) -> PageKeys:
        # One value for the page, joined by the server in the listing's order (an aggregate's
        # own ORDER BY), so the driver makes one row and one str, not one of each a job.
        order = "DESC" if page.descending else "ASC"
        around = f"SELECT string_agg(k, ',' ORDER BY s {order}, j {order}) FROM ({_PAGE}) AS p"
        columns = f"{_KEY_COLUMNS} AS k, submit_time AS s, job_id AS j"
        ((packed,),) = await self._listed(filter, page, columns, around)
        return str(packed) if packed else ""

    async def list_keyed_rows(
        self, filter: JobFilter, page: PageRequest
    ) -> list[tuple[RowKey, JobRow]]:
        return _keyed(await self._listed(filter, page, f"{_KEY_COLUMNS}, {JOB_COLUMNS}"))

    async def get_row_key(self, account_id: str, region: str, job_id: str) -> RowKey | None:
        row = await self._one(
            f"SELECT {_KEY_COLUMNS} FROM jobs WHERE job_id = %s AND account_id = %s "
            "AND region = %s",
            (job_id, account_id, region),
        )
        return None if row is None else str(row[0])

    async def get_keyed_row(
        self, account_id: str, region: str, job_id: str
    ) -> tuple[RowKey, JobRow] | None:
        rows = await self._all(
            f"SELECT {_KEY_COLUMNS}, {JOB_COLUMNS} FROM jobs WHERE job_id = %s "
            "AND account_id = %s AND region = %s",
            (job_id, account_id, region),
        )
        return _keyed(rows)[0] if rows else None

    async def get_keyed_rows(
        self, account_id: str, region: str, job_ids: Collection[str]
    ) -> list[tuple[RowKey, JobRow]]:
        if not job_ids:
            return []
        rows = await self._all(
            f"SELECT {_KEY_COLUMNS}, {JOB_COLUMNS} FROM jobs WHERE job_id = ANY(%s) "
            "AND account_id = %s AND region = %s",
            (list(job_ids), account_id, region),
        )
        return _keyed(rows)

    async def get_by_id(self, job_id: str) -> Job | None:
        row = await self._one(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = %s", (job_id,))
        return None if row is None else row_to_job(row)

    async def list_jobs(self, filter: JobFilter, page: PageRequest) -> list[Job]:
        return [row_to_job(r) for r in await self._listed(filter, page)]

    async def _listed(
        self,
        filter: JobFilter,
        page: PageRequest,
        columns: str = JOB_COLUMNS,
        around: str = _PAGE,
    ) -> list[tuple[Any, ...]]:
        """The rows of :meth:`list_jobs`, of ``columns`` (of the ``jobs`` table), as the
        database gave them; ``around`` is the query they are read through (``_PAGE`` in it
        stands for the listing's own)."""
        if filter.name_contains and await self._rare_name(filter.name_contains.lower(), page.limit):
            return await self._listed_rare_name(filter, page, columns, around)
        where = ["account_id = %s", "region = %s"]
        params: list[Any] = [filter.account_id, filter.region]
        if filter.status is not None:
            where.append("status = %s")
            params.append(filter.status.value)
        if filter.submitted_after is not None:
            where.append("submit_time > %s")
            params.append(to_micros(filter.submitted_after))
        if filter.submitted_before is not None:
            where.append("submit_time < %s")
            params.append(to_micros(filter.submitted_before))
        op = "<" if page.descending else ">"
        if page.after is not None:
            where.append(f"(submit_time, job_id) {op} (%s, %s)")
            params.extend([to_micros(page.after.submit_time), page.after.job_id])
        if filter.name_contains:
            # The exact test first (cheap, and it decides), then the trigram match it implies,
            # which lets the planner choose: for a rare pattern the GIN index's few rows,
            # sorted; for a common one the listing index walked in order, the strpos test
            # passing over the rows that do not match.
            needle = filter.name_contains.lower()
            where.append("strpos(lower(name), %s) > 0")
            where.append("batchrock_tripled(name) LIKE %s")
            params.extend([needle, f"%{_like_escaped(_tripled(needle))}%"])
        order = "DESC" if page.descending else "ASC"
        sql = (
            f"SELECT {columns} FROM jobs WHERE {' AND '.join(where)} "
            f"ORDER BY submit_time {order}, job_id {order} LIMIT %s"
        )
        params.append(page.limit)
        sql = around.replace(_PAGE, sql)
        async with self._connection() as conn:
            # A name pattern is planned for its value (the column's statistics say how common
            # it is), not once for every pattern as a prepared statement would be.
            cur = await conn.execute(sql, params, prepare=False if filter.name_contains else None)
            return await cur.fetchall()

    async def _listed_rare_name(
        self, filter: JobFilter, page: PageRequest, columns: str, around: str = _PAGE
    ) -> list[tuple[Any, ...]]:
        """The rows of a listing whose ``nameContains`` is rare: migration 3's function, one
        plan per session (the trigram index's matches, filtered and sorted), not planned per
        call."""
        assert filter.name_contains
        needle = filter.name_contains.lower()
        after = page.after
        params = (
            filter.account_id,
            filter.region,
            None if filter.status is None else filter.status.value,
            None if filter.submitted_after is None else to_micros(filter.submitted_after),
            None if filter.submitted_before is None else to_micros(filter.submitted_before),
            None if after is None else to_micros(after.submit_time),
            None if after is None else after.job_id,
            page.descending,
            needle,
            f"%{_like_escaped(_tripled(needle))}%",
            page.limit,
        )
        async with self._connection() as conn:
            sql = around.replace(_PAGE, _RARE_NAME_SQL.format(columns))
            cur = await conn.execute(sql, params, prepare=True)
            rows: list[tuple[Any, ...]] = await cur.fetchall()
            return rows

    async def _rare_name(self, needle: str, limit: int) -> bool:
        """Whether ``needle`` is rare enough among job names that fetching its matches and
        sorting them beats walking the listing index for a page of ``limit``, judged as
        PostgreSQL's planner judges it, from the same statistics (``pg_stats`` of
        ``jobs.name``, kept by ANALYZE): the share of names containing it is that of the
        matching most common values plus the rest's share times the fraction of matching
        histogram bounds; with ``n`` jobs, fetching costs about ``share * n`` rows and walking
        ``limit / share``. Without statistics (a new table) nothing is rare and the query is
        planned for its pattern, as every pattern was before. The statistics are re-read at
        most every :data:`_NAME_SAMPLE_SECONDS`: stale ones only cost speed, never a wrong
        answer (both queries return the same jobs)."""
        now = time.monotonic()
        if self._name_stats is None or now - self._name_stats.read_at > _NAME_SAMPLE_SECONDS:
            row = await self._one(
                "SELECT coalesce(s.most_common_vals::text::text[], '{}'), "
                "coalesce(s.most_common_freqs, '{}'), "
                "coalesce(s.histogram_bounds::text::text[], '{}'), c.reltuples "
                "FROM pg_stats AS s, pg_class AS c WHERE s.schemaname = current_schema() "
                "AND s.tablename = 'jobs' AND s.attname = 'name' AND c.oid = 'jobs'::regclass"
            )
            self._name_stats = _NameStats.of(now, row)
        share = self._name_stats.share(needle)
        return share is not None and share * share * self._name_stats.rows < limit

    async def transition(
        self,
        job_id: str,
        to: JobStatus,
        *,
        now: datetime,
        expected: Collection[JobStatus] | None = None,
        message: str | None = None,
        end_time: datetime | None = None,
        fence: str | None = None,
    ) -> Job:
        async with self._tx() as conn:
            # The row stays locked from this read to the update: the decision is made on the
            # job as it is (and its lease), and the compare-and-set below cannot lose.
            cur = await conn.execute(
                f"SELECT {JOB_COLUMNS}, lease_owner FROM jobs WHERE job_id = %s FOR UPDATE",
                (job_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise JobNotFound(job_id)
            if fence is not None and row[-1] != fence:
                raise LeaseLost(job_id)
            change = jobs.decide(
                row_to_job(row),
                to,
                now=now,
                expected=expected,
                message=message,
                end_time=end_time,
            )
            updated = await _apply(conn, change)
        log_transition(change, updated.account_id)
        return updated

    async def events(self, job_id: str) -> list[JobEvent]:
        rows = await self._all(
            "SELECT job_id, from_status, to_status, at, message, id FROM job_events "
            "WHERE job_id = %s ORDER BY id",
            (job_id,),
        )
        return [_event(r) for r in rows]

    async def events_of(self, job_ids: Collection[str]) -> dict[str, list[JobEvent]]:
        if not job_ids:
            return {}
        rows = await self._all(
            "SELECT job_id, from_status, to_status, at, message, id FROM job_events "
            "WHERE job_id = ANY(%s) ORDER BY id",
            (list(job_ids),),
        )
        out: dict[str, list[JobEvent]] = {}
        for r in rows:
            out.setdefault(r[0], []).append(_event(r))
        return out

    # --- tags ---------------------------------------------------------------------------

    async def get_tags(self, job_id: str) -> dict[str, str]:
        rows = await self._all(
            "SELECT key, value FROM job_tags WHERE job_id = %s ORDER BY key", (job_id,)
        )
        return {r[0]: r[1] for r in rows}

    async def put_tags(self, job_id: str, tags: Mapping[str, str], *, max_tags: int) -> None:
        async with self._tx() as conn:
            if tags:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO job_tags (job_id, key, value) VALUES (%s, %s, %s) "
                        "ON CONFLICT (job_id, key) DO UPDATE SET value = excluded.value",
                        [(job_id, k, v) for k, v in tags.items()],
                    )
            cur = await conn.execute("SELECT count(*) FROM job_tags WHERE job_id = %s", (job_id,))
            (count,) = await cur.fetchone()  # type: ignore[misc]
            if count > max_tags:
                raise OverflowError(count)  # rolls the transaction back

    async def remove_tags(self, job_id: str, keys: Collection[str]) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "DELETE FROM job_tags WHERE job_id = %s AND key = ANY(%s)", (job_id, list(keys))
            )

    # --- the engine's side --------------------------------------------------------------

    async def claim(
        self,
        worker_id: str,
        statuses: Collection[JobStatus],
        *,
        now: datetime,
        lease_seconds: float,
        submitted_by: datetime | None = None,
    ) -> Job | None:
        if not statuses:
            return None
        # Submitted jobs younger than submitted_by wait (in the query, as SQLite's).
        candidate, params = claim_candidate(
            statuses,
            now=to_micros(now),
            submitted_by=None if submitted_by is None else to_micros(submitted_by),
            mark="%s",
            key="job_id",
            lock=" FOR UPDATE SKIP LOCKED",
        )
        row = await self._one(
            f"UPDATE jobs SET lease_owner = %s, lease_expires = %s WHERE job_id = ({candidate}) "
            f"RETURNING {JOB_COLUMNS}",
            (worker_id, _lease_until(now, lease_seconds), *params),
        )
        return None if row is None else row_to_job(row)

    async def renew(
        self, job_id: str, worker_id: str, *, now: datetime, lease_seconds: float
    ) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute(
                "UPDATE jobs SET lease_expires = %s WHERE job_id = %s AND lease_owner = %s",
                (_lease_until(now, lease_seconds), job_id, worker_id),
            )
            return cur.rowcount == 1

    async def release(self, job_id: str, worker_id: str) -> None:
        async with self._tx() as conn:
            cur = await conn.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires = NULL "
                "WHERE job_id = %s AND lease_owner = %s",
                (job_id, worker_id),
            )
            if cur.rowcount:
                await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))

    async def lease(self, job_id: str) -> Lease | None:
        row = await self._one(
            "SELECT lease_owner, lease_expires FROM jobs WHERE job_id = %s "
            "AND lease_owner IS NOT NULL",
            (job_id,),
        )
        return None if row is None else Lease(row[0], from_micros(row[1]))

    async def save_progress(
        self,
        job_id: str,
        *,
        counters: Counters,
        now: datetime,
        checkpoint: Mapping[str, Any] | None = None,
        fence: str | None = None,
    ) -> None:
        c = counters
        fenced = "" if fence is None else " AND lease_owner = %s"
        async with self._connection() as conn:
            cur = await conn.execute(
                "UPDATE jobs SET total_records = %s, processed_records = %s, "
                "success_records = %s, error_records = %s, input_tokens = %s, "
                "output_tokens = %s, throttled_requests = %s, last_modified_time = %s, "
                f"checkpoint = coalesce(%s::jsonb, checkpoint) WHERE job_id = %s{fenced}",
                (
                    c.total,
                    c.processed,
                    c.success,
                    c.error,
                    c.input_tokens,
                    c.output_tokens,
                    c.throttled,
                    to_micros(now),
                    None if checkpoint is None else orjson.dumps(dict(checkpoint)).decode(),
                    job_id,
                    *(() if fence is None else (fence,)),
                ),
            )
            if fence is not None and cur.rowcount != 1:
                raise LeaseLost(job_id)

    async def load_checkpoint(self, job_id: str) -> dict[str, Any] | None:
        row = await self._one("SELECT checkpoint::text FROM jobs WHERE job_id = %s", (job_id,))
        if row is None or row[0] is None:
            return None
        data: dict[str, Any] = orjson.loads(row[0])
        return data

    async def start_next(
        self,
        worker_id: str,
        *,
        now: datetime,
        lease_seconds: float,
        max_in_progress: int,
    ) -> Job | None:
        if max_in_progress < 1:  # no model has a free slot (the query below needs one)
            return None
        micros = to_micros(now)
        scheduled, running = JobStatus.SCHEDULED.value, JobStatus.IN_PROGRESS.value
        async with self._tx() as conn:
            # One start at a time, cluster-wide, from the count to the update: two engines
            # cannot both take the last free slot of a model. Each statement below sees every
            # start committed before the lock was granted (READ COMMITTED).
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_START_LOCK,))
            cur = await conn.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = %s "
                "AND (lease_expires IS NULL OR lease_expires < %s) "
                # The models at their quota, counted once: a count per Scheduled job
                # (correlated) read every InProgress job of the account for each, 35 ms
                # (SQLite) and 110 ms (PostgreSQL) at 1,000 Scheduled and 300 InProgress.
                "AND (account_id, region, model_id) NOT IN ("
                "     SELECT account_id, region, model_id FROM jobs WHERE status = %s "
                "     GROUP BY account_id, region, model_id HAVING count(*) >= %s) "
                "ORDER BY submit_time, job_id LIMIT 1 FOR UPDATE SKIP LOCKED",
                (scheduled, micros, running, max_in_progress),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            change = jobs.decide(row_to_job(row), JobStatus.IN_PROGRESS, now=now)
            started = await _apply(
                conn, change, lease=(worker_id, _lease_until(now, lease_seconds))
            )
        log_transition(change, started.account_id)
        return started

    async def jobs_in(self, statuses: Collection[JobStatus], *, limit: int) -> list[Job]:
        if not statuses:
            return []
        status_sql, values = _status_in(statuses)
        rows = await self._all(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {status_sql} "
            "ORDER BY submit_time, job_id LIMIT %s",
            (*values, limit),
        )
        return [row_to_job(r) for r in rows]

    async def overdue(
        self,
        statuses: Collection[JobStatus],
        *,
        submitted_by: datetime,
        by: datetime,
        scale: float,
        limit: int,
    ) -> list[Job]:
        if not statuses:
            return []
        sql, params = overdue_query(
            statuses,
            submitted_by=submitted_by,
            by=by,
            scale=scale,
            limit=limit,
            mark="%s",
            columns=JOB_COLUMNS,
        )
        rows = await self._all(sql, params)
        return [row_to_job(r) for r in rows]

    async def first_submitted_after(self, status: JobStatus, after: datetime) -> datetime | None:
        row = await self._one(first_submitted_query("%s"), (status.value, to_micros(after)))
        return None if row is None else from_micros(row[0])

    async def snapshot(self) -> StoreSnapshot:
        # The server counts; the event loop only waits for the answer.
        by_status = {
            JobStatus(status): int(count)
            for status, count in await self._all(
                "SELECT status, count(*) FROM jobs GROUP BY status"
            )
        }
        rows = await self._all(
            "SELECT model_id, "
            "  sum((status = %s)::int), "
            "  sum(greatest(total_records - processed_records, 0)), "
            "  sum(CASE WHEN processed_records > 0 "
            "      THEN greatest(total_records - processed_records, 0) * input_tokens "
            "           / processed_records ELSE 0 END) "
            "FROM jobs WHERE status = ANY(%s) GROUP BY model_id",
            (JobStatus.SCHEDULED.value, [s.value for s in _PENDING]),
        )
        by_model = {
            model_id: ModelWork(int(scheduled), int(pending), int(tokens))
            for model_id, scheduled, pending, tokens in rows
        }
        return StoreSnapshot(jobs_by_status=by_status, by_model=by_model)

    # --- the event outbox ---------------------------------------------------------------

    async def events_since(self, after: int, *, limit: int) -> list[JobEvent]:
        rows = await self._all(
            "SELECT job_id, from_status, to_status, at, message, id FROM job_events "
            "WHERE id > %s ORDER BY id LIMIT %s",
            (after, limit),
        )
        return [_event(r) for r in rows]

    async def hold_sink(
        self, sink: str, owner: str, *, now: datetime, lease_seconds: float
    ) -> int | None:
        micros = to_micros(now)
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO event_sinks (sink, position) "
                "SELECT %s, coalesce(max(id), 0) FROM job_events ON CONFLICT (sink) DO NOTHING",
                (sink,),
            )
            cur = await conn.execute(
                "UPDATE event_sinks SET lease_owner = %s, lease_expires = %s WHERE sink = %s "
                "AND (lease_owner IS NULL OR lease_owner = %s OR lease_expires < %s) "
                "RETURNING position",
                (owner, _lease_until(now, lease_seconds), sink, owner, micros),
            )
            row = await cur.fetchone()
        return None if row is None else int(row[0])

    async def advance_sink(self, sink: str, owner: str, position: int) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute(
                "UPDATE event_sinks SET position = %s WHERE sink = %s AND lease_owner = %s",
                (position, sink, owner),
            )
            return cur.rowcount == 1

    async def release_sink(self, sink: str, owner: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE event_sinks SET lease_owner = NULL, lease_expires = NULL "
                "WHERE sink = %s AND lease_owner = %s",
                (sink, owner),
            )

    # --- wake-ups -----------------------------------------------------------------------

    async def watch(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake`` (on this event loop) whenever any process creates a job, changes a
        status or releases a lease; returns the function that stops it. While the listening
        connection is down (it is reopened), ``wake`` is called once it is back, since
        notifications may have been missed."""
        self._watchers.append(wake)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="store-listener")

        def stop() -> None:
            with contextlib.suppress(ValueError):
                self._watchers.remove(wake)

        return stop

    def _wake_all(self) -> None:
        for wake in list(self._watchers):
            wake()

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            except psycopg.OperationalError as exc:
                log.warning("cannot listen for job changes (retrying): %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    backoff = 0.1
                    self._wake_all()  # anything missed while not listening
                    async for _ in conn.notifies():
                        self._wake_all()
            except psycopg.OperationalError as exc:
                log.warning("lost the job-change listener connection (reconnecting): %s", exc)
                await asyncio.sleep(backoff)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._pool_guard is not None:
            self._pool_guard.cancel()
            self._pool_guard = None


@contextlib.asynccontextmanager
async def _checked_out(
    pool: AsyncConnectionPool,
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """``pool.connection()``, except that a cancellation is never lost on the way in. On
    Python 3.11 psycopg_pool waits for a free connection through ``asyncio.wait_for``, which
    returns the connection, and drops the cancellation, when the connection arrives as the
    caller is cancelled: a runner's heartbeat, told to stop while it waited for a connection,
    then renewed its lease for good and its job step never ended (the engine suites hung on
    PostgreSQL). A cancellation requested meanwhile is raised here; the connection goes back."""
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    async with pool.connection() as conn:
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError
        yield conn


async def _close_at_loop_end(
    pool: AsyncConnectionPool, made: weakref.WeakSet[psycopg.AsyncConnection[Any]]
) -> None:
    """Close ``pool`` when this task is cancelled: psycopg_pool's workers survive a
    cancellation while they run a task (a reconnect, say), so a loop that ends without
    :meth:`PostgresStore.close` (``asyncio.run`` cancels every task and waits for them) would
    wait for those workers forever. Closing the pool stops them.

    The loop cancels the pool's workers together with this task, and the pool's ``close``
    waits for its workers before it closes its idle connections: their cancellation ends it
    there, and the connections stayed open on the server for as long as the process lived.
    So every connection the pool ``made`` that is still open is closed here too."""
    try:
        await asyncio.get_running_loop().create_future()
    except asyncio.CancelledError:
        try:
            await pool.close(timeout=5.0)
        except asyncio.CancelledError:
            log.debug("the pool's workers were cancelled with the loop; closing its connections")
        for conn in list(made):
            if not conn.closed:
                await conn.close()
        raise


async def _apply(
    conn: psycopg.AsyncConnection[Any], change: Transition, *, lease: tuple[str, int] | None = None
) -> Job:
    """Write a decided transition inside the caller's transaction: one compare-and-set on the
    status it was decided from, its event, and a notification (sent at commit). ``lease``
    (owner, expiry in microseconds) hands the job to a worker in the same update."""
    if lease is not None:
        owner_sql, expires_sql, lease_params = "%s", "%s", [*lease]
    elif change.clear_lease:
        owner_sql, expires_sql, lease_params = "NULL", "NULL", []
    else:
        owner_sql, expires_sql, lease_params = "lease_owner", "lease_expires", []
    cur = await conn.execute(
        f"UPDATE jobs SET status = %s, last_modified_time = %s, message = %s, end_time = %s, "
        f"lease_owner = {owner_sql}, lease_expires = {expires_sql} "
        f"WHERE job_id = %s AND status = %s RETURNING {JOB_COLUMNS}",
        (
            change.to_status.value,
            to_micros(change.at),
            change.message,
            None if change.end_time is None else to_micros(change.end_time),
            *lease_params,
            change.job_id,
            change.from_status.value,
        ),
    )
    updated = await cur.fetchone()
    if updated is None:  # pragma: no cover - the row is locked since it was read
        raise InvalidTransition(change.job_id, change.from_status, change.to_status)
    await _record(conn, change.event)
    return row_to_job(updated)


def _event(r: Row) -> JobEvent:
    return JobEvent(
        job_id=r[0],
        from_status=None if r[1] is None else JobStatus(r[1]),
        to_status=JobStatus(r[2]),
        at=from_micros(r[3]),
        message=r[4],
        seq=r[5],
    )


async def _record(conn: psycopg.AsyncConnection[Any], event: JobEvent) -> None:
    """Insert ``event`` inside the caller's transaction (taken last of the locks a transaction
    takes, so lock order stays the same everywhere), and notify the engines at commit."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_EVENTS_LOCK,))
    await conn.execute(
        "INSERT INTO job_events (job_id, from_status, to_status, at, message) "
        "VALUES (%s, %s, %s, %s, %s)",
        (
            event.job_id,
            None if event.from_status is None else event.from_status.value,
            event.to_status.value,
            to_micros(event.at),
            event.message,
        ),
    )
    await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))


#: Jobs whose records are still to be processed (NumberOfRecordsPendingProcessing).
_PENDING = (JobStatus.SCHEDULED, JobStatus.IN_PROGRESS)
