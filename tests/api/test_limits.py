"""Throttling and quotas at the edge: ThrottlingException 429 per account (a token bucket on
the Clock seam), and ServiceQuotaExceededException for too many unfinished jobs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from batchrock.api.throttle import TRACKED_ACCOUNTS, RateLimiter
from batchrock.clock import FakeClock
from batchrock.errors import ThrottlingException
from batchrock.jobs import JobStatus
from tests.api.conftest import create_args
from tests.api.test_jobs import force_status
from tests.conftest import bedrock_client


def _client(url: str, account: str, *, attempts: int) -> Any:
    """A boto3 client in botocore's standard retry mode (its default) making at most
    ``attempts`` attempts per call."""
    session = boto3.session.Session(
        aws_access_key_id=account, aws_secret_access_key="secret", region_name="us-east-1"
    )
    retries: Any = {"mode": "standard", "total_max_attempts": attempts}
    return session.client("bedrock", endpoint_url=url, config=Config(retries=retries))


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, int]:
    meta = exc.value.response["ResponseMetadata"]
    return exc.value.response["Error"]["Code"], meta["HTTPStatusCode"], meta["RetryAttempts"]


# --- the token bucket, on a FakeClock --------------------------------------------------------


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    clock.advance(timedelta(seconds=0.49))
    assert not limiter.allow("a")  # 0.98 of a token
    clock.advance(timedelta(seconds=0.01))
    assert limiter.allow("a") and not limiter.allow("a")
    clock.advance(timedelta(hours=1))  # refills to the burst, no further
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]


def test_accounts_have_their_own_buckets() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=FakeClock())
    assert limiter.allow("111111111111")
    with pytest.raises(ThrottlingException) as exc:
        limiter.check("111111111111")
    assert exc.value.http_status == 429
    assert exc.value.message == (
        "The number of requests exceeds the limit. Resubmit your request later."
    )
    limiter.check("222222222222")


def test_default_burst_is_one_seconds_worth() -> None:
    clock = FakeClock()
    assert RateLimiter(rate=5.0, burst=0, clock=clock).burst == 5
    assert RateLimiter(rate=0.2, burst=0, clock=clock).burst == 1


def test_a_clock_set_back_takes_no_tokens_away() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock)
    assert limiter.allow("a")
    clock.advance(timedelta(seconds=-30))
    assert limiter.allow("a") and not limiter.allow("a")
    clock.advance(timedelta(seconds=1))
    assert limiter.allow("a")


def test_idle_buckets_are_forgotten_so_memory_stays_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    for i in range(TRACKED_ACCOUNTS):
        limiter.allow(f"{i:012d}")
    assert len(limiter._buckets) == TRACKED_ACCOUNTS
    clock.advance(timedelta(seconds=1))  # all full again: the same as new ones
    assert limiter.allow("new")
    assert len(limiter._buckets) == 1
    # Busy buckets are kept (forgetting one would hand its account a fresh burst).
    for i in range(TRACKED_ACCOUNTS):
        limiter.allow(f"{i:012d}")
    assert not limiter.allow("new")


# --- through a real server and boto3 ---------------------------------------------------------


def test_throttled_calls_are_429_and_boto3_retries_them(server_factory: Any) -> None:
    # One token, then one every ~17 minutes: everything after the burst is throttled.
    server = server_factory(engine=False, rate_limit_per_second=0.001, rate_limit_burst=2)
    client = _client(server.url, "121212121212", attempts=1)
    client.list_model_invocation_jobs()
    client.create_model_invocation_job(**create_args("under-the-limit"))
    with pytest.raises(ClientError) as exc:
        client.list_model_invocation_jobs()
    assert _error(exc) == ("ThrottlingException", 429, 0)
    assert exc.value.response["Error"]["Message"] == (
        "The number of requests exceeds the limit. Resubmit your request later."
    )
    # botocore's standard retry mode sees a throttling error and retries it (and gives up
    # after max_attempts, since this bucket does not refill in time).
    retrying = _client(server.url, "121212121212", attempts=2)
    with pytest.raises(ClientError) as exc:
        retrying.get_model_invocation_job(jobIdentifier="abcdef123456")
    assert _error(exc) == ("ThrottlingException", 429, 1)
    # Another account has its own bucket.
    other = bedrock_client(server.url, access_key="343434343434")
    assert other.list_model_invocation_jobs()["invocationJobSummaries"] == []


def test_rate_limit_is_off_by_default(api_server: Any) -> None:
    client = bedrock_client(api_server.url, access_key="565656565656")
    for _ in range(30):
        client.list_model_invocation_jobs()


def test_unfinished_jobs_quota_at_create(server_factory: Any) -> None:
    server = server_factory(engine=False, quota_max_unfinished_jobs_per_model=2)
    client = _client(server.url, "787878787878", attempts=3)
    first = client.create_model_invocation_job(**create_args("q1", clientRequestToken="t1"))
    client.create_model_invocation_job(**create_args("q2"))
    with pytest.raises(ClientError) as exc:
        client.create_model_invocation_job(**create_args("q3"))
    # 400, and not retried: botocore does not count it as throttling.
    assert _error(exc) == ("ServiceQuotaExceededException", 400, 0)
    message = exc.value.response["Error"]["Message"]
    assert "Sum of in-progress and submitted batch inference jobs" in message
    assert "anthropic.claude-3-haiku-20240307-v1:0" in message and "(2)" in message
    # A retried Create (same token) is the job it made, not a new one: no quota error.
    again = client.create_model_invocation_job(**create_args("q1", clientRequestToken="t1"))
    assert again["jobArn"] == first["jobArn"]
    # Per model, region and account.
    client.create_model_invocation_job(**create_args("q-nova", modelId="amazon.nova-lite-v1:0"))
    eu = bedrock_client(server.url, access_key="787878787878", region="eu-west-1")
    eu.create_model_invocation_job(**create_args("q-eu"))
    bedrock_client(server.url, access_key="909090909090").create_model_invocation_job(
        **create_args("q-other")
    )
    # Stopping still counts (the job is not finished); a final status frees the place.
    client.stop_model_invocation_job(jobIdentifier=first["jobArn"])
    with pytest.raises(ClientError):
        client.create_model_invocation_job(**create_args("q3"))
    force_status(server, first["jobArn"].rsplit("/", 1)[1], JobStatus.STOPPED)
    client.create_model_invocation_job(**create_args("q3"))
    names = {j["jobName"] for j in client.list_model_invocation_jobs()["invocationJobSummaries"]}
    assert names == {"q1", "q2", "q3", "q-nova"}
