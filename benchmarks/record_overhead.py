"""The record path outside HTTP: engine, retry layer and Claude <-> chat translation.

    .venv/bin/python benchmarks/record_overhead.py --records 20000 --rounds 5

One file pass (engine/file_pass.py, 256 workers) over ``--records`` Claude Messages records,
through the retry layer (backends/resilience.py, with its per-record deadline and
``max_concurrency``) into the OpenAI-compatible backend, whose HTTP call (``_post``) is
replaced by a stub that encodes the payload, yields to the loop once, and decodes a fixed
chat-completions answer: every per-record step but the socket and the HTTP client. The floor
does the least any such pass must: 256 coroutines read each line's recordId and modelInput,
encode a chat-completions payload, yield once, decode the same answer and join the output
line. Rounds alternate the two; each side's CPU time (this process's user + system) is
divided by the records. Prints the median and range of each side's CPU per record and of
their ratio; numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from batchrock.backends.openai_compat import OpenAIBackend, OpenAIOptions
from batchrock.backends.resilience import ResilientBackend, RetryPolicy
from batchrock.engine import records
from batchrock.engine.file_pass import FilePass

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
CONCURRENCY = 256
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Record 1 is about things."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
)


def input_file(count: int) -> bytes:
    lines = []
    for i in range(count):
        body = {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": f"Summarize record {i}."}],
        }
        lines.append(orjson.dumps({"recordId": f"R{i:08d}", "modelInput": body}))
    return b"\n".join(lines) + b"\n"


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 1 << 20):
        yield data[start : start + (1 << 20)]


async def stub_post(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """What the HTTP call costs outside HTTP: the payload encoded, the answer decoded."""
    orjson.dumps(payload)
    await asyncio.sleep(0)
    data: dict[str, Any] = orjson.loads(ANSWER)
    return data


async def batchrock_pass(data: bytes, count: int) -> float:
    backend = OpenAIBackend(OpenAIOptions(base_url="http://127.0.0.1:9/v1", served_model="bench"))
    backend._post = stub_post  # type: ignore[method-assign]
    resilient = ResilientBackend(backend, RetryPolicy(), max_concurrency=CONCURRENCY)
    file_pass = FilePass(
        blocks=records.iter_blocks(chunks(data)),
        backend=resilient,
        model_id=MODEL,
        invocation_type="InvokeModel",
        job_id="bench",
        file_index=0,
        start_offset=0,
        start_line=0,
        concurrency=CONCURRENCY,
        halt=asyncio.Event(),
    )
    started = time.process_time()
    await file_pass.run()
    spent = time.process_time() - started
    _, _, progress = file_pass.take_output()
    assert progress.success == count, progress
    return spent


async def floor_pass(data: bytes, count: int) -> float:
    lines = iter(records.block_lines(data))
    out: list[bytes] = []

    async def worker() -> None:
        for line in lines:
            record = records.read_line(line)
            body = orjson.loads(bytes(record.modelInput))
            payload = {
                "model": "bench",
                "messages": [{"role": "user", "content": body["messages"][0]["content"]}],
                "max_tokens": body["max_tokens"],
            }
            orjson.dumps(payload)
            await asyncio.sleep(0)
            answer = orjson.loads(ANSWER)
            text = answer["choices"][0]["message"]["content"]
            output = orjson.dumps({"content": [{"type": "text", "text": text}]})
            out.append(records.output_line(record.recordId or "", record.modelInput, output))

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    spent = time.process_time() - started
    assert len(out) == count
    return spent


def spread(values: list[float], unit: float = 1.0, digits: int = 1) -> str:
    scaled = [v * unit for v in values]
    return (
        f"**{statistics.median(scaled):.{digits}f}** "
        f"({min(scaled):.{digits}f}-{max(scaled):.{digits}f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data = input_file(args.records)
    ours: list[float] = []
    floor: list[float] = []
    for index in range(args.rounds):
        sides = [(batchrock_pass, ours), (floor_pass, floor)]
        for run, into in sides if index % 2 == 0 else sides[::-1]:
            into.append(asyncio.run(run(data, args.records)) / args.records)
    ratios = [a / b for a, b in zip(ours, floor, strict=True)]
    print(f"{args.records} records, {args.rounds} rounds")
    print("| batchrock CPU µs a record | floor CPU µs | ratio (median, range) |")
    print("| ---: | ---: | ---: |")
    print(f"| {spread(ours, 1e6)} | {spread(floor, 1e6)} | {spread(ratios, digits=2)} |")


if __name__ == "__main__":
    main()
