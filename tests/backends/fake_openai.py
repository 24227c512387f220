"""A small OpenAI-compatible server with injectable faults, run as a real process by tests.

    python tests/backends/fake_openai.py --port 8000 [--latency-ms 200] [--log requests.jsonl]
        [--spans spans.jsonl] [--die-after N]

It speaks HTTP through fake_http.py, which controls every byte; faults are chosen by a marker
in the record's text, counted per marker so a test can ask for "fail twice, then answer":

    FAULT:429:N        answer 429 (Retry-After: 0) the first N times
    FAULT:500:N        answer 500 the first N times
    FAULT:400          always answer 400 with an OpenAI error body
    FAULT:malformed:N  answer 200 with a body that is not JSON, N times
    FAULT:drop:N       close the connection without answering, N times
    FAULT:slow:S       wait S seconds before answering

Otherwise it answers deterministically: chat and completions echo the last user text
(``echo: ...``), honour ``max_tokens`` (finish_reason ``length``) and ``stop`` (finish_reason
``stop`` and vLLM's ``stop_reason`` naming the matched string), and report usage;
embeddings are 384 floats (or ``dimensions`` when given). Structure, as vLLM does it: a
``response_format`` json_schema gets a JSON answer with every required property filled in by
type (``"echo"``, ``1``, ``true`` ...); a ``tool_choice`` of ``required`` or one named function,
or ``auto`` with ``CALL:name`` in the text, gets ``tool_calls`` (arguments built the same way)
and finish_reason ``tool_calls``; a last ``tool`` message is echoed (``echo: tool said ...``);
``reasoning_effort`` or ``chat_template_kwargs.enable_thinking`` adds ``reasoning_content``.
``--log`` writes each request body as one JSON line, so tests can check exactly what was sent.
``--spans`` writes one line per
answered request: its text and when it arrived and was answered (``time.monotonic``, which
every process on the machine shares), so tests can count requests in flight across several
servers. ``--die-after N`` makes the process exit abruptly when its N-th model request
arrives, dropping every connection (a model server dying mid-job).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
import zlib
from collections import Counter
from typing import Any

from fake_http import serve

FAULT = re.compile(r"FAULT:(\w+)(?::([\d.]+))?")


class FakeServer:
    def __init__(
        self,
        latency_ms: float,
        log_path: str | None,
        spans_path: str | None = None,
        die_after: int = 0,
    ) -> None:
        self.latency = latency_ms / 1000
        self.seen: Counter[str] = Counter()
        self.log = open(log_path, "a", buffering=1) if log_path else None
        self.spans = open(spans_path, "a", buffering=1) if spans_path else None
        self.die_after = die_after
        self.requests = 0

    async def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, list[str]] | None:
        started = time.monotonic()
        if method == "POST":
            self.requests += 1
            if self.requests == self.die_after:
                os._exit(3)  # no answer, no cleanup: every open connection drops
        reply = await self._answer(method, path, headers, body)
        if self.spans and reply is not None and reply[0] == 200 and method == "POST":
            span = {"text": _last_text(json.loads(body)), "t0": started, "t1": time.monotonic()}
            self.spans.write(json.dumps(span) + "\n")
        return reply

    async def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, list[str]] | None:
        if method == "GET" and path.endswith("/models"):
            return 200, json.dumps({"data": [{"id": "fake"}]}).encode(), []
        try:
            request = json.loads(body)
        except ValueError:
            return 400, b'{"error": {"message": "body is not JSON"}}', []
        if self.log:
            self.log.write(
                json.dumps({"path": path, "auth": headers.get("authorization"), "body": request})
                + "\n"
            )
        text = _last_text(request)
        fault = FAULT.search(text)
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault:
            kind, arg = fault.group(1), fault.group(2)
            key = fault.group(0) + "|" + text
            self.seen[key] += 1
            times = int(float(arg)) if arg else 1
            if kind == "slow":
                await asyncio.sleep(float(arg or 1))
            elif kind == "400":
                return 400, b'{"error": {"message": "This model does not like you"}}', []
            elif self.seen[key] <= times:
                if kind == "429":
                    return 429, b'{"error": {"message": "rate limited"}}', ["Retry-After: 0"]
                if kind == "500":
                    return 500, b'{"error": {"message": "engine crashed"}}', []
                if kind == "malformed":
                    return 200, b"<html>not json", []
                if kind == "drop":
                    return None
        if path.endswith("/embeddings"):
            return 200, json.dumps(_embedding(request, text)).encode(), []
        return 200, json.dumps(_completion(path, request, text)).encode(), []


def _last_text(request: dict[str, Any]) -> str:
    if "prompt" in request:
        return str(request["prompt"])
    if "input" in request:
        return str(request["input"])
    for message in reversed(request.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def _fill(schema: Any) -> Any:
    """A minimal value for a JSON schema: required properties only, placeholders by type."""
    if not isinstance(schema, dict):
        return "echo"
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _fill(props.get(name)) for name in schema.get("required", [])}
    if kind == "array":
        return [_fill(schema.get("items"))] * max(1, schema.get("minItems", 1))
    return {"string": "echo", "integer": 1, "number": 1.5, "boolean": True}.get(kind)


def _tool_to_call(request: dict[str, Any], text: str) -> dict[str, Any] | None:
    tools = {t["function"]["name"]: t["function"] for t in request.get("tools") or []}
    choice = request.get("tool_choice", "auto")
    messages = request.get("messages") or [{}]
    if not tools or choice == "none" or messages[-1].get("role") == "tool":
        return None
    if isinstance(choice, dict):
        return tools[choice["function"]["name"]]
    if choice == "required":
        return next(iter(tools.values()))
    called = re.search(r"CALL:(\w+)", text)
    return tools.get(called.group(1)) if called else None


def _completion(path: str, request: dict[str, Any], text: str) -> dict[str, Any]:
    messages = request.get("messages") or [{}]
    if messages[-1].get("role") == "tool":
        text = "tool said " + str(messages[-1].get("content"))
    reply = "echo: " + text
    tool = _tool_to_call(request, text) if path.endswith("/chat/completions") else None
    response_format = request.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        reply = json.dumps(_fill(response_format["json_schema"]["schema"]))
    finish = "stop"
    matched = None
    for stop in request.get("stop") or []:
        at = reply.find(stop)
        if at >= 0:
            reply, matched = reply[:at], stop
    words = reply.split()
    limit = request.get("max_tokens")
    if isinstance(limit, int) and len(words) > limit:
        reply, finish, matched = " ".join(words[:limit]), "length", None
    usage = {
        "prompt_tokens": len(text.split()) + 7,
        "completion_tokens": len(reply.split()),
        "total_tokens": len(text.split()) + 7 + len(reply.split()),
    }
    if path.endswith("/chat/completions"):
        message: dict[str, Any] = {"role": "assistant", "content": reply}
        if tool is not None:
            arguments = json.dumps(_fill(tool.get("parameters")))
            call = {"id": "call_0", "type": "function"}
            call["function"] = {"name": tool["name"], "arguments": arguments}  # type: ignore[assignment]
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
        thinking = request.get("chat_template_kwargs", {}).get("enable_thinking")
        if request.get("reasoning_effort") or thinking:
            message["reasoning_content"] = f"thinking ({request.get('reasoning_effort')})"
        if "[reason]" in text:
            # vLLM's reasoning parser: the reasoning apart from the answer.
            message["reasoning_content"] = "thinking it over"
        choice: dict[str, Any] = {"index": 0, "message": message}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": reply}
        kind = "text_completion"
    choice["finish_reason"] = finish
    choice["stop_reason"] = matched
    return {
        "id": "cmpl-1",
        "object": kind,
        "model": request.get("model"),
        "choices": [choice],
        "usage": usage,
    }


def _embedding(request: dict[str, Any], text: str) -> dict[str, Any]:
    size = int(request.get("dimensions") or 384)
    seed = zlib.crc32(text.encode())
    vector = [((seed * (i + 1)) % 1000) / 1000 - 0.5 for i in range(size)]
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "model": request.get("model"),
        "usage": {"prompt_tokens": len(text.split()), "total_tokens": len(text.split())},
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--log")
    parser.add_argument("--spans")
    parser.add_argument("--die-after", type=int, default=0)
    args = parser.parse_args()
    server = FakeServer(args.latency_ms, args.log, args.spans, args.die_after)
    await serve(server.answer, args.port)


if __name__ == "__main__":
    asyncio.run(main())
