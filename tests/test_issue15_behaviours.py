"""Issue 15's list of concrete wrong behaviours, one by one, end to end: boto3 against a real
`batchrock serve` (one server, one job per family), the built-in model answering.

Covered exactly elsewhere, so only referenced here:

- structured output (Claude ``output_config``, Converse ``outputConfig`` and ``serviceTier``)
  and a forced tool on the built-in model and through an OpenAI-compatible route:
  tests/backends/test_jobs_e2e.py::test_structured_output_and_tools_on_the_builtin_model and
  ::test_structured_output_and_tools_through_the_openai_backend (the bodies are repeated below
  only as part of one Claude job);
- Nova Multimodal Embeddings (was ``required key [messages] not found``) and gpt-oss in its
  shape, with an embedding video in S3 that is missing:
  tests/backends/test_newer_families_e2e.py::test_nova_embeddings_and_gpt_oss_jobs;
- every refused model id (typos, other providers, wrong Region, profile-only):
  tests/api/test_catalogue.py::test_a_model_bedrock_does_not_offer_for_batch_fails_at_create;
- an inference-profile id reported as the profile's ARN by Get and List:
  tests/api/test_catalogue.py::test_an_inference_profile_id_comes_back_as_the_profile_arn.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest
from botocore.exceptions import ClientError

from tests.backends.test_jobs_e2e import FAST, claude, results, submit, wait
from tests.backends.test_structure import WEATHER
from tests.conftest import bedrock_client

pytestmark = pytest.mark.timeout(180)

CONTACT = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "email": {"type": "string"}},
    "required": ["name", "email"],
    "additionalProperties": False,
}


@pytest.fixture
def server(server_factory: Any) -> Any:
    return server_factory(**FAST)


@pytest.mark.parametrize("model_id", ["anthropic.claude-4-turbo-v9:0", "gpt-4o"])
def test_unknown_models_fail_at_create_before_any_s3_check(server: Any, model_id: str) -> None:
    # Neither bucket exists: the model is refused first, as on Bedrock, and nothing is stored.
    client = bedrock_client(server.url)
    with pytest.raises(ClientError) as caught:
        client.create_model_invocation_job(
            jobName="typo",
            roleArn="arn:aws:iam::123456789012:role/batch",
            modelId=model_id,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://no-such-bucket/in/"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://no-such-bucket/out/"}},
        )
    error = caught.value.response["Error"]
    assert (error["Code"], error["Message"]) == (
        "ValidationException",
        "Batch inference is not supported for the requested model",
    )
    assert client.list_model_invocation_jobs(nameContains="typo")["invocationJobSummaries"] == []


def test_inference_profile_id_is_reported_as_its_arn(server: Any) -> None:
    profile = "us.amazon.nova-2-lite-v1:0"
    arn = submit(server, profile, [{"recordId": "1", "modelInput": {"messages": []}}], "p")
    got = bedrock_client(server.url).get_model_invocation_job(jobIdentifier=arn)["modelId"]
    account = arn.split(":")[4]
    assert got == f"arn:aws:bedrock:us-east-1:{account}:inference-profile/{profile}"


def test_claude_structure_tools_thinking_and_cache_fields(server: Any) -> None:
    structured = claude("Extract the contact: Ann, ann@example.com")
    structured["output_config"] = {"format": {"type": "json_schema", "schema": CONTACT}}
    forced = claude("Weather in Paris?")
    forced |= {"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}}
    thinking = claude("Why is the sky blue?")
    thinking |= {"max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    records = [
        {"recordId": "structured", "modelInput": structured},
        {"recordId": "forced", "modelInput": forced},
        {"recordId": "thinking", "modelInput": thinking},
    ]
    arn = submit(server, "us.anthropic.claude-sonnet-4-5-20250929-v1:0", records, "claude")
    assert wait(server, arn)["status"] == "Completed"
    lines, _ = results(server, arn)
    out = {line["recordId"]: line["modelOutput"] for line in lines}
    # output_config accepted (was "extraneous key [output_config] is not permitted").
    assert out["structured"]["stop_reason"] == "end_turn"
    jsonschema.validate(orjson.loads(out["structured"]["content"][0]["text"]), CONTACT)
    # A forced tool is a tool_use block (was text with end_turn).
    assert out["forced"]["stop_reason"] == "tool_use"
    (call,) = out["forced"]["content"]
    assert (call["type"], call["name"]) == ("tool_use", "get_weather")
    jsonschema.validate(call["input"], WEATHER["input_schema"])
    # Thinking gives a thinking block first, then the answer.
    blocks = out["thinking"]["content"]
    assert blocks[0]["type"] == "thinking" and blocks[0]["thinking"]
    assert "signature" in blocks[0]
    assert blocks[-1]["type"] == "text" and blocks[-1]["text"]
    # Usage carries Claude's cache fields.
    for body in out.values():
        usage = body["usage"]
        assert usage["cache_creation_input_tokens"] == 0
        assert usage["cache_read_input_tokens"] == 0
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0


def test_nova_video_in_s3_that_is_missing_is_a_record_error(server: Any) -> None:
    clip = server.data_dir / "s3" / "bucket" / "media" / "here.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42")

    def video(uri: str) -> dict[str, Any]:
        source = {"s3Location": {"uri": uri}}
        content = [{"video": {"format": "mp4", "source": source}}, {"text": "Describe it"}]
        return {"messages": [{"role": "user", "content": content}]}

    records = [
        {"recordId": "here", "modelInput": video("s3://bucket/media/here.mp4")},
        {"recordId": "gone", "modelInput": video("s3://bucket/media/gone.mp4")},
    ]
    arn = submit(server, "amazon.nova-lite-v1:0", records, "nova-video")
    # Record errors leave the job Completed, counted in the manifest (docs/engine.md).
    assert wait(server, arn)["status"] == "Completed"
    lines, manifest = results(server, arn)
    by_id = {line["recordId"]: line for line in lines}
    assert by_id["here"]["modelOutput"]["output"]["message"]["content"][0]["text"]
    error = by_id["gone"]["error"]
    assert error["errorCode"] == 400
    assert "s3://bucket/media/gone.mp4" in error["errorMessage"]
    assert (manifest["successRecordCount"], manifest["errorRecordCount"]) == (1, 1)


def test_qwen_and_deepseek_v3_answer_in_their_shapes(server: Any) -> None:
    chat = {"messages": [{"role": "user", "content": "Write a haiku"}], "max_tokens": 64}
    qwen = submit(server, "qwen.qwen3-32b-v1:0", [{"recordId": "q", "modelInput": chat}], "qw")
    assert wait(server, qwen)["status"] == "Completed"
    ((line,), _) = results(server, qwen)
    out = line["modelOutput"]
    assert out["object"] == "chat.completion"
    assert out["model"] == "qwen.qwen3-32b-v1:0"
    assert out["choices"][0]["message"]["role"] == "assistant"
    assert out["choices"][0]["message"]["content"]
    assert out["choices"][0]["finish_reason"] in {"stop", "length"}
    assert set(out["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    prompt = {"prompt": "<｜User｜>Why?<｜Assistant｜>", "max_tokens": 100}
    records = [{"recordId": "p", "modelInput": prompt}, {"recordId": "c", "modelInput": chat}]
    ds = submit(server, "deepseek.v3-v1:0", records, "ds")
    assert wait(server, ds)["status"] == "Completed"
    lines, _ = results(server, ds)
    by_id = {x["recordId"]: x["modelOutput"] for x in lines}
    assert set(by_id["p"]) == {"choices"}
    assert set(by_id["p"]["choices"][0]) == {"text", "stop_reason"}
    assert by_id["c"]["object"] == "chat.completion"


def test_application_inference_profile_is_reported_whole_not_as_its_resource_id(
    server: Any,
) -> None:
    # The resource id alone ("abcd1234efgh") names no model: the ARN is reported as given.
    client = bedrock_client(server.url)
    probe = submit(server, "amazon.nova-lite-v1:0", [{"recordId": "x", "modelInput": {}}], "pr")
    account = probe.split(":")[4]
    profile = f"arn:aws:bedrock:us-east-1:{account}:application-inference-profile/abcd1234efgh"
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}
    arn = submit(server, profile, [{"recordId": "a", "modelInput": chat}], "app")
    assert client.get_model_invocation_job(jobIdentifier=arn)["modelId"] == profile
    assert wait(server, arn)["status"] == "Completed"
    ((line,), _) = results(server, arn)
    assert line["modelOutput"]["model"] == profile


def test_per_model_job_size_quota_end_to_end(server: Any) -> None:
    # Nova Pro's batch jobs may total 100 GB, other models' 5 GB (service-facts §3; the
    # catalogue's per-model quota, the setting left at Bedrock's default). Six sparse files of
    # 1 GiB each (no disk used; sizes come from the listing): over 5 GiB, within 100 GB.
    folder = server.data_dir / "s3" / "bucket" / "big"
    folder.mkdir(parents=True)
    for i in range(6):
        with (folder / f"{i}.jsonl").open("wb") as f:
            f.truncate(1024**3)
    client = bedrock_client(server.url)

    def job(model_id: str) -> dict[str, Any]:
        arn = client.create_model_invocation_job(
            jobName=f"big-{model_id.split('.')[1].split(':')[0]}",
            roleArn="arn:aws:iam::123456789012:role/batch",
            modelId=model_id,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://bucket/big/"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bucket/out/"}},
        )["jobArn"]
        return wait(server, arn)

    lite = job("amazon.nova-lite-v1:0")
    assert lite["status"] == "Failed"
    assert "Batch inference job size' of 5368709120 bytes" in lite["message"]
    pro = job("amazon.nova-pro-v1:0")
    # Past the size check; the (zero-filled) content is what fails it.
    assert pro["status"] == "Failed"
    assert "job size" not in pro["message"], pro["message"]
    assert "s3://bucket/big/0.jsonl" in pro["message"]
