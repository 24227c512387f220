"""The built-in model: deterministic, well-formed, realistic, and its injected faults."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from batchrock.backends.base import ModelRequest, ModelResult
from batchrock.backends.builtin import BuiltinModel
from batchrock.backends.routing import BUILTIN_RETRY, wrap

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


def claude(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 512,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        **extra,
    }


def invoke(
    model: Any, model_id: str, body: Any, kind: str = "InvokeModel", rid: str = "r"
) -> ModelResult:
    return asyncio.run(model.invoke(ModelRequest(model_id, kind, body, rid)))  # type: ignore[arg-type]


def test_same_input_same_output_and_different_inputs_differ() -> None:
    first = invoke(BuiltinModel(), CLAUDE, claude("Summarise the French revolution"))
    again = invoke(BuiltinModel(), CLAUDE, claude("Summarise the French revolution"))
    other = invoke(BuiltinModel(), CLAUDE, claude("Write a haiku about rain"))
    assert first.output == again.output
    assert first.output is not None and other.output is not None
    assert first.output["content"] != other.output["content"]
    assert first.output["id"] != other.output["id"]


def test_seed_changes_answers() -> None:
    a = invoke(BuiltinModel(seed=0), CLAUDE, claude("x"))
    b = invoke(BuiltinModel(seed=1), CLAUDE, claude("x"))
    assert a.output != b.output


def test_token_counts_are_realistic_and_reported() -> None:
    text = "word " * 400
    result = invoke(BuiltinModel(), CLAUDE, claude(text))
    assert result.output is not None
    usage = result.output["usage"]
    assert 450 <= usage["input_tokens"] <= 560
    assert (result.input_tokens, result.output_tokens) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    answer = result.output["content"][0]["text"]
    assert 5 <= usage["output_tokens"] <= 2 * len(answer.split()) + 5
    assert result.output["stop_reason"] == "end_turn"


def test_max_tokens_cuts_the_answer() -> None:
    result = invoke(BuiltinModel(), CLAUDE, claude("hello", max_tokens=3))
    assert result.output is not None
    assert result.output["stop_reason"] == "max_tokens"
    assert result.output["usage"]["output_tokens"] == 3
    assert len(result.output["content"][0]["text"]) <= 12


def test_stop_sequences_end_the_answer() -> None:
    full = invoke(BuiltinModel(), CLAUDE, claude("stop test"))
    assert full.output is not None
    text = full.output["content"][0]["text"]
    stop = text.split()[3]
    cut = invoke(BuiltinModel(), CLAUDE, claude("stop test", stop_sequences=[stop]))
    assert cut.output is not None
    assert cut.output["stop_reason"] == "stop_sequence"
    assert cut.output["stop_sequence"] == stop
    assert cut.output["content"][0]["text"] == text[: text.find(stop)]


@pytest.mark.parametrize(
    ("model_id", "kind", "body", "keys"),
    [
        (
            "amazon.nova-micro-v1:0",
            "InvokeModel",
            {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
            {"output", "stopReason", "usage"},
        ),
        (
            CLAUDE,
            "Converse",
            {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
            {"output", "stopReason", "usage", "metrics"},
        ),
        (
            "amazon.titan-text-lite-v1",
            "InvokeModel",
            {"inputText": "hi"},
            {"inputTextTokenCount", "results"},
        ),
        (
            "meta.llama3-70b-instruct-v1:0",
            "InvokeModel",
            {"prompt": "hi"},
            {"generation", "prompt_token_count", "generation_token_count", "stop_reason"},
        ),
        ("mistral.mistral-large-2402-v1:0", "InvokeModel", {"prompt": "hi"}, {"outputs"}),
        (
            "amazon.titan-embed-text-v1",
            "InvokeModel",
            {"inputText": "hi"},
            {"embedding", "inputTextTokenCount"},
        ),
        (
            "custom-model",
            "InvokeModel",
            claude("hi"),
            {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"},
        ),
    ],
)
def test_every_family_is_answered_well_formed(
    model_id: str, kind: str, body: Any, keys: set[str]
) -> None:
    result = invoke(BuiltinModel(), model_id, body, kind)
    assert result.ok and result.output is not None
    assert set(result.output) == keys
    assert result.input_tokens > 0


def test_titan_v2_embeddings_have_the_requested_size_and_norm() -> None:
    body = {
        "inputText": "the cat sat on the mat",
        "dimensions": 256,
        "embeddingTypes": ["float", "binary"],
    }
    result = invoke(BuiltinModel(), "amazon.titan-embed-text-v2:0", body)
    assert result.output is not None
    vector = result.output["embedding"]
    assert len(vector) == 256
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)
    assert result.output["embeddingsByType"]["binary"] == [1 if v > 0 else 0 for v in vector]
    default = invoke(BuiltinModel(), "amazon.titan-embed-text-v2:0", {"inputText": "x"})
    assert default.output is not None and len(default.output["embedding"]) == 1024
    raw = invoke(
        BuiltinModel(), "amazon.titan-embed-text-v2:0", {"inputText": "x y z", "normalize": False}
    )
    assert raw.output is not None
    assert not math.isclose(math.sqrt(sum(v * v for v in raw.output["embedding"])), 1.0)
    v1 = invoke(BuiltinModel(), "amazon.titan-embed-text-v1", {"inputText": "x"})
    assert v1.output is not None and len(v1.output["embedding"]) == 1536


def test_embeddings_of_similar_texts_are_closer() -> None:
    def vec(text: str) -> list[float]:
        result = invoke(
            BuiltinModel(), "amazon.titan-embed-text-v2:0", {"inputText": text, "dimensions": 512}
        )
        assert result.output is not None
        return list(result.output["embedding"])

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    base = vec("the quick brown fox jumps over the lazy dog")
    near = vec("the quick brown fox jumps over the sleepy dog")
    far = vec("quarterly revenue grew in asian markets")
    assert cos(base, near) > cos(base, far) + 0.3


def test_malformed_input_is_a_400_record_error() -> None:
    result = invoke(BuiltinModel(), CLAUDE, {"messages": "hi"})
    assert result.error is not None and result.error.code == 400 and not result.error.retryable
    assert result.error.message.startswith(
        "Malformed input request: #: required key [anthropic_version]"
    )
    unknown = invoke(BuiltinModel(), "my-model", {"foo": 1})
    assert unknown.error is not None and unknown.error.code == 400
    assert "my-model" in unknown.error.message


@pytest.mark.parametrize("key", ["messages", "max_tokens"])
def test_a_null_required_claude_member_is_a_400_record_error(key: str) -> None:
    # "messages": null crashed the parser (a 500 record error), "max_tokens": null was served.
    result = invoke(BuiltinModel(), CLAUDE, {**claude("hi"), key: None})
    assert result.error is not None and result.error.code == 400 and not result.error.retryable
    assert result.error.message == (
        f"Malformed input request: #: required key [{key}] not found, please reformat your "
        "input and try again."
    )


def test_error_rate_fails_a_deterministic_share_of_records() -> None:
    model = BuiltinModel(error_rate=0.25)

    async def run() -> list[bool]:
        return [
            (await model.invoke(ModelRequest(CLAUDE, "InvokeModel", claude("same"), f"r{i}"))).ok
            for i in range(2000)
        ]

    first = asyncio.run(run())
    assert 0.2 < first.count(False) / len(first) < 0.3
    assert asyncio.run(run()) == first
    failed = invoke(model, CLAUDE, claude("same"), rid=f"r{first.index(False)}")
    assert failed.error is not None and failed.error.code == 500 and not failed.error.retryable


def test_throttles_are_retried_and_counted() -> None:
    backend = wrap(BuiltinModel(throttle_rate=0.5, seed=3), BUILTIN_RETRY, None)

    async def run() -> list[ModelResult]:
        return await asyncio.gather(
            *(
                backend.invoke(ModelRequest(CLAUDE, "InvokeModel", claude(str(i)), str(i)))
                for i in range(200)
            )
        )

    results = asyncio.run(run())
    throttled = sum(r.info.get("throttled", 0) for r in results)
    assert throttled > 50
    failed = [r for r in results if not r.ok]
    # 0.5 ** 5 attempts: a few records run out of retries and end as 429 record errors.
    assert all(r.error is not None and r.error.code == 429 for r in failed)
    assert all(r.info["attempts"] == 5 and r.info["throttled"] == 5 for r in failed)
    assert len(failed) < 30
    assert any(r.ok and r.info.get("throttled") for r in results)


def test_latency_is_applied() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    model = BuiltinModel(latency_ms=200, sleep=sleep)
    result = invoke(model, CLAUDE, claude("x"))
    assert result.ok and slept == [0.2]


def test_bad_knobs_are_rejected() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        BuiltinModel(error_rate=2)
    with pytest.raises(ValueError, match="latency"):
        BuiltinModel(latency_ms=-1)


def test_quick_and_parsed_paths_answer_alike() -> None:
    # tools send the record down the parser's path; the answer must not change.
    plain = invoke(BuiltinModel(), CLAUDE, claude("same words", stop_sequences=["e"]))
    parsed = invoke(BuiltinModel(), CLAUDE, claude("same words", stop_sequences=["e"], tools=[]))
    assert plain.output == parsed.output
    assert (plain.input_tokens, plain.output_tokens) == (parsed.input_tokens, parsed.output_tokens)


def test_multimodal_embeddings_mix_text_and_image() -> None:
    model_id = "amazon.titan-embed-image-v1"
    both = invoke(BuiltinModel(), model_id, {"inputText": "a red car", "inputImage": "iVBORw0K"})
    text = invoke(BuiltinModel(), model_id, {"inputText": "a red car"})
    image = invoke(
        BuiltinModel(),
        model_id,
        {"inputImage": "iVBORw0K", "embeddingConfig": {"outputEmbeddingLength": 256}},
    )
    assert both.output is not None and text.output is not None and image.output is not None
    assert len(both.output["embedding"]) == 1024 and len(image.output["embedding"]) == 256
    assert both.output["embedding"] != text.output["embedding"]
    assert image.output["inputTextTokenCount"] == 0
    assert set(both.output) == {"embedding", "inputTextTokenCount", "message"}


def test_mistral_text_and_chat_bodies_get_their_own_layouts() -> None:
    model_id = "mistral.mistral-large-2407-v1:0"
    text = invoke(BuiltinModel(), model_id, {"prompt": "<s>[INST] hi [/INST]"})
    chat = invoke(BuiltinModel(), model_id, {"messages": [{"role": "user", "content": "hi"}]})
    assert text.output is not None and set(text.output) == {"outputs"}
    assert chat.output is not None and set(chat.output) == {"choices"}
    assert chat.output["choices"][0]["message"]["role"] == "assistant"
