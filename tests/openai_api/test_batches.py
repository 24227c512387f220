"""/v1/batches through the openai SDK against a real ``batchrock serve``: a batch is a job of
the same store, run by the same engine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.backends.conftest import FakeServer
from tests.conftest import bedrock_client

from .conftest import FAST, chat_line, client, read_lines, upload, wait_batch

pytestmark = pytest.mark.timeout(120)


def create(c: openai.OpenAI, file_id: str, endpoint: str = "/v1/chat/completions") -> Any:
    return c.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        metadata={"team": "search"},
    )


def test_chat_batch_through_the_builtin_model(server_factory: Any) -> None:
    server = server_factory(**FAST)
    c = client(server)
    file_id = upload(c, [chat_line(i) for i in range(30)])
    batch = create(c, file_id)
    assert batch.id.startswith("batch_") and batch.status == "validating"
    assert batch.expires_at == batch.created_at + 86400
    done = wait_batch(c, batch.id)
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed) == (30, 30)
    assert done.request_counts.failed == 0 and done.error_file_id is None
    assert done.metadata == {"team": "search"} and done.model == "gpt-4o-mini"
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.usage is not None and done.usage.output_tokens > 0
    out = read_lines(c, done.output_file_id)
    assert [line["custom_id"] for line in out] == [f"req-{i}" for i in range(30)]
    first = out[0]
    assert first["error"] is None and first["id"].startswith("batch_req_")
    assert first["response"]["status_code"] == 200
    assert first["response"]["body"]["object"] == "chat.completion"
    assert first["response"]["body"]["choices"][0]["message"]["role"] == "assistant"
    # Deterministic: the same batch again gives the same bodies.
    again = wait_batch(c, create(c, upload(c, [chat_line(i) for i in range(30)])).id)
    assert [x["response"]["body"] for x in read_lines(c, again.output_file_id)] == [
        x["response"]["body"] for x in out
    ]
    output = c.files.retrieve(done.output_file_id or "")
    assert output.purpose == "batch_output"
    # Listed newest first; the SDK's pages follow after=.
    assert [b.id for b in c.batches.list(limit=1)] == [again.id, done.id]
    # The batch is a job: the Bedrock API lists it (docs/openai.md).
    jobs = bedrock_client(server.url).list_model_invocation_jobs()["invocationJobSummaries"]
    job = next(j for j in jobs if j["jobArn"].endswith("/" + done.id.removeprefix("batch_")))
    assert job["status"] == "Completed" and job["jobName"] == "openai-batch"
    assert job["modelInvocationType"] == "openai:/v1/chat/completions"


def test_embeddings_and_completions_through_the_builtin_model(server_factory: Any) -> None:
    server = server_factory(**FAST)
    c = client(server)
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": f"text {i}", "dimensions": 8},
        }
        for i in range(5)
    ]
    done = wait_batch(c, create(c, upload(c, lines), "/v1/embeddings").id)
    assert done.status == "completed"
    out = read_lines(c, done.output_file_id)
    body = out[0]["response"]["body"]
    assert body["object"] == "list" and len(body["data"][0]["embedding"]) == 8
    prompts = [
        {"custom_id": f"p{i}", "method": "POST", "url": "/v1/completions",
         "body": {"model": "m", "prompt": f"once {i}", "max_tokens": 5}}
        for i in range(3)
    ]  # fmt: skip
    done = wait_batch(c, create(c, upload(c, prompts), "/v1/completions").id)
    text = read_lines(c, done.output_file_id)[0]["response"]["body"]
    assert text["object"] == "text_completion" and text["choices"][0]["text"]


def test_a_malformed_file_fails_the_batch_with_line_numbers(server_factory: Any) -> None:
    server = server_factory(**FAST)
    c = client(server)
    content = b"".join(
        [
            b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
            b'"body": {"model": "m", "messages": []}}\n',
            b"{oops\n",
            b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
            b'"body": {"model": "m", "messages": []}}\n',
            b'{"custom_id": "b", "method": "POST", "url": "/v1/embeddings", "body": {}}\n',
        ]
    )
    file_id = c.files.create(file=("bad.jsonl", content), purpose="batch").id
    batch = create(c, file_id)
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None
    assert [(e.code, e.line) for e in batch.errors.data or []] == [
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 3),
        ("url_mismatch", 4),
    ]
    again = c.batches.retrieve(batch.id)
    assert again.status == "failed"
    assert again.output_file_id is None and again.error_file_id is None  # nothing ran
    empty = create(c, c.files.create(file=("e.jsonl", b""), purpose="batch").id)
    assert empty.status == "failed" and empty.errors is not None
    assert [e.code for e in empty.errors.data or []] == ["empty_file"]


def test_create_refusals(server_factory: Any) -> None:
    server = server_factory(**FAST)
    c = client(server)
    file_id = upload(c, [chat_line(1)])
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        c.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                         completion_window="48h")  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        c.batches.create(input_file_id=file_id, endpoint="/v1/moderations",
                         completion_window="24h")  # fmt: skip
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        c.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                         completion_window="24h")  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="metadata"):
        c.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                         completion_window="24h", metadata={"k": "v" * 513})  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        c.batches.retrieve("batch_nosuchbatch00")
    with pytest.raises(openai.NotFoundError):
        c.batches.cancel("nonsense")


def test_unknown_models_are_refused_when_not_routed(server_factory: Any) -> None:
    server = server_factory(engine_poll_seconds=0.05)  # allow_any_model off
    c = client(server)
    with pytest.raises(openai.BadRequestError) as err:
        create(c, upload(c, [chat_line(1, model="no-such-model")]))
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "model_not_found"


def test_a_catalogued_bedrock_model_runs_as_a_batch(server_factory: Any) -> None:
    # The catalogue's invocation types (InvokeModel, Converse) are Bedrock's: an OpenAI batch
    # for a catalogued model (gpt-oss, as the README shows) is not refused for its type.
    server = server_factory(
        engine_poll_seconds=0.05, quota_min_records_per_job=1
    )  # no allow_any_model
    c = client(server)
    done = wait_batch(c, create(c, upload(c, [chat_line(1, model="openai.gpt-oss-20b-1:0")])).id)
    assert done.status == "completed" and done.request_counts.completed == 1


def test_fake_openai_server_gets_bodies_as_they_are(
    server_factory: Any, tmp_path: Path, fake_openai: FakeServer
) -> None:
    config = tmp_path / "models.toml"
    config.write_text(
        f"""
