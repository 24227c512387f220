"""What a model family is: a request schema and a response layout."""

from __future__ import annotations

import random
import string
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import orjson

from batchrock.backends.base import JsonBytes
from batchrock.backends.neutral import (
    ChatAnswer,
    ChatRequest,
    EmbedAnswer,
    EmbedRequest,
    StopReason,
)

#: What :meth:`ChatFamily.quick` extracts: all the text, the message count, the token limit
#: and the stop sequences.
Quick = tuple[str, int, int | None, tuple[str, ...]]
#: A family's response body for one model id, encoded: ``(answer, request) -> JSON``.
JsonRender = Callable[[ChatAnswer, ChatRequest], bytes]


@dataclass(frozen=True, slots=True)
class ResponseTemplate:
    """A family's response body for one model id as a ``%`` template, for families whose
    response depends on the answer alone: the built-in model fills it in without building an
    answer or the body. The six fields, in order: the id (``%b``: ``id_length`` characters of
    :func:`id_window`), the text (``%b``: a JSON string), the stop reason (``%b``: JSON, from
    ``reasons``), the stop sequence (``%b``: a JSON string, or ``null`` unless the reason is
    ``stop``), input tokens and output tokens (``%d``)."""

    template: bytes
    id_length: int
    reasons: Mapping[StopReason, bytes]

    def fill(self, answer: ChatAnswer) -> bytes:
        return self.fill_parts(
            answer_id_json(answer, self.id_length),
            answer.text,
            answer.stop_reason,
            answer.stop_sequence,
            answer.input_tokens,
            answer.output_tokens,
        )

    def fill_parts(
        self,
        ident: bytes,
        text: str,
        reason: StopReason,
        stop_sequence: str | None,
        input_tokens: int,
        output_tokens: int,
    ) -> bytes:
        """:meth:`fill` from an answer's parts, for a caller that has no answer object."""
        return self.template % (
            ident,
            orjson.dumps(text),
            self.reasons[reason],
            orjson.dumps(stop_sequence) if reason == "stop" else b"null",
            input_tokens,
            output_tokens,
        )


class ChatFamily(ABC):
    """A text-generation family: parses its body into a :class:`ChatRequest` and renders a
    :class:`ChatAnswer` back into its own response body."""

    kind: ClassVar[Literal["chat"]] = "chat"
    #: Stable short name, shown by ``batchrock models`` and in docs/models.md.
    name: ClassVar[str]

    @abstractmethod
    def parse(self, body: dict[str, Any]) -> ChatRequest:
        """Validate and translate ``body``; raise ``BodyError`` when it does not fit."""

    @abstractmethod
    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        """The response body Bedrock would return for ``answer``."""

    def quick(self, body: Any) -> Quick | None:
        """For the built-in model's per-record path: ``(text, messages, max_tokens, stop)`` of
        a plain well-formed body, without building the neutral request, or ``None`` to go
        through :meth:`parse`. ``text`` must equal ``request_text(parse(body))`` so both paths
        give the same answer."""
        return None

    #: Whether :meth:`render` looks at its ``request`` (the built-in model's fast path then
    #: skips building one when it does not).
    render_reads_request: ClassVar[bool] = True

    def json_renderer(self, model_id: str) -> JsonRender:
        """:meth:`render` for one model id, encoded: the built-in model's per-record path.
        The bytes must be exactly ``orjson.dumps(render(answer, request, model_id))``; a
        family with a :meth:`response_template` fills that in."""
        template = self.response_template(model_id)
        if template is not None:
            fill = template.fill
            return lambda answer, request: fill(answer)
        render, dumps = self.render, orjson.dumps
        return lambda answer, request: dumps(render(answer, request, model_id))

    def response_template(self, model_id: str) -> ResponseTemplate | None:
        """The response as a template, for a family whose response depends on the answer
        alone (:attr:`render_reads_request` false); its bytes must be exactly those of
        :meth:`render`."""
        return None

    def quick_json(self, body: JsonBytes) -> Quick | None:
        """:meth:`quick` for the encoded body, read by a typed decoder without building
        Python objects for it. It may leave more bodies to :meth:`quick` (``None``) but must
        never accept one that :meth:`quick` refuses or read it differently."""
        return None


class EmbedFamily(ABC):
    """An embedding family."""

    kind: ClassVar[Literal["embed"]] = "embed"
    name: ClassVar[str]
    #: The vector size when the body does not choose one.
    default_dimensions: ClassVar[int]

    @abstractmethod
    def parse(self, body: dict[str, Any]) -> EmbedRequest: ...

    @abstractmethod
    def render(
        self, answer: EmbedAnswer, request: EmbedRequest, model_id: str
    ) -> dict[str, Any]: ...


Family = ChatFamily | EmbedFamily


def _id_source(length: int = 1 << 16) -> str:
    rng = random.Random(62)
    return "".join(rng.choices(string.digits + string.ascii_letters, k=length))


#: Ids are windows into a fixed random base62 text: deterministic and O(1) per record.
_ID_SOURCE = _id_source()
#: The same, encoded: what :func:`id_window` slices.
_ID_BYTES = _ID_SOURCE.encode()


def stop_strings(value: Any) -> tuple[str, ...] | None:
    """A quick path's stop sequences as a tuple: absent or null is none, and anything but a
    list of strings is ``None`` (the parser decides, and refuses it with its reason)."""
    if value is None:
        return ()
    if type(value) is list and all(type(v) is str for v in value):
        return tuple(value)
    return None


def answer_id(answer: ChatAnswer, length: int) -> str:
    """A response id for ``answer``: the same answer always gets the same id."""
    if answer.id_seed is not None:
        start = answer.id_seed % (len(_ID_SOURCE) - length)
        return _ID_SOURCE[start : start + length]
    return stable_id(f"{answer.input_tokens}:{answer.text[:64]}", length)


def answer_id_json(answer: ChatAnswer, length: int) -> bytes:
    """:func:`answer_id`, as the bytes inside its JSON string (ids are alphanumeric)."""
    if answer.id_seed is not None:
        return id_window(answer.id_seed, length)
    return stable_id(f"{answer.input_tokens}:{answer.text[:64]}", length).encode()


def id_window(seed: int, length: int) -> bytes:
    """:func:`answer_id_json` for an answer whose ``id_seed`` is ``seed``."""
    start = seed % (len(_ID_BYTES) - length)
    return _ID_BYTES[start : start + length]


def stable_id(text: str, length: int) -> str:
    """A deterministic alphanumeric id (up to a few thousand characters) derived from ``text``."""
    start = zlib.crc32(text.encode()) % (len(_ID_SOURCE) - length)
    return _ID_SOURCE[start : start + length]
