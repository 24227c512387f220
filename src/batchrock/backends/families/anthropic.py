"""Anthropic Claude, Messages API (``anthropic.claude-*``).

Request: ``anthropic_version`` (``bedrock-2023-05-31``), ``max_tokens`` and ``messages`` are
required; ``system`` (text or text blocks), ``temperature``, ``top_p``, ``top_k``,
``stop_sequences``, ``tools`` and ``tool_choice``, ``thinking``, structured output
(``output_config.format``, and the deprecated ``output_format``) and ``cache_control`` marks
are optional. Content blocks: text, image, document, tool_use, tool_result, thinking and
redacted_thinking. Response: a ``message`` object with thinking, text and tool_use content
blocks, ``stop_reason`` and ``usage`` (with the prompt-cache counts).

The checks after the schema's (thinking budgets, tool_choice against tools, tool_use /
tool_result pairing) are the model's own and read as Anthropic words them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any, Literal

import msgspec
import orjson

from batchrock.backends.base import DECODE_ERRORS, JsonBytes
from batchrock.backends.families.base import (
    ChatFamily,
    Quick,
    ResponseTemplate,
    answer_id,
    stop_strings,
)
from batchrock.backends.families.schema import BodyError, Checker
from batchrock.backends.neutral import (
    ChatAnswer,
    ChatRequest,
    DocumentPart,
    ImagePart,
    Message,
    OutputSchema,
    Part,
    Role,
    StopReason,
    TextPart,
    Thinking,
    Tool,
    ToolChoice,
    ToolResultPart,
    ToolUsePart,
    estimate_tokens,
)

_TOP = frozenset(
    {
        "anthropic_version",
        "anthropic_beta",
        "max_tokens",
        "system",
        "messages",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "output_config",
        "output_format",
    }
)
_REQUIRED = ("anthropic_version", "max_tokens", "messages")
#: Members the neutral form does not carry; a backend that cannot serve them says so.
_EXTRAS = ("anthropic_beta",)
#: Members the quick path leaves to the parser.
_RICH = ("tools", "tool_choice", "thinking", "anthropic_beta", "output_config", "output_format")
#: ``bedrock-2023-05-31`` is what AWS documents; anthropic's SDK (2.14) sends ``2026-10-21``.
_VERSIONS = ("bedrock-2023-05-31", "2026-10-21")
_TOOL = frozenset(
    {"type", "name", "description", "input_schema", "cache_control", "strict", "input_examples"}
)
_TOOL_CHOICE = frozenset({"type", "name", "disable_parallel_tool_use"})
_THINKING = frozenset({"type", "budget_tokens", "display"})
_OUTPUT_CONFIG = frozenset({"format", "effort"})
_FORMAT = frozenset({"type", "schema"})
_EFFORTS = ("low", "medium", "high", "xhigh", "max")
_CACHE_CONTROL = frozenset({"type", "ttl"})
_TOOL_USE = frozenset({"type", "id", "name", "input", "cache_control", "caller"})
_TOOL_RESULT = frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"})
_THINKING_BLOCK = frozenset({"type", "thinking", "signature"})
_REDACTED_BLOCK = frozenset({"type", "data"})
_DOCUMENT = frozenset({"type", "source", "title", "context", "citations", "cache_control"})
_DOCUMENT_SOURCE = frozenset({"type", "media_type", "data", "content"})
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ROLES = ("user", "assistant")
_MESSAGE = frozenset({"role", "content"})
_SYSTEM_BLOCK = frozenset({"type", "text", "cache_control", "citations"})
_TEXT_BLOCK = frozenset({"type", "text", "cache_control", "citations"})
#: Text blocks the quick path takes: a cache_control mark changes the usage, so it parses.
_PLAIN_TEXT_BLOCK = frozenset({"type", "text", "citations"})
_IMAGE_BLOCK = frozenset({"type", "source", "cache_control"})
_SOURCE = frozenset({"type", "media_type", "data"})
_BLOCK_TYPES = (
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
)
_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_STOP: dict[StopReason, str] = {
    "end": "end_turn",
    "length": "max_tokens",
    "stop": "stop_sequence",
    "tool": "tool_use",
}
_STOP_JSON: dict[StopReason, bytes] = {key: orjson.dumps(value) for key, value in _STOP.items()}
_RESPONSE_HEAD = b'{"id":"msg_bdrk_01%b","type":"message","role":"assistant","model":'
_RESPONSE_TAIL = (
    b',"content":[{"type":"text","text":%b}],"stop_reason":%b,"stop_sequence":%b,'
    b'"usage":{"input_tokens":%d,"cache_creation_input_tokens":0,'
    b'"cache_read_input_tokens":0,"output_tokens":%d}}'
)
_dumps = orjson.dumps


class AnthropicMessages(ChatFamily):
    name = "anthropic-messages"
    render_reads_request = False

    def quick(self, body: Any) -> Quick | None:
        return _quick(body)

    def quick_json(self, body: JsonBytes) -> Quick | None:
        try:
            plain = _decode_plain(body)
        except DECODE_ERRORS:
            return None
        messages = plain.messages
        stop = plain.stop_sequences or ()
        if len(messages) == 1:
            # Most batch records: one user turn, plain text.
            content = messages[0].content
            if isinstance(content, str):
                return plain.system + "\n" + content, 1, plain.max_tokens, stop
        texts = [plain.system]
        for message in messages:
            content = message.content
            if isinstance(content, str):
                texts.append(content)
                continue
            for block in content:
                text = block.text
                if not text.strip():
                    return None
                texts.append(text)
        return "\n".join(texts), len(messages), plain.max_tokens, stop

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        # Most batch records are plain text conversations: those are read in one straight
        # pass (a quarter of the checked parse's cost, which is most of what an
        # OpenAI-compatible backend spends per record outside HTTP); the rest are checked.
        request = _plain_request(body)
        if request is not None:
            return request
        return self.parse_checked(body)

    def parse_checked(self, body: dict[str, Any]) -> ChatRequest:
        """:meth:`parse` without the plain-body shortcut: every member checked, every
        violation reported (tests hold the shortcut to this)."""
        c = Checker()
        c.top(body, _REQUIRED, _TOP)
        c.string(body, "anthropic_version", "#", enum=_VERSIONS)
        max_tokens = c.integer(body, "max_tokens", "#", minimum=1)
        temperature = c.number(body, "temperature", "#", 0, 1)
        top_p = c.number(body, "top_p", "#", 0, 1)
        top_k = c.integer(body, "top_k", "#", minimum=0)
        stop = c.strings(body, "stop_sequences", "#")
        system = self._system(c, body.get("system"))
        extras = {key for key in _EXTRAS if key in body}
        tools = _tools(c, body, extras)
        choice = _tool_choice(c, body.get("tool_choice"))
        thinking = _thinking(c, body.get("thinking"))
        schema, effort = _output(c, body)
        messages = []
        for index, raw in enumerate(c.array(body, "messages", "#", min_items=1)):
            message = self._message(c, raw, f"#/messages/{index}", extras)
            if message is not None:
                messages.append(message)
        c.done()
        _check_text_blocks(body["messages"])
        _check_tool_pairs(messages)
        _check_model_rules(body, tools, choice, thinking, max_tokens, temperature)
        return ChatRequest(
            messages=tuple(messages),
            system=system,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            extras=tuple(sorted(extras)),
            tools=tools,
            tool_choice=choice,
            output_schema=schema,
            thinking=thinking,
            effort=effort,
            cache_prefix_tokens=_cache_prefix(body),
        )

    @staticmethod
    def _system(c: Checker, value: Any) -> str:
        if value is None:
            return ""
        if type(value) is str:
            return value
        if type(value) is not list:
            c.type_error("#/system", "String", value)
            return ""
        texts = []
        for index, block in enumerate(value):
            path = f"#/system/{index}"
            if c.obj(block, path, ("type", "text"), _SYSTEM_BLOCK):
                c.string(block, "type", path, enum=("text",))
                text = c.string(block, "text", path)
                _cache_control(c, block, path)
                if text is not None:
                    texts.append(text)
        return "\n".join(texts)

    def _message(self, c: Checker, raw: Any, path: str, extras: set[str]) -> Message | None:
        if not c.obj(raw, path, ("role", "content"), _MESSAGE):
            return None
        role = c.string(raw, "role", path, enum=_ROLES)
        content = raw.get("content")
        parts: list[Part] = []
        if type(content) is str:
            parts.append(TextPart(content))
        elif type(content) is list:
            for index, block in enumerate(content):
                part = self._block(c, block, f"{path}/content/{index}", extras)
                if part is not None:
                    parts.append(part)
        elif content is not None:
            c.type_error(f"{path}/content", "JSONArray", content)
        if role is None:
            return None
        checked: Role = "user" if role == "user" else "assistant"
        return Message(checked, tuple(parts))

    @staticmethod
    def _block(c: Checker, block: Any, path: str, extras: set[str]) -> Part | None:
        if not c.obj(block, path, ("type",)):
            return None
        kind = c.string(block, "type", path, enum=_BLOCK_TYPES)
        if kind != "thinking" and kind != "redacted_thinking":
            _cache_control(c, block, path)
        if kind == "text":
            c.obj(block, path, ("text",), _TEXT_BLOCK)
            text = c.string(block, "text", path)
            return None if text is None else TextPart(text)
        if kind == "image":
            return _image(c, block, path)
        if kind == "document":
            return _document(c, block, path)
        if kind == "tool_use":
            c.obj(block, path, ("id", "name", "input"), _TOOL_USE)
            ident = c.string(block, "id", path)
            name = c.string(block, "name", path)
            value = block.get("input")
            if value is not None and type(value) is not dict:
                c.type_error(f"{path}/input", "JSONObject", value)
            if ident is None or name is None or type(value) is not dict:
                return None
            return ToolUsePart(ident, name, value)
        if kind == "tool_result":
            return _tool_result(c, block, path, extras)
        if kind == "thinking":
            # Earlier turns' thinking: checked, then left out of what the model sees, as
            # Anthropic strips it from the context itself.
            c.obj(block, path, ("thinking", "signature"), _THINKING_BLOCK)
            c.string(block, "thinking", path)
            c.string(block, "signature", path)
        elif kind == "redacted_thinking":
            c.obj(block, path, ("data",), _REDACTED_BLOCK)
            c.string(block, "data", path)
        return None

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if answer.thinking is not None:
            content.append(
                {
                    "type": "thinking",
                    "thinking": answer.thinking,
                    "signature": answer.thinking_signature or "",
                }
            )
        if answer.text or not answer.tool_calls:
            content.append({"type": "text", "text": answer.text})
        for call in answer.tool_calls:
            content.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}
            )
        return {
            "id": "msg_bdrk_01" + answer_id(answer, 22),
            "type": "message",
            "role": "assistant",
            "model": _served_name(model_id),
            "content": content,
            "stop_reason": _STOP[answer.stop_reason],
            "stop_sequence": answer.stop_sequence if answer.stop_reason == "stop" else None,
            "usage": {
                "input_tokens": answer.input_tokens,
                "cache_creation_input_tokens": answer.cache_write_tokens,
                "cache_read_input_tokens": answer.cache_read_tokens,
                "output_tokens": answer.output_tokens,
            },
        }

    def response_template(self, model_id: str) -> ResponseTemplate:
        # render's dict as a template with the model's name already in it: filling it in
        # costs a third of building the dict and encoding it, once per record (tests hold
        # the two to the same bytes).
        served = _dumps(_served_name(model_id)).replace(b"%", b"%%")
        return ResponseTemplate(_RESPONSE_HEAD + served + _RESPONSE_TAIL, 22, _STOP_JSON)


def _check_text_blocks(messages: list[dict[str, Any]]) -> None:
    """The model's own check after the schema's: text blocks must say something."""
    for message in messages:
        content = message.get("content")
        if type(content) is not list:
            continue
        for block in content:
            if block.get("type") == "text":
                if not block["text"]:
                    raise BodyError("messages: text content blocks must be non-empty")
                if not block["text"].strip():
                    raise BodyError(
                        "messages: text content blocks must contain non-whitespace text"
                    )


def _cache_control(c: Checker, block: dict[str, Any], path: str) -> None:
    mark = block.get("cache_control")
    if mark is None:
        return
    where = f"{path}/cache_control"
    if c.obj(mark, where, ("type",), _CACHE_CONTROL):
        c.string(mark, "type", where, enum=("ephemeral",))
        c.string(mark, "ttl", where, enum=("5m", "1h"))


def _image(c: Checker, block: dict[str, Any], path: str) -> Part | None:
    c.obj(block, path, ("source",), _IMAGE_BLOCK)
    source = block.get("source")
    where = f"{path}/source"
    if source is None or not c.obj(source, where, ("type", "media_type", "data"), _SOURCE):
        return None
    c.string(source, "type", where, enum=("base64",))
    media = c.string(source, "media_type", where, enum=_MEDIA_TYPES)
    data = c.string(source, "data", where)
    if media is None or data is None:
        return None
    return ImagePart(media, data)


def _document(c: Checker, block: dict[str, Any], path: str) -> Part | None:
    """A PDF (base64), a plain-text document, or one given as content blocks."""
    c.obj(block, path, ("source",), _DOCUMENT)
    title = c.string(block, "title", path)
    c.string(block, "context", path)
    source = block.get("source")
    where = f"{path}/source"
    if source is None or not c.obj(source, where, ("type",), _DOCUMENT_SOURCE):
        return None
    kind = c.string(source, "type", where, enum=("base64", "text", "content"))
    if kind == "base64":
        c.obj(source, where, ("media_type", "data"))
        media = c.string(source, "media_type", where, enum=("application/pdf",))
        data = c.string(source, "data", where)
        return None if media is None or data is None else DocumentPart(media, data, title)
    if kind == "text":
        c.obj(source, where, ("media_type", "data"))
        c.string(source, "media_type", where, enum=("text/plain",))
        data = c.string(source, "data", where)
        return None if data is None else DocumentPart("text/plain", data, title)
    if kind == "content":
        texts = []
        for index, item in enumerate(c.array(source, "content", where)):
            item_path = f"{where}/content/{index}"
            if c.obj(item, item_path, ("type", "text"), _TEXT_BLOCK):
                c.string(item, "type", item_path, enum=("text",))
                text = c.string(item, "text", item_path)
                if text is not None:
                    texts.append(text)
        return DocumentPart("text/plain", "\n".join(texts), title)
    return None


def _tool_result(c: Checker, block: dict[str, Any], path: str, extras: set[str]) -> Part | None:
    c.obj(block, path, ("tool_use_id",), _TOOL_RESULT)
    ident = c.string(block, "tool_use_id", path)
    is_error = c.boolean(block, "is_error", path) or False
    content = block.get("content")
    texts: list[str] = []
    if type(content) is str:
        texts.append(content)
    elif type(content) is list:
        for index, item in enumerate(content):
            item_path = f"{path}/content/{index}"
            if not c.obj(item, item_path, ("type",)):
                continue
            item_kind = c.string(item, "type", item_path, enum=("text", "image", "document"))
            if item_kind == "text":
                c.obj(item, item_path, ("text",), _TEXT_BLOCK)
                text = c.string(item, "text", item_path)
                if text is not None:
                    texts.append(text)
            elif item_kind is not None:
                # Images and documents inside a tool result have no neutral form.
                extras.add(f"{item_kind} in tool_result")
    elif content is not None:
        c.type_error(f"{path}/content", "JSONArray", content)
    return None if ident is None else ToolResultPart(ident, "\n".join(texts), is_error)


def _tools(c: Checker, body: dict[str, Any], extras: set[str]) -> tuple[Tool, ...]:
    tools: list[Tool] = []
    for index, raw in enumerate(c.array(body, "tools", "#")):
        path = f"#/tools/{index}"
        if not c.obj(raw, path, ("name",)):
            continue
        kind = raw.get("type")
        if kind is not None and kind != "custom":
            # Anthropic's server and client tools (bash_..., text_editor_..., web_search_...)
            # run inside Anthropic's service; they have no neutral form.
            c.string(raw, "type", path)
            extras.add(f"tools ({kind})")
            continue
        c.obj(raw, path, ("name", "input_schema"), _TOOL)
        name = c.string(raw, "name", path)
        if name is not None and not _TOOL_NAME.match(name):
            c.fail(
                f"{path}/name", f"string [{name}] does not match pattern ^[a-zA-Z0-9_-]{{1,64}}$"
            )
        description = c.string(raw, "description", path)
        strict = c.boolean(raw, "strict", path)
        _cache_control(c, raw, path)
        schema = raw.get("input_schema")
        where = f"{path}/input_schema"
        if schema is not None and c.obj(schema, where, ("type",)):
            c.string(schema, "type", where, enum=("object",))
        if name is not None and type(schema) is dict:
            tools.append(Tool(name, description, schema, bool(strict)))
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise BodyError("tools: Tool names must be unique.")
    return tuple(tools)


def _tool_choice(c: Checker, raw: Any) -> ToolChoice | None:
    if raw is None:
        return None
    path = "#/tool_choice"
    if not c.obj(raw, path, ("type",), _TOOL_CHOICE):
        return None
    kind = c.string(raw, "type", path, enum=("auto", "any", "tool", "none"))
    name = c.string(raw, "name", path)
    disable = c.boolean(raw, "disable_parallel_tool_use", path) or False
    if kind == "tool" and "name" not in raw:
        c.fail(path, "required key [name] not found")
    if kind is None:
        return None
    checked: Literal["auto", "any", "tool", "none"] = kind  # type: ignore[assignment]
    return ToolChoice(checked, name if kind == "tool" else None, disable)


def _thinking(c: Checker, raw: Any) -> Thinking | None:
    if raw is None:
        return None
    path = "#/thinking"
    if not c.obj(raw, path, ("type",), _THINKING):
        return None
    kind = c.string(raw, "type", path, enum=("enabled", "disabled", "adaptive"))
    budget = c.integer(raw, "budget_tokens", path)
    display = c.string(raw, "display", path, enum=("summarized", "omitted"))
    if kind == "enabled" and "budget_tokens" not in raw:
        c.fail(path, "required key [budget_tokens] not found")
    if kind == "enabled":
        return Thinking("enabled", budget, display != "omitted")
    if kind == "adaptive":
        return Thinking("adaptive", None, display != "omitted")
    return None


def _output(c: Checker, body: dict[str, Any]) -> tuple[OutputSchema | None, str | None]:
    """Structured output (``output_config.format``, or the deprecated ``output_format``) and
    the effort level."""
    schema: OutputSchema | None = None
    effort = None
    config = body.get("output_config")
    if config is not None and c.obj(config, "#/output_config", (), _OUTPUT_CONFIG):
        effort = c.string(config, "effort", "#/output_config", enum=_EFFORTS)
        schema = _format(c, config.get("format"), "#/output_config/format")
    legacy = _format(c, body.get("output_format"), "#/output_format")
    if legacy is not None:
        if schema is not None:
            raise BodyError(
                "output_format is deprecated and cannot be combined with output_config.format; "
                "use output_config.format only."
            )
        schema = legacy
    return schema, effort


def _format(c: Checker, raw: Any, path: str) -> OutputSchema | None:
    if raw is None or not c.obj(raw, path, ("type", "schema"), _FORMAT):
        return None
    c.string(raw, "type", path, enum=("json_schema",))
    schema = raw.get("schema")
    if not c.obj(schema, f"{path}/schema"):
        return None
    return OutputSchema(schema)


def _check_tool_pairs(messages: list[Message]) -> None:
    """Anthropic's pairing rule: every tool_use is answered by a tool_result in the next
    (user) message, and every tool_result answers a tool_use of the message before."""
    for index, message in enumerate(messages):
        results = [p.tool_use_id for p in message.parts if isinstance(p, ToolResultPart)]
        if results:
            before = messages[index - 1].parts if index else ()
            calls = {p.id for p in before if isinstance(p, ToolUsePart)}
            unknown = [r for r in results if r not in calls]
            if unknown:
                raise BodyError(
                    f"messages.{index}.content.0: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {unknown[0]}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
        calls_here = [p.id for p in message.parts if isinstance(p, ToolUsePart)]
        if calls_here and index + 1 < len(messages):
            answered = {
                p.tool_use_id for p in messages[index + 1].parts if isinstance(p, ToolResultPart)
            }
            missing = [i for i in calls_here if i not in answered]
            if missing:
                raise BodyError(
                    f"messages.{index + 1}: `tool_use` ids were found without `tool_result` "
                    f"blocks immediately after: {missing[0]}. Each `tool_use` block must have a "
                    "corresponding `tool_result` block in the next message."
                )


def _check_model_rules(
    body: dict[str, Any],
    tools: tuple[Tool, ...],
    choice: ToolChoice | None,
    thinking: Thinking | None,
    max_tokens: int | None,
    temperature: float | None,
) -> None:
    if choice is not None and not tools and "tools" not in body:
        raise BodyError("tool_choice may only be specified while providing tools.")
    if choice is not None and choice.kind == "tool" and all(t.name != choice.name for t in tools):
        raise BodyError(f"tool_choice.name: Tool '{choice.name}' not found in tools.")
    if thinking is None:
        return
    check_budget(thinking, max_tokens)
    if choice is not None and choice.forces:
        raise BodyError("Thinking may not be enabled when tool_choice forces tool use.")
    if temperature is not None and temperature != 1:
        raise BodyError("temperature may only be set to 1 when thinking is enabled.")


def check_budget(thinking: Thinking | None, max_tokens: int | None) -> None:
    """Claude's rule for a thinking budget (InvokeModel bodies and Converse's
    ``additionalModelRequestFields.thinking`` alike): at least 1,024, below ``max_tokens``."""
    if thinking is None or thinking.kind != "enabled":
        return
    budget = thinking.budget_tokens or 0
    if budget < 1024:
        raise BodyError(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        )
    if max_tokens is not None and max_tokens <= budget:
        raise BodyError("max_tokens must be greater than thinking.budget_tokens")


def _cache_prefix(body: dict[str, Any]) -> int:
    """Tokens of the prompt up to its last ``cache_control`` mark, in the order the prompt is
    cached: tools, then system, then messages (0 when nothing is marked)."""
    running = 0
    prefix = 0
    for tool in body.get("tools") or ():
        running += _tokens(tool)
        if "cache_control" in tool:
            prefix = running
    system = body.get("system")
    if type(system) is str:
        running += _tokens(system)
    elif type(system) is list:
        for block in system:
            running += _tokens(block.get("text"))
            if "cache_control" in block:
                prefix = running
    for message in body["messages"]:
        content = message["content"]
        if type(content) is str:
            running += _tokens(content)
            continue
        for block in content:
            running += _tokens(block)
            if "cache_control" in block:
                prefix = running
    return prefix


def _tokens(value: Any) -> int:
    if type(value) is str:
        return estimate_tokens(value)
    if type(value) is dict and value.get("type") == "text" and type(value.get("text")) is str:
        return estimate_tokens(value["text"])
    if type(value) is dict and value.get("type") == "image":
        return 1200
    return estimate_tokens(orjson.dumps(value).decode()) if value is not None else 0


# The bodies _quick accepts, as msgspec types (AnthropicMessages.quick_json): unknown members
# are refused, so every value in the body is decoded and checked; members _quick does not
# check (metadata, cache_control, citations) are left out, so they go through _quick.
# gc=False: decoded JSON holds no cycles, and untracked structs are much cheaper to create.
_Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]


class _PlainBlock(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    type: Literal["text"]
    text: str


class _PlainMessage(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: Literal["user", "assistant"]
    content: str | list[_PlainBlock]


class _PlainBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    anthropic_version: Literal["bedrock-2023-05-31", "2026-10-21"]
    # Bounded as orjson reads integers: beyond 64 bits it gives floats, which _quick refuses.
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    messages: Annotated[list[_PlainMessage], msgspec.Meta(min_length=1)]
    system: str = ""
    temperature: _Unit | None = None
    top_p: _Unit | None = None
    top_k: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None
    stop_sequences: tuple[str, ...] | None = None


_decode_plain = msgspec.json.Decoder(_PlainBody).decode


def _plain_top(body: Any) -> tuple[int, list[Any], str] | None:
    """``(max_tokens, messages, system)`` of a body whose top level the plain paths
    (:func:`_quick`, :func:`_plain_request`) take, else ``None``; the other sampling members
    are checked by :func:`_plain_sampling`."""
    if (
        type(body) is not dict
        or not body.keys() <= _TOP
        or body.get("anthropic_version") not in _VERSIONS
        or not body.keys().isdisjoint(_RICH)
    ):
        return None
    max_tokens = body.get("max_tokens")
    raw_messages = body.get("messages")
    system = body.get("system", "")
    if (
        type(max_tokens) is not int
        or max_tokens < 1
        or type(raw_messages) is not list
        or not raw_messages
        or type(system) is not str
    ):
        return None
    return max_tokens, raw_messages, system


def _plain_sampling(body: dict[str, Any]) -> tuple[str, ...] | None:
    """The stop sequences of a plain body whose temperature, top_p and top_k are also
    well-formed, else ``None``."""
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None and (type(value) not in (int, float) or not 0 <= value <= 1):
            return None
    top_k = body.get("top_k")
    if top_k is not None and (type(top_k) is not int or top_k < 0):
        return None
    return stop_strings(body.get("stop_sequences"))


def _plain_message(raw: Any) -> tuple[Role, str | list[str]] | None:
    """The role and content of a plain message (its text, or the texts of its plain text
    blocks), else ``None``: anything else goes to the checked parse."""
    if type(raw) is not dict or len(raw) != 2:
        return None
    role = raw.get("role")
    content = raw.get("content")
    if role != "user" and role != "assistant":
        return None
    if type(content) is str:
        return role, content
    if type(content) is not list:
        return None
    texts = []
    for block in content:
        text = block.get("text") if type(block) is dict else None
        if (
            type(text) is not str
            or block.get("type") != "text"
            or not block.keys() <= _PLAIN_TEXT_BLOCK
            or not text.strip()
        ):
            return None
        texts.append(text)
    return role, texts


def _plain_request(body: Any) -> ChatRequest | None:
    """:meth:`AnthropicMessages.parse_checked`'s request for a text-only conversation (the
    bodies :func:`_quick` takes), in one straight pass; ``None`` for any other body."""
    top = _plain_top(body)
    if top is None:
        return None
    max_tokens, raw_messages, system = top
    messages: list[Message] = []
    for raw in raw_messages:
        plain = _plain_message(raw)
        if plain is None:
            return None
        role, content = plain
        if type(content) is str:
            messages.append(Message(role, (TextPart(content),)))
        else:
            messages.append(Message(role, tuple(TextPart(text) for text in content)))
    stop = _plain_sampling(body)
    if stop is None:
        return None
    temperature, top_p = body.get("temperature"), body.get("top_p")
    return ChatRequest(
        messages=tuple(messages),
        system=system,
        max_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
        top_p=None if top_p is None else float(top_p),
        top_k=body.get("top_k"),
        stop=stop,
    )


def _quick(body: Any) -> Quick | None:
    """Text-only conversations in one straight pass (see ChatFamily.quick)."""
    top = _plain_top(body)
    if top is None:
        return None
    max_tokens, raw_messages, system = top
    texts = [system]
    for raw in raw_messages:
        plain = _plain_message(raw)
        if plain is None:
            return None
        content = plain[1]
        if type(content) is str:
            texts.append(content)
        else:
            texts.extend(content)
    stop = _plain_sampling(body)
    if stop is None:
        return None
    return "\n".join(texts), len(raw_messages), max_tokens, stop


@lru_cache(maxsize=256)
def _served_name(model_id: str) -> str:
    """``anthropic.claude-3-haiku-20240307-v1:0`` -> ``claude-3-haiku-20240307``."""
    name = model_id.rsplit("/", 1)[-1]
    if "anthropic." in name:
        name = name.split("anthropic.", 1)[1]
    head, sep, tail = name.rpartition("-v")
    if sep and tail[:1].isdigit():
        return head
    return name
