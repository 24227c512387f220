"""The family-neutral form of a request and of an answer.

Every model family parses its Bedrock body into one of these and renders an answer back into
its own body, so a backend (built-in, OpenAI-compatible, local) deals with one shape only.
"""

from __future__ import annotations

# The dataclasses are not frozen: a frozen dataclass pays for object.__setattr__ on every
# field, and these are built for every record. Treat them as immutable all the same.
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

Role = Literal["user", "assistant"]
#: Why generation stopped, in neutral words: the model ended its turn, hit the token limit,
#: produced one of the stop sequences, or called a tool (and waits for its result).
StopReason = Literal["end", "length", "stop", "tool"]


@dataclass(slots=True)
class TextPart:
    text: str


@dataclass(slots=True)
class ImagePart:
    #: ``image/png``, ``image/jpeg``, ``image/gif`` or ``image/webp``.
    media_type: str
    #: Base64 text, exactly as the record carried it.
    data: str


@dataclass(slots=True)
class DocumentPart:
    """A document block: a PDF (base64) or plain text, with its title when it has one."""

    #: ``application/pdf`` or ``text/plain``.
    media_type: str
    #: Base64 text for a PDF, the text itself for ``text/plain``.
    data: str
    title: str | None = None


@dataclass(slots=True)
class ToolUsePart:
    """A tool call the assistant made earlier in the conversation."""

    id: str
    name: str
    input: dict[str, Any]


@dataclass(slots=True)
class ToolResultPart:
    """What a tool returned (in a user turn), as text."""

    tool_use_id: str
    text: str
    is_error: bool = False


Part = TextPart | ImagePart | DocumentPart | ToolUsePart | ToolResultPart


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call: its name, what it is for, and its input's JSON schema."""

    name: str
    description: str | None
    input_schema: dict[str, Any]
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``auto`` (the model decides), ``any`` (some tool), ``tool`` (the one named), ``none``."""

    kind: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel: bool = False

    @property
    def forces(self) -> bool:
        return self.kind in ("any", "tool")


@dataclass(frozen=True, slots=True)
class OutputSchema:
    """Structured output: the answer must be JSON valid against ``schema``."""

    schema: dict[str, Any]
    name: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Thinking:
    """Extended thinking: ``enabled`` with a token budget, or ``adaptive`` (the model decides)."""

    kind: Literal["enabled", "adaptive"]
    budget_tokens: int | None = None
    #: Whether the thinking text is shown (``summarized``) or left out (``omitted``).
    display: bool = True


@dataclass(frozen=True, slots=True)
class MediaRef:
    """Media a record names by its S3 location (a Nova ``s3Location``) instead of carrying
    it: the model service reads it with the job's access, so it must exist and be readable."""

    uri: str
    #: ``bucketOwner``: the account the bucket must belong to, when the record says.
    bucket_owner: str | None = None
    #: Where in the body it was named (``messages/0/content/1/video``), for error messages.
    where: str = ""


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
    #: Tools the model may call, and how it must choose (``None``: ``auto`` when tools exist).
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    #: Structured output: the JSON schema the answer must follow.
    output_schema: OutputSchema | None = None
    thinking: Thinking | None = None
    #: Reasoning effort (``low`` ... ``max``) when the body names one.
    effort: str | None = None
    #: Tokens of the prompt prefix marked for caching (Claude ``cache_control``, Converse
    #: ``cachePoint``), up to the last breakpoint; 0 when nothing is marked.
    cache_prefix_tokens: int = 0
    #: The service tier (``priority``, ``default``, ``flex``, ``reserved``) and latency
    #: profile (``standard``, ``optimized``) asked for; echoed in the Converse response.
    service_tier: str | None = None
    latency: str | None = None
    #: Media named by S3 location; the built-in model checks each exists and may be read.
    media: tuple[MediaRef, ...] = ()

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
    #: Titan Multimodal Embeddings ``inputImage`` (base64 text, as the record carried it), or
    #: the media a Nova Multimodal Embeddings body embeds (its base64 or its S3 URI).
    image: str | None = None
    #: Media named by S3 location (see :class:`MediaRef`).
    media: tuple[MediaRef, ...] = ()
    #: Nova Multimodal Embeddings: the ``embeddingType`` of each vector of the answer.
    outputs: tuple[str, ...] = ()


class ToolCall(msgspec.Struct, frozen=True, gc=False):
    """One tool call in an answer: the call's id, the tool's name and its input."""

    id: str
    name: str
    input: dict[str, Any]


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
    #: Tool calls, in order (``stop_reason == "tool"``); a text before them is ``text``.
    tool_calls: tuple[ToolCall, ...] = ()
    #: The model's thinking (extended thinking / reasoning), with its signature.
    thinking: str | None = None
    thinking_signature: str | None = None
    #: Prompt tokens written to and read from the prompt cache (not in ``input_tokens``).
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0


@dataclass(slots=True)
class EmbedAnswer:
    vector: list[float]
    input_tokens: int
    #: Extra vectors keyed by type (``binary``) when the request asked for them.
    by_type: dict[str, list[float] | list[int]] = field(default_factory=dict)


def non_text_input(request: EmbedRequest) -> str | None:
    """What an embedding request asks a text-only embedding model for besides text (media
    in S3, Titan's ``inputImage``, Nova's image, audio or video), named for an error
    message; ``None`` for plain text."""
    if request.media:
        return "media in S3 (s3Location)"
    if request.image is not None:
        return f"{request.outputs[0].lower()} media" if request.outputs else "images (inputImage)"
    return None


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
    for tool in request.tools:
        # Tool definitions are part of the prompt the model reads (and is billed for).
        chunks.append(tool_text(tool))
    for message in request.messages:
        for part in message.parts:
            if type(part) is TextPart:
                chunks.append(part.text)
            elif type(part) is not ImagePart:
                text = part_text(part)
                if text:
                    chunks.append(text)
    return "\n".join(chunks)


def tool_text(tool: Tool) -> str:
    """A tool definition as the text it adds to the prompt."""
    schema = msgspec.json.encode(tool.input_schema).decode()
    return f"{tool.name}: {tool.description or ''} {schema}"


def part_text(part: Part) -> str:
    """The text a part contributes to the prompt (tool calls as their JSON input)."""
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, ToolResultPart):
        return part.text
    if isinstance(part, DocumentPart):
        return part.data if part.media_type == "text/plain" else ""
    if isinstance(part, ToolUsePart):
        return part.name + " " + msgspec.json.encode(part.input).decode()
    return ""


def structure_features(request: ChatRequest) -> list[str]:
    """The features of ``request`` beyond plain text and images, by name: for a backend that
    serves none of them to refuse the record with."""
    needs = []
    if request.tools:
        needs.append("tools")
    if request.output_schema is not None:
        needs.append("structured output")
    if request.thinking is not None:
        needs.append("thinking")
    kinds = {type(p) for m in request.messages for p in m.parts}
    if ToolUsePart in kinds or ToolResultPart in kinds:
        needs.append("tool_use/tool_result blocks")
    if DocumentPart in kinds:
        needs.append("documents")
    return needs
