"""Families whose body is one prompt string: Titan Text, Meta Llama, Mistral.

The prompt already carries the model's chat template (``<|begin_of_text|>...`` for Llama,
``<s>[INST] ... [/INST]`` for Mistral), so backends send it as a raw completion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import msgspec

from batchrock.backends.base import DECODE_ERRORS, JsonBytes
from batchrock.backends.families.base import ChatFamily, Quick, stop_strings
from batchrock.backends.families.schema import Checker
from batchrock.backends.neutral import ChatAnswer, ChatRequest, Message, TextPart


class TitanText(ChatFamily):
    """``amazon.titan-text-*``: ``inputText`` plus ``textGenerationConfig``."""

    name = "amazon-titan-text"
    render_reads_request = False
    _top = frozenset({"inputText", "textGenerationConfig"})
    _config = frozenset({"temperature", "topP", "maxTokenCount", "stopSequences"})
    _reason: ClassVar[dict[str, str]] = {
        "end": "FINISH",
        "length": "LENGTH",
        "stop": "STOP_CRITERIA_MET",
    }

    def quick(self, body: Any) -> Quick | None:
        if type(body) is not dict or not body.keys() <= self._top:
            return None
        prompt = body.get("inputText")
        config = body.get("textGenerationConfig")
        if type(prompt) is not str:
            return None
        if config is None:
            return prompt, 0, None, ()
        if type(config) is not dict or not config.keys() <= self._config:
            return None
        limit = config.get("maxTokenCount")
        stop = stop_strings(config.get("stopSequences"))
        if (
            not _unit(config.get("temperature"))
            or not _unit(config.get("topP"))
            or (limit is not None and (type(limit) is not int or not 0 <= limit <= 8192))
            or stop is None
        ):
            return None
        return prompt, 0, limit, stop

    def quick_json(self, body: JsonBytes) -> Quick | None:
        try:
            plain = _read_titan(body)
        except DECODE_ERRORS:
            return None
        config = plain.textGenerationConfig
        if config is None:
            return plain.inputText, 0, None, ()
        return plain.inputText, 0, config.maxTokenCount, config.stopSequences or ()

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        c = Checker()
        c.top(body, ("inputText",), self._top)
        prompt = c.string(body, "inputText", "#")
        params: dict[str, Any] = {}
        config = body.get("textGenerationConfig")
        path = "#/textGenerationConfig"
        if config is not None and c.obj(config, path, (), self._config):
            params = {
                "temperature": c.number(config, "temperature", path, 0, 1),
                "top_p": c.number(config, "topP", path, 0, 1),
                "max_tokens": c.integer(config, "maxTokenCount", path, 0, 8192),
                "stop": c.strings(config, "stopSequences", path),
            }
        c.done()
        return ChatRequest(prompt=prompt or "", **params)

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        return {
            "inputTextTokenCount": answer.input_tokens,
            "results": [
                {
                    "tokenCount": answer.output_tokens,
                    "outputText": answer.text,
                    "completionReason": self._reason[answer.stop_reason],
                }
            ],
        }


class MetaLlama(ChatFamily):
    """``meta.llama*``: ``prompt``, ``temperature``, ``top_p``, ``max_gen_len``."""

    name = "meta-llama"
    render_reads_request = False
    _top = frozenset({"prompt", "temperature", "top_p", "max_gen_len", "images"})

    def quick(self, body: Any) -> Quick | None:
        if type(body) is not dict or not body.keys() <= self._top or "images" in body:
            return None
        prompt = body.get("prompt")
        limit = body.get("max_gen_len", 512)
        if (
            type(prompt) is not str
            or not _unit(body.get("temperature"))
            or not _unit(body.get("top_p"))
            or type(limit) is not int
            or not 1 <= limit <= 2048
        ):
            return None
        return prompt, 0, limit, ()

    def quick_json(self, body: JsonBytes) -> Quick | None:
        try:
            plain = _read_llama(body)
        except DECODE_ERRORS:
            return None
        return plain.prompt, 0, plain.max_gen_len, ()

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        c = Checker()
        c.top(body, ("prompt",), self._top)
        prompt = c.string(body, "prompt", "#")
        temperature = c.number(body, "temperature", "#", 0, 1)
        top_p = c.number(body, "top_p", "#", 0, 1)
        max_tokens = c.integer(body, "max_gen_len", "#", 1, 2048)
        images = c.strings(body, "images", "#")
        c.done()
        return ChatRequest(
            prompt=prompt or "",
            temperature=temperature,
            top_p=top_p,
            # Bedrock's documented default for max_gen_len.
            max_tokens=512 if max_tokens is None else max_tokens,
            extras=("images",) if images else (),
        )

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        return {
            "generation": answer.text,
            "prompt_token_count": answer.input_tokens,
            "generation_token_count": answer.output_tokens,
            "stop_reason": "length" if answer.stop_reason == "length" else "stop",
        }


class Mistral(ChatFamily):
    """``mistral.*``: text completion (``prompt`` ... -> ``outputs``) or, for the models that
    take it (Mistral Large 2), chat completion (``messages`` ... -> ``choices``). A body with
    ``messages`` and no ``prompt`` is a chat completion."""

    name = "mistral"
    _top = frozenset({"prompt", "max_tokens", "stop", "temperature", "top_p", "top_k"})
    _chat_top = frozenset(
        {"messages", "tools", "tool_choice", "max_tokens", "top_p", "temperature"}
    )
    _chat_message = frozenset({"role", "content", "tool_calls", "tool_call_id"})

    def quick(self, body: Any) -> Quick | None:
        if type(body) is not dict or not body.keys() <= self._top:
            return None
        prompt = body.get("prompt")
        limit = body.get("max_tokens")
        top_k = body.get("top_k")
        stop = stop_strings(body.get("stop"))
        if (
            type(prompt) is not str
            or (limit is not None and (type(limit) is not int or limit < 1))
            or (top_k is not None and (type(top_k) is not int or not 1 <= top_k <= 200))
            or not _unit(body.get("temperature"))
            or not _unit(body.get("top_p"))
            or stop is None
        ):
            return None
        return prompt, 0, limit, stop

    def quick_json(self, body: JsonBytes) -> Quick | None:
        return _completion(_read_mistral, body)

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        if type(body) is dict and "messages" in body and "prompt" not in body:
            return self._parse_chat(body)
        c = Checker()
        c.top(body, ("prompt",), self._top)
        prompt = c.string(body, "prompt", "#")
        max_tokens = c.integer(body, "max_tokens", "#", minimum=1)
        stop = c.strings(body, "stop", "#")
        temperature = c.number(body, "temperature", "#", 0, 1)
        top_p = c.number(body, "top_p", "#", 0, 1)
        top_k = c.integer(body, "top_k", "#", 1, 200)
        c.done()
        return ChatRequest(
            prompt=prompt or "",
            max_tokens=max_tokens,
            stop=stop,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
        )

    def _parse_chat(self, body: dict[str, Any]) -> ChatRequest:
        c = Checker()
        c.top(body, ("messages",), self._chat_top)
        max_tokens = c.integer(body, "max_tokens", "#", minimum=1)
        temperature = c.number(body, "temperature", "#", 0, 1)
        top_p = c.number(body, "top_p", "#", 0, 1)
        extras: set[str] = {key for key in ("tools", "tool_choice") if key in body}
        system: list[str] = []
        messages: list[Message] = []
        for index, raw in enumerate(c.array(body, "messages", "#", min_items=1)):
            path = f"#/messages/{index}"
            if not c.obj(raw, path, ("role",), self._chat_message):
                continue
            role = c.string(raw, "role", path, enum=("system", "user", "assistant", "tool"))
            content = c.string(raw, "content", path) or ""
            if "tool_calls" in raw or role == "tool":
                extras.add("tool_calls" if role != "tool" else "tool results")
            if role == "system":
                system.append(content)
            elif role == "user":
                messages.append(Message("user", (TextPart(content),)))
            elif role == "assistant":
                messages.append(Message("assistant", (TextPart(content),)))
        c.done()
        return ChatRequest(
            messages=tuple(messages),
            system="\n".join(system),
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            extras=tuple(sorted(extras)),
        )

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        reason = "length" if answer.stop_reason == "length" else "stop"
        if request.prompt is None:
            message = {"role": "assistant", "content": answer.text}
            return {"choices": [{"index": 0, "message": message, "stop_reason": reason}]}
        return {"outputs": [{"text": answer.text, "stop_reason": reason}]}


class DeepSeek(ChatFamily):
    """``deepseek.r1*`` text completion: ``prompt``, ``temperature``, ``top_p``, ``max_tokens``
    (1 to 32,768), ``stop`` (up to 10) -> ``choices[{text, stop_reason}]``."""

    name = "deepseek"
    render_reads_request = False
    _top = frozenset({"prompt", "temperature", "top_p", "max_tokens", "stop"})

    def quick(self, body: Any) -> Quick | None:
        if type(body) is not dict or not body.keys() <= self._top:
            return None
        prompt = body.get("prompt")
        limit = body.get("max_tokens")
        stop = stop_strings(body.get("stop"))
        if (
            type(prompt) is not str
            or (limit is not None and (type(limit) is not int or not 1 <= limit <= 32768))
            or not _unit(body.get("temperature"))
            or not _unit(body.get("top_p"))
            or stop is None
            or len(stop) > 10
        ):
            return None
        return prompt, 0, limit, stop

    def quick_json(self, body: JsonBytes) -> Quick | None:
        return _completion(_read_deepseek, body)

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        c = Checker()
        c.top(body, ("prompt",), self._top)
        prompt = c.string(body, "prompt", "#")
        temperature = c.number(body, "temperature", "#", 0, 1)
        top_p = c.number(body, "top_p", "#", 0, 1)
        max_tokens = c.integer(body, "max_tokens", "#", 1, 32768)
        stop = c.strings(body, "stop", "#")
        if len(stop) > 10:
            c.fail("#/stop", f"expected maximum item count: 10, found: {len(stop)}")
        c.done()
        return ChatRequest(
            prompt=prompt or "",
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
        )

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        reason = "length" if answer.stop_reason == "length" else "stop"
        return {"choices": [{"text": answer.text, "stop_reason": reason}]}


def _unit(value: Any) -> bool:
    """Absent, or a number from 0 to 1."""
    return value is None or (type(value) in (int, float) and 0 <= value <= 1)


# The bodies the quick methods accept, as msgspec types (the quick_json methods; see
# AnthropicMessages for the pattern): unknown members are refused, and a member whose null
# quick refuses has no None. gc=False: decoded JSON holds no cycles.
_Unit = Annotated[float, msgspec.Meta(ge=0, le=1)] | None
#: orjson reads an integer beyond 64 bits as a float (which quick refuses), msgspec as an int:
#: hence an upper bound (the largest msgspec takes; bigger ones go to quick).
_Count = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


class _TitanConfig(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    temperature: _Unit = None
    topP: _Unit = None
    maxTokenCount: Annotated[int, msgspec.Meta(ge=0, le=8192)] | None = None
    stopSequences: tuple[str, ...] | None = None


class _TitanBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    inputText: str
    textGenerationConfig: _TitanConfig | None = None


class _LlamaBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    prompt: str
    temperature: _Unit = None
    top_p: _Unit = None
    # No None: quick refuses a null max_gen_len (only an absent one means 512).
    max_gen_len: Annotated[int, msgspec.Meta(ge=1, le=2048)] = 512


class _MistralBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    prompt: str
    max_tokens: _Count | None = None
    stop: tuple[str, ...] | None = None
    temperature: _Unit = None
    top_p: _Unit = None
    top_k: Annotated[int, msgspec.Meta(ge=1, le=200)] | None = None


class _DeepSeekBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    prompt: str
    temperature: _Unit = None
    top_p: _Unit = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=32768)] | None = None
    stop: Annotated[tuple[str, ...], msgspec.Meta(max_length=10)] | None = None


_read_titan = msgspec.json.Decoder(_TitanBody).decode
_read_llama = msgspec.json.Decoder(_LlamaBody).decode
_read_mistral = msgspec.json.Decoder(_MistralBody).decode
_read_deepseek = msgspec.json.Decoder(_DeepSeekBody).decode


def _completion(
    read: Callable[[JsonBytes], _MistralBody | _DeepSeekBody], body: JsonBytes
) -> Quick | None:
    """quick_json for a ``prompt``, ``max_tokens``, ``stop`` body (Mistral, DeepSeek)."""
    try:
        plain = read(body)
    except DECODE_ERRORS:
        return None
    return plain.prompt, 0, plain.max_tokens, plain.stop or ()
