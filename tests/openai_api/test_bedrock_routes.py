"""OpenAI batches on a Bedrock runtime route (backends/bedrock_openai.py), through the openai
SDK against a real ``batchrock serve`` and the bedrock-runtime fake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from tests.backends.conftest import FakeServer, fake_aws_credentials

from .conftest import FAST, chat_line, client, read_lines, upload, wait_batch

pytestmark = pytest.mark.timeout(120)

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


def test_chat_lines_for_claude_go_through_converse(
    server_factory: Any, tmp_path: Path, fake_bedrock: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_aws_credentials(monkeypatch, tmp_path)
    config = tmp_path / "models.toml"
    config.write_text(
        f"""
[[routes]]
model = "*"
backend = "bedrock"
endpoint_url = "{fake_bedrock.url}"
region = "us-east-1"
backoff_base_s = 0.01
"""
    )
    server = server_factory(**FAST, models_config=config, builtin_fallback=False)
    c = client(server)
    tag = tmp_path.name
    lines = [chat_line(i, f"hello {i} {tag}", model=CLAUDE) for i in range(3)]
    lines[0]["body"]["max_tokens"] = 1000
    lines[1]["body"]["logprobs"] = True
    lines[2]["body"]["n"] = 2
    batch = c.batches.create(
        input_file_id=upload(c, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_batch(c, batch.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 2)
    (out,) = read_lines(c, done.output_file_id)
    assert out["custom_id"] == "req-0" and out["response"]["status_code"] == 200
    # The body is a chat completion as the SDK reads one.
    completion = ChatCompletion.model_validate(out["response"]["body"])
    assert completion.object == "chat.completion" and completion.model == CLAUDE
    assert completion.choices[0].message.content and completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    errors = {e["custom_id"]: e["response"] for e in read_lines(c, done.error_file_id)}
    assert {k: v["status_code"] for k, v in errors.items()} == {"req-1": 400, "req-2": 400}
    assert "logprobs" in errors["req-1"]["body"]["error"]["message"]
    assert "n = 1" in errors["req-2"]["body"]["error"]["message"]
    # Only the line Converse can express reached Bedrock, as a Converse call.
    sent = [r for r in fake_bedrock.requests() if tag in str(r["body"])]
    assert [(r["model"], r["op"]) for r in sent] == [(CLAUDE, "converse")]
