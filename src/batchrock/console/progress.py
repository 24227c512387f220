"""Records per second and the time left, from a job's counters and its status history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from batchrock.jobs import Job, JobEvent, JobStatus


@dataclass(frozen=True, slots=True)
class Progress:
    #: Processed records as a share of the total, 0..1 (``None`` before the total is known).
    fraction: float | None
    #: Records processed per second since the job last went InProgress (``None``: none yet).
    records_per_second: float | None
    #: Seconds until every record is processed at that rate (``None``: unknown or finished).
    seconds_left: float | None


def progress(job: Job, events: list[JobEvent], now: datetime) -> Progress:
    c = job.counters
    fraction = min(1.0, c.processed / c.total) if c.total else None
    started = next((e.at for e in reversed(events) if e.to_status is JobStatus.IN_PROGRESS), None)
    if started is None or c.processed == 0:
        return Progress(fraction, None, None)
    # A job that ran before a restart counts its earlier records too: the rate is an
    # estimate, as on any progress bar.
    until = job.end_time if job.end_time is not None else now
    elapsed = (until - started).total_seconds()
    if elapsed <= 0:
        return Progress(fraction, None, None)
    rate = c.processed / elapsed
    left = None
    if job.status is JobStatus.IN_PROGRESS and c.total >= c.processed:
        left = (c.total - c.processed) / rate
    return Progress(fraction, rate, left)
