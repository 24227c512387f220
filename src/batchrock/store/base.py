"""The job store interface, in domain terms.

Every implementation (SQLite, PostgreSQL) passes the one contract suite in
``tests/contract``. Rules that are not about persistence (validation, idempotency policy,
which statuses may be stopped) live in :mod:`batchrock.service`; the lifecycle (which move is
allowed, what it changes, which event it records) is :func:`batchrock.jobs.decide`. The store
only guarantees atomicity: it applies a decided :class:`~batchrock.jobs.Transition` as one
compare-and-set on the status it was decided from, together with its event; unique
idempotency tokens; exclusive claims.

Failures are typed (:class:`StoreError` and its subclasses), whatever the database: the API
turns :class:`StoreBusy` into ``ThrottlingException``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from batchrock.clock import to_micros
from batchrock.jobs import Counters, Job, JobEvent, JobStatus
from batchrock.store.files import FileStore
from batchrock.store.sessions import SessionStore


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFilter:
    """Which jobs a listing shows. Jobs are regional and per account."""

    account_id: str
    region: str
    status: JobStatus | None = None
    #: Case-insensitive substring of the job name.
    name_contains: str | None = None
    #: Exclusive bounds on submit_time.
    submitted_after: datetime | None = None
    submitted_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Keyset position: the (submit_time, job_id) of the last job on the previous page."""

    submit_time: datetime
    job_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PageRequest:
    limit: int
    descending: bool = True
    after: Cursor | None = None


class JobRow(NamedTuple):
    """One job as a read-only view, for the paths that only present jobs (Get, listings).

    The members are :class:`~batchrock.jobs.Job`'s, flat, with the status as its value and
    times as integer microseconds since the Unix epoch (:func:`batchrock.clock.to_micros`):
    a store builds it straight from a database row, with no object per column, which is most
    of what a page of 1000 jobs used to cost. Every decision is still made on a ``Job``
    (:meth:`JobStore.get`); this is a projection of the same record, not a second model.
    """

    job_id: str
    account_id: str
    region: str
    name: str
    model_id: str
    role_arn: str
    client_request_token: str | None
    status: str
    message: str | None
    submit_time: int
    last_modified_time: int
    end_time: int | None
    expiration_time: int
    timeout_hours: int
    invocation_type: str
    input_s3_uri: str
    input_format: str | None
    input_bucket_owner: str | None
    output_s3_uri: str
    output_kms_key_id: str | None
    output_bucket_owner: str | None
    #: ``(subnet ids, security group ids)`` as given, or ``None`` when unset.
    vpc: tuple[tuple[str, ...], tuple[str, ...]] | None
    total_records: int
    processed_records: int
    success_records: int
    error_records: int


#: A row's key: ``"job_id:row_version"`` (:func:`row_key`), the version a counter that each
#: store's trigger moves on whenever an update changes a member of the row's :class:`JobRow`
#: view, whoever writes (SQLite: on every update of such a column; PostgreSQL: when one's value
#: changes). Equal keys mean equal views, so a view's encoded bytes can be kept under its key
#: (api/summaries.py). Job ids are never reused. One string, not a ``(job_id, version)`` pair:
#: a store reads a listing's keys as one value (:data:`PageKeys`), and a string is what a
#: dict looks up fastest. The submit time (the listing's order, and a page's cursor) was a
#: member until schema version 4; the cache keeps it beside the bytes instead.
RowKey = str
#: The :data:`RowKey` of each row of a listing, in its order, joined by ``","`` (``""`` for
#: none): what :meth:`JobStore.list_row_keys` reads as one value, so a page of 1000 costs one
#: step of the database driver, not 1000 (docs/benchmarks.md). Job ids are ``[a-z0-9]{12}``
#: (:func:`batchrock.jobs.new_job_id`): no key holds a ``","``.
PageKeys = str


def row_key(job_id: str, version: int) -> RowKey:
    """The :data:`RowKey` of version ``version`` of job ``job_id``'s row (as the stores'
    ``job_id || ':' || row_version`` makes it)."""
    return f"{job_id}:{version}"


def key_job_id(key: RowKey) -> str:
    """The job id of a :data:`RowKey`."""
    return key.rpartition(":")[0]


