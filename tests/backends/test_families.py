"""Each family against request/response pairs shaped like the providers' documentation."""

from __future__ import annotations

from typing import Any

import pytest

from batchrock.backends.families import (
    ANTHROPIC,
    CONVERSE,
    DEEPSEEK,
    LLAMA,
    MISTRAL,
    NOVA,
    NOVA_EMBED,
    OPENAI_CHAT,
    TITAN_EMBED_IMAGE,
    TITAN_EMBED_V1,
    TITAN_EMBED_V2,
    TITAN_TEXT,
    BodyError,
    base_model_id,
    family_for,
    family_for_id,
    sniff,
)
from batchrock.backends.neutral import (
    ChatAnswer,
    ChatRequest,
    DocumentPart,
    EmbedAnswer,
    EmbedRequest,
    ImagePart,
    TextPart,
    request_text,
)

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


def bad(family: Any, body: Any) -> str:
    with pytest.raises(BodyError) as info:
        family.parse(body)
    return info.value.message


# --- detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "family"),
    [
        (CLAUDE, ANTHROPIC),
        ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", ANTHROPIC),
        ("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2:1", ANTHROPIC),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
            "eu.anthropic.claude-3-haiku-20240307-v1:0",
            ANTHROPIC,
        ),
        ("amazon.nova-lite-v1:0", NOVA),
        ("global.amazon.nova-2-lite-v1:0", NOVA),
        ("amazon.titan-text-express-v1", TITAN_TEXT),
        ("amazon.titan-text-premier-v1:0", TITAN_TEXT),
        ("amazon.titan-embed-text-v1", TITAN_EMBED_V1),
        ("amazon.titan-embed-text-v2:0", TITAN_EMBED_V2),
        ("amazon.titan-embed-image-v1", TITAN_EMBED_IMAGE),
        ("meta.llama3-1-8b-instruct-v1:0", LLAMA),
        ("us.meta.llama3-2-11b-instruct-v1:0", LLAMA),
        ("mistral.mistral-7b-instruct-v0:2", MISTRAL),
        ("mistral.mixtral-8x7b-instruct-v0:1", MISTRAL),
    ],
)
def test_family_from_model_id(model_id: str, family: Any) -> None:
    assert family_for_id(model_id) is family


def test_base_model_id_strips_arn_and_geography() -> None:
    assert base_model_id("us.meta.llama3-8b-instruct-v1:0") == "meta.llama3-8b-instruct-v1:0"
    assert base_model_id("meta.llama3-8b-instruct-v1:0") == "meta.llama3-8b-instruct-v1:0"
    assert base_model_id("my-local-model") == "my-local-model"


def test_converse_jobs_use_the_converse_shape_for_any_model() -> None:
    assert family_for(CLAUDE, "Converse") is CONVERSE
    assert family_for("something-custom", "Converse") is CONVERSE


def test_unknown_ids_are_recognised_from_the_body() -> None:
    assert family_for("my-model", "InvokeModel", {"anthropic_version": "x"}) is ANTHROPIC
    assert sniff({"messages": []}) is NOVA
    assert sniff({"inputText": "a", "dimensions": 256}) is TITAN_EMBED_V2
    assert sniff({"inputText": "a", "textGenerationConfig": {}}) is TITAN_TEXT
    assert sniff({"prompt": "a", "max_gen_len": 5}) is LLAMA
    assert sniff({"prompt": "a", "max_tokens": 5}) is MISTRAL
    assert sniff({"foo": 1}) is None


# --- Anthropic Claude Messages ------------------------------------------------------------

CLAUDE_BODY = {
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 1024,
    "system": "You are terse.",
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hello world"}]},
        {"role": "assistant", "content": "Hi."},
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {"type": "text", "text": "What is this?"},
            ],
        },
    ],
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 250,
    "stop_sequences": ["\n\nHuman:"],
}


def test_claude_request_parses_every_member() -> None:
    request = ANTHROPIC.parse(CLAUDE_BODY)
    assert request.system == "You are terse."
    assert request.max_tokens == 1024
    assert (request.temperature, request.top_p, request.top_k) == (0.5, 0.9, 250)
    assert request.stop == ("\n\nHuman:",)
    assert [m.role for m in request.messages] == ["user", "assistant", "user"]
    assert request.messages[1].parts == (TextPart("Hi."),)
    assert request.messages[2].parts == (
        ImagePart("image/png", "iVBORw0KGgo="),
        TextPart("What is this?"),
    )


