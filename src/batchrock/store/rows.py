"""What the stores share: a job as a row of their ``jobs`` table (the same columns in SQLite
and PostgreSQL), the query that finds the job a claim takes, and the log line of a status
change."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import orjson

from batchrock.clock import from_micros, to_micros
from batchrock.jobs import Counters, Job, JobStatus, Transition
from batchrock.store.base import JobRow

log = logging.getLogger("batchrock.store")

JOB_COLUMNS = (
    "job_id, account_id, region, name, model_id, role_arn, client_request_token, status, "
    "message, submit_time, last_modified_time, end_time, expiration_time, timeout_hours, "
    "invocation_type, input_s3_uri, input_format, input_bucket_owner, output_s3_uri, "
    "output_kms_key_id, output_bucket_owner, vpc_config, total_records, processed_records, "
    "success_records, error_records, input_tokens, output_tokens, throttled_requests"
)
N_COLUMNS = len(JOB_COLUMNS.split(","))

Row = Sequence[Any]


def _opt_time(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


def row_to_job(r: Row) -> Job:
    """A job from a row of :data:`JOB_COLUMNS`, in that order (a tuple or a sqlite3.Row)."""
    vpc = r[21]
    if isinstance(vpc, str | bytes):  # SQLite keeps the JSON as text, jsonb arrives parsed
        vpc = orjson.loads(vpc)
    return Job(
        job_id=r[0],
        account_id=r[1],
        region=r[2],
        name=r[3],
        model_id=r[4],
        role_arn=r[5],
        client_request_token=r[6],
        status=JobStatus(r[7]),
        message=r[8],
        submit_time=from_micros(r[9]),
        last_modified_time=from_micros(r[10]),
        end_time=_opt_time(r[11]),
        expiration_time=from_micros(r[12]),
        timeout_hours=r[13],
        invocation_type=r[14],
        input_s3_uri=r[15],
        input_format=r[16],
        input_bucket_owner=r[17],
        output_s3_uri=r[18],
        output_kms_key_id=r[19],
        output_bucket_owner=r[20],
        vpc_subnet_ids=tuple(vpc["subnetIds"]) if vpc is not None else None,
        vpc_security_group_ids=tuple(vpc["securityGroupIds"]) if vpc is not None else None,
        counters=Counters(
            total=r[22],
            processed=r[23],
            success=r[24],
            error=r[25],
            input_tokens=r[26],
            output_tokens=r[27],
            throttled=r[28],
        ),
    )


_VIEW_MEMBERS = len(JobRow._fields)  # JOB_COLUMNS begins with the view's, in its order
_VPC = JobRow._fields.index("vpc")


def row_to_view(r: Row) -> JobRow:
    """The :class:`JobRow` view of a row of :data:`JOB_COLUMNS`, straight from the database's
    tuple: no ``Job``, ``datetime`` or ``JobStatus`` per row (the listings' read path)."""
    row = JobRow._make(r[:_VIEW_MEMBERS])
    vpc = r[_VPC]
    if vpc is None:
        return row
    if isinstance(vpc, str | bytes):  # SQLite keeps the JSON as text, jsonb arrives parsed
        vpc = orjson.loads(vpc)
    return row._replace(vpc=(tuple(vpc["subnetIds"]), tuple(vpc["securityGroupIds"])))


def job_params(job: Job) -> tuple[Any, ...]:
    """The values of :data:`JOB_COLUMNS` for ``job``, in that order (VPC config as JSON text)."""
    vpc = None
    if job.vpc_subnet_ids is not None or job.vpc_security_group_ids is not None:
        vpc = orjson.dumps(
            {
                "subnetIds": list(job.vpc_subnet_ids or ()),
                "securityGroupIds": list(job.vpc_security_group_ids or ()),
            }
        ).decode()
    c = job.counters
    return (
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
        c.input_tokens,
        c.output_tokens,
        c.throttled,
    )


def log_transition(change: Transition, account_id: str) -> None:
    """One structured line per applied transition, every store's (docs/events.md, "Logs")."""
    message = change.event.message
    log.info(
        "job %s: %s -> %s%s",
        change.job_id,
        change.from_status.value,
        change.to_status.value,
        f" ({message})" if message else "",
        extra={
            "action": "job_transition",
            "job_id": change.job_id,
            "account_id": account_id,
            "from_status": change.from_status.value,
            "to_status": change.to_status.value,
        },
    )


def claim_candidate(
    statuses: Collection[JobStatus],
    *,
    now: int,
    submitted_by: int | None,
    mark: str,
    key: str,
    lock: str = "",
) -> tuple[str, list[Any]]:
    """The query for the job a claim takes (store/base.py ``claim``), and its parameters: the
    ``key`` column (SQLite's rowid, PostgreSQL's job_id) of the oldest job by (submit_time,
    job_id) in ``statuses`` whose lease is free or expired at ``now``, Submitted ones only if
    submitted by ``submitted_by`` (microseconds). ``mark``: the driver's placeholder;
    ``lock``: what each status's pick ends with (PostgreSQL's ``FOR UPDATE SKIP LOCKED``).

    Why one pick per status, merged: ``status IN (...) ... ORDER BY submit_time`` reads every
    job of those statuses. The index jobs_claim (status, submit_time, job_id) is ordered
    within one status only (PostgreSQL sorts them all: 5 ms at 10,000 Submitted jobs), and
    the dwell as ``status != 'Submitted' OR submit_time <= ?`` is a test of each row, not a
    range of the index (SQLite walked all the young Submitted jobs to find none). Each pick
    here is a range of the index, read from its start, and stops at its first free job;
    the oldest of the few picks is the oldest of all (docs/benchmarks.md, "The engine's
    claims"). With ``lock``, each status's pick is locked (its own subquery: PostgreSQL
    refuses FOR UPDATE on a UNION), so a concurrent claim skips a job this one looked at and
    did not take, until this claim's statement ends: it takes the next one instead, as it
    would skip a job another claim holds."""
    picks: list[str] = []
    params: list[Any] = []
    for status in sorted(statuses, key=lambda s: s.value):
        params += [status.value, now]
        dwell = ""
        if submitted_by is not None and status is JobStatus.SUBMITTED:
            dwell = f" AND submit_time <= {mark}"
            params.append(submitted_by)
        picks.append(
            f"SELECT {key} AS claim_key, submit_time, job_id FROM jobs WHERE status = {mark} "
            f"AND (lease_expires IS NULL OR lease_expires < {mark}){dwell} "
            f"ORDER BY submit_time, job_id LIMIT 1{lock}"
        )
    if len(picks) == 1:
        return f"SELECT claim_key FROM ({picks[0]}) AS pick", params
    merged = " UNION ALL ".join(f"SELECT * FROM ({p}) AS pick{n}" for n, p in enumerate(picks))
    return (
        f"SELECT claim_key FROM ({merged}) AS picks ORDER BY submit_time, job_id LIMIT 1",
        params,
    )


def overdue_query(
    statuses: Collection[JobStatus],
    *,
    submitted_by: datetime,
    by: datetime,
    scale: float,
    limit: int,
    mark: str,
    columns: str,
) -> tuple[str, list[Any]]:
    """The query of store/base.py ``overdue`` (``columns`` of each job), and its parameters.

    ``submit_time <= submitted_by`` first, on its own: with the status, a range of the index
    jobs_claim (status, submit_time, job_id), so the young jobs (every job is younger than its
    deadline by at least the shortest timeout) are never read. The deadline is then a test of
    each job in that range, which holds only jobs waiting longer than the shortest timeout."""
    values = sorted(s.value for s in statuses)
    marks = ", ".join([mark] * len(values))
    sql = (
        f"SELECT {columns} FROM jobs WHERE status IN ({marks}) AND submit_time <= {mark} "
        f"AND submit_time + (expiration_time - submit_time) * {mark} <= {mark} LIMIT {mark}"
    )
    return sql, [*values, to_micros(submitted_by), scale, to_micros(by), limit]


def first_submitted_query(mark: str) -> str:
    """The query of store/base.py ``first_submitted_after`` (parameters: the status's value,
    then ``after`` in microseconds): the first row of the index jobs_claim past ``after``."""
    return (
        f"SELECT submit_time FROM jobs WHERE status = {mark} AND submit_time > {mark} "
        "ORDER BY submit_time LIMIT 1"
    )
