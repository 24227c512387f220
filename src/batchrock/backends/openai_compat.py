"""OpenAI-compatible HTTP backend: vLLM, Ollama, llama.cpp server, SGLang, TGI, LiteLLM.

Each record's Bedrock body is parsed by its family, sent as a chat completion (message
families: Claude, Nova, Converse), a completion (prompt families: Llama, Mistral, Titan Text,
whose prompt already carries the chat template) or an embedding request (Titan Embeddings),
and the server's answer is rendered back into the family's Bedrock response body with token
usage and stop reason.

A record that asks for something this route cannot serve (tools, S3 media, images or top_k
when the route lists them as ``unsupported``, a vector size the model does not produce) gets a
400 record error and is not sent: nothing is silently dropped.

Failures map to record errors the retry layer understands: 429 and 5xx answers, timeouts,
dropped connections and malformed answers are retryable; other 4xx answers are final.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, overload

import orjson

from batchrock.backends import translate
from batchrock.backends.base import ModelRequest, ModelResult, RecordError
from batchrock.backends.families import BodyError, ChatFamily, EmbedFamily, family_for
from batchrock.backends.families.openai_batch import endpoint_of
from batchrock.backends.http11 import (
    ConnectError,
    ConnectTimeout,
    HttpClient,
    HttpError,
    HttpResponse,
    HttpTransport,
    ReadTimeout,
)
from batchrock.backends.neutral import (
    ChatAnswer,
    ChatRequest,
    EmbedAnswer,
    EmbedRequest,
    StopReason,
    TextPart,
    ToolCall,
    estimate_tokens,
    non_text_input,
    request_text,
)
from batchrock.backends.replicas import UNREACHABLE
from batchrock.backends.routing import ConfigError, Route, reject_unknown
from batchrock.settings import Settings

log = logging.getLogger("batchrock.backends.openai")

#: Features a route may declare its server cannot serve (``unsupported = [...]``).
FEATURES = frozenset({"images", "top_k", "stop"})
_KNOWN = {
    "base_url",
    "api_key_env",
    "served_model",
    "timeout_s",
    "connect_timeout_s",
    "prompt_api",
    "unsupported",
    "send_dimensions",
    "headers",
    "thinking",
}
#: How a route passes extended thinking on (the route's ``thinking``): not at all (a record
#: asking for it is refused), as OpenAI's ``reasoning_effort``, or as the chat-template switch
#: Qwen3-style models take on vLLM and SGLang (``chat_template_kwargs.enable_thinking``).
THINKING_MODES = ("none", "reasoning_effort", "chat_template_kwargs")


@dataclass(frozen=True, slots=True)
class OpenAIOptions:
    base_url: str
    api_key: str | None = None
    #: The model name the server knows; unset: the job's modelId as given.
    served_model: str | None = None
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    #: How prompt families are sent: ``completions`` (raw prompt, the default) or ``chat``.
    prompt_api: str = "completions"
    unsupported: frozenset[str] = frozenset()
    #: Pass Titan's ``dimensions`` on as the OpenAI ``dimensions`` parameter.
    send_dimensions: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    #: How thinking requests are sent (:data:`THINKING_MODES`).
    thinking: str = "none"
    #: Idle connections kept alive (the route's max_concurrency when it has one).
    max_connections: int = 256


class UnservableError(Exception):
    """The record needs a feature this route cannot serve (a 400 record error)."""


class OpenAIBackend:
    """Answers records through an OpenAI-compatible server."""

    def __init__(self, options: OpenAIOptions, transport: HttpTransport | None = None):
        self.options = options
        headers = {"Content-Type": "application/json", **dict(options.headers)}
        if options.api_key:
            headers["Authorization"] = f"Bearer {options.api_key}"
        # One lean HTTP/1.1 client per backend (http11.py): a request is one write of a head
        # built once per path and the body, its answer one parse in C.
        self._transport = transport or HttpClient(
            options.base_url,
            headers=headers,
            timeout_s=options.timeout_s,
            connect_timeout_s=options.connect_timeout_s,
            max_idle=options.max_connections,
        )

    def describe(self) -> str:
        served = f", served model {self.options.served_model}" if self.options.served_model else ""
        return f"OpenAI-compatible server at {self.options.base_url}{served}"

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def invoke(self, request: ModelRequest) -> ModelResult:
        endpoint = endpoint_of(request.invocation_type)
        if endpoint is not None:
            return await self._as_is(endpoint, request)
        family = family_for(request.model_id, request.invocation_type, request.body)
        if family is None:
            return _error(
                400,
                f"Cannot tell which request format model '{request.model_id}' uses: the model "
                "id is not a known Bedrock model and the modelInput matches no known format.",
            )
        try:
            parsed = family.parse(request.body)
        except BodyError as exc:
            return _error(exc.code, exc.message)
        model = self.options.served_model or request.model_id
        try:
            if isinstance(family, EmbedFamily):
                assert isinstance(parsed, EmbedRequest)
                embedding = await self._embed(parsed, model)
                return ModelResult(
                    output=family.render(embedding, parsed, request.model_id),
                    input_tokens=embedding.input_tokens,
                )
            assert isinstance(family, ChatFamily) and isinstance(parsed, ChatRequest)
            # The request is built, sent and read here rather than in a coroutine of its
            # own: every level of coroutines costs on each of the record's suspensions.
            path, payload = self.chat_payload(parsed, model)
            started = time.perf_counter()
            data = await self._post(path, payload)
            latency_ms = int((time.perf_counter() - started) * 1000)
            answer = self._chat_answer(path, data, parsed, latency_ms)
        except UnservableError as exc:
            return _error(400, str(exc))
        except _Failure as exc:
            return ModelResult(error=exc.error, info=exc.info)
        except Exception as exc:  # a backend never raises for a record: see base.py
            return _crashed(exc, request)
        return ModelResult(
            output=family.render(answer, parsed, request.model_id),
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
        )

    async def _as_is(self, endpoint: str, request: ModelRequest) -> ModelResult:
        """A line of an OpenAI batch: its body is already this server's request, so it goes
        as it is (only ``model`` becomes the route's ``served_model``, when it has one), and
        the server's answer is the result."""
        body = request.body
        if self.options.served_model:
            body = {**body, "model": self.options.served_model}
        try:
            data = await self._post(endpoint.removeprefix("/v1/"), body)
        except _Failure as exc:
            return ModelResult(error=exc.error, info=exc.info)
        except Exception as exc:  # a backend never raises for a record: see base.py
            return _crashed(exc, request)
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        tokens_in = usage.get("prompt_tokens", usage.get("input_tokens", 0))
        tokens_out = usage.get("completion_tokens", usage.get("output_tokens", 0))
        return ModelResult(
            output=data,
            input_tokens=tokens_in if isinstance(tokens_in, int) else 0,
            output_tokens=tokens_out if isinstance(tokens_out, int) else 0,
        )

    # --- chat and completions -----------------------------------------------------------

    def chat_payload(self, request: ChatRequest, model: str) -> tuple[str, dict[str, Any]]:
        """The endpoint and JSON body for a chat request (public for tests and docs)."""
        plain = self._plain_chat_payload(request, model)
        if plain is not None:
            return "chat/completions", plain
        return self.checked_chat_payload(request, model)

    def checked_chat_payload(self, request: ChatRequest, model: str) -> tuple[str, dict[str, Any]]:
        """:meth:`chat_payload` without the plain-request shortcut: every feature checked
        against the route (tests hold the shortcut to this)."""
        self._check_features(request)
        payload: dict[str, Any] = {"model": model}
        if request.prompt is not None and self.options.prompt_api == "completions":
            path = "completions"
            payload["prompt"] = request.prompt
        else:
            path = "chat/completions"
            payload["messages"] = self._messages(request)
        _add_sampling(payload, request)
        if path == "chat/completions":
            payload.update(translate.request_fields(request, self.options.thinking))
        return path, payload

    def _plain_chat_payload(self, request: ChatRequest, model: str) -> dict[str, Any] | None:
        """:meth:`chat_payload`'s body for a text-only conversation with none of the
        features a route may lack or that need more members (most batch records), built in
        one pass; ``None`` for any other request."""
        if (
            request.prompt is not None
            or request.extras
            or request.tools
            or request.tool_choice is not None
            or request.output_schema is not None
            or request.thinking is not None
            or request.effort is not None
            or (request.stop and "stop" in self.options.unsupported)
            or (request.top_k is not None and "top_k" in self.options.unsupported)
        ):
            return None
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        for message in request.messages:
            parts = message.parts
            if len(parts) == 1 and type(parts[0]) is TextPart:
                content = parts[0].text
            elif all(type(p) is TextPart for p in parts):
                content = "".join(p.text for p in parts if type(p) is TextPart)
            else:
                return None
            messages.append({"role": message.role, "content": content})
        payload: dict[str, Any] = {"model": model, "messages": messages}
        _add_sampling(payload, request)
        return payload

    def _check_features(self, request: ChatRequest) -> None:
        needs = list(request.extras)
        needs.extend(translate.unservable(request, self.options.thinking))
        unsupported = self.options.unsupported
        if "images" in unsupported and request.has_images:
            needs.append("images")
        if "top_k" in unsupported and request.top_k is not None:
            needs.append("top_k")
        if "stop" in unsupported and request.stop:
            needs.append("stop sequences")
        if needs:
            raise UnservableError(
                f"The model server for this route cannot serve {', '.join(needs)} "
                f"({self.options.base_url}); the record was not sent. Remove "
                f"{'it' if len(needs) == 1 else 'them'} from the modelInput or route the model "
                "to a backend that supports it."
            )

    @staticmethod
    def _messages(request: ChatRequest) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        if request.prompt is not None:
            messages.append({"role": "user", "content": request.prompt})
            return messages
        for message in request.messages:
            parts = message.parts
            if all(type(p) is TextPart for p in parts):
                content: Any = "".join(p.text for p in parts if type(p) is TextPart)
                messages.append({"role": message.role, "content": content})
            else:
                messages.extend(translate.message(message))
        return messages

    def _chat_answer(
        self, path: str, data: dict[str, Any], request: ChatRequest, latency_ms: int
    ) -> ChatAnswer:
        """The answer in a chat or completions response ``data`` from ``path``; raises
        :class:`_Failure` for a malformed one."""
        try:
            choice = data["choices"][0]
            calls: tuple[ToolCall, ...] = ()
            thinking = None
            if path == "completions":
                text = choice["text"]
            else:
                reply = choice["message"]
                text = reply.get("content") or ""
                calls = translate.tool_calls(reply)
                thinking = translate.reasoning(reply)
            if not isinstance(text, str):
                raise TypeError("content is not a string")
            finish = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise _malformed(f"no choices[0] text ({exc})") from exc
        reason, stop_sequence = _stop_reason(finish, choice.get("stop_reason"), request)
        if calls and reason != "length":
            reason, stop_sequence = "tool", None
        usage = _usage(data)
        input_tokens = _count(usage, "prompt_tokens", None)
        if input_tokens is None:  # the server did not say: estimated from the text
            input_tokens = estimate_tokens(request_text(request))
        output_tokens = _count(usage, "completion_tokens", text)
        return ChatAnswer(
            text,
            reason,
            input_tokens,
            output_tokens,
            stop_sequence,
            latency_ms,
            tool_calls=calls,
            thinking=thinking,
        )

    # --- embeddings ---------------------------------------------------------------------

    async def _embed(self, request: EmbedRequest, model: str) -> EmbedAnswer:
        unservable = non_text_input(request)
        if unservable is not None:
            raise UnservableError(
                f"The model server for this route cannot embed {unservable} through "
                "/embeddings; the record was not sent."
            )
        payload: dict[str, Any] = {
            "model": model,
            "input": request.text,
            "encoding_format": "float",
        }
        if self.options.send_dimensions and request.dimensions:
            payload["dimensions"] = request.dimensions
        data = await self._post("embeddings", payload)
        try:
            vector = data["data"][0]["embedding"]
            if not isinstance(vector, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in vector
            ):
                raise TypeError("embedding is not a list of numbers")
        except (KeyError, IndexError, TypeError) as exc:
            raise _malformed(f"no data[0].embedding ({exc})") from exc
        if request.dimensions and len(vector) != request.dimensions:
            raise UnservableError(
                f"The record asks for {request.dimensions} dimensions but the model behind this "
                f"route returns {len(vector)}-dimensional vectors. Leave 'dimensions' out to get "
                "the model's own size, or set send_dimensions = true for a model that can "
                "shorten its vectors."
            )
        floats = [float(v) for v in vector]
        if request.normalize:
            norm = math.sqrt(math.fsum(v * v for v in floats)) or 1.0
            floats = [v / norm for v in floats]
        usage = _usage(data)
        return EmbedAnswer(floats, _count(usage, "prompt_tokens", request.text))

    # --- HTTP ---------------------------------------------------------------------------

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._transport.post(path, orjson.dumps(payload))
        except (ReadTimeout, ConnectTimeout) as exc:
            raise _Failure(
                RecordError(
                    408,
                    f"The model server did not answer in time ({type(exc).__name__}, "
                    f"timeout {self.options.timeout_s:g} s).",
                    retryable=True,
                ),
                _unreachable(exc),
            ) from exc
        except HttpError as exc:
            raise _Failure(
                RecordError(
                    503,
                    f"Connection to the model server failed: {type(exc).__name__}: {exc}",
                    retryable=True,
                ),
                _unreachable(exc),
            ) from exc
        if response.status >= 400:
            raise _http_failure(response)
        try:
            data = orjson.loads(response.body)
        except orjson.JSONDecodeError as exc:
            raise _malformed("the body is not JSON") from exc
        if not isinstance(data, dict):
            raise _malformed("the body is not a JSON object")
        return data


class _Failure(Exception):
    def __init__(self, error: RecordError, info: dict[str, Any] | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.info = info or {}


def _unreachable(exc: HttpError) -> dict[str, Any]:
    """Nothing answered at the address (refused, or no connection in time): a replica set
    takes such a server out at once (replicas.py); a dropped or slow answer is only a strike."""
    if isinstance(exc, ConnectError):  # ConnectTimeout is one
        return {UNREACHABLE: True}
    return {}


def _malformed(detail: str) -> _Failure:
    return _Failure(
        RecordError(500, f"The model server sent a malformed response: {detail}.", retryable=True)
    )


def _http_failure(response: HttpResponse) -> _Failure:
    status = response.status
    detail = _server_message(response)
    info: dict[str, Any] = {}
    retry_after = response.header("retry-after")
    if retry_after:
        try:
            info["retry_after"] = float(retry_after)
        except ValueError:
            pass
    if status == 429:
        message = f"Too many requests, please wait before trying again. ({detail})"
        return _Failure(RecordError(429, message, retryable=True), info)
    retryable = status >= 500 or status == 408
    return _Failure(RecordError(status, f"Model server error {status}: {detail}", retryable), info)


def _server_message(response: HttpResponse) -> str:
    """The error text OpenAI-style servers put in ``{"error": {"message": ...}}``."""
    try:
        data = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        text = response.text.strip()
        return text[:300] or response.reason
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:300]
        if isinstance(error, str):
            return error[:300]
        if isinstance(data.get("message"), str):
            return str(data["message"])[:300]
        if isinstance(data.get("detail"), str):
            return str(data["detail"])[:300]
    return response.text[:300]


def _add_sampling(payload: dict[str, Any], request: ChatRequest) -> None:
    """The sampling members of a chat or completions payload (always in this order)."""
    if request.max_tokens is not None:
        payload["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    if request.top_k is not None:
        payload["top_k"] = request.top_k
    if request.stop:
        payload["stop"] = list(request.stop)


def _stop_reason(finish: Any, matched: Any, request: ChatRequest) -> tuple[StopReason, str | None]:
    if finish == "length":
        return "length", None
    if isinstance(matched, str) and matched in request.stop:
        # vLLM and SGLang say which stop string ended generation. Servers that do not cannot
        # be told apart from a natural end, so those answers report end_turn.
        return "stop", matched
    return "end", None


def _usage(data: dict[str, Any]) -> dict[str, Any]:
    usage = data.get("usage")
    return usage if isinstance(usage, dict) else {}


@overload
def _count(usage: dict[str, Any], key: str, text: str) -> int: ...
@overload
def _count(usage: dict[str, Any], key: str, text: None) -> int | None: ...
def _count(usage: dict[str, Any], key: str, text: str | None) -> int | None:
    """The server's count under ``key``, else an estimate from ``text`` (``None`` without
    one: the caller estimates, when building the text costs)."""
    value = usage.get(key)
    if type(value) is int and value >= 0:
        return value
    return None if text is None else estimate_tokens(text)


def _crashed(exc: Exception, request: ModelRequest) -> ModelResult:
    log.exception("OpenAI-compatible backend failed on record %s", request.record_id)
    return ModelResult(
        error=RecordError(
            500, f"Calling the model server failed: {type(exc).__name__}", retryable=True
        )
    )


def _error(code: int, message: str) -> ModelResult:
    return ModelResult(error=RecordError(code, message))


def from_route(route: Route, settings: Settings) -> OpenAIBackend:
    """Build the backend from a ``backend = "openai"`` route."""
    reject_unknown(route, _KNOWN)
    options = route.options
    where = f"route {route.index + 1} (openai)"
    base_url = options.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: 'base_url' must be an http(s) URL, e.g. http://host:8000/v1")
    api_key = None
    key_env = options.get("api_key_env")
    if key_env is not None:
        if not isinstance(key_env, str):
            raise ConfigError(f"{where}: 'api_key_env' must name an environment variable")
        api_key = os.environ.get(key_env)
        if api_key is None:
            raise ConfigError(f"{where}: environment variable {key_env} (api_key_env) is not set")
    prompt_api = options.get("prompt_api", "completions")
    if prompt_api not in ("completions", "chat"):
        raise ConfigError(f"{where}: 'prompt_api' must be 'completions' or 'chat'")
    unsupported = options.get("unsupported", [])
    if not isinstance(unsupported, list) or not set(unsupported) <= FEATURES:
        known = ", ".join(sorted(FEATURES))
        raise ConfigError(f"{where}: 'unsupported' must be a list of: {known}")
    headers = options.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{where}: 'headers' must be a table of strings")
    thinking = options.get("thinking", "none")
    if thinking not in THINKING_MODES:
        raise ConfigError(f"{where}: 'thinking' must be one of: {', '.join(THINKING_MODES)}")
    served = options.get("served_model")
    if served is not None and not isinstance(served, str):
        raise ConfigError(f"{where}: 'served_model' must be a string")
    try:
        timeout_s = float(options.get("timeout_s", 120.0))
        connect_timeout_s = float(options.get("connect_timeout_s", 10.0))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: timeouts must be numbers ({exc})") from exc
    try:
        return OpenAIBackend(
            OpenAIOptions(
                base_url=base_url,
                api_key=api_key,
                served_model=served,
                timeout_s=timeout_s,
                connect_timeout_s=connect_timeout_s,
                prompt_api=prompt_api,
                unsupported=frozenset(unsupported),
                send_dimensions=bool(options.get("send_dimensions", False)),
                headers=tuple(headers.items()),
                thinking=thinking,
                max_connections=route.max_concurrency or 256,
            )
        )
    except ValueError as exc:  # a header name or value HTTP cannot carry
        raise ConfigError(f"{where}: {exc}") from exc
