"""The Converse shape (any model, when the job's ``modelInvocationType`` is ``Converse``).

A record's ``modelInput`` is a Converse request without ``modelId`` (the job's). Its members
are read from botocore's ``bedrock-runtime`` service model (``ConverseRequest``), so a member
AWS adds is known as soon as botocore is updated; the enums of the members batchrock reads
(``serviceTier.type``, ``performanceConfig.latency``, ``outputConfig.textFormat.type`` ...)
come from there too.

What batch does not take is refused per record, with errorCode 400: ``toolConfig`` (AWS:
"Records that include toolConfig fail with a 400 error"; use an InvokeModel job with the
model's native tool format), and with it ``toolUse`` / ``toolResult`` blocks, which Converse
refuses without a ``toolConfig``.

Structured output is ``outputConfig.textFormat`` (``{"type": "json_schema", "structure":
{"jsonSchema": {"schema": "<the schema as a JSON string>", "name", "description"}}}``);
Claude's extended thinking is ``additionalModelRequestFields.thinking`` and comes back as a
``reasoningContent`` block. ``serviceTier`` and ``performanceConfig`` are echoed in the
response, as Converse does.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from botocore.loaders import Loader

from batchrock.backends.base import JsonBytes
from batchrock.backends.families.anthropic import check_budget
from batchrock.backends.families.base import Quick
from batchrock.backends.families.nova import (
    _MessagesShape,
    _quick,
    _quick_json,
    _read_converse,
    _top_k,
)
from batchrock.backends.families.schema import BodyError, Checker
from batchrock.backends.neutral import (
    ChatAnswer,
    ChatRequest,
    MediaRef,
    OutputSchema,
    Thinking,
    estimate_tokens,
)


def _converse_model() -> dict[str, Any]:
    """The shapes of botocore's bedrock-runtime model (read once, at import: ~20 ms)."""
    shapes: dict[str, Any] = Loader().load_service_model("bedrock-runtime", "service-2")["shapes"]
    return shapes


_SHAPES = _converse_model()


def _members(shape: str) -> frozenset[str]:
    return frozenset(_SHAPES[shape]["members"])


def _enum(shape: str, member: str) -> tuple[str, ...]:
    target = _SHAPES[shape]["members"][member]["shape"]
    return tuple(_SHAPES[target].get("enum", ()))


#: ConverseRequest's members, less the model id (a batch record's model is the job's).
_TOP = _members("ConverseRequest") - {"modelId"}
_CONFIG = _members("InferenceConfiguration")
_OUTPUT_CONFIG = _members("OutputConfig")
_TEXT_FORMAT = _members("OutputFormat")
_STRUCTURE = _members("OutputFormatStructure")
_JSON_SCHEMA = _members("JsonSchemaDefinition")
_SERVICE_TIER = _members("ServiceTier")
_PERFORMANCE = _members("PerformanceConfiguration")
_GUARDRAIL = _members("GuardrailConfiguration")
_TIERS = _enum("ServiceTier", "type")
_LATENCIES = _enum("PerformanceConfiguration", "latency")
_FORMAT_TYPES = _enum("OutputFormat", "type")
_TRACES = _enum("GuardrailConfiguration", "trace")
#: Members that change the answer and have no neutral form: a backend that cannot serve them
#: says so (the built-in model ignores them).
_EXTRAS = ("guardrailConfig", "promptVariables", "additionalModelResponseFieldPaths")
#: ``additionalModelRequestFields`` members read into the neutral request.
_READ_FIELDS = frozenset({"top_k", "topK", "thinking"})
_STOP = {"end": "end_turn", "length": "max_tokens", "stop": "stop_sequence", "tool": "tool_use"}
_TOOL_CONFIG_REFUSED = (
    "Tool use (toolConfig) is not supported for batch inference jobs whose "
    "modelInvocationType is Converse. Remove toolConfig from the record, or use an "
    "InvokeModel job with the model's native tool format."
)


