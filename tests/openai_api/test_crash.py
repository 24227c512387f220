"""SIGKILL a server mid-batch, again and again: the batch still completes, and its output and
error files hold every request exactly once (the engine's crash safety, seen through the
OpenAI API)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from .conftest import FAST, chat_line, client, read_lines, upload, wait_batch

pytestmark = pytest.mark.timeout(150)


def test_sigkill_mid_batch_loses_and_duplicates_no_line(server_factory: Any) -> None:
    server = server_factory(
        **{**FAST, "engine_lease_seconds": 1},
        builtin_latency_ms=10,
        engine_record_concurrency=4,
        builtin_error_rate=0.05,
    )
    total = 600
    c = client(server)
    batch = c.batches.create(
        input_file_id=upload(c, [chat_line(i) for i in range(total)]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    job = batch.id.removeprefix("batch_")
    kills = 0
    final = {"Completed", "Failed", "Stopped", "Expired", "PartiallyCompleted"}
    for threshold in (50, 200, 400):
        # Kill on observed progress (records checkpointed), not after a time.
        deadline = time.monotonic() + 60
        while True:
            status, processed = server.progress(job)
            if status in final or (status == "InProgress" and processed >= threshold):
                break
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.005)
        if status in final:
            break
        server.kill()
        server.start()
        kills += 1
    assert kills >= 1
    c = client(server)
    done = wait_batch(c, batch.id, timeout=90)
    assert done.status == "completed"
    good = read_lines(c, done.output_file_id)
    bad = read_lines(c, done.error_file_id)
    ids = [x["custom_id"] for x in good + bad]
    assert sorted(ids) == sorted(f"req-{i}" for i in range(total))  # each exactly once
    assert (done.request_counts.completed, done.request_counts.failed) == (len(good), len(bad))
    assert bad and all(x["response"]["status_code"] >= 400 for x in bad)
    # Output order is input order.
    order = {f"req-{i}": i for i in range(total)}
    assert [order[x["custom_id"]] for x in good] == sorted(order[x["custom_id"]] for x in good)
