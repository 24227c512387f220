"""The JobStore contract: every store implementation runs this one suite.

The ``store`` and ``second_store`` fixtures (tests/contract/conftest.py) come once per
implementation named in ``tests/stores.py`` STORE_FACTORIES; the multi-process races open the
same database from other processes through the factory's URL (tests/contract/racer.py).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batchrock import jobs
from batchrock.jobs import Counters, InvalidTransition, Job, JobStatus
from batchrock.store.base import (
    Cursor,
    JobFilter,
    JobNotFound,
    JobStore,
    LeaseLost,
    ModelWork,
    PageRequest,
    StoreConflict,
    UnfinishedJobsQuota,
)
from tests.conftest import REPO_ROOT
from tests.stores import StoreFactory

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
S = JobStatus


def make_job(n: int = 0, **changes: Any) -> Job:
    submit = changes.pop("submit_time", T0 + timedelta(seconds=n))
    base = Job(
        job_id=changes.pop("job_id", f"job{n:09d}"),
        account_id="123456789012",
        region="us-east-1",
        name=f"job-{n}",
        model_id="amazon.titan-text-express-v1",
        role_arn="arn:aws:iam::123456789012:role/R",
        submit_time=submit,
        last_modified_time=submit,
        input_s3_uri="s3://bucket/in/",
        output_s3_uri="s3://bucket/out/",
        expiration_time=submit + timedelta(hours=24),
    )
    return base.evolve(**changes)


def everyone(**kw: Any) -> JobFilter:
    return JobFilter(account_id="123456789012", region="us-east-1", **kw)


async def stored_in(store: JobStore, job: Job, *, now: datetime = T0) -> Job:
    """Store ``job`` in its status the only way there is: created Submitted, then moved along
    the lifecycle (:func:`batchrock.jobs.path_to`)."""
    stored, created = await store.create(job.evolve(status=jobs.INITIAL), {})
    assert created
    for status in jobs.path_to(job.status):
        stored = await store.transition(stored.job_id, status, now=now)
    return stored


async def race(
    factory: StoreFactory, tmp_path: Path, action: str, workers: int, arg: str = ""
) -> list[str]:
    """Run ``workers`` processes of tests/contract/racer.py on the factory's database at
    once; the job ids they won, one per line of output."""
    go = tmp_path / f"go-{action}"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.contract.racer",
            factory.url,
            action,
            f"w{i}",
            str(go),
            arg or str(i),
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT,  # the racer imports this module
        )
        for i in range(workers)
    ]
    go.touch()  # every process opened its store meanwhile, or waits for the file
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    assert all(p.returncode == 0 for p in procs)
    return [line for out, _ in outputs for line in out.decode().split()]


class TestStoreContract:
    async def test_snapshot_counts_statuses_and_pending_work(self, store: JobStore) -> None:
        """The metrics' gauges (docs/metrics.md): every account's jobs by status, and per
        model the Scheduled jobs, the records left and their estimated input tokens."""
        made = [
            make_job(1, model_id="m1", status=S.SCHEDULED, counters=Counters(total=10)),
            make_job(2, model_id="m1", status=S.IN_PROGRESS, account_id="210987654321",
                     counters=Counters(total=100, processed=40, input_tokens=400)),
            make_job(3, model_id="m2", status=S.IN_PROGRESS, counters=Counters(total=5)),
            make_job(4, model_id="m2", status=S.COMPLETED,
                     counters=Counters(total=9, processed=9, input_tokens=90)),
            make_job(5, model_id="m3", status=S.SUBMITTED),
        ]  # fmt: skip
        for job in made:
            await stored_in(store, job)
        snapshot = await store.snapshot()
        assert snapshot.jobs_by_status == {
            S.SCHEDULED: 1,
            S.IN_PROGRESS: 2,
            S.COMPLETED: 1,
            S.SUBMITTED: 1,
        }
        # m1: 10 waiting + 60 left of a job at 10 tokens a record; m2: 5 left, no rate yet.
        assert snapshot.by_model == {
            "m1": ModelWork(scheduled_jobs=1, records_pending=70, tokens_pending=600),
            "m2": ModelWork(scheduled_jobs=0, records_pending=5, tokens_pending=0),
        }

    async def test_create_and_get_round_trip_every_field(self, store: JobStore) -> None:
        job = make_job(
            1,
            client_request_token="tok-1",
            message="",
            input_bucket_owner="111122223333",
            output_kms_key_id="alias/k",
            output_bucket_owner="111122223333",
            vpc_subnet_ids=("subnet-a", "subnet-b"),
            vpc_security_group_ids=("sg-1",),
            timeout_hours=168,
            invocation_type="Converse",
            counters=Counters(total=0, processed=0, success=0, error=0),
        )
        created, fresh = await store.create(job, {"team": "ml", "empty": ""})
        assert fresh and created == job
        assert await store.get("123456789012", "us-east-1", job.job_id) == job
        assert await store.get_by_id(job.job_id) == job
        assert await store.get_tags(job.job_id) == {"empty": "", "team": "ml"}

    async def test_get_is_scoped_to_account_and_region(self, store: JobStore) -> None:
        job = make_job(2)
        await store.create(job, {})
        assert await store.get("999999999999", "us-east-1", job.job_id) is None
        assert await store.get("123456789012", "eu-west-1", job.job_id) is None
        assert await store.get("123456789012", "us-east-1", "nosuchjob000") is None

    async def test_client_request_token_is_unique_per_account(self, store: JobStore) -> None:
        first, created = await store.create(make_job(3, client_request_token="same"), {})
        again, created_again = await store.create(
            make_job(4, client_request_token="same", name="other"), {"x": "y"}
        )
        assert created and not created_again
        assert again == first
        assert await store.get_tags(first.job_id) == {}
        other_account = make_job(5, client_request_token="same", account_id="210987654321")
        assert (await store.create(other_account, {}))[1]

    async def test_list_orders_filters_and_pages(self, store: JobStore) -> None:
        names = ["alpha-one", "beta-two", "ALPHA-three", "gamma", "alphabet"]
        for i, name in enumerate(names):
            await store.create(make_job(i, name=name), {})
        await store.create(make_job(9, name="alpha-elsewhere", region="eu-west-1"), {})
        asc = await store.list_jobs(everyone(), PageRequest(limit=10, descending=False))
        assert [j.name for j in asc] == names
        desc = await store.list_jobs(everyone(), PageRequest(limit=10))
        assert [j.name for j in desc] == names[::-1]

        alpha = await store.list_jobs(everyone(name_contains="alpha"), PageRequest(limit=10))
        assert [j.name for j in alpha] == ["alphabet", "ALPHA-three", "alpha-one"]
        short = await store.list_jobs(everyone(name_contains="a-"), PageRequest(limit=10))
        assert {j.name for j in short} == {"alpha-one", "ALPHA-three", "beta-two"}

        window = everyone(
            submitted_after=T0 + timedelta(seconds=1), submitted_before=T0 + timedelta(seconds=4)
        )
        assert [j.name for j in await store.list_jobs(window, PageRequest(limit=10))] == [
            "gamma",
            "ALPHA-three",
        ]

        page1 = await store.list_jobs(everyone(), PageRequest(limit=2, descending=False))
        cursor = Cursor(page1[-1].submit_time, page1[-1].job_id)
        page2 = await store.list_jobs(
            everyone(), PageRequest(limit=2, descending=False, after=cursor)
        )
        assert [j.name for j in page1 + page2] == names[:4]

    async def test_keyset_breaks_submit_time_ties_by_id(self, store: JobStore) -> None:
        for suffix in "cab":
            await store.create(make_job(0, job_id=f"tie00000000{suffix}", submit_time=T0), {})
        seen = []
        after = None
        while True:
            page = await store.list_jobs(everyone(), PageRequest(limit=1, after=after))
            if not page:
                break
            seen.append(page[0].job_id)
            after = Cursor(page[0].submit_time, page[0].job_id)
        assert seen == ["tie00000000c", "tie00000000b", "tie00000000a"]

    async def test_status_filter(self, store: JobStore) -> None:
        a, _ = await store.create(make_job(1), {})
        await store.create(make_job(2), {})
        await store.transition(a.job_id, S.VALIDATING, now=T0)
        found = await store.list_jobs(everyone(status=S.VALIDATING), PageRequest(limit=10))
        assert [j.job_id for j in found] == [a.job_id]

    async def test_transitions_follow_the_lifecycle(self, store: JobStore) -> None:
        job, _ = await store.create(make_job(1), {})
        path = [S.VALIDATING, S.SCHEDULED, S.IN_PROGRESS, S.COMPLETED]
        for i, status in enumerate(path, start=1):
            job = await store.transition(job.job_id, status, now=T0 + timedelta(minutes=i))
            assert job.status is status
            assert job.last_modified_time == T0 + timedelta(minutes=i)
        assert job.end_time == T0 + timedelta(minutes=4)
        with pytest.raises(InvalidTransition) as exc:
            await store.transition(job.job_id, S.STOPPING, now=T0)
        assert exc.value.current is S.COMPLETED
        events = await store.events(job.job_id)
        assert [(e.from_status, e.to_status) for e in events] == [
            (None, S.SUBMITTED),
            (S.SUBMITTED, S.VALIDATING),
            (S.VALIDATING, S.SCHEDULED),
            (S.SCHEDULED, S.IN_PROGRESS),
            (S.IN_PROGRESS, S.COMPLETED),
        ]

    async def test_illegal_moves_are_refused(self, store: JobStore) -> None:
        job, _ = await store.create(make_job(1), {})
        for target in (S.COMPLETED, S.IN_PROGRESS, S.PARTIALLY_COMPLETED):
            with pytest.raises(InvalidTransition):
                await store.transition(job.job_id, target, now=T0)
        with pytest.raises(InvalidTransition):
            await store.transition(job.job_id, S.VALIDATING, now=T0, expected={S.SCHEDULED})
        with pytest.raises(LookupError):  # JobNotFound is one
            await store.transition("nosuchjob000", S.VALIDATING, now=T0)
        assert (await store.get_by_id(job.job_id)) == job

    async def test_failure_message_and_end_time(self, store: JobStore) -> None:
        job, _ = await store.create(make_job(1), {})
        await store.transition(job.job_id, S.VALIDATING, now=T0)
        failed = await store.transition(
            job.job_id, S.FAILED, now=T0 + timedelta(seconds=5), message="No .jsonl files found"
        )
        assert failed.message == "No .jsonl files found"
        assert failed.end_time == T0 + timedelta(seconds=5)

    async def test_concurrent_writers_cannot_both_win(
        self, store: JobStore, second_store: JobStore
    ) -> None:
        job, _ = await store.create(make_job(1), {})
        await store.transition(job.job_id, S.VALIDATING, now=T0)
        # A stop and the engine's next step race from the same observed status.
        await second_store.transition(job.job_id, S.STOPPING, now=T0, expected={S.VALIDATING})
        with pytest.raises(InvalidTransition):
            await store.transition(job.job_id, S.SCHEDULED, now=T0, expected={S.VALIDATING})
        assert (await store.get_by_id(job.job_id)).status is S.STOPPING  # type: ignore[union-attr]

    async def test_claims_are_exclusive_and_leases_expire(
        self, store: JobStore, second_store: JobStore
    ) -> None:
        older, _ = await store.create(make_job(1), {})
        newer, _ = await store.create(make_job(2), {})
        first = await store.claim("w1", {S.SUBMITTED}, now=T0, lease_seconds=30)
        second = await second_store.claim("w2", {S.SUBMITTED}, now=T0, lease_seconds=30)
        assert first is not None and second is not None
        assert (first.job_id, second.job_id) == (older.job_id, newer.job_id)
        assert await store.claim("w3", {S.SUBMITTED}, now=T0, lease_seconds=30) is None
        # w1 dies; after its lease runs out another worker takes the job over.
        later = T0 + timedelta(seconds=31)
        assert await store.renew(newer.job_id, "w2", now=later, lease_seconds=30)
        taken = await store.claim("w3", {S.SUBMITTED}, now=later, lease_seconds=30)
        assert taken is not None and taken.job_id == older.job_id
        assert not await store.renew(older.job_id, "w1", now=later, lease_seconds=30)
        await store.release(older.job_id, "w3")
        again = await store.claim("w4", {S.SUBMITTED}, now=later, lease_seconds=30)
        assert again is not None and again.job_id == older.job_id

    async def test_claim_only_matching_statuses(self, store: JobStore) -> None:
        job, _ = await store.create(make_job(1), {})
        assert await store.claim("w", {S.SCHEDULED}, now=T0, lease_seconds=5) is None
        assert await store.claim("w", set(), now=T0, lease_seconds=5) is None
        await store.transition(job.job_id, S.VALIDATING, now=T0)
        claimed = await store.claim("w", {S.VALIDATING}, now=T0, lease_seconds=5)
        assert claimed is not None and claimed.status is S.VALIDATING

    async def test_young_submitted_jobs_are_not_claimed(self, store: JobStore) -> None:
        # make_job(n) is submitted at T0 + n s. Validating jobs left their dwell already.
        older, _ = await store.create(make_job(1), {})
        young, _ = await store.create(make_job(5), {})
        validating, _ = await store.create(make_job(9), {})
        await store.transition(validating.job_id, S.VALIDATING, now=T0)
        waiting = {S.SUBMITTED, S.VALIDATING}
        cutoff = T0 + timedelta(seconds=4)  # only jobs submitted by then
        first = await store.claim("w", waiting, now=T0, lease_seconds=30, submitted_by=cutoff)
        second = await store.claim("w", waiting, now=T0, lease_seconds=30, submitted_by=cutoff)
        assert first is not None and first.job_id == older.job_id
        # The oldest job left is the young one: it is passed over, not claimed and released.
        assert second is not None and second.job_id == validating.job_id
        assert (
            await store.claim("w", waiting, now=T0, lease_seconds=30, submitted_by=cutoff) is None
        )
        # Submitted exactly at the cutoff: its dwell is over.
        at = young.submit_time
        taken = await store.claim("w", waiting, now=T0, lease_seconds=30, submitted_by=at)
        assert taken is not None and taken.job_id == young.job_id

    async def test_claims_take_the_oldest_across_statuses_in_order(self, store: JobStore) -> None:
        """Oldest first by (submit_time, job_id) across every requested status, whichever
        status each is in: young Submitted jobs and live leases passed over, expired leases
        taken, a submit_time tie broken by job_id (the store picks per status and merges)."""
        # make_job(n) is submitted at T0 + n s. Leased first, while each is the oldest of
        # its status: a Submitted job whose lease runs out, a Scheduled one held throughout.
        expired = await stored_in(store, make_job(4))
        assert await store.claim("gone", {S.SUBMITTED}, now=T0, lease_seconds=1) == expired
        held = await stored_in(store, make_job(3, status=S.SCHEDULED))
        assert await store.claim("alive", {S.SCHEDULED}, now=T0, lease_seconds=3600) == held
        later = [
            make_job(7, status=S.SCHEDULED),
            make_job(6),  # submitted after the cutoff: still in its dwell
            make_job(5, job_id="job000000005z"),  # at the cutoff: its dwell is over
            make_job(5, status=S.VALIDATING),  # job000000005: before ...5z
            make_job(2, job_id="job000000002a"),  # a tie in one status too
            make_job(2),
            make_job(1, status=S.VALIDATING),
        ]
        made = {job.job_id: await stored_in(store, job) for job in later}
        waiting = {S.SUBMITTED, S.VALIDATING, S.SCHEDULED}
        now, cutoff = T0 + timedelta(seconds=10), T0 + timedelta(seconds=5)
        taken = []
        while job := await store.claim(
            "w", waiting, now=now, lease_seconds=60, submitted_by=cutoff
        ):
            taken.append((job.job_id, job.status))
            assert len(taken) <= len(later)
        expected = ["job000000001", "job000000002", "job000000002a", expired.job_id]
        expected += ["job000000005", "job000000005z", "job000000007"]
        assert [job_id for job_id, _ in taken] == expected
        statuses = {**made, expired.job_id: expired}
        assert all(statuses[job_id].status is status for job_id, status in taken)
        # Without the dwell the young job is next; the held one never is.
        young = await store.claim("w", waiting, now=now, lease_seconds=60)
        assert young is not None and young.job_id == "job000000006"
        assert await store.claim("w", waiting, now=now, lease_seconds=60) is None
        lease = await store.lease(held.job_id)
        assert lease is not None and lease.owner == "alive"

    async def test_finishing_releases_the_lease(self, store: JobStore) -> None:
        job, _ = await store.create(make_job(1), {})
        await store.claim("w", {S.SUBMITTED}, now=T0, lease_seconds=300)
        await store.transition(job.job_id, S.STOPPING, now=T0)
        await store.transition(job.job_id, S.STOPPED, now=T0)
        assert not await store.renew(job.job_id, "w", now=T0, lease_seconds=300)

    async def test_progress_and_checkpoint(self, store: JobStore) -> None:
        job, _ = await store.create(make_job(1), {})
        assert await store.load_checkpoint(job.job_id) is None
        counters = Counters(total=10, processed=4, success=3, error=1, input_tokens=40)
        await store.save_progress(
            job.job_id, counters=counters, now=T0, checkpoint={"file": "a.jsonl", "line": 4}
        )
        got = await store.get_by_id(job.job_id)
        assert got is not None and got.counters == counters
        assert await store.load_checkpoint(job.job_id) == {"file": "a.jsonl", "line": 4}
        # Counters alone leave the checkpoint in place.
        await store.save_progress(job.job_id, counters=Counters(total=10, processed=5), now=T0)
        assert await store.load_checkpoint(job.job_id) == {"file": "a.jsonl", "line": 4}

    async def test_fenced_writes_need_the_claim_that_holds_the_lease(
        self, store: JobStore, second_store: JobStore
    ) -> None:
        """A write fenced with the owner a job was claimed as lands only while that claim
        holds the lease: once another claim took the job over (its lease lapsed), or a final
        move released it, the stale claim's checkpoint, progress and moves are refused whole,
        even though its lease was never released and its status is still the expected one."""
        job, _ = await store.create(make_job(1), {})
        await store.transition(job.job_id, S.VALIDATING, now=T0)
        await store.transition(job.job_id, S.SCHEDULED, now=T0)
        started = await store.start_next("w1:1", now=T0, lease_seconds=30, max_in_progress=5)
        assert started is not None and started.status is S.IN_PROGRESS
        mine = Counters(total=10, processed=4, success=4)
        await store.save_progress(
            job.job_id, counters=mine, now=T0, checkpoint={"offset": 4}, fence="w1:1"
        )
        assert await store.load_checkpoint(job.job_id) == {"offset": 4}
        # w1 is frozen past its lease; w2 takes the job over and moves it on.
        later = T0 + timedelta(seconds=31)
        taken = await second_store.claim("w2:7", {S.IN_PROGRESS}, now=later, lease_seconds=30)
        assert taken is not None and taken.job_id == job.job_id
        theirs = Counters(total=10, processed=7, success=7)
        await second_store.save_progress(
            job.job_id, counters=theirs, now=later, checkpoint={"offset": 7}, fence="w2:7"
        )
        # w1 wakes up: nothing it writes lands.
        with pytest.raises(LeaseLost):
            await store.save_progress(
                job.job_id, counters=mine, now=later, checkpoint={"offset": 5}, fence="w1:1"
            )
        with pytest.raises(LeaseLost):
            await store.save_progress(job.job_id, counters=mine, now=later, fence="w1:1")
        history = await store.events(job.job_id)
        with pytest.raises(LeaseLost):
            await store.transition(
                job.job_id, S.COMPLETED, now=later, expected={S.IN_PROGRESS}, fence="w1:1"
            )
        got = await store.get_by_id(job.job_id)
        assert got is not None and got.status is S.IN_PROGRESS and got.counters == theirs
        assert await store.load_checkpoint(job.job_id) == {"offset": 7}
        assert await store.events(job.job_id) == history
        lease = await store.lease(job.job_id)
        assert lease is not None and lease.owner == "w2:7"
        # The holder's move lands, and releases the lease: no claim may write after it.
        done = await second_store.transition(
            job.job_id, S.COMPLETED, now=later, expected={S.IN_PROGRESS}, fence="w2:7"
        )
        assert done.status is S.COMPLETED
        with pytest.raises(LeaseLost):
            await second_store.save_progress(job.job_id, counters=theirs, now=later, fence="w2:7")
        # Unfenced writes (the API's) are not held to any lease.
        await store.save_progress(job.job_id, counters=theirs, now=later)

    async def test_tags(self, store: JobStore) -> None:
        job, _ = await store.create(make_job(1), {"a": "1"})
        await store.put_tags(job.job_id, {"a": "2", "b": "3"}, max_tags=3)
        assert await store.get_tags(job.job_id) == {"a": "2", "b": "3"}
        with pytest.raises(OverflowError):
            await store.put_tags(job.job_id, {"c": "", "d": ""}, max_tags=3)
        assert await store.get_tags(job.job_id) == {"a": "2", "b": "3"}
        await store.remove_tags(job.job_id, ["a", "zzz"])
        assert await store.get_tags(job.job_id) == {"b": "3"}

    async def test_create_holds_the_unfinished_jobs_quota(self, store: JobStore) -> None:
        """Per account, region and model; final statuses do not count; a repeated token
        returns its job even at the quota."""
        await store.create(make_job(1, client_request_token="tok"), {})
        await stored_in(store, make_job(2, status=S.STOPPING))
        for i, status in enumerate(jobs.TERMINAL):
            await stored_in(store, make_job(10 + i, status=status))
        with pytest.raises(UnfinishedJobsQuota) as exc:
            await store.create(make_job(3), {}, max_unfinished=2)
        assert exc.value.limit == 2
        assert await store.get_by_id(make_job(3).job_id) is None
        again, created = await store.create(
            make_job(4, client_request_token="tok"), {}, max_unfinished=2
        )
        assert not created and again.job_id == make_job(1).job_id
        for n, changes in enumerate(
            [
                {"model_id": "amazon.nova-lite-v1:0"},
                {"region": "eu-west-1"},
                {"account_id": "1" * 12},
            ]
        ):
            assert (await store.create(make_job(20 + n, **changes), {}, max_unfinished=2))[1]
        assert (await store.create(make_job(5), {}, max_unfinished=3))[1]
        assert (await store.create(make_job(6), {}))[1]  # no limit given: none applies

    async def test_every_status_round_trips(self, store: JobStore) -> None:
        for i, status in enumerate(JobStatus):
            job = await stored_in(store, make_job(i, status=status))
            got = await store.get_by_id(job.job_id)
            assert got == job and got.status is status
        assert jobs.TERMINAL <= set(JobStatus)

    async def test_create_accepts_only_the_initial_status(self, store: JobStore) -> None:
        for i, status in enumerate(set(JobStatus) - {jobs.INITIAL}):
            job = make_job(i, status=status)
            with pytest.raises(InvalidTransition) as exc:
                await store.create(job, {"k": "v"})
            assert exc.value.current is None and exc.value.target is status
            assert await store.get_by_id(job.job_id) is None
            assert await store.events(job.job_id) == []
            assert await store.get_tags(job.job_id) == {}

    async def test_a_job_id_that_exists_is_a_conflict(self, store: JobStore) -> None:
        job, _ = await store.create(make_job(1), {})
        with pytest.raises(StoreConflict):
            await store.create(make_job(2, job_id=job.job_id), {})
        assert await store.get_by_id(job.job_id) == job
        assert len(await store.events(job.job_id)) == 1

    async def test_every_pair_of_statuses(self, store: JobStore) -> None:
        """Every (from, to) pair through the store: an allowed move changes what
        :func:`batchrock.jobs.decide` says and records its event; a refused one raises and
        changes nothing, the lease included."""
        n = 0
        for source in JobStatus:
            for target in JobStatus:
                n += 1
                job = await stored_in(store, make_job(n, status=source))
                # Leased, so that the test sees what a move does to a lease. (Older jobs a
                # final move released are claimed again first, and stay leased.)
                while (
                    claimed := await store.claim("w", {source}, now=T0, lease_seconds=600)
                ) is not None and claimed.job_id != job.job_id:
                    pass
                lease = await store.lease(job.job_id)
                assert lease is not None and lease.owner == "w"
                history = await store.events(job.job_id)
                at = T0 + timedelta(minutes=n)
                if target not in jobs.TRANSITIONS[source]:
                    with pytest.raises(InvalidTransition) as exc:
                        await store.transition(job.job_id, target, now=at, message="m")
                    assert (exc.value.current, exc.value.target) == (source, target)
                    assert await store.get_by_id(job.job_id) == job
                    assert await store.events(job.job_id) == history
                    assert await store.lease(job.job_id) == lease
                    continue
                # Allowed, but not from a status the caller did not expect.
                with pytest.raises(InvalidTransition):
                    await store.transition(
                        job.job_id, target, now=at, expected=set(JobStatus) - {source}
                    )
                assert await store.get_by_id(job.job_id) == job
                moved = await store.transition(
                    job.job_id, target, now=at, expected={source}, message=f"to {target}"
                )
                change = jobs.decide(job, target, now=at, message=f"to {target}")
                assert moved == change.applied_to(job) == await store.get_by_id(job.job_id)
                assert moved.status is target and moved.last_modified_time == at
                assert moved.end_time == (at if target in jobs.TERMINAL else None)
                events = await store.events(job.job_id)
                assert events == [*history, change.event]
                assert events[-1].seq > history[-1].seq
                final = target in jobs.TERMINAL
                assert (await store.lease(job.job_id)) == (None if final else lease)

    async def test_an_unknown_job_is_not_found(self, store: JobStore) -> None:
        with pytest.raises(JobNotFound):
            await store.transition("nosuchjob000", S.VALIDATING, now=T0)

    async def test_reopening_keeps_everything(self, store_factory: StoreFactory) -> None:
        first = await store_factory.open()
        job, _ = await first.create(make_job(1, client_request_token="t"), {"k": "v"})
        await first.close()
        second = await store_factory.open()
        try:
            assert await second.get_by_id(job.job_id) == job
            assert await second.get_tags(job.job_id) == {"k": "v"}
        finally:
            await second.close()

    async def test_many_processes_creating_at_once_stop_at_the_quota(
        self, store: JobStore, store_factory: StoreFactory, tmp_path: Path
    ) -> None:
        created = await race(store_factory, tmp_path, "create", 4)
        assert len(created) == 7
        listed = await store.list_jobs(everyone(), PageRequest(limit=100))
        assert sorted(j.job_id for j in listed) == sorted(created)

    async def test_many_processes_claim_each_job_once(
        self, store: JobStore, store_factory: StoreFactory, tmp_path: Path
    ) -> None:
        for i in range(60):
            await store.create(make_job(i), {})
        claimed = await race(store_factory, tmp_path, "claim", 4)
        assert len(claimed) == 60 and len(set(claimed)) == 60

    async def test_many_processes_taking_over_one_lapsed_lease_one_wins(
        self, store: JobStore, store_factory: StoreFactory, tmp_path: Path
    ) -> None:
        job = await stored_in(store, make_job(1, status=S.IN_PROGRESS))
        assert await store.claim("dead", {S.IN_PROGRESS}, now=T0, lease_seconds=30)
        won = await race(store_factory, tmp_path, "takeover", 4)
        assert won == [job.job_id]
        lease = await store.lease(job.job_id)
        assert lease is not None and lease.owner != "dead"
        later = T0 + timedelta(hours=1)
        assert not await store.renew(job.job_id, "dead", now=later, lease_seconds=30)
        assert await store.renew(job.job_id, lease.owner, now=later, lease_seconds=30)


class TestPageLookups:
    async def test_get_many_is_scoped_like_get(self, store: JobStore) -> None:
        mine = [make_job(n) for n in range(3)]
        other = make_job(9, account_id="999999999999")
        for job in (*mine, other):
            await store.create(job, {})
        ids = [j.job_id for j in (*mine, other)] + ["nosuchjob000"]
        assert await store.get_many("123456789012", "us-east-1", ids) == {j.job_id: j for j in mine}
        assert await store.get_many("123456789012", "eu-west-1", ids) == {}
        assert await store.get_many("123456789012", "us-east-1", []) == {}

    async def test_events_of_matches_events_job_by_job(self, store: JobStore) -> None:
        first, second = make_job(1), make_job(2)
        for job in (first, second):
            await store.create(job, {})
        await store.transition(first.job_id, S.VALIDATING, now=T0 + timedelta(seconds=5))
        got = await store.events_of([first.job_id, second.job_id, "nosuchjob000"])
        assert got == {
            first.job_id: await store.events(first.job_id),
            second.job_id: await store.events(second.job_id),
        }
        assert len(got[first.job_id]) == 2
        assert await store.events_of([]) == {}
