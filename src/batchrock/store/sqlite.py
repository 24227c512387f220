"""The embedded job store: one SQLite file in WAL mode.

Several processes (``batchrock serve`` and any number of ``batchrock worker``) may open the same
file: every write runs in a ``BEGIN IMMEDIATE`` transaction, status changes are guarded updates
(``... WHERE status IN (allowed sources)``) and claims are a single ``UPDATE ... RETURNING``, so
no two writers can both win.

Queries are short (well under a millisecond on an indexed table), so they run directly on the
event loop rather than paying a thread hop per call. Waiting for another process's lock must not
hold the loop, though: SQLite's own busy handler sleeps in the calling thread, so it is given
only :data:`_LOCK_SPIN_SECONDS`, and :func:`_typed_errors` waits the rest of ``busy_timeout``
with ``asyncio.sleep`` between attempts (every method is one transaction with no ``await``
inside, so an attempt that found the database locked changed nothing and is safe to repeat).
The one slow thing a commit could do, SQLite's automatic WAL checkpoint (the fsyncs), is
switched off on this connection and done by a thread of the store's own
(:mod:`batchrock.store.sqlite_checkpoint`).

Lifecycle decisions are :func:`batchrock.jobs.decide`'s; this module only reads the job, asks,
and writes the answer (:meth:`SqliteStore._apply`). SQLite's errors leave as the store's typed
ones (:func:`_typed_errors`): a database still locked after ``busy_timeout`` is
:class:`~batchrock.store.base.StoreBusy`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

import orjson

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
from batchrock.store.rows import (
    claim_candidate,
    first_submitted_query,
    job_params,
    log_transition,
    overdue_query,
    row_to_view,
)
from batchrock.store.sqlite_checkpoint import DEFAULT as DEFAULT_CHECKPOINTS
from batchrock.store.sqlite_checkpoint import Checkpoints, WalCheckpointer
from batchrock.store.sqlite_wal_index import WalIndexHeader

SCHEMA_VERSION = 5

log = logging.getLogger("batchrock.store")

# When the trigram index yields at most this many candidates, fetch them directly; otherwise the
# pattern is common and walking the listing index in order finds a page of matches sooner.
_SELECTIVE_CANDIDATES = 5000

_JOB_COLUMNS = (
    "job_id, account_id, region, name, model_id, role_arn, client_request_token, status, "
    "message, submit_time, last_modified_time, end_time, expiration_time, timeout_hours, "
    "invocation_type, input_s3_uri, input_format, input_bucket_owner, output_s3_uri, "
    "output_kms_key_id, output_bucket_owner, vpc_config, total_records, processed_records, "
    "success_records, error_records, input_tokens, output_tokens, throttled_requests"
)


# A JobRow's members in order; vpc_config is JSON text in the database (decoded per row only
# when set) and the token and throttle counters are not part of the view.
_ROW_COLUMNS = (
    "job_id, account_id, region, name, model_id, role_arn, client_request_token, status, "
    "message, submit_time, last_modified_time, end_time, expiration_time, timeout_hours, "
    "invocation_type, input_s3_uri, input_format, input_bucket_owner, output_s3_uri, "
    "output_kms_key_id, output_bucket_owner, vpc_config, total_records, processed_records, "
    "success_records, error_records"
)
# A row's key (store/base.py RowKey): a generated column (schema version 5) that the listing
# indexes hold, so a page's keys are read from the index as the API keys them; made from
# job_id and row_version per row instead, they cost a third more (turning the integer into
# text; docs/benchmarks.md).
_KEY_COLUMNS = "row_key"
_ROW_KEY_COLUMN = "row_key TEXT GENERATED ALWAYS AS (job_id || ':' || row_version) VIRTUAL"
# Every column of the view: an update of any of them moves row_version on. Made at every open
# (when it differs), so a column added to the view is never left out of an older database's.
_VERSION_TRIGGER = (
    "CREATE TRIGGER jobs_row_version AFTER UPDATE OF "
    f"{_ROW_COLUMNS} ON jobs FOR EACH ROW BEGIN "
    "UPDATE jobs SET row_version = row_version + 1 WHERE rowid = NEW.rowid; END"
)


_ROW_KEY_QUERY = (
    f"SELECT {_KEY_COLUMNS} FROM jobs WHERE job_id = ? AND account_id = ? AND region = ?"
)
#: Row keys kept by :meth:`SqliteStore.get_row_key` while nothing commits (all forgotten at
#: once past this, like api/app.py's ``_GET_REFS_KEPT``): some 200 bytes each.
_ROW_KEYS_KEPT = 4096
#: A job that was not there, kept as such (a Create commits, which forgets it).
_ABSENT = ""
#: Listing pages' keys kept by :meth:`SqliteStore.list_row_keys` likewise: a page of 1000's
#: are some 45 KB, so at most about 6 MB.
_PAGE_KEYS_KEPT = 128


def _job_rows(rows: Iterator[tuple[Any, ...]]) -> list[JobRow]:
    """Plain tuples (no ``sqlite3.Row``) straight into :class:`JobRow` views."""
    return [row_to_view(r) for r in rows]


def _keyed_rows(rows: Iterator[tuple[Any, ...]]) -> list[tuple[RowKey, JobRow]]:
    """Rows of :data:`_KEY_COLUMNS` then :data:`_ROW_COLUMNS`: each key with its view."""
    return [(r[0], row_to_view(r[1:])) for r in rows]


def _opt_time(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


def _row_to_job(row: sqlite3.Row) -> Job:
    vpc = orjson.loads(row["vpc_config"]) if row["vpc_config"] else None
    return Job(
        job_id=row["job_id"],
        account_id=row["account_id"],
        region=row["region"],
        name=row["name"],
        model_id=row["model_id"],
        role_arn=row["role_arn"],
        client_request_token=row["client_request_token"],
        status=JobStatus(row["status"]),
        message=row["message"],
        submit_time=from_micros(row["submit_time"]),
        last_modified_time=from_micros(row["last_modified_time"]),
        end_time=_opt_time(row["end_time"]),
        expiration_time=from_micros(row["expiration_time"]),
        timeout_hours=row["timeout_hours"],
        invocation_type=row["invocation_type"],
        input_s3_uri=row["input_s3_uri"],
        input_format=row["input_format"],
        input_bucket_owner=row["input_bucket_owner"],
        output_s3_uri=row["output_s3_uri"],
        output_kms_key_id=row["output_kms_key_id"],
        output_bucket_owner=row["output_bucket_owner"],
        vpc_subnet_ids=tuple(vpc["subnetIds"]) if vpc is not None else None,
        vpc_security_group_ids=tuple(vpc["securityGroupIds"]) if vpc is not None else None,
        counters=Counters(
            total=row["total_records"],
            processed=row["processed_records"],
            success=row["success_records"],
            error=row["error_records"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            throttled=row["throttled_requests"],
        ),
    )


def _row_to_event(row: sqlite3.Row) -> JobEvent:
    return JobEvent(
        job_id=row["job_id"],
        from_status=None if row["from_status"] is None else JobStatus(row["from_status"]),
        to_status=JobStatus(row["to_status"]),
        at=from_micros(row["at"]),
        message=row["message"],
        seq=row["id"],
    )


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database written by an older version up to :data:`SCHEMA_VERSION` (the
    schema script only creates what is missing; it never changes an existing table)."""
    # table_xinfo: table_info leaves generated columns out.
    columns = {row[1] for row in conn.execute("PRAGMA table_xinfo(jobs)")}
    if "throttled_requests" not in columns:  # version 2
        conn.execute("ALTER TABLE jobs ADD COLUMN throttled_requests INTEGER NOT NULL DEFAULT 0")
    if "row_version" not in columns:  # version 3
        conn.execute("ALTER TABLE jobs ADD COLUMN row_version INTEGER NOT NULL DEFAULT 0")
    # Version 4: the listing indexes end with row_version (_ensure_listing_indexes, at every
    # open, makes them again where they differ).
    if "row_key" not in columns:  # version 5, and the listing indexes end with it
        conn.execute(f"ALTER TABLE jobs ADD COLUMN {_ROW_KEY_COLUMN}")


