"""The OpenAI edge's parsers: the streaming multipart reader and the batch line checks."""

from __future__ import annotations

import json
import random

import pytest

from batchrock.api.openai import lines
from batchrock.api.openai.multipart import (
    MultipartError,
    MultipartReader,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
)

BOUNDARY = b"----b0undary"


def body(file_bytes: bytes) -> bytes:
    return (
        b"------b0undary\r\n"
        b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b"------b0undary\r\n"
        b'Content-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + file_bytes + b"\r\n"
        b"------b0undary--\r\n"
    )


def parse(data: bytes, cuts: list[int]) -> tuple[dict[str, bytes], dict[str, str | None]]:
    reader = MultipartReader(BOUNDARY)
    fields: dict[str, bytes] = {}
    names: dict[str, str | None] = {}
    current = None
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    for piece in pieces:
        for event in reader.feed(piece):
            if isinstance(event, PartStart):
                current = event.name
                fields[current] = b""
                names[current] = event.filename
            elif isinstance(event, PartData):
                assert current is not None
                fields[current] += event.data
            elif isinstance(event, PartEnd):
                current = None
    reader.close()
    return fields, names


@pytest.mark.parametrize("seed", range(30))
def test_multipart_reads_the_same_however_the_body_is_cut(seed: int) -> None:
    rng = random.Random(seed)
    # File bytes that look like delimiters in part: CRLF, dashes, a near-boundary.
    content = b"\r\n--" + b"x" * rng.randrange(0, 50) + b"\r\n------b0undar\r\n" + bytes(range(256))
    data = body(content)
    cuts = sorted(rng.sample(range(1, len(data)), rng.randrange(1, 20)))
    fields, names = parse(data, cuts)
    assert fields == {"purpose": b"batch", "file": content}
    assert names == {"purpose": None, "file": "in.jsonl"}


def test_multipart_refuses_bodies_that_do_not_end_or_are_not_multipart() -> None:
    with pytest.raises(MultipartError, match="closing boundary"):
        parse(body(b"abc")[:-20], [])
    with pytest.raises(MultipartError, match="does not start"):
        MultipartReader(BOUNDARY).feed(b"x" * 20000)
    reader = MultipartReader(BOUNDARY, max_head_bytes=100)
    with pytest.raises(MultipartError, match="headers are too large"):
        reader.feed(b"------b0undary\r\n" + b"X: " + b"y" * 200)
    assert boundary_of('multipart/form-data; boundary="abc"') == b"abc"
    assert boundary_of("application/json") is None
    assert boundary_of(None) is None


def check(content: bytes, endpoint: str = "/v1/chat/completions") -> lines.InputCheck:
    state = lines.InputCheck(endpoint=endpoint, max_requests=3, max_embedding_inputs=5)
    state.feed(content)
    state.finish()
    return state


def line(i: int, **changes: object) -> bytes:
    value: dict[str, object] = {
        "custom_id": f"r{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
    }
    value.update(changes)
    return json.dumps(value).encode() + b"\n"


def test_each_bad_line_is_named_with_its_code_and_number() -> None:
    content = (
        line(1)
        + b"{not json\n"
        + b"\n"  # blank lines are skipped, but counted
        + line(1)
        + line(4, url="/v1/embeddings")
        + line(5, body={"model": "other"})
        + line(6, method="GET")
        + line(7, body=[1])
    )
    assert [
        (e["code"], e["line"]) for e in check(line(1, method="GET") + line(2, body=[1])).errors
    ] == [
        ("invalid_request", 1),
        ("invalid_request", 2),
    ]
    state = check(content)
    # Requests after the maximum (3) are not checked further: the file fails as a whole.
    assert [(e["code"], e["line"]) for e in state.errors] == [
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 4),
        ("url_mismatch", 5),
        ("too_many_tasks", 6),
    ]
    assert state.errors[0]["message"] == "This line is not parseable as valid JSON."


def test_model_mismatch_missing_fields_and_empty_files() -> None:
    state = check(line(1) + line(2, body={"model": "other", "messages": []}))
    assert [(e["code"], e["line"], e["param"]) for e in state.errors] == [
        ("model_mismatch", 2, "body.model")
    ]
    missing = check(b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}\n')
    assert [(e["code"], e["param"]) for e in missing.errors] == [
        ("missing_required_parameter", "body")
    ]
    assert [(e["code"], e["line"]) for e in check(b"\n\n").errors] == [("empty_file", None)]


def test_valid_lines_become_records_with_the_body_as_model_input() -> None:
    state = lines.InputCheck(
        endpoint="/v1/chat/completions", max_requests=10, max_embedding_inputs=5
    )
    out = state.feed(line(1) + line(2))
    assert not state.errors and state.model == "m"
    records = [json.loads(x) for x in out.splitlines()]
    assert records[0] == {
        "recordId": "r1",
        "modelInput": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
    }


def test_embedding_inputs_are_bounded_in_all() -> None:
    emb = {"url": "/v1/embeddings"}
    content = b"".join(line(i, body={"model": "e", "input": ["a", "b"]}, **emb) for i in range(3))
    state = lines.InputCheck(endpoint="/v1/embeddings", max_requests=10, max_embedding_inputs=5)
    state.feed(content)
    assert [(e["code"], e["line"]) for e in state.errors] == [("too_many_tasks", 3)]


def test_output_lines_split_into_answers_and_refusals() -> None:
    split = lines.OutputSplit("job000000001")
    good, bad = split.feed(
        b'{"recordId":"a","modelInput":{},"modelOutput":{"x":1}}\n'
        b'{"recordId":"b","modelInput":{},"error":{"errorCode":429,"errorMessage":"slow"}}\n'
    )
    ok = json.loads(good)
    assert ok["custom_id"] == "a" and ok["error"] is None
    assert ok["response"]["status_code"] == 200 and ok["response"]["body"] == {"x": 1}
    assert ok["id"].startswith("batch_req_") and ok["response"]["request_id"].startswith("req_")
    refused = json.loads(bad)
    assert refused["response"]["status_code"] == 429
    assert refused["response"]["body"]["error"] == {
        "message": "slow",
        "type": "rate_limit_error",
        "param": None,
        "code": None,
    }
    # the same line gets the same ids however often the output is made
    assert (
        lines.OutputSplit("job000000001").feed(b'{"recordId":"a","modelOutput":{}}\n')[0][:60]
        == good[:60]
    )
