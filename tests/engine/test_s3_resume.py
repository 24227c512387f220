"""No shared disk: with the S3 object store, the file in progress is checkpointed into the
bucket as parts of a multipart upload, so an engine with another (empty) data dir resumes a
taken-over job after the last part saved, not from the file's start (docs/architecture.md,
"The file in progress")."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from batchrock.backends.base import ModelRequest, ModelResult
from batchrock.clock import FakeClock
from batchrock.engine import file_pass, runner
from batchrock.engine.checkpoint import Checkpoint
from batchrock.jobs import JobStatus
from batchrock.objects import LocalObjectStore, S3ObjectStore, UploadGone, resumable
from batchrock.objects.base import multipart_etag

from .conftest import SMALL_PART_BYTES, s3_client
from .crashpoints import Nth, Process, check_output_matches_counts
from .harness import Harness, jsonl, records, yielding_echo

pytestmark = pytest.mark.timeout(300)
S = JobStatus
SETTINGS: dict[str, Any] = {"engine_lease_seconds": 0.15}


@pytest.fixture(autouse=True)
def _small_flushes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Output is written (and parts cut) every few records instead of every megabyte.
    monkeypatch.setattr(file_pass, "FLUSH_BYTES", 300)
    monkeypatch.setattr(runner, "HALT_GRACE_SECONDS", 0.05)


def s3_store(url: str) -> S3ObjectStore:
    return S3ObjectStore(
        endpoint_url=url,
        access_key_id="testing",
        secret_access_key="testing",
        part_bytes=SMALL_PART_BYTES,
    )


def s3_harness(tmp_path: Path, url: str, *, like: Harness | None = None, **kw: Any) -> Harness:
    """A harness whose buckets are on ``url``; ``like``: another engine host of the same
    service (same job store, same bucket, same clock) with a data dir of its own."""
    if like is not None:
        kw |= {"clock": like.clock, "store_factory": like.store_factory}
    else:
        kw |= {"clock": FakeClock()}
    h = Harness(tmp_path, s3=s3_client(url), objects=s3_store(url), **{**SETTINGS, **kw})
    h.bucket("out-bucket")
    return h


def paced(clock: FakeClock) -> Any:
    """:func:`yielding_echo`, one record at a time, each taking 10 ms of the test's clock: the
    file then spans several checkpoints (parts cut mid-file) however fast the machine and
    the store are (the crash points below need a second part)."""
    one = asyncio.Lock()

    async def handler(request: ModelRequest) -> ModelResult:
        async with one:
            await clock.sleep(0.01)
        return await yielding_echo(request)

    return handler


class Counted:
    """The model of the resuming engine: which records it was asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, request: ModelRequest) -> ModelResult:
        self.asked.append(request.record_id)
        return await yielding_echo(request)


FILES = {"a.jsonl": records(60), "b.jsonl": records(10, start=60)}
OUT = "s3://out-bucket/results/"


@pytest.mark.parametrize(
    ("crash_at", "after"),
    [
        (Nth("upload_part a.jsonl.out", 2), True),  # part 2 is up, its checkpoint is not
        (Nth("parts=2"), False),  # before the checkpoint recording part 2
        (Nth("parts=2"), True),  # just after it
        (Nth("complete_upload a.jsonl.out"), False),  # the file is done, not yet published
        (Nth("complete_upload a.jsonl.out"), True),  # published, the checkpoint not moved on
    ],
    ids=["after-part", "before-save", "after-save", "before-complete", "after-complete"],
)
def test_a_job_taken_over_on_another_host_resumes_after_its_last_part(
    tmp_path: Path, moto_small_parts_url: str, crash_at: Nth, after: bool
) -> None:
    url = moto_small_parts_url
    first_host = s3_harness(tmp_path / "one", url)
    second_host = s3_harness(tmp_path / "two", url, like=first_host)
    folder = f"s3://in-bucket/{uuid.uuid4().hex[:8]}/"
    for name, recs in FILES.items():
        first_host.put(folder + name, jsonl(recs))

    async def main() -> None:
        job = await first_host.submit(folder, OUT)
        assert isinstance(first_host.clock, FakeClock)
        handler = paced(first_host.clock)
        crashed = Process(first_host, handler=handler, crash_at=crash_at, after=after)
        assert not await crashed.drive(job.job_id), "the first engine should have died"
        raw = await first_host.store.load_checkpoint(job.job_id)
        assert raw is not None
        cp = Checkpoint.from_json(raw)
        assert cp is not None
        covered = sum(p["records"] for p in cp.parts) if cp.file == 0 else None
        model = Counted()
        resumed = Process(second_host, handler=model)
        assert await resumed.drive(job.job_id)
        done = await check_output_matches_counts(second_host, OUT, job.job_id, FILES)
        assert done.status is S.COMPLETED, done.message
        ids = [r["recordId"] for recs in FILES.values() for r in recs]
        if covered is None:  # a.jsonl was published before the crash
            assert model.asked == ids[60:]
        else:
            assert covered > 0, "no part was saved before the crash"
            # Exactly the records no saved part held went to the model again.
            assert sorted(model.asked) == ids[covered:], (covered, len(model.asked))
        assert not s3_client(url).list_multipart_uploads(Bucket="out-bucket").get("Uploads")

    asyncio.run(main())


def test_the_s3_store_resumes_uploads_and_the_local_store_has_none(
    tmp_path: Path, moto_small_parts_url: str
) -> None:
    """The seam itself: parts uploaded through one client are completed through another
    (another process's), an upload that is gone says so, and a job's unfinished uploads are
    aborted by prefix. The local store offers none: its spool and hard link are the path."""
    url = moto_small_parts_url
    s3 = s3_client(url)
    bucket = f"up-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    assert resumable(LocalObjectStore(tmp_path / "s3")) is None

    async def main() -> None:
        one, two = s3_store(url), s3_store(url)
        up1, up2 = resumable(one), resumable(two)
        assert up1 is not None and up2 is not None
        upload = await up1.create_upload(bucket, "job/a.jsonl.out")
        first = await up1.upload_part(bucket, "job/a.jsonl.out", upload, 1, b"x" * SMALL_PART_BYTES)
        # A number skipped (as a run after a takeover does) is fine; only listed parts count.
        last = await up2.upload_part(bucket, "job/a.jsonl.out", upload, 3, b"tail\n")
        await up2.complete_upload(bucket, "job/a.jsonl.out", upload, [first, last])
        body = s3.get_object(Bucket=bucket, Key="job/a.jsonl.out")["Body"].read()
        assert body == b"x" * SMALL_PART_BYTES + b"tail\n"
        info = await two.head(bucket, "job/a.jsonl.out")
        assert info is not None and (info.etag or "").strip('"') == multipart_etag([first, last])

        stale = await up1.create_upload(bucket, "job/b.jsonl.out")
        await up1.create_upload(bucket, "other-job/b.jsonl.out")
        assert await up2.abort_uploads(bucket, "job/") == 1
        with pytest.raises(UploadGone):
            await up1.upload_part(bucket, "job/b.jsonl.out", stale, 1, b"late")
        left = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        assert [u["Key"] for u in left] == ["other-job/b.jsonl.out"]
        await one.aclose()
        await two.aclose()

    asyncio.run(main())
