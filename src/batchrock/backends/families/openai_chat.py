"""Chat-completions bodies: the OpenAI layout and the open-weight families shaped like it.

:class:`ChatCompletions` parses ``messages`` (roles ``system``, ``developer``, ``user``,
``assistant``, ``tool``; content a string or text parts) plus the usual parameters
(``max_completion_tokens`` or ``max_tokens``, ``temperature``, ``top_p``, ``stop`` ...) and
renders a ``chat.completion`` object (``choices[0].message``, ``finish_reason``, ``usage``).
Each family that uses the layout says which members it takes and how it words an unknown
one: :class:`OpenAIChat` is the generic layout (models catalogued as ``openai-chat``, and the
layout recognised for unknown ids whose messages carry plain-string content); gpt-oss, Qwen
and DeepSeek-V3 have their own classes in :mod:`~batchrock.backends.families.open_weight`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import orjson

from batchrock.backends.families.base import ChatFamily, answer_id
from batchrock.backends.families.schema import BodyError, Checker
from batchrock.backends.neutral import (
    ChatAnswer,
    ChatRequest,
    Message,
    OutputSchema,
    TextPart,
    Tool,
    ToolChoice,
)
from batchrock.catalogue import parse_model_id

_TOP = frozenset(
    {
        "messages",
        "model",
        "max_completion_tokens",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "n",
        "seed",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "response_format",
        "presence_penalty",
        "frequency_penalty",
        "logprobs",
        "top_logprobs",
        "user",
    }
)
#: Members the neutral form does not carry; a backend that cannot serve them says so.
#: (``tools``, ``tool_choice`` and ``response_format`` it does carry.)
_EXTRAS = ("reasoning_effort", "logprobs")
_ROLES = ("system", "developer", "user", "assistant", "tool")
_MESSAGE = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})
#: ``created`` is a time on real servers; a fixed one keeps the built-in model deterministic.
CREATED = 1735689600


class ChatCompletions(ChatFamily):
    """The chat-completions layout; subclasses set the members they take."""

    render_reads_request = False
    #: Top-level members the family takes.
    top: ClassVar[frozenset[str]] = _TOP
    #: Of those, the ones the neutral form does not carry (reported by backends that
    #: cannot serve them; the built-in model ignores them).
    extras: ClassVar[tuple[str, ...]] = _EXTRAS
    #: How an unknown member is refused: as OpenAI's API does (``openai``), or by Bedrock's
    #: JSON-schema validator (``schema``).
    unknown_style: ClassVar[Literal["openai", "schema"]] = "openai"
    max_temperature: ClassVar[float] = 2.0
    #: Whether the body has ``top_k`` (vLLM-served open-weight models on Bedrock).
    takes_top_k: ClassVar[bool] = False

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        if type(body) is dict and self.unknown_style == "openai":
            unknown = [key for key in body if key not in self.top]
            if unknown:
                raise BodyError(f"Unrecognized request argument supplied: {unknown[0]}")
        c = Checker()
        c.top(body, ("messages",), self.top)
        limit = c.integer(body, "max_completion_tokens", "#", minimum=1)
        if limit is None:
            limit = c.integer(body, "max_tokens", "#", minimum=1)
        temperature = c.number(body, "temperature", "#", 0, self.max_temperature)
        top_p = c.number(body, "top_p", "#", 0, 1)
        top_k = c.integer(body, "top_k", "#", minimum=-1) if self.takes_top_k else None
        stop_value = body.get("stop")
        stop: tuple[str, ...] = ()
        if type(stop_value) is str:
            stop = (stop_value,)
        elif stop_value is not None:
            stop = c.strings(body, "stop", "#")
        if body.get("stream") is True or body.get("n", 1) != 1:
            raise BodyError("Batch inference records take one non-streamed answer (n = 1).")
        extras = {key for key in self.extras if key in body}
        tools = _tools(c, body.get("tools"))
        choice = _tool_choice(c, body.get("tool_choice"), body.get("parallel_tool_calls"))
        schema = _response_format(c, body.get("response_format"))
        system: list[str] = []
        messages: list[Message] = []
        for index, raw in enumerate(c.array(body, "messages", "#", min_items=1)):
            path = f"#/messages/{index}"
            if not c.obj(raw, path, ("role",), _MESSAGE):
                continue
            role = c.string(raw, "role", path, enum=_ROLES)
            text = _content(c, raw.get("content"), f"{path}/content")
            if "tool_calls" in raw or role == "tool":
                extras.add("tool calls")
            if role in ("system", "developer"):
                system.append(text)
            elif role == "user":
                messages.append(Message("user", (TextPart(text),)))
            elif role == "assistant":
                messages.append(Message("assistant", (TextPart(text),)))
        c.done()
        self.check(body)
        return ChatRequest(
            messages=tuple(messages),
            system="\n".join(system),
            max_tokens=limit,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k if top_k is None or top_k > 0 else None,
            stop=stop,
            extras=tuple(sorted(extras)),
            tools=tools,
            tool_choice=choice if tools else None,
            output_schema=schema,
        )

    def check(self, body: dict[str, Any]) -> None:
        """The family's own rules beyond the layout (raise ``BodyError``)."""

    def message(self, answer: ChatAnswer) -> dict[str, Any]:
        """``choices[0].message`` for ``answer``: its text, or its tool calls."""
        if answer.tool_calls:
            return {
                "role": "assistant",
                "content": answer.text or None,
                "tool_calls": [
                    {
                        "id": _call_id(call.id),
                        "type": "function",
                        "function": {
                            "name": call.name,
                            "arguments": orjson.dumps(call.input).decode(),
                        },
                    }
                    for call in answer.tool_calls
                ],
            }
        return {"role": "assistant", "content": answer.text}

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-" + answer_id(answer, 24),
            "object": "chat.completion",
            "created": CREATED,
            "model": _reported_model(model_id),
            "choices": [
                {
                    "index": 0,
                    "message": self.message(answer),
                    "finish_reason": _FINISH.get(answer.stop_reason, "stop"),
                }
            ],
            "usage": {
                "prompt_tokens": answer.input_tokens,
                "completion_tokens": answer.output_tokens,
                "total_tokens": answer.input_tokens + answer.output_tokens,
            },
        }


