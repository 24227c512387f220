"""JobService rules with a frozen clock (FakeClock): exact times, no sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from batchrock.clock import FakeClock
from batchrock.errors import ResourceNotFoundException, ValidationException
from batchrock.jobs import JobStatus
from batchrock.service import Caller, JobService, NewJob
from batchrock.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

CALLER = Caller(account_id="123456789012", region="us-east-1")
START = datetime(2026, 5, 1, 8, 30, 15, 987654, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[JobService, FakeClock]]:
    store = await SqliteStore.open(tmp_path / "s.sqlite3")
    clock = FakeClock(START)
    yield JobService(store, clock), clock
    await store.close()


def new_job(**kw: object) -> NewJob:
    args: dict[str, object] = {
        "name": "svc",
        "model_id": "amazon.titan-text-express-v1",
        "role_arn": "arn:aws:iam::123456789012:role/R",
        "input_s3_uri": "s3://bucket/in/",
        "output_s3_uri": "s3://bucket/out/",
    }
    args.update(kw)
    return NewJob(**args)  # type: ignore[arg-type]


async def test_times_are_kept_at_wire_precision(service: tuple[JobService, FakeClock]) -> None:
    svc, _ = service
    job, created = await svc.create(CALLER, new_job(timeout_hours=100))
    assert created
    assert job.submit_time == START.replace(microsecond=987000)
    assert job.last_modified_time == job.submit_time
    assert job.expiration_time == job.submit_time + timedelta(hours=100)
    assert job.status is JobStatus.SUBMITTED


async def test_stop_records_when_it_happened(service: tuple[JobService, FakeClock]) -> None:
    svc, clock = service
    job, _ = await svc.create(CALLER, new_job())
    clock.advance(timedelta(minutes=5))
    stopped = await svc.stop(CALLER, job.job_id)
    assert stopped.status is JobStatus.STOPPING
    assert stopped.last_modified_time == START + timedelta(minutes=5)
    events = await svc.store.events(job.job_id)
    assert [(e.to_status, e.at) for e in events][-1] == (
        JobStatus.STOPPING,
        START + timedelta(minutes=5),
    )


async def test_stop_after_the_end_names_the_state(service: tuple[JobService, FakeClock]) -> None:
    svc, clock = service
    job, _ = await svc.create(CALLER, new_job())
    for status in (JobStatus.VALIDATING, JobStatus.FAILED):
        await svc.store.transition(job.job_id, status, now=clock.now())
    with pytest.raises(ValidationException) as exc:
        await svc.stop(CALLER, job.job_id)
    assert exc.value.message.endswith("State was: Failed")


async def test_an_engine_in_the_process_hears_of_new_and_stopped_jobs(
    service: tuple[JobService, FakeClock],
) -> None:
    svc, _ = service
    heard: list[str] = []
    svc.on_change = lambda: heard.append("change")
    job, _ = await svc.create(CALLER, new_job(client_request_token="t1"))
    assert heard == ["change"]
    await svc.create(CALLER, new_job(client_request_token="t1"))  # a retry creates nothing
    assert heard == ["change"]
    await svc.stop(CALLER, job.job_id)
    assert heard == ["change", "change"]
    await svc.stop(CALLER, job.job_id)  # already Stopping: nothing new
    assert heard == ["change", "change"]


async def test_events_are_the_owners_only(service: tuple[JobService, FakeClock]) -> None:
    svc, clock = service
    job, _ = await svc.create(CALLER, new_job())
    clock.advance(5)
    await svc.stop(CALLER, job.job_id)
    events = await svc.events(CALLER, job.job_id)
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, JobStatus.SUBMITTED),
        (JobStatus.SUBMITTED, JobStatus.STOPPING),
    ]
    for other in (Caller("210987654321", "us-east-1"), Caller(CALLER.account_id, "us-west-2")):
        with pytest.raises(ResourceNotFoundException):
            await svc.events(other, job.job_id)
