"""Media named by S3 location (Nova ``s3Location``): the built-in model checks each object
exists and that the job may read its bucket (engine/media.py), and a record naming one that
does not, or one in a bucket the job's account has no grant for, fails alone (issue 15,
item 4). Both engine paths: the in-order pass of the zero-latency model (which must await
the check mid-block) and the concurrent workers of a model with latency."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from batchrock.backends.base import RecordError
from batchrock.backends.builtin import BuiltinModel
from batchrock.backends.routing import BUILTIN_RETRY, wrap
from batchrock.engine.grants import GrantTable
from batchrock.jobs import JobStatus

from .harness import Harness, OneBackend, jsonl, one_pass, out_lines

A, B = "111111111111", "222222222222"
NOVA = "amazon.nova-lite-v1:0"
VIDEO_URI = "s3://team-a-in/media/clip.mp4"


def video(uri: str, owner: str | None = None) -> dict[str, Any]:
    location: dict[str, Any] = {"uri": uri}
    if owner is not None:
        location["bucketOwner"] = owner
    return {
        "schemaVersion": "messages-v1",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"video": {"format": "mp4", "source": {"s3Location": location}}},
                    {"text": "What happens in this video?"},
                ],
            }
        ],
        "inferenceConfig": {"maxTokens": 100},
    }


def text(words: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"text": words}]}]}


@pytest.mark.parametrize("latency_ms", [0, 1], ids=["in-order", "concurrent"])
def test_missing_or_forbidden_media_fail_their_records_only(
    tmp_path: Path, latency_ms: int
) -> None:
    grants = GrantTable({A: ["team-a-*"], B: ["team-b-*"]}, {"team-a-in": A})
    h = Harness(tmp_path, buckets=grants)
    model = BuiltinModel(latency_ms=latency_ms)
    backend = wrap(model, BUILTIN_RETRY, None) if latency_ms else model
    h.resolver = OneBackend(backend)
    h.put(VIDEO_URI, b"\x00\x00\x00\x18ftypmp42")
    h.put("s3://team-b-in/secret.mp4", b"not yours")
    h.bucket("team-a-out")
    records = [
        text("before"),
        video(VIDEO_URI),
        video("s3://team-a-in/media/missing.mp4"),
        video("s3://team-b-in/secret.mp4"),
        video(VIDEO_URI, owner=B),
        text("after"),
    ]
    lines = [{"recordId": f"r{i}", "modelInput": body} for i, body in enumerate(records)]
    h.put("s3://team-a-in/in/records.jsonl", jsonl(lines))

    async def main() -> list[dict[str, Any]]:
        job = await h.submit(
            "s3://team-a-in/in/records.jsonl", "s3://team-a-out/", account_id=A, model_id=NOVA
        )
        (done,) = await h.run(job.job_id)
        assert done.status is JobStatus.COMPLETED, done.message
        assert (done.counters.success, done.counters.error) == (3, 3)
        return out_lines(h.read(f"s3://team-a-out/{job.job_id}/records.jsonl.out"))

    out = asyncio.run(main())
    assert [line["recordId"] for line in out] == [f"r{i}" for i in range(6)]  # input order
    for i in (0, 1, 5):
        assert out[i]["modelOutput"]["stopReason"] in ("end_turn", "max_tokens"), out[i]
    where = "messages/0/content/0/video/source/s3Location"
    assert out[2]["error"] == {
        "errorCode": 400,
        "errorMessage": f"The S3 object s3://team-a-in/media/missing.mp4 ({where}) does not exist.",
    }
    assert out[3]["error"] == {
        "errorCode": 400,
        "errorMessage": (
            f"Access denied to the S3 object s3://team-b-in/secret.mp4 ({where}): account {A} "
            "has no grant for the bucket 'team-b-in'."
        ),
    }
    assert out[4]["error"]["errorCode"] == 400
    assert f"not owned by account {B}" in out[4]["error"]["errorMessage"]


class GateMedia:
    """A media reader that lets checks finish only once ``width`` of them are in flight
    together: a pass that checked one record at a time would never get there."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.in_flight = 0
        self.most = 0
        self.wide = asyncio.Event()

    async def check(self, ref: Any) -> RecordError | None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= self.width:
            self.wide.set()
        await self.wide.wait()
        self.in_flight -= 1
        return None if "ok" in ref.uri else RecordError(400, f"no {ref.uri}")


def embed_video(uri: str) -> dict[str, Any]:
    return {
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {
            "embeddingPurpose": "GENERIC_INDEX",
            "embeddingDimension": 256,
            "video": {
                "format": "mp4",
                "embeddingMode": "AUDIO_VIDEO_COMBINED",
                "source": {"s3Location": {"uri": uri}},
            },
        },
    }


def embed_text(words: str) -> dict[str, Any]:
    params = {
        "embeddingPurpose": "GENERIC_INDEX",
        "text": {"truncationMode": "END", "value": words},
    }
    return {"taskType": "SINGLE_EMBEDDING", "singleEmbeddingParams": params}


@pytest.mark.parametrize(
    ("model_id", "body", "plain"),
    [(NOVA, video, text), ("amazon.nova-2-multimodal-embeddings-v1:0", embed_video, embed_text)],
    ids=["block-at-once", "line-by-line"],
)
def test_the_in_order_pass_checks_a_blocks_media_together(
    model_id: str, body: Any, plain: Any
) -> None:
    """Media checks are I/O: the zero-latency model's in-order pass awaits those of a block
    together (up to engine_record_concurrency), and the output stays in input order."""
    uris = [f"s3://b/{'ok' if i % 2 else 'gone'}-{i}.mp4" for i in range(6)]
    lines = [{"recordId": f"r{i}", "modelInput": body(uri)} for i, uri in enumerate(uris)]
    lines.insert(3, {"recordId": "plain", "modelInput": plain("between")})
    data = jsonl(lines)
    media = GateMedia(width=4)

    async def main() -> list[dict[str, Any]]:
        output, progress = await one_pass(
            BuiltinModel(), model_id, data, concurrency=4, media=media
        )
        assert (progress.line, progress.offset, progress.processed) == (7, len(data), 7)
        assert (progress.success, progress.error) == (4, 3)
        return out_lines(b"".join(output))

    out = asyncio.run(main())
    assert media.most == 4  # never more than the pass's concurrency
    assert [line["recordId"] for line in out] == [
        "r0", "r1", "r2", "plain", "r3", "r4", "r5"
    ]  # fmt: skip
    assert out[0]["error"] == {"errorCode": 400, "errorMessage": "no s3://b/gone-0.mp4"}
    assert "modelOutput" in out[1] and "modelOutput" in out[3]