QUICK_CASES = [
    (
        ANTHROPIC,
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 10,
            "system": "sys",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": "Hello"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
            ],
            "stop_sequences": ["x"],
            "temperature": 1,
        },
    ),
    (
        NOVA,
        {
            "schemaVersion": "messages-v1",
            "system": [{"text": "s1"}, {"text": "s2"}],
            "messages": [{"role": "user", "content": [{"text": "q"}, {"text": "r"}]}],
            "inferenceConfig": {"maxTokens": 5, "stopSequences": ["y"]},
        },
    ),
    (CONVERSE, {"messages": [{"role": "user", "content": [{"text": "q"}]}]}),
    (TITAN_TEXT, {"inputText": "t", "textGenerationConfig": {"maxTokenCount": 9, "topP": 0.5}}),
    (LLAMA, {"prompt": "p", "temperature": 0.1}),
    (MISTRAL, {"prompt": "p", "max_tokens": 3, "stop": ["z"], "top_k": 5}),
]


@pytest.mark.parametrize(("family", "body"), QUICK_CASES)
def test_quick_path_agrees_with_the_parser(family: Any, body: dict[str, Any]) -> None:
    """The built-in model's shortcut must see exactly what the parser sees."""
    quick = family.quick(body)
    assert quick is not None
    request = family.parse(body)
    assert quick == (request_text(request), len(request.messages), request.max_tokens, request.stop)


@pytest.mark.parametrize(("family", "body"), QUICK_CASES)
def test_quick_path_leaves_anything_unusual_to_the_parser(
    family: Any, body: dict[str, Any]
) -> None:
    assert family.quick({**body, "unknown": 1}) is None
    assert family.quick([body]) is None
    broken = {k: (5 if isinstance(v, str) else v) for k, v in body.items()}
    if broken != body:
        assert family.quick(broken) is None


def test_claude_system_as_text_blocks() -> None:
    body = {**CLAUDE_BODY, "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}
    assert ANTHROPIC.parse(body).system == "A\nB"


def test_claude_response_layout() -> None:
    request = ANTHROPIC.parse(CLAUDE_BODY)
    out = ANTHROPIC.render(ChatAnswer("Hello!", "end", 12, 6), request, CLAUDE)
    assert set(out) == {
        "id",
        "type",
        "role",
        "model",
        "content",
        "stop_reason",
        "stop_sequence",
        "usage",
    }
    assert out["id"].startswith("msg_bdrk_01") and len(out["id"]) == 33
    assert out["type"] == "message" and out["role"] == "assistant"
    assert out["model"] == "claude-3-haiku-20240307"
    assert out["content"] == [{"type": "text", "text": "Hello!"}]
    assert out["stop_reason"] == "end_turn" and out["stop_sequence"] is None
    assert out["usage"] == {
        "input_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 6,
    }
    stopped = ANTHROPIC.render(ChatAnswer("x", "stop", 1, 1, "\n\nHuman:"), request, CLAUDE)
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "\n\nHuman:")
    assert ANTHROPIC.render(ChatAnswer("x", "length", 1, 1), request, CLAUDE)["stop_reason"] == (
        "max_tokens"
    )


def test_claude_malformed_bodies_read_like_bedrock() -> None:
    assert bad(ANTHROPIC, {"messages": [], "max_tokens": 5}) == (
        "Malformed input request: #: required key [anthropic_version] not found"
        "#/messages: expected minimum item count: 1, found: 0, "
        "please reformat your input and try again."
    )
    message = bad(
        ANTHROPIC,
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": "many",
            "messages": [{"role": "bot", "content": [{"type": "text"}]}],
            "stream": True,
        },
    )
    assert message.startswith("Malformed input request: ")
    assert message.endswith(", please reformat your input and try again.")
    for part in (
        "#: extraneous key [stream] is not permitted",
        "#/max_tokens: expected type: Integer, found: String",
        "#/messages/0/role: bot is not a valid enum value",
        "#/messages/0/content/0: required key [text] not found",
    ):
        assert part in message
    assert "#/temperature: 1.5 is not less or equal to 1" in bad(
        ANTHROPIC, {**CLAUDE_BODY, "temperature": 1.5}
    )
    assert "#/max_tokens: 0 is not greater or equal to 1" in bad(
        ANTHROPIC, {**CLAUDE_BODY, "max_tokens": 0}
    )
    assert bad(ANTHROPIC, ["not", "an", "object"]).startswith(
        "Malformed input request: #: expected type: JSONObject, found: JSONArray"
    )


