"""The family-neutral form of a request and of an answer.

Every model family parses its Bedrock body into one of these and renders an answer back into
its own body, so a backend (built-in, OpenAI-compatible, local) deals with one shape only.
"""

from __future__ import annotations

# The dataclasses are not frozen: a frozen dataclass pays for object.__setattr__ on every
# field, and these are built for every record. Treat them as immutable all the same.
from dataclasses import dataclass, field
from typing import Literal

import msgspec

Role = Literal["user", "assistant"]
#: Why generation stopped, in neutral words: the model ended its turn, hit the token limit, or
#: produced one of the stop sequences.
StopReason = Literal["end", "length", "stop"]


@dataclass(slots=True)
class TextPart:
    text: str


@dataclass(slots=True)
class ImagePart:
    #: ``image/png``, ``image/jpeg``, ``image/gif`` or ``image/webp``.
    media_type: str
    #: Base64 text, exactly as the record carried it.
    data: str


Part = TextPart | ImagePart


@dataclass(slots=True)
class Message:
    role: Role
    parts: tuple[Part, ...]


@dataclass(slots=True)
class ChatRequest:
    """A text-generation request: a conversation, or a raw ``prompt`` for prompt families."""

    messages: tuple[Message, ...] = ()
    system: str = ""
    #: Set for families whose body is one templated prompt (Llama, Mistral, Titan Text).
    prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    #: Body members the neutral form does not carry (``tools``, ``thinking`` ...). The built-in
    #: model ignores them; a backend that cannot serve one answers with a per-record error.
    extras: tuple[str, ...] = ()

    @property
    def has_images(self) -> bool:
        return any(isinstance(p, ImagePart) for m in self.messages for p in m.parts)


@dataclass(slots=True)
class EmbedRequest:
    """An embedding request for one text (and, for multimodal models, one image)."""

    text: str
    #: ``None`` when the body did not ask for a size (the model's default or native size).
    dimensions: int | None = None
    normalize: bool = True
    #: Titan v2 ``embeddingTypes``: ``float`` and/or ``binary``.
    types: tuple[str, ...] = ("float",)
    #: Titan Multimodal Embeddings ``inputImage``: base64 text, as the record carried it.
    image: str | None = None


class ChatAnswer(msgspec.Struct, gc=False):
    """What a chat model answered. A msgspec struct rather than a dataclass: the built-in
    model makes one per record, and this costs a third as much to create."""

    text: str
    stop_reason: StopReason
    input_tokens: int
    output_tokens: int
    #: The stop sequence that ended generation, when ``stop_reason == "stop"``.
    stop_sequence: str | None = None
    latency_ms: int = 0
    #: What the response's id is derived from: a model that hashed the request already (the
    #: built-in one) passes that number; without it the id comes from the answer's text.
    id_seed: int | None = None


@dataclass(slots=True)
class EmbedAnswer:
    vector: list[float]
    input_tokens: int
    #: Extra vectors keyed by type (``binary``) when the request asked for them.
    by_type: dict[str, list[float] | list[int]] = field(default_factory=dict)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about four characters a token for English text).

    Used by the built-in model and whenever a server does not report usage.
    """
    return (len(text) + 3) >> 2


def request_text(request: ChatRequest) -> str:
    """All the text of a chat request, for token estimates and deterministic seeds."""
    if request.prompt is not None:
        return request.prompt
    chunks = [request.system]
    for message in request.messages:
        for part in message.parts:
            if type(part) is TextPart:
                chunks.append(part.text)
    return "\n".join(chunks)
