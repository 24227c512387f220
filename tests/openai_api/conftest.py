"""The OpenAI-compatible Files and Batch API, end to end: a real ``batchrock serve`` and the
official ``openai`` SDK as the client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.backends.conftest import FakeServer, start

FAST = {
    "engine_poll_seconds": 0.05,
    "engine_checkpoint_seconds": 0.1,
    "allow_any_model": True,
}
FINAL = {"completed", "failed", "expired", "cancelled"}


@pytest.fixture(scope="module")
def fake_openai(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    server = start("fake_openai.py", tmp_path_factory.mktemp("openai"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fake_bedrock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    server = start("fake_bedrock.py", tmp_path_factory.mktemp("bedrock"))
    yield server
    server.stop()


def client(server: Any, key: str = "sk-anything") -> openai.OpenAI:
    """The SDK as a user configures it: base_url ending in /v1 (no retries: tests see every
    answer)."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def chat_line(i: int, text: str | None = None, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text or f"hi {i}"}]},
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def upload(c: openai.OpenAI, lines: list[dict[str, Any]], name: str = "in.jsonl") -> str:
    return c.files.create(file=(name, jsonl(lines)), purpose="batch").id


def wait_batch(c: openai.OpenAI, batch_id: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = c.batches.retrieve(batch_id)
        if batch.status in FINAL:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.05)


def read_lines(c: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in c.files.content(file_id).text.splitlines()]
