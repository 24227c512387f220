"""The same job through /v1/batches and through the Bedrock API: service CPU per request.

    .venv/bin/python benchmarks/openai_batches.py --records 10000 --latency-ms 200 \\
        --concurrency 256

Starts the OpenAI-compatible server from the tests (every answer after ``--latency-ms``) and
one ``batchrock serve`` routing both models to it, then runs ``--records`` requests twice, one
job after the other on the same server:

- **Bedrock**: Claude Messages records written to the local bucket, CreateModelInvocationJob
  through boto3, polled until Completed (the records are translated to chat completions);
- **OpenAI**: the same prompts as chat-completion lines, uploaded with ``files.create``,
  ``batches.create``, polled with ``batches.retrieve`` until completed, the output file
  downloaded (the bodies go as they are; the upload, the line checks and the output file are
  the extra work).

Reports each run's wall time and the service process's CPU (user + system) per request, and the
ratio OpenAI / Bedrock against the target of 1.1 (docs/benchmarks.md). Exit status 1 when the
ratio misses it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import openai
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_backend import bedrock_client, cpu_seconds, run_job, services, write_records

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TARGET = 1.1


def prompt(i: int) -> str:
    return f"Summarize record {i}."


def bedrock_run(url: str, data: Path, records: int, pid: int) -> tuple[float, float]:
    start = time.perf_counter()
    write_records(data / "s3" / "bench-bucket" / "in" / "records.jsonl", records)
    run = run_job(bedrock_client(url), data, pid, "bench", poll_s=0.2)
    return time.perf_counter() - start, run.cpu_s


def openai_run(url: str, records: int, pid: int) -> tuple[float, float]:
    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0)
    cpu, start = cpu_seconds(pid), time.perf_counter()
    lines = b"".join(
        orjson.dumps(
            {
                "custom_id": f"R{i:08d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "bench-llm",
                    "max_tokens": 64,
                    "messages": [{"role": "user", "content": prompt(i)}],
                },
            }
        )
        + b"\n"
        for i in range(records)
    )
    upload = client.files.create(file=("bench.jsonl", lines), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while (batch := client.batches.retrieve(batch.id)).status not in (
        "completed", "failed", "expired", "cancelled"):  # fmt: skip
        time.sleep(0.2)
    assert batch.status == "completed" and batch.output_file_id, batch
    got = client.files.content(batch.output_file_id).content.count(b"\n")
    assert got == records, got
    client.close()
    return time.perf_counter() - start, cpu_seconds(pid) - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()

    def routes_for(fake_port: int) -> str:
        return f"""
[[routes]]
models = ["{CLAUDE}", "bench-*"]
backend = "openai"
base_url = "http://127.0.0.1:{fake_port}/v1"
max_concurrency = {args.concurrency}
"""

    with services(args, routes_for, BATCHROCK_ENGINE_MIN_SUBMITTED_SECONDS="0") as (
        url,
        data,
        pid,
    ):
        bedrock_wall, bedrock_cpu = bedrock_run(url, data, args.records, pid)
        openai_wall, openai_cpu = openai_run(url, args.records, pid)
        per = 1e6 / args.records
        print(f"records  {args.records} at {args.latency_ms:g} ms, concurrency {args.concurrency}")
        print(f"bedrock  {bedrock_wall:.2f} s, service CPU {bedrock_cpu * per:.0f} us a request")
        print(f"openai   {openai_wall:.2f} s, service CPU {openai_cpu * per:.0f} us a request")
        ratio = openai_cpu / bedrock_cpu
        print(f"ratio    {ratio:.3f} (target <= {TARGET})")
        return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