# --- Nova and Converse --------------------------------------------------------------------

NOVA_BODY = {
    "schemaVersion": "messages-v1",
    "system": [{"text": "Be brief."}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"text": "Describe"},
                {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AA="}}},
            ],
        }
    ],
    "inferenceConfig": {
        "maxTokens": 300,
        "temperature": 0.3,
        "topP": 0.1,
        "topK": 20,
        "stopSequences": ["END"],
    },
}


def test_nova_request_and_response() -> None:
    request = NOVA.parse(NOVA_BODY)
    assert request.system == "Be brief."
    assert request.messages[0].parts == (TextPart("Describe"), ImagePart("image/jpeg", "/9j/4AA="))
    assert (request.max_tokens, request.temperature, request.top_p, request.top_k) == (
        300,
        0.3,
        0.1,
        20,
    )
    assert request.stop == ("END",)
    out = NOVA.render(ChatAnswer("A cat.", "end", 40, 3), request, "amazon.nova-lite-v1:0")
    assert out == {
        "output": {"message": {"content": [{"text": "A cat."}], "role": "assistant"}},
        "stopReason": "end_turn",
        "usage": {
            "inputTokens": 40,
            "outputTokens": 3,
            "totalTokens": 43,
            "cacheReadInputTokenCount": 0,
            "cacheWriteInputTokenCount": 0,
        },
    }


def test_nova_accepts_first_release_parameter_names() -> None:
    body = {
        "messages": [{"role": "user", "content": [{"text": "x"}]}],
        "inferenceConfig": {"max_new_tokens": 7, "top_p": 0.5, "top_k": 3},
    }
    request = NOVA.parse(body)
    assert (request.max_tokens, request.top_p, request.top_k) == (7, 0.5, 3)


def test_nova_s3_media_is_flagged_not_dropped() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"video": {"format": "mp4", "source": {"s3Location": {"uri": "s3://b/v.mp4"}}}}
                ],
            }
        ]
    }
    assert "video" in NOVA.parse(body).extras


def test_converse_request_and_response() -> None:
    body = {
        "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
        "system": [{"text": "S"}],
        "inferenceConfig": {"maxTokens": 50, "stopSequences": ["x"]},
        "additionalModelRequestFields": {"top_k": 40},
    }
    request = CONVERSE.parse(body)
    assert (request.system, request.max_tokens, request.top_k, request.stop) == (
        "S",
        50,
        40,
        ("x",),
    )
    out = CONVERSE.render(ChatAnswer("Hello", "length", 5, 50, latency_ms=12), request, CLAUDE)
    assert out == {
        "output": {"message": {"role": "assistant", "content": [{"text": "Hello"}]}},
        "stopReason": "max_tokens",
        "usage": {"inputTokens": 5, "outputTokens": 50, "totalTokens": 55},
        "metrics": {"latencyMs": 12},
    }


def test_converse_errors_use_the_aws_validation_style() -> None:
    assert bad(CONVERSE, {"system": []}) == (
        "1 validation error detected: Value null at 'messages' failed to satisfy constraint: "
        "Member must not be null"
    )
    message = bad(
        CONVERSE,
        {
            "messages": [{"role": "robot", "content": [{"text": "x"}]}],
            "inferenceConfig": {"maxTokens": 0},
        },
    )
    assert message.startswith("2 validation errors detected: ")
    assert "Value 'robot' at 'messages.1.member.role' failed to satisfy constraint" in message
    assert "at 'inferenceConfig.maxTokens'" in message


