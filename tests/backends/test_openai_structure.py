"""Structured output, tools, tool history and thinking through the OpenAI-compatible backend,
against the fake server process (fake_openai.py implements the vLLM fields)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from batchrock.backends.base import ModelRequest
from batchrock.backends.routing import ConfigError, build_resolver

from .conftest import FakeServer, run
from .test_openai import settings_for
from .test_structure import CLAUDE, CONTACT, TIME, WEATHER, claude, converse, text_format


def run_openai(tmp_path: Path, fake: FakeServer, *requests: ModelRequest, **route: Any) -> Any:
    fake.clear()
    return run(settings_for(tmp_path, fake.url, **route), *requests)


def test_openai_structured_output_and_tools_are_sent_and_mapped_back(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    structured = claude(output_config={"format": {"type": "json_schema", "schema": CONTACT}})
    forced = claude(tools=[WEATHER, TIME], tool_choice={"type": "tool", "name": "get_weather"})
    anyone = claude(tools=[WEATHER], tool_choice={"type": "any", "disable_parallel_tool_use": True})
    conv = converse(outputConfig=text_format(CONTACT))
    results = run_openai(
        tmp_path,
        fake_openai,
        ModelRequest(CLAUDE, "InvokeModel", structured, "a"),
        ModelRequest(CLAUDE, "InvokeModel", forced, "b"),
        ModelRequest(CLAUDE, "InvokeModel", anyone, "c"),
        ModelRequest("amazon.nova-pro-v1:0", "Converse", conv, "d"),
    )
    # The four records are sent concurrently: their order at the server is not fixed.
    bodies = [r["body"] for r in fake_openai.requests()]
    assert len(bodies) == 4
    formats = [b["response_format"] for b in bodies if "response_format" in b]
    assert {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": CONTACT, "strict": True},
    } in formats
    assert {
        "type": "json_schema",
        "json_schema": {
            "name": "contact",
            "schema": CONTACT,
            "description": "A sales lead",
            "strict": True,
        },
    } in formats
    choices = [b.get("tool_choice") for b in bodies if "tools" in b]
    assert {"type": "function", "function": {"name": "get_weather"}} in choices
    assert "required" in choices
    assert any(b.get("parallel_tool_calls") is False for b in bodies)
    tools_sent = next(b["tools"] for b in bodies if "tools" in b and len(b["tools"]) == 2)
    assert tools_sent[0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": WEATHER["description"],
            "parameters": WEATHER["input_schema"],
        },
    }
    a, b, c, d = (r.output for r in results)
    jsonschema.validate(json.loads(a["content"][0]["text"]), CONTACT)
    assert b["stop_reason"] == "tool_use"
    (call,) = b["content"]
    assert call["type"] == "tool_use" and call["name"] == "get_weather"
    assert call["id"] == "call_0"
    jsonschema.validate(call["input"], WEATHER["input_schema"])
    assert c["stop_reason"] == "tool_use"
    jsonschema.validate(json.loads(d["output"]["message"]["content"][0]["text"]), CONTACT)


def test_openai_tool_history_is_sent_as_tool_calls_and_tool_messages(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    body = claude(tools=[WEATHER])
    body["messages"] = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"location": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "9C",
                    "is_error": False,
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    (result,) = run_openai(tmp_path, fake_openai, ModelRequest(CLAUDE, "InvokeModel", body, "a"))
    (sent,) = fake_openai.requests()
    assert sent["body"]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "9C"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert result.output["stop_reason"] == "end_turn"


def test_openai_thinking_needs_the_route_option(tmp_path: Path, fake_openai: FakeServer) -> None:
    body = claude(thinking={"type": "enabled", "budget_tokens": 2000}, max_tokens=4000)
    pdf = claude()
    pdf["messages"][0]["content"] = [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        },
        {"type": "text", "text": "Summarise"},
    ]
    refused, no_pdf = run_openai(
        tmp_path,
        fake_openai,
        ModelRequest(CLAUDE, "InvokeModel", body, "a"),
        ModelRequest(CLAUDE, "InvokeModel", pdf, "b"),
    )
    assert refused.error is not None and refused.error.code == 400
    assert "cannot serve thinking" in refused.error.message
    assert no_pdf.error is not None and "cannot serve PDF documents" in no_pdf.error.message
    assert fake_openai.requests() == []
    (served,) = run_openai(
        tmp_path,
        fake_openai,
        ModelRequest(CLAUDE, "InvokeModel", body, "a"),
        thinking="reasoning_effort",
    )
    (sent,) = fake_openai.requests()
    assert sent["body"]["reasoning_effort"] == "low"
    thinking, text = served.output["content"]
    assert thinking == {"type": "thinking", "thinking": "thinking (low)", "signature": ""}
    assert text["type"] == "text"
    (qwen,) = run_openai(
        tmp_path,
        fake_openai,
        ModelRequest(CLAUDE, "InvokeModel", body, "a"),
        thinking="chat_template_kwargs",
    )
    assert fake_openai.requests()[0]["body"]["chat_template_kwargs"] == {"enable_thinking": True}
    assert qwen.output["content"][0]["type"] == "thinking"


def test_thinking_option_is_checked_and_effort_needs_it(
    tmp_path: Path, fake_openai: FakeServer
) -> None:
    with pytest.raises(ConfigError, match="'thinking' must be one of"):
        build_resolver(settings_for(tmp_path, fake_openai.url, thinking="yes"))
    body = claude(output_config={"effort": "medium"})
    (refused,) = run_openai(tmp_path, fake_openai, ModelRequest(CLAUDE, "InvokeModel", body, "a"))
    assert refused.error is not None and "cannot serve effort" in refused.error.message
    (served,) = run_openai(
        tmp_path,
        fake_openai,
        ModelRequest(CLAUDE, "InvokeModel", body, "a"),
        thinking="reasoning_effort",
    )
    assert served.output is not None
    assert fake_openai.requests()[0]["body"]["reasoning_effort"] == "medium"
