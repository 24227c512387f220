"""The newer families, each in its own shape (issue 15, item 2): Nova Multimodal Embeddings,
gpt-oss, Qwen3 and DeepSeek-V3.1, chosen by the catalogue's family for the model id, not by
the body; and Nova media by S3 location recorded for the media check (item 4)."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

from batchrock.backends.base import ModelRequest, ModelResult, RecordError
from batchrock.backends.builtin import BuiltinModel
from batchrock.backends.families import (
    CONVERSE,
    DEEPSEEK_V3,
    GPT_OSS,
    NOVA,
    NOVA_EMBED,
    QWEN,
    BodyError,
    family_for,
    family_for_id,
)
from batchrock.backends.neutral import (
    ChatAnswer,
    EmbedAnswer,
    EmbedRequest,
    MediaRef,
    TextPart,
    non_text_input,
)
from batchrock.catalogue import load_catalogue

NOVA_MME = "amazon.nova-2-multimodal-embeddings-v1:0"
GPT = "openai.gpt-oss-20b-1:0"
QWEN_ID = "qwen.qwen3-32b-v1:0"
DSV3 = "deepseek.v3-v1:0"


def bad(family: Any, body: Any) -> str:
    with pytest.raises(BodyError) as info:
        family.parse(body)
    return info.value.message


def invoke(model_id: str, body: dict[str, Any], media: Any = None) -> ModelResult:
    request = ModelRequest(model_id, "InvokeModel", body, "r", media)
    return asyncio.run(BuiltinModel().invoke(request))


# --- the family comes from the catalogue -----------------------------------------------------


def test_every_catalogued_model_is_answered_in_its_catalogue_family() -> None:
    for model in load_catalogue().models.values():
        family = family_for_id(model.id)
        assert family is not None and family.name == model.family, model.id
        for geography in model.profiles:
            assert family_for_id(f"{geography}.{model.id}") is family


def test_the_id_not_the_body_decides() -> None:
    """A chat-completions body sent to Nova Multimodal Embeddings is not taken for Nova chat
    or OpenAI chat: it is refused in the embeddings schema (Bedrock's 400)."""
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    assert family_for(NOVA_MME, "InvokeModel", chat) is NOVA_EMBED
    assert family_for(QWEN_ID, "InvokeModel", chat) is QWEN
    assert family_for(DSV3, "InvokeModel", chat) is DEEPSEEK_V3
    assert family_for(GPT, "InvokeModel", chat) is GPT_OSS
    result = invoke(NOVA_MME, chat)
    assert result.error is not None and result.error.code == 400
    assert "required key [messages]" not in result.error.message
    assert "#: required key [taskType] not found" in result.error.message


# --- Nova Multimodal Embeddings (AWS Nova user guide, embeddings-schema) ---------------------


def mme(**params: Any) -> dict[str, Any]:
    return {
        "schemaVersion": "nova-multimodal-embed-v1",
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {"embeddingPurpose": "GENERIC_INDEX", **params},
    }


def test_nova_embeddings_text_pair() -> None:
    body = mme(embeddingDimension=1024, text={"truncationMode": "END", "value": "Hello, World!"})
    request = NOVA_EMBED.parse(body)
    assert (request.text, request.dimensions, request.outputs) == ("Hello, World!", 1024, ("TEXT",))
    result = invoke(NOVA_MME, body)
    assert result.output is not None
    (entry,) = result.output["embeddings"]
    assert entry["embeddingType"] == "TEXT" and len(entry["embedding"]) == 1024
    assert math.isclose(math.fsum(v * v for v in entry["embedding"]), 1.0, rel_tol=1e-9)
    default = invoke(NOVA_MME, mme(text={"truncationMode": "END", "value": "x"}))
    assert default.output is not None
    assert len(default.output["embeddings"][0]["embedding"]) == 3072  # the model's default


def test_nova_embeddings_media_pairs() -> None:
    image = mme(
        image={"format": "png", "detailLevel": "STANDARD_IMAGE", "source": {"bytes": "AAAA"}}
    )
    result = invoke(NOVA_MME, image)
    assert result.output is not None
    assert [e["embeddingType"] for e in result.output["embeddings"]] == ["IMAGE"]
    separate = mme(
        video={
            "format": "mp4",
            "embeddingMode": "AUDIO_VIDEO_SEPARATE",
            "source": {"bytes": "AAAA"},
        }
    )
    result = invoke(NOVA_MME, separate)
    assert result.output is not None
    video, audio = result.output["embeddings"]
    assert (video["embeddingType"], audio["embeddingType"]) == ("VIDEO", "AUDIO")
    assert video["embedding"] != audio["embedding"]
    in_s3 = mme(audio={"format": "mp3", "source": {"s3Location": {"uri": "s3://b/a.mp3"}}})
    request = NOVA_EMBED.parse(in_s3)
    assert request.media == (
        MediaRef("s3://b/a.mp3", None, "singleEmbeddingParams/audio/source/s3Location"),
    )


def test_nova_embeddings_refusals() -> None:
    assert "taskType SEGMENTED_EMBEDDING" in bad(
        NOVA_EMBED, {**mme(), "taskType": "SEGMENTED_EMBEDDING"}
    )
    assert "#/singleEmbeddingParams/embeddingDimension: 512 is not a valid enum value" in bad(
        NOVA_EMBED, mme(embeddingDimension=512, text={"truncationMode": "END", "value": "x"})
    )
    assert "exactly one of [text, image, audio, video]" in bad(NOVA_EMBED, mme())
    assert "#/singleEmbeddingParams: required key [embeddingPurpose] not found" in bad(
        NOVA_EMBED,
        {"taskType": "SINGLE_EMBEDDING", "singleEmbeddingParams": {"text": {"value": "x"}}},
    )
    assert "#/singleEmbeddingParams/video: required key [embeddingMode] not found" in bad(
        NOVA_EMBED, mme(video={"format": "mp4", "source": {"bytes": "AAAA"}})
    )


# --- gpt-oss (AWS model-parameters-openai) -----------------------------------------------


GPT_BODY = {
    "messages": [
        {"role": "developer", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
    ],
    "max_completion_tokens": 150,
    "temperature": 0.7,
    "top_p": 0.9,
}


def test_gpt_oss_pair_puts_the_reasoning_before_the_answer() -> None:
    request = GPT_OSS.parse(GPT_BODY)
    assert (request.system, request.max_tokens) == ("You are a helpful assistant.", 150)
    answer = ChatAnswer("Hi there.", "end", 20, 9, thinking="The user greets me.")
    out = GPT_OSS.render(answer, request, GPT)
    assert out["object"] == "chat.completion" and out["model"] == GPT
    assert out["choices"][0]["message"] == {
        "role": "assistant",
        "content": "<reasoning>The user greets me.</reasoning>Hi there.",
    }
    assert out["choices"][0]["finish_reason"] == "stop"
    built = invoke(GPT, GPT_BODY)
    assert built.output is not None
    content = built.output["choices"][0]["message"]["content"]
    assert content.startswith("<reasoning>") and "</reasoning>" in content
    usage = built.output["usage"]
    assert usage["completion_tokens"] == built.output_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The generic layout shows no reasoning.
    plain = invoke("zai.glm-4.7-flash", GPT_BODY)
    assert plain.output is not None
    assert "<reasoning>" not in plain.output["choices"][0]["message"]["content"]


def test_gpt_oss_refusals() -> None:
    assert bad(GPT_OSS, {**GPT_BODY, "top_k": 5}) == "Unrecognized request argument supplied: top_k"
    assert "one non-streamed answer" in bad(GPT_OSS, {**GPT_BODY, "stream": True})
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
    assert "image_url is not a valid enum value" in bad(GPT_OSS, {"messages": [image]})


# --- Qwen3 and DeepSeek-V3.1 ----------------------------------------------------------------


def test_qwen_pair() -> None:
    body = {
        "messages": [{"role": "user", "content": "Write a haiku"}],
        "max_tokens": 64,
        "temperature": 0.6,
        "top_k": 20,
        "stop": ["\n\n"],
        "response_format": {"type": "json_object"},
    }
    request = QWEN.parse(body)
    assert (request.max_tokens, request.top_k, request.stop) == (64, 20, ("\n\n",))
    assert request.extras == ()
    assert request.output_schema is not None and request.output_schema.schema == {"type": "object"}
    assert request.messages[0].parts == (TextPart("Write a haiku"),)
    out = QWEN.render(ChatAnswer("Leaves fall", "length", 5, 64), request, "us." + QWEN_ID)
    assert out["model"] == "us." + QWEN_ID
    assert out["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "Leaves fall"},
        "finish_reason": "length",
    }
    assert "#: extraneous key [reasoning_effort] is not permitted" in bad(
        QWEN, {**body, "reasoning_effort": "low"}
    )


def test_deepseek_v3_takes_the_r1_prompt_and_chat_messages() -> None:
    prompt = {"prompt": "<｜User｜>Why?<｜Assistant｜>", "max_tokens": 100, "stop": ["</s>"]}
    result = invoke(DSV3, prompt)
    assert result.output is not None
    assert set(result.output) == {"choices"}
    assert set(result.output["choices"][0]) == {"text", "stop_reason"}
    chat = {"messages": [{"role": "user", "content": "Why?"}], "max_tokens": 100}
    result = invoke(DSV3, chat)
    assert result.output is not None and result.output["object"] == "chat.completion"
    assert "#/temperature: 1.5 is not less or equal to 1" in bad(
        DEEPSEEK_V3, {**chat, "temperature": 1.5}
    )


# --- Nova media by S3 location ----------------------------------------------------------------


class Media:
    """A MediaReader double: a fixed set of objects that exist."""

    def __init__(self, *existing: str) -> None:
        self.existing = set(existing)
        self.checked: list[MediaRef] = []

    async def check(self, ref: MediaRef) -> RecordError | None:
        self.checked.append(ref)
        return None if ref.uri in self.existing else RecordError(400, f"no {ref.uri}")


def nova_media(kind: str, uri: str) -> dict[str, Any]:
    block: dict[str, Any] = {"format": "mp4" if kind == "video" else "pdf"}
    if kind == "document":
        block["name"] = "doc"
    block["source"] = {"s3Location": {"uri": uri, "bucketOwner": "111111111111"}}
    return {"messages": [{"role": "user", "content": [{kind: block}, {"text": "Describe it"}]}]}


@pytest.mark.parametrize("kind", ["video", "document"])
def test_nova_media_in_s3_are_checked_by_the_built_in_model(kind: str) -> None:
    uri = f"s3://media/{kind}"
    request = NOVA.parse(nova_media(kind, uri))
    assert request.media == (
        MediaRef(uri, "111111111111", f"messages/0/content/0/{kind}/source/s3Location"),
    )
    assert "s3Location" in request.extras  # a backend that cannot fetch it refuses the record
    there = Media(uri)
    assert invoke("amazon.nova-pro-v1:0", nova_media(kind, uri), there).output is not None
    assert [ref.uri for ref in there.checked] == [uri]
    missing = invoke("amazon.nova-pro-v1:0", nova_media(kind, uri), Media())
    assert missing.error == RecordError(400, f"no {uri}")
    # Outside a job (no reader) the model says it cannot read it, rather than answer.
    alone = invoke("amazon.nova-pro-v1:0", nova_media(kind, uri))
    assert alone.error is not None and "no object store" in alone.error.message


def test_image_embeddings_answer_without_s3() -> None:
    answer = EmbedAnswer([0.6, 0.8], 3)
    request = NOVA_EMBED.parse(mme(image={"format": "png", "source": {"bytes": "AA"}}))
    assert NOVA_EMBED.render(answer, request, NOVA_MME) == {
        "embeddings": [{"embeddingType": "IMAGE", "embedding": [0.6, 0.8]}]
    }


def test_nova_video_and_document_blocks_are_checked_against_their_shapes() -> None:
    def body(kind: str, block: Any) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": [{kind: block}, {"text": "x"}]}]}

    assert "#/messages/0/content/0/video/format: avi is not a valid enum value" in bad(
        NOVA, body("video", {"format": "avi", "source": {"bytes": "AAAA"}})
    )
    assert "#/messages/0/content/0/video: required key [source] not found" in bad(
        NOVA, body("video", {"format": "mp4"})
    )
    two = {"format": "mp4", "source": {"bytes": "AA", "s3Location": {"uri": "s3://b/k"}}}
    assert "exactly one of [bytes, s3Location] must be given" in bad(NOVA, body("video", two))
    owner = {"format": "mp4", "source": {"s3Location": {"uri": "s3://b/k", "bucketOwner": "me"}}}
    assert "bucketOwner: string [me] does not match pattern ^[0-9]{12}$" in bad(
        NOVA, body("video", owner)
    )
    assert "#/messages/0/content/0/document: required key [name] not found" in bad(
        NOVA, body("document", {"format": "pdf", "source": {"bytes": "AA"}})
    )
    fine = NOVA.parse(body("video", {"format": "three_gp", "source": {"bytes": "AAAA"}}))
    assert fine.extras == ("video",) and fine.media == ()


def test_what_a_text_only_embedding_model_cannot_embed() -> None:
    text_in_s3 = mme(text={"truncationMode": "END", "source": {"s3Location": {"uri": "s3://b/t"}}})
    cases = {
        "media in S3 (s3Location)": NOVA_EMBED.parse(text_in_s3),
        "audio media": NOVA_EMBED.parse(mme(audio={"format": "wav", "source": {"bytes": "AA"}})),
        "images (inputImage)": EmbedRequest("", image="AAAA"),
    }
    for expected, request in cases.items():
        assert non_text_input(request) == expected
    assert (
        non_text_input(NOVA_EMBED.parse(mme(text={"truncationMode": "END", "value": "x"}))) is None
    )


def test_converse_media_in_s3_are_checked_too() -> None:
    uri = "s3://media/clip.mp4"
    body = nova_media("video", uri)
    request = CONVERSE.parse(body)
    assert request.media == (
        MediaRef(uri, "111111111111", "messages.1.member.content.1.member.video.source.s3Location"),
    )
    result = asyncio.run(
        BuiltinModel().invoke(ModelRequest("amazon.nova-pro-v1:0", "Converse", body, "r", Media()))
    )
    assert result.error == RecordError(400, f"no {uri}")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


@pytest.mark.parametrize("model_id", [GPT, QWEN_ID, DSV3, "zai.glm-4.7-flash"])
def test_openai_layout_families_honour_a_forced_tool(model_id: str) -> None:
    """OpenAI's tool-call shape: ``tool_calls[{id, type: function, function{name,
    arguments: JSON string}}]``, ``content: null``, ``finish_reason: tool_calls``."""
    body = {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "max_tokens": 200,
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    result = invoke(model_id, body)
    assert result.output is not None, result.error
    choice = result.output["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert isinstance(arguments["city"], str)
    assert set(arguments) <= {"city", "days"}


@pytest.mark.parametrize("model_id", [GPT, QWEN_ID, DSV3])
def test_openai_layout_families_honour_a_json_schema(model_id: str) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "score": {"type": "number"}},
        "required": ["answer", "score"],
        "additionalProperties": False,
    }
    body = {
        "messages": [{"role": "user", "content": "Rate this"}],
        "max_tokens": 300,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "rating", "schema": schema, "strict": True},
        },
    }
    result = invoke(model_id, body)
    assert result.output is not None, result.error
    content = result.output["choices"][0]["message"]["content"]
    if content.startswith("<reasoning>"):
        content = content.split("</reasoning>", 1)[1]
    value = json.loads(content)
    assert set(value) == {"answer", "score"} and isinstance(value["answer"], str)
    assert "#/response_format: required key [json_schema] not found" in bad(
        QWEN, {**body, "response_format": {"type": "json_schema"}}
    )
    assert "#/tool_choice: sometimes is not a valid enum value" in bad(
        QWEN, {**body, "tools": [WEATHER], "tool_choice": "sometimes"}
    )
