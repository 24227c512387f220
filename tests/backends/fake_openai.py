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
embeddings are 384 floats (or ``dimensions`` when given). ``--log`` writes each request body
as one JSON line, so tests can check exactly what was sent. ``--spans`` writes one line per
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


def _completion(path: str, request: dict[str, Any], text: str) -> dict[str, Any]:
    reply = "echo: " + text
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
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": reply}}
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