_FINISH = {"length": "length", "tool": "tool_calls"}


def _call_id(ident: str) -> str:
    """A tool call's id in OpenAI's form (``call_...``): a Claude-style id the built-in
    model made keeps its unique tail; a server's own id is kept as it is."""
    return "call_" + ident.rsplit("_", 1)[-1] if ident.startswith("toolu_") else ident


def _tools(c: Checker, raw: Any) -> tuple[Tool, ...]:
    """``tools[{type: function, function{name, description?, parameters?, strict?}}]``."""
    if raw is None:
        return ()
    if type(raw) is not list:
        c.type_error("#/tools", "JSONArray", raw)
        return ()
    tools = []
    for index, entry in enumerate(raw):
        path = f"#/tools/{index}"
        if not c.obj(entry, path, ("type", "function"), {"type", "function"}):
            continue
        c.string(entry, "type", path, enum=("function",))
        spec = entry["function"]
        where = f"{path}/function"
        allowed = {"name", "description", "parameters", "strict"}
        if not c.obj(spec, where, ("name",), allowed):
            continue
        name = c.string(spec, "name", where, min_length=1)
        description = c.string(spec, "description", where)
        parameters = spec.get("parameters", {"type": "object", "properties": {}})
        if type(parameters) is not dict:
            c.type_error(f"{where}/parameters", "JSONObject", parameters)
            continue
        strict = c.boolean(spec, "strict", where)
        if name is not None:
            tools.append(Tool(name, description, parameters, bool(strict)))
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        c.fail("#/tools", "tool names must be unique")
    return tuple(tools)


def _tool_choice(c: Checker, raw: Any, parallel: Any) -> ToolChoice | None:
    """``auto``, ``none``, ``required`` or ``{type: function, function{name}}``."""
    if parallel is not None and type(parallel) is not bool:
        c.type_error("#/parallel_tool_calls", "Boolean", parallel)
    single = parallel is False
    if raw is None:
        return ToolChoice("auto", None, single) if single else None
    if type(raw) is str:
        kinds = {"auto": "auto", "none": "none", "required": "any"}
        if raw not in kinds:
            c.fail("#/tool_choice", f"{raw} is not a valid enum value")
            return None
        return ToolChoice(kinds[raw], None, single)  # type: ignore[arg-type]
    if c.obj(raw, "#/tool_choice", ("type", "function"), {"type", "function"}):
        c.string(raw, "type", "#/tool_choice", enum=("function",))
        function = raw["function"]
        if c.obj(function, "#/tool_choice/function", ("name",), {"name"}):
            name = c.string(function, "name", "#/tool_choice/function")
            if name is not None:
                return ToolChoice("tool", name, single)
    return None


def _response_format(c: Checker, raw: Any) -> OutputSchema | None:
    """``{type: text}``, ``{type: json_object}`` or ``{type: json_schema, json_schema{name,
    schema, description?, strict?}}`` -> the JSON schema the answer must follow."""
    if raw is None:
        return None
    path = "#/response_format"
    if not c.obj(raw, path, ("type",), {"type", "json_schema"}):
        return None
    kind = c.string(raw, "type", path, enum=("text", "json_object", "json_schema"))
    if kind == "json_object":
        return OutputSchema({"type": "object"})
    if kind != "json_schema":
        return None
    spec = raw.get("json_schema")
    where = f"{path}/json_schema"
    allowed = {"name", "schema", "description", "strict"}
    if spec is None:
        c.fail(path, "required key [json_schema] not found")
        return None
    if not c.obj(spec, where, ("name",), allowed):
        return None
    name = c.string(spec, "name", where)
    description = c.string(spec, "description", where)
    schema = spec.get("schema", {"type": "object"})
    if type(schema) is not dict:
        c.type_error(f"{where}/schema", "JSONObject", schema)
        return None
    return OutputSchema(schema, name, description)


class OpenAIChat(ChatCompletions):
    """The generic OpenAI layout (``openai-chat``)."""

    name = "openai-chat"


def _content(c: Checker, content: Any, path: str) -> str:
    """A message's text: a string, or the text of its ``{"type": "text"}`` parts."""
    if content is None or type(content) is str:
        return content or ""
    if type(content) is not list:
        c.type_error(path, "String", content)
        return ""
    texts = []
    for index, part in enumerate(content):
        where = f"{path}/{index}"
        if c.obj(part, where, ("type",)):
            kind = c.string(part, "type", where, enum=("text",))
            text = c.string(part, "text", where)
            if kind == "text" and part.get("text") is None:
                c.fail(where, "required key [text] not found")
            if kind == "text" and text is not None:
                texts.append(text)
    return "".join(texts)


def _reported_model(model_id: str) -> str:
    """The ``model`` of a chat completion: the model or profile id a foundation-model or
    inference-profile ARN names; any other ARN (an application inference profile, a custom
    model) whole, since the resource id alone (``abcd1234efgh``) names no model and batchrock
    cannot see the model behind it **[UNCONFIRMED: what Bedrock reports there]**."""
    ref = parse_model_id(model_id)
    if ref is None or ref.kind not in {"foundation", "profile"}:
        return model_id
    return model_id.rsplit("/", 1)[-1]
