"""Open-weight chat families on Bedrock, each in its own shape: OpenAI gpt-oss, Qwen3 and
DeepSeek-V3.

Sources (service-facts §9.4):

- **gpt-oss** (``openai.gpt-oss-20b-1:0``, ``openai.gpt-oss-120b-1:0``; AWS's
  model-parameters-openai page): the body is OpenAI's Create chat completion; ``model`` must
  match the id in the URL or be left out (not checked here: a batch record has no URL);
  ``stream`` must be false on InvokeModel; text only;
  the response is a ``chat.completion`` object whose text starts with the model's reasoning
  wrapped in ``<reasoning>...</reasoning>``.
- **Qwen3** (``qwen.qwen3-*``; AWS's model-cards-qwen page lists the models): an OpenAI-style
  ``messages`` body with ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``stop``,
  ``response_format`` ... -> ``choices[0].message.content``. The exact member list is
  **unconfirmed**; an unknown member is refused by Bedrock's schema validator wording.
- **DeepSeek-V3.1** (``deepseek.v3-v1:0``; AWS's model-parameters-deepseek page, which also
  covers R1): whether it takes R1's ``prompt`` body or ``messages`` is **unconfirmed**, so
  both are accepted: a ``prompt`` body is answered in R1's shape (``choices[{text,
  stop_reason}]``), a ``messages`` body as a chat completion.
"""

from __future__ import annotations

from typing import Any

from batchrock.backends.families.openai_chat import _EXTRAS, _TOP, ChatCompletions
from batchrock.backends.families.prompt import DeepSeek
from batchrock.backends.neutral import ChatAnswer, ChatRequest


class GptOss(ChatCompletions):
    """OpenAI gpt-oss: OpenAI's body, with the reasoning in front of the answer's text."""

    name = "openai-gpt-oss"
    #: The built-in model writes a reasoning for every answer (gpt-oss always reasons;
    #: ``reasoning_effort`` sets how much, default medium).
    reasons = True

    def message(self, answer: ChatAnswer) -> dict[str, Any]:
        message = super().message(answer)
        if answer.thinking:
            message["content"] = (
                f"<reasoning>{answer.thinking}</reasoning>{message['content'] or ''}"
            )
        return message


class Qwen(ChatCompletions):
    """Qwen3: the chat-completions layout with ``top_k``, refused in Bedrock's schema style."""

    name = "qwen"
    top = (_TOP - {"max_completion_tokens", "reasoning_effort", "user"}) | {"top_k"}
    extras = tuple(e for e in _EXTRAS if e != "reasoning_effort")
    unknown_style = "schema"
    takes_top_k = True


_DEEPSEEK_R1 = DeepSeek()


class DeepSeekV3(ChatCompletions):
    """DeepSeek-V3.1: R1's ``prompt`` body or a chat-completions ``messages`` body."""

    name = "deepseek-v3"
    top = frozenset(
        {
            "messages",
            "max_tokens",
            "temperature",
            "top_p",
            "stop",
            "response_format",
            "tools",
            "tool_choice",
        }
    )
    extras = ()
    unknown_style = "schema"
    max_temperature = 1.0

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        if type(body) is dict and "prompt" in body and "messages" not in body:
            return _DEEPSEEK_R1.parse(body)
        return super().parse(body)

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        if request.prompt is not None:
            return _DEEPSEEK_R1.render(answer, request, model_id)
        return super().render(answer, request, model_id)

    render_reads_request = True
