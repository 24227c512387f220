"""OpenAI Batch API lines on a Bedrock runtime route (backends/bedrock_runtime.py).

A model whose native InvokeModel body is a chat completion (catalogued in a chat-completions
family: the OpenAI models on Bedrock such as gpt-oss, Qwen, DeepSeek-V3) gets every line's
body as it is. Every other model (Claude, Nova, Llama, Mistral ..., and ids the catalogue does
not know) gets a ``/v1/chat/completions`` line through the Converse API, the one request shape
all of Bedrock's chat models take, and its answer back as a ``chat.completion``.

What Converse cannot express is refused per record with a 400 that names the member, never
dropped: the generic chat parser refuses ``n`` > 1, streaming and non-text content parts, and
:func:`_unexpressible` the sampling and output controls Converse has no field for. Lines of the
other endpoints (embeddings, completions, responses) have no translation here and are refused
the same way.
"""

from __future__ import annotations

import time
from typing import Any

from batchrock.backends.base import ModelResult, RecordError
from batchrock.backends.families import BodyError, family_for_id
from batchrock.backends.families.openai_batch import CHAT
from batchrock.backends.families.openai_chat import ChatCompletions, OpenAIChat
from batchrock.backends.neutral import ChatAnswer, ChatRequest, StopReason, part_text

_CHAT = OpenAIChat()
#: Converse ``stopReason`` -> the neutral stop reason the chat completion is rendered from.
_STOP: dict[str, StopReason] = {
    "end_turn": "end",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "stop_sequence": "stop",
    "tool_use": "tool",
}
#: Stop reasons OpenAI reports as ``content_filter``.
_FILTERED = frozenset({"guardrail_intervened", "content_filtered"})


def sent_as_is(model: str) -> bool:
    """Whether ``model`` takes an OpenAI chat body as its own InvokeModel body."""
    return isinstance(family_for_id(model), ChatCompletions)


def converse_request(endpoint: str, body: dict[str, Any]) -> dict[str, Any] | RecordError:
    """The botocore ``converse`` parameters (less ``modelId``) for an OpenAI line's body, or
    the record's 400 when Converse cannot carry it."""
    if endpoint != CHAT:
        return RecordError(
            400,
            f"OpenAI {endpoint} lines cannot be sent to this Bedrock model: only "
            f"{CHAT} lines are translated (to Converse), for models whose native body is "
            "not the OpenAI one.",
        )
    try:
        request = _CHAT.parse(body)
    except BodyError as exc:
        return RecordError(exc.code, exc.message)
    refused = _unexpressible(body, request)
    if refused:
        return RecordError(
            400,
            "Bedrock's Converse API, which serves this model's chat completions, cannot "
            f"express: {', '.join(refused)}.",
        )
    params: dict[str, Any] = {
        "messages": [
            {"role": m.role, "content": [{"text": part_text(part)} for part in m.parts]}
            for m in request.messages
        ]
    }
    if request.system:
        params["system"] = [{"text": request.system}]
    sampling = (
        ("maxTokens", request.max_tokens),
        ("temperature", request.temperature),
        ("topP", request.top_p),
        ("stopSequences", list(request.stop) or None),
    )
    config = {name: value for name, value in sampling if value is not None}
    if config:
        params["inferenceConfig"] = config
    return params


def _unexpressible(body: dict[str, Any], request: ChatRequest) -> list[str]:
    """The members of ``body`` set to something Converse has no field for."""
    refused = []
    if body.get("tools"):
        # tool_choice and parallel_tool_calls mean nothing without tools.
        refused.append("tools")
    for key in ("reasoning_effort", "seed"):
        if body.get(key) is not None:
            refused.append(key)
    if body.get("logprobs"):
        refused.append("logprobs")
    if body.get("top_logprobs") is not None:
        refused.append("top_logprobs")
    for key in ("presence_penalty", "frequency_penalty"):
        if body.get(key) not in (None, 0):
            refused.append(key)
    if request.output_schema is not None:
        refused.append("response_format")
    if "tool calls" in request.extras:
        refused.append("tool messages and assistant tool_calls")
    return refused


def chat_completion(response: dict[str, Any], model_id: str) -> ModelResult:
    """A Converse response as the ``chat.completion`` an OpenAI client reads."""
    content = response.get("output", {}).get("message", {}).get("content") or []
    text = "".join(block["text"] for block in content if isinstance(block.get("text"), str))
    usage = response.get("usage") or {}
    tokens_in = int(usage.get("inputTokens", 0))
    tokens_out = int(usage.get("outputTokens", 0))
    reason = str(response.get("stopReason", "end_turn"))
    answer = ChatAnswer(text, _STOP.get(reason, "end"), tokens_in, tokens_out)
    output = _CHAT.render(answer, ChatRequest(), model_id)
    # A real answer's time, not the fixed one that keeps the built-in model deterministic.
    output["created"] = int(time.time())
    if reason in _FILTERED:
        output["choices"][0]["finish_reason"] = "content_filter"
    return ModelResult(output=output, input_tokens=tokens_in, output_tokens=tokens_out)
