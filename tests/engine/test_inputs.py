"""Validating with input that is not what it seems: FIFOs, links, keys through files, reads
that stall, files that grow, repeated recordIds; and what a job leaves behind (spools)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batchrock.engine.checkpoint import spool_dir
from batchrock.jobs import JobStatus
from batchrock.objects import LocalObjectStore

from .conftest import fifo_watchdog
from .harness import Harness, jsonl, out_lines, records

S = JobStatus
OUT = "s3://out-bucket/results/"

pytestmark = pytest.mark.timeout(120)


def test_fifo_inputs_fail_at_once_and_leave_the_engine_free(tmp_path: Path) -> None:
    """Four jobs reading FIFOs used to wait for a writer for ever, holding every slot of the
    engine; now each fails, naming the file, and a fifth job runs."""
    h = Harness(tmp_path)
    h.bucket("out-bucket")
    fifos = []
    for i in range(4):
        h.put(f"s3://in-bucket/job{i}/a.jsonl", jsonl(records(2)))
        fifo = h.data_dir / "s3" / "in-bucket" / f"job{i}" / "b.jsonl"
        os.mkfifo(fifo)
        fifos.append(fifo)
    h.put("s3://in-bucket/good/a.jsonl", jsonl(records(3)))

    async def main() -> None:
        bad = [await h.submit(f"s3://in-bucket/job{i}/", OUT) for i in range(4)]
        good = await h.submit("s3://in-bucket/good/", OUT)
        done = await h.run(*[j.job_id for j in bad], good.job_id, timeout=30)
        for i, job in enumerate(done[:4]):
            assert job.status is S.FAILED
            assert job.message == (
                f"The input file s3://in-bucket/job{i}/b.jsonl is a FIFO (named pipe), not a "
                f"regular file: the local object store reads regular files only."
            )
        assert done[4].status is S.COMPLETED, done[4].message

    with fifo_watchdog(*fifos) as released:
        asyncio.run(main())
    assert not released, "the engine opened a FIFO and waited for a writer"


def test_a_symlinked_input_is_named_a_link_not_missing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.bucket("out-bucket")
    h.put("s3://in-bucket/real/a.jsonl", jsonl(records(3)))
    (h.data_dir / "s3" / "in-bucket" / "in").mkdir()
    os.symlink(
        h.data_dir / "s3" / "in-bucket" / "real" / "a.jsonl",
        h.data_dir / "s3" / "in-bucket" / "in" / "a.jsonl",
    )
    os.symlink(h.data_dir / "s3" / "in-bucket" / "real", h.data_dir / "s3" / "in-bucket" / "folder")

    async def main() -> None:
        jobs = [
            await h.submit(uri, OUT)
            for uri in ("s3://in-bucket/in/", "s3://in-bucket/in/a.jsonl", "s3://in-bucket/folder/")
        ]
        done = await h.run(*[j.job_id for j in jobs])
        assert [j.status for j in done] == [S.FAILED] * 3
        link = "is a symbolic link: the local object store does not follow links below a bucket"
        assert (done[0].message or "").startswith(
            f"The input file s3://in-bucket/in/a.jsonl {link}"
        )
        assert (done[1].message or "").startswith(
            f"The input file s3://in-bucket/in/a.jsonl {link}"
        )
        assert (done[2].message or "").startswith(
            f"Cannot read the input location s3://in-bucket/folder/: s3://in-bucket/folder {link}"
        )

    asyncio.run(main())


def test_locations_through_a_file_fail_with_a_clear_message(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.put("s3://out-bucket/c25/a.jsonl", jsonl(records(3)))
    h.put("s3://in-bucket/c25/a.jsonl", jsonl(records(3)))
    (h.data_dir / "s3" / "file-bucket").write_bytes(b"a file, not a folder")

    async def main() -> None:
        cases = [
            ("s3://in-bucket/c25/a.jsonl", "s3://out-bucket/c25/a.jsonl/"),
            ("s3://in-bucket/c25/a.jsonl/", "s3://out-bucket/results/"),
            ("s3://in-bucket/c25/a.jsonl", "s3://file-bucket/results/"),
            ("s3://file-bucket/in/", "s3://out-bucket/results/"),
        ]
        jobs = [await h.submit(i, o) for i, o in cases]
        done = await h.run(*[j.job_id for j in jobs])
        assert [j.status for j in done] == [S.FAILED] * 4
        local = h.data_dir / "s3" / "file-bucket"
        assert [j.message for j in done] == [
            f"Cannot write to the output location s3://out-bucket/c25/a.jsonl/: "
            f"s3://out-bucket/c25/a.jsonl is a file, so no object can be stored below it "
            f"(s3://out-bucket/c25/a.jsonl/{jobs[0].job_id}/manifest.json.out).",
            f"The input location s3://in-bucket/c25/a.jsonl/ does not exist (no object or prefix; "
            f"local store: {h.data_dir / 's3' / 'in-bucket' / 'c25' / 'a.jsonl'} is a file, not a "
            f"folder).",
            f"Cannot use the output location s3://file-bucket/results/: The local bucket folder "
            f"{local} is a file, not a folder.",
            f"Cannot read the input location s3://file-bucket/in/: The local bucket folder "
            f"{local} is a file, not a folder.",
        ]

    asyncio.run(main())


class StallingStore(LocalObjectStore):
    """The local store, whose reads of files named ``stall.jsonl`` wait at the system call
    until ``release`` is set: a network file system, or a disk, that stopped answering."""

    def __init__(self, root: Path, *, read_timeout: float) -> None:
        super().__init__(root, read_timeout=read_timeout)
        self.release = threading.Event()
        self.stalled = threading.Event()

    def _pread(self, bucket: str, key: str, fd: int, offset: int) -> bytes:  # type: ignore[override]
        if key.endswith("stall.jsonl"):
            self.stalled.set()
            self.release.wait()
        return LocalObjectStore._pread(bucket, key, fd, offset)


def _stalling(h: Harness, read_timeout: float) -> StallingStore:
    store = StallingStore(h.data_dir / "s3", read_timeout=read_timeout)
    h.objects = store
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/stall.jsonl", jsonl(records(5)))
    return store


def test_a_stalled_read_fails_the_job_after_the_read_timeout(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    store = _stalling(h, read_timeout=0.5)

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/", OUT)
        (done,) = await h.run(job.job_id)
        assert done.status is S.FAILED
        assert done.message == (
            "Cannot read the input file s3://in-bucket/in/stall.jsonl: Reading "
            "s3://in-bucket/in/stall.jsonl stalled: no data came for 0.5 seconds (the setting "
            "object_read_timeout_seconds)."
        )

    try:
        asyncio.run(main())
    finally:
        store.release.set()


def test_stop_and_shutdown_finish_while_a_read_is_stalled(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    store = _stalling(h, read_timeout=3600)

    async def main() -> None:
        stopped = await h.submit("s3://in-bucket/in/", OUT)
        async with h.running():
            await asyncio.to_thread(store.stalled.wait, 20)
            assert (await h.get(stopped.job_id)).status is S.VALIDATING
            await h.store.transition(stopped.job_id, S.STOPPING, now=h.clock.now())
            await h.wait_for(stopped.job_id, {S.STOPPED}, timeout=15)
        store.stalled.clear()

        waiting = await h.submit("s3://in-bucket/in/", OUT)
        stop = asyncio.Event()
        engine = h.engine()
        task = asyncio.create_task(engine.run(stop))
        await asyncio.to_thread(store.stalled.wait, 20)
        started = time.monotonic()
        stop.set()  # what SIGTERM does in serve and worker
        await asyncio.wait_for(task, 15)
        assert time.monotonic() - started < 10
        # Left for the next engine to validate again.
        assert (await h.get(waiting.job_id)).status is S.VALIDATING

    try:
        asyncio.run(main())
    finally:
        store.release.set()


class EndlessStore(LocalObjectStore):
    """The local store, where a writer keeps appending to every file as it is read."""

    async def read(  # type: ignore[override]
        self, bucket: str, key: str, start: int = 0, *, if_match: str | None = None
    ) -> AsyncIterator[bytes]:
        async for chunk in super().read(bucket, key, start, if_match=if_match):
            yield chunk
        while True:
            yield b"\n" * 65536


def test_a_file_that_keeps_growing_while_validated_fails_instead_of_being_read_on(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    h.objects = EndlessStore(h.data_dir / "s3")
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(3)))

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/", OUT)
        (done,) = await h.run(job.job_id)
        assert done.status is S.FAILED
        assert done.message == (
            "The input file s3://in-bucket/in/a.jsonl changed while the job was being "
            "validated; submit the job again once it is complete."
        )

    asyncio.run(main())


def test_repeated_record_ids_are_processed_and_logged_or_fail_when_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recs = records(4)
    recs[2]["recordId"] = recs[0]["recordId"]
    later = records(2, start=10)
    later[1]["recordId"] = recs[1]["recordId"]  # a repeat in another file
    for strict in (False, True):
        h = Harness(tmp_path / f"strict-{strict}", fail_on_duplicate_record_ids=strict)
        h.bucket("out-bucket")
        h.put("s3://in-bucket/in/a.jsonl", jsonl(recs))
        h.put("s3://in-bucket/in/b.jsonl", b"\n" + jsonl(later))

        async def main(h: Harness = h, strict: bool = strict) -> None:
            job = await h.submit("s3://in-bucket/in/", OUT)
            with caplog.at_level(logging.WARNING, "batchrock.engine"):
                (done,) = await h.run(job.job_id)
            if strict:
                assert done.status is S.FAILED
                assert done.message == (
                    f"Line 3 of the input file s3://in-bucket/in/a.jsonl repeats the recordId "
                    f"'{recs[0]['recordId']}' of an earlier record; every recordId of a job "
                    f"must be unique (the setting fail_on_duplicate_record_ids is on)."
                )
                return
            assert done.status is S.COMPLETED, done.message
            out = out_lines(h.read(f"{OUT}{job.job_id}/a.jsonl.out"))
            assert [r["recordId"] for r in out] == [r["recordId"] for r in recs]
            out = out_lines(h.read(f"{OUT}{job.job_id}/b.jsonl.out"))
            assert [r["recordId"] for r in out] == [r["recordId"] for r in later]
            (warning,) = [r for r in caplog.records if "repeat the recordId" in r.getMessage()]
            assert warning.getMessage() == (
                f"job {job.job_id}: 2 record(s) repeat the recordId of an earlier one (the "
                f"first: '{recs[0]['recordId']}' on line 3 of s3://in-bucket/in/a.jsonl); each "
                f"is processed, and written with the recordId it has"
            )

        asyncio.run(main())


def test_spools_of_ended_or_unknown_jobs_are_removed_at_start(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(3)))

    async def main() -> None:
        ended = await h.submit("s3://in-bucket/in/", OUT)
        await h.store.transition(ended.job_id, S.FAILED, now=h.clock.now(), message="x")
        held = await h.submit("s3://in-bucket/in/", OUT)
        # Another live worker holds this one: its spool is in use.
        claimed = await h.store.claim(
            "other-worker", {S.SUBMITTED}, now=h.clock.now(), lease_seconds=3600
        )
        assert claimed is not None and claimed.job_id == held.job_id
        spools = {
            name: spool_dir(h.data_dir, name) for name in (ended.job_id, held.job_id, "unknown")
        }
        for folder in spools.values():
            folder.mkdir(parents=True)
            (folder / "00000-abcd.out").write_bytes(b"x" * 100)
        stop = asyncio.Event()
        stop.set()
        await h.engine().run(stop)  # starts (and stops at once)
        assert not spools[ended.job_id].exists()
        assert not spools["unknown"].exists()
        assert (spools[held.job_id] / "00000-abcd.out").exists()

    asyncio.run(main())
