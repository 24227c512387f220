"""Bucket grants: a job reads and writes only buckets its account may use (engine/grants.py),
and ``s3BucketOwner`` must name the bucket's owner when the owner is known."""

from __future__ import annotations

import asyncio
from pathlib import Path

from batchrock.engine.grants import BucketPolicy, GrantTable, OpenBuckets, refusal
from batchrock.jobs import JobStatus

from .harness import Harness, jsonl, records

S = JobStatus
A, B = "111111111111", "222222222222"
TEAMS = GrantTable({A: ["team-a-*"], B: ["team-b-*"]})


def _harness(tmp_path: Path, policy: BucketPolicy = TEAMS) -> Harness:
    h = Harness(tmp_path, buckets=policy)
    h.put("s3://team-a-data/in/records.jsonl", jsonl(records(150)))
    h.put("s3://team-b-data/in/records.jsonl", jsonl(records(5)))
    h.bucket("team-a-out")
    h.bucket("team-b-out")
    return h


def _files(h: Harness, bucket: str) -> list[str]:
    root = h.data_dir / "s3" / bucket
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_job_cannot_read_another_accounts_bucket(tmp_path: Path) -> None:
    """The issue's case: B's job pointed at A's input prefix copied A's records to B."""
    h = _harness(tmp_path)

    async def main() -> None:
        job = await h.submit("s3://team-a-data/in/", "s3://team-b-out/", account_id=B)
        (done,) = await h.run(job.job_id)
        assert done.status is S.FAILED
        assert done.message == (
            "Access denied to the input S3 bucket 'team-a-data' (s3://team-a-data/in/): "
            f"account {B} has no grant for it."
        )
        assert await h.statuses(job.job_id) == ["Submitted", "Validating", "Failed"]
        assert done.counters.total == 0

    asyncio.run(main())
    assert _files(h, "team-b-out") == []
    assert h.backend.calls == []


def test_a_job_cannot_write_another_accounts_bucket(tmp_path: Path) -> None:
    h = _harness(tmp_path)

    async def main() -> None:
        job = await h.submit("s3://team-b-data/in/", "s3://team-a-out/b-was-here/", account_id=B)
        (done,) = await h.run(job.job_id)
        assert done.status is S.FAILED
        assert done.message is not None
        assert done.message.startswith("Access denied to the output S3 bucket 'team-a-out'")

    asyncio.run(main())
    assert _files(h, "team-a-out") == []


def test_a_bucket_without_a_grant_is_denied_before_it_is_looked_up(tmp_path: Path) -> None:
    """The message is the same whether the bucket exists: nothing leaks about it."""
    h = _harness(tmp_path)

    async def main() -> None:
        job = await h.submit("s3://no-such-bucket/in/", "s3://team-b-out/", account_id=B)
        (done,) = await h.run(job.job_id)
        assert done.status is S.FAILED
        assert done.message is not None and "Access denied" in done.message
        assert "exist" not in done.message

    asyncio.run(main())


def test_granted_buckets_run(tmp_path: Path) -> None:
    h = _harness(tmp_path)

    async def main() -> None:
        job = await h.submit("s3://team-a-data/in/", "s3://team-a-out/", account_id=A)
        (done,) = await h.run(job.job_id)
        assert done.status is S.COMPLETED, done.message
        assert done.counters.success == 150

    asyncio.run(main())
    assert len(h.backend.calls) == 150


def test_bucket_owner_must_match_when_the_owner_is_known(tmp_path: Path) -> None:
    h = _harness(tmp_path)

    async def main() -> None:
        wrong_in = await h.submit(
            "s3://team-a-data/in/", "s3://team-a-out/", account_id=A, input_bucket_owner=B
        )
        wrong_out = await h.submit(
            "s3://team-a-data/in/", "s3://team-a-out/", account_id=A, output_bucket_owner=B
        )
        right = await h.submit(
            "s3://team-a-data/in/",
            "s3://team-a-out/",
            account_id=A,
            input_bucket_owner=A,
            output_bucket_owner=A,
        )
        done = await h.run(wrong_in.job_id, wrong_out.job_id, right.job_id)
        assert [j.status for j in done] == [S.FAILED, S.FAILED, S.COMPLETED]
        assert done[0].message == (
            "Access denied to the input S3 bucket 'team-a-data' (s3://team-a-data/in/): it is "
            f"not owned by account {B}, the s3BucketOwner given for the input."
        )
        assert done[1].message is not None and "output S3 bucket 'team-a-out'" in done[1].message

    asyncio.run(main())


def test_open_mode_grants_every_bucket_and_knows_no_owner(tmp_path: Path) -> None:
    h = _harness(tmp_path, OpenBuckets())

    async def main() -> None:
        job = await h.submit(
            "s3://team-a-data/in/", "s3://team-b-out/", account_id=B, input_bucket_owner=B
        )
        (done,) = await h.run(job.job_id)
        assert done.status is S.COMPLETED, done.message

    asyncio.run(main())


class GrantedForValidationOnly:
    """Grants the first ``calls`` questions, then nothing: a grant withdrawn (the credentials
    file changed) after the job was validated. Validation asks twice (input, output)."""

    def __init__(self, calls: int = 2) -> None:
        self.left = calls

    def may_access(self, account_id: str, bucket: str) -> bool:
        self.left -= 1
        return self.left >= 0

    def owner_of(self, bucket: str) -> str | None:
        return None


def test_a_grant_withdrawn_after_validating_stops_the_job_before_it_reads(
    tmp_path: Path,
) -> None:
    h = _harness(tmp_path, GrantedForValidationOnly())

    async def main() -> None:
        job = await h.submit("s3://team-a-data/in/", "s3://team-a-out/", account_id=A)
        (done,) = await h.run(job.job_id)
        assert done.status is S.FAILED
        assert await h.statuses(job.job_id) == [
            "Submitted",
            "Validating",
            "Scheduled",
            "InProgress",
            "Failed",
        ]
        assert done.message is not None and done.message.startswith("Access denied")

    asyncio.run(main())
    assert h.backend.calls == []
    assert not any(name.endswith(".jsonl.out") for name in _files(h, "team-a-out"))


def test_grant_table() -> None:
    table = GrantTable({A: ["team-a-*", "shared"], B: ["team-b-*", "shared"]}, {"shared": A})
    assert table.may_access(A, "team-a-x") and not table.may_access(A, "team-b-x")
    assert not table.may_access("333333333333", "team-a-x")
    assert not table.may_access(A, "TEAM-A-X")
    assert table.owner_of("team-b-data") == B  # the one account granted it
    assert table.owner_of("shared") == A  # named
    assert table.owner_of("nobodys") is None
    assert GrantTable({A: ["x*"], B: ["xy*"]}).owner_of("xyz") is None  # two granted: unknown


def test_refusal_leaves_malformed_locations_to_the_input_checks(tmp_path: Path) -> None:
    h = _harness(tmp_path)

    async def main() -> None:
        job = await h.submit("not-s3", "s3://team-a-out/", account_id=A)
        assert refusal(TEAMS, job) is None
        job = await h.submit("not-s3", "s3://team-b-out/", account_id=A)
        assert refusal(TEAMS, job) is not None

    asyncio.run(main())
