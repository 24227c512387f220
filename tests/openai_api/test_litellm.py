"""LiteLLM's OpenAI batches, unmodified, with an OpenAI-compatible provider pointed at
batchrock's /v1: create_file, create_batch, retrieve_batch, list_batches, file_content."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from .conftest import FAST, FINAL, chat_line, jsonl

# LiteLLM fetches its model cost map from GitHub at import unless told to stay offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
litellm = pytest.importorskip("litellm")  # a dev dependency: CI (BATCHROCK_NO_SKIPS) has it

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning"),
]


def test_litellm_batches_against_v1(server_factory: Any) -> None:
    server = server_factory(**FAST)
    where = {"custom_llm_provider": "openai", "api_base": server.url + "/v1", "api_key": "k"}
    uploaded = litellm.create_file(
        file=("in.jsonl", jsonl([chat_line(i) for i in range(4)])), purpose="batch", **where
    )
    batch = litellm.create_batch(
        completion_window="24h",
        endpoint="/v1/chat/completions",
        input_file_id=uploaded.id,
        metadata={"via": "litellm"},
        **where,
    )
    deadline = time.monotonic() + 60
    while (batch := litellm.retrieve_batch(batch_id=batch.id, **where)).status not in FINAL:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert batch.status == "completed" and batch.request_counts.completed == 4
    assert batch.id in [b.id for b in litellm.list_batches(**where).data]
    content = litellm.file_content(file_id=batch.output_file_id, **where)
    lines = [json.loads(x) for x in content.content.decode().splitlines()]
    assert [x["custom_id"] for x in lines] == [f"req-{i}" for i in range(4)]
    assert all(x["response"]["status_code"] == 200 for x in lines)