class Converse(_MessagesShape):
    name = "converse"
    #: The response echoes the request's serviceTier and performanceConfig.
    render_reads_request = True

    _top = _TOP
    _config = _CONFIG

    def quick(self, body: Any) -> Quick | None:
        return _quick(body, self._top)

    def quick_json(self, body: JsonBytes) -> Quick | None:
        return _quick_json(_read_converse, body)

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        if type(body) is dict and "toolConfig" in body:
            raise BodyError(_TOOL_CONFIG_REFUSED)
        if type(body) is dict and "modelId" in body:
            raise BodyError(
                "modelId is not a member of a batch record's modelInput: the model is the "
                "job's modelId. Remove modelId from the record."
            )
        c = Checker("converse")
        c.top(body, ("messages",), self._top)
        extras: set[str] = set()
        media: list[MediaRef] = []
        system = self._system(c, body)
        messages = self._messages(c, body, extras, media)
        params: dict[str, Any] = {"stop": ()}
        config = body.get("inferenceConfig")
        if config is not None and c.obj(config, "inferenceConfig", (), self._config):
            params = self._params(c, config, "inferenceConfig")
        thinking = None
        additional = body.get("additionalModelRequestFields")
        if additional is not None and c.obj(additional, "additionalModelRequestFields"):
            params["top_k"] = _top_k(additional)
            thinking = _thinking(additional.get("thinking"))
            for key, value in additional.items():
                nested = (
                    key == "inferenceConfig" and type(value) is dict and value.keys() == {"topK"}
                )
                # A thinking member that is not Claude's shape is passed on, not understood.
                unread = key == "thinking" and thinking is None and not _disabled(value)
                if unread or (key not in _READ_FIELDS and not nested):
                    extras.add(f"additionalModelRequestFields.{key}")
        schema, effort = _output_config(c, body.get("outputConfig"))
        tier = _service_tier(c, body.get("serviceTier"))
        latency = _performance(c, body.get("performanceConfig"))
        _guardrail(c, body.get("guardrailConfig"))
        c.string(body, "projectIdentifier", "", min_length=1)
        extras.update(key for key in _EXTRAS if key in body)
        c.done()
        if "toolUse" in extras or "toolResult" in extras:
            raise BodyError(
                "The toolConfig field must be defined when using toolUse and toolResult "
                "content blocks."
            )
        if messages and messages[0].role != "user":
            raise BodyError(
                "A conversation must start with a user message. Try again with a conversation "
                "that starts with a user message."
            )
        for before, after in itertools.pairwise(messages):
            if before.role == after.role:
                raise BodyError(
                    "A conversation must alternate between user and assistant roles. Make sure "
                    "the conversation alternates between user and assistant roles and try again."
                )
        for i, raw in enumerate(body["messages"]):
            for j, block in enumerate(raw["content"]):
                if "text" in block and not block["text"].strip():
                    raise BodyError(
                        f"The text field in the ContentBlock object at messages.{i}.content.{j} "
                        "is blank. Add text to the text field, and try again."
                    )
        check_budget(thinking, params.get("max_tokens"))
        return ChatRequest(
            messages=tuple(messages),
            system=system,
            extras=tuple(sorted(extras)),
            media=tuple(media),
            output_schema=schema,
            thinking=thinking,
            effort=effort,
            service_tier=tier,
            latency=latency,
            cache_prefix_tokens=_cache_prefix(body),
            **params,
        )

    def render(self, answer: ChatAnswer, request: ChatRequest, model_id: str) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if answer.thinking is not None:
            reasoning: dict[str, Any] = {"text": answer.thinking}
            if answer.thinking_signature is not None:
                reasoning["signature"] = answer.thinking_signature
            content.append({"reasoningContent": {"reasoningText": reasoning}})
        if answer.text or not answer.tool_calls:
            content.append({"text": answer.text})
        for call in answer.tool_calls:
            content.append(
                {"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.input}}
            )
        usage: dict[str, Any] = {
            "inputTokens": answer.input_tokens,
            "outputTokens": answer.output_tokens,
            "totalTokens": answer.input_tokens
            + answer.output_tokens
            + answer.cache_read_tokens
            + answer.cache_write_tokens,
        }
        if answer.cache_read_tokens or answer.cache_write_tokens:
            usage["cacheReadInputTokens"] = answer.cache_read_tokens
            usage["cacheWriteInputTokens"] = answer.cache_write_tokens
        out: dict[str, Any] = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": _STOP[answer.stop_reason],
            "usage": usage,
            "metrics": {"latencyMs": answer.latency_ms},
        }
        if request.latency is not None:
            out["performanceConfig"] = {"latency": request.latency}
        if request.service_tier is not None:
            out["serviceTier"] = {"type": request.service_tier}
        return out


