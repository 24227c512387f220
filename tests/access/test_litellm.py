"""LiteLLM's Bedrock batches, unmodified, against a server with a credentials file.

``litellm.create_file`` uploads the OpenAI-style JSONL (transformed to Bedrock records) to S3
(here moto's server, through LiteLLM's ``s3_endpoint_url``), ``litellm.create_batch`` signs
CreateModelInvocationJob itself (botocore's SigV4Auth, sent with httpx) to
``aws_bedrock_control_plane_endpoint``, and ``litellm.retrieve_batch`` calls
GetModelInvocationJob through a boto3 client on that endpoint. batchrock runs the job on the
built-in model, reading and writing the same moto bucket, and LiteLLM reads the results back
with ``litellm.file_content``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.access.conftest import ALICE, BOB, client, write_credentials
from tests.conftest import ServerProcess
from tests.engine.conftest import moto_url, s3_client  # noqa: F401 - moto_url is a fixture
from tests.engine.test_e2e import FAST

# LiteLLM fetches its model cost map from GitHub at import unless told to stay offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
litellm = pytest.importorskip("litellm")  # a dev dependency: CI (BATCHROCK_NO_SKIPS) has it
BedrockError = pytest.importorskip("litellm.llms.bedrock.common_utils").BedrockError

pytestmark = [
    pytest.mark.timeout(120),
    # LiteLLM's own pydantic models warn about their `ReadOnly` TypedDict items when first used.
    pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning"),
]

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE = "arn:aws:iam::111111111111:role/BedrockBatch"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, moto_url: str) -> Iterator[dict[str, Any]]:  # noqa: F811
    """A credentials-mode server with its engine on moto's S3, and a bucket ALICE's account owns."""
    bucket = f"team-a-litellm-{uuid.uuid4().hex[:8]}"
    s3_client(moto_url).create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("litellm")
    settings = {
        **FAST,
        "credentials_file": write_credentials(root / "credentials.toml"),
        "object_store": "s3",
        "s3_endpoint_url": moto_url,
        "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing",
    }
    server = ServerProcess(root / "data", settings, root / "server.log")
    server.start()
    yield {"server": server, "bucket": bucket, "moto": moto_url}
    server.stop()


def _s3(world: dict[str, Any]) -> dict[str, Any]:
    """LiteLLM's S3 parameters: moto's endpoint and its credentials (not batchrock's)."""
    return {
        "s3_bucket_name": world["bucket"],
        "s3_endpoint_url": world["moto"],
        "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing",
    }


def _aws(world: dict[str, Any], key: Any = ALICE, secret: str | None = None) -> dict[str, Any]:
    """LiteLLM's Bedrock parameters: the credentials it signs with and batchrock's endpoint."""
    return {
        "custom_llm_provider": "bedrock",
        "aws_access_key_id": key.access_key_id,
        "aws_secret_access_key": secret or key.secret,
        "aws_region_name": "us-east-1",
        "aws_bedrock_control_plane_endpoint": world["server"].url,
    }


def _upload(world: dict[str, Any], n: int = 3) -> Any:
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Say something about {i}."}],
                "max_tokens": 24,
            },
        }
        for i in range(n)
    ]
    body = "\n".join(json.dumps(line) for line in lines).encode()
    return litellm.create_file(
        file=("batch.jsonl", body),
        purpose="batch",
        model=f"bedrock/{MODEL}",
        **_aws(world),
        **_s3(world),
    )


def _create_batch(world: dict[str, Any], file_id: str, **aws: Any) -> Any:
    return litellm.create_batch(
        completion_window="24h",
        endpoint="/v1/chat/completions",
        input_file_id=file_id,
        model=f"bedrock/{MODEL}",
        aws_batch_role_arn=ROLE,
        **{**_aws(world), **aws},
    )


