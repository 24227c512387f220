"""OpenAI chat completions bodies: the OpenAI open-weight models on Bedrock (``openai.*``, e.g.
``openai.gpt-oss-120b-1:0``), and the layout recognised for unknown ids whose messages carry
plain-string content.

Request: ``messages`` (roles ``system``, ``developer``, ``user``, ``assistant``, ``tool``;
content a string or text parts) plus the usual parameters (``max_completion_tokens`` or
``max_tokens``, ``temperature``, ``top_p``, ``stop`` ...). Response: a ``chat.completion``
object with ``choices[0].message``, ``finish_reason`` and ``usage``.
"""

from __future__ import annotations

from typing import Any

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


class OpenAIChat(ChatFamily):
    name = "openai-chat"
    render_reads_request = False

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        if type(body) is dict:
            unknown = [key for key in body if key not in _TOP]
            if unknown:
                raise BodyError(f"Unrecognized request argument supplied: {unknown[0]}")
        c = Checker()
        c.top(body, ("messages",), _TOP)
        limit = c.integer(body, "max_completion_tokens", "#", minimum=1)
        if limit is None:
            limit = c.integer(body, "max_tokens", "#", minimum=1)
        temperature = c.number(body, "temperature", "#", 0, 2)
        top_p = c.number(body, "top_p", "#", 0, 1)
        stop_value = body.get("stop")
        stop: tuple[str, ...] = ()
        if type(stop_value) is str:
            stop = (stop_value,)
        elif stop_value is not None:
            stop = c.strings(body, "stop", "#")
        if body.get("stream") is True or body.get("n", 1) != 1:
            raise BodyError("Batch inference records take one non-streamed answer (n = 1).")
        extras = {key for key in _EXTRAS if key in body}
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
        return ChatRequest(
            messages=tuple(messages),
            system="\n".join(system),
            max_tokens=limit,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            extras=tuple(sorted(extras)),
        )

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-" + answer_id(answer, 24),
            "object": "chat.completion",
            "created": CREATED,
            "model": model_id.rsplit("/", 1)[-1],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text},
                    "finish_reason": "length" if answer.stop_reason == "length" else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": answer.input_tokens,
                "completion_tokens": answer.output_tokens,
                "total_tokens": answer.input_tokens + answer.output_tokens,
            },
        }


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