def _output_config(c: Checker, raw: Any) -> tuple[OutputSchema | None, str | None]:
    """``outputConfig``: ``textFormat`` (structured output) and ``effort``."""
    if raw is None or not c.obj(raw, "outputConfig", (), _OUTPUT_CONFIG):
        return None, None
    effort = c.string(raw, "effort", "outputConfig")
    text_format = raw.get("textFormat")
    path = "outputConfig.textFormat"
    if text_format is None or not c.obj(text_format, path, ("type", "structure"), _TEXT_FORMAT):
        return None, effort
    c.string(text_format, "type", path, enum=_FORMAT_TYPES)
    structure = text_format.get("structure")
    where = f"{path}.structure"
    if not c.obj(structure, where, ("jsonSchema",), _STRUCTURE):
        return None, effort
    definition = structure["jsonSchema"]
    where = f"{where}.jsonSchema"
    if not c.obj(definition, where, ("schema",), _JSON_SCHEMA):
        return None, effort
    text = c.string(definition, "schema", where)
    name = c.string(definition, "name", where)
    description = c.string(definition, "description", where)
    if text is None:
        return None, effort
    try:
        schema = orjson.loads(text)
    except orjson.JSONDecodeError:
        schema = None
    if type(schema) is not dict:
        # The schema travels as a string; one that is not a JSON object cannot constrain.
        raise BodyError(
            f"The JSON schema in {where}.schema is not valid: it must be a JSON object "
            "serialized as a string. Fix the schema and try again."
        )
    return OutputSchema(schema, name, description), effort


def _service_tier(c: Checker, raw: Any) -> str | None:
    if raw is None or not c.obj(raw, "serviceTier", ("type",), _SERVICE_TIER):
        return None
    return c.string(raw, "type", "serviceTier", enum=_TIERS)


def _performance(c: Checker, raw: Any) -> str | None:
    if raw is None or not c.obj(raw, "performanceConfig", (), _PERFORMANCE):
        return None
    return c.string(raw, "latency", "performanceConfig", enum=_LATENCIES)


def _guardrail(c: Checker, raw: Any) -> None:
    if raw is not None and c.obj(raw, "guardrailConfig", (), _GUARDRAIL):
        c.string(raw, "guardrailIdentifier", "guardrailConfig")
        c.string(raw, "guardrailVersion", "guardrailConfig")
        c.string(raw, "trace", "guardrailConfig", enum=_TRACES)


def _thinking(raw: Any) -> Thinking | None:
    """Claude's ``thinking`` member, passed through ``additionalModelRequestFields``."""
    if type(raw) is not dict:
        return None
    kind = raw.get("type")
    budget = raw.get("budget_tokens")
    if kind == "enabled":
        return Thinking("enabled", budget if type(budget) is int else 0)
    if kind == "adaptive":
        return Thinking("adaptive")
    return None


def _disabled(value: Any) -> bool:
    return type(value) is dict and value.get("type") == "disabled"


def _cache_prefix(body: dict[str, Any]) -> int:
    """Tokens before the last ``cachePoint`` block (system, then messages); 0 when none."""
    running = prefix = 0
    for block in body.get("system") or ():
        if "cachePoint" in block:
            prefix = running
        elif type(block.get("text")) is str:
            running += estimate_tokens(block["text"])
    for message in body["messages"]:
        for block in message["content"]:
            if "cachePoint" in block:
                prefix = running
            elif type(block.get("text")) is str:
                running += estimate_tokens(block["text"])
            elif "image" in block:
                running += 1200
    return prefix