def job_row(job: Job) -> JobRow:
    """``job`` as a :class:`JobRow` (for a store without a leaner way to read one)."""
    vpc = None
    if job.vpc_subnet_ids is not None or job.vpc_security_group_ids is not None:
        vpc = (job.vpc_subnet_ids or (), job.vpc_security_group_ids or ())
    c = job.counters
    return JobRow(
        job.job_id,
        job.account_id,
        job.region,
        job.name,
        job.model_id,
        job.role_arn,
        job.client_request_token,
        job.status.value,
        job.message,
        to_micros(job.submit_time),
        to_micros(job.last_modified_time),
        None if job.end_time is None else to_micros(job.end_time),
        to_micros(job.expiration_time),
        job.timeout_hours,
        job.invocation_type,
        job.input_s3_uri,
        job.input_format,
        job.input_bucket_owner,
        job.output_s3_uri,
        job.output_kms_key_id,
        job.output_bucket_owner,
        vpc,
        c.total,
        c.processed,
        c.success,
        c.error,
    )


@dataclass(frozen=True, slots=True)
class ModelWork:
    """Unfinished work of one model's jobs, as the store holds it now."""

    scheduled_jobs: int = 0
    #: Records of Scheduled and running jobs not yet processed.
    records_pending: int = 0
    #: Input tokens those records are estimated to hold (each running job's tokens per
    #: processed record so far, times its records left; 0 for a job with none processed).
    tokens_pending: int = 0


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """Every account's jobs counted (the metrics' gauges): :meth:`JobStore.snapshot`."""

    jobs_by_status: dict[JobStatus, int] = field(default_factory=dict)
    by_model: dict[str, ModelWork] = field(default_factory=dict)


class StoreError(Exception):
    """A store could not do what was asked (the database's own error is the cause)."""


class JobNotFound(StoreError, LookupError):
    """No job has this id."""


class StoreConflict(StoreError):
    """The write collides with data already stored (a job id that exists)."""


class LeaseLost(StoreError):
    """A fenced write (``fence=``: the lease owner the writer claimed the job as) found the
    job's lease held by another claim, or by none: another worker has taken the job over, or
    it has ended. Nothing was written."""


class StoreBusy(StoreError):
    """The database stayed locked or unavailable for longer than the store waits: nothing was
    changed, and the same call may succeed later."""


@dataclass(frozen=True, slots=True)
class Lease:
    """Which worker holds a job, until when."""

    owner: str
    expires: datetime