def _litellm_jobs(world: dict[str, Any]) -> list[str]:
    bedrock = client(world["server"].url)
    listed = bedrock.list_model_invocation_jobs(nameContains="litellm-")
    return sorted(j["jobArn"] for j in listed["invocationJobSummaries"])


def test_litellm_bedrock_batch_runs_with_the_right_secret(world: dict[str, Any]) -> None:
    uploaded = _upload(world)
    assert uploaded.id.startswith(f"s3://{world['bucket']}/")

    batch = _create_batch(world, uploaded.id)
    assert batch.id.startswith("arn:aws:bedrock:us-east-1:111111111111:model-invocation-job/")
    assert batch.status == "validating"
    # The job as boto3 sees it: LiteLLM's name, model, role and the file it uploaded.
    job = client(world["server"].url).get_model_invocation_job(jobIdentifier=batch.id)
    assert job["jobName"].startswith("litellm-") and job["modelId"] == MODEL
    assert job["roleArn"] == ROLE
    assert job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"] == uploaded.id

    deadline = time.monotonic() + 60
    while True:  # how a LiteLLM user waits: retrieve_batch until a final status
        got = litellm.retrieve_batch(batch_id=batch.id, **_aws(world))
        if got.status in {"completed", "failed", "cancelled", "expired"}:
            break
        assert time.monotonic() < deadline, f"still {got.status}: {world['server'].log()[-2000:]}"
        time.sleep(0.1)
    assert got.status == "completed", got.errors
    assert (got.request_counts.total, got.request_counts.completed) == (3, 3)
    job_id = batch.id.rsplit("/", 1)[-1]
    assert got.output_file_id.endswith(f"/{job_id}/{uploaded.filename}.out")

    content = litellm.file_content(
        file_id=got.output_file_id,
        custom_llm_provider="bedrock",
        aws_region_name="us-east-1",
        **_s3(world),
    )
    records = [json.loads(line) for line in content.content.splitlines()]
    assert [r["recordId"] for r in records] == ["req-0", "req-1", "req-2"]
    for record in records:
        assert record["modelInput"]["anthropic_version"] == "bedrock-2023-05-31"
        output = record["modelOutput"]
        assert output["type"] == "message" and output["content"][0]["text"]
        assert output["usage"]["output_tokens"] > 0


def test_litellm_with_a_wrong_secret_is_refused_and_creates_nothing(
    world: dict[str, Any],
) -> None:
    uploaded = _upload(world)  # moto takes any S3 credentials; batchrock is what checks
    before = _litellm_jobs(world)

    with pytest.raises(BedrockError) as info:
        _create_batch(world, uploaded.id, aws_secret_access_key="x" * 40)
    error = info.value
    assert error.status_code == 403
    assert error.headers["x-amzn-errortype"].startswith("InvalidSignatureException:")
    assert "The request signature we calculated does not match" in str(error)
    assert _litellm_jobs(world) == before

    with pytest.raises(BedrockError) as info:  # an access key the file does not list
        _create_batch(world, uploaded.id, aws_access_key_id="AKIAUNKNOWN000000009")
    assert info.value.status_code == 403
    assert info.value.headers["x-amzn-errortype"].startswith("UnrecognizedClientException:")
    assert _litellm_jobs(world) == before

    job = client(world["server"].url).create_model_invocation_job(
        jobName="litellm-probe",
        roleArn=ROLE,
        modelId=MODEL,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": uploaded.id}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{world['bucket']}/out/"}},
    )
    with pytest.raises(ClientError) as denied:  # retrieve_batch goes through boto3
        litellm.retrieve_batch(batch_id=job["jobArn"], **_aws(world, secret="y" * 40))
    assert denied.value.response["Error"]["Code"] == "InvalidSignatureException"
    with pytest.raises(ClientError) as foreign:  # another account's right key: not its job
        litellm.retrieve_batch(batch_id=job["jobArn"], **_aws(world, BOB))
    assert foreign.value.response["Error"]["Code"] == "ResourceNotFoundException"
