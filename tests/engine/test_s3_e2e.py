"""Jobs whose input and output live in a real S3-compatible service (moto's server)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest

from tests.conftest import bedrock_client

from .conftest import s3_client
from .test_e2e import CLAUDE, FAST, claude_records, get, wait

pytestmark = pytest.mark.timeout(120)


def s3_settings(url: str) -> dict[str, Any]:
    return {
        **FAST,
        "object_store": "s3",
        "s3_endpoint_url": url,
        "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing",
    }


def create(server: Any, input_uri: str, output_uri: str) -> str:
    response = bedrock_client(server.url).create_model_invocation_job(
        jobName=f"s3-{time.monotonic_ns()}",
        roleArn="arn:aws:iam::123456789012:role/batch",
        modelId=CLAUDE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": input_uri}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": output_uri}},
    )
    return str(response["jobArn"])


def test_job_reads_and_writes_s3(server_factory: Any, moto_url: str) -> None:
    s3 = s3_client(moto_url)
    bucket_in, bucket_out = f"in-{uuid.uuid4().hex[:10]}", f"out-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket_in)
    s3.create_bucket(Bucket=bucket_out)
    recs = claude_records(150)
    body = b"".join(orjson.dumps(r) + b"\n" for r in recs)
    s3.put_object(Bucket=bucket_in, Key="batch/records.jsonl", Body=body)
    s3.put_object(Bucket=bucket_in, Key="batch/readme.txt", Body=b"not input")

    server = server_factory(**s3_settings(moto_url))
    arn = create(server, f"s3://{bucket_in}/batch/", f"s3://{bucket_out}/results/")
    job = wait(server, arn)
    assert job["status"] == "Completed", job.get("message")
    job_id = arn.rsplit("/", 1)[-1]

    keys = sorted(
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket_out, Prefix="results/")["Contents"]
    )
    assert keys == [
        f"results/{job_id}/manifest.json.out",
        f"results/{job_id}/records.jsonl.out",
    ]
    out = s3.get_object(Bucket=bucket_out, Key=f"results/{job_id}/records.jsonl.out")
    lines = [orjson.loads(x) for x in out["Body"].read().splitlines()]
    assert [x["recordId"] for x in lines] == [r["recordId"] for r in recs]
    assert all(x["modelOutput"]["type"] == "message" for x in lines)
    m = orjson.loads(
        s3.get_object(Bucket=bucket_out, Key=f"results/{job_id}/manifest.json.out")["Body"].read()
    )
    assert m["totalRecordCount"] == m["successRecordCount"] == 150
    assert m["inputTokenCount"] == sum(x["modelOutput"]["usage"]["input_tokens"] for x in lines)
    assert get(server, arn)["processedRecordCount"] == 150


def test_missing_s3_bucket_fails_with_message(server_factory: Any, moto_url: str) -> None:
    s3 = s3_client(moto_url)
    bucket_out = f"out-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket_out)
    server = server_factory(**s3_settings(moto_url))
    arn = create(server, "s3://no-such-input-bucket/batch/", f"s3://{bucket_out}/results/")
    job = wait(server, arn)
    assert job["status"] == "Failed"
    assert "no-such-input-bucket" in job["message"] and "does not exist" in job["message"]
    assert "local store" not in job["message"]  # no folder to create on a real S3 service