# The listing indexes hold each row's key whole (schema version 4: row_version; 5: row_key),
# so a listing's key query (list_row_keys) reads the index alone, no table row: a third less
# CPU for the key query of a page of 1000 (docs/benchmarks.md), and a third less again with
# the key as one text. The cost is on writes: an update of the view moves
# row_version on, which now moves the row's entry in both indexes (tens of µs, once per
# checkpoint of a job). Made again, an older database's hold the write lock while they are
# built: once, about 2 s at 200,000 jobs on the loaded 2-core machine (version 4's; version
# 5's, from a version 4 database, 0.8 s).
_LISTING_INDEXES = {
    "jobs_listing": (
        "CREATE INDEX jobs_listing ON jobs (account_id, region, submit_time, job_id, row_key)"
    ),
    "jobs_listing_by_status": (
        "CREATE INDEX jobs_listing_by_status "
        "ON jobs (account_id, region, status, submit_time, job_id, row_key)"
    ),
}


def _ensure_listing_indexes(conn: sqlite3.Connection) -> None:
    """The listing indexes, as :data:`_LISTING_INDEXES` writes them (an older database's,
    without ``row_key``, are made again; once)."""
    found = dict(
        conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'"
        ).fetchall()
    )
    for name, sql in _LISTING_INDEXES.items():
        if found.get(name) != sql:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
            conn.execute(sql)


def _ensure_version_trigger(conn: sqlite3.Connection) -> None:
    """The trigger that moves ``row_version`` on, as :data:`_VERSION_TRIGGER` writes it."""
    found = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'jobs_row_version'"
    ).fetchone()
    if found is None or found[0] != _VERSION_TRIGGER:
        conn.execute("DROP TRIGGER IF EXISTS jobs_row_version")
        conn.execute(_VERSION_TRIGGER)


