"""A bounded, seeded fuzz of every operation, generated from the botocore model's input shapes.

Each request starts from a valid one and breaks it the way clients do: members of the wrong
type, huge, negative, non-finite and very long values, odd Unicode, missing required members,
extra members, unions with zero or two members, odd ARNs and percent-encodings in the path,
odd query strings and headers, bodies that are not JSON or nest deeply. It is sent with raw
HTTP to a real `batchrock serve`, and a share of it through boto3 (parameter validation off, so
its serializer sends what it is given). No answer may be a 5xx; every error carries
``x-amzn-ErrorType`` and a JSON ``message``; afterwards the server is healthy and its log holds
no traceback.

BATCHROCK_FUZZ_SEED and BATCHROCK_FUZZ_REQUESTS (per operation) change the run; a failure
names the seed and the request.
"""

from __future__ import annotations

import http.client
import os
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from botocore.exceptions import ClientError
from botocore.model import OperationModel, Shape

from batchrock.api import model
from tests.api.conftest import create_args
from tests.conftest import ServerProcess, bedrock_client

SEED = int(os.environ.get("BATCHROCK_FUZZ_SEED", "20261201"))
PER_OPERATION = int(os.environ.get("BATCHROCK_FUZZ_REQUESTS", "300"))
BOTO3_SHARE = 0.1


