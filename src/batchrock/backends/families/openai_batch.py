"""The bodies of OpenAI Batch API lines, by endpoint, for the models that parse them (the
built-in one). A job submitted through the files and batch API (``api/openai``) carries its
lines' endpoint in its invocation type (``openai:/v1/chat/completions``), and every record is
that endpoint's request body, whatever the model id.

- ``/v1/chat/completions``: :class:`~.openai_chat.OpenAIChat` (a ``chat.completion``);
- ``/v1/completions``: ``prompt`` -> a ``text_completion``;
- ``/v1/embeddings``: ``input`` (one string, or a list of one) -> a ``list`` of one embedding;
- ``/v1/responses``: ``input`` (a string or messages) -> a ``response``.

An OpenAI-compatible server gets these bodies as they are (backends/openai_compat.py); only
the built-in model reads them.
"""

from __future__ import annotations

from typing import Any

from batchrock.backends.families.base import ChatFamily, EmbedFamily, answer_id
from batchrock.backends.families.openai_chat import CREATED, OpenAIChat
from batchrock.backends.families.schema import BodyError, Checker
from batchrock.backends.neutral import ChatAnswer, ChatRequest, EmbedAnswer, EmbedRequest
from batchrock.jobs import OPENAI_BATCH_PREFIX as PREFIX

CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
)


def _model(model_id: str) -> str:
    return model_id.rsplit("/", 1)[-1]


def _stop(c: Checker, body: dict[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if type(value) is str:
        return (value,)
    if value is None:
        return ()
    return c.strings(body, "stop", "#") or ()


class OpenAICompletions(ChatFamily):
    name = "openai-completions"
    _top = frozenset(
        {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "n", "seed", "user"}
    )

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        c = Checker()
        c.top(body, ("prompt",), self._top)
        prompt = body.get("prompt")
        if type(prompt) is list and len(prompt) == 1 and type(prompt[0]) is str:
            prompt = prompt[0]
        if type(prompt) is not str:
            raise BodyError("'prompt' must be a string (one prompt per batch line).")
        if body.get("n", 1) != 1:
            raise BodyError("Batch lines take one answer (n = 1).")
        limit = c.integer(body, "max_tokens", "#", minimum=1)
        temperature = c.number(body, "temperature", "#", 0, 2)
        top_p = c.number(body, "top_p", "#", 0, 1)
        stop = _stop(c, body)
        c.done()
        return ChatRequest(
            prompt=prompt,
            max_tokens=16 if limit is None else limit,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
        )

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        return {
            "id": "cmpl-" + answer_id(answer, 24),
            "object": "text_completion",
            "created": CREATED,
            "model": _model(model_id),
            "choices": [
                {
                    "index": 0,
                    "text": answer.text,
                    "logprobs": None,
                    "finish_reason": "length" if answer.stop_reason == "length" else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": answer.input_tokens,
                "completion_tokens": answer.output_tokens,
                "total_tokens": answer.input_tokens + answer.output_tokens,
            },
        }


class OpenAIEmbeddings(EmbedFamily):
    name = "openai-embeddings"
    default_dimensions = 1536
    _top = frozenset({"model", "input", "dimensions", "encoding_format", "user"})

    def parse(self, body: dict[str, Any]) -> EmbedRequest:
        c = Checker()
        c.top(body, ("input",), self._top)
        value = body.get("input")
        if type(value) is list and len(value) == 1 and type(value[0]) is str:
            value = value[0]
        if type(value) is not str or not value:
            raise BodyError(
                "'input' must be a non-empty string, or a list of one (the built-in model "
                "embeds one input per batch line)."
            )
        dimensions = c.integer(body, "dimensions", "#", minimum=1)
        if body.get("encoding_format", "float") != "float":
            raise BodyError("Only encoding_format 'float' is served.")
        c.done()
        return EmbedRequest(text=value, dimensions=dimensions, normalize=True)

    def render(self, answer: EmbedAnswer, request: EmbedRequest, model_id: str) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": answer.vector}],
            "model": _model(model_id),
            "usage": {"prompt_tokens": answer.input_tokens, "total_tokens": answer.input_tokens},
        }


class OpenAIResponses(ChatFamily):
    name = "openai-responses"
    _top = frozenset(
        {"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "user"}
    )

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        c = Checker()
        c.top(body, ("input",), self._top)
        value = body.get("input")
        system = body.get("instructions") or ""
        if type(system) is not str:
            raise BodyError("'instructions' must be a string.")
        if type(value) is str:
            chat_body: dict[str, Any] = {"messages": [{"role": "user", "content": value}]}
        elif type(value) is list:
            chat_body = {"messages": value}
        else:
            raise BodyError("'input' must be a string or a list of messages.")
        limit = c.integer(body, "max_output_tokens", "#", minimum=1)
        if limit is not None:
            chat_body["max_tokens"] = limit
        for key in ("temperature", "top_p"):
            if key in body:
                chat_body[key] = body[key]
        c.done()
        parsed = _CHAT.parse(chat_body)
        if system:
            parsed.system = "\n".join(s for s in (system, parsed.system) if s)
        return parsed

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        ident = answer_id(answer, 24)
        return {
            "id": "resp_" + ident,
            "object": "response",
            "created_at": CREATED,
            "status": "completed" if answer.stop_reason != "length" else "incomplete",
            "model": _model(model_id),
            "output": [
                {
                    "type": "message",
                    "id": "msg_" + ident,
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": answer.text, "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": answer.input_tokens,
                "output_tokens": answer.output_tokens,
                "total_tokens": answer.input_tokens + answer.output_tokens,
            },
        }


_CHAT = OpenAIChat()
BY_ENDPOINT: dict[str, ChatFamily | EmbedFamily] = {
    CHAT: _CHAT,
    COMPLETIONS: OpenAICompletions(),
    EMBEDDINGS: OpenAIEmbeddings(),
    RESPONSES: OpenAIResponses(),
}


def endpoint_of(invocation_type: str) -> str | None:
    """The endpoint a job's invocation type names, or ``None`` for a Bedrock job."""
    if invocation_type.startswith(PREFIX):
        return invocation_type[len(PREFIX) :]
    return None
