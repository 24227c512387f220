"""Create, Get, Stop and tags through the real boto3 client against a real server process."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from batchrock.jobs import JobStatus
from batchrock.store.sqlite import SqliteStore
from tests.api.conftest import create_args
from tests.api.wire import call
from tests.conftest import ServerProcess, bedrock_client

ARN = re.compile(r"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/([a-z0-9]{12})")


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def force_status(server: ServerProcess, job_id: str, *path: JobStatus) -> None:
    """Move a job along ``path`` the way the engine would, through the same SQLite file."""

    async def run() -> None:
        store = await SqliteStore.open(server.data_dir / "batchrock.sqlite3")
        try:
            for status in path:
                await store.transition(job_id, status, now=datetime.now(UTC))
        finally:
            await store.close()

    asyncio.run(run())


def test_create_returns_arn_and_get_returns_every_member(client: Any) -> None:
    token = str(uuid.uuid4())
    before = datetime.now(UTC) - timedelta(seconds=1)
    resp = client.create_model_invocation_job(
        **create_args(
            "full-job",
            clientRequestToken=token,
            inputDataConfig={
                "s3InputDataConfig": {
                    "s3InputFormat": "JSONL",
                    "s3Uri": "s3://in-bucket/input/records.jsonl",
                    "s3BucketOwner": "111122223333",
                }
            },
            outputDataConfig={
                "s3OutputDataConfig": {
                    "s3Uri": "s3://out-bucket/output/",
                    "s3EncryptionKeyId": "alias/my-key",
                    "s3BucketOwner": "111122223333",
                }
            },
            vpcConfig={"subnetIds": ["subnet-1", "subnet-2"], "securityGroupIds": ["sg-1"]},
            timeoutDurationInHours=72,
            modelInvocationType="Converse",
            tags=[{"key": "team", "value": "ml"}],
        )
    )
    arn = resp["jobArn"]
    match = ARN.fullmatch(arn)
    assert match, arn

    job = client.get_model_invocation_job(jobIdentifier=arn)
    assert job["jobArn"] == arn
    assert job["jobName"] == "full-job"
    assert job["status"] == "Submitted"
    assert job["clientRequestToken"] == token
    assert job["roleArn"] == "arn:aws:iam::123456789012:role/BedrockBatch"
    assert job["modelId"] == "anthropic.claude-3-haiku-20240307-v1:0"
    assert job["inputDataConfig"] == {
        "s3InputDataConfig": {
            "s3InputFormat": "JSONL",
            "s3Uri": "s3://in-bucket/input/records.jsonl",
            "s3BucketOwner": "111122223333",
        }
    }
    assert job["outputDataConfig"] == {
        "s3OutputDataConfig": {
            "s3Uri": "s3://out-bucket/output/",
            "s3EncryptionKeyId": "alias/my-key",
            "s3BucketOwner": "111122223333",
        }
    }
    assert job["vpcConfig"] == {"subnetIds": ["subnet-1", "subnet-2"], "securityGroupIds": ["sg-1"]}
    assert job["timeoutDurationInHours"] == 72
    assert job["modelInvocationType"] == "Converse"
    assert before <= job["submitTime"] <= datetime.now(UTC)
    assert job["lastModifiedTime"] == job["submitTime"]
    assert job["jobExpirationTime"] == job["submitTime"] + timedelta(hours=72)
    assert "endTime" not in job
    # Counters are returned from the start, zero included.
    for counter in ("totalRecordCount", "processedRecordCount", "successRecordCount"):
        assert job[counter] == 0
    assert job["errorRecordCount"] == 0


def test_defaults_are_reported(client: Any) -> None:
    arn = client.create_model_invocation_job(**create_args("defaults"))["jobArn"]
    job = client.get_model_invocation_job(jobIdentifier=arn)
    assert job["timeoutDurationInHours"] == 24
    assert job["jobExpirationTime"] == job["submitTime"] + timedelta(hours=24)
    assert job["modelInvocationType"] == "InvokeModel"
    assert job["inputDataConfig"]["s3InputDataConfig"]["s3InputFormat"] == "JSONL"
    assert "vpcConfig" not in job
    assert "message" not in job


def test_get_accepts_bare_id_and_encoded_arn(client: Any, api_server: ServerProcess) -> None:
    arn = client.create_model_invocation_job(**create_args("by-id"))["jobArn"]
    job_id = arn.rsplit("/", 1)[1]
    assert client.get_model_invocation_job(jobIdentifier=job_id)["jobArn"] == arn
    # What SDKs put on the wire: the ARN percent-encoded into one path segment.
    encoded = arn.replace(":", "%3A").replace("/", "%2F")
    reply = call(api_server.url, "GET", f"/model-invocation-job/{encoded}")
    assert reply.status == 200
    body = reply.json()
    assert body["jobArn"] == arn
    # Wire timestamps are ISO 8601 strings with milliseconds and Z.
    for member in ("submitTime", "lastModifiedTime", "jobExpirationTime"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body[member])
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-amzn-requestid"]


def test_client_request_token_is_idempotent(client: Any) -> None:
    token = "retry-" + uuid.uuid4().hex
    first = client.create_model_invocation_job(**create_args("idem-a", clientRequestToken=token))
    again = client.create_model_invocation_job(**create_args("idem-b", clientRequestToken=token))
    assert again["jobArn"] == first["jobArn"]
    job = client.get_model_invocation_job(jobIdentifier=first["jobArn"])
    assert job["jobName"] == "idem-a"
    names = [
        j["jobName"]
        for j in client.list_model_invocation_jobs(nameContains="idem-", maxResults=100)[
            "invocationJobSummaries"
        ]
    ]
    assert names == ["idem-a"]


def test_token_is_per_account(api_server: ServerProcess) -> None:
    token = uuid.uuid4().hex
    a = bedrock_client(api_server.url, access_key="111111111111")
    b = bedrock_client(api_server.url, access_key="222222222222")
    arn_a = a.create_model_invocation_job(**create_args("acct", clientRequestToken=token))["jobArn"]
    arn_b = b.create_model_invocation_job(**create_args("acct", clientRequestToken=token))["jobArn"]
    assert arn_a != arn_b
    assert ":111111111111:" in arn_a and ":222222222222:" in arn_b


def test_unknown_job_is_resource_not_found(client: Any) -> None:
    with pytest.raises(ClientError) as exc:
        client.get_model_invocation_job(jobIdentifier="abcdef123456")
    assert _code(exc) == "ResourceNotFoundException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "abcdef123456" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        client.stop_model_invocation_job(jobIdentifier="abcdef123456")
    assert _code(exc) == "ResourceNotFoundException"


def test_accounts_and_regions_are_isolated(api_server: ServerProcess) -> None:
    owner = bedrock_client(api_server.url, access_key="333333333333")
    other_account = bedrock_client(api_server.url, access_key="444444444444")
    other_region = bedrock_client(api_server.url, access_key="333333333333", region="eu-west-1")
    arn = owner.create_model_invocation_job(**create_args("isolated"))["jobArn"]
    job_id = arn.rsplit("/", 1)[1]
    for stranger in (other_account, other_region):
        for ident in (arn, job_id):
            with pytest.raises(ClientError) as exc:
                stranger.get_model_invocation_job(jobIdentifier=ident)
            assert _code(exc) == "ResourceNotFoundException"
        with pytest.raises(ClientError) as exc:
            stranger.stop_model_invocation_job(jobIdentifier=arn)
        assert _code(exc) == "ResourceNotFoundException"
        listed = stranger.list_model_invocation_jobs(nameContains="isolated")
        assert listed["invocationJobSummaries"] == []
    # The region comes from the SigV4 scope and shows in the ARN.
    eu_arn = other_region.create_model_invocation_job(**create_args("eu"))["jobArn"]
    assert eu_arn.startswith("arn:aws:bedrock:eu-west-1:333333333333:model-invocation-job/")


def test_two_accounts_never_reach_each_others_jobs(api_server: ServerProcess) -> None:
    """Every operation, with the other account's job named by ARN and by bare id: Get, Stop,
    TagResource, UntagResource, ListTagsForResource are ResourceNotFound, listings and
    another account's page tokens show nothing, and the job is unchanged afterwards."""
    a = bedrock_client(api_server.url, access_key="616161616161")
    b = bedrock_client(api_server.url, access_key="626262626262")
    arn_a = a.create_model_invocation_job(
        **create_args("mine-a", tags=[{"key": "owner", "value": "a"}])
    )["jobArn"]
    a.create_model_invocation_job(**create_args("mine-a-2"))
    b.create_model_invocation_job(**create_args("mine-b"))
    # A's ARN, its bare id, and the ARN with B's own account put in: never B's job.
    as_if_b = arn_a.replace(":616161616161:", ":626262626262:")
    bare = arn_a.rsplit("/", 1)[1]
    calls: list[Any] = []
    for ident in (arn_a, bare, as_if_b):
        calls += [
            lambda i=ident: b.get_model_invocation_job(jobIdentifier=i),
            lambda i=ident: b.stop_model_invocation_job(jobIdentifier=i),
        ]
    for arn in (arn_a, as_if_b):  # the tag operations take ARNs only
        calls += [
            lambda i=arn: b.tag_resource(resourceARN=i, tags=[{"key": "k", "value": "v"}]),
            lambda i=arn: b.untag_resource(resourceARN=i, tagKeys=["owner"]),
            lambda i=arn: b.list_tags_for_resource(resourceARN=i),
        ]
    for call_one in calls:
        with pytest.raises(ClientError) as exc:
            call_one()
        assert _code(exc) == "ResourceNotFoundException"
    for kw in ({}, {"nameContains": "mine-a"}, {"statusEquals": "Submitted"}):
        listed = b.list_model_invocation_jobs(**kw)["invocationJobSummaries"]
        assert [j["jobName"] for j in listed if j["jobName"].startswith("mine-a")] == []
    page = a.list_model_invocation_jobs(maxResults=1, nameContains="mine-a")
    with pytest.raises(ClientError) as exc:
        b.list_model_invocation_jobs(
            maxResults=1, nameContains="mine-a", nextToken=page["nextToken"]
        )
    assert _code(exc) == "ValidationException"
    job = a.get_model_invocation_job(jobIdentifier=arn_a)
    assert job["status"] == "Submitted"
    assert a.list_tags_for_resource(resourceARN=arn_a)["tags"] == [{"key": "owner", "value": "a"}]


