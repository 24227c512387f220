"""The OpenAI-compatible backend against a real server process with injected faults."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from batchrock.backends.base import ModelRequest
from batchrock.backends.routing import ConfigError, build_resolver
from batchrock.settings import Settings

from .conftest import FakeServer, free_port, run

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


def settings_for(tmp_path: Path, url: str, **extra: Any) -> Settings:
    lines = [
        "[[routes]]",
        'model = "*"',
        'backend = "openai"',
        f'base_url = "{url}/v1"',
        'served_model = "served-llm"',
        "backoff_base_s = 0.01",
        "backoff_max_s = 0.05",
    ]
    for key, value in extra.items():
        lines.append(
            f"{key} = {value!r}".replace("'", '"')
            if not isinstance(value, bool)
            else f"{key} = {str(value).lower()}"
        )
    path = tmp_path / "models.toml"
    path.write_text("\n".join(lines) + "\n")
    return Settings(data_dir=tmp_path, models_config=path)


def claude(*messages: Any, **extra: Any) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "messages": list(messages),
        **extra,
    }


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def test_claude_is_translated_to_chat_and_back(tmp_path: Path, fake_openai: FakeServer) -> None:
    fake_openai.clear()
    body = claude(
        user("first question"),
        {"role": "assistant", "content": "an answer"},
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                },
                {"type": "text", "text": "what is in the picture"},
            ],
        },
        system="be kind",
        temperature=0.2,
        top_p=0.8,
        top_k=40,
        stop_sequences=["picture"],
    )
    (result,) = run(
        settings_for(tmp_path, fake_openai.url), ModelRequest(CLAUDE, "InvokeModel", body, "r1")
    )
    (sent,) = fake_openai.requests()
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"] == {
        "model": "served-llm",
        "messages": [
            {"role": "system", "content": "be kind"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "text", "text": "what is in the picture"},
                ],
            },
        ],
        "max_tokens": 100,
        "temperature": 0.2,
        "top_p": 0.8,
        "top_k": 40,
        "stop": ["picture"],
    }
    assert result.output is not None
    assert result.output["content"] == [{"type": "text", "text": "echo: what is in the "}]
    assert result.output["stop_reason"] == "stop_sequence"
    assert result.output["stop_sequence"] == "picture"
    assert result.output["usage"] == {
        "input_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 5,
    }
    assert (result.input_tokens, result.output_tokens) == (12, 5)


def test_length_stop_and_converse(tmp_path: Path, fake_openai: FakeServer) -> None:
    converse = {
        "messages": [{"role": "user", "content": [{"text": "one two three four five"}]}],
        "inferenceConfig": {"maxTokens": 3},
    }
    (result,) = run(
        settings_for(tmp_path, fake_openai.url),
        ModelRequest("any-model", "Converse", converse, "r"),
    )
    assert result.output is not None
    assert result.output["output"]["message"]["content"] == [{"text": "echo: one two"}]
    assert result.output["stopReason"] == "max_tokens"
    assert result.output["usage"]["outputTokens"] == 3
    assert isinstance(result.output["metrics"]["latencyMs"], int)


def test_prompt_families_use_completions_with_the_raw_prompt(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    fake_openai.clear()
    prompt = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\nhi<|eot_id|>"
    llama = ModelRequest(
        "meta.llama3-8b-instruct-v1:0", "InvokeModel", {"prompt": prompt, "max_gen_len": 50}, "a"
    )
    mistral = ModelRequest(
        "mistral.mistral-7b-instruct-v0:2", "InvokeModel", {"prompt": "[INST] yo [/INST]"}, "b"
    )
    titan = ModelRequest(
        "amazon.titan-text-express-v1", "InvokeModel", {"inputText": "hello titan"}, "c"
    )
    results = run(settings_for(tmp_path, fake_openai.url), llama, mistral, titan)
    paths = {r["body"]["prompt"]: r["path"] for r in fake_openai.requests()}  # type: ignore[index]
    assert paths == {
        prompt: "/v1/completions",
        "[INST] yo [/INST]": "/v1/completions",
        "hello titan": "/v1/completions",
    }
    assert results[0].output == {
        "generation": "echo: " + prompt,
        "prompt_token_count": 9,
        "generation_token_count": 3,
        "stop_reason": "stop",
    }
    assert results[1].output == {
        "outputs": [{"text": "echo: [INST] yo [/INST]", "stop_reason": "stop"}]
    }
    assert results[2].output is not None
    assert results[2].output["results"][0]["outputText"] == "echo: hello titan"
    assert results[2].output["results"][0]["completionReason"] == "FINISH"


def test_prompt_api_chat_sends_the_prompt_as_a_user_message(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    fake_openai.clear()
    settings = settings_for(tmp_path, fake_openai.url, prompt_api="chat")
    run(
        settings, ModelRequest("meta.llama3-8b-instruct-v1:0", "InvokeModel", {"prompt": "hi"}, "a")
    )
    (sent,) = fake_openai.requests()
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"] == [{"role": "user", "content": "hi"}]  # type: ignore[index]


def test_titan_embeddings(tmp_path: Path, fake_openai: FakeServer) -> None:
    fake_openai.clear()
    settings = settings_for(tmp_path, fake_openai.url)
    plain, sized = run(
        settings,
        ModelRequest("amazon.titan-embed-text-v2:0", "InvokeModel", {"inputText": "embed me"}, "a"),
        ModelRequest(
            "amazon.titan-embed-text-v2:0",
            "InvokeModel",
            {"inputText": "x", "dimensions": 256},
            "b",
        ),
    )
    assert plain.output is not None
    vector = plain.output["embedding"]
    assert len(vector) == 384
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0)
    assert plain.output["inputTextTokenCount"] == 2
    assert plain.output["embeddingsByType"] == {"float": vector}
    assert sized.error is not None and sized.error.code == 400
    assert "256 dimensions" in sized.error.message and "384-dimensional" in sized.error.message
    sent = {r["body"]["input"]: r for r in fake_openai.requests()}  # type: ignore[index]
    assert sent["embed me"]["path"] == "/v1/embeddings"
    asked = run(
        settings_for(tmp_path, fake_openai.url, send_dimensions=True),
        ModelRequest(
            "amazon.titan-embed-text-v2:0",
            "InvokeModel",
            {"inputText": "x", "dimensions": 256},
            "b",
        ),
    )[0]
    assert asked.output is not None and len(asked.output["embedding"]) == 256


def test_unservable_features_are_record_errors_not_sent(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    fake_openai.clear()
    settings = settings_for(tmp_path, fake_openai.url, unsupported=["images", "top_k"])
    # A server tool runs inside Anthropic's service: no OpenAI-compatible server has it.
    tools = claude(user("x"), tools=[{"type": "web_search_20250305", "name": "web_search"}])
    top_k = claude(user("y"), top_k=5)
    image = {
        "messages": [
            {"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": "AA=="}}}]}
        ]
    }
    results = run(
        settings,
        ModelRequest(CLAUDE, "InvokeModel", tools, "a"),
        ModelRequest(CLAUDE, "InvokeModel", top_k, "b"),
        ModelRequest("amazon.nova-lite-v1:0", "InvokeModel", image, "c"),
    )
    for result, feature in zip(results, ["tools", "top_k", "images"], strict=True):
        assert result.error is not None and result.error.code == 400
        assert f"cannot serve {feature}" in result.error.message
    assert fake_openai.requests() == []


def test_bad_records_fail_before_the_server(tmp_path: Path, fake_openai: FakeServer) -> None:
    fake_openai.clear()
    (result,) = run(
        settings_for(tmp_path, fake_openai.url),
        ModelRequest(CLAUDE, "InvokeModel", {"messages": []}, "a"),
    )
    assert result.error is not None and result.error.code == 400
    assert result.error.message.startswith("Malformed input request:")
    assert fake_openai.requests() == []


@pytest.mark.parametrize("key", ["messages", "max_tokens"])
def test_null_required_members_are_record_errors_not_retried(
    tmp_path: Path, fake_openai: FakeServer, key: str
) -> None:
    # "messages": null raised TypeError out of the parse, which was retried and became a 500.
    fake_openai.clear()
    (result,) = run(
        settings_for(tmp_path, fake_openai.url),
        ModelRequest(CLAUDE, "InvokeModel", {**claude(user("hi")), key: None}, "a"),
    )
    assert result.error is not None and result.error.code == 400
    assert not result.error.retryable
    assert result.error.message == (
        f"Malformed input request: #: required key [{key}] not found, please reformat your "
        "input and try again."
    )
    assert fake_openai.requests() == []


@pytest.mark.parametrize(
    ("marker", "throttled", "attempts"),
    [
        ("FAULT:429:2", 2, 3),
        ("FAULT:500:1", 0, 2),
        ("FAULT:malformed:1", 0, 2),
        ("FAULT:drop:2", 0, 3),
    ],
)
def test_transient_faults_are_retried(
    tmp_path: Path, fake_openai: FakeServer, marker: str, throttled: int, attempts: int
) -> None:
    text = f"{marker} {tmp_path.name}"
    (result,) = run(
        settings_for(tmp_path, fake_openai.url),
        ModelRequest(CLAUDE, "InvokeModel", claude(user(text)), "a"),
    )
    assert result.ok, result.error
    assert result.info == {"attempts": attempts, "throttled": throttled}
    assert result.output is not None and result.output["content"][0]["text"] == f"echo: {text}"


def test_faults_that_outlast_retries_become_record_errors(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    settings = settings_for(tmp_path, fake_openai.url, max_retries=2)
    tag = tmp_path.name
    throttled, crashed, refused = run(
        settings,
        ModelRequest(CLAUDE, "InvokeModel", claude(user(f"FAULT:429:9 {tag}")), "a"),
        ModelRequest(CLAUDE, "InvokeModel", claude(user(f"FAULT:500:9 {tag}")), "b"),
        ModelRequest(CLAUDE, "InvokeModel", claude(user(f"FAULT:400 {tag}")), "c"),
    )
    assert throttled.error is not None and throttled.error.code == 429
    assert throttled.info == {"attempts": 3, "throttled": 3}
    assert crashed.error is not None and crashed.error.code == 500
    assert "engine crashed" in crashed.error.message
    assert refused.error is not None and refused.error.code == 400
    assert refused.error.message == "Model server error 400: This model does not like you"
    assert refused.info == {}


def test_slow_answers_time_out_and_are_retried(tmp_path: Path, fake_openai: FakeServer) -> None:
    settings = settings_for(tmp_path, fake_openai.url, timeout_s=0.2, max_retries=1)
    (result,) = run(
        settings, ModelRequest(CLAUDE, "InvokeModel", claude(user("FAULT:slow:2")), "a")
    )
    assert result.error is not None and result.error.code == 408
    assert result.info["attempts"] == 2


def test_deadline_bounds_the_whole_record(tmp_path: Path, fake_openai: FakeServer) -> None:
    settings = settings_for(tmp_path, fake_openai.url, deadline_s=0.3)
    (result,) = run(
        settings, ModelRequest(CLAUDE, "InvokeModel", claude(user("FAULT:slow:3")), "a")
    )
    assert result.error is not None and result.error.code == 408
    assert "per-record deadline of 0.3 seconds" in result.error.message


def test_unreachable_server_is_a_503_after_retries(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    (result,) = run(
        settings_for(tmp_path, url, max_retries=1),
        ModelRequest(CLAUDE, "InvokeModel", claude(user("x")), "a"),
    )
    assert result.error is not None and result.error.code == 503
    assert "Connection to the model server failed" in result.error.message


def test_api_key_comes_from_the_environment(
    tmp_path: Path, fake_openai: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_openai.clear()
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    settings = settings_for(tmp_path, fake_openai.url, api_key_env="FAKE_KEY")
    run(settings, ModelRequest(CLAUDE, "InvokeModel", claude(user("x")), "a"))
    assert fake_openai.requests()[0]["auth"] == "Bearer sk-test"
    monkeypatch.delenv("FAKE_KEY")
    with pytest.raises(ConfigError, match="environment variable FAKE_KEY"):
        build_resolver(settings)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"base_url": "localhost:8000"}, "'base_url' must be an http(s) URL"),
        ({"prompt_api": "legacy"}, "'prompt_api'"),
        ({"unsupported": ["vision"]}, "'unsupported' must be a list of"),
        ({"temperature": 1}, "unknown setting(s) temperature"),
    ],
)
def test_bad_openai_routes(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    settings = settings_for(tmp_path, "http://127.0.0.1:1", **extra)
    text = settings.models_config.read_text() if settings.models_config else ""
    if "base_url" in extra:
        assert settings.models_config is not None
        settings.models_config.write_text(text.replace('base_url = "http://127.0.0.1:1/v1"\n', ""))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_resolver(settings)


def test_image_embeddings_are_refused(tmp_path: Path, fake_openai: FakeServer) -> None:
    fake_openai.clear()
    body = {"inputText": "x", "inputImage": "iVBORw0K"}
    (result,) = run(
        settings_for(tmp_path, fake_openai.url),
        ModelRequest("amazon.titan-embed-image-v1", "InvokeModel", body, "a"),
    )
    assert result.error is not None and result.error.code == 400
    assert "cannot embed images" in result.error.message
    assert fake_openai.requests() == []


def test_mistral_chat_bodies_use_chat_completions(tmp_path: Path, fake_openai: FakeServer) -> None:
    fake_openai.clear()
    body = {
        "messages": [
            {"role": "system", "content": "Be short."},
            {"role": "user", "content": "hello mistral"},
        ],
        "max_tokens": 20,
    }
    (result,) = run(
        settings_for(tmp_path, fake_openai.url),
        ModelRequest("mistral.mistral-large-2407-v1:0", "InvokeModel", body, "a"),
    )
    (sent,) = fake_openai.requests()
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"] == [  # type: ignore[index]
        {"role": "system", "content": "Be short."},
        {"role": "user", "content": "hello mistral"},
    ]
    assert result.output == {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "echo: hello mistral"},
                "stop_reason": "stop",
            }
        ]
    }


def test_openai_layout_bodies_round_trip(tmp_path: Path, fake_openai: FakeServer) -> None:
    fake_openai.clear()
    body = {"messages": [{"role": "user", "content": "hello gpt"}], "max_completion_tokens": 9}
    (result,) = run(
        settings_for(tmp_path, fake_openai.url),
        ModelRequest("openai.gpt-oss-20b-1:0", "InvokeModel", body, "a"),
    )
    (sent,) = fake_openai.requests()
    assert sent["body"]["messages"] == [{"role": "user", "content": "hello gpt"}]  # type: ignore[index]
    assert sent["body"]["max_tokens"] == 9  # type: ignore[index]
    assert result.output is not None
    assert result.output["choices"][0]["message"]["content"] == "echo: hello gpt"
    assert result.output["usage"]["total_tokens"] == result.input_tokens + result.output_tokens
