"""Server-side validation from the botocore model, and the error shape of every failure."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
import pytest
from botocore.exceptions import ClientError

from tests.api.conftest import create_args
from tests.api.wire import Reply, call
from tests.conftest import ServerProcess

NAME_PATTERN = r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}"
STATUSES = (
    "Submitted, InProgress, Completed, Failed, Stopping, Stopped, PartiallyCompleted, Expired, "
    "Validating, Scheduled"
)


def assert_error(reply: Reply, status: int, code: str, message: str | None = None) -> None:
    assert reply.status == status, reply.body
    assert reply.error_type == code
    assert reply.headers["x-amzn-errortype"].startswith(code + ":")
    assert reply.headers["x-amzn-requestid"]
    body = reply.json()
    assert isinstance(body["message"], str) and body["message"]
    assert b"Traceback" not in reply.body
    if message is not None:
        assert body["message"] == message


def _client_error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"maxResults": 5000},
            "1 validation error detected: Value '5000' at 'maxResults' failed to satisfy "
            "constraint: Member must have value less than or equal to 1000",
        ),
        (
            {"nameContains": "my job"},
            "1 validation error detected: Value 'my job' at 'nameContains' failed to satisfy "
            f"constraint: Member must satisfy regular expression pattern: {NAME_PATTERN}",
        ),
        (
            {"statusEquals": "Done"},
            "1 validation error detected: Value 'Done' at 'statusEquals' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{STATUSES}]",
        ),
        (
            {"sortOrder": "down"},
            "1 validation error detected: Value 'down' at 'sortOrder' failed to satisfy "
            "constraint: Member must satisfy enum value set: [Ascending, Descending]",
        ),
        (
            {"sortBy": "Name"},
            "1 validation error detected: Value 'Name' at 'sortBy' failed to satisfy "
            "constraint: Member must satisfy enum value set: [CreationTime]",
        ),
        (
            {"nameContains": "x" * 64},
            "1 validation error detected: Value '"
            + "x" * 64
            + "' at 'nameContains' failed to satisfy constraint: Member must have length less "
            "than or equal to 63",
        ),
    ],
)
def test_list_parameters_are_validated(client: Any, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ClientError) as exc:
        client.list_model_invocation_jobs(**params)
    assert _client_error(exc) == ("ValidationException", message)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_several_violations_are_listed_together(client: Any) -> None:
    with pytest.raises(ClientError) as exc:
        client.list_model_invocation_jobs(maxResults=5000, sortOrder="down")
    code, message = _client_error(exc)
    assert code == "ValidationException"
    assert message.startswith("2 validation errors detected: ")
    assert "'maxResults'" in message and "'sortOrder'" in message and "; " in message


@pytest.mark.parametrize(
    ("overrides", "member", "constraint"),
    [
        ({"jobName": "bad name!"}, "jobName", "Member must satisfy regular expression pattern"),
        ({"jobName": "-leading"}, "jobName", "Member must satisfy regular expression pattern"),
        ({"roleArn": "r"}, "roleArn", "Member must satisfy regular expression pattern"),
        ({"modelId": "bad model"}, "modelId", "Member must satisfy regular expression pattern"),
        (
            {"timeoutDurationInHours": 500},
            "timeoutDurationInHours",
            "Member must have value less than or equal to 168",
        ),
        (
            {"modelInvocationType": "Batch"},
            "modelInvocationType",
            "Member must satisfy enum value set: [InvokeModel, Converse]",
        ),
        (
            {"inputDataConfig": {"s3InputDataConfig": {"s3Uri": "x"}}},
            "inputDataConfig.s3InputDataConfig.s3Uri",
            "Member must satisfy regular expression pattern",
        ),
        (
            {"inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://b/in/"}}},
            "inputDataConfig.s3InputDataConfig.s3Uri",
            "Member must satisfy regular expression pattern",
        ),
        (
            {
                "inputDataConfig": {
                    "s3InputDataConfig": {"s3Uri": "s3://bucket/in/", "s3InputFormat": "CSV"}
                }
            },
            "inputDataConfig.s3InputDataConfig.s3InputFormat",
            "Member must satisfy enum value set: [JSONL]",
        ),
        (
            {"clientRequestToken": "a_b"},
            "clientRequestToken",
            "Member must satisfy regular expression pattern",
        ),
        (
            {"vpcConfig": {"subnetIds": ["s"] * 17, "securityGroupIds": ["g"]}},
            "vpcConfig.subnetIds",
            "Member must have length less than or equal to 16",
        ),
        (
            {"tags": [{"key": "k" * 129, "value": "v"}]},
            "tags.1.member.key",
            "Member must have length less than or equal to 128",
        ),
        (
            {"tags": [{"key": "ok", "value": "bad|value"}]},
            "tags.1.member.value",
            "Member must satisfy regular expression pattern",
        ),
    ],
)
def test_create_members_are_validated(
    client: Any, overrides: dict[str, Any], member: str, constraint: str
) -> None:
    with pytest.raises(ClientError) as exc:
        client.create_model_invocation_job(**create_args("valid-name", **overrides))
    code, message = _client_error(exc)
    assert code == "ValidationException"
    assert message.startswith("1 validation error detected: Value ")
    assert f"at '{member}' failed to satisfy constraint: {constraint}" in message


def test_nothing_is_created_by_an_invalid_request(client: Any) -> None:
    with pytest.raises(ClientError):
        client.create_model_invocation_job(**create_args("never-created", roleArn="nope"))
    listed = client.list_model_invocation_jobs(nameContains="never-created")
    assert listed["invocationJobSummaries"] == []


def test_job_identifier_must_be_an_id_or_arn(client: Any) -> None:
    with pytest.raises(ClientError) as exc:
        client.get_model_invocation_job(jobIdentifier="my-batch-job")
    code, message = _client_error(exc)
    assert code == "ValidationException"
    assert "at 'jobIdentifier'" in message


# --- what boto3 would not send: raw HTTP ---------------------------------------------------


def _post(server: ServerProcess, body: Any, path: str = "/model-invocation-job") -> Reply:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return call(server.url, "POST", path, body=raw)


def test_missing_required_members(api_server: ServerProcess) -> None:
    reply = _post(api_server, {"jobName": "x"})
    assert_error(reply, 400, "ValidationException")
    message = reply.json()["message"]
    assert message.startswith("4 validation errors detected: ")
    for member in ("roleArn", "modelId", "inputDataConfig", "outputDataConfig"):
        assert (
            f"Value null at '{member}' failed to satisfy constraint: Member must not be null"
            in (message)
        )


def test_union_needs_exactly_one_member(api_server: ServerProcess) -> None:
    body = create_args("union")
    body["inputDataConfig"] = {}
    reply = _post(api_server, body)
    assert_error(reply, 400, "ValidationException")
    assert "at 'inputDataConfig'" in reply.json()["message"]
    assert "exactly one" in reply.json()["message"]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"],
)
def test_malformed_body(api_server: ServerProcess, body: bytes) -> None:
    assert_error(_post(api_server, body), 400, "ValidationException")


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("jobName", 5),
        ("timeoutDurationInHours", "48"),
        ("timeoutDurationInHours", True),
        ("tags", {"key": "v"}),
        ("inputDataConfig", "s3://bucket/x"),
        ("vpcConfig", []),
    ],
)
def test_wrong_types(api_server: ServerProcess, member: str, value: Any) -> None:
    body = create_args("types")
    body[member] = value
    reply = _post(api_server, body)
    assert_error(reply, 400, "ValidationException")
    assert member in reply.json()["message"]


def test_wrong_query_types(api_server: ServerProcess) -> None:
    reply = call(api_server.url, "GET", "/model-invocation-jobs?maxResults=ten")
    assert_error(reply, 400, "ValidationException")
    assert "'maxResults'" in reply.json()["message"]
    reply = call(api_server.url, "GET", "/model-invocation-jobs?submitTimeAfter=yesterday")
    assert_error(reply, 400, "ValidationException")
    assert "'submitTimeAfter'" in reply.json()["message"]
    reply = call(api_server.url, "GET", "/model-invocation-jobs?maxResults=0")
    assert_error(reply, 400, "ValidationException")
    assert "greater than or equal to 1" in reply.json()["message"]


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("submitTimeAfter", "1e20"),
        ("submitTimeAfter", "inf"),
        ("submitTimeAfter", "-inf"),
        ("submitTimeAfter", "1e308"),
        ("submitTimeAfter", "-1e20"),
        ("submitTimeAfter", "1e12"),
        ("submitTimeBefore", "9999-12-31T23:59:59-01:00"),
        ("submitTimeBefore", "0001-01-01T00:00:00+01:00"),
    ],
)
def test_times_out_of_range_are_a_validation_error(
    api_server: ServerProcess, member: str, value: str
) -> None:
    reply = call(api_server.url, "GET", f"/model-invocation-jobs?{member}={quote(value)}")
    assert_error(
        reply,
        400,
        "ValidationException",
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        "constraint: Member must be a time between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
    )


def test_nan_is_not_a_time(api_server: ServerProcess) -> None:
    reply = call(api_server.url, "GET", "/model-invocation-jobs?submitTimeAfter=nan")
    assert_error(reply, 400, "ValidationException")
    assert "Value 'nan' at 'submitTimeAfter'" in reply.json()["message"]
    assert "ISO 8601" in reply.json()["message"]


def test_the_extremes_of_the_range_are_accepted(api_server: ServerProcess) -> None:
    for value in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "-62135596800"):
        query = f"submitTimeAfter={quote(value)}&submitTimeBefore={quote(value)}"
        reply = call(api_server.url, "GET", f"/model-invocation-jobs?{query}")
        assert reply.status == 200, (value, reply.body)


def test_timestamps_in_any_rfc3339_form(api_server: ServerProcess) -> None:
    for value in (
        "2024-08-01T00%3A00%3A00Z",
        "2024-08-02T03%3A04%3A05.123000Z",
        "2024-08-02T03%3A04%3A05.123456789Z",
        "2024-08-02T10%3A00%3A00%2B02%3A00",
        "1722556800",
    ):
        reply = call(api_server.url, "GET", f"/model-invocation-jobs?submitTimeAfter={value}")
        assert reply.status == 200, (value, reply.body)


def test_unknown_route_and_method(api_server: ServerProcess) -> None:
    assert_error(call(api_server.url, "GET", "/no-such-thing"), 404, "UnknownOperationException")
    assert_error(
        call(api_server.url, "DELETE", "/model-invocation-job/abcdef123456"),
        405,
        "UnknownOperationException",
    )
    assert_error(
        call(api_server.url, "PUT", "/model-invocation-jobs"), 405, "UnknownOperationException"
    )


def test_oversized_body(api_server: ServerProcess) -> None:
    body = create_args("big")
    body["padding"] = "x" * (2 * 1024 * 1024)
    reply = _post(api_server, body)
    assert_error(reply, 413, "ValidationException")


def test_unknown_members_are_ignored(api_server: ServerProcess) -> None:
    body = create_args("extra-members")
    body["someFutureMember"] = {"a": 1}
    reply = _post(api_server, body)
    assert reply.status == 200
    assert reply.json()["jobArn"].startswith("arn:aws:bedrock:")


# Values for each kind of member of a flat shape: valid, invalid and of the wrong type.
_STRING_SAMPLES: list[Any] = [
    "",
    "abcdef123456",
    "ABCDEF123456",
    "abcdef12345",
    "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdef123456",
    "arn:aws:bedrock:us-east-1:12345678901:model-invocation-job/abcdef123456",
    "x" * 1011,
    "x" * 1012,
    "Completed",
    "completed",
    "Descending",
    "CreationTime",
    "bench-job-1",
    "a\u00e9b",
    "\ud800",
    None,
    1,
    True,
    1.5,
    [],
    {},
]
_INTEGER_SAMPLES: list[Any] = [None, 0, 1, 1000, 1001, -1, True, False, 1.0, "5", [], 2**70]
_TIMESTAMP_SAMPLES: list[Any] = [None, "2024-08-01T12:34:56Z", "nope", 0, 1.5, True, [], {}]


def test_the_flat_shapes_shortcut_agrees_with_the_generic_walk() -> None:
    """Get, Stop, ListTags and List check their members by an unrolled path
    (validation._satisfies); for every combination of sample values, it may say "valid" only
    where the generic walk finds no violation and no type mismatch, and must say so for
    every such request (else it saves nothing)."""
    from batchrock.api import model, validation

    shapes = [model.operation(name).input_shape for name in model.OPERATIONS]
    validation.prepare(shapes)
    flat = {name: entry for name, entry in validation._FLAT.items()}
    assert set(flat) == {
        "GetModelInvocationJobRequest",
        "StopModelInvocationJobRequest",
        "ListTagsForResourceRequest",
        "ListModelInvocationJobsRequest",
    }
    samples = {
        "string": _STRING_SAMPLES,
        "integer": _INTEGER_SAMPLES,
        "long": _INTEGER_SAMPLES,
        "timestamp": _TIMESTAMP_SAMPLES,
    }
    checked = valid = 0
    for shape, members in flat.values():
        for name, _, kind, *_ in members:
            for value in samples[kind]:
                params = {name: value} if value is not None else {}
                # The other members: absent, then each at a valid value.
                for others in ({}, _valid_others(shape, name)):
                    request = {**others, **params}
                    try:
                        generic = not list(validation.check_structure(shape, request))
                    except validation.TypeMismatch:
                        generic = False
                    assert validation._satisfies(members, request) is generic, (name, request)
                    checked += 1
                    valid += generic
    assert valid > 20 and checked - valid > 20


def _valid_others(shape: Any, but: str) -> dict[str, Any]:
    good = {
        "jobIdentifier": "abcdef123456",
        "resourceARN": "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdef123456",
        "maxResults": 10,
        "statusEquals": "Completed",
        "sortBy": "CreationTime",
        "sortOrder": "Ascending",
        "nameContains": "job",
        "nextToken": "abc",
        "submitTimeAfter": "2024-08-01T12:34:56Z",
        "submitTimeBefore": 0,
    }
    return {name: good[name] for name in shape.members if name != but}
