"""Records per second and the time left, from a job's counters and its status history."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
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


#: How far back :class:`RecentRates` looks, and the least span it measures a rate over.
RATE_WINDOW_S = 60.0
RATE_MIN_SPAN_S = 2.0
#: Jobs whose samples are kept at most (the least recently read are forgotten).
RATE_MAX_JOBS = 1000


class RecentRates:
    """Records per second of a running job from this process's own reads of its counters
    over the last minute: right after a restart, when the since-InProgress estimate is off
    (a job taken over stays InProgress through the downtime, and its counters include the
    records of the process before). In memory and bounded; ``None`` until two reads at least
    :data:`RATE_MIN_SPAN_S` apart exist (the page reads once a second while it is open)."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._samples: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()

    def sample(self, job_id: str, processed: int) -> float | None:
        now = self._monotonic()
        samples = self._samples.get(job_id)
        if samples is None:
            samples = self._samples[job_id] = deque()
            while len(self._samples) > RATE_MAX_JOBS:
                self._samples.popitem(last=False)
        self._samples.move_to_end(job_id)
        if samples and processed < samples[-1][1]:
            samples.clear()  # the counters went back (a file redone): start over
        samples.append((now, processed))
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW_S:
            samples.popleft()
        then, before = samples[0]
        if now - then < RATE_MIN_SPAN_S:
            return None
        return (processed - before) / (now - then)

    def forget(self, job_id: str) -> None:
        self._samples.pop(job_id, None)


def with_recent_rate(p: Progress, job: Job, rate: float | None) -> Progress:
    """``p`` with the recent ``rate`` of a running job, and the time left at that rate."""
    if rate is None or job.status is not JobStatus.IN_PROGRESS:
        return p
    c = job.counters
    left = (c.total - c.processed) / rate if rate > 0 and c.total >= c.processed else None
    return Progress(p.fraction, rate, left)
