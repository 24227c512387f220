"""/v1/files through the openai SDK against a real server: shapes, limits, errors, accounts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ServerProcess

from .conftest import FAST, chat_line, client, jsonl, upload, wait_batch

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("files")
    settings = {**FAST, "engine_min_submitted_seconds": 0, "openai_max_file_bytes": 100_000}
    process = ServerProcess(root / "data", settings, root / "server.log")
    process.start()
    yield process
    process.stop()


def test_upload_list_get_content_delete(server: Any) -> None:
    c = client(server)
    data = jsonl([chat_line(i) for i in range(3)])
    created = c.files.create(file=("prompts.jsonl", data), purpose="batch")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose) == (
        len(data),
        "prompts.jsonl",
        "batch",
    )
    assert created.expires_at == created.created_at + 30 * 86400  # batch files: 30 days
    assert c.files.retrieve(created.id) == created
    assert c.files.content(created.id).content == data
    listed = c.files.list(purpose="batch")
    assert created.id in [f.id for f in listed.data]
    other = c.files.create(file=("notes.txt", b"hello"), purpose="user_data")
    assert other.expires_at is None
    assert [f.id for f in c.files.list(purpose="user_data").data] == [other.id]
    deleted = c.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError) as err:
        c.files.retrieve(created.id)
    assert err.value.body == {
        "message": f"No such File object: {created.id}",
        "type": "invalid_request_error",
        "param": "id",
        "code": None,
    }
    with pytest.raises(openai.NotFoundError):
        c.files.content(created.id)


def test_files_list_pages_with_after_and_order(server: Any) -> None:
    c = client(server, key="333333333333")
    ids = [c.files.create(file=(f"{i}.txt", b"x"), purpose="user_data").id for i in range(5)]
    first = c.files.list(limit=2, order="asc")
    assert [f.id for f in first.data] == ids[:2] and first.has_more
    # The SDK's cursor pages follow after=<last id> until has_more is false.
    assert [f.id for f in c.files.list(limit=2, order="asc")] == ids
    assert [f.id for f in c.files.list(limit=2)] == ids[::-1]


def test_uploads_refused_with_openai_errors(server: Any) -> None:
    c = client(server)
    with pytest.raises(openai.BadRequestError) as err:
        c.files.create(file=("in.csv", b"a,b\n"), purpose="batch")
    assert err.value.body == {
        "message": "Invalid file format for Batch API. Must be .jsonl",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.BadRequestError, match="not one of"):
        c.files.create(file=("in.jsonl", b"{}"), purpose="nonsense")  # type: ignore[arg-type]
    with pytest.raises(openai.APIStatusError) as big:
        c.files.create(file=("in.jsonl", b"x" * 100_001), purpose="batch")
    assert big.value.status_code == 413
    assert isinstance(big.value.body, dict) and big.value.body["code"] == "file_too_large"
    # Far over the limit: refused on its Content-Length, before any of it is read.
    with pytest.raises(openai.APIStatusError) as bigger:
        c.files.create(file=("in.jsonl", b"x" * 1_000_000), purpose="batch")
    assert bigger.value.status_code == 413
    # Nothing of the refused uploads was kept.
    assert list((server.data_dir / "uploads").iterdir()) == []


def test_malformed_multipart_and_unknown_routes(server: Any) -> None:
    headers = {"authorization": "Bearer k", "content-type": "multipart/form-data; boundary=zz"}
    r = httpx.post(server.url + "/v1/files", headers=headers, content=b"--zz\r\nbroken")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(server.url + "/v1/files", headers={"authorization": "Bearer k"}, json={})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]["message"]
    r = httpx.get(server.url + "/v1/nothing")
    assert r.status_code == 404
    assert r.json() == {
        "error": {
            "message": "Invalid URL (GET /v1/nothing)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    # A web form (no Authorization header) cannot upload: the browser guard refuses it.
    form = httpx.post(server.url + "/v1/files", files={"file": ("a.jsonl", b"{}")})
    assert form.status_code == 403


def test_accounts_never_see_each_others_files(server: Any) -> None:
    a, b = client(server, key="111111111111"), client(server, key="222222222222")
    file_id = upload(a, [chat_line(1)])
    assert file_id not in [f.id for f in b.files.list()]
    for call in (b.files.retrieve, b.files.content, b.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(file_id)
    with pytest.raises(openai.NotFoundError):
        b.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert a.files.retrieve(file_id).id == file_id


def test_a_result_file_whose_bytes_are_gone_is_not_found_never_a_bare_500(server: Any) -> None:
    c = client(server, key="444444444444")
    batch = c.batches.create(
        input_file_id=upload(c, [chat_line(i) for i in range(3)]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    done = wait_batch(c, batch.id)
    assert done.status == "completed" and done.output_file_id
    file_id = done.output_file_id
    bytes_at = server.data_dir / "s3" / "batchrock-files-444444444444" / "files" / file_id
    data = bytes_at.read_bytes()
    # Removed under the service (by hand, or a removal half done): the batch still names it,
    # its content is a 404 in OpenAI's shape.
    bytes_at.unlink()
    assert c.batches.retrieve(batch.id).output_file_id == file_id
    with pytest.raises(openai.NotFoundError) as err:
        c.files.content(file_id)
    assert err.value.body == {
        "message": f"No such File object: {file_id}",
        "type": "invalid_request_error",
        "param": "id",
        "code": None,
    }
    bytes_at.mkdir()  # a folder where the object goes: no object either
    with pytest.raises(openai.NotFoundError):
        c.files.content(file_id)
    bytes_at.rmdir()
    # Something the store will not read (a link, which it never follows): a 500 that says
    # so, not the bare "had an error" of an unexpected failure.
    (server.data_dir / "elsewhere").write_bytes(data)
    bytes_at.symlink_to(server.data_dir / "elsewhere")
    with pytest.raises(openai.InternalServerError) as failed:
        c.files.content(file_id)
    assert "The file's content could not be read" in str(failed.value.body), failed.value.body
    assert "unhandled error" not in server.log()
    bytes_at.unlink()
    bytes_at.write_bytes(data)
    assert c.files.content(file_id).content == data