def test_converse_rejects_tool_config_and_assistant_first() -> None:
    body = {"messages": [{"role": "user", "content": [{"text": "x"}]}], "toolConfig": {"tools": []}}
    assert "toolConfig" in bad(CONVERSE, body)
    first = {"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}
    assert bad(CONVERSE, first).startswith("A conversation must start with a user message.")


# --- prompt families ----------------------------------------------------------------------


def test_titan_text_pair_from_the_batch_docs() -> None:
    request = TITAN_TEXT.parse({"inputText": "Roses are red, violets are"})
    assert request.prompt == "Roses are red, violets are"
    out = TITAN_TEXT.render(
        ChatAnswer("blue\n", "end", 8, 3), request, "amazon.titan-text-express-v1"
    )
    assert out == {
        "inputTextTokenCount": 8,
        "results": [{"tokenCount": 3, "outputText": "blue\n", "completionReason": "FINISH"}],
    }
    config = {"temperature": 0, "topP": 1, "maxTokenCount": 20, "stopSequences": ["User:"]}
    parsed = TITAN_TEXT.parse({"inputText": "x", "textGenerationConfig": config})
    assert (parsed.max_tokens, parsed.stop) == (20, ("User:",))
    assert (
        TITAN_TEXT.render(ChatAnswer("", "length", 1, 20), parsed, "m")["results"][0][
            "completionReason"
        ]
        == "LENGTH"
    )
    assert "#: extraneous key [textGenerationconfig] is not permitted" in bad(
        TITAN_TEXT, {"inputText": "x", "textGenerationconfig": {}}
    )


def test_llama_pair() -> None:
    prompt = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\nHi<|eot_id|>"
    request = LLAMA.parse({"prompt": prompt, "temperature": 0.5, "top_p": 0.9, "max_gen_len": 128})
    assert (request.prompt, request.max_tokens, request.temperature) == (prompt, 128, 0.5)
    assert LLAMA.parse({"prompt": "x"}).max_tokens == 512
    out = LLAMA.render(ChatAnswer("Hello", "end", 10, 2), request, "meta.llama3-8b-instruct-v1:0")
    assert out == {
        "generation": "Hello",
        "prompt_token_count": 10,
        "generation_token_count": 2,
        "stop_reason": "stop",
    }
    assert "#/max_gen_len: 4096 is not less or equal to 2048" in bad(
        LLAMA, {"prompt": "x", "max_gen_len": 4096}
    )
    assert "#: required key [prompt] not found" in bad(LLAMA, {"inputText": "x"})


def test_mistral_pair() -> None:
    body = {"prompt": "<s>[INST] Hi [/INST]", "max_tokens": 64, "stop": ["</s>"], "top_k": 50}
    request = MISTRAL.parse(body)
    assert (request.max_tokens, request.stop, request.top_k) == (64, ("</s>",), 50)
    out = MISTRAL.render(ChatAnswer("Hey", "length", 7, 64), request, "mistral.x")
    assert out == {"outputs": [{"text": "Hey", "stop_reason": "length"}]}


# --- embeddings ---------------------------------------------------------------------------


def test_titan_embed_v2_pair() -> None:
    request = TITAN_EMBED_V2.parse(
        {
            "inputText": "hello",
            "dimensions": 256,
            "normalize": False,
            "embeddingTypes": ["binary", "float"],
        }
    )
    assert request == EmbedRequest("hello", 256, False, ("binary", "float"))
    out = TITAN_EMBED_V2.render(
        EmbedAnswer([0.5, -0.5], 2), request, "amazon.titan-embed-text-v2:0"
    )
    assert out == {
        "embedding": [0.5, -0.5],
        "inputTextTokenCount": 2,
        "embeddingsByType": {"float": [0.5, -0.5], "binary": [1, 0]},
    }
    default = TITAN_EMBED_V2.parse({"inputText": "hello"})
    assert (default.dimensions, default.normalize, default.types) == (None, True, ("float",))
    plain = TITAN_EMBED_V2.render(EmbedAnswer([0.1], 1), default, "m")
    assert plain["embeddingsByType"] == {"float": [0.1]}
    assert "#/dimensions: 300 is not a valid enum value" in bad(
        TITAN_EMBED_V2, {"inputText": "x", "dimensions": 300}
    )
    assert "#/inputText: expected minLength: 1, actual: 0" in bad(TITAN_EMBED_V2, {"inputText": ""})


def test_titan_embed_v1_pair() -> None:
    request = TITAN_EMBED_V1.parse({"inputText": "hello"})
    out = TITAN_EMBED_V1.render(EmbedAnswer([0.1, 0.2], 1), request, "amazon.titan-embed-text-v1")
    assert out == {"embedding": [0.1, 0.2], "inputTextTokenCount": 1}
    assert "#: extraneous key [dimensions] is not permitted" in bad(
        TITAN_EMBED_V1, {"inputText": "x", "dimensions": 256}
    )


def test_chat_request_default_is_empty() -> None:
    assert ChatRequest().messages == () and not ChatRequest().has_images


def test_members_without_a_neutral_form_are_named_not_dropped() -> None:
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
    }
    claude = ANTHROPIC.parse(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 10,
            "anthropic_beta": ["x"],
            "messages": [{"role": "user", "content": [document, {"type": "text", "text": "?"}]}],
        }
    )
    assert claude.extras == ("anthropic_beta",)
    assert claude.messages[0].parts == (
        DocumentPart("application/pdf", "JVBERi0="),
        TextPart("?"),
    )
    converse = CONVERSE.parse(
        {
            "messages": [{"role": "user", "content": [{"text": "x"}]}],
            "guardrailConfig": {"guardrailIdentifier": "g", "guardrailVersion": "1"},
            "additionalModelRequestFields": {"top_k": 5, "reasoning_config": {"type": "enabled"}},
        }
    )
    assert converse.top_k == 5
    assert converse.extras == ("additionalModelRequestFields.reasoning_config", "guardrailConfig")


