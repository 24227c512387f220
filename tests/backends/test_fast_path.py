"""The built-in model's fast path must answer exactly as its regular path.

For an immediate model the engine hands records over as JSON (``raw_answerer``): the family
reads the body with a typed decoder (``quick_json``) and renders the response with a
template (``json_renderer``). Each shortcut may decline a record (the regular path then
answers it) but must never accept one the regular path treats differently, nor answer it
with different bytes. These tests hold them to that over many bodies: well-formed ones and
every member of them replaced by values of every JSON type.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from batchrock.backends.base import ModelRequest
from batchrock.backends.builtin import BuiltinModel
from batchrock.backends.families import ANTHROPIC, FAMILIES, ChatFamily
from batchrock.backends.neutral import ChatAnswer, ChatRequest

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"

PLAIN: list[dict[str, Any]] = [
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
]

#: Values of every JSON type, put in place of each member in turn.
REPLACEMENTS: list[Any] = [None, True, False, 0, -1, 1, 1.5, 2, "", " ", "x", [], [""], {}, [{}]]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def replaced(body: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    out = copy.deepcopy(body)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return out


def removed(body: Any, path: tuple[Any, ...]) -> Any:
    out = copy.deepcopy(body)
    target = out
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return out


def mutations() -> Iterator[bytes]:
    """Encoded bodies: the plain ones, each with every member replaced or removed, extra
    members, and a few byte sequences no encoder writes."""
    for body in PLAIN:
        yield orjson.dumps(body)
        for path in paths(body):
            for new in REPLACEMENTS:
                yield orjson.dumps(replaced(body, path, new))
            if path:
                yield orjson.dumps(removed(body, path))
        for key in ("metadata", "tools", "thinking", "anthropic_beta", "unknown"):
            yield orjson.dumps({**body, key: {"x": 1}})
        message = body["messages"][0]
        yield orjson.dumps({**body, "messages": [{**message, "extra": 1}]})
        yield orjson.dumps(
            {**body, "messages": [{"role": "user", "content": [{"type": "text", "text": "  "}]}]}
        )
        yield orjson.dumps(
            {
                **body,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "x", "cache_control": {}}],
                    }
                ],
            }
        )
    base = orjson.dumps(PLAIN[0])
    yield base.replace(b'"max_tokens":64', b'"max_tokens":64,"max_tokens":"x"')
    yield base.replace(b'"max_tokens":64', b'"max_tokens":"x","max_tokens":64')
    yield base.replace(b'"max_tokens":64', b'"max_tokens":64,"temperature":1e999')
    yield base.replace(b"item 7.", b"item \xff.")
    yield base.replace(b"item 7.", b"item \\ud800.")
    yield base.replace(b"item 7.", b"item \\u00e9.")
    yield base.replace(b":", b" : ")
    yield b"[1, 2]"
    yield b"{}"


CASES = list(mutations())


def slow_quick(raw: bytes) -> Any:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return ANTHROPIC.quick(body)


def test_the_cases_exercise_both_outcomes() -> None:
    accepted = sum(ANTHROPIC.quick_json(raw) is not None for raw in CASES)
    assert accepted >= 40
    assert len(CASES) - accepted >= 200


@pytest.mark.parametrize("raw", CASES)
def test_typed_reader_accepts_only_what_the_quick_path_accepts(raw: bytes) -> None:
    fast = ANTHROPIC.quick_json(raw)
    if fast is not None:
        assert fast == slow_quick(raw)


@pytest.mark.parametrize("error_rate", [0.0, 0.4])
def test_raw_answers_are_the_regular_answers_byte_for_byte(error_rate: float) -> None:
    model = BuiltinModel(error_rate=error_rate, seed=3)
    answer = model.raw_answerer(CLAUDE, "InvokeModel")
    assert answer is not None
    answered = declined_errors = 0
    for index, raw in enumerate(CASES):
        rid = f"REC{index:05d}"
        fast = answer(raw, rid)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            assert fast is None
            continue
        slow = model.invoke_now(ModelRequest(CLAUDE, "InvokeModel", body, rid))
        if fast is None:
            declined_errors += slow.error is not None
            continue
        answered += 1
        assert slow.error is None
        assert fast == (orjson.dumps(slow.output), slow.input_tokens, slow.output_tokens)
    assert answered >= 20
    if error_rate:
        assert declined_errors >= 20  # injected errors go to the regular path


def test_only_immediate_models_with_a_typed_reader_offer_the_fast_path() -> None:
    assert BuiltinModel(latency_ms=5).raw_answerer(CLAUDE, "InvokeModel") is None
    assert BuiltinModel(throttle_rate=0.1).raw_answerer(CLAUDE, "InvokeModel") is None
    # Families without a typed reader, unknown ids and embeddings take the regular path.
    model = BuiltinModel()
    assert model.raw_answerer("meta.llama3-8b-instruct-v1:0", "InvokeModel") is None
    assert model.raw_answerer("my-own-model", "InvokeModel") is None
    assert model.raw_answerer("amazon.titan-embed-text-v2:0", "InvokeModel") is None
    assert model.raw_answerer(CLAUDE, "Converse") is None


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
