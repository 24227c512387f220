"""The newer families through the OpenAI-compatible backend (a real fake-server process):
gpt-oss, Qwen3, DeepSeek-V3.1 and Nova Multimodal Embeddings (issue 15, item 2), and media
by S3 location, which such a server cannot fetch (item 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchrock.backends.base import ModelRequest

from .conftest import FakeServer, run
from .test_openai import settings_for


def _text(body: Any) -> str:
    return str(body.get("prompt") or body["messages"][-1]["content"])


def test_gpt_oss_keeps_the_servers_reasoning_in_front(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    fake_openai.clear()
    body = {"messages": [{"role": "user", "content": "hello [reason]"}], "max_completion_tokens": 9}
    (result,) = run(
        settings_for(tmp_path, fake_openai.url),
        ModelRequest("openai.gpt-oss-120b-1:0", "InvokeModel", body, "a"),
    )
    assert result.output is not None
    message = result.output["choices"][0]["message"]
    assert message["content"] == "<reasoning>thinking it over</reasoning>echo: hello [reason]"
    assert result.output["model"] == "openai.gpt-oss-120b-1:0"


def test_qwen_and_deepseek_v3_chat_carry_their_parameters(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    fake_openai.clear()
    qwen = {"messages": [{"role": "user", "content": "hi qwen"}], "max_tokens": 20, "top_k": 20}
    deepseek = {"messages": [{"role": "user", "content": "hi ds"}], "max_tokens": 20}
    prompt = {"prompt": "<｜User｜>hi<｜Assistant｜>", "max_tokens": 20}
    results = run(
        settings_for(tmp_path, fake_openai.url),
        ModelRequest("qwen.qwen3-32b-v1:0", "InvokeModel", qwen, "q"),
        ModelRequest("deepseek.v3-v1:0", "InvokeModel", deepseek, "d"),
        ModelRequest("deepseek.v3-v1:0", "InvokeModel", prompt, "p"),
    )
    # Sent concurrently: find each by its text, not by its place in the log.
    sent = {_text(s["body"]): s for s in fake_openai.requests()}
    assert sent["hi qwen"]["path"] == "/v1/chat/completions"
    assert sent["hi qwen"]["body"]["top_k"] == 20  # type: ignore[index]
    assert sent["hi ds"]["path"] == "/v1/chat/completions"
    assert sent[prompt["prompt"]]["path"] == "/v1/completions"
    q, d, p = (r.output for r in results)
    assert q is not None and q["choices"][0]["message"]["content"] == "echo: hi qwen"
    assert d is not None and d["object"] == "chat.completion"
    assert p is not None and set(p["choices"][0]) == {"text", "stop_reason"}


def test_response_format_and_tools_go_to_the_server_as_they_are(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    fake_openai.clear()
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    }
    (result,) = run(
        settings_for(tmp_path, fake_openai.url),
        ModelRequest("qwen.qwen3-32b-v1:0", "InvokeModel", body, "a"),
    )
    assert result.output is not None, result.error
    (sent,) = fake_openai.requests()
    assert sent["body"]["response_format"] == {  # type: ignore[index]
        "type": "json_schema",
        "json_schema": {"name": "s", "schema": schema, "strict": True},
    }


def test_nova_embeddings_text_goes_to_embeddings_and_media_is_refused(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    fake_openai.clear()
    params = {"embeddingPurpose": "GENERIC_INDEX"}
    text = {
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {**params, "text": {"truncationMode": "END", "value": "hi"}},
    }
    image = {
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {
            **params,
            "image": {"format": "png", "source": {"bytes": "AAAA"}},
        },
    }
    in_s3 = {
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {
            **params,
            "video": {
                "format": "mp4",
                "embeddingMode": "AUDIO_VIDEO_COMBINED",
                "source": {"s3Location": {"uri": "s3://b/v.mp4"}},
            },
        },
    }
    model = "amazon.nova-2-multimodal-embeddings-v1:0"
    ok, pic, video = run(
        settings_for(tmp_path, fake_openai.url),
        ModelRequest(model, "InvokeModel", text, "t"),
        ModelRequest(model, "InvokeModel", image, "i"),
        ModelRequest(model, "InvokeModel", in_s3, "v"),
    )
    (sent,) = fake_openai.requests()
    assert sent["path"] == "/v1/embeddings" and sent["body"]["input"] == "hi"  # type: ignore[index]
    assert ok.output is not None
    (entry,) = ok.output["embeddings"]
    assert entry["embeddingType"] == "TEXT" and len(entry["embedding"]) == 384
    assert pic.error is not None and "cannot embed image media" in pic.error.message
    assert video.error is not None and "media in S3 (s3Location)" in video.error.message


def test_nova_video_in_s3_is_refused_by_name(tmp_path: Path, fake_openai: FakeServer) -> None:
    fake_openai.clear()
    block = {"format": "mp4", "source": {"s3Location": {"uri": "s3://b/v.mp4"}}}
    body = {"messages": [{"role": "user", "content": [{"video": block}, {"text": "what"}]}]}
    (result,) = run(
        settings_for(tmp_path, fake_openai.url),
        ModelRequest("amazon.nova-lite-v1:0", "InvokeModel", body, "a"),
    )
    assert result.error is not None and result.error.code == 400
    assert "s3Location" in result.error.message and "video" in result.error.message
    assert fake_openai.requests() == []