def test_titan_multimodal_embeddings_pair() -> None:
    request = TITAN_EMBED_IMAGE.parse(
        {
            "inputText": "a red car",
            "inputImage": "iVBO",
            "embeddingConfig": {"outputEmbeddingLength": 384},
        }
    )
    assert (request.text, request.image, request.dimensions) == ("a red car", "iVBO", 384)
    out = TITAN_EMBED_IMAGE.render(
        EmbedAnswer([0.6, 0.8], 3), request, "amazon.titan-embed-image-v1"
    )
    assert out == {"embedding": [0.6, 0.8], "inputTextTokenCount": 3, "message": None}
    assert TITAN_EMBED_IMAGE.parse({"inputImage": "iVBO"}).text == ""
    assert "#: required key [inputText] not found" in bad(TITAN_EMBED_IMAGE, {})
    assert "#/embeddingConfig/outputEmbeddingLength: 512 is not a valid enum value" in bad(
        TITAN_EMBED_IMAGE, {"inputText": "x", "embeddingConfig": {"outputEmbeddingLength": 512}}
    )
    assert sniff({"inputImage": "x"}) is TITAN_EMBED_IMAGE


def test_blank_text_is_refused_as_the_models_do() -> None:
    def claude(text: str) -> dict[str, Any]:
        return {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        }

    assert bad(ANTHROPIC, claude("")) == "messages: text content blocks must be non-empty"
    assert bad(ANTHROPIC, claude("  ")) == (
        "messages: text content blocks must contain non-whitespace text"
    )
    converse = {
        "messages": [
            {"role": "user", "content": [{"text": "hi"}]},
            {"role": "assistant", "content": [{"text": "yo"}, {"text": " "}]},
        ]
    }
    assert bad(CONVERSE, converse) == (
        "The text field in the ContentBlock object at messages.1.content.1 is blank. Add text "
        "to the text field, and try again."
    )
    twice = {
        "messages": [
            {"role": "user", "content": [{"text": "a"}]},
            {"role": "user", "content": [{"text": "b"}]},
        ]
    }
    assert bad(CONVERSE, twice).startswith(
        "A conversation must alternate between user and assistant roles."
    )
    assert CONVERSE.quick(twice) is None
    assert ANTHROPIC.quick(claude(" ")) is None