def test_stop_moves_unfinished_job_to_stopping(client: Any) -> None:
    arn = client.create_model_invocation_job(**create_args("to-stop"))["jobArn"]
    assert (
        client.stop_model_invocation_job(jobIdentifier=arn)["ResponseMetadata"]["HTTPStatusCode"]
        == 200
    )
    job = client.get_model_invocation_job(jobIdentifier=arn)
    assert job["status"] == "Stopping"
    assert job["lastModifiedTime"] >= job["submitTime"]
    # Asking again while it stops is harmless.
    client.stop_model_invocation_job(jobIdentifier=arn.rsplit("/", 1)[1])
    assert client.get_model_invocation_job(jobIdentifier=arn)["status"] == "Stopping"


@pytest.mark.parametrize(
    "path",
    [
        (JobStatus.VALIDATING, JobStatus.SCHEDULED, JobStatus.IN_PROGRESS, JobStatus.COMPLETED),
        (JobStatus.VALIDATING, JobStatus.FAILED),
        (JobStatus.VALIDATING, JobStatus.SCHEDULED, JobStatus.EXPIRED),
        (JobStatus.STOPPING, JobStatus.STOPPED),
    ],
)
def test_stop_finished_job_names_its_state(
    client: Any, api_server: ServerProcess, path: tuple[JobStatus, ...]
) -> None:
    arn = client.create_model_invocation_job(**create_args("finished"))["jobArn"]
    force_status(api_server, arn.rsplit("/", 1)[1], *path)
    with pytest.raises(ClientError) as exc:
        client.stop_model_invocation_job(jobIdentifier=arn)
    assert _code(exc) == "ValidationException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert f"State was: {path[-1].value}" in exc.value.response["Error"]["Message"]
    job = client.get_model_invocation_job(jobIdentifier=arn)
    assert job["status"] == path[-1].value
    assert job["endTime"] >= job["submitTime"]


