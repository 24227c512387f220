"""Neutral requests to OpenAI chat-completions fields and back: the payload layer of the
OpenAI-compatible backend (openai_compat.py keeps the transport).

The fields are the ones vLLM, SGLang and llama.cpp's server implement: ``response_format``
``{"type": "json_schema", "json_schema": {...}}`` for structured output, ``tools`` and
``tool_choice`` (``auto``, ``none``, ``required``, or one named function), assistant
``tool_calls`` and ``tool`` messages for earlier calls and their results. Extended thinking
goes as the route's ``thinking`` option says (``reasoning_effort``, or
``chat_template_kwargs.enable_thinking``), and comes back from ``reasoning_content`` (vLLM,
SGLang) or ``reasoning``. What a route cannot carry is named by :func:`unservable`, so the
record fails with a 400 instead of being answered without it.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from batchrock.backends.families.base import stable_id
from batchrock.backends.neutral import (
    ChatRequest,
    DocumentPart,
    ImagePart,
    Message,
    Part,
    TextPart,
    ToolCall,
    ToolResultPart,
    ToolUsePart,
)

#: Ids Claude (``^[a-zA-Z0-9_-]+$``) and Converse accept; a server's other ids are replaced.
_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def unservable(request: ChatRequest, thinking_mode: str) -> list[str]:
    """The features of ``request`` that an OpenAI-compatible route cannot carry."""
    needs: list[str] = []
    if request.prompt is None:
        for message in request.messages:
            for part in message.parts:
                if type(part) is DocumentPart and part.media_type != "text/plain":
                    needs.append("PDF documents")
                    break
    if request.thinking is not None and thinking_mode == "none":
        needs.append("thinking (set the route's thinking option)")
    elif request.effort is not None and thinking_mode != "reasoning_effort":
        needs.append('effort (set thinking = "reasoning_effort" on the route)')
    return sorted(set(needs))


def request_fields(request: ChatRequest, thinking_mode: str) -> dict[str, Any]:
    """The chat-completions members for tools, structured output and thinking."""
    fields: dict[str, Any] = {}
    if request.tools:
        fields["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    **({"description": tool.description} if tool.description else {}),
                    "parameters": tool.input_schema,
                    **({"strict": True} if tool.strict else {}),
                },
            }
            for tool in request.tools
        ]
        choice = request.tool_choice
        if choice is not None:
            if choice.kind == "tool":
                fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
            else:
                fields["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[
                    choice.kind
                ]
            if choice.disable_parallel:
                fields["parallel_tool_calls"] = False
    schema = request.output_schema
    if schema is not None:
        spec: dict[str, Any] = {"name": schema.name or "response", "schema": schema.schema}
        if schema.description:
            spec["description"] = schema.description
        spec["strict"] = True
        fields["response_format"] = {"type": "json_schema", "json_schema": spec}
    if request.thinking is not None and thinking_mode == "chat_template_kwargs":
        fields["chat_template_kwargs"] = {"enable_thinking": True}
    elif thinking_mode == "reasoning_effort" and (
        request.thinking is not None or request.effort is not None
    ):
        fields["reasoning_effort"] = _effort(request)
    return fields


def _effort(request: ChatRequest) -> str:
    """OpenAI's three levels for a Claude effort or thinking budget."""
    if request.effort is not None:
        return {"low": "low", "medium": "medium"}.get(request.effort, "high")
    budget = request.thinking.budget_tokens if request.thinking is not None else None
    if budget is None:
        return "medium"
    return "low" if budget <= 4096 else "medium" if budget <= 16384 else "high"


def message(message: Message) -> list[dict[str, Any]]:
    """One neutral message as chat-completions messages: tool results become ``tool``
    messages (first, as they answer the previous assistant turn), tool calls the
    assistant's ``tool_calls``."""
    out: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for part in message.parts:
        if type(part) is ToolResultPart:
            text = ("Error: " + part.text) if part.is_error else part.text
            out.append({"role": "tool", "tool_call_id": part.tool_use_id, "content": text})
        elif type(part) is ToolUsePart:
            calls.append(
                {
                    "id": part.id,
                    "type": "function",
                    "function": {"name": part.name, "arguments": orjson.dumps(part.input).decode()},
                }
            )
        else:
            content.append(content_part(part))
    if calls:
        text = "".join(p["text"] for p in content if p["type"] == "text")
        out.append({"role": "assistant", "content": text or None, "tool_calls": calls})
    elif content:
        if all(p["type"] == "text" for p in content):
            out.append({"role": message.role, "content": "".join(p["text"] for p in content)})
        else:
            out.append({"role": message.role, "content": content})
    return out


def content_part(part: Part) -> dict[str, Any]:
    if type(part) is ImagePart:
        # Images travel inline as data URLs, the form vLLM, SGLang and llama.cpp accept.
        url = f"data:{part.media_type};base64,{part.data}"
        return {"type": "image_url", "image_url": {"url": url}}
    if type(part) is DocumentPart:
        title = f"{part.title}\n\n" if part.title else ""
        return {"type": "text", "text": title + part.data}
    assert isinstance(part, TextPart)
    return {"type": "text", "text": part.text}


def tool_calls(reply: dict[str, Any]) -> tuple[ToolCall, ...]:
    """An answer's ``tool_calls`` as neutral calls; arguments that are not a JSON object are
    a malformed answer (``ValueError``)."""
    raw = reply.get("tool_calls")
    if not raw:
        return ()
    calls = []
    for call in raw:
        function = call["function"]
        name = function["name"]
        arguments = function.get("arguments") or "{}"
        value = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        if not isinstance(value, dict) or not isinstance(name, str):
            raise ValueError("tool call arguments are not a JSON object")
        ident = call.get("id")
        if not isinstance(ident, str) or not _ID.match(ident):
            ident = "toolu_" + stable_id(f"{name}:{arguments}", 24)
        calls.append(ToolCall(ident, name, value))
    return tuple(calls)


def reasoning(reply: dict[str, Any]) -> str | None:
    """The reasoning text servers with a reasoning parser return beside the content."""
    for key in ("reasoning_content", "reasoning"):
        value = reply.get(key)
        if isinstance(value, str) and value:
            return value
    return None
