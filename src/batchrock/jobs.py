"""The one domain model of a model invocation job, its statuses and allowed transitions.

Everything that changes a job's status is decided here, by :func:`decide` (from
:data:`TRANSITIONS`): given the job, the target status and the time, it returns the
:class:`Transition` (every field the move changes, and the event to record) or raises
:class:`InvalidTransition`. Stores only apply that result, as a compare-and-set
(``UPDATE ... WHERE status = <the status decided from>``), so two processes can never move
one job along two paths and no store can drift from the lifecycle. New jobs start in
:data:`INITIAL` (:func:`creation`).

    Submitted -> Validating -> Scheduled -> InProgress -> Completed
                     |             |            |------> PartiallyCompleted (timeout)
                     |             |            '------> Failed
                     |             '-> Expired (not started before jobExpirationTime)
                     '-> Failed (bad input, quota)
    any unfinished status -> Stopping -> Stopped
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import secrets
import string
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


class JobStatus(enum.StrEnum):
    """The ten statuses of ``ModelInvocationJobStatus``, with Bedrock's spelling."""

    SUBMITTED = "Submitted"
    VALIDATING = "Validating"
    SCHEDULED = "Scheduled"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    PARTIALLY_COMPLETED = "PartiallyCompleted"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    EXPIRED = "Expired"


S = JobStatus

#: Final statuses: nothing moves a job out of these.
TERMINAL: frozenset[JobStatus] = frozenset(
    {S.COMPLETED, S.PARTIALLY_COMPLETED, S.FAILED, S.STOPPED, S.EXPIRED}
)
#: Statuses a user may stop from.
STOPPABLE: frozenset[JobStatus] = frozenset({S.SUBMITTED, S.VALIDATING, S.SCHEDULED, S.IN_PROGRESS})
#: Statuses the engine still has work to do in.
ACTIVE: frozenset[JobStatus] = frozenset(set(JobStatus) - TERMINAL)

#: Allowed moves, from -> {to}. The single source of truth for the lifecycle.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.SUBMITTED: frozenset({S.VALIDATING, S.STOPPING, S.STOPPED, S.FAILED, S.EXPIRED}),
    S.VALIDATING: frozenset({S.SCHEDULED, S.FAILED, S.STOPPING, S.STOPPED, S.EXPIRED}),
    S.SCHEDULED: frozenset({S.IN_PROGRESS, S.EXPIRED, S.STOPPING, S.STOPPED, S.FAILED}),
    S.IN_PROGRESS: frozenset({S.COMPLETED, S.PARTIALLY_COMPLETED, S.FAILED, S.STOPPING}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.PARTIALLY_COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.STOPPED: frozenset(),
    S.EXPIRED: frozenset(),
}


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """Every status from which ``target`` may be reached."""
    return frozenset(src for src, dests in TRANSITIONS.items() if target in dests)


#: The status every job is created in.
INITIAL = S.SUBMITTED


def path_to(target: JobStatus) -> tuple[JobStatus, ...]:
    """The shortest series of moves from :data:`INITIAL` to ``target`` (empty for INITIAL
    itself): how tests and benchmarks bring a job to a status through the lifecycle."""
    previous: dict[JobStatus, JobStatus | None] = {INITIAL: None}
    queue = collections.deque([INITIAL])
    while queue:
        status = queue.popleft()
        for nxt in sorted(TRANSITIONS[status]):
            if nxt not in previous:
                previous[nxt] = status
                queue.append(nxt)
    if target not in previous:
        raise ValueError(f"{target} cannot be reached from {INITIAL}")
    path: list[JobStatus] = []
    at: JobStatus | None = target
    while at is not None and at is not INITIAL:
        path.append(at)
        at = previous[at]
    return tuple(reversed(path))


class InvalidTransition(Exception):
    """A move the lifecycle does not allow (or that lost a race to another writer).
    ``current`` is ``None`` for a job created in a status other than :data:`INITIAL`."""

    def __init__(self, job_id: str, current: JobStatus | None, target: JobStatus) -> None:
        if current is None:
            text = f"job {job_id}: cannot be created {target} (new jobs are {INITIAL})"
        else:
            text = f"job {job_id}: cannot move from {current} to {target}"
        super().__init__(text)
        self.job_id = job_id
        self.current = current
        self.target = target


#: The invocation type of a job submitted through the OpenAI-compatible Batch API is this
#: prefix and its lines' endpoint, e.g. ``openai:/v1/chat/completions``.
OPENAI_BATCH_PREFIX = "openai:"

_ID_ALPHABET = string.ascii_lowercase + string.digits
JOB_ID_LENGTH = 12
DEFAULT_TIMEOUT_HOURS = 24
#: The shortest timeout a job has (``timeoutDurationInHours`` is 24-168 on the wire, and an
#: OpenAI batch's window is 24 h): no job expires sooner after its submission, which the
#: engine's expiry sweep relies on (it reads only jobs submitted at least this long ago).
MIN_TIMEOUT_HOURS = 24