def test_tags_round_trip(client: Any) -> None:
    arn = client.create_model_invocation_job(
        **create_args("tagged", tags=[{"key": "team", "value": "ml"}, {"key": "env", "value": ""}])
    )["jobArn"]
    tags = client.list_tags_for_resource(resourceARN=arn)["tags"]
    assert sorted((t["key"], t["value"]) for t in tags) == [("env", ""), ("team", "ml")]
    client.tag_resource(
        resourceARN=arn, tags=[{"key": "team", "value": "search"}, {"key": "cost", "value": "42"}]
    )
    client.untag_resource(resourceARN=arn, tagKeys=["env", "not-there"])
    tags = client.list_tags_for_resource(resourceARN=arn)["tags"]
    assert sorted((t["key"], t["value"]) for t in tags) == [("cost", "42"), ("team", "search")]


def test_too_many_tags(client: Any) -> None:
    arn = client.create_model_invocation_job(
        **create_args("many-tags", tags=[{"key": f"k{i}", "value": "v"} for i in range(45)])
    )["jobArn"]
    with pytest.raises(ClientError) as exc:
        client.tag_resource(
            resourceARN=arn, tags=[{"key": f"n{i}", "value": "v"} for i in range(10)]
        )
    assert _code(exc) == "TooManyTagsException"
    assert exc.value.response["Error"].get("resourceName", arn) == arn
    # Nothing was added.
    assert len(client.list_tags_for_resource(resourceARN=arn)["tags"]) == 45
    with pytest.raises(ClientError) as exc:
        client.create_model_invocation_job(
            **create_args("too-many", tags=[{"key": f"k{i}", "value": "v"} for i in range(51)])
        )
    assert _code(exc) == "TooManyTagsException"