def test_a_null_member_that_says_what_a_block_is_is_refused() -> None:
    # Each was read as a block with nothing in it: an empty system prompt, an image without
    # bytes, a text part without text, an embedding of "".
    system = {
        "system": [{"text": None}],
        "messages": [{"role": "user", "content": [{"text": "a"}]}],
    }
    assert bad(CONVERSE, system) == (
        "1 validation error detected: Value null at 'system.1.member.text' failed to satisfy "
        "constraint: Member must not be null"
    )
    image = {"format": "png", "source": {"bytes": None}}
    assert "required key [bytes] not found" in bad(
        NOVA, {"messages": [{"role": "user", "content": [{"image": image}]}]}
    )
    for part in ({"type": "text"}, {"type": "text", "text": None}):
        chat = {"messages": [{"role": "user", "content": [part]}]}
        assert "#/messages/0/content/0: required key [text] not found" in bad(OPENAI_CHAT, chat)
    embed = {
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {
            "embeddingPurpose": "GENERIC_INDEX",
            "text": {"truncationMode": "END", "value": None},
        },
    }
    assert "exactly one of [value, source] must be given" in bad(NOVA_EMBED, embed)


def test_mistral_chat_completion_pair() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be short."},
            {"role": "user", "content": "What is the most popular song on WZPZ?"},
        ],
        "max_tokens": 100,
        "temperature": 0.5,
    }
    request = MISTRAL.parse(body)
    assert (request.prompt, request.system, request.max_tokens) == (None, "Be short.", 100)
    assert request.messages[0].parts == (TextPart("What is the most popular song on WZPZ?"),)
    out = MISTRAL.render(ChatAnswer("Hit", "end", 9, 1), request, "mistral.mistral-large-2407-v1:0")
    assert out == {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hit"}, "stop_reason": "stop"}
        ]
    }
    with_tools = MISTRAL.parse({**body, "tools": [], "tool_choice": "auto"})
    assert with_tools.extras == ("tool_choice", "tools")
    assert "#/messages/0/role: robot is not a valid enum value" in bad(
        MISTRAL, {"messages": [{"role": "robot", "content": "x"}]}
    )
    assert MISTRAL.quick(body) is None


def test_openai_chat_pair() -> None:
    body = {
        "messages": [
            {"role": "developer", "content": "Answer briefly."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
            },
        ],
        "max_completion_tokens": 50,
        "stop": "END",
        "reasoning_effort": "low",
    }
    request = OPENAI_CHAT.parse(body)
    assert (request.system, request.max_tokens, request.stop) == ("Answer briefly.", 50, ("END",))
    assert request.messages[0].parts == (TextPart("Hi there"),)
    assert request.extras == ("reasoning_effort",)
    out = OPENAI_CHAT.render(
        ChatAnswer("Hello", "length", 12, 50), request, "openai.gpt-oss-20b-1:0"
    )
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    assert out["model"] == "openai.gpt-oss-20b-1:0"
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello"},
            "finish_reason": "length",
        }
    ]
    assert out["usage"] == {"prompt_tokens": 12, "completion_tokens": 50, "total_tokens": 62}
    assert bad(OPENAI_CHAT, {**body, "foo": 1}) == "Unrecognized request argument supplied: foo"
    assert "#/messages: expected minimum item count: 1" in bad(OPENAI_CHAT, {"messages": []})
    assert family_for_id("zai.glm-4.7-flash") is OPENAI_CHAT
    assert sniff({"messages": [{"role": "user", "content": "x"}]}) is OPENAI_CHAT
    assert sniff({"messages": [{"role": "user", "content": [{"text": "x"}]}]}) is NOVA


def test_deepseek_pair() -> None:
    body = {"prompt": "<｜User｜>Why?<｜Assistant｜>", "max_tokens": 100, "stop": ["</s>"]}
    request = DEEPSEEK.parse(body)
    assert (request.prompt, request.max_tokens, request.stop) == (body["prompt"], 100, ("</s>",))
    out = DEEPSEEK.render(ChatAnswer("Because.", "end", 9, 2), request, "us.deepseek.r1-v1:0")
    assert out == {"choices": [{"text": "Because.", "stop_reason": "stop"}]}
    assert family_for_id("us.deepseek.r1-v1:0") is DEEPSEEK
    assert "#/stop: expected maximum item count: 10, found: 11" in bad(
        DEEPSEEK, {"prompt": "x", "stop": ["a"] * 11}
    )
    assert DEEPSEEK.quick(body) == (body["prompt"], 0, 100, ("</s>",))
