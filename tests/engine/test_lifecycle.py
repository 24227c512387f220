"""The lifecycle, driven by a real engine over a real store and the local object store."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrock.clock import FakeClock
from batchrock.engine.records import generated_record_id
from batchrock.jobs import JobStatus

from .harness import (
    Gate,
    Harness,
    echo,
    jsonl,
    out_lines,
    processed_is,
    processed_reached,
    records,
    slow,
)

S = JobStatus
OUT = "s3://out-bucket/results"


def manifest(h: Harness, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(h.read(f"{OUT}/{job_id}/manifest.json.out"))
    return data


def test_completed_job_writes_every_record_in_order_with_manifest(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.bucket("out-bucket")
    first = records(150)
    # Records without recordId, a blank line and a last line without newline.
    second = records(60, start=150, ids=False)
    second[3]["modelInput"] = {"fail": True, "prompt": "x"}
    h.put("s3://in-bucket/batch/a.jsonl", jsonl(first))
    h.put("s3://in-bucket/batch/b.jsonl", jsonl(second[:10]) + b"\n  \n" + jsonl(second[10:])[:-1])
    h.put("s3://in-bucket/batch/notes.txt", b"not input")

    async def main() -> None:
        job = await h.submit("s3://in-bucket/batch/", OUT + "/")
        (done,) = await h.run(job.job_id)
        assert done.status is S.COMPLETED, done.message
        assert await h.statuses(job.job_id) == [
            "Submitted",
            "Validating",
            "Scheduled",
            "InProgress",
            "Completed",
        ]
        assert done.end_time is not None
        c = done.counters
        assert (c.total, c.processed, c.success, c.error) == (210, 210, 209, 1)

        a = out_lines(h.read(f"{OUT}/{job.job_id}/a.jsonl.out"))
        assert [r["recordId"] for r in a] == [r["recordId"] for r in first]
        for line, rec in zip(a, first, strict=True):
            assert list(line) == ["recordId", "modelInput", "modelOutput"]
            assert line["modelInput"] == rec["modelInput"]
            assert line["modelOutput"] == {
                "echo": rec["modelInput"]["prompt"],
                "id": rec["recordId"],
            }

        b = out_lines(h.read(f"{OUT}/{job.job_id}/b.jsonl.out"))
        assert len(b) == 60
        # Line numbers count the blank line: records after it sit one line further down.
        numbers = list(range(1, 11)) + list(range(13, 63))
        expected_ids = [generated_record_id(job.job_id, 1, n) for n in numbers]
        assert [r["recordId"] for r in b] == expected_ids
        assert all(len(i) == 11 and i.isalnum() for i in expected_ids)
        assert b[3] == {
            "recordId": expected_ids[3],
            "modelInput": {"fail": True, "prompt": "x"},
            "error": {"errorCode": 400, "errorMessage": f"bad record {expected_ids[3]}"},
        }
        assert not h.exists(f"{OUT}/{job.job_id}/notes.txt.out")

        tokens_in = sum(len(r["modelInput"]["prompt"].split()) for r in first + second) - 1
        assert manifest(h, job.job_id) == {
            "totalRecordCount": 210,
            "processedRecordCount": 210,
            "successRecordCount": 209,
            "errorRecordCount": 1,
            "inputTokenCount": tokens_in,
            "outputTokenCount": 2 * 209,
            "throttledRequestCount": 0,
        }
        assert (c.input_tokens, c.output_tokens) == (tokens_in, 418)
        # Nothing is left behind in the spool.
        assert not (h.data_dir / "spool" / job.job_id).exists()

    asyncio.run(main())


def test_single_object_input_and_output_uri_without_slash(tmp_path: Path) -> None:
    h = Harness(tmp_path, engine_record_concurrency=1)
    h.bucket("out-bucket")
    # A UTF-8 byte order mark, as some editors write, is not part of the first record.
    h.put("s3://in-bucket/deep/one.jsonl", b"\xef\xbb\xbf" + jsonl(records(5)))

    async def main() -> None:
        job = await h.submit("s3://in-bucket/deep/one.jsonl", "s3://out-bucket/results")
        (done,) = await h.run(job.job_id)
        assert done.status is S.COMPLETED, done.message
        lines = out_lines(h.read(f"{OUT}/{job.job_id}/one.jsonl.out"))
        assert [r["recordId"] for r in lines] == [f"REC{i:08d}" for i in range(5)]

    asyncio.run(main())


BAD_INPUTS: list[tuple[str, bytes, list[str]]] = [
    (
        "not-json",
        b'{"modelInput": {}}\n{"modelInput": \n',
        ["Line 2", "s3://in-bucket/in/x.jsonl", "not valid JSON"],
    ),
    ("array", b'{"modelInput": {}}\n[1, 2]\n', ["Line 2", "JSON array", "not a JSON object"]),
    ("no-model-input", b'{"recordId": "a", "prompt": "x"}\n', ["Line 1", '"modelInput"']),
    ("model-input-string", b'{"modelInput": "hi"}\n', ["Line 1", '"modelInput"', "string"]),
    (
        "record-id-number",
        b'{"recordId": 7, "modelInput": {}}\n',
        ["Line 1", '"recordId"', "number"],
    ),
    (
        "binary",
        b'{"modelInput": {}}\n\xff\xfe\x00garbage\n',
        ["Line 2 of the input file s3://in-bucket/in/x.jsonl is not UTF-8 text (byte 1"],
    ),
    # Inside modelInput, where the fast record check skips without decoding: the UTF-8 check
    # and the line-by-line fallback must still catch these (orjson alone would say "str is
    # not valid UTF-8: surrogates not allowed").
    (
        "not-utf8-inside",
        b'{"modelInput": {}}\n' * 3 + b'{"modelInput": {"prompt": "caf\xe9"}}\n',
        [
            "Line 4 of the input file s3://in-bucket/in/x.jsonl is not UTF-8 text (byte 31 "
            "of the line, 0xe9, is not valid UTF-8; JSONL input must be UTF-8)."
        ],
    ),
    (
        "gzip",
        gzip.compress(b'{"modelInput": {}}\n' * 10),
        [
            "The input file s3://in-bucket/in/x.jsonl is compressed with gzip (it starts with "
            "the bytes 1f 8b): batch inference reads uncompressed JSONL text only; decompress "
            "it first."
        ],
    ),
    (
        "utf-16",
        '{"modelInput": {}}\n'.encode("utf-16"),
        ["is UTF-16 text (it starts with the bytes ff fe", "save it as UTF-8"],
    ),
    (
        "too-deep",
        b'{"modelInput": {}}\n{"modelInput": {"a": ' + b"[" * 3000 + b"]" * 3000 + b"}}\n",
        ["Line 2", "not valid JSON"],
    ),
    (
        "bad-escape-after-good-lines",
        b'{"modelInput": {}}\n' * 2000 + b'{"modelInput": {"p": "\\x"}}\n',
        ["Line 2001", "not valid JSON"],
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "expected"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_malformed_input_fails_naming_file_and_line(
    tmp_path: Path, name: str, content: bytes, expected: list[str]
) -> None:
    h = Harness(tmp_path)
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/x.jsonl", content)

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/")
        (done,) = await h.run(job.job_id)
        assert done.status is S.FAILED
        for part in expected:
            assert part in (done.message or ""), done.message
        assert await h.statuses(job.job_id) == ["Submitted", "Validating", "Failed"]
        assert h.backend.calls == []

    asyncio.run(main())


def _setup_missing(h: Harness) -> None:
    h.bucket("out-bucket")
    h.bucket("empty-bucket")
    h.put("s3://in-bucket/csv/data.csv", b"a,b\n")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(3)))


LOCATION_ERRORS = [
    ("s3://no-such-bucket/in/", OUT, ["bucket 'no-such-bucket' does not exist"]),
    ("s3://empty-bucket/in/", OUT, ["s3://empty-bucket/in/", "does not exist"]),
    ("s3://in-bucket/csv/", OUT, ["holds no .jsonl files"]),
    ("s3://in-bucket/csv/data.csv", OUT, ["does not end in .jsonl"]),
    ("s3://in-bucket/../etc/", OUT, ["s3://in-bucket/../etc/"]),
    ("s3://in-bucket/in/", "s3://no-out-bucket/x/", ["output S3 bucket 'no-out-bucket'"]),
    ("s3://in-bucket/in/", "s3://out-bucket/../x/", ["Cannot write to the output location"]),
    # In the local store a missing bucket or input names the folder to create ({s3}: its root).
    ("s3://no-such-bucket/in/", OUT, ["local store: create the folder {s3}/no-such-bucket)"]),
    (
        "s3://in-bucket/in/",
        "s3://no-out-bucket/x/",
        [
            "The output S3 bucket 'no-out-bucket' does not exist (s3://no-out-bucket/x/; "
            "local store: create the folder {s3}/no-out-bucket)."
        ],
    ),
    (
        "s3://empty-bucket/in/",
        OUT,
        ["local store: put .jsonl files in the folder {s3}/empty-bucket/in)"],
    ),
    (
        "s3://empty-bucket/in/a.jsonl",
        OUT,
        ["local store: there is no file or folder {s3}/empty-bucket/in/a.jsonl)"],
    ),
]


@pytest.mark.parametrize(("input_uri", "output_uri", "expected"), LOCATION_ERRORS)
def test_bad_locations_fail_with_clear_message(
    tmp_path: Path, input_uri: str, output_uri: str, expected: list[str]
) -> None:
    h = Harness(tmp_path)
    _setup_missing(h)

    async def main() -> None:
        job = await h.submit(input_uri, output_uri)
        (done,) = await h.run(job.job_id)
        assert done.status is S.FAILED
        for part in expected:
            assert part.format(s3=h.data_dir / "s3") in (done.message or ""), done.message

    asyncio.run(main())


def test_unknown_model_fails_with_the_resolver_message(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    _setup_missing(h)

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/", model_id="unknown.model-v1")
        (done,) = await h.run(job.job_id)
        assert done.status is S.FAILED
        assert "No model backend is configured for model 'unknown.model-v1'" in (done.message or "")

    asyncio.run(main())


QUOTAS: list[tuple[dict[str, Any], int, list[str]]] = [
    (
        {"quota_min_records_per_job": 100},
        99,
        [
            "The job has 99 records, fewer than the quota 'Minimum number of records per batch "
            "inference job' of 100. (batchrock: lower the minimum with the setting "
            "quota_min_records_per_job, e.g. BATCHROCK_QUOTA_MIN_RECORDS_PER_JOB=1 or "
            "batchrock serve --quota-min-records-per-job 1.)"
        ],
    ),
    (
        {"quota_max_records_per_job": 50},
        51,
        ["at least 51 records", "Records per batch inference job' of 50"],
    ),
    (
        {"quota_max_records_per_file": 20},
        21,
        ["at least 21 records", "Records per input file per batch inference job' of 20"],
    ),
    (
        {"quota_max_file_bytes": 1000},
        40,
        ["bytes, more than", "Batch inference input file size", "1000"],
    ),
    ({"quota_max_job_bytes": 1000}, 40, ["Batch inference job size", "1000 bytes"]),
]


@pytest.mark.parametrize(("quota", "n", "expected"), QUOTAS, ids=[next(iter(q[0])) for q in QUOTAS])
def test_quota_breach_fails_naming_quota_and_numbers(
    tmp_path: Path, quota: dict[str, Any], n: int, expected: list[str]
) -> None:
    h = Harness(tmp_path, **quota)
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(n)))

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/")
        (done,) = await h.run(job.job_id)
        assert done.status is S.FAILED
        for part in expected:
            assert part in (done.message or ""), done.message

    asyncio.run(main())


def test_stop_mid_run_keeps_finished_records_and_manifest(tmp_path: Path) -> None:
    h = Harness(tmp_path, handler=slow(0.01), engine_record_concurrency=4)
    h.bucket("out-bucket")
    recs = records(2000)
    h.put("s3://in-bucket/in/a.jsonl", jsonl(recs))

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/")
        async with h.running():
            while (await h.get(job.job_id)).counters.processed < 50:
                await asyncio.sleep(0.01)
            await h.store.transition(job.job_id, S.STOPPING, now=h.clock.now())
            done = await h.wait_for(job.job_id, {S.STOPPED}, timeout=10)
        c = done.counters
        assert 50 <= c.processed < 2000
        lines = out_lines(h.read(f"{OUT}/{job.job_id}/a.jsonl.out"))
        # Exactly the first `processed` records, in order, each once.
        assert [r["recordId"] for r in lines] == [r["recordId"] for r in recs[: c.processed]]
        m = manifest(h, job.job_id)
        assert m["totalRecordCount"] == 2000
        assert m["processedRecordCount"] == m["successRecordCount"] == c.processed
        assert await h.statuses(job.job_id) == [
            "Submitted",
            "Validating",
            "Scheduled",
            "InProgress",
            "Stopping",
            "Stopped",
        ]

    asyncio.run(main())


def test_stop_before_start_ends_stopped(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(10)))

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/")
        await h.store.transition(job.job_id, S.STOPPING, now=h.clock.now())
        (done,) = await h.run(job.job_id)
        assert done.status is S.STOPPED
        assert h.backend.calls == []
        assert manifest(h, job.job_id)["processedRecordCount"] == 0

    asyncio.run(main())


def test_concurrent_jobs_quota_keeps_the_rest_scheduled(tmp_path: Path) -> None:
    gate = Gate()  # the model holds every record until the test opens it
    h = Harness(
        tmp_path,
        handler=gate,
        clock=FakeClock(datetime.now(UTC)),
        quota_max_concurrent_jobs_per_model=1,
    )
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(200)))

    async def main() -> None:
        same = [(await h.submit("s3://in-bucket/in/")).job_id for _ in range(2)]
        other = await h.submit("s3://in-bucket/in/", model_id="amazon.titan-text-express-v1")
        async with h.running(engine_record_concurrency=2) as engine:
            # Another model has its own quota: one job of each model runs (2 records each
            # held by the model); validated, the other job of the first model waits.
            await h.until(lambda: gate.held == 4 and len(engine.running_jobs) == 2)
            assert other.job_id in engine.running_jobs
            (first,) = engine.running_jobs & set(same)
            (second,) = set(same) - {first}
            assert await h.statuses(first) == ["Submitted", "Validating", "Scheduled", "InProgress"]
            assert await h.statuses(second) == ["Submitted", "Validating", "Scheduled"]
            gate.open()
            done = await h.wait_until_final([*same, other.job_id], engine=engine)
        assert [j.status for j in done] == [S.COMPLETED] * 3
        assert all(j.counters.success == 200 for j in done)
        # The second job started only once the first had completed.
        order = await h.history()
        assert order.index((second, "InProgress")) > order.index((first, "Completed"))

    asyncio.run(main())


def test_scheduled_job_expires_when_it_cannot_start_in_time(tmp_path: Path) -> None:
    # The clock jumps 24 h while the model holds the running job mid-file: the blocked job
    # expires, the running one is cut to PartiallyCompleted. A lease longer than the jump
    # keeps the running job with its runner.
    gate = Gate(allow=50)
    clock = FakeClock(datetime.now(UTC))
    h = Harness(
        tmp_path,
        handler=gate,
        clock=clock,
        quota_max_concurrent_jobs_per_model=1,
        engine_lease_seconds=3 * 24 * 3600,
    )
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(3000)))

    async def main() -> None:
        ids = [(await h.submit("s3://in-bucket/in/")).job_id for _ in range(2)]
        async with h.running(engine_record_concurrency=2) as engine:
            await h.until(lambda: gate.held == 2 and len(engine.running_jobs) == 1)
            (running,) = engine.running_jobs
            (waiting,) = set(ids) - {running}
            assert await h.statuses(waiting) == ["Submitted", "Validating", "Scheduled"]
            clock.advance(timedelta(hours=24))
            # In-flight records get their grace period, then are cancelled.
            await h.advance_until(lambda: not engine.running_jobs and not gate.held)
            r, w = await h.wait_until_final([running, waiting], engine=engine)
        assert w.status is S.EXPIRED
        assert await h.statuses(waiting) == ["Submitted", "Validating", "Scheduled", "Expired"]
        assert r.status is S.PARTIALLY_COMPLETED
        assert r.counters.processed == 50  # the records the model answered
        lines = out_lines(h.read(f"{OUT}/{running}/a.jsonl.out"))
        assert [x["recordId"] for x in lines] == [f"REC{i:08d}" for i in range(50)]
        assert manifest(h, running)["processedRecordCount"] == 50
        assert manifest(h, running)["totalRecordCount"] == 3000

    asyncio.run(main())


@pytest.mark.parametrize("time_scale", [1, 3600], ids=["plain", "time_scale"])
def test_the_sweep_expires_an_overdue_job_behind_a_thousand_waiting_ones(
    tmp_path: Path, time_scale: float
) -> None:
    """1,000 older jobs wait with a week's timeout; a newer one with 24 h runs out first and
    is expired, though it is not among the 1,000 oldest waiting jobs (the sweep read only
    those, and missed it). Not a moment early: a microsecond before its deadline (24 h of
    service time, an hour lasting a second at 3600) it still waits."""
    clock = FakeClock(datetime.now(UTC), time_scale=time_scale)
    h = Harness(tmp_path, clock=clock)

    async def main() -> None:
        for _ in range(1000):
            await h.submit("s3://in-bucket/in/", timeout_hours=168)
        clock.advance(1)
        late = await h.submit("s3://in-bucket/in/", timeout_hours=24)
        engine = h.engine()
        deadline = late.submit_time + timedelta(hours=24) / time_scale
        clock.advance(deadline - clock.now() - timedelta(microseconds=1))
        await engine.expire_overdue()
        assert (await h.get(late.job_id)).status is S.SUBMITTED
        clock.advance(timedelta(microseconds=1))
        await engine.expire_overdue()
        assert await h.statuses(late.job_id) == ["Submitted", "Expired"]
        assert (await h.get(h.job_ids[0])).status is S.SUBMITTED
        await h.close()

    asyncio.run(main())


def test_shutdown_and_resume_on_another_engine_processes_each_record_once(tmp_path: Path) -> None:
    h = Harness(tmp_path, handler=slow(0.005), engine_record_concurrency=4)
    h.bucket("out-bucket")
    recs = records(1500)
    h.put("s3://in-bucket/in/a.jsonl", jsonl(recs[:700]))
    h.put("s3://in-bucket/in/b.jsonl", jsonl(recs[700:]))

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/")
        for threshold in (200, 800, 1000):
            async with h.running():
                while (await h.get(job.job_id)).counters.processed < threshold:
                    await asyncio.sleep(0.01)
            assert (await h.get(job.job_id)).status is S.IN_PROGRESS
            if threshold == 800:
                # The spool of b.jsonl vanishes (a worker on another disk): b is redone from
                # its start, with the counters it started with.
                for spool in (h.data_dir / "spool" / job.job_id).iterdir():
                    spool.unlink()
        (done,) = await h.run(job.job_id)
        assert done.status is S.COMPLETED
        c = done.counters
        assert (c.total, c.processed, c.success, c.error) == (1500, 1500, 1500, 0)
        got = out_lines(h.read(f"{OUT}/{job.job_id}/a.jsonl.out"))
        got += out_lines(h.read(f"{OUT}/{job.job_id}/b.jsonl.out"))
        assert [r["recordId"] for r in got] == [r["recordId"] for r in recs]
        assert manifest(h, job.job_id)["successRecordCount"] == 1500
        calls = [call.record_id for call in h.backend.calls]
        assert set(calls) == {r["recordId"] for r in recs}

    asyncio.run(main())


def test_backend_exception_becomes_a_record_error(tmp_path: Path) -> None:
    async def flaky(request: Any) -> Any:
        if request.record_id == "REC00000002":
            raise RuntimeError("boom")
        return await echo(request)

    h = Harness(tmp_path, handler=flaky)
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(5)))

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/")
        (done,) = await h.run(job.job_id)
        assert done.status is S.COMPLETED
        lines = out_lines(h.read(f"{OUT}/{job.job_id}/a.jsonl.out"))
        assert lines[2]["error"]["errorCode"] == 500
        assert done.counters.error == 1

    asyncio.run(main())


def test_input_removed_mid_run_fails_keeping_finished_records(tmp_path: Path) -> None:
    h = Harness(tmp_path, handler=slow(0.005), engine_record_concurrency=4)
    h.bucket("out-bucket")
    recs = records(1000)
    h.put("s3://in-bucket/in/a.jsonl", jsonl(recs))

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/")
        async with h.running():
            while (await h.get(job.job_id)).counters.processed < 50:
                await asyncio.sleep(0.01)
        (h.data_dir / "s3" / "in-bucket" / "in" / "a.jsonl").unlink()
        (done,) = await h.run(job.job_id)
        assert done.status is S.FAILED
        assert "s3://in-bucket/in/a.jsonl does not exist" in (done.message or "")
        n = done.counters.processed
        lines = out_lines(h.read(f"{OUT}/{job.job_id}/a.jsonl.out"))
        assert [x["recordId"] for x in lines] == [r["recordId"] for r in recs[:n]]
        assert manifest(h, job.job_id)["processedRecordCount"] == n
        assert not (h.data_dir / "spool" / job.job_id).exists()

    asyncio.run(main())


def test_worker_that_lost_its_lease_stops_writing(tmp_path: Path) -> None:
    h = Harness(tmp_path, handler=slow(0.005), engine_record_concurrency=4)
    h.bucket("out-bucket")
    recs = records(1200)
    h.put("s3://in-bucket/in/a.jsonl", jsonl(recs))

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/")
        async with h.running() as engine:
            await h.until(lambda: processed_reached(h, job.job_id, 100))
            # What a second worker's claim does once this worker's lease has lapsed.
            far = h.clock.now() + timedelta(days=3650)
            taken = await h.store.claim(
                "another-worker", {S.IN_PROGRESS}, now=far, lease_seconds=3600
            )
            assert taken is not None and taken.job_id == job.job_id
            frozen = await h.get(job.job_id)
            checkpoint = await h.store.load_checkpoint(job.job_id)
            # The runner notices (at its next renewal or checkpoint) and leaves the job.
            await h.until(lambda: not engine.running_jobs)
            assert (await h.get(job.job_id)).counters == frozen.counters
            assert await h.store.load_checkpoint(job.job_id) == checkpoint
            assert frozen.status is S.IN_PROGRESS and frozen.counters.processed < 1200
        await h.free(job.job_id)  # that worker died too: the job is free again
        (done,) = await h.run(job.job_id)
        assert done.status is S.COMPLETED
        lines = out_lines(h.read(f"{OUT}/{job.job_id}/a.jsonl.out"))
        assert [x["recordId"] for x in lines] == [r["recordId"] for r in recs]

    asyncio.run(main())


def test_manifest_follows_progress_while_in_progress(tmp_path: Path) -> None:
    from batchrock.engine.runner import MANIFEST_EVERY_SECONDS

    gate = Gate(allow=300)  # the model stops answering half-way, until the test opens it
    clock = FakeClock(datetime.now(UTC))
    h = Harness(tmp_path, handler=gate, clock=clock, engine_lease_seconds=3600)
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(600)))

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/")
        uri = f"{OUT}/{job.job_id}/manifest.json.out"
        async with h.running(engine_record_concurrency=2) as engine:
            await h.until(lambda: gate.held == 2)
            # Zeros since Validating; the job's next manifest is due in 5 s.
            assert manifest(h, job.job_id)["processedRecordCount"] == 0
            clock.advance(MANIFEST_EVERY_SECONDS - 0.1)
            await h.until(lambda: processed_is(h, job.job_id, 300))
            assert manifest(h, job.job_id)["processedRecordCount"] == 0
            clock.advance(0.1)
            await h.until(
                lambda: h.exists(uri) and manifest(h, job.job_id)["processedRecordCount"] == 300
            )
            assert manifest(h, job.job_id)["totalRecordCount"] == 600
            gate.open()
            (done,) = await h.wait_until_final([job.job_id], engine=engine)
        assert done.status is S.COMPLETED
        assert manifest(h, job.job_id)["processedRecordCount"] == 600

    asyncio.run(main())


def test_a_woken_engine_does_not_wait_for_its_next_poll(tmp_path: Path) -> None:
    """`serve` wakes its engine when the API creates a job, and a runner wakes it when a step
    ends (a validated job is started at once): with the clock frozen, no poll ever comes, and
    a job still runs through."""
    clock = FakeClock(datetime.now(UTC))
    # Polls (and, where the store wakes engines, sweeps) 30 s apart.
    h = Harness(tmp_path, clock=clock, engine_poll_seconds=30.0, engine_sweep_seconds=30.0)
    h.bucket("out-bucket")
    h.put("s3://in-bucket/in/a.jsonl", jsonl(records(20)))

    async def main() -> None:
        async with h.running() as engine:
            await h.until(lambda: clock.pending() == [30.0])  # polled once, found nothing
            job = await h.submit("s3://in-bucket/in/")
            engine.wake()
            (done,) = await h.wait_until_final([job.job_id], engine=engine)
            assert clock.monotonic() == 0
        assert done.status is S.COMPLETED
        assert done.counters.success == 20

    asyncio.run(main())