def _tripled(text: str) -> str:
    """Every character three times (see the job_names index in sqlite_schema.sql)."""
    return "".join(ch * 3 for ch in text.lower())


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Primary result codes of a database another connection holds (extended codes such as
#: SQLITE_BUSY_SNAPSHOT share the low byte).
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

#: How long SQLite's busy handler may block the event loop in one attempt.
_LOCK_SPIN_SECONDS = 0.002
#: Pauses between attempts on a locked database: short at first (locks are held for well under
#: a millisecond), doubling up to the cap.
_LOCK_PAUSE_FIRST = 0.001
_LOCK_PAUSE_MAX = 0.05


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _BUSY_CODES


@runtime_checkable
class _Waits(Protocol):
    """What :func:`_typed_errors` wraps the methods of: a store on a connection that waits
    up to ``busy_timeout`` for another's lock (this one, and sqlite_files.py's)."""

    busy_timeout: float


def _typed_errors(
    method: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """SQLite's errors as the store's: busy (still locked after the store's ``busy_timeout``,
    waited for off the event loop between attempts) and constraint violations; anything else
    propagates as it is."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        # Real time, not the Clock seam: this is a wait on another process's lock, which a
        # test's frozen clock must not stretch into a hang.
        deadline: float | None = None
        pause = _LOCK_PAUSE_FIRST
        while True:
            try:
                return await method(*args, **kwargs)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                now = time.monotonic()
                if deadline is None:
                    # Only here: a check against a runtime Protocol costs microseconds, as
                    # much as the query of a Get.
                    store = args[0]
                    assert isinstance(store, _Waits)
                    deadline = now + store.busy_timeout
                if now >= deadline:
                    raise StoreBusy(f"the job database is busy: {exc}") from exc
                await asyncio.sleep(min(pause, deadline - now))
                pause = min(pause * 2, _LOCK_PAUSE_MAX)
            except sqlite3.IntegrityError as exc:
                raise StoreConflict(str(exc)) from exc

    return wrapper


class SqliteStore:
    """:class:`batchrock.store.base.JobStore` on SQLite.

    >>> store = await SqliteStore.open(Path("batchrock.sqlite3"))
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        checkpointer: WalCheckpointer,
        *,
        busy_timeout: float = 10.0,
        wal_index: WalIndexHeader | None = None,
    ) -> None:
        self._conn = conn
        self.path = path
        #: The file's change signal (store/sqlite_wal_index.py), ``None`` where there is none
        #: to trust: then every get_row_key reads the database.
        self._wal_index = wal_index
        #: Row keys (or :data:`_ABSENT`) by (job_id, account_id, region), each read by a query
        #: that began after the WAL-index header read :attr:`_keys_seen`: trusted while the
        #: header still reads so, i.e. while no transaction has committed to the file since.
        self._keys: dict[tuple[str, str, str], RowKey] = {}
        #: Listing pages' keys (list_row_keys) by filter and page, kept the same way.
        self._page_keys: dict[tuple[JobFilter, PageRequest], PageKeys] = {}
        self._keys_seen = b""
        #: Checkpoints the WAL off the loop (store/sqlite_checkpoint.py); ``conn`` never does.
        self.checkpointer = checkpointer
        #: How long a call waits, in all, for another connection's lock.
        self.busy_timeout = busy_timeout
        from batchrock.store.sqlite_files import SqliteFileStore  # it uses this module

        #: Uploaded files and the jobs made from them (store/files.py), on this connection.
        self.files = SqliteFileStore(conn, busy_timeout)
        from batchrock.store.sqlite_sessions import SqliteSessionStore

        #: The web console's sessions (store/sessions.py), on this connection.
        self.sessions = SqliteSessionStore(conn, busy_timeout)

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        busy_timeout: float = 10.0,
        checkpoints: Checkpoints = DEFAULT_CHECKPOINTS,
    ) -> SqliteStore:
        return cls.open_sync(path, busy_timeout=busy_timeout, checkpoints=checkpoints)

    @classmethod
    def open_sync(
        cls,
        path: Path,
        *,
        busy_timeout: float = 10.0,
        checkpoints: Checkpoints = DEFAULT_CHECKPOINTS,
    ) -> SqliteStore:
        """``busy_timeout``: how long a call waits for another connection's lock before it
        raises :class:`~batchrock.store.base.StoreBusy`; ``checkpoints``: the WAL
        checkpointer's (store/sqlite_checkpoint.py)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
        conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
        conn.row_factory = sqlite3.Row
        try:
            _retry_while_locked(lambda: _prepare(conn), busy_timeout)
        except BaseException:
            conn.close()
            raise
        # Opening may block (it runs once, before serving); every later call spins only
        # briefly in SQLite and waits for a lock off the loop (see _typed_errors).
        conn.execute(f"PRAGMA busy_timeout = {round(_LOCK_SPIN_SECONDS * 1000)}")
        # A commit on this (the loop's) connection never checkpoints: with synchronous=NORMAL
        # the checkpoint is where the fsyncs are. The checkpointer's thread does it instead.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        # The checkpointer never truncates the WAL (that would hold writers): a commit that
        # starts the WAL over, after a checkpoint that copied all of it, cuts it back to this.
        conn.execute(f"PRAGMA journal_size_limit = {checkpoints.wal_limit_bytes}")
        try:
            checkpointer = WalCheckpointer(path, checkpoints)
        except BaseException:
            conn.close()
            raise
        checkpointer.start()
        return cls(
            conn,
            path,
            checkpointer,
            busy_timeout=busy_timeout,
            wal_index=WalIndexHeader.open(conn, path),
        )

    # --- jobs ---------------------------------------------------------------------------

    @_typed_errors
    async def create(
        self, job: Job, tags: Mapping[str, str], *, max_unfinished: int | None = None
    ) -> tuple[Job, bool]:
        created = jobs.creation(job)
        conn = self._conn
        with _write(conn):
            if job.client_request_token is not None:
                existing = conn.execute(
                    f"SELECT {_JOB_COLUMNS} FROM jobs "
                    "WHERE account_id = ? AND client_request_token = ?",
                    (job.account_id, job.client_request_token),
                ).fetchone()
                if existing is not None:
                    return _row_to_job(existing), False
            if max_unfinished is not None:
                self._check_unfinished(job, max_unfinished)
            cur = conn.execute(
                f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({_placeholders(29)})",
                job_params(job),
            )
            conn.execute(
                "INSERT INTO job_names (rowid, name) VALUES (?, ?)",
                (cur.lastrowid, _tripled(job.name)),
            )
            self._record(created)
            conn.executemany(
                "INSERT INTO job_tags (job_id, key, value) VALUES (?, ?, ?)",
                [(job.job_id, k, v) for k, v in tags.items()],
            )
        log.info(
            "job %s: created %s",
            job.job_id,
            job.status.value,
            extra={
                "action": "job_transition",
                "job_id": job.job_id,
                "account_id": job.account_id,
                "from_status": None,
                "to_status": job.status.value,
            },
        )
        return job, True

    def _check_unfinished(self, job: Job, limit: int) -> None:
        """Inside create's write transaction: the write lock is held from the count to the
        insert, so no other process can add a job in between."""
        unfinished = sorted(s.value for s in jobs.ACTIVE)
        (count,) = self._conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE account_id = ? AND region = ? "
            f"AND status IN ({_placeholders(len(unfinished))}) AND model_id = ?",
            (job.account_id, job.region, *unfinished, job.model_id),
        ).fetchone()
        if count >= limit:
            raise UnfinishedJobsQuota(limit)

    @_typed_errors
    async def get(self, account_id: str, region: str, job_id: str) -> Job | None:
        row = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ? AND account_id = ? AND region = ?",
            (job_id, account_id, region),
        ).fetchone()
        return None if row is None else _row_to_job(row)

    @_typed_errors
    async def get_row(self, account_id: str, region: str, job_id: str) -> JobRow | None:
        rows = _job_rows(
            self._plain().execute(
                f"SELECT {_ROW_COLUMNS} FROM jobs "
                "WHERE job_id = ? AND account_id = ? AND region = ?",
                (job_id, account_id, region),
            )
        )
        return rows[0] if rows else None

    async def get_row_key(self, account_id: str, region: str, job_id: str) -> RowKey | None:
        # Every GetModelInvocationJob's one query, and only when something committed to the
        # file since the key was read (the WAL-index header changed: any connection, any
        # process); else the key read then, from memory (docs/architecture.md, "A Get reads
        # no row while nothing commits"). Not inside a transaction of this connection's own:
        # what it read there may yet be rolled back.
        wal_index = self._wal_index
        if wal_index is not None and not self._conn.in_transaction:
            seen = wal_index.read()
            where = (job_id, account_id, region)
            if seen == self._keys_seen:
                kept = self._keys.get(where)
                if kept is not None:
                    return kept or None
            try:
                key = self._row_key(account_id, region, job_id)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
            else:
                self._keep_key(seen, where, key)
                return key
        else:
            # Tried first without _typed_errors' layer (a coroutine and a frame a call, on a
            # path where each is paid about twice, docs/benchmarks.md "Where a Get's CPU
            # goes"). Busy: the wrapped read, which waits.
            try:
                return self._row_key(account_id, region, job_id)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
        return await self._row_key_waiting(account_id, region, job_id)

    def _keep_key(self, seen: bytes, where: tuple[str, str, str], key: RowKey | None) -> None:
        """Keep ``key``, read by a query that began after the header read ``seen``."""
        if self._kept_from(seen):
            if len(self._keys) >= _ROW_KEYS_KEPT:
                self._keys.clear()
            self._keys[where] = _ABSENT if key is None else key

    def _kept_from(self, seen: bytes) -> bool:
        """Whether what a query read after the WAL-index header read ``seen`` may be kept:
        not while the header was being written. What was kept under an older header is
        forgotten."""
        if seen != self._keys_seen:
            if seen[:48] != seen[48:]:
                return False
            self._keys.clear()
            self._page_keys.clear()
            self._keys_seen = seen
        return True

    @_typed_errors
    async def _row_key_waiting(self, account_id: str, region: str, job_id: str) -> RowKey | None:
        return self._row_key(account_id, region, job_id)

    def _row_key(self, account_id: str, region: str, job_id: str) -> RowKey | None:
        row = self._plain().execute(_ROW_KEY_QUERY, (job_id, account_id, region)).fetchone()
        return None if row is None else str(row[0])

    @_typed_errors
    async def get_keyed_row(
        self, account_id: str, region: str, job_id: str
    ) -> tuple[RowKey, JobRow] | None:
        rows = _keyed_rows(
            self._plain().execute(
                f"SELECT {_KEY_COLUMNS}, {_ROW_COLUMNS} FROM jobs "
                "WHERE job_id = ? AND account_id = ? AND region = ?",
                (job_id, account_id, region),
            )
        )
        return rows[0] if rows else None

    @_typed_errors
    async def get_keyed_rows(
        self, account_id: str, region: str, job_ids: Collection[str]
    ) -> list[tuple[RowKey, JobRow]]:
        ids = list(job_ids)
        if not ids:
            return []
        # A page is at most 1000 ids: well under SQLite's limit on parameters.
        return _keyed_rows(
            self._plain().execute(
                f"SELECT {_KEY_COLUMNS}, {_ROW_COLUMNS} FROM jobs WHERE account_id = ? "
                f"AND region = ? AND job_id IN ({_placeholders(len(ids))})",
                (account_id, region, *ids),
            )
        )

    @_typed_errors
    async def get_many(
        self, account_id: str, region: str, job_ids: Collection[str]
    ) -> dict[str, Job]:
        ids = list(job_ids)
        if not ids:
            return {}
        # A page is at most a few hundred ids: well under SQLite's limit on parameters.
        rows = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE account_id = ? AND region = ? "
            f"AND job_id IN ({', '.join('?' * len(ids))})",
            (account_id, region, *ids),
        ).fetchall()
        return {(job := _row_to_job(r)).job_id: job for r in rows}

    @_typed_errors
    async def get_by_id(self, job_id: str) -> Job | None:
        row = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return None if row is None else _row_to_job(row)

    @_typed_errors
    async def list_jobs(self, filter: JobFilter, page: PageRequest) -> list[Job]:
        query = self._listing(filter, page, _JOB_COLUMNS)
        return [] if query is None else [_row_to_job(r) for r in self._conn.execute(*query)]

    @_typed_errors
    async def list_rows(self, filter: JobFilter, page: PageRequest) -> list[JobRow]:
        query = self._listing(filter, page, _ROW_COLUMNS)
        return [] if query is None else _job_rows(self._plain().execute(*query))

    @_typed_errors
    async def list_row_keys(self, filter: JobFilter, page: PageRequest) -> PageKeys:
        # As get_row_key: the page's keys read when nothing has committed since are still
        # its keys (a listing's key query is 33 µs for a page of 100, 235 for 1000, warm).
        wal_index = self._wal_index
        if wal_index is None or self._conn.in_transaction:
            return self._page_keys_read(filter, page)
        seen = wal_index.read()
        where = (filter, page)
        if seen == self._keys_seen:
            kept = self._page_keys.get(where)
            if kept is not None:
                return kept
        packed = self._page_keys_read(filter, page)
        if self._kept_from(seen):
            if len(self._page_keys) >= _PAGE_KEYS_KEPT:
                self._page_keys.clear()
            self._page_keys[where] = packed
        return packed

    def _page_keys_read(self, filter: JobFilter, page: PageRequest) -> PageKeys:
        query = self._listing(filter, page, f"{_KEY_COLUMNS} AS k")
        if query is None:
            return ""
        sql, params = query
        # One value for the whole page: the driver steps once instead of once a row (each of
        # its steps lets go of the GIL and takes it again, and makes a tuple: most of what a
        # page of 1000's keys cost, docs/benchmarks.md). The aggregate reads its listing
        # subquery's rows in the subquery's order (a co-routine, SQLite's plan for an ordered,
        # limited subquery; group_concat's own ORDER BY needs SQLite 3.44); test_row_keys.py
        # checks the order against the rows' on every filter and both orders.
        (packed,) = (
            self._plain().execute(f"SELECT group_concat(k, ',') FROM ({sql})", params).fetchone()
        )
        return str(packed) if packed else ""

    @_typed_errors
    async def list_keyed_rows(
        self, filter: JobFilter, page: PageRequest
    ) -> list[tuple[RowKey, JobRow]]:
        query = self._listing(filter, page, f"{_KEY_COLUMNS}, {_ROW_COLUMNS}")
        return [] if query is None else _keyed_rows(self._plain().execute(*query))

    def _plain(self) -> sqlite3.Cursor:
        cursor = self._conn.cursor()
        cursor.row_factory = None
        return cursor

    def _listing(
        self, filter: JobFilter, page: PageRequest, columns: str
    ) -> tuple[str, list[Any]] | None:
        """The listing's SQL and parameters, or ``None`` when nothing can match."""
        candidates: list[int] | None = None
        if filter.name_contains:
            candidates = self._name_candidates(filter.name_contains.lower())
            if candidates == []:
                return None
        # With a short candidate list, fetch those rows by rowid and sort them; the unary "+"
        # keeps the planner from walking a listing index instead (which would visit every job
        # of the account to find a rare name).
        p = "+" if candidates is not None else ""
        where = [f"{p}account_id = ?", f"{p}region = ?"]
        params: list[Any] = [filter.account_id, filter.region]
        if filter.status is not None:
            where.append(f"{p}status = ?")
            params.append(filter.status.value)
        if filter.submitted_after is not None:
            where.append(f"{p}submit_time > ?")
            params.append(to_micros(filter.submitted_after))
        if filter.submitted_before is not None:
            where.append(f"{p}submit_time < ?")
            params.append(to_micros(filter.submitted_before))
        op = "<" if page.descending else ">"
        if page.after is not None:
            where.append(f"({p}submit_time, {p}job_id) {op} (?, ?)")
            params.extend([to_micros(page.after.submit_time), page.after.job_id])
        if filter.name_contains:
            where.append("instr(lower(name), ?) > 0")
            params.append(filter.name_contains.lower())
        if candidates is not None:
            where.append(f"rowid IN ({_placeholders(len(candidates))})")
            params.extend(candidates)
        order = "DESC" if page.descending else "ASC"
        sql = (
            f"SELECT {columns} FROM jobs WHERE {' AND '.join(where)} "
            f"ORDER BY submit_time {order}, job_id {order} LIMIT ?"
        )
        params.append(page.limit)
        return sql, params

    def _name_candidates(self, needle: str) -> list[int] | None:
        """Rowids whose name may contain ``needle``, when the trigram index can narrow the
        search to a few; ``None`` when an ordered scan is the better plan."""
        phrase = '"' + _tripled(needle).replace('"', '""') + '"'
        rows = self._conn.execute(
            "SELECT rowid FROM job_names WHERE job_names MATCH ? LIMIT ?",
            (phrase, _SELECTIVE_CANDIDATES + 1),
        ).fetchall()
        if len(rows) > _SELECTIVE_CANDIDATES:
            return None
        return [r[0] for r in rows]

    @_typed_errors
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
        with _write(self._conn):
            row = self._conn.execute(
                f"SELECT {_JOB_COLUMNS}, lease_owner FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            if fence is not None and row["lease_owner"] != fence:
                raise LeaseLost(job_id)
            change = jobs.decide(
                _row_to_job(row),
                to,
                now=now,
                expected=expected,
                message=message,
                end_time=end_time,
            )
            updated = self._apply(change)
        log_transition(change, updated.account_id)
        return updated

    def _apply(self, change: Transition, *, lease: tuple[str, int] | None = None) -> Job:
        """Write a decided transition inside the caller's write transaction: one
        compare-and-set on the status it was decided from, and its event. ``lease`` (owner,
        expiry in microseconds) hands the job to a worker in the same update."""
        if lease is not None:
            owner_sql, expires_sql, lease_params = "?", "?", [*lease]
        elif change.clear_lease:
            owner_sql, expires_sql, lease_params = "NULL", "NULL", []
        else:
            owner_sql, expires_sql, lease_params = "lease_owner", "lease_expires", []
        updated = self._conn.execute(
            f"UPDATE jobs SET status = ?, last_modified_time = ?, message = ?, end_time = ?, "
            f"lease_owner = {owner_sql}, lease_expires = {expires_sql} "
            f"WHERE job_id = ? AND status = ? RETURNING {_JOB_COLUMNS}",
            (
                change.to_status.value,
                to_micros(change.at),
                change.message,
                None if change.end_time is None else to_micros(change.end_time),
                *lease_params,
                change.job_id,
                change.from_status.value,
            ),
        ).fetchone()
        if updated is None:  # pragma: no cover - impossible inside one write transaction
            raise InvalidTransition(change.job_id, change.from_status, change.to_status)
        self._record(change.event)
        return _row_to_job(updated)

    def _record(self, event: JobEvent) -> None:
        self._conn.execute(
            "INSERT INTO job_events (job_id, from_status, to_status, at, message) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                event.job_id,
                None if event.from_status is None else event.from_status.value,
                event.to_status.value,
                to_micros(event.at),
                event.message,
            ),
        )

    @_typed_errors
    async def events(self, job_id: str) -> list[JobEvent]:
        rows = self._conn.execute(
            "SELECT id, job_id, from_status, to_status, at, message FROM job_events "
            "WHERE job_id = ? ORDER BY id",
            (job_id,),
        ).fetchall()
        return [_row_to_event(r) for r in rows]

    @_typed_errors
    async def events_of(self, job_ids: Collection[str]) -> dict[str, list[JobEvent]]:
        ids = list(job_ids)
        if not ids:
            return {}
        rows = self._conn.execute(
            "SELECT id, job_id, from_status, to_status, at, message FROM job_events "
            f"WHERE job_id IN ({', '.join('?' * len(ids))}) ORDER BY id",
            ids,
        ).fetchall()
        found: dict[str, list[JobEvent]] = {}
        for r in rows:
            event = _row_to_event(r)
            found.setdefault(event.job_id, []).append(event)
        return found

    # --- tags ---------------------------------------------------------------------------

    @_typed_errors
    async def get_tags(self, job_id: str) -> dict[str, str]:
        rows = self._conn.execute(
            "SELECT key, value FROM job_tags WHERE job_id = ? ORDER BY key", (job_id,)
        ).fetchall()
        return {r["key"]: r["value"] for r in rows}

    @_typed_errors
    async def put_tags(self, job_id: str, tags: Mapping[str, str], *, max_tags: int) -> None:
        conn = self._conn
        with _write(conn):
            conn.executemany(
                "INSERT INTO job_tags (job_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (job_id, key) DO UPDATE SET value = excluded.value",
                [(job_id, k, v) for k, v in tags.items()],
            )
            (count,) = conn.execute(
                "SELECT count(*) FROM job_tags WHERE job_id = ?", (job_id,)
            ).fetchone()
            if count > max_tags:
                raise OverflowError(count)

    @_typed_errors
    async def remove_tags(self, job_id: str, keys: Collection[str]) -> None:
        with _write(self._conn):
            self._conn.executemany(
                "DELETE FROM job_tags WHERE job_id = ? AND key = ?", [(job_id, k) for k in keys]
            )

    # --- the engine's side --------------------------------------------------------------

    @_typed_errors
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
        micros = to_micros(now)
        # Submitted jobs younger than submitted_by wait (the oldest job may be one of them,
        # so the filter is in the query rather than a claim-and-release).
        candidate, params = claim_candidate(
            statuses,
            now=micros,
            submitted_by=None if submitted_by is None else to_micros(submitted_by),
            mark="?",
            key="rowid",
        )
        with _write(self._conn):
            row = self._conn.execute(
                f"UPDATE jobs SET lease_owner = ?, lease_expires = ? WHERE rowid = ({candidate}) "
                f"RETURNING {_JOB_COLUMNS}",
                (worker_id, micros + int(lease_seconds * 1_000_000), *params),
            ).fetchone()
        return None if row is None else _row_to_job(row)

    @_typed_errors
    async def renew(
        self, job_id: str, worker_id: str, *, now: datetime, lease_seconds: float
    ) -> bool:
        with _write(self._conn):
            cur = self._conn.execute(
                "UPDATE jobs SET lease_expires = ? WHERE job_id = ? AND lease_owner = ?",
                (to_micros(now) + int(lease_seconds * 1_000_000), job_id, worker_id),
            )
        return cur.rowcount == 1

    @_typed_errors
    async def release(self, job_id: str, worker_id: str) -> None:
        with _write(self._conn):
            self._conn.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires = NULL "
                "WHERE job_id = ? AND lease_owner = ?",
                (job_id, worker_id),
            )

    @_typed_errors
    async def lease(self, job_id: str) -> Lease | None:
        row = self._conn.execute(
            "SELECT lease_owner, lease_expires FROM jobs WHERE job_id = ? "
            "AND lease_owner IS NOT NULL",
            (job_id,),
        ).fetchone()
        return None if row is None else Lease(row[0], from_micros(row[1]))

    @_typed_errors
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
        fenced = "" if fence is None else " AND lease_owner = ?"
        with _write(self._conn):
            cur = self._conn.execute(
                "UPDATE jobs SET total_records = ?, processed_records = ?, success_records = ?, "
                "error_records = ?, input_tokens = ?, output_tokens = ?, throttled_requests = ?, "
                "last_modified_time = ?, checkpoint = coalesce(?, checkpoint) "
                f"WHERE job_id = ?{fenced}",
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

    @_typed_errors
    async def load_checkpoint(self, job_id: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT checkpoint FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        if row is None or row["checkpoint"] is None:
            return None
        data: dict[str, Any] = orjson.loads(row["checkpoint"])
        return data

    @_typed_errors
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
        with _write(self._conn):
            # Counting and moving in one write transaction: two workers cannot both take the
            # last free slot of a model.
            row = self._conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = ? "
                "AND (lease_expires IS NULL OR lease_expires < ?) "
                # The models at their quota, counted once: a count per Scheduled job
                # (correlated) read every InProgress job of the account for each, 35 ms
                # (SQLite) and 110 ms (PostgreSQL) at 1,000 Scheduled and 300 InProgress.
                "AND (account_id, region, model_id) NOT IN ("
                "     SELECT account_id, region, model_id FROM jobs WHERE status = ? "
                "     GROUP BY account_id, region, model_id HAVING count(*) >= ?) "
                "ORDER BY submit_time, job_id LIMIT 1",
                (scheduled, micros, running, max_in_progress),
            ).fetchone()
            if row is None:
                return None
            change = jobs.decide(_row_to_job(row), JobStatus.IN_PROGRESS, now=now)
            started = self._apply(
                change, lease=(worker_id, micros + int(lease_seconds * 1_000_000))
            )
        log_transition(change, started.account_id)
        return started

    @_typed_errors
    async def jobs_in(self, statuses: Collection[JobStatus], *, limit: int) -> list[Job]:
        if not statuses:
            return []
        values = [s.value for s in statuses]
        rows = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status IN ({_placeholders(len(values))}) "
            f"ORDER BY submit_time, job_id LIMIT ?",
            (*values, limit),
        ).fetchall()
        return [_row_to_job(r) for r in rows]

    @_typed_errors
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
            mark="?",
            columns=_JOB_COLUMNS,
        )
        rows = self._conn.execute(sql, params).fetchall()
        return [_row_to_job(r) for r in rows]

    @_typed_errors
    async def first_submitted_after(self, status: JobStatus, after: datetime) -> datetime | None:
        row = self._conn.execute(
            first_submitted_query("?"), (status.value, to_micros(after))
        ).fetchone()
        return None if row is None else from_micros(row[0])

    @_typed_errors
    async def snapshot(self) -> StoreSnapshot:
        # Not on the event loop like the other queries: counting a million jobs reads the
        # whole status index (tens of milliseconds). A connection of its own, since the
        # store's is used by the loop meanwhile.
        return await asyncio.to_thread(_snapshot, self.path)

    # --- the event outbox -------------------------------------------------------------

    @_typed_errors
    async def events_since(self, after: int, *, limit: int) -> list[JobEvent]:
        rows = self._conn.execute(
            "SELECT id, job_id, from_status, to_status, at, message FROM job_events "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [_row_to_event(r) for r in rows]

    @_typed_errors
    async def hold_sink(
        self, sink: str, owner: str, *, now: datetime, lease_seconds: float
    ) -> int | None:
        micros = to_micros(now)
        expires = micros + int(lease_seconds * 1_000_000)
        with _write(self._conn):
            self._conn.execute(
                "INSERT OR IGNORE INTO event_sinks (sink, position) "
                "SELECT ?, coalesce(max(id), 0) FROM job_events",
                (sink,),
            )
            row = self._conn.execute(
                "UPDATE event_sinks SET lease_owner = ?, lease_expires = ? WHERE sink = ? "
                "AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires < ?) "
                "RETURNING position",
                (owner, expires, sink, owner, micros),
            ).fetchone()
        return None if row is None else int(row["position"])

    @_typed_errors
    async def advance_sink(self, sink: str, owner: str, position: int) -> bool:
        with _write(self._conn):
            cur = self._conn.execute(
                "UPDATE event_sinks SET position = ? WHERE sink = ? AND lease_owner = ?",
                (position, sink, owner),
            )
        return cur.rowcount == 1

    @_typed_errors
    async def release_sink(self, sink: str, owner: str) -> None:
        with _write(self._conn):
            self._conn.execute(
                "UPDATE event_sinks SET lease_owner = NULL, lease_expires = NULL "
                "WHERE sink = ? AND lease_owner = ?",
                (sink, owner),
            )

    async def watch(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """SQLite cannot tell other processes' changes: engines poll (``None``)."""
        return None

    async def close(self) -> None:
        # The header's mapping is valid while this connection is open (sqlite_wal_index.py).
        wal_index, self._wal_index = self._wal_index, None
        if wal_index is not None:
            wal_index.close()
        # This connection first, so the checkpointer's is the process's last on the file and
        # SQLite's checkpoint at close runs on its thread, not the loop's.
        self._conn.close()
        await asyncio.to_thread(self.checkpointer.stop)


#: Jobs whose records are still to be processed (NumberOfRecordsPendingProcessing).
_PENDING = (JobStatus.SCHEDULED, JobStatus.IN_PROGRESS)


def _snapshot(path: Path) -> StoreSnapshot:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        # A scan of the covering index jobs_claim (status first): no table rows are read.
        by_status = {
            JobStatus(status): count
            for status, count in conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        }
        # Only unfinished jobs (bounded by the quotas), found through the same index.
        rows = conn.execute(
            "SELECT model_id, "
            "  SUM(status = ?), "
            "  SUM(MAX(total_records - processed_records, 0)), "
            "  SUM(CASE WHEN processed_records > 0 "
            "      THEN MAX(total_records - processed_records, 0) * input_tokens "
            "           / processed_records ELSE 0 END) "
            f"FROM jobs WHERE status IN ({_placeholders(len(_PENDING))}) GROUP BY model_id",
            (JobStatus.SCHEDULED.value, *(s.value for s in _PENDING)),
        ).fetchall()
    finally:
        conn.close()
    by_model = {
        model_id: ModelWork(scheduled, pending, tokens)
        for model_id, scheduled, pending, tokens in rows
    }
    return StoreSnapshot(jobs_by_status=by_status, by_model=by_model)


def _prepare(conn: sqlite3.Connection) -> None:
    """WAL mode, the schema and its migrations: what opening does before serving."""
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL is durable across process crashes in WAL mode (only an OS crash may lose the
    # last transactions), at a fraction of FULL's fsync cost.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    schema = resources.files("batchrock.store").joinpath("sqlite_schema.sql").read_text()
    conn.executescript(schema)  # creates what is missing; safe to run in several processes
    from batchrock.store.sqlite_files import SCHEMA as FILES_SCHEMA

    conn.executescript(FILES_SCHEMA)
    from batchrock.store.sqlite_sessions import SCHEMA as SESSIONS_SCHEMA

    conn.executescript(SESSIONS_SCHEMA)
    # The version is read and moved on in one write transaction: processes opening an
    # old database at the same moment migrate it once, one after the other.
    with _write(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            _migrate(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        _ensure_version_trigger(conn)
        _ensure_listing_indexes(conn)


def _retry_while_locked(step: Callable[[], None], timeout: float) -> None:
    """Run ``step`` again while another process holds a lock it needs, for ``timeout`` in all.

    Why: switching to WAL (and reading the schema while another process is in the middle of
    that switch, or of WAL recovery) can answer "database is locked" at once, without waiting
    on the busy handler, so processes that open one new file together (``api_processes``,
    workers on one data dir) would fail at start. Opening runs once, before serving: the
    short blocking sleeps hold no request."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if "locked" not in message and "busy" not in message:
                raise
            if time.monotonic() >= deadline:
                raise
            log.debug("database busy while opening (%s); trying again", message)
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taken up front so concurrent writers queue instead of failing
    half-way (``BEGIN IMMEDIATE``)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")
