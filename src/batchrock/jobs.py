"""The one domain model of a model invocation job, its statuses and allowed transitions.

Everything that changes a job's status goes through :data:`TRANSITIONS`; stores apply a
transition as a guarded update (``... WHERE status IN (allowed sources)``), so two processes
can never move one job along two paths.

    Submitted -> Validating -> Scheduled -> InProgress -> Completed
                     |             |            |------> PartiallyCompleted (timeout)
                     |             |            '------> Failed
                     |             '-> Expired (not started before jobExpirationTime)
                     '-> Failed (bad input, quota)
    any unfinished status -> Stopping -> Stopped
"""

from __future__ import annotations

import dataclasses
import enum
import secrets
import string
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


class InvalidTransition(Exception):
    """A move the lifecycle does not allow (or that lost a race to another writer)."""

    def __init__(self, job_id: str, current: JobStatus, target: JobStatus) -> None:
        super().__init__(f"job {job_id}: cannot move from {current} to {target}")
        self.job_id = job_id
        self.current = current
        self.target = target


_ID_ALPHABET = string.ascii_lowercase + string.digits
JOB_ID_LENGTH = 12
DEFAULT_TIMEOUT_HOURS = 24


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