class UnfinishedJobsQuota(Exception):
    """:meth:`JobStore.create` found ``limit`` unfinished jobs for the new job's account,
    region and model already."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} unfinished jobs")
        self.limit = limit


class JobStore(Protocol):
    """Persistence of jobs, their tags and their status history."""

    @property
    def files(self) -> FileStore:
        """Uploaded files and the jobs made from them: a small seam of its own
        (store/files.py)."""
        ...

    @property
    def sessions(self) -> SessionStore:
        """The web console's sessions, shared by every API process (store/sessions.py)."""
        ...

    async def create(
        self, job: Job, tags: Mapping[str, str], *, max_unfinished: int | None = None
    ) -> tuple[Job, bool]:
        """Insert ``job`` and record its creation event (:func:`batchrock.jobs.creation`:
        raises :class:`~batchrock.jobs.InvalidTransition` unless the job is in the initial
        status); if its account already has a job with the same ``client_request_token``,
        insert nothing and return that job with ``False``. A job id that exists raises
        :class:`StoreConflict`.

        With ``max_unfinished``, raise :class:`UnfinishedJobsQuota` (and insert nothing) when
        the account already has that many jobs of the same region and model in a status that
        is not final. The count and the insert are one transaction, so processes creating at
        the same moment cannot overshoot."""
        ...

    async def get(self, account_id: str, region: str, job_id: str) -> Job | None:
        """The job as its owner sees it, or ``None`` (other accounts/regions see nothing)."""
        ...

    async def get_many(
        self, account_id: str, region: str, job_ids: Collection[str]
    ) -> dict[str, Job]:
        """The jobs of ``job_ids`` the owner sees, by id, in one query (a listing's page);
        unknown ids and other owners' jobs are absent."""
        ...

    async def get_by_id(self, job_id: str) -> Job | None:
        """The job regardless of owner (for the engine)."""
        ...

    async def list_jobs(self, filter: JobFilter, page: PageRequest) -> list[Job]:
        """Up to ``page.limit`` jobs matching ``filter``, ordered by (submit_time, job_id),
        strictly after ``page.after`` in that order."""
        ...

    async def list_rows(self, filter: JobFilter, page: PageRequest) -> list[JobRow]:
        """What :meth:`list_jobs` finds, as :class:`JobRow` views (the API's listings)."""
        ...

    async def get_row(self, account_id: str, region: str, job_id: str) -> JobRow | None:
        """What :meth:`get` finds, as a :class:`JobRow` view (GetModelInvocationJob)."""
        ...

    async def list_row_keys(self, filter: JobFilter, page: PageRequest) -> PageKeys:
        """The :data:`RowKey` of each row :meth:`list_rows` finds, in the same order, as one
        :data:`PageKeys` string: the listing's first, cheap read (the API answers from the
        bytes it kept for each key, and reads :meth:`list_keyed_rows` only when one is
        missing)."""
        ...

    async def list_keyed_rows(
        self, filter: JobFilter, page: PageRequest
    ) -> list[tuple[RowKey, JobRow]]:
        """What :meth:`list_rows` finds, each row with its key (read together)."""
        ...

    async def get_row_key(self, account_id: str, region: str, job_id: str) -> RowKey | None:
        """The :data:`RowKey` of the row :meth:`get_row` finds, or ``None``."""
        ...

    async def get_keyed_row(
        self, account_id: str, region: str, job_id: str
    ) -> tuple[RowKey, JobRow] | None:
        """What :meth:`get_row` finds, with its key (read together), or ``None``."""
        ...

    async def get_keyed_rows(
        self, account_id: str, region: str, job_ids: Collection[str]
    ) -> list[tuple[RowKey, JobRow]]:
        """:meth:`get_keyed_row` of each of ``job_ids`` (at most a page's, 1000) in one read,
        in no particular order; jobs not found are left out."""
        ...

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
        """Apply :func:`batchrock.jobs.decide` (job as stored, ``to``, ``now``, ``expected``,
        ``message``, ``end_time``) as one compare-and-set on the status decided from, and
        record its event. Raises :class:`batchrock.jobs.InvalidTransition` when the lifecycle
        refuses the move or another writer moved the job first (nothing changes), and
        :class:`JobNotFound` for an unknown job.

        ``fence`` (an engine's moves): the lease owner the caller claimed the job as; the
        move is made only while the job's lease is still that claim's, in the same
        compare-and-set, else :class:`LeaseLost` (nothing changes)."""
        ...

    async def events(self, job_id: str) -> list[JobEvent]:
        """The job's status history, oldest first (creation included); each event's ``seq``
        increases across all jobs in the order the store recorded them."""
        ...

    async def events_of(self, job_ids: Collection[str]) -> dict[str, list[JobEvent]]:
        """:meth:`events` of each job of ``job_ids`` in one query, by id (a job with no
        events, or unknown: absent). The caller has checked who owns them."""
        ...

    async def get_tags(self, job_id: str) -> dict[str, str]: ...

    async def put_tags(self, job_id: str, tags: Mapping[str, str], *, max_tags: int) -> None:
        """Add or overwrite tags. Raises ``OverflowError`` if the job would hold more than
        ``max_tags`` tags (and changes nothing)."""
        ...

    async def remove_tags(self, job_id: str, keys: Collection[str]) -> None: ...

    # --- the engine's side -------------------------------------------------------------

    async def claim(
        self,
        worker_id: str,
        statuses: Collection[JobStatus],
        *,
        now: datetime,
        lease_seconds: float,
        submitted_by: datetime | None = None,
    ) -> Job | None:
        """Atomically take the oldest job in ``statuses`` that no live worker holds (no lease,
        or an expired one) and lease it to ``worker_id``. ``None`` when there is none.

        ``worker_id`` is also the claim's fencing token (``fence=`` of the writes above): an
        engine names each claim differently, so a claim that was taken over cannot write.

        With ``submitted_by``, a Submitted job is taken only if it was submitted at or before
        that time (jobs in the other statuses regardless): new jobs stay Submitted a while."""
        ...

    async def renew(
        self, job_id: str, worker_id: str, *, now: datetime, lease_seconds: float
    ) -> bool:
        """Extend the lease; ``False`` if ``worker_id`` no longer holds it."""
        ...

    async def release(self, job_id: str, worker_id: str) -> None:
        """Give up the lease (no-op if not held)."""
        ...

    async def lease(self, job_id: str) -> Lease | None:
        """Who holds the job's lease now (expired or not), ``None`` if no one does."""
        ...

    async def save_progress(
        self,
        job_id: str,
        *,
        counters: Counters,
        now: datetime,
        checkpoint: Mapping[str, Any] | None = None,
        fence: str | None = None,
    ) -> None:
        """Store the counters (and the engine's resume checkpoint, a JSON-able mapping).
        ``fence``: only while the job's lease is still held as that owner (one conditional
        update), else :class:`LeaseLost` and nothing is written."""
        ...

    async def load_checkpoint(self, job_id: str) -> dict[str, Any] | None: ...

    async def start_next(
        self,
        worker_id: str,
        *,
        now: datetime,
        lease_seconds: float,
        max_in_progress: int,
    ) -> Job | None:
        """Atomically move the oldest Scheduled job that no live worker holds, and whose
        (account, region, model) has fewer than ``max_in_progress`` jobs InProgress, to
        InProgress as :func:`batchrock.jobs.decide` says (recording the event; its
        :class:`~batchrock.jobs.InvalidTransition` if the lifecycle refuses the move) and
        lease it to ``worker_id``. ``None`` when no Scheduled job may start now. Engines
        starting at the same moment never put more than ``max_in_progress`` jobs of a model
        InProgress."""
        ...

    async def jobs_in(self, statuses: Collection[JobStatus], *, limit: int) -> list[Job]:
        """Up to ``limit`` jobs in ``statuses``, of any owner, oldest first (engine sweeps)."""
        ...

    async def overdue(
        self,
        statuses: Collection[JobStatus],
        *,
        submitted_by: datetime,
        by: datetime,
        scale: float,
        limit: int,
    ) -> list[Job]:
        """Up to ``limit`` jobs in ``statuses`` (of any owner, in no set order) submitted at
        or before ``submitted_by`` whose deadline, ``submit_time + (expiration_time -
        submit_time) * scale``, is at or before ``by`` (the engine's expiry sweep). Read from
        the index jobs_claim, each status's range up to ``submitted_by``, never from the
        younger jobs. The deadline is computed in floating point (to within a microsecond):
        a caller that needs it exact asks with a little to spare and checks each job."""
        ...

    async def first_submitted_after(self, status: JobStatus, after: datetime) -> datetime | None:
        """The submit time of the oldest job in ``status`` submitted after ``after``, if any
        (one row of the index jobs_claim: when the engine's next dwell ends)."""
        ...

    async def snapshot(self) -> StoreSnapshot:
        """Jobs by status and the unfinished work per model, of every account. Runs off the
        event loop: at a million jobs the count reads the whole status index."""
        ...

    # --- the event outbox (docs/events.md) -----------------------------------------------

    async def events_since(self, after: int, *, limit: int) -> list[JobEvent]:
        """Up to ``limit`` recorded status changes (creations included) of every job with
        ``seq > after``, in ``seq`` order. ``seq`` is global and follows commit order: once a
        call has returned ``seq`` N, no event committed later gets a ``seq`` <= N (a sink
        that has delivered up to N never skips one)."""
        ...

    async def hold_sink(
        self, sink: str, owner: str, *, now: datetime, lease_seconds: float
    ) -> int | None:
        """Take, or renew, ``owner``'s lease on the delivery cursor of ``sink`` and return
        the cursor (the ``seq`` delivered up to); ``None`` while another owner holds an
        unexpired lease. A sink seen for the first time starts after the newest event."""
        ...

    async def advance_sink(self, sink: str, owner: str, position: int) -> bool:
        """Move ``sink``'s cursor to ``position`` if ``owner`` still holds its lease (an
        expired lease nobody took over still counts); ``False`` if another owner has it."""
        ...

    async def release_sink(self, sink: str, owner: str) -> None:
        """Give up ``owner``'s lease on ``sink`` (no-op if not held), keeping the cursor."""
        ...

    async def watch(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Have ``wake`` called (on the running event loop) whenever any process may have made
        work for an engine: a job created, a status changed, a lease released. Returns the
        function that stops it, or ``None`` when the store cannot tell (SQLite: engines then
        poll every ``engine_poll_seconds``)."""
        ...

    async def close(self) -> None: ...