def test_tags_on_unknown_resource(client: Any) -> None:
    missing = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/zzzzzzzzzzzz"
    for call_it in (
        lambda: client.list_tags_for_resource(resourceARN=missing),
        lambda: client.tag_resource(resourceARN=missing, tags=[{"key": "a", "value": "b"}]),
        lambda: client.untag_resource(resourceARN=missing, tagKeys=["a"]),
    ):
        with pytest.raises(ClientError) as exc:
            call_it()
        assert _code(exc) == "ResourceNotFoundException"


def test_jobs_survive_restart(server_factory: Any) -> None:
    server = server_factory(engine=False)
    client = bedrock_client(server.url)
    arn = client.create_model_invocation_job(
        **create_args(
            "durable", clientRequestToken="durable-token", tags=[{"key": "a", "value": "b"}]
        )
    )["jobArn"]
    stopped = client.create_model_invocation_job(**create_args("durable-stopped"))["jobArn"]
    client.stop_model_invocation_job(jobIdentifier=stopped)
    before = client.get_model_invocation_job(jobIdentifier=arn)

    server.kill()
    server.start()
    client = bedrock_client(server.url)
    after = client.get_model_invocation_job(jobIdentifier=arn)
    before.pop("ResponseMetadata")
    after.pop("ResponseMetadata")
    assert after == before
    assert client.get_model_invocation_job(jobIdentifier=stopped)["status"] == "Stopping"
    assert client.list_tags_for_resource(resourceARN=arn)["tags"] == [{"key": "a", "value": "b"}]
    # The idempotency token is durable too.
    again = client.create_model_invocation_job(
        **create_args("durable", clientRequestToken="durable-token")
    )
    assert again["jobArn"] == arn
