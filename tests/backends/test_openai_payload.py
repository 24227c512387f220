"""The OpenAI-compatible backend builds a plain request's body in one pass: it must be the
checked path's body byte for byte, and it must leave every request with something to check
(a feature the route lacks, tools, thinking, media) to the checked path."""

from __future__ import annotations

import itertools

import orjson
import pytest

from batchrock.backends.families import ANTHROPIC
from batchrock.backends.neutral import (
    ChatRequest,
    DocumentPart,
    ImagePart,
    Message,
    OutputSchema,
    TextPart,
    Thinking,
    Tool,
    ToolChoice,
    ToolResultPart,
    ToolUsePart,
)
from batchrock.backends.openai_compat import (
    FEATURES,
    THINKING_MODES,
    OpenAIBackend,
    OpenAIOptions,
    UnservableError,
)
from tests.backends.test_fast_path import CASES, FAST

HELLO = (Message("user", (TextPart("Hello"),)),)
REQUESTS = [
    ChatRequest(messages=HELLO, max_tokens=5),
    ChatRequest(messages=HELLO, system="Be terse.", temperature=0.0, top_p=1.0, top_k=3),
    ChatRequest(messages=HELLO, stop=("a", "b"), max_tokens=1),
    ChatRequest(messages=(Message("user", ()), Message("assistant", (TextPart("x"),)))),
    ChatRequest(messages=(Message("user", (TextPart("a"), TextPart("b"))),)),
    ChatRequest(messages=(Message("user", (ImagePart("image/png", "AAAA"),)),)),
    ChatRequest(messages=(Message("user", (DocumentPart("application/pdf", "JVBE"),)),)),
    ChatRequest(messages=(Message("user", (DocumentPart("text/plain", "doc"),)),)),
    ChatRequest(
        messages=(
            Message("assistant", (ToolUsePart("t1", "f", {"x": 1}),)),
            Message("user", (ToolResultPart("t1", "42"),)),
        ),
        tools=(Tool("f", "a tool", {"type": "object"}),),
        tool_choice=ToolChoice("auto"),
    ),
    ChatRequest(messages=HELLO, output_schema=OutputSchema({"type": "object"})),
    ChatRequest(messages=HELLO, thinking=Thinking("enabled", 2048)),
    ChatRequest(messages=HELLO, effort="high"),
    ChatRequest(messages=HELLO, extras=("anthropic_beta",)),
    ChatRequest(prompt="[INST] hi [/INST]", max_tokens=3, stop=("x",)),
]


def outcome(build: object) -> str:
    try:
        path, payload = build()  # type: ignore[operator]
    except UnservableError as exc:
        return f"unservable: {exc}"
    return f"{path} {orjson.dumps(payload).decode()}"


def claude_requests() -> list[ChatRequest]:
    """Every Claude mutation case the parser takes."""
    taken = []
    for raw in CASES[str(FAST[0])]:
        try:
            taken.append(ANTHROPIC.parse(orjson.loads(raw)))
        except Exception:  # not JSON, or a body the parser refuses
            continue
    return taken


BACKENDS = [
    OpenAIBackend(
        OpenAIOptions(
            "http://127.0.0.1:1/v1",
            unsupported=frozenset(unsupported),
            thinking=thinking,
            prompt_api=prompt_api,
        )
    )
    for unsupported, thinking, prompt_api in itertools.product(
        [(), tuple(FEATURES)], THINKING_MODES, ["completions", "chat"]
    )
]


def backend_id(backend: OpenAIBackend) -> str:
    options = backend.options
    lacks = "-".join(sorted(options.unsupported)) or "nothing"
    return f"lacks-{lacks}-thinking-{options.thinking}-{options.prompt_api}"


@pytest.mark.parametrize("backend", BACKENDS, ids=backend_id)
def test_plain_payloads_are_the_checked_payloads(backend: OpenAIBackend) -> None:
    plain = 0
    for request in [*REQUESTS, *claude_requests()]:
        checked = outcome(lambda r=request: backend.checked_chat_payload(r, "served"))
        assert outcome(lambda r=request: backend.chat_payload(r, "served")) == checked, request
        plain += backend._plain_chat_payload(request, "served") is not None
    # The plain shortcut takes most Claude records (fewer where stop and top_k must be
    # refused), and leaves the rich requests alone.
    assert plain >= (80 if not backend.options.unsupported else 40)
