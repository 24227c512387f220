"""Jobs through `batchrock serve` and boto3 for the newer families (issue 15, items 2 and 4):
Nova Multimodal Embeddings (it was refused with `required key [messages] not found`), with
media in S3 that exists and that does not, and gpt-oss in its own shape."""

from __future__ import annotations

from typing import Any

import pytest

from .test_jobs_e2e import FAST, results, submit, wait

pytestmark = pytest.mark.timeout(120)


def embed(**media: Any) -> dict[str, Any]:
    return {
        "schemaVersion": "nova-multimodal-embed-v1",
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {
            "embeddingPurpose": "GENERIC_INDEX",
            "embeddingDimension": 256,
            **media,
        },
    }


def test_nova_embeddings_and_gpt_oss_jobs(server_factory: Any) -> None:
    server = server_factory(**FAST)
    clip = server.data_dir / "s3" / "bucket" / "media" / "clip.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    video = {"format": "mp4", "embeddingMode": "AUDIO_VIDEO_SEPARATE"}
    records = [
        {"recordId": "T", "modelInput": embed(text={"truncationMode": "END", "value": "hi"})},
        {
            "recordId": "V",
            "modelInput": embed(
                video={**video, "source": {"s3Location": {"uri": "s3://bucket/media/clip.mp4"}}}
            ),
        },
        {
            "recordId": "M",
            "modelInput": embed(
                video={**video, "source": {"s3Location": {"uri": "s3://bucket/media/gone.mp4"}}}
            ),
        },
    ]
    arn = submit(server, "amazon.nova-2-multimodal-embeddings-v1:0", records, folder="embed")
    assert wait(server, arn)["status"] == "Completed"
    lines, manifest = results(server, arn)
    text, clip_line, missing = lines
    (entry,) = text["modelOutput"]["embeddings"]
    assert entry["embeddingType"] == "TEXT" and len(entry["embedding"]) == 256
    kinds = [e["embeddingType"] for e in clip_line["modelOutput"]["embeddings"]]
    assert kinds == ["VIDEO", "AUDIO"]
    assert missing["error"]["errorCode"] == 400
    assert "s3://bucket/media/gone.mp4" in missing["error"]["errorMessage"]
    assert "does not exist" in missing["error"]["errorMessage"]
    assert (manifest["successRecordCount"], manifest["errorRecordCount"]) == (2, 1)

    chat = {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "max_completion_tokens": 100,
    }
    arn = submit(server, "openai.gpt-oss-120b-1:0", [{"recordId": "G", "modelInput": chat}])
    assert wait(server, arn)["status"] == "Completed"
    (line,), manifest = results(server, arn)
    output = line["modelOutput"]
    assert output["object"] == "chat.completion" and output["model"] == "openai.gpt-oss-120b-1:0"
    assert output["choices"][0]["message"]["content"].startswith("<reasoning>")
    assert manifest["outputTokenCount"] == output["usage"]["completion_tokens"]