def new_job_id() -> str:
    """12 lowercase alphanumerics, as Bedrock's ``model-invocation-job/[a-z0-9]{12}``."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(JOB_ID_LENGTH))


@dataclass(frozen=True, slots=True)
class Counters:
    """Record and token counts. Record counts are what Get/List return; tokens feed the manifest."""

    total: int = 0
    processed: int = 0
    success: int = 0
    error: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    #: Model requests answered "throttled" (429), retried ones included: the manifest's
    #: ``throttledRequestCount``.
    throttled: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A model invocation job, in domain terms (no wire names, no ARNs).

    Optional members keep ``None`` for "not given" apart from empty values, so that a value
    the user set is returned even when it is zero or empty.
    """

    #: 12 lowercase alphanumerics; the last segment of the ARN.
    job_id: str
    #: The owning account (12 digits) and region: jobs are regional and per account.
    account_id: str
    region: str
    name: str
    model_id: str
    role_arn: str
    #: Idempotency token; unique per account.
    client_request_token: str | None = None
    status: JobStatus = JobStatus.SUBMITTED
    #: Why the job failed (or other user-facing status detail).
    message: str | None = None
    submit_time: datetime
    last_modified_time: datetime
    end_time: datetime | None = None
    input_s3_uri: str
    #: Always ``JSONL`` when stored; ``None`` only if a future format is left out.
    input_format: str | None = "JSONL"
    input_bucket_owner: str | None = None
    output_s3_uri: str
    output_kms_key_id: str | None = None
    output_bucket_owner: str | None = None
    #: VPC config as given: both lists are required when it is present at all.
    vpc_subnet_ids: tuple[str, ...] | None = None
    vpc_security_group_ids: tuple[str, ...] | None = None
    timeout_hours: int = DEFAULT_TIMEOUT_HOURS
    #: submit_time + timeout_hours.
    expiration_time: datetime
    #: ``InvokeModel`` or ``Converse``.
    invocation_type: str = "InvokeModel"
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        for name in ("submit_time", "last_modified_time", "end_time", "expiration_time"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def is_openai_batch(self) -> bool:
        """Submitted through the OpenAI-compatible Batch API (docs/openai.md): its records
        are request bodies of the endpoint its invocation type names, and it has no minimum
        number of records."""
        return self.invocation_type.startswith(OPENAI_BATCH_PREFIX)

    def evolve(self, **changes: Any) -> Job:
        return dataclasses.replace(self, **changes)


def expiration_for(submit_time: datetime, timeout_hours: int) -> datetime:
    return submit_time + timedelta(hours=timeout_hours)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One recorded status change."""

    job_id: str
    from_status: JobStatus | None
    to_status: JobStatus
    at: datetime
    message: str | None = None
    #: The store's order of recording, increasing across all jobs (0 until recorded):
    #: with a frozen clock, event times are all equal; this order is not.
    seq: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """One allowed move, decided by :func:`decide`: what a store writes, in one
    compare-and-set guarded by ``from_status``, together with ``event``."""

    job_id: str
    #: The status the move was decided from: the store's guard (``WHERE status = ...``).
    from_status: JobStatus
    to_status: JobStatus
    #: The job's new ``last_modified_time`` (the event's time too).
    at: datetime
    #: The job's ``message`` and ``end_time`` after the move (kept, set or defaulted).
    message: str | None
    end_time: datetime | None
    #: A final job keeps no lease: the store clears owner and expiry.
    clear_lease: bool
    event: JobEvent

    def applied_to(self, job: Job) -> Job:
        """``job`` as the move leaves it (what the store's row becomes)."""
        return job.evolve(
            status=self.to_status,
            last_modified_time=self.at,
            message=self.message,
            end_time=self.end_time,
        )


def decide(
    job: Job,
    target: JobStatus,
    *,
    now: datetime,
    expected: Collection[JobStatus] | None = None,
    message: str | None = None,
    end_time: datetime | None = None,
) -> Transition:
    """The whole lifecycle rule for moving ``job`` to ``target`` at ``now``: allowed by
    :data:`TRANSITIONS` from the job's status (and that status in ``expected``, when given),
    else :class:`InvalidTransition`. A given ``message`` replaces the job's; a move to a
    final status sets ``end_time`` (``now`` unless given) and clears the lease. Pure: no
    store, no clock."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    current = job.status
    if target not in TRANSITIONS[current] or (expected is not None and current not in expected):
        raise InvalidTransition(job.job_id, current, target)
    final = target in TERMINAL
    if final and end_time is None:
        end_time = now
    return Transition(
        job_id=job.job_id,
        from_status=current,
        to_status=target,
        at=now,
        message=job.message if message is None else message,
        end_time=job.end_time if end_time is None else end_time,
        clear_lease=final,
        event=JobEvent(job.job_id, current, target, now, message),
    )


def creation(job: Job) -> JobEvent:
    """The event recording a new job; :class:`InvalidTransition` unless the job is in
    :data:`INITIAL` (a store's ``create`` accepts nothing else)."""
    if job.status is not INITIAL:
        raise InvalidTransition(job.job_id, None, job.status)
    return JobEvent(job.job_id, None, job.status, job.submit_time)
