"""What a model family is: a request schema and a response layout."""

from __future__ import annotations

import random
import string
import zlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

from batchrock.backends.neutral import ChatAnswer, ChatRequest, EmbedAnswer, EmbedRequest

#: What :meth:`ChatFamily.quick` extracts: all the text, the message count, the token limit
#: and the stop sequences.
Quick = tuple[str, int, int | None, tuple[str, ...]]


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


def stable_id(text: str, length: int) -> str:
    """A deterministic alphanumeric id (up to a few thousand characters) derived from ``text``."""
    start = zlib.crc32(text.encode()) % (len(_ID_SOURCE) - length)
    return _ID_SOURCE[start : start + length]
