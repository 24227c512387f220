"""The built-in model's fast path must answer exactly as its regular path.

For an immediate model the engine hands records over as JSON (``raw_answerer``): the family
reads the body with a typed decoder (``quick_json``) and renders the response with a
template (``json_renderer``). Each shortcut may decline a record (the regular path then
answers it) but must never accept one the regular path treats differently, nor answer it
with different bytes. These tests hold every family with a typed reader to that over many
bodies: well-formed ones, every member of them replaced by values of every JSON type or
removed, extra members, and byte sequences no encoder writes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
import pytest

from batchrock.backends.base import ModelRequest
from batchrock.backends.builtin import BuiltinModel
from batchrock.backends.families import (
    ANTHROPIC,
    CONVERSE,
    DEEPSEEK,
    FAMILIES,
    LLAMA,
    MISTRAL,
    NOVA,
    TITAN_TEXT,
    ChatFamily,
)
from batchrock.backends.families.anthropic import AnthropicMessages
from batchrock.backends.families.schema import BodyError
from batchrock.backends.neutral import ChatAnswer, ChatRequest, request_text

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
#: The smallest positive integer orjson reads as a float (msgspec reads it as an int).
BEYOND_64_BITS = b"18446744073709551616"


@dataclass(frozen=True)
class Fast:
    """A family with a typed reader, the job it is reached by, and plain bodies of it."""

    family: ChatFamily
    model_id: str
    invocation_type: str
    plain: list[dict[str, Any]]
    #: Members the typed reader must not know, added to every object of a plain body.
    extras: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        return f"{self.family.name}-{self.invocation_type}"


def _nova_bodies(version: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**version, "messages": [{"role": "user", "content": [{"text": "Tell me about item 7."}]}]},
        {
            **version,
            "system": [{"text": "You are terse."}, {"text": " "}],
            "messages": [
                {"role": "user", "content": [{"text": "Why é, ü and 😀?"}]},
                {"role": "assistant", "content": [{"text": "Because"}]},
                {"role": "user", "content": [{"text": 'quote " and \\'}, {"text": "slash"}]},
            ],
            "inferenceConfig": {
                "maxTokens": 3,
                "temperature": 0.5,
                "topP": 1,
                "stopSequences": ["answer", "Token"],
            },
        },
        {
            "system": [],
            "messages": [{"role": "user", "content": [{"text": "a"}]}],
            "inferenceConfig": {"maxTokens": 4096, "stopSequences": ["the"], "temperature": 0},
        },
    ]


FAST = [
    Fast(
        ANTHROPIC,
        CLAUDE,
        "InvokeModel",
        [
            {
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "Tell me about item 7."}],
            },
            {
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 3,
                "system": "You are terse.",
                "temperature": 0.5,
                "top_p": 1,
                "top_k": 0,
                "stop_sequences": ["answer", "Token"],
                "messages": [
                    {"role": "user", "content": "Why é, ü and 😀?"},
                    {"role": "assistant", "content": [{"type": "text", "text": "Because"}]},
                    {"role": "user", "content": [{"type": "text", "text": 'quote " and \\ slash'}]},
                ],
            },
            {
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 4096,
                "stop_sequences": ["the"],
                "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
            },
        ],
        ("metadata", "tools", "thinking", "anthropic_beta", "cache_control", "citations"),
    ),
    Fast(
        TITAN_TEXT,
        "amazon.titan-text-express-v1",
        "InvokeModel",
        [
            {"inputText": "Summarise item 7."},
            {
                "inputText": "User: Why é, ü and 😀?\nBot:",
                "textGenerationConfig": {
                    "maxTokenCount": 3,
                    "temperature": 0.5,
                    "topP": 1,
                    "stopSequences": ["User:", "the"],
                },
            },
            {"inputText": "", "textGenerationConfig": {"maxTokenCount": 0, "temperature": 0}},
            {
                "inputText": 'quote " and \\ slash',
                "textGenerationConfig": {"maxTokenCount": 8192, "stopSequences": []},
            },
        ],
    ),
    Fast(
        LLAMA,
        "meta.llama3-8b-instruct-v1:0",
        "InvokeModel",
        [
            {
                "prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
                "Tell me about item 7.<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
            },
            {"prompt": "Why é, ü and 😀?", "temperature": 0.5, "top_p": 1, "max_gen_len": 3},
            {"prompt": 'quote " and \\ slash', "max_gen_len": 2048, "temperature": 0},
        ],
        ("images",),
    ),
    Fast(
        MISTRAL,
        "mistral.mistral-7b-instruct-v0:2",
        "InvokeModel",
        [
            {"prompt": "<s>[INST] Tell me about item 7. [/INST]", "max_tokens": 64},
            {
                "prompt": "<s>[INST] Why é, ü and 😀? [/INST]",
                "max_tokens": 3,
                "stop": ["the", "Token"],
                "temperature": 0.5,
                "top_p": 1,
                "top_k": 200,
            },
            {"prompt": 'quote " and \\ slash', "top_k": 1, "stop": []},
        ],
        ("messages", "tools"),
    ),
    Fast(
        DEEPSEEK,
        "deepseek.r1-v1:0",
        "InvokeModel",
        [
            {"prompt": "Tell me about item 7.", "max_tokens": 32768},
            {
                "prompt": "<｜begin▁of▁sentence｜><｜User｜>Why é, ü and 😀?<｜Assistant｜>",
                "max_tokens": 3,
                "stop": ["the", "a", "e", "i", "o", "u", "y", "é", "😀", "\n"],
                "temperature": 0.5,
                "top_p": 1,
            },
            {"prompt": 'quote " and \\ slash', "stop": ["the"], "temperature": 0},
        ],
    ),
    Fast(
        NOVA,
        "amazon.nova-lite-v1:0",
        "InvokeModel",
        _nova_bodies({"schemaVersion": "messages-v1"}),
        ("toolConfig", "topK", "top_k", "top_p", "max_new_tokens", "reasoningConfig", "image"),
    ),
    Fast(
        CONVERSE,
        "meta.llama3-8b-instruct-v1:0",
        "Converse",
        _nova_bodies({}),
        (
            "schemaVersion",
            "toolConfig",
            "guardrailConfig",
            "additionalModelRequestFields",
            "promptVariables",
            "image",
        ),
    ),
]

#: Values of every JSON type, put in place of each member in turn.
REPLACEMENTS: list[Any] = [None, True, False, 0, -1, 1, 1.5, 2, "", " ", "x", [], [""], {}, [{}]]
#: Encoded values no Python value encodes to, or that orjson and msgspec might read apart:
#: put in place of each member in turn.
TOKENS: list[bytes] = [
    b"1e999",
    b"-1e999",
    b"18446744073709551615",
    BEYOND_64_BITS,
    b"-9223372036854775809",
    b"1.0",
    b"1e0",
    b"0.0",
    b"-0",
    b"1E-400",
    b"NaN",
    b"Infinity",
    b'"\\ud800"',
    b'"\\udc00\\ud800"',
    b'"\xff"',
    b'"\\u00e9 \\ud83d\\ude00"',
    b'"a\\u0000b"',
    b"[" * 1100 + b"]" * 1100,
]
PLACEHOLDER = "\x00placeholder\x00"
PLACEHOLDER_JSON = orjson.dumps(PLACEHOLDER)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def at(body: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        body = body[step]
    return body


def replaced(body: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    out = copy.deepcopy(body)
    at(out, path[:-1])[path[-1]] = new
    return out


def removed(body: Any, path: tuple[Any, ...]) -> Any:
    out = copy.deepcopy(body)
    del at(out, path[:-1])[path[-1]]
    return out


def changed(body: Any, path: tuple[Any, ...], change: Callable[[Any], object]) -> Any:
    """``body`` with ``change(value)`` applied to the object or array at ``path``."""
    out = copy.deepcopy(body)
    change(at(out, path))
    return out


def mutations(fast: Fast) -> Iterator[bytes]:
    """Encoded bodies: the plain ones, each with every member replaced or removed, integers
    moved past their limits, extra members in every object, arrays grown and reversed,
    duplicate keys, and byte sequences no encoder writes."""
    extras = (*fast.extras, "unknown")
    for body in fast.plain:
        raw = orjson.dumps(body)
        yield raw
        for path in paths(body):
            for new in REPLACEMENTS:
                yield orjson.dumps(replaced(body, path, new))
            with_placeholder = orjson.dumps(replaced(body, path, PLACEHOLDER))
            for token in TOKENS:
                yield with_placeholder.replace(PLACEHOLDER_JSON, token)
            if path:
                yield orjson.dumps(removed(body, path))
            value = at(body, path)
            if type(value) is int:  # some plain bodies hold values at the limits
                yield orjson.dumps(replaced(body, path, value + 1))
                yield orjson.dumps(replaced(body, path, value - 1))
            elif isinstance(value, dict):
                for key in extras:
                    for extra in ({"x": 1}, None):
                        member = {key: extra}
                        yield orjson.dumps(changed(body, path, lambda d, m=member: d.update(m)))
            elif isinstance(value, list) and value:
                yield orjson.dumps(changed(body, path, lambda a: a.append(a[-1])))
                yield orjson.dumps(changed(body, path, lambda a: a.reverse()))
        # Duplicate members: orjson and msgspec both keep the last; msgspec also checks
        # the first.
        for key, value in body.items():
            for other in (value, "x", 1, None):
                member = orjson.dumps({key: other})[1:-1]
                yield b"{" + member + b"," + raw[1:]
                yield raw[:-1] + b"," + member + b"}"
        yield raw.replace(b":", b" : ").replace(b",", b" ,\n\t")
        yield raw + b" \n"
        yield raw + b"x"
        yield b"\xef\xbb\xbf" + raw
        yield raw[:-1]
        yield raw.replace(b"\xc3\xa9", b"\xc3")  # é cut short
        yield raw.replace(b"\xc3\xa9", b"\\u00e9")
        yield raw.replace(b"item 7", b"item \xff")
        yield raw.replace(b"item 7", b"item \\ud800")
        yield raw.replace(b"\\\\", b"\\x")
    yield b"[1, 2]"
    yield b"{}"
    yield b"null"
    yield b'"x"'
    yield b""


CASES = {str(fast): list(mutations(fast)) for fast in FAST}


def slow_quick(family: ChatFamily, raw: bytes) -> Any:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return family.quick(body)


def test_every_typed_reader_is_under_test() -> None:
    typed = {
        name
        for name, family in FAMILIES.items()
        if isinstance(family, ChatFamily) and type(family).quick_json is not ChatFamily.quick_json
    }
    assert typed == {fast.family.name for fast in FAST}
    # A family with a quick path but no typed reader would need a reason.
    quick = {
        name
        for name, family in FAMILIES.items()
        if isinstance(family, ChatFamily) and type(family).quick is not ChatFamily.quick
    }
    assert quick == typed


@pytest.mark.parametrize("fast", FAST, ids=str)
def test_the_cases_exercise_both_outcomes(fast: Fast) -> None:
    cases = CASES[str(fast)]
    accepted = sum(fast.family.quick_json(raw) is not None for raw in cases)
    quick_accepted = sum(slow_quick(fast.family, raw) is not None for raw in cases)
    assert accepted >= 80
    assert len(cases) - accepted >= 300
    # The typed reader declines little that the quick path takes (the unusual ones).
    assert accepted >= quick_accepted * 0.7


@pytest.mark.parametrize("fast", FAST, ids=str)
def test_integers_beyond_64_bits_go_to_the_regular_path(fast: Fast) -> None:
    checked = 0
    for body in fast.plain:
        for path in paths(body):
            if type(at(body, path)) is not int:
                continue
            raw = orjson.dumps(replaced(body, path, PLACEHOLDER))
            raw = raw.replace(PLACEHOLDER_JSON, BEYOND_64_BITS)
            assert fast.family.quick(orjson.loads(raw)) is None
            assert fast.family.quick_json(raw) is None, raw
            checked += 1
    assert checked


@pytest.mark.parametrize("fast", FAST, ids=str)
def test_the_quick_path_accepts_only_what_the_parser_accepts(fast: Fast) -> None:
    """One step back: what the quick path answers, the parser must take and read the same
    (a body the parser refuses is a 400 record error, as on Bedrock)."""
    family, checked = fast.family, 0
    for raw in CASES[str(fast)]:
        quick = slow_quick(family, raw)
        if quick is None:
            continue
        request = family.parse(orjson.loads(raw))  # raises BodyError if it refuses
        assert quick == (
            request_text(request),
            len(request.messages),
            request.max_tokens,
            request.stop,
        ), raw
        checked += 1
    assert checked >= 80


@pytest.mark.parametrize("fast", FAST, ids=str)
def test_typed_reader_accepts_only_what_the_quick_path_accepts(fast: Fast) -> None:
    family = fast.family
    wrong = []
    for raw in CASES[str(fast)]:
        typed = family.quick_json(raw)
        if typed is not None and typed != slow_quick(family, raw):
            wrong.append(raw)
    assert not wrong, wrong[:5]
    for body in fast.plain:
        raw = orjson.dumps(body)
        assert family.quick_json(msgspec.Raw(raw)) == family.quick(body) is not None


@pytest.mark.parametrize("error_rate", [0.0, 0.4])
@pytest.mark.parametrize("fast", FAST, ids=str)
def test_raw_answers_are_the_regular_answers_byte_for_byte(fast: Fast, error_rate: float) -> None:
    model = BuiltinModel(error_rate=error_rate, seed=3)
    answer = model.raw_answerer(fast.model_id, fast.invocation_type)
    assert answer is not None
    answered = declined_errors = 0
    for index, raw in enumerate(CASES[str(fast)]):
        rid = f"REC{index:05d}"
        quick = answer(raw, rid)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            assert quick is None, raw
            continue
        request = ModelRequest(fast.model_id, fast.invocation_type, body, rid)
        slow = model.invoke_now(request)
        if quick is None:
            declined_errors += slow.error is not None
            continue
        answered += 1
        assert slow.error is None, raw
        assert quick == (orjson.dumps(slow.output), slow.input_tokens, slow.output_tokens), raw
    assert answered >= 20
    if error_rate:
        assert declined_errors >= 20  # injected errors go to the regular path


def parse_outcome(parse: Callable[[Any], ChatRequest], body: Any) -> str:
    """What ``parse`` makes of ``body``: its request (repr tells 1 from 1.0), or its error."""
    try:
        return repr(parse(body))
    except Exception as exc:  # the checked parser's refusals, and its crashes
        return f"{type(exc).__name__}: {exc}"


def test_claude_plain_bodies_parse_as_the_checked_parser_reads_them() -> None:
    """AnthropicMessages.parse reads plain conversations in one pass (the OpenAI-compatible
    and Bedrock backends' per-record parse): over every Claude case it must come to exactly
    what the checked parse does, and take the plain bodies that way."""
    family = ANTHROPIC
    assert isinstance(family, AnthropicMessages)
    taken = 0
    for raw in CASES[str(FAST[0])]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        checked = parse_outcome(family.parse_checked, body)
        assert parse_outcome(family.parse, body) == checked, raw
        if slow_quick(family, raw) is not None:
            taken += 1
            assert checked.startswith("ChatRequest("), raw
    assert taken >= 80


@pytest.mark.parametrize("fast", FAST, ids=str)
def test_every_case_is_parsed_or_refused_as_a_record_error(fast: Fast) -> None:
    """A parser's one refusal is a BodyError (the record's 400); anything else it raises is a
    crash, which the built-in model reports as a 500 and the other backends retry (a Claude
    body with ``"messages": null`` raised TypeError)."""
    family = fast.family
    parsers = [family.parse]
    if isinstance(family, AnthropicMessages):
        parsers.append(family.parse_checked)
    crashed = []
    for raw in CASES[str(fast)]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        for parse in parsers:
            outcome = parse_outcome(parse, body)
            if not outcome.startswith(("ChatRequest(", "BodyError: ")):
                crashed.append((raw, outcome))
    assert not crashed, crashed[:3]


@pytest.mark.parametrize("fast", FAST, ids=str)
def test_a_required_member_given_as_null_is_refused_as_if_left_out(fast: Fast) -> None:
    """``"max_tokens": null`` was taken as no limit, ``"messages": null`` crashed: a required
    member that is null is refused with the words its absence gets."""
    family = fast.family
    parsers = [family.parse]
    if isinstance(family, AnthropicMessages):
        parsers.append(family.parse_checked)
    checked = 0
    for body in fast.plain:
        for path in paths(body):
            if not path or type(path[-1]) is not str:
                continue
            for parse in parsers:
                left_out = parse_outcome(parse, removed(body, path))
                if not left_out.startswith("BodyError: "):
                    continue
                assert parse_outcome(parse, replaced(body, path, None)) == left_out, path
                checked += 1
    assert checked


def test_claude_null_members_are_reported_in_bedrock_words() -> None:
    body = FAST[0].plain[0]
    assert isinstance(ANTHROPIC, AnthropicMessages)
    for parse in (ANTHROPIC.parse, ANTHROPIC.parse_checked):
        for key in ("max_tokens", "messages"):
            with pytest.raises(BodyError) as refused:
                parse({**body, key: None})
            assert refused.value.message == (
                f"Malformed input request: #: required key [{key}] not found, please reformat "
                "your input and try again."
            )
    with pytest.raises(BodyError) as refused:
        CONVERSE.parse({"messages": None})
    assert refused.value.message == (
        "1 validation error detected: Value null at 'messages' failed to satisfy constraint: "
        "Member must not be null"
    )
    text = {"messages": [{"role": "user", "content": [{"text": None}]}]}
    with pytest.raises(BodyError) as refused:
        CONVERSE.parse(text)
    assert refused.value.message == (
        "1 validation error detected: Value null at 'messages.1.member.content.1.member.text' "
        "failed to satisfy constraint: Member must not be null"
    )
    with pytest.raises(BodyError) as refused:
        NOVA.parse(text)
    assert "#/messages/0/content/0/text: expected type: String, found: Null" in (
        refused.value.message
    )


def test_only_immediate_models_with_a_typed_reader_offer_the_fast_path() -> None:
    assert BuiltinModel(latency_ms=5).raw_answerer(CLAUDE, "InvokeModel") is None
    assert BuiltinModel(throttle_rate=0.1).raw_answerer(CLAUDE, "InvokeModel") is None
    model = BuiltinModel()
    for fast in FAST:
        assert model.raw_answerer(fast.model_id, fast.invocation_type) is not None
    # Any model id in a Converse job reads Converse bodies.
    assert model.raw_answerer("my-own-model", "Converse") is not None
    # Families without a typed reader, unknown ids and embeddings take the regular path.
    assert model.raw_answerer("openai.gpt-oss-120b-1:0", "InvokeModel") is None
    assert model.raw_answerer("my-own-model", "InvokeModel") is None
    assert model.raw_answerer("amazon.titan-embed-text-v2:0", "InvokeModel") is None


ANSWERS = [
    ChatAnswer("Plain text.", "end", 12, 3),
    ChatAnswer("Cut sh", "length", 1, 2, None, 0, 123456789),
    ChatAnswer('Up to "the', "stop", 40, 9, 'the "end"\\', 7, 0),
    ChatAnswer("Unicode é 😀 \u2028 and \x01 control", "stop", 5, 5, "😀", 0, 2**31),
]
REQUESTS = [ChatRequest(max_tokens=5), ChatRequest(prompt="p", max_tokens=None, stop=("x",))]


@pytest.mark.parametrize("family", [f for f in FAMILIES.values() if isinstance(f, ChatFamily)])
@pytest.mark.parametrize("model_id", [CLAUDE, "arn:aws:bedrock:us-east-1::foundation-model/x%sy"])
def test_json_renderers_write_what_render_returns(family: ChatFamily, model_id: str) -> None:
    render_json = family.json_renderer(model_id)
    for answer in ANSWERS:
        for request in REQUESTS:
            expected = orjson.dumps(family.render(answer, request, model_id))
            assert render_json(answer, request) == expected
            if not family.render_reads_request:
                assert render_json(answer, ChatRequest()) == expected
