"""ListModelInvocationJobs: filters, sort, pagination, through boto3 and its paginator."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from batchrock.jobs import JobStatus
from tests.api.conftest import create_args
from tests.api.test_jobs import force_status
from tests.conftest import ServerProcess, bedrock_client


@pytest.fixture(scope="module")
def listing(api_server: ServerProcess) -> dict[str, Any]:
    """A private account with 25 jobs, some moved to other statuses."""
    client = bedrock_client(api_server.url, access_key="555555555555")
    arns = []
    for i in range(25):
        name = f"{'nightly' if i % 2 == 0 else 'adhoc'}-run-{i:02d}"
        arns.append(client.create_model_invocation_job(**create_args(name))["jobArn"])
        time.sleep(0.002)  # distinct submit times make the expected order obvious
    completed = arns[3:6]
    for arn in completed:
        force_status(
            api_server,
            arn.rsplit("/", 1)[1],
            JobStatus.VALIDATING,
            JobStatus.SCHEDULED,
            JobStatus.IN_PROGRESS,
            JobStatus.COMPLETED,
        )
    return {"client": client, "arns": arns, "completed": completed}


def _all(client: Any, **params: Any) -> list[dict[str, Any]]:
    paginator = client.get_paginator("list_model_invocation_jobs")
    jobs: list[dict[str, Any]] = []
    for page in paginator.paginate(**params):
        jobs.extend(page["invocationJobSummaries"])
    return jobs


def test_default_order_is_newest_first(listing: dict[str, Any]) -> None:
    jobs = listing["client"].list_model_invocation_jobs()["invocationJobSummaries"]
    assert [j["jobArn"] for j in jobs] == list(reversed(listing["arns"]))
    assert "nextToken" not in listing["client"].list_model_invocation_jobs()


def test_sort_order_ascending_and_descending(listing: dict[str, Any]) -> None:
    client = listing["client"]
    asc = client.list_model_invocation_jobs(sortBy="CreationTime", sortOrder="Ascending")
    desc = client.list_model_invocation_jobs(sortBy="CreationTime", sortOrder="Descending")
    assert [j["jobArn"] for j in asc["invocationJobSummaries"]] == listing["arns"]
    assert [j["jobArn"] for j in desc["invocationJobSummaries"]] == listing["arns"][::-1]


def test_summaries_carry_every_member(listing: dict[str, Any]) -> None:
    client = listing["client"]
    summary = client.list_model_invocation_jobs(maxResults=1)["invocationJobSummaries"][0]
    job = client.get_model_invocation_job(jobIdentifier=summary["jobArn"])
    job.pop("ResponseMetadata")
    assert summary == job


@pytest.mark.parametrize("page_size", [1, 7, 25, 1000])
@pytest.mark.parametrize("order", ["Ascending", "Descending"])
def test_paginator_visits_every_job_once(
    listing: dict[str, Any], page_size: int, order: str
) -> None:
    jobs = _all(
        listing["client"],
        sortOrder=order,
        PaginationConfig={"PageSize": page_size},
    )
    arns = [j["jobArn"] for j in jobs]
    expected = listing["arns"] if order == "Ascending" else listing["arns"][::-1]
    assert arns == expected


def test_page_boundaries_and_last_page(listing: dict[str, Any]) -> None:
    client = listing["client"]
    first = client.list_model_invocation_jobs(maxResults=10)
    assert len(first["invocationJobSummaries"]) == 10
    assert len(first["nextToken"]) <= 2048
    second = client.list_model_invocation_jobs(maxResults=10, nextToken=first["nextToken"])
    third = client.list_model_invocation_jobs(maxResults=10, nextToken=second["nextToken"])
    assert len(third["invocationJobSummaries"]) == 5
    assert "nextToken" not in third
    # Exactly a page left: no token pointing at an empty page.
    exact = client.list_model_invocation_jobs(maxResults=25)
    assert "nextToken" not in exact


def test_status_filter(listing: dict[str, Any]) -> None:
    client = listing["client"]
    done = _all(client, statusEquals="Completed")
    assert sorted(j["jobArn"] for j in done) == sorted(listing["completed"])
    assert all(j["status"] == "Completed" for j in done)
    submitted = _all(client, statusEquals="Submitted", PaginationConfig={"PageSize": 4})
    assert len(submitted) == 22
    assert _all(client, statusEquals="Failed") == []


def test_name_contains_is_a_case_insensitive_substring(listing: dict[str, Any]) -> None:
    client = listing["client"]
    nightly = _all(client, nameContains="nightly")
    assert len(nightly) == 13
    assert all("nightly" in j["jobName"] for j in nightly)
    assert [j["jobName"] for j in _all(client, nameContains="RUN-07")] == ["adhoc-run-07"]
    # Short patterns (below the trigram index's reach) work the same way.
    assert [j["jobName"] for j in _all(client, nameContains="07")] == ["adhoc-run-07"]
    ones = _all(client, nameContains="1")
    assert sorted(j["jobName"][-2:] for j in ones) == sorted(
        f"{i:02d}" for i in range(25) if "1" in f"{i:02d}"
    )
    assert _all(client, nameContains="no-such-name") == []


def test_submit_time_window(listing: dict[str, Any]) -> None:
    client = listing["client"]
    jobs = client.list_model_invocation_jobs(sortOrder="Ascending")["invocationJobSummaries"]
    start, end = jobs[5]["submitTime"], jobs[9]["submitTime"]
    window = _all(client, submitTimeAfter=start, submitTimeBefore=end, sortOrder="Ascending")
    # Both bounds are exclusive.
    assert [j["jobArn"] for j in window] == [j["jobArn"] for j in jobs[6:9]]
    after_all = _all(client, submitTimeAfter=jobs[-1]["submitTime"] + timedelta(seconds=1))
    assert after_all == []


def test_filters_combine_with_pagination(listing: dict[str, Any]) -> None:
    client = listing["client"]
    jobs = client.list_model_invocation_jobs(sortOrder="Ascending")["invocationJobSummaries"]
    combined = _all(
        client,
        statusEquals="Submitted",
        nameContains="nightly",
        submitTimeAfter=jobs[0]["submitTime"],
        sortBy="CreationTime",
        sortOrder="Ascending",
        PaginationConfig={"PageSize": 2},
    )
    expected = [
        j["jobArn"]
        for j in jobs[1:]
        if "nightly" in j["jobName"] and j["jobArn"] not in listing["completed"]
    ]
    assert [j["jobArn"] for j in combined] == expected


def test_token_reused_with_other_filters_is_rejected(listing: dict[str, Any]) -> None:
    client = listing["client"]
    token = client.list_model_invocation_jobs(maxResults=2, nameContains="run")["nextToken"]
    for changed in (
        {"nameContains": "nightly"},
        {"sortOrder": "Ascending"},
        {"statusEquals": "Submitted", "nameContains": "run"},
    ):
        with pytest.raises(ClientError) as exc:
            client.list_model_invocation_jobs(maxResults=2, nextToken=token, **changed)
        assert exc.value.response["Error"]["Code"] == "ValidationException"
        assert "different parameters" in exc.value.response["Error"]["Message"]
    # Another account cannot use it either.
    other = bedrock_client(listing["client"].meta.endpoint_url, access_key="666666666666")
    with pytest.raises(ClientError):
        other.list_model_invocation_jobs(maxResults=2, nextToken=token, nameContains="run")
    # The page size may change between pages.
    page = client.list_model_invocation_jobs(maxResults=5, nextToken=token, nameContains="run")
    assert len(page["invocationJobSummaries"]) == 5


@pytest.mark.parametrize(
    "token",
    ["garbage", "eyJmb28iOiAiYmFyIn0", base64.urlsafe_b64encode(b"[1,2]").decode(), "x" * 2048],
)
def test_malformed_token_is_rejected(listing: dict[str, Any], token: str) -> None:
    with pytest.raises(ClientError) as exc:
        listing["client"].list_model_invocation_jobs(nextToken=token)
    assert exc.value.response["Error"]["Code"] == "ValidationException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_paging_while_jobs_are_created_never_skips_or_repeats(api_server: ServerProcess) -> None:
    client = bedrock_client(api_server.url, access_key="777777777777")
    existing = {
        client.create_model_invocation_job(**create_args(f"churn-{i}"))["jobArn"] for i in range(12)
    }
    for order in ("Ascending", "Descending"):
        seen: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"maxResults": 3, "sortOrder": order}
            if token:
                kwargs["nextToken"] = token
            page = client.list_model_invocation_jobs(**kwargs)
            seen.extend(j["jobArn"] for j in page["invocationJobSummaries"])
            # Someone else keeps creating jobs between our pages.
            client.create_model_invocation_job(
                **create_args("churn-new", clientRequestToken=uuid.uuid4().hex)
            )
            token = page.get("nextToken")
            if not token:
                break
        assert len(seen) == len(set(seen)), "a job was repeated"
        assert existing <= set(seen), "a job that existed when paging began was skipped"


def test_empty_listing(api_server: ServerProcess) -> None:
    client = bedrock_client(api_server.url, access_key="888888888888")
    page = client.list_model_invocation_jobs()
    assert page["invocationJobSummaries"] == []
    assert "nextToken" not in page
