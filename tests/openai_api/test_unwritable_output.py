"""A batch whose output cannot be written: its object, its files and its request_counts agree
(docs/openai.md, "Output that cannot be written"). Through the openai SDK against a real
``batchrock serve`` on the local object store, whose output object is made unwritable for real:
a folder stands where the job's ``.out`` goes, so the store's rename into place fails."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from batchrock.api.openai.batches import result_file_id
from tests.conftest import bedrock_client

from .conftest import FAST, chat_line, client, read_lines, upload, wait_batch

pytestmark = pytest.mark.timeout(120)


def output_folder(server: Any, job: str) -> Path:
    """Where the batch's job writes its output, on the server's local object store."""
    got = bedrock_client(server.url).get_model_invocation_job(jobIdentifier=job)
    uri = got["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return server.data_dir / "s3" / bucket / prefix / job


def blocked_batch(server_factory: Any, total: int, **settings: Any) -> tuple[Any, Any, Path]:
    """A server, the batch id and the job's output folder: the batch was created with no
    engine running and a folder put where its ``.out`` goes (no race with the engine), then
    the server restarted with its engine."""
    server = server_factory(**FAST, **settings, engine=False)
    c = client(server)
    batch = c.batches.create(
        input_file_id=upload(c, [chat_line(i) for i in range(total)]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    folder = output_folder(server, batch.id.removeprefix("batch_"))
    (folder / "input.jsonl.out").mkdir(parents=True)
    server.stop()
    server.settings["engine"] = True
    server.start()
    return server, batch, folder


def test_a_batch_whose_output_cannot_be_written_counts_only_what_its_files_hold(
    server_factory: Any,
) -> None:
    total = 40
    server, batch, folder = blocked_batch(server_factory, total)
    job = batch.id.removeprefix("batch_")
    blocker = folder / "input.jsonl.out"
    c = client(server)
    server.wait_history(job, "Failed")

    def check(done: Any) -> None:
        assert done.status == "failed" and done.failed_at
        assert done.errors is not None
        assert "Cannot write" in done.errors.data[0].message, done.errors
        counts = done.request_counts
        assert counts.total == total
        good = read_lines(c, done.output_file_id)
        bad = read_lines(c, done.error_file_id)
        # Every counted request is in a file, and every request in a file is counted.
        assert (len(good), len(bad)) == (counts.completed, counts.failed), counts
        assert counts.completed + counts.failed == 0  # the answers never reached the store
        assert done.usage is not None and done.usage.total_tokens == 0

    # While the location still refuses the output (never a 500, never stuck finalizing).
    check(c.batches.retrieve(batch.id))
    # Writable again (a transient fault): read again, the same answer.
    shutil.rmtree(blocker)
    check(c.batches.retrieve(batch.id))
    listed = next(b for b in c.batches.list() if b.id == batch.id)
    check(listed)
    # The Bedrock view of the same job agrees: Get and the manifest count what the output holds.
    got = bedrock_client(server.url).get_model_invocation_job(jobIdentifier=job)
    assert got["status"] == "Failed"
    manifest = json.loads((folder / "manifest.json.out").read_bytes())
    assert manifest["processedRecordCount"] == got.get("processedRecordCount", 0) == 0
    assert manifest["totalRecordCount"] == total
    assert not (folder / "input.jsonl.out").exists()
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a batch with status"):
        c.batches.cancel(batch.id)


def test_a_cancelled_batch_whose_output_cannot_be_written_counts_only_what_its_files_hold(
    server_factory: Any,
) -> None:
    total = 2000
    server, batch, folder = blocked_batch(
        server_factory, total, builtin_latency_ms=20, engine_record_concurrency=2
    )
    job = batch.id.removeprefix("batch_")
    c = client(server)
    deadline = time.monotonic() + 60
    while server.progress(job)[1] == 0:  # records checkpointed: it is running
        assert time.monotonic() < deadline
        time.sleep(0.02)
    c.batches.cancel(batch.id)
    done = wait_batch(c, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    counts = done.request_counts
    good = read_lines(c, done.output_file_id)
    bad = read_lines(c, done.error_file_id)
    assert (len(good), len(bad)) == (counts.completed, counts.failed) == (0, 0), counts
    got = bedrock_client(server.url).get_model_invocation_job(jobIdentifier=job)
    assert got["status"] == "Stopped" and got["message"].startswith("Cannot write the results")
    # The batch says so too: a cancelled batch with no results is not silent about why.
    assert done.errors is not None, done
    [error] = done.errors.data
    assert error.code == "output_failed" and error.message == got["message"]
    manifest = json.loads((folder / "manifest.json.out").read_bytes())
    assert manifest["processedRecordCount"] == got.get("processedRecordCount", 0) == 0


def blocked_result_files(server_factory: Any, **settings: Any) -> tuple[Any, Any, Path]:
    """A server and an ended batch that has an output file and an error file to be (some
    requests are refused: error draws are a function of the record), whose error file's
    object is blocked by a folder, the output file's not; nothing has read it yet."""
    server = server_factory(**FAST, builtin_error_rate=0.3, **settings)
    c = client(server)
    batch = c.batches.create(
        input_file_id=upload(c, [chat_line(i) for i in range(TOTAL)]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    job = batch.id.removeprefix("batch_")
    blocker = bucket_of(server) / "files" / result_file_id(job, "error")
    blocker.mkdir(parents=True)
    server.wait_history(job, "Completed")  # no read of the batch yet: nothing finalized it
    return server, batch, blocker


TOTAL = 40


def bucket_of(server: Any) -> Path:
    return server.data_dir / "s3" / "batchrock-files-123456789012"


def test_result_files_that_cannot_be_written_read_finalizing_never_half_shown(
    server_factory: Any,
) -> None:
    server, batch, blocker = blocked_result_files(server_factory)
    c = client(server)
    for _ in range(3):  # each read tries again; a 200 every time, never a 500
        got = c.batches.retrieve(batch.id)
        assert got.status == "finalizing" and got.errors is None, got
        assert (got.output_file_id, got.error_file_id) == (None, None)
    listed = next(b for b in c.batches.list() if b.id == batch.id)
    assert listed.status == "finalizing"
    assert (listed.output_file_id, listed.error_file_id) == (None, None)
    # Neither file is listed by the Files API while the batch names neither.
    assert [f.id for f in c.files.list(purpose="batch_output")] == []
    # The failure is logged once (per reason), not once per read.
    assert server.log().count("its result files could not be written") == 1, server.log()
    shutil.rmtree(blocker)
    done = c.batches.retrieve(batch.id)
    assert done.status == "completed" and done.errors is None
    counts = done.request_counts
    good = read_lines(c, done.output_file_id)
    bad = read_lines(c, done.error_file_id)
    assert (len(good), len(bad)) == (counts.completed, counts.failed)
    assert counts.completed and counts.failed and counts.completed + counts.failed == TOTAL
    assert sorted(x["custom_id"] for x in good + bad) == sorted(f"req-{i}" for i in range(TOTAL))
    assert {f.id for f in c.files.list(purpose="batch_output")} == {
        done.output_file_id,
        done.error_file_id,
    }


def test_result_files_still_refused_after_the_retry_bound_fail_the_batch(
    server_factory: Any,
) -> None:
    # time_scale 600: FINALIZE_RETRY (10 minutes of service time) passes in 1 s, and the
    # batch's 24-hour window in 144 s (the job ends long before, however busy the machine).
    server, batch, blocker = blocked_result_files(server_factory, time_scale=600)
    c = client(server)
    job = batch.id.removeprefix("batch_")
    first = c.batches.retrieve(batch.id)
    assert first.status == "finalizing", first  # the bound counts from the first failure
    done = wait_batch(c, batch.id)  # as an SDK polling loop does: it ends
    assert done.status == "failed" and done.failed_at and done.completed_at is None, done
    assert done.errors is not None
    [error] = done.errors.data
    assert error.code == "output_failed"
    assert "could not be written" in error.message and job in error.message, error
    # What the batch's files hold: nothing (it has none); the job's own output is kept.
    assert (done.output_file_id, done.error_file_id) == (None, None)
    assert (done.request_counts.total, done.request_counts.completed) == (TOTAL, 0)
    assert done.request_counts.failed == 0
    assert [f.id for f in c.files.list(purpose="batch_output")] == []
    # The output file's bytes, written before the error file was refused, are removed.
    assert not (bucket_of(server) / "files" / result_file_id(job, "output")).exists()
    # Failed is final: once the store would take the files, the batch stays as it was.
    shutil.rmtree(blocker)
    again = c.batches.retrieve(batch.id)
    assert (again.status, again.errors, again.failed_at) == ("failed", done.errors, done.failed_at)
    listed = next(b for b in c.batches.list() if b.id == batch.id)
    assert listed.status == "failed" and listed.errors == done.errors
    log = server.log()
    assert log.count("giving up on its result files") == 1, log
    assert log.count("its result files could not be written") == 1, log
    got = bedrock_client(server.url).get_model_invocation_job(jobIdentifier=job)
    assert got["status"] == "Completed"  # the job did run: only its files are missing
