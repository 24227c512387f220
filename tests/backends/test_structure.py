"""Structured output, tools, thinking, documents and prompt caching: Claude Messages and
Converse, parsed and answered by the built-in model (the OpenAI-compatible translation:
test_openai_structure.py).

Request bodies follow the providers' documentation: Anthropic's structured-outputs page
(contact extraction), its tool-use page (get_weather), its extended-thinking page, and
AWS's Converse structured-output page (outputConfig.textFormat with the schema as a string).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import pytest
from botocore.loaders import Loader

from batchrock.backends.base import ModelRequest
from batchrock.backends.builtin import BuiltinModel
from batchrock.backends.families import ANTHROPIC, CONVERSE, BodyError
from batchrock.backends.neutral import (
    ChatAnswer,
    DocumentPart,
    OutputSchema,
    Thinking,
    ToolCall,
    ToolChoice,
    ToolResultPart,
    ToolUsePart,
)
from batchrock.backends.structured import generate

CLAUDE = "anthropic.claude-sonnet-4-5-20250929-v1:0"
CONTACT = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "email": {"type": "string"},
        "plan_interest": {"type": "string"},
        "demo_requested": {"type": "boolean"},
    },
    "required": ["name", "email", "plan_interest", "demo_requested"],
    "additionalProperties": False,
}
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {
                "type": "string",
                "description": "The city and state, e.g. San Francisco, CA",
            },
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}
TIME = {
    "name": "get_time",
    "description": "Get the current time in a given time zone",
    "input_schema": {
        "type": "object",
        "properties": {"timezone": {"type": "string"}},
        "required": ["timezone"],
    },
}


def claude(text: str = "What's the weather like in San Francisco?", **extra: Any) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def converse(text: str = "Extract the contact.", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"text": text}]}], **extra}


def text_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "textFormat": {
            "type": "json_schema",
            "structure": {
                "jsonSchema": {
                    "schema": json.dumps(schema),
                    "name": "contact",
                    "description": "A sales lead",
                }
            },
        }
    }


def answer(body: dict[str, Any], invocation: str = "InvokeModel", model: str = CLAUDE) -> Any:
    result = BuiltinModel().invoke_now(ModelRequest(model, invocation, body, "r"))  # type: ignore[arg-type]
    return result


def bad(family: Any, body: Any) -> str:
    with pytest.raises(BodyError) as info:
        family.parse(body)
    return info.value.message


# --- the JSON-schema generator ---------------------------------------------------------------

SCHEMAS = [
    CONTACT,
    WEATHER["input_schema"],
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {"$ref": "#/$defs/item"},
                "minItems": 2,
                "maxItems": 4,
                "uniqueItems": True,
            },
            "when": {"type": "string", "format": "date-time"},
            "score": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "count": {"type": "integer", "minimum": 10, "maximum": 12, "multipleOf": 2},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 30}]},
            "tree": {"$ref": "#/$defs/node"},
        },
        "required": ["items", "tree"],
        "additionalProperties": False,
        "$defs": {
            "item": {
                "type": "object",
                "properties": {"sku": {"type": "string", "maxLength": 5}, "n": {"const": 1}},
                "required": ["sku", "n"],
            },
            "node": {
                "type": "object",
                "properties": {"child": {"$ref": "#/$defs/node"}, "label": {"type": "string"}},
                "required": ["label"],
            },
        },
    },
    {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}]},
    {"type": "array", "items": {"type": ["string", "null"]}, "minItems": 3},
    {"type": "object", "minProperties": 2, "additionalProperties": {"type": "boolean"}},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_generated_values_validate_and_depend_on_the_seed(schema: dict[str, Any]) -> None:
    values = [generate(schema, seed * 2654435761) for seed in range(60)]
    for value in values:
        jsonschema.validate(value, schema)
    assert generate(schema, 42) == generate(schema, 42)
    assert len({json.dumps(v, sort_keys=True) for v in values}) > 1


# --- Claude: parsing ------------------------------------------------------------------------


def test_claude_structured_output_tools_and_thinking_are_parsed() -> None:
    body = claude(
        output_config={"format": {"type": "json_schema", "schema": CONTACT}, "effort": "high"},
        tools=[WEATHER, {**TIME, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 512 * 2},
        max_tokens=4096,
    )
    request = ANTHROPIC.parse(body)
    assert request.output_schema == OutputSchema(CONTACT)
    assert request.effort == "high"
    assert [t.name for t in request.tools] == ["get_weather", "get_time"]
    assert request.tools[0].input_schema == WEATHER["input_schema"]
    assert request.tool_choice == ToolChoice("auto", None, True)
    assert request.thinking == Thinking("enabled", 1024)
    assert request.extras == ()
    # The deprecated spelling still works.
    legacy = ANTHROPIC.parse(claude(output_format={"type": "json_schema", "schema": CONTACT}))
    assert legacy.output_schema == OutputSchema(CONTACT)


def test_claude_history_with_tool_use_results_documents_and_thinking() -> None:
    body = claude()
    body["messages"] = [
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "source": {
                        "type": "text",
                        "media_type": "text/plain",
                        "data": "Grass is green.",
                    },
                    "title": "Facts",
                    "citations": {"enabled": True},
                },
                {
                    "type": "text",
                    "text": "What's the weather?",
                    "cache_control": {"type": "ephemeral"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Let me check.", "signature": "EqQBCgIYAh"},
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "get_weather",
                    "input": {"location": "San Francisco, CA"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                    "content": [{"type": "text", "text": "15 degrees"}],
                }
            ],
        },
    ]
    body["tools"] = [WEATHER]
    request = ANTHROPIC.parse(body)
    assert request.messages[0].parts[0] == DocumentPart("text/plain", "Grass is green.", "Facts")
    # Earlier thinking is checked and left out, as Anthropic strips it from the context.
    assert request.messages[1].parts == (
        ToolUsePart(
            "toolu_01A09q90qw90lq917835lq9", "get_weather", {"location": "San Francisco, CA"}
        ),
    )
    assert request.messages[2].parts == (
        ToolResultPart("toolu_01A09q90qw90lq917835lq9", "15 degrees"),
    )


def test_claude_model_rules_read_as_anthropic_words_them() -> None:
    assert bad(ANTHROPIC, claude(thinking={"type": "enabled", "budget_tokens": 512})) == (
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    )
    assert bad(ANTHROPIC, claude(thinking={"type": "enabled", "budget_tokens": 2048})) == (
        "max_tokens must be greater than thinking.budget_tokens"
    )
    forced = claude(
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        thinking={"type": "adaptive"},
    )
    assert bad(ANTHROPIC, forced) == "Thinking may not be enabled when tool_choice forces tool use."
    assert bad(ANTHROPIC, claude(tool_choice={"type": "any"})) == (
        "tool_choice may only be specified while providing tools."
    )
    assert "Tool 'nope' not found" in bad(
        ANTHROPIC, claude(tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"})
    )
    assert bad(ANTHROPIC, claude(tools=[WEATHER, WEATHER])) == "tools: Tool names must be unique."
    orphan = claude()
    orphan["messages"] = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "y"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]},
    ]
    assert "unexpected `tool_use_id` found in `tool_result` blocks: toolu_x" in bad(
        ANTHROPIC, orphan
    )
    message = bad(
        ANTHROPIC,
        claude(
            output_config={"format": {"type": "json", "schema": "x"}, "effort": "huge"},
            tool_choice={"type": "tool"},
            tools=[{"name": "bad name!", "input_schema": {"type": "array"}}],
        ),
    )
    for part in (
        "#/output_config/effort: huge is not a valid enum value",
        "#/output_config/format/type: json is not a valid enum value",
        "#/output_config/format/schema: expected type: JSONObject, found: String",
        "#/tool_choice: required key [name] not found",
        "#/tools/0/name: string [bad name!] does not match pattern",
        "#/tools/0/input_schema/type: array is not a valid enum value",
    ):
        assert part in message


# --- Claude: the built-in model -------------------------------------------------------------


def test_builtin_structured_output_validates_against_the_schema() -> None:
    body = claude(
        "Extract the key information from this email: John Smith (john@example.com) is "
        "interested in our Enterprise plan and wants to schedule a demo.",
        output_config={"format": {"type": "json_schema", "schema": CONTACT}},
    )
    result = answer(body)
    out = result.output
    assert out["stop_reason"] == "end_turn"
    (block,) = out["content"]
    value = json.loads(block["text"])
    jsonschema.validate(value, CONTACT)
    assert answer(body).output == out  # deterministic
    assert out["usage"]["output_tokens"] == result.output_tokens >= len(block["text"]) // 4
    other = answer({**body, "messages": [{"role": "user", "content": "another email"}]})
    assert other.output["content"] != out["content"]


def test_builtin_forced_tool_returns_tool_use_valid_against_the_input_schema() -> None:
    out = answer(
        claude(tools=[WEATHER, TIME], tool_choice={"type": "tool", "name": "get_time"})
    ).output
    assert out["stop_reason"] == "tool_use" and out["stop_sequence"] is None
    (block,) = out["content"]  # no text before a forced tool call
    assert block["type"] == "tool_use" and block["name"] == "get_time"
    assert block["id"].startswith("toolu_bdrk_01")
    jsonschema.validate(block["input"], TIME["input_schema"])
    anyone = answer(claude(tools=[WEATHER, TIME], tool_choice={"type": "any"})).output
    assert anyone["stop_reason"] == "tool_use"
    (call,) = anyone["content"]
    schema = {"get_weather": WEATHER, "get_time": TIME}[call["name"]]["input_schema"]
    jsonschema.validate(call["input"], schema)


def test_builtin_auto_tool_choice_calls_a_tool_the_user_names() -> None:
    named = answer(claude("Use get_weather for Paris.", tools=[WEATHER, TIME])).output
    assert named["stop_reason"] == "tool_use"
    assert [b["name"] for b in named["content"] if b["type"] == "tool_use"] == ["get_weather"]
    plain = answer(claude("Tell me a story.", tools=[WEATHER])).output
    assert plain["stop_reason"] == "end_turn" and plain["content"][0]["type"] == "text"
    none = answer(claude("Use get_weather.", tools=[WEATHER], tool_choice={"type": "none"}))
    assert none.output["stop_reason"] == "end_turn"
    # After the tool's result the model answers in text.
    body = claude(tools=[WEATHER])
    body["messages"] = [
        {"role": "user", "content": "Use get_weather for Paris."},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "9C"}],
        },
    ]
    assert answer(body).output["stop_reason"] == "end_turn"


def test_builtin_thinking_block_comes_first_and_counts_as_output() -> None:
    plain = answer(claude()).output
    body = claude(thinking={"type": "enabled", "budget_tokens": 2000}, max_tokens=4000)
    out = answer(body).output
    thinking, text = out["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] and thinking["signature"]
    assert text == plain["content"][0]
    assert out["usage"]["output_tokens"] > plain["usage"]["output_tokens"]
    adaptive = answer(claude(thinking={"type": "adaptive", "display": "omitted"})).output
    assert adaptive["content"][0]["type"] == "thinking" and adaptive["content"][0]["thinking"] == ""


def test_builtin_reports_prompt_cache_writes_for_a_long_marked_prefix() -> None:
    long_system = [
        {"type": "text", "text": "Policy. " * 1000, "cache_control": {"type": "ephemeral"}}
    ]
    cached = answer(claude(system=long_system)).output["usage"]
    unmarked = answer(claude(system="Policy. " * 1000)).output["usage"]
    assert unmarked["cache_creation_input_tokens"] == 0
    assert cached["cache_creation_input_tokens"] >= 1024
    assert cached["cache_read_input_tokens"] == 0
    total = cached["input_tokens"] + cached["cache_creation_input_tokens"]
    assert total == unmarked["input_tokens"]
    short = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    assert answer(claude(system=short)).output["usage"]["cache_creation_input_tokens"] == 0


def test_claude_stop_sequence_response_fields() -> None:
    text = answer(claude("hello")).output["content"][0]["text"]
    word = text.split()[2]
    out = answer(claude("hello", stop_sequences=["zzz-none", word])).output
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", word)
    assert out["content"][0]["text"] == text[: text.find(word)]
    request = ANTHROPIC.parse(claude())
    rendered = ANTHROPIC.render(ChatAnswer("x", "stop", 1, 1, "END"), request, CLAUDE)
    assert (rendered["stop_reason"], rendered["stop_sequence"]) == ("stop_sequence", "END")
    call = ChatAnswer("", "tool", 1, 1, tool_calls=(ToolCall("toolu_1", "t", {"a": 1}),))
    rendered = ANTHROPIC.render(call, request, CLAUDE)
    assert rendered["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "t", "input": {"a": 1}}
    ]
    assert rendered["stop_reason"] == "tool_use"


# --- Converse --------------------------------------------------------------------------------


def test_converse_members_come_from_botocore_and_all_parse() -> None:
    shapes = Loader().load_service_model("bedrock-runtime", "service-2")["shapes"]
    members = set(shapes["ConverseRequest"]["members"])
    assert {"outputConfig", "serviceTier", "performanceConfig"} <= members
    values = {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "system": [{"text": "S"}, {"cachePoint": {"type": "default"}}],
        "inferenceConfig": {"maxTokens": 10},
        "guardrailConfig": {
            "guardrailIdentifier": "g",
            "guardrailVersion": "1",
            "trace": "enabled",
        },
        "projectIdentifier": "proj_1",
        "additionalModelRequestFields": {"top_k": 5},
        "promptVariables": {"x": {"text": "y"}},
        "additionalModelResponseFieldPaths": ["/stop_sequence"],
        "requestMetadata": {"team": "a"},
        "performanceConfig": {"latency": "optimized"},
        "serviceTier": {"type": "flex"},
        "outputConfig": {**text_format(CONTACT), "effort": "low"},
    }
    # Every member but the two batch does not take (the model is the job's; tools are refused).
    assert members - {"modelId", "toolConfig"} == set(values)
    request = CONVERSE.parse(values)
    assert (request.service_tier, request.latency, request.effort) == ("flex", "optimized", "low")
    assert request.output_schema == OutputSchema(CONTACT, "contact", "A sales lead")


def test_converse_structured_output_service_tier_and_thinking_on_the_builtin_model() -> None:
    body = converse(
        outputConfig=text_format(CONTACT),
        serviceTier={"type": "priority"},
        performanceConfig={"latency": "standard"},
        additionalModelRequestFields={"thinking": {"type": "enabled", "budget_tokens": 1024}},
        inferenceConfig={"maxTokens": 2048},
    )
    out = answer(body, "Converse").output
    reasoning, text = out["output"]["message"]["content"]
    assert reasoning["reasoningContent"]["reasoningText"]["text"]
    assert reasoning["reasoningContent"]["reasoningText"]["signature"]
    jsonschema.validate(json.loads(text["text"]), CONTACT)
    assert out["stopReason"] == "end_turn"
    assert out["serviceTier"] == {"type": "priority"}
    assert out["performanceConfig"] == {"latency": "standard"}
    usage = out["usage"]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]


def test_converse_refuses_what_batch_does_not_take() -> None:
    tools = converse(
        toolConfig={"tools": [{"toolSpec": {"name": "t", "inputSchema": {"json": {}}}}]}
    )
    assert "toolConfig" in bad(CONVERSE, tools)
    history = {
        "messages": [
            {"role": "user", "content": [{"text": "x"}]},
            {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "t1", "name": "t", "input": {}}}],
            },
        ]
    }
    assert bad(CONVERSE, history) == (
        "The toolConfig field must be defined when using toolUse and toolResult content blocks."
    )
    assert "modelId" in bad(CONVERSE, converse(modelId="amazon.nova-lite-v1:0"))
    assert "Unknown field 'responseFormat'" in bad(CONVERSE, converse(responseFormat={}))
    message = bad(
        CONVERSE,
        converse(
            serviceTier={"type": "gold"},
            performanceConfig={"latency": "fast"},
            outputConfig={"textFormat": {"type": "xml", "structure": {"jsonSchema": {}}}},
        ),
    )
    assert message.startswith("4 validation errors detected: ")
    assert "Value 'gold' at 'serviceTier.type' failed to satisfy constraint" in message
    assert "priority, default, flex, reserved" in message
    assert "Value 'fast' at 'performanceConfig.latency'" in message
    assert "Value 'xml' at 'outputConfig.textFormat.type'" in message
    assert "'outputConfig.textFormat.structure.jsonSchema.schema'" in message
    assert "is not valid" in bad(
        CONVERSE,
        converse(
            outputConfig=text_format({})
            | {
                "textFormat": {
                    "type": "json_schema",
                    "structure": {"jsonSchema": {"schema": "[1,"}},
                }
            }
        ),
    )
    thinking = converse(
        additionalModelRequestFields={"thinking": {"type": "enabled", "budget_tokens": 4000}},
        inferenceConfig={"maxTokens": 1000},
    )
    assert bad(CONVERSE, thinking) == "max_tokens must be greater than thinking.budget_tokens"


def test_builtin_counts_pdf_pages_and_tool_definitions_as_input() -> None:
    pdf = b"%PDF-1.4 1 0 obj << /Type /Pages /Count 3 >> " + b"<< /Type /Page >> " * 3
    body = claude("Summarise")
    body["messages"][0]["content"] = [
        {
            "type": "document",
            "source": {
                "type": "base64",
                "media_type": "application/pdf",
                "data": base64.b64encode(pdf).decode(),
            },
        },
        {"type": "text", "text": "Summarise"},
    ]
    plain = answer(claude("Summarise")).output["usage"]["input_tokens"]
    assert answer(body).output["usage"]["input_tokens"] >= plain + 3 * 1200
    with_tools = answer(claude("Summarise", tools=[WEATHER])).output["usage"]["input_tokens"]
    assert with_tools > plain + len(json.dumps(WEATHER["input_schema"])) // 4


def test_converse_thinking_of_another_shape_is_named_not_dropped() -> None:
    other = CONVERSE.parse(converse(additionalModelRequestFields={"thinking": {"type": "bogus"}}))
    assert other.thinking is None
    assert other.extras == ("additionalModelRequestFields.thinking",)
    off = CONVERSE.parse(converse(additionalModelRequestFields={"thinking": {"type": "disabled"}}))
    assert off.thinking is None and off.extras == ()
