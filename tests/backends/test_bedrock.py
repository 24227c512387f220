"""The Bedrock runtime backend through real botocore against a local bedrock-runtime fake."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from batchrock.backends.base import ModelRequest
from batchrock.backends.bedrock_runtime import converse_params
from batchrock.backends.routing import ConfigError, build_resolver
from batchrock.settings import Settings

from .conftest import FakeServer, fake_aws_credentials, run

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_aws_credentials(monkeypatch, tmp_path)


def settings_for(tmp_path: Path, url: str, extra: str = "") -> Settings:
    path = tmp_path / "models.toml"
    path.write_text(
        f"""
[[routes]]
model = "*"
backend = "bedrock"
region = "us-west-2"
endpoint_url = "{url}"
backoff_base_s = 0.01
{extra}
"""
    )
    return Settings(data_dir=tmp_path, models_config=path)


def claude(text: str) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }


def test_invoke_model_passes_bodies_through(tmp_path: Path, fake_bedrock: FakeServer) -> None:
    fake_bedrock.clear()
    arn = f"arn:aws:bedrock:us-west-2::foundation-model/{CLAUDE}"
    (result,) = run(
        settings_for(tmp_path, fake_bedrock.url),
        ModelRequest(arn, "InvokeModel", claude("hi"), "a"),
    )
    assert result.output is not None and result.output["type"] == "message"
    assert result.input_tokens == result.output["usage"]["input_tokens"] > 0
    assert result.output_tokens == result.output["usage"]["output_tokens"] > 0
    (sent,) = fake_bedrock.requests()
    assert sent == {"model": arn, "op": "invoke", "body": claude("hi")}


def test_converse_with_media(tmp_path: Path, fake_bedrock: FakeServer) -> None:
    fake_bedrock.clear()
    image = base64.b64encode(b"\x89PNG fake").decode()
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "look"},
                    {"image": {"format": "png", "source": {"bytes": image}}},
                ],
            }
        ],
        "inferenceConfig": {"maxTokens": 20},
    }
    (result,) = run(
        settings_for(tmp_path, fake_bedrock.url),
        ModelRequest("amazon.nova-lite-v1:0", "Converse", body, "a"),
    )
    assert result.output is not None
    assert set(result.output) == {"output", "stopReason", "usage", "metrics"}
    assert result.output["output"]["message"]["role"] == "assistant"
    assert result.input_tokens == result.output["usage"]["inputTokens"]
    (sent,) = fake_bedrock.requests()
    assert sent["op"] == "converse"
    # botocore carried the bytes as base64 again on the wire.
    assert sent["body"]["messages"][0]["content"][1]["image"]["source"]["bytes"] == image  # type: ignore[index]


def test_validation_errors_are_final_400s(tmp_path: Path, fake_bedrock: FakeServer) -> None:
    (result,) = run(
        settings_for(tmp_path, fake_bedrock.url),
        ModelRequest(CLAUDE, "InvokeModel", {"messages": []}, "a"),
    )
    assert result.error is not None and result.error.code == 400
    assert result.error.message.startswith("Malformed input request:")
    assert result.info == {}


@pytest.mark.parametrize("key", ["messages", "max_tokens"])
def test_null_required_members_are_final_400s(
    tmp_path: Path, fake_bedrock: FakeServer, key: str
) -> None:
    # The fake answers with batchrock's parser, as Bedrock answers with its own schema check.
    fake_bedrock.clear()
    (result,) = run(
        settings_for(tmp_path, fake_bedrock.url),
        ModelRequest(CLAUDE, "InvokeModel", {**claude("hi"), key: None}, "a"),
    )
    assert result.error is not None and result.error.code == 400
    assert result.error.message == (
        f"Malformed input request: #: required key [{key}] not found, please reformat your "
        "input and try again."
    )
    assert len(fake_bedrock.requests()) == 1  # refused once, not retried


def test_converse_shape_errors_are_caught_by_botocore(
    tmp_path: Path, fake_bedrock: FakeServer
) -> None:
    (result,) = run(
        settings_for(tmp_path, fake_bedrock.url),
        ModelRequest(CLAUDE, "Converse", {"messages": "x"}, "a"),
    )
    assert result.error is not None and result.error.code == 400
    assert "Invalid type for parameter messages" in result.error.message
    assert converse_params({"messages": []}) == {"messages": []}


def test_throttling_and_unavailability_are_retried(
    tmp_path: Path, fake_bedrock: FakeServer
) -> None:
    tag = tmp_path.name
    throttled, unavailable, exhausted = run(
        settings_for(tmp_path, fake_bedrock.url, "max_retries = 3"),
        ModelRequest(CLAUDE, "InvokeModel", claude(f"FAULT:throttle:2 {tag}"), "a"),
        ModelRequest(CLAUDE, "InvokeModel", claude(f"FAULT:unavailable:1 {tag}"), "b"),
        ModelRequest(CLAUDE, "InvokeModel", claude(f"FAULT:throttle:9 {tag}x"), "c"),
    )
    assert throttled.ok and throttled.info == {"attempts": 3, "throttled": 2}
    assert unavailable.ok and unavailable.info == {"attempts": 2, "throttled": 0}
    assert exhausted.error is not None and exhausted.error.code == 429
    assert exhausted.error.message == "Too many requests, please wait."
    assert exhausted.info == {"attempts": 4, "throttled": 4}


def test_bad_bedrock_route(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        build_resolver(settings_for(tmp_path, "http://127.0.0.1:1", "base_url = 'x'"))
    with pytest.raises(ConfigError, match="profile"):
        build_resolver(settings_for(tmp_path, "http://127.0.0.1:1", "profile = 'missing-profile'"))


CHAT = "openai:/v1/chat/completions"


def chat_line(**extra: Any) -> dict[str, Any]:
    return {
        "model": CLAUDE,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        "max_completion_tokens": 1000,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["\n\n"],
        **extra,
    }


def test_openai_chat_lines_go_through_converse_for_claude(
    tmp_path: Path, fake_bedrock: FakeServer
) -> None:
    fake_bedrock.clear()
    answered, cut = run(
        settings_for(tmp_path, fake_bedrock.url),
        ModelRequest(CLAUDE, CHAT, chat_line(), "a"),  # type: ignore[arg-type]
        ModelRequest(CLAUDE, CHAT, chat_line(max_completion_tokens=1), "b"),  # type: ignore[arg-type]
    )
    assert answered.output is not None, answered.error
    out = answered.output
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    assert out["model"] == CLAUDE and isinstance(out["created"], int)
    (choice,) = out["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = out["usage"]
    assert usage["prompt_tokens"] == answered.input_tokens > 0
    assert usage["completion_tokens"] == answered.output_tokens > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert cut.output is not None and cut.output["choices"][0]["finish_reason"] == "length"
    sent = sorted(fake_bedrock.requests(), key=lambda r: str(r["body"]))
    assert [r["op"] for r in sent] == ["converse", "converse"]
    assert {
        "model": CLAUDE,
        "op": "converse",
        "body": {
            "messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "system": [{"text": "Be brief."}],
            "inferenceConfig": {
                "maxTokens": 1000,
                "temperature": 0.5,
                "topP": 0.9,
                "stopSequences": ["\n\n"],
            },
        },
    } in sent


def test_openai_chat_lines_stay_as_they_are_for_gpt_oss(
    tmp_path: Path, fake_bedrock: FakeServer
) -> None:
    fake_bedrock.clear()
    model = "openai.gpt-oss-20b-1:0"
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    (result,) = run(
        settings_for(tmp_path, fake_bedrock.url),
        ModelRequest(model, CHAT, body, "a"),  # type: ignore[arg-type]
    )
    assert result.output is not None and result.output["object"] == "chat.completion"
    assert fake_bedrock.requests() == [{"model": model, "op": "invoke", "body": body}]


@pytest.mark.parametrize(
    ("invocation", "body", "named"),
    [
        (CHAT, chat_line(n=2), "(n = 1)"),
        (CHAT, chat_line(logprobs=True), "logprobs"),
        (CHAT, chat_line(presence_penalty=0.5), "presence_penalty"),
        (CHAT, chat_line(seed=7), "seed"),
        (
            CHAT,
            chat_line(tools=[{"type": "function", "function": {"name": "f"}}]),
            "tools",
        ),
        (
            CHAT,
            chat_line(response_format={"type": "json_object"}),
            "response_format",
        ),
        (
            CHAT,
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:,"}}],
                    }
                ]
            },
            "image_url",
        ),
        ("openai:/v1/embeddings", {"model": CLAUDE, "input": "hi"}, "/v1/embeddings lines"),
    ],
)
def test_what_converse_cannot_express_is_a_400_naming_it(
    tmp_path: Path, fake_bedrock: FakeServer, invocation: str, body: dict[str, Any], named: str
) -> None:
    fake_bedrock.clear()
    (result,) = run(
        settings_for(tmp_path, fake_bedrock.url),
        ModelRequest(CLAUDE, invocation, body, "a"),  # type: ignore[arg-type]
    )
    assert result.error is not None and result.error.code == 400
    assert named in result.error.message and not result.error.retryable
    assert fake_bedrock.requests() == []
