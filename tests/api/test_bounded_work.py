"""The work one request can make the server do is bounded by its size: no request holds the
event loop (patterns in linear time, messages of bounded size, headers parsed in linear time)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from batchrock.api import identity
from tests.api.conftest import create_args
from tests.api.test_validation import assert_error
from tests.api.wire import Reply, call
from tests.conftest import ServerProcess

REDOS_NAME = "a" + "-" * 30 + "!"  # Python's re: 80 s of backtracking, the event loop held


def _meanwhile(server: ServerProcess, bad: Any) -> tuple[Reply, Reply]:
    """Send ``bad`` (a function of the server) and, while it is under way, an ordinary List.
    Both must come back; the 5 s client timeout fails the test if the server freezes."""
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(bad)
        other = pool.submit(
            call, server.url, "GET", "/model-invocation-jobs?maxResults=1", timeout=5
        )
        return slow.result(), other.result()


def test_the_job_name_attack_on_list_is_answered_at_once(api_server: ServerProcess) -> None:
    attack, listing = _meanwhile(
        api_server,
        lambda: call(
            api_server.url, "GET", f"/model-invocation-jobs?nameContains={REDOS_NAME}", timeout=5
        ),
    )
    assert_error(attack, 400, "ValidationException")
    assert f"Value '{REDOS_NAME}' at 'nameContains'" in attack.json()["message"]
    assert listing.status == 200


def test_the_job_name_attack_on_create_is_answered_at_once(api_server: ServerProcess) -> None:
    body = orjson.dumps(create_args(REDOS_NAME))
    attack, listing = _meanwhile(
        api_server,
        lambda: call(api_server.url, "POST", "/model-invocation-job", body=body, timeout=5),
    )
    assert_error(attack, 400, "ValidationException")
    assert f"Value '{REDOS_NAME}' at 'jobName'" in attack.json()["message"]
    assert listing.status == 200


def test_deeply_nested_json_is_a_validation_error(api_server: ServerProcess) -> None:
    deep = "[" * 1000 + "]" * 1000  # orjson reads up to 1024 levels
    body = orjson.dumps(create_args("deep", inputDataConfig={"other": 1})).replace(
        b'"other":1', b'"other":' + deep.encode()
    )
    reply = call(api_server.url, "POST", "/model-invocation-job", body=body)
    assert_error(reply, 400, "ValidationException")
    assert "exactly one of the following members" in reply.json()["message"]
    assert "..." in reply.json()["message"]  # shown to a bounded depth


def test_an_over_long_list_is_one_violation_not_one_per_item(api_server: ServerProcess) -> None:
    body = orjson.dumps(create_args("tags", tags=[{}] * 200_000))  # 600 KB
    reply = call(api_server.url, "POST", "/model-invocation-job", body=body)
    assert_error(reply, 400, "ValidationException")
    message = reply.json()["message"]
    assert message.startswith("1 validation error detected: ")
    assert "at 'tags' failed to satisfy constraint: Member must have length less than or" in message
    assert len(message) < 5_000  # was 400,000 violations, 30 MB


def test_a_list_within_its_limit_still_has_each_item_checked(api_server: ServerProcess) -> None:
    reply = call(
        api_server.url,
        "POST",
        "/model-invocation-job",
        body=orjson.dumps(create_args("tags", tags=[{"key": "k"}, {}])),
    )
    assert_error(reply, 400, "ValidationException")
    message = reply.json()["message"]
    assert "at 'tags.1.member.value'" in message
    assert "at 'tags.2.member.key'" in message


def test_a_crafted_authorization_header_is_read_in_linear_time() -> None:
    header = "AWS4-HMAC-SHA256 " + "Credential=" * 100_000  # Python's re: quadratic (hours)
    started = time.perf_counter()
    caller = identity.caller_from(
        header, "", default_region="us-east-1", default_account="123456789012"
    )
    assert time.perf_counter() - started < 2.0
    assert caller.region == "us-east-1"
    signed = "AWS4-HMAC-SHA256 Credential=111111111111/20240801/eu-west-1/bedrock/aws4_request, X"
    assert identity.caller_from(
        signed, "", default_region="us-east-1", default_account="123456789012"
    ) == identity.Caller(account_id="111111111111", region="eu-west-1")
