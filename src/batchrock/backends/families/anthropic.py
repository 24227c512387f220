"""Anthropic Claude, Messages API (``anthropic.claude-*``).

Request: ``anthropic_version`` (``bedrock-2023-05-31``), ``max_tokens`` and ``messages`` are
required; ``system`` (text or text blocks), ``temperature``, ``top_p``, ``top_k``,
``stop_sequences`` and tool/thinking members are optional. Response: a ``message`` object with
text content blocks, ``stop_reason`` and ``usage``.
"""

from __future__ import annotations

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
    ImagePart,
    Message,
    Part,
    Role,
    StopReason,
    TextPart,
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
    }
)
_REQUIRED = ("anthropic_version", "max_tokens", "messages")
#: Members the neutral form does not carry; a backend that cannot serve them says so.
_EXTRAS = ("tools", "tool_choice", "thinking", "anthropic_beta")
_ROLES = ("user", "assistant")
_MESSAGE = frozenset({"role", "content"})
_SYSTEM_BLOCK = frozenset({"type", "text", "cache_control"})
_TEXT_BLOCK = frozenset({"type", "text", "cache_control", "citations"})
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
_STOP: dict[StopReason, str] = {"end": "end_turn", "length": "max_tokens", "stop": "stop_sequence"}
_STOP_JSON: dict[StopReason, bytes] = {key: orjson.dumps(value) for key, value in _STOP.items()}
_RESPONSE_HEAD = b'{"id":"msg_bdrk_01%b","type":"message","role":"assistant","model":'
_RESPONSE_TAIL = (
    b',"content":[{"type":"text","text":%b}],"stop_reason":%b,"stop_sequence":%b,'
    b'"usage":{"input_tokens":%d,"output_tokens":%d}}'
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
        c = Checker()
        c.top(body, _REQUIRED, _TOP)
        c.string(body, "anthropic_version", "#", enum=("bedrock-2023-05-31",))
        max_tokens = c.integer(body, "max_tokens", "#", minimum=1)
        temperature = c.number(body, "temperature", "#", 0, 1)
        top_p = c.number(body, "top_p", "#", 0, 1)
        top_k = c.integer(body, "top_k", "#", minimum=0)
        stop = c.strings(body, "stop_sequences", "#")
        system = self._system(c, body.get("system"))
        extras = {key for key in _EXTRAS if key in body}
        messages = []
        for index, raw in enumerate(c.array(body, "messages", "#", min_items=1)):
            message = self._message(c, raw, f"#/messages/{index}", extras)
            if message is not None:
                messages.append(message)
        c.done()
        _check_text_blocks(body["messages"])
        return ChatRequest(
            messages=tuple(messages),
            system=system,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            extras=tuple(sorted(extras)),
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
        if kind == "text":
            c.obj(block, path, ("text",), _TEXT_BLOCK)
            text = c.string(block, "text", path)
            return None if text is None else TextPart(text)
        if kind == "image":
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
        # Documents, tool calls and results and thinking blocks have no neutral form: they are
        # named in extras (a backend that cannot serve them says so) and their text, if any,
        # still counts towards the prompt.
        if kind is not None:
            extras.add(kind)
        text = block.get("text") or block.get("content")
        return TextPart(text) if type(text) is str else None

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        return {
            "id": "msg_bdrk_01" + answer_id(answer, 22),
            "type": "message",
            "role": "assistant",
            "model": _served_name(model_id),
            "content": [{"type": "text", "text": answer.text}],
            "stop_reason": _STOP[answer.stop_reason],
            "stop_sequence": answer.stop_sequence if answer.stop_reason == "stop" else None,
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens},
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
    anthropic_version: Literal["bedrock-2023-05-31"]
    # Bounded as orjson reads integers: beyond 64 bits it gives floats, which _quick refuses.
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    messages: Annotated[list[_PlainMessage], msgspec.Meta(min_length=1)]
    system: str = ""
    temperature: _Unit | None = None
    top_p: _Unit | None = None
    top_k: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None
    stop_sequences: tuple[str, ...] | None = None


_decode_plain = msgspec.json.Decoder(_PlainBody).decode


def _quick(body: Any) -> Quick | None:
    """Text-only conversations in one straight pass (see ChatFamily.quick)."""
    if (
        type(body) is not dict
        or not body.keys() <= _TOP
        or body.get("anthropic_version") != "bedrock-2023-05-31"
        or not body.keys().isdisjoint(_EXTRAS)
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
    texts = [system]
    for raw in raw_messages:
        if type(raw) is not dict or len(raw) != 2:
            return None
        role = raw.get("role")
        content = raw.get("content")
        if role != "user" and role != "assistant":
            return None
        if type(content) is str:
            texts.append(content)
        elif type(content) is list:
            for block in content:
                text = block.get("text") if type(block) is dict else None
                if (
                    type(text) is not str
                    or block.get("type") != "text"
                    or not block.keys() <= _TEXT_BLOCK
                    or not text.strip()
                ):
                    return None
                texts.append(text)
        else:
            return None
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None and (type(value) not in (int, float) or not 0 <= value <= 1):
            return None
    top_k = body.get("top_k")
    stop = stop_strings(body.get("stop_sequences"))
    if (top_k is not None and (type(top_k) is not int or top_k < 0)) or stop is None:
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
