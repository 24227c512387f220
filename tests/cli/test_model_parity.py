"""Validation messages and request serialisation agree with botocore for the same parameters.

botocore is what AWS CLI uses; these cases compare our output with botocore's, byte for byte,
over valid and broken inputs for every operation the CLI serves.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import botocore.session
import pytest
from botocore.validate import ParamValidator

from batchrock.cli import protocol, validate
from batchrock.cli.model import load

ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcd1234efgh"
GOOD_CREATE: dict[str, Any] = {
    "jobName": "j",
    "roleArn": "arn:aws:iam::123456789012:role/R",
    "clientRequestToken": "tok",
    "modelId": "m.x",
    "inputDataConfig": {
        "s3InputDataConfig": {"s3Uri": "s3://b/in.jsonl", "s3InputFormat": "JSONL"}
    },
    "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://b/out/"}},
}

CASES: list[tuple[str, dict[str, Any]]] = [
    ("ListModelInvocationJobs", {}),
    ("ListModelInvocationJobs", {"maxResults": 0, "nameContains": "", "nextToken": ""}),
    ("ListModelInvocationJobs", {"maxResults": "2", "sortOrder": 3, "bogus": 1}),
    ("ListModelInvocationJobs", {"submitTimeAfter": "yesterday", "submitTimeBefore": {}}),
    ("ListModelInvocationJobs", {"submitTimeAfter": 1714561200, "statusEquals": None}),
    ("ListModelInvocationJobs", {"maxResults": True, "nextToken": ["x"]}),
    ("CreateModelInvocationJob", {}),
    ("CreateModelInvocationJob", GOOD_CREATE),
    ("CreateModelInvocationJob", {**GOOD_CREATE, "inputDataConfig": {}}),
    (
        "CreateModelInvocationJob",
        {**GOOD_CREATE, "outputDataConfig": {"s3OutputDataConfig": {}, "x": 1}},
    ),
    (
        "CreateModelInvocationJob",
        {
            **GOOD_CREATE,
            "timeoutDurationInHours": 2,
            "vpcConfig": {"subnetIds": [], "securityGroupIds": [1]},
        },
    ),
    (
        "CreateModelInvocationJob",
        {**GOOD_CREATE, "tags": [{"key": ""}, "x", {"key": 1, "value": None}]},
    ),
    ("CreateModelInvocationJob", {**GOOD_CREATE, "tags": {"a": "b"}, "vpcConfig": "x"}),
    ("GetModelInvocationJob", {"jobIdentifier": ARN}),
    ("GetModelInvocationJob", {"jobIdentifier": 5}),
    ("StopModelInvocationJob", {}),
    ("TagResource", {"resourceARN": "short", "tags": []}),
    ("UntagResource", {"resourceARN": ARN, "tagKeys": ["", "a", 3]}),
    ("ListTagsForResource", {"resourceARN": ARN, "extra": {"nested": 1}}),
]


@pytest.fixture(scope="module")
def client() -> Any:
    return botocore.session.get_session().create_client(
        "bedrock",
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
        endpoint_url="http://127.0.0.1:9",
    )


@pytest.mark.parametrize(("operation", "params"), CASES)
def test_validation_messages_match_botocore(operation: str, params: dict[str, Any]) -> None:
    model = load()
    op = next(o for o in model.operations.values() if o.name == operation)
    assert op.input is not None
    ours = validate.validate(model, params, model.shape(op.input))
    service = botocore.session.get_session().get_service_model("bedrock")
    report = ParamValidator().validate(params, service.operation_model(operation).input_shape)
    theirs = report.generate_report().split("\n") if report.has_errors() else []
    assert ours == theirs


SERIALISED: list[tuple[str, dict[str, Any]]] = [
    ("ListModelInvocationJobs", {}),
    (
        "ListModelInvocationJobs",
        {
            "submitTimeAfter": "2024-05-01T11:00:00+02:00",
            "submitTimeBefore": datetime(2024, 5, 2, 1, 2, 3, 500, tzinfo=UTC),
            "statusEquals": "Completed",
            "nameContains": "a b/c+d",
            "maxResults": 5,
            "nextToken": "tok==",
            "sortBy": "CreationTime",
            "sortOrder": "Descending",
        },
    ),
    (
        "CreateModelInvocationJob",
        {**GOOD_CREATE, "timeoutDurationInHours": 48, "tags": [{"key": "k", "value": "v"}]},
    ),
    ("GetModelInvocationJob", {"jobIdentifier": ARN}),
    ("StopModelInvocationJob", {"jobIdentifier": "abcd1234efgh"}),
    ("TagResource", {"resourceARN": ARN, "tags": [{"key": "k", "value": "v"}]}),
    ("UntagResource", {"resourceARN": ARN, "tagKeys": ["k"]}),
    ("ListTagsForResource", {"resourceARN": ARN}),
]


@pytest.mark.parametrize(("operation", "params"), SERIALISED)
def test_requests_serialise_like_botocore(
    client: Any, operation: str, params: dict[str, Any]
) -> None:
    model = load()
    op = next(o for o in model.operations.values() if o.name == operation)
    method, path, query, body = protocol.serialize(model, op, dict(params))
    operation_model = client.meta.service_model.operation_model(operation)
    request = client._serializer.serialize_to_request(dict(params), operation_model)
    assert method == request["method"]
    assert path == request["url_path"]
    theirs_query = (
        list(request["query_string"].items())
        if isinstance(request["query_string"], dict)
        else parse_qsl(urlsplit("?" + request["query_string"]).query)
    )
    assert sorted(query) == sorted((k, str(v)) for k, v in theirs_query)
    their_body = request["body"]
    if their_body in (b"", "", None):
        assert body in (None, b"")
    else:
        assert body is not None
        assert json.loads(body) == json.loads(their_body)


TIMESTAMPS = [
    "2024-05-01T11:00:00Z",
    "2024-05-01T11:00:00",
    "2024-05-01 11:00:00",
    "2024-05-01T11:00:00+02:00",
    "2024-05-01T11:00:00.250Z",
    "2024-05-01T11:00:00.1234567Z",
    "2024-05-01",
    "20240501T110000Z",
    "2024-05-01T11:00Z",
    "1714561200",
    "1714561200.5",
    "-1",
    "0",
    "1e9",
    "Wed, 01 May 2024 11:00:00 GMT",
    "May 1 2024 11am",
    "2024-05-01T11:00:00-0730",
    " 2024-05-01 ",
    1714561200,
    1714561200.25,
]


@pytest.mark.parametrize("value", TIMESTAMPS)
def test_timestamp_input_and_output_match_botocore(value: Any) -> None:
    from botocore.serialize import Serializer
    from botocore.utils import parse_timestamp, parse_to_aware_datetime

    from batchrock.cli import timestamps

    expected_wire = Serializer()._convert_timestamp_to_str(
        parse_to_aware_datetime(value), "iso8601"
    )
    assert timestamps.to_wire(value) == expected_wire
    # AWS CLI v2's default output rendering: parse_timestamp(value).isoformat()
    assert timestamps.render_iso8601(value) == parse_timestamp(value).isoformat()
