"""An input file that changes after Validating fails the job, naming the file; one that is
still the validated object is processed as validated. On the local store and on S3 (moto's
server), the engine driven step by step (see crashpoints.py)."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchrock.clock import FakeClock
from batchrock.jobs import JobStatus
from batchrock.objects import S3ObjectStore

from .conftest import s3_client
from .crashpoints import Process, check_output_matches_counts
from .harness import Harness, jsonl, records

S = JobStatus


@dataclass
class Env:
    """A harness whose input and output buckets live on the store under test."""

    h: Harness
    kind: str
    bucket_in: str
    bucket_out: str
    s3: Any = None

    @property
    def out(self) -> str:
        return f"s3://{self.bucket_out}/results/"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket_in}/{key}"

    def path(self, key: str) -> Path:
        assert self.kind == "local"
        return self.h.data_dir / "s3" / self.bucket_in / key

    def put(self, key: str, data: bytes) -> None:
        if self.kind == "local":
            self.h.put(self.uri(key), data)
        else:
            self.s3.put_object(Bucket=self.bucket_in, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        if self.kind == "local":
            return self.path(key).read_bytes()
        body: bytes = self.s3.get_object(Bucket=self.bucket_in, Key=key)["Body"].read()
        return body


@pytest.fixture(params=["local", "s3"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Env:
    h = Harness(tmp_path, clock=FakeClock(), engine_lease_seconds=0.15)
    if request.param == "local":
        h.bucket("in-bucket")
        h.bucket("out-bucket")
        return Env(h, "local", "in-bucket", "out-bucket")
    url = request.getfixturevalue("moto_url")
    s3 = s3_client(url)
    suffix = uuid.uuid4().hex[:10]
    e = Env(h, "s3", f"in-{suffix}", f"out-{suffix}", s3)
    s3.create_bucket(Bucket=e.bucket_in)
    s3.create_bucket(Bucket=e.bucket_out)
    h.objects = S3ObjectStore(  # type: ignore[assignment]
        endpoint_url=url, access_key_id="testing", secret_access_key="testing", max_retries=0
    )
    return e


FILES = {"a.jsonl": records(150), "b.jsonl": records(100, start=150)}


async def validated(e: Env, files: dict[str, list[dict[str, Any]]] = FILES) -> str:
    """A job over ``in/``, validated and waiting in Scheduled."""
    for name, recs in files.items():
        e.put(f"in/{name}", jsonl(recs))
    job = await e.h.submit(e.uri("in/"), e.out)
    assert await Process(e.h).drive(job.job_id, until={S.SCHEDULED})
    assert (await e.h.get(job.job_id)).status is S.SCHEDULED
    return job.job_id


def test_input_appended_after_validating_fails_the_job_naming_the_file(env: Env) -> None:
    async def main() -> None:
        job_id = await validated(env)
        before = env.get("in/b.jsonl")
        env.put("in/b.jsonl", before + jsonl(records(5, start=900)))
        assert await Process(env.h).drive(job_id)
        done = await check_output_matches_counts(env.h, env.out, job_id, FILES)
        assert done.status is S.FAILED
        after = len(before) + len(jsonl(records(5, start=900)))
        assert done.message == (
            f"The input file {env.uri('in/b.jsonl')} changed after the job was validated "
            f"(size {len(before)} → {after} bytes); submit the job again."
        )
        # The file before it was processed as validated, and is kept and counted.
        c = done.counters
        assert (c.total, c.processed) == (250, 150)

    asyncio.run(main())


def test_input_replaced_by_one_of_the_same_size_fails_the_job(env: Env) -> None:
    """Other records of the same length: only the ETag (S3) or the file's identity and
    time (local) tell."""
    other = [{**r, "recordId": r["recordId"].replace("REC", "XYZ")} for r in FILES["a.jsonl"]]

    async def main() -> None:
        job_id = await validated(env)
        assert len(jsonl(other)) == len(env.get("in/a.jsonl"))
        env.put("in/a.jsonl", jsonl(other))
        assert await Process(env.h).drive(job_id)
        done = await check_output_matches_counts(env.h, env.out, job_id, FILES)
        assert done.status is S.FAILED
        prefix = f"The input file {env.uri('in/a.jsonl')} changed after the job was validated ("
        assert (done.message or "").startswith(prefix), done.message
        assert done.counters.processed == 0
        calls = {call.record_id for call in env.h.backend.calls}
        assert not any(i.startswith("XYZ") for i in calls)

    asyncio.run(main())


def test_input_rewritten_in_place_local(tmp_path: Path) -> None:
    """Local files: rewritten in place (same inode, a later time), and replaced by another
    file given the same time (what ``cp -p`` or ``rsync -t`` do)."""
    e = Env(Harness(tmp_path, clock=FakeClock()), "local", "in-bucket", "out-bucket")
    e.h.bucket("in-bucket")
    e.h.bucket("out-bucket")
    other = [{**r, "recordId": r["recordId"].replace("REC", "XYZ")} for r in FILES["a.jsonl"]]

    async def main() -> None:
        job_id = await validated(e)
        path = e.path("in/a.jsonl")
        st = path.stat()
        with path.open("r+b") as fh:  # in place: the same inode
            fh.write(jsonl(other))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_500_000_000))
        assert await Process(e.h).drive(job_id)
        done = await check_output_matches_counts(e.h, e.out, job_id, FILES)
        assert done.status is S.FAILED
        assert "changed after the job was validated (last modified " in (done.message or "")

        job_id = await validated(e)
        path = e.path("in/b.jsonl")
        st = path.stat()
        beside = path.with_name("b.jsonl.new")
        beside.write_bytes(path.read_bytes())  # the very same bytes, but another file
        os.utime(beside, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(beside, path)
        assert await Process(e.h).drive(job_id)
        done = await check_output_matches_counts(e.h, e.out, job_id, FILES)
        assert done.status is S.FAILED
        assert done.message == (
            f"The input file {e.uri('in/b.jsonl')} changed after the job was validated (same "
            f"size and time, but another object); submit the job again."
        )

    asyncio.run(main())


def test_input_rewritten_keeping_size_and_time_is_caught_by_its_record_count(
    tmp_path: Path,
) -> None:
    """Nothing in its metadata tells (same inode, size and time), but the file now holds
    more records than were counted: the job fails, and never counts more than the total."""
    e = Env(Harness(tmp_path, clock=FakeClock()), "local", "in-bucket", "out-bucket")
    e.h.bucket("in-bucket")
    e.h.bucket("out-bucket")
    files = {"a.jsonl": records(10)}

    async def main() -> None:
        job_id = await validated(e, files)
        path = e.path("in/a.jsonl")
        st = path.stat()
        short = b'{"modelInput":{}}\n' * 30
        assert len(short) < st.st_size
        with path.open("r+b") as fh:
            fh.write(short + b" " * (st.st_size - len(short) - 1) + b"\n")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert path.stat().st_size == st.st_size
        assert await Process(e.h).drive(job_id)
        done = await e.h.get(job_id)
        assert done.status is S.FAILED
        assert done.message == (
            f"The input file {e.uri('in/a.jsonl')} holds more records than the 10 counted when "
            f"the job was validated: it was rewritten since. Submit the job again."
        )
        assert done.counters.processed <= done.counters.total == 10

    asyncio.run(main())


def test_unchanged_input_is_processed_as_validated(env: Env) -> None:
    """Written again with the same bytes (S3: the same ETag), or its permissions changed
    (local: the content's time stays): still the validated object."""

    async def main() -> None:
        job_id = await validated(env)
        if env.kind == "s3":
            env.put("in/a.jsonl", env.get("in/a.jsonl"))
        else:
            os.chmod(env.path("in/a.jsonl"), 0o600)
        assert await Process(env.h).drive(job_id)
        done = await check_output_matches_counts(env.h, env.out, job_id, FILES)
        assert done.status is S.COMPLETED, done.message

    asyncio.run(main())
