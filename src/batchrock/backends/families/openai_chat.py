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

from batchrock.backends.families.base import ChatFamily, answer_id
from batchrock.backends.families.schema import BodyError, Checker
from batchrock.backends.neutral import ChatAnswer, ChatRequest, Message, TextPart

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
_EXTRAS = ("tools", "tool_choice", "response_format", "reasoning_effort", "logprobs")
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
        )

    def check(self, body: dict[str, Any]) -> None:
        """The family's own rules beyond the layout (raise ``BodyError``)."""

    def message(self, answer: ChatAnswer) -> dict[str, Any]:
        """``choices[0].message`` for ``answer``."""
        return {"role": "assistant", "content": answer.text}

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-" + answer_id(answer, 24),
            "object": "chat.completion",
            "created": CREATED,
            "model": model_id.rsplit("/", 1)[-1],
            "choices": [
                {
                    "index": 0,
                    "message": self.message(answer),
                    "finish_reason": "length" if answer.stop_reason == "length" else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": answer.input_tokens,
                "completion_tokens": answer.output_tokens,
                "total_tokens": answer.input_tokens + answer.output_tokens,
            },
        }


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
            if kind == "text" and text is not None:
                texts.append(text)
    return "".join(texts)
