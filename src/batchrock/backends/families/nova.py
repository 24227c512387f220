"""Amazon Nova (``amazon.nova-*``, InvokeModel), and the message layout it shares with the
Converse shape (converse.py).

Both use the same message layout: ``messages[].content[]`` blocks keyed by kind (``text``,
``image``, ``video``, ``document`` ...), ``system`` as text blocks and ``inferenceConfig``. They
differ in three ways: Nova's InvokeModel body also accepts ``schemaVersion`` and the snake_case
parameter names of the first Nova release; Converse takes ``topK`` through
``additionalModelRequestFields``, rejects ``toolConfig`` in batch jobs (Bedrock fails such a
record with 400), and reports violations in the AWS validation style; the Converse response
carries ``metrics``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec

from batchrock.backends.base import DECODE_ERRORS, JsonBytes
from batchrock.backends.families.base import ChatFamily, Quick, stop_strings
from batchrock.backends.families.media import s3_location
from batchrock.backends.families.schema import Checker
from batchrock.backends.neutral import (
    ChatAnswer,
    ChatRequest,
    ImagePart,
    MediaRef,
    Message,
    Part,
    TextPart,
)

_ROLES = ("user", "assistant")
_MESSAGE = frozenset({"role", "content"})
_IMAGE = frozenset({"format", "source"})
_SOURCE = frozenset({"bytes", "s3Location"})
_IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
_BLOCK_KINDS = frozenset(
    {
        "text",
        "image",
        "video",
        "audio",
        "document",
        "toolUse",
        "toolResult",
        "reasoningContent",
        "cachePoint",
        "guardContent",
    }
)
_STOP = {"end": "end_turn", "length": "max_tokens", "stop": "stop_sequence", "tool": "tool_use"}
#: Content blocks the neutral form does not carry (cachePoint is a hint and safe to ignore).
_UNCARRIED_BLOCKS = (
    "video",
    "audio",
    "document",
    "toolUse",
    "toolResult",
    "reasoningContent",
    "guardContent",
)
#: Media blocks checked against botocore's shapes (VideoBlock, DocumentBlock, AudioBlock):
#: kind -> (required members, allowed members, formats, allowed source members).
_MEDIA_BLOCKS: dict[
    str, tuple[tuple[str, ...], frozenset[str], tuple[str, ...], frozenset[str]]
] = {
    "video": (
        ("format", "source"),
        frozenset({"format", "source"}),
        ("mkv", "mov", "mp4", "webm", "flv", "mpeg", "mpg", "wmv", "three_gp"),
        _SOURCE,
    ),
    "document": (
        ("name", "source"),
        frozenset({"format", "name", "source", "context", "citations"}),
        ("pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md"),
        frozenset({"bytes", "s3Location", "text", "content"}),
    ),
}


class _MessagesShape(ChatFamily):
    """The parsing both shapes share; subclasses choose the top level and the style."""

    render_reads_request = False

    def _system(self, c: Checker, body: dict[str, Any]) -> str:
        root = c.root()
        texts = []
        for index, block in enumerate(c.array(body, "system", root)):
            path = c.child(c.child(root, "system"), index)
            if c.obj(block, path) and "text" in block:
                text = c.string(block, "text", path)
                if block["text"] is None:
                    c.type_error(c.child(path, "text"), "String", None)
                if text is not None:
                    texts.append(text)
        return "\n".join(texts)

    def _messages(
        self,
        c: Checker,
        body: dict[str, Any],
        extras: set[str],
        media: list[MediaRef] | None = None,
    ) -> list[Message]:
        """The conversation; media named by S3 location are added to ``media``."""
        root = c.root()
        messages = []
        where = c.child(root, "messages")
        for index, raw in enumerate(c.array(body, "messages", root, min_items=1)):
            path = c.child(where, index)
            if not c.obj(raw, path, ("role", "content"), _MESSAGE):
                continue
            role = c.string(raw, "role", path, enum=_ROLES)
            parts: list[Part] = []
            content_path = c.child(path, "content")
            for block_index, block in enumerate(c.array(raw, "content", path)):
                where = c.child(content_path, block_index)
                part = self._block(c, block, where, extras, media)
                if part is not None:
                    parts.append(part)
            if role is not None:
                messages.append(Message("user" if role == "user" else "assistant", tuple(parts)))
        return messages

    def _block(
        self,
        c: Checker,
        block: Any,
        path: str,
        extras: set[str],
        media: list[MediaRef] | None = None,
    ) -> Part | None:
        if not c.obj(block, path, (), _BLOCK_KINDS):
            return None
        if "text" in block:
            text = c.string(block, "text", path)
            if block["text"] is None:  # the block's one member: null is not "not given"
                c.type_error(c.child(path, "text"), "String", None)
            return None if text is None else TextPart(text)
        if "image" in block:
            return self._image(c, block["image"], c.child(path, "image"), extras, media)
        for kind in _UNCARRIED_BLOCKS:
            if kind in block:
                extras.add(kind)
                where = c.child(path, kind)
                shape = _MEDIA_BLOCKS.get(kind)
                if shape is not None and not _media_block(c, block[kind], where, *shape):
                    continue
                self._s3_source(c, block[kind], where, extras, media)
        return None

    @staticmethod
    def _s3_source(
        c: Checker, value: Any, path: str, extras: set[str], media: list[MediaRef] | None
    ) -> bool:
        """Record the ``source.s3Location`` of a media block (video, document, audio ...);
        whether it had one."""
        source = value.get("source") if type(value) is dict else None
        if type(source) is not dict or "s3Location" not in source:
            return False
        # Media in S3 is read by the model service itself; a backend without S3 access
        # reports it instead of answering without it.
        extras.add("s3Location")
        if media is not None:
            where = c.child(c.child(path, "source"), "s3Location")
            s3_location(c, source["s3Location"], where, media)
        return True

    def _image(
        self,
        c: Checker,
        image: Any,
        path: str,
        extras: set[str],
        media: list[MediaRef] | None = None,
    ) -> Part | None:
        if not c.obj(image, path, ("format", "source"), _IMAGE):
            return None
        fmt = c.string(image, "format", path, enum=_IMAGE_FORMATS)
        source = image.get("source")
        where = c.child(path, "source")
        if source is None or not c.obj(source, where, (), _SOURCE):
            return None
        if self._s3_source(c, image, path, extras, media):
            return None
        data = c.string(source, "bytes", where)
        if data is None or fmt is None:
            if data is None and source.get("bytes") is None:
                c.fail(where, "required key [bytes] not found")
            return None
        return ImagePart("image/" + fmt, data)

    def _params(self, c: Checker, config: dict[str, Any], path: str) -> dict[str, Any]:
        return {
            "max_tokens": c.integer(config, "maxTokens", path, minimum=1),
            "temperature": c.number(config, "temperature", path, 0, 1),
            "top_p": c.number(config, "topP", path, 0, 1),
            "stop": c.strings(config, "stopSequences", path),
        }


class NovaMessages(_MessagesShape):
    name = "amazon-nova"

    _top = frozenset({"schemaVersion", "system", "messages", "inferenceConfig", "toolConfig"})
    _config = frozenset(
        {
            "maxTokens",
            "max_new_tokens",
            "temperature",
            "topP",
            "top_p",
            "topK",
            "top_k",
            "stopSequences",
            "reasoningConfig",
        }
    )

    def quick(self, body: Any) -> Quick | None:
        return _quick(body, self._top)

    def quick_json(self, body: JsonBytes) -> Quick | None:
        return _quick_json(_read_nova, body)

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        c = Checker()
        c.top(body, ("messages",), self._top)
        c.string(body, "schemaVersion", "#", enum=("messages-v1",))
        extras: set[str] = set()
        media: list[MediaRef] = []
        system = self._system(c, body)
        messages = self._messages(c, body, extras, media)
        params: dict[str, Any] = {"stop": ()}
        config = body.get("inferenceConfig")
        if config is not None and c.obj(config, "#/inferenceConfig", (), self._config):
            path = "#/inferenceConfig"
            params = self._params(c, config, path)
            # The first Nova release documented snake_case names; both are accepted.
            if params["max_tokens"] is None:
                params["max_tokens"] = c.integer(config, "max_new_tokens", path, minimum=1)
            if params["top_p"] is None:
                params["top_p"] = c.number(config, "top_p", path, 0, 1)
            params["top_k"] = c.integer(config, "topK", path, minimum=0)
            if params["top_k"] is None:
                params["top_k"] = c.integer(config, "top_k", path, minimum=0)
            if "reasoningConfig" in config:
                extras.add("reasoningConfig")
        c.done()
        if "toolConfig" in body:
            extras.add("toolConfig")
        return ChatRequest(
            messages=tuple(messages),
            system=system,
            extras=tuple(sorted(extras)),
            media=tuple(media),
            **params,
        )

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        return {
            "output": {"message": {"content": [{"text": answer.text}], "role": "assistant"}},
            "stopReason": _STOP[answer.stop_reason],
            "usage": {
                "inputTokens": answer.input_tokens,
                "outputTokens": answer.output_tokens,
                "totalTokens": answer.input_tokens + answer.output_tokens,
                "cacheReadInputTokenCount": 0,
                "cacheWriteInputTokenCount": 0,
            },
        }


_FAST_TOP = frozenset({"schemaVersion", "system", "messages", "inferenceConfig"})
_FAST_CONFIG = frozenset({"maxTokens", "temperature", "topP", "stopSequences"})


def _quick(body: Any, allowed: frozenset[str]) -> Quick | None:
    """Text-only conversations with camelCase parameters in one pass (see ChatFamily.quick)."""
    if type(body) is not dict or not body.keys() <= _FAST_TOP or not body.keys() <= allowed:
        return None
    if body.get("schemaVersion", "messages-v1") != "messages-v1":
        return None
    raw_messages = body.get("messages")
    if type(raw_messages) is not list or not raw_messages:
        return None
    texts = []
    raw_system = body.get("system")
    if raw_system is not None:
        if type(raw_system) is not list:
            return None
        system = []
        for block in raw_system:
            if type(block) is not dict or len(block) != 1 or type(block.get("text")) is not str:
                return None
            system.append(block["text"])
        texts.append("\n".join(system))
    else:
        texts.append("")
    expected = "user"
    for raw in raw_messages:
        if type(raw) is not dict or len(raw) != 2:
            return None
        content = raw.get("content")
        if raw.get("role") != expected or type(content) is not list:
            return None
        expected = "assistant" if expected == "user" else "user"
        for block in content:
            text = block.get("text") if type(block) is dict else None
            if type(text) is not str or len(block) != 1 or not text.strip():
                return None
            texts.append(text)
    config = body.get("inferenceConfig")
    if config is None:
        return "\n".join(texts), len(raw_messages), None, ()
    if type(config) is not dict or not config.keys() <= _FAST_CONFIG:
        return None
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        return None
    for key in ("temperature", "topP"):
        value = config.get(key)
        if value is not None and (type(value) not in (int, float) or not 0 <= value <= 1):
            return None
    stop = stop_strings(config.get("stopSequences"))
    if stop is None:
        return None
    return "\n".join(texts), len(raw_messages), max_tokens, stop


# The bodies _quick accepts, as msgspec types (the quick_json methods; see AnthropicMessages
# for the pattern): unknown members are refused, and a member whose null _quick refuses has
# no None. gc=False: decoded JSON holds no cycles.
_Unit = Annotated[float, msgspec.Meta(ge=0, le=1)] | None


class _PlainText(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    text: str


class _PlainMessage(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: Literal["user", "assistant"]
    content: list[_PlainText]


class _PlainConfig(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    # orjson reads an integer beyond 64 bits as a float (which _quick refuses), msgspec as
    # an int: hence an upper bound (the largest msgspec takes; bigger ones go to _quick).
    maxTokens: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None
    temperature: _Unit = None
    topP: _Unit = None
    stopSequences: tuple[str, ...] | None = None


class _PlainConverse(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    messages: Annotated[list[_PlainMessage], msgspec.Meta(min_length=1)]
    system: list[_PlainText] | None = None
    inferenceConfig: _PlainConfig | None = None


class _PlainNova(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    messages: Annotated[list[_PlainMessage], msgspec.Meta(min_length=1)]
    system: list[_PlainText] | None = None
    inferenceConfig: _PlainConfig | None = None
    # No None: _quick refuses a null schemaVersion.
    schemaVersion: Literal["messages-v1"] = "messages-v1"


_read_converse = msgspec.json.Decoder(_PlainConverse).decode
_read_nova = msgspec.json.Decoder(_PlainNova).decode


def _quick_json(
    read: Callable[[JsonBytes], _PlainConverse | _PlainNova], body: JsonBytes
) -> Quick | None:
    """_quick for the encoded body (see ChatFamily.quick_json)."""
    try:
        plain = read(body)
    except DECODE_ERRORS:
        return None
    texts = ["\n".join([block.text for block in plain.system]) if plain.system else ""]
    expected = "user"
    for message in plain.messages:
        if message.role != expected:
            return None
        expected = "assistant" if expected == "user" else "user"
        for block in message.content:
            text = block.text
            if not text.strip():
                return None
            texts.append(text)
    config = plain.inferenceConfig
    if config is None:
        return "\n".join(texts), len(plain.messages), None, ()
    return "\n".join(texts), len(plain.messages), config.maxTokens, config.stopSequences or ()


def _media_block(
    c: Checker,
    value: Any,
    path: str,
    required: tuple[str, ...],
    allowed: frozenset[str],
    formats: tuple[str, ...],
    sources: frozenset[str],
) -> bool:
    """Check a video or document block's members, format and source (one of its kinds);
    whether it is an object, so its ``s3Location`` can be read."""
    if not c.obj(value, path, required, allowed):
        return False
    c.string(value, "format", path, enum=formats)
    source = value.get("source")
    where = c.child(path, "source")
    if source is not None and c.obj(source, where, (), sources):
        if len(source) != 1:
            c.fail(where, f"exactly one of [{', '.join(sorted(sources))}] must be given")
        if "bytes" in source:
            c.string(source, "bytes", where, min_length=1)
    return True


def _top_k(additional: dict[str, Any]) -> int | None:
    """``top_k`` as models take it in ``additionalModelRequestFields`` (several spellings)."""
    for key in ("top_k", "topK"):
        value = additional.get(key)
        if type(value) is int:
            return value
    nested = additional.get("inferenceConfig")
    if type(nested) is dict and type(nested.get("topK")) is int:
        return int(nested["topK"])
    return None