[[routes]]
models = ["local-*"]
backend = "openai"
base_url = "{fake_openai.url}/v1"
backoff_base_s = 0.01
"""
    )
    server = server_factory(**FAST, models_config=config, builtin_fallback=False)
    c = client(server)
    tag = tmp_path.name
    lines = [chat_line(i, f"hello {i} {tag}", model="local-llm") for i in range(10)]
    lines[3] = chat_line(3, f"FAULT:429:2 {tag}", model="local-llm")
    lines[5] = chat_line(5, f"FAULT:400 {tag}", model="local-llm")
    lines[0]["body"]["temperature"] = 0.25
    lines[0]["body"]["tools"] = [{"type": "function", "function": {"name": "f"}}]
    done = wait_batch(c, create(c, upload(c, lines)).id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (9, 1)
    out = {x["custom_id"]: x for x in read_lines(c, done.output_file_id)}
    errors = read_lines(c, done.error_file_id)
    assert sorted(out) == sorted(f"req-{i}" for i in range(10) if i != 5)
    assert out["req-0"]["response"]["body"]["choices"][0]["message"]["content"] == (
        f"echo: hello 0 {tag}"
    )
    assert out["req-3"]["response"]["status_code"] == 200  # retried through the 429s
    assert [e["custom_id"] for e in errors] == ["req-5"]
    assert errors[0]["response"]["status_code"] == 400
    assert "does not like you" in errors[0]["response"]["body"]["error"]["message"]
    # The server got each body exactly as the line held it: no translation.
    sent = [r["body"] for r in fake_openai.requests() if tag in str(r["body"])]
    first = next(b for b in sent if f"hello 0 {tag}" in str(b))
    assert first == lines[0]["body"]
    assert {r["path"] for r in fake_openai.requests() if tag in str(r["body"])} == {
        "/v1/chat/completions"
    }


def test_cancel_mid_run_keeps_what_finished(server_factory: Any) -> None:
    server = server_factory(**FAST, builtin_latency_ms=20, engine_record_concurrency=2)
    c = client(server)
    batch = create(c, upload(c, [chat_line(i) for i in range(2000)]))
    job = batch.id.removeprefix("batch_")
    deadline = time.monotonic() + 60
    while server.progress(job)[1] == 0:  # records checkpointed: it is running
        assert time.monotonic() < deadline
        time.sleep(0.02)
    cancelling = c.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    done = wait_batch(c, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    n = done.request_counts.completed + done.request_counts.failed
    assert 0 < n < 2000
    out = read_lines(c, done.output_file_id) + read_lines(c, done.error_file_id)
    assert sorted(x["custom_id"] for x in out) == sorted(f"req-{i}" for i in range(n))
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a batch with status"):
        c.batches.cancel(batch.id)


def test_expiry_keeps_partial_results_and_lists_the_rest(server_factory: Any) -> None:
    # time_scale: the 24-hour window passes in 2 seconds.
    server = server_factory(
        **FAST, time_scale=24 * 3600 / 2, builtin_latency_ms=20, engine_record_concurrency=2
    )
    c = client(server)
    done = wait_batch(c, create(c, upload(c, [chat_line(i) for i in range(1000)])).id)
    assert done.status == "expired" and done.expired_at
    answered = read_lines(c, done.output_file_id)
    errors = read_lines(c, done.error_file_id)
    n = len(answered)
    assert 0 < n < 1000 and n == done.request_counts.completed
    assert [x["custom_id"] for x in answered] == [f"req-{i}" for i in range(n)]
    assert [x["custom_id"] for x in errors] == [f"req-{i}" for i in range(n, 1000)]
    assert {x["error"]["code"] for x in errors} == {"batch_expired"}
    assert all(x["response"] is None for x in errors)


def test_a_batch_failed_mid_run_keeps_what_finished(server_factory: Any) -> None:
    # Its route is gone when the engine takes the batch up again after a restart: the job
    # fails with records answered, and those stay downloadable (as a cancelled batch's do).
    # Error draws are a function of the record: some of the first 50 are refused.
    server = server_factory(
        **FAST, builtin_latency_ms=10, engine_record_concurrency=2, builtin_error_rate=0.2
    )
    c = client(server)
    total = 2000
    batch = create(c, upload(c, [chat_line(i) for i in range(total)]))
    job = batch.id.removeprefix("batch_")
    deadline = time.monotonic() + 60
    while server.progress(job)[1] < 50:  # records checkpointed: it is running
        assert time.monotonic() < deadline
        time.sleep(0.02)
    server.stop()
    server.settings["builtin_fallback"] = False  # gpt-4o-mini has no backend any more
    server.start()
    c = client(server)
    done = wait_batch(c, batch.id)
    assert done.status == "failed" and done.failed_at and done.in_progress_at
    assert done.errors is not None and "No model backend" in done.errors.data[0].message
    n = done.request_counts.completed + done.request_counts.failed
    assert 0 < n < total
    good = read_lines(c, done.output_file_id)
    bad = read_lines(c, done.error_file_id)
    assert len(good) == done.request_counts.completed and len(bad) == done.request_counts.failed
    # The lines that finished, each once (none of those never run), each file in input order.
    ids = [x["custom_id"] for x in good + bad]
    assert sorted(ids) == sorted(f"req-{i}" for i in range(n))
    order = {f"req-{i}": i for i in range(total)}
    for lines in (good, bad):
        at = [order[x["custom_id"]] for x in lines]
        assert at == sorted(at)
    assert all(x["response"]["status_code"] == 200 for x in good)
    assert bad and all(x["response"]["status_code"] >= 400 for x in bad)
    assert c.files.retrieve(done.output_file_id).purpose == "batch_output"
    # Read again: the same files (written once).
    again = c.batches.retrieve(batch.id)
    assert (again.output_file_id, again.error_file_id) == (done.output_file_id, done.error_file_id)


def test_accounts_never_see_each_others_batches(server_factory: Any) -> None:
    server = server_factory(**FAST)
    a, b = client(server, key="111111111111"), client(server, key="222222222222")
    batch = create(a, upload(a, [chat_line(1)]))
    assert list(b.batches.list()) == []
    with pytest.raises(openai.NotFoundError):
        b.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        b.batches.cancel(batch.id)
    done = wait_batch(a, batch.id)
    with pytest.raises(openai.NotFoundError):
        b.files.content(done.output_file_id or "")
    assert [x.id for x in a.batches.list()] == [batch.id]