class Raw:
    """JSON text put into a body as is (numbers orjson will not write, lone surrogates...)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:60]!r})"


def dump(value: Any) -> bytes:
    if isinstance(value, Raw):
        return value.text.encode()
    if isinstance(value, dict):
        items = (orjson.dumps(str(k)) + b":" + dump(v) for k, v in value.items())
        return b"{" + b",".join(items) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(dump(v) for v in value) + b"]"
    return orjson.dumps(value)


ODD_STRINGS = [
    "",
    " ",
    "a" * 64,
    "a" * 5000,
    "a" + "-" * 30 + "!",
    "é😀\u0000\u202e",
    "\u3000",
    "../../etc/passwd",
    "%2F%2e%2e",
    "null",
    "true",
    "-1",
    "1e400",
    "'\"; DROP TABLE jobs; --",
    "\r\nX-Injected: 1",
    "s3://",
    "s3://bucket",
    "s3://b/" + "k" * 1100,
    "arn:aws:iam::123456789012:role/",
    "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/",
    "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefghijkl",
    "arn:aws-cn:bedrock:cn-north-1:123456789012:model-invocation-job/abcdefghijkl",
    "arn:aws:bedrock:eu-west-1:999999999999:model-invocation-job/abcdefghijkl",
    "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefghijkl/stop",
    "arn:" + ":" * 300,
    "abcdefghijkl",
    "ABCDEFGHIJKL",
]
ODD_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    24,
    72,
    168,
    2**31,
    -(2**31) - 1,
    2**63 - 1,
    1.5,
    -0.0,
    Raw("1e400"),
    Raw("-1e400"),
    Raw("123456789012345678901234567890"),
    Raw("1" * 5000),
]
ODD_TIMES = [
    "1e20",
    "inf",
    "-inf",
    "nan",
    "1e308",
    "-1e20",
    "1e12",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "2024-02-30T00:00:00Z",
    "2024-08-01T25:00:00Z",
    "2024-08-01",
    "2024-08-01T00:00:00.Z",
    "2024-08-01T00:00:00+24:00",
    "1722556800",
    "-62135596801",
    "",
    "yesterday",
]
WRONG_TYPES: list[Any] = [None, True, False, 7, -3.5, "text", [], [1, "x"], {}, {"a": {"b": 1}}]
DEEP = Raw("[" * 1000 + "]" * 1000)
TOO_DEEP = Raw("[" * 2000 + "]" * 2000)


@dataclass
class Request:
    operation: str
    params: dict[str, Any]
    raw_body: bytes | None = None
    raw_path: str | None = None
    raw_query: str | None = None
    headers: dict[str, str] | None = None


class Fuzzer:
    def __init__(self, rng: random.Random, job_arn: str) -> None:
        self.rng = rng
        self.job_arn = job_arn

    # --- valid starting points ------------------------------------------------------------

    def valid(self, operation: str) -> dict[str, Any]:
        arn = self.job_arn
        return {
            "CreateModelInvocationJob": create_args(
                "fuzz", tags=[{"key": "k", "value": "v"}], timeoutDurationInHours=24
            ),
            "GetModelInvocationJob": {"jobIdentifier": arn},
            "StopModelInvocationJob": {"jobIdentifier": arn},
            "ListModelInvocationJobs": {"maxResults": 5, "sortOrder": "Ascending"},
            "TagResource": {"resourceARN": arn, "tags": [{"key": "k", "value": "v"}]},
            "UntagResource": {"resourceARN": arn, "tagKeys": ["k"]},
            "ListTagsForResource": {"resourceARN": arn},
        }[operation]

    # --- values for a shape ---------------------------------------------------------------

    def value(self, shape: Shape, depth: int = 0) -> Any:
        """A value for ``shape``: often wrong, sometimes right, never for long the same."""
        rng = self.rng
        if rng.random() < 0.15:
            return rng.choice(WRONG_TYPES)
        kind = shape.type_name
        meta = shape.metadata
        if kind == "string":
            if "enum" in meta and rng.random() < 0.5:
                choice: str = rng.choice(meta["enum"])
                return rng.choice([choice, choice.lower(), choice + " "])
            if "max" in meta and rng.random() < 0.2:
                return "a" * (meta["max"] + rng.choice([0, 1, 1000]))
            return rng.choice(ODD_STRINGS)
        if kind in {"integer", "long"}:
            if rng.random() < 0.3 and ("min" in meta or "max" in meta):
                bound = meta.get(rng.choice(["min", "max"])) or 0
                return bound + rng.choice([-1, 0, 1])
            return rng.choice(ODD_NUMBERS)
        if kind == "boolean":
            return rng.choice([True, False, "true", 1])
        if kind == "timestamp":
            return rng.choice([*ODD_TIMES, 1e20, -1, 0])
        if kind == "list":
            count = rng.choice([0, 1, 2, 5, meta.get("max", 3) + 1, 300])
            if depth > 3:
                return []
            return [self.value(shape.member, depth + 1) for _ in range(count)]
        if kind == "structure":
            if depth > 3:
                return {}
            return self.structure(shape, {}, depth + 1)
        return rng.choice(WRONG_TYPES)

    def structure(self, shape: Shape, base: dict[str, Any], depth: int = 0) -> dict[str, Any]:
        out = dict(base)
        names = list(shape.members)
        for name in self.rng.sample(names, k=self.rng.randint(0, len(names))):
            out[name] = self.value(shape.members[name], depth)
        if self.rng.random() < 0.2:
            out["unknownMember" + str(self.rng.randint(0, 9))] = self.rng.choice(WRONG_TYPES)
        return out

    # --- one request ----------------------------------------------------------------------

    def request(self, operation: str) -> Request:
        rng = self.rng
        shape: Shape = model.operation(operation).input_shape
        params = self.valid(operation)
        roll = rng.random()
        if roll < 0.55:  # change a few members
            names = list(shape.members)
            for name in rng.sample(names, k=rng.randint(1, min(3, len(names)))):
                params[name] = self.value(shape.members[name])
        elif roll < 0.65:  # drop required members
            for name in shape.required_members:
                if rng.random() < 0.6:
                    params.pop(name, None)
        elif roll < 0.75:  # a nested structure rebuilt at random (unions with 0, 1, 2 members)
            nested = [n for n, m in shape.members.items() if m.type_name == "structure"]
            if nested:
                name = rng.choice(nested)
                params[name] = self.structure(shape.members[name], {})
        req = Request(operation, params)
        if rng.random() < 0.12:
            req.raw_body = rng.choice(
                [
                    b"{not json",
                    b"[1, 2]",
                    b'"text"',
                    b"null",
                    b"\xff\xfe\x00",
                    b'{"jobName": "\\ud800"}',
                    b'{"jobName": "a", "jobName": 5}',
                    dump({"jobName": DEEP}),
                    dump({"jobName": TOO_DEEP}),
                    dump(params)[: rng.randint(0, 40)],
                    b"{}" + b" " * 1000 + b"x",
                ]
            )
        if rng.random() < 0.08:
            req.raw_query = rng.choice(
                [
                    "maxResults=1&maxResults=2",
                    "nameContains=%zz",
                    "nameContains=%00",
                    "nameContains=%C3%28",
                    "statusEquals=&sortBy=&sortOrder=",
                    "=&&=&a",
                    "nextToken=" + "A" * 2000,
                    "nextToken=eyJ2IjoxLCJ0IjoxZTMwMCwiaiI6IngiLCJmIjoieCJ9",
                    "X-Amz-Credential=a%2Fb%2Fc%2Fd%2Fe&X-Amz-Credential=x",
                    "submitTimeAfter=" + quote(rng.choice(ODD_TIMES)),
                ]
            )
        if rng.random() < 0.08:
            req.raw_path = rng.choice(
                [
                    "/model-invocation-job/%2F%2F",
                    "/model-invocation-job/",
                    "/model-invocation-job//stop",
                    "/model-invocation-job/" + quote("a" * 3000, safe=""),
                    "/model-invocation-job/%ZZ",
                    "/model-invocation-job/abc%00def",
                    "/model-invocation-jobs/",
                    "//model-invocation-jobs",
                    "/tagResource/extra",
                    "/_batchrock/health/x",
                ]
            )
        if rng.random() < 0.1:
            req.headers = rng.choice(
                [
                    {"Authorization": "AWS4-HMAC-SHA256 " + "Credential=" * 500},
                    {"Authorization": "Credential=AKID/20240101/../bedrock/aws4_request"},
                    {"Authorization": "Credential=111111111111/20240101/eu-west-1/x/aws4_request"},
                    {"Content-Type": "text/plain"},
                    {"Content-Encoding": "gzip"},
                    {"X-Amz-Date": "\u00e9"},
                    {"Expect": "100-continue"},
                ]
            )
        return req


def http_parts(req: Request) -> tuple[str, str, bytes | None]:
    """Method, target and body of ``req`` as the restJson1 protocol lays it out."""
    op: OperationModel = model.operation(req.operation)
    shape: Shape = op.input_shape
    uri: str = op.http["requestUri"]
    path, _, fixed_query = uri.partition("?")
    query: list[str] = [fixed_query] if fixed_query else []
    body: dict[str, Any] = {}
    for name, value in req.params.items():
        member = shape.members.get(name)
        location = member.serialization.get("location") if member else None
        wire = member.serialization.get("name", name) if member else name
        if location == "uri":
            path = path.replace("{" + wire + "}", quote(_text(value), safe=""))
        elif location == "querystring":
            query.append(f"{quote(wire)}={quote(_text(value), safe='')}")
        else:
            body[name] = value
    for label in ("{jobIdentifier}",):
        path = path.replace(label, "missing")
    target = req.raw_path or path
    query_text = req.raw_query if req.raw_query is not None else "&".join(query)
    if query_text:
        target += "?" + query_text
    has_body = op.http["method"] == "POST"
    raw = req.raw_body if req.raw_body is not None else (dump(body) if has_body else None)
    return op.http["method"], target, raw


def _text(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode() if isinstance(value, list | dict) else str(value)


class Connection:
    """One keep-alive connection, reopened whenever the server closes it."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.conn: http.client.HTTPConnection | None = None

    def send(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> Any:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
            try:
                self.conn.request(method, target, body=body, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The server closed a keep-alive connection (or this one after an error): the
                # request was not answered, so send it again once on a new one.
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def check_reply(what: str, status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, f"{what}: {status} {body[:300]!r}"
    assert headers.get("x-amzn-requestid"), what
    if status >= 300:
        assert headers.get("x-amzn-errortype"), f"{what}: no x-amzn-ErrorType: {body[:200]!r}"
        message = orjson.loads(body)["message"]
        assert isinstance(message, str) and message, what


def test_fuzz_every_operation_over_raw_http_and_boto3(api_server: ServerProcess) -> None:
    client = bedrock_client(api_server.url, parameter_validation=False)
    job_arn = client.create_model_invocation_job(**create_args("fuzz-target"))["jobArn"]
    boto3_status: list[int] = []
    client.meta.events.register(
        "after-call.bedrock",
        lambda http_response, **_: boto3_status.append(http_response.status_code),
    )
    conn = Connection(api_server)
    try:
        statuses = fuzz(Fuzzer(random.Random(SEED), job_arn), client, conn)
    finally:
        conn.close()

    assert all(status < 500 for status in boto3_status), boto3_status
    assert len(boto3_status) >= PER_OPERATION * len(model.OPERATIONS) * BOTO3_SHARE / 4
    assert statuses.get(400, 0) > 0 and statuses.get(200, 0) > 0, statuses  # both kinds ran

    # Still healthy, still correct.
    new = client.create_model_invocation_job(**create_args("after-fuzz"))["jobArn"]
    assert client.get_model_invocation_job(jobIdentifier=new)["jobName"] == "after-fuzz"
    log = api_server.log()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]


def fuzz(fuzzer: Fuzzer, client: Any, conn: Connection) -> dict[int, int]:
    """Send PER_OPERATION requests per operation; the statuses of the raw ones."""
    rng = fuzzer.rng
    statuses: dict[int, int] = {}
    snake = {v: k for k, v in client.meta.method_to_api_mapping.items()}
    for operation in model.OPERATIONS:
        for index in range(PER_OPERATION):
            req = fuzzer.request(operation)
            what = f"seed {SEED}, {operation} #{index}: {req}"
            plain = not (req.raw_body or req.raw_path or req.raw_query or req.headers)
            if plain and rng.random() < BOTO3_SHARE:
                try:
                    getattr(client, snake[operation])(**_python(req.params))
                except ClientError as exc:
                    assert exc.response["ResponseMetadata"]["HTTPStatusCode"] < 500, what
                    assert exc.response["Error"]["Code"], what
                except (
                    ValueError,
                    TypeError,
                    AttributeError,
                    KeyError,
                    RuntimeError,
                    OverflowError,
                ):
                    pass  # boto3's serializer refused it: nothing was sent (after-call counts)
                continue
            method, target, body = http_parts(req)
            headers = {"Content-Type": "application/json", **(req.headers or {})}
            status, reply_headers, reply = conn.send(method, target, body, headers)
            check_reply(what, status, reply_headers, reply)
            statuses[status] = statuses.get(status, 0) + 1
    return statuses


def _python(value: Any) -> Any:
    """``value`` with :class:`Raw` replaced by something boto3 can serialize."""
    if isinstance(value, Raw):
        try:
            return orjson.loads(value.text)
        except orjson.JSONDecodeError:
            return value.text
    if isinstance(value, dict):
        return {k: _python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_python(v) for v in value]
    return value
