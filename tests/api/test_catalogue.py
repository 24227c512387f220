"""The model catalogue at CreateModelInvocationJob, through boto3 and a real server.

Bedrock refuses a model it does not offer for batch inference, in the caller's Region, at Create
and before anything else (service-facts §3); a route of the models config or the setting
allow_any_model lets any id through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import bedrock_client

from .conftest import create_args

REFUSAL = "Batch inference is not supported for the requested model"


def _refused(client: Any, model_id: str) -> None:
    name = f"refused-{abs(hash(model_id))}"
    with pytest.raises(ClientError) as caught:
        client.create_model_invocation_job(**create_args(name, modelId=model_id))
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "ValidationException"
    assert error["Error"]["Message"] == REFUSAL
    # Nothing was stored: the name is free and no job carries it.
    listed = client.list_model_invocation_jobs(nameContains=name)["invocationJobSummaries"]
    assert listed == []


@pytest.mark.parametrize(
    "model_id",
    [
        "anthropic.claude-4-turbo-v9:0",  # a typo'd / invented Claude id
        "gpt-4o",  # another provider's name
        "anthropic.claude-sonnet-4-5-20250929-v1:0",  # profile only for batch: bare id refused
        "anthropic.claude-opus-4-1-20250805-v1:0",  # offered on demand, not for batch
        "eu.anthropic.claude-sonnet-4-5-20250929-v1:0",  # an EU profile called from us-east-1
        "us.anthropic.claude-3-haiku-20240307-v1:0",  # Claude 3 Haiku has no batch profile
        "arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
    ],
)
def test_a_model_bedrock_does_not_offer_for_batch_fails_at_create(
    client: Any, model_id: str
) -> None:
    _refused(client, model_id)


@pytest.mark.parametrize(
    "model_id",
    [
        "anthropic.claude-3-haiku-20240307-v1:0",
        "amazon.nova-lite-v1:0",
        "amazon.titan-embed-text-v2:0",
        "amazon.nova-2-multimodal-embeddings-v1:0",  # us-east-1 only
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "global.anthropic.claude-haiku-4-5-20251001-v1:0",
        "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0",
    ],
)
def test_a_catalogued_model_is_accepted(client: Any, model_id: str) -> None:
    arn = client.create_model_invocation_job(
        **create_args(f"ok-{abs(hash(model_id))}", modelId=model_id)
    )["jobArn"]
    assert client.get_model_invocation_job(jobIdentifier=arn)["status"] == "Submitted"


def test_a_region_the_model_is_not_offered_in_fails(api_server: Any) -> None:
    # Nova Multimodal Embeddings takes batch jobs in us-east-1 only; the Nova Premier
    # profile only from US Regions.
    west = bedrock_client(api_server.url, region="us-west-2")
    _refused(west, "amazon.nova-2-multimodal-embeddings-v1:0")
    frankfurt = bedrock_client(api_server.url, region="eu-central-1")
    _refused(frankfurt, "us.amazon.nova-premier-v1:0")
    _refused(frankfurt, "amazon.nova-lite-v1:0")  # bare id: us-east-1 and GovCloud only
    frankfurt.create_model_invocation_job(
        **create_args("nova-eu-profile", modelId="eu.amazon.nova-lite-v1:0")
    )


def test_an_inference_profile_id_comes_back_as_the_profile_arn(client: Any) -> None:
    profile = "us.amazon.nova-pro-v1:0"
    arn = client.create_model_invocation_job(**create_args("profile-arn", modelId=profile))[
        "jobArn"
    ]
    account = arn.split(":")[4]
    expected = f"arn:aws:bedrock:us-east-1:{account}:inference-profile/{profile}"
    assert client.get_model_invocation_job(jobIdentifier=arn)["modelId"] == expected
    summaries = client.list_model_invocation_jobs(nameContains="profile-arn")
    assert [s["modelId"] for s in summaries["invocationJobSummaries"]] == [expected]
    # A foundation-model id comes back unchanged.
    plain = client.create_model_invocation_job(**create_args("plain-id"))["jobArn"]
    got = client.get_model_invocation_job(jobIdentifier=plain)["modelId"]
    assert got == "anthropic.claude-3-haiku-20240307-v1:0"


def test_an_application_inference_profile_of_the_callers_account_is_accepted(
    client: Any,
) -> None:
    arn = client.create_model_invocation_job(**create_args("probe"))["jobArn"]
    account = arn.split(":")[4]
    mine = f"arn:aws:bedrock:us-east-1:{account}:application-inference-profile/abcd1234efgh"
    created = client.create_model_invocation_job(**create_args("app-profile", modelId=mine))
    got = client.get_model_invocation_job(jobIdentifier=created["jobArn"])["modelId"]
    assert got == mine
    _refused(client, mine.replace("us-east-1", "us-west-2"))
    _refused(client, mine.replace(account, "999999999999"))


def test_a_routed_id_not_in_the_catalogue_is_accepted(server_factory: Any, tmp_path: Path) -> None:
    config = tmp_path / "models.toml"
    config.write_text('[[routes]]\nmodels = ["my-local-*"]\nbackend = "builtin"\n')
    server = server_factory(engine=False, models_config=config)
    client = bedrock_client(server.url)
    arn = client.create_model_invocation_job(**create_args("routed", modelId="my-local-llm"))[
        "jobArn"
    ]
    assert client.get_model_invocation_job(jobIdentifier=arn)["modelId"] == "my-local-llm"
    _refused(client, "gpt-4o")  # routes add ids; they do not switch the check off


def test_allow_any_model_restores_the_old_behaviour(server_factory: Any) -> None:
    server = server_factory(engine=False, allow_any_model=True)
    client = bedrock_client(server.url, region="us-west-2")
    for model_id in (
        "anthropic.claude-4-turbo-v9:0",
        "gpt-4o",
        "amazon.nova-2-multimodal-embeddings-v1:0",
    ):
        arn = client.create_model_invocation_job(
            **create_args(f"any-{abs(hash(model_id))}", modelId=model_id)
        )["jobArn"]
        assert client.get_model_invocation_job(jobIdentifier=arn)["modelId"] == model_id


def test_an_invocation_type_the_model_does_not_take_fails_at_create(client: Any) -> None:
    # Titan Text Embeddings takes InvokeModel bodies only: a Converse job is refused like the
    # model, nothing stored; the types the catalogue lists go through.
    name = "titan-converse"
    with pytest.raises(ClientError) as caught:
        client.create_model_invocation_job(
            **create_args(
                name, modelId="amazon.titan-embed-text-v2:0", modelInvocationType="Converse"
            )
        )
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"] == f"{REFUSAL} with modelInvocationType Converse."
    assert client.list_model_invocation_jobs(nameContains=name)["invocationJobSummaries"] == []
    for model_id, kind in [
        ("amazon.titan-embed-text-v2:0", "InvokeModel"),
        ("us.amazon.nova-lite-v1:0", "Converse"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "Converse"),
    ]:
        arn = client.create_model_invocation_job(
            **create_args(
                f"ok-{kind}-{abs(hash(model_id))}", modelId=model_id, modelInvocationType=kind
            )
        )["jobArn"]
        assert client.get_model_invocation_job(jobIdentifier=arn)["modelInvocationType"] == kind


def test_allow_any_model_allows_any_invocation_type(server_factory: Any) -> None:
    server = server_factory(engine=False, allow_any_model=True)
    client = bedrock_client(server.url)
    client.create_model_invocation_job(
        **create_args(
            "any-type", modelId="amazon.titan-embed-text-v2:0", modelInvocationType="Converse"
        )
    )
