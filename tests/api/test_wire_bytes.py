"""Get and List present jobs through the store's lean read path (``JobRow`` views, times
formatted without ``strftime``, each job's bytes kept under its row key): the bytes must be
those the ``Job``-based encoder gave.

``reference_wire`` below is that encoder as it was (``Job`` in, ``strftime`` per time), kept
here as the oracle; every job goes into a real SQLite store and comes back both ways.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from batchrock import jobs
from batchrock.api import codec, identity, pagination
from batchrock.api.auth import Gate
from batchrock.api.identity import job_arn
from batchrock.api.summaries import SummaryCache, SummaryPage
from batchrock.catalogue import reported_model_id
from batchrock.clock import FakeClock, from_micros, to_micros
from batchrock.jobs import Counters, Job, JobStatus
from batchrock.service import Caller, JobService
from batchrock.settings import Settings
from batchrock.store.base import Cursor, JobFilter, PageRequest, job_row
from batchrock.store.sqlite import SqliteStore


def reference_time(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def reference_wire(job: Job) -> dict[str, Any]:
    s3_in: dict[str, Any] = {}
    if job.input_format is not None:
        s3_in["s3InputFormat"] = job.input_format
    s3_in["s3Uri"] = job.input_s3_uri
    if job.input_bucket_owner is not None:
        s3_in["s3BucketOwner"] = job.input_bucket_owner
    s3_out: dict[str, Any] = {"s3Uri": job.output_s3_uri}
    if job.output_kms_key_id is not None:
        s3_out["s3EncryptionKeyId"] = job.output_kms_key_id
    if job.output_bucket_owner is not None:
        s3_out["s3BucketOwner"] = job.output_bucket_owner
    out: dict[str, Any] = {
        "jobArn": job_arn(job.region, job.account_id, job.job_id),
        "jobName": job.name,
        "modelId": reported_model_id(job.model_id, job.region, job.account_id),
    }
    if job.client_request_token is not None:
        out["clientRequestToken"] = job.client_request_token
    out["roleArn"] = job.role_arn
    out["status"] = job.status.value
    if job.message is not None:
        out["message"] = job.message
    out["submitTime"] = reference_time(job.submit_time)
    out["lastModifiedTime"] = reference_time(job.last_modified_time)
    if job.end_time is not None:
        out["endTime"] = reference_time(job.end_time)
    out["inputDataConfig"] = {"s3InputDataConfig": s3_in}
    out["outputDataConfig"] = {"s3OutputDataConfig": s3_out}
    if job.vpc_subnet_ids is not None or job.vpc_security_group_ids is not None:
        out["vpcConfig"] = {
            "subnetIds": list(job.vpc_subnet_ids or ()),
            "securityGroupIds": list(job.vpc_security_group_ids or ()),
        }
    out["timeoutDurationInHours"] = job.timeout_hours
    out["jobExpirationTime"] = reference_time(job.expiration_time)
    out["modelInvocationType"] = job.invocation_type
    c = job.counters
    out["totalRecordCount"] = c.total
    out["processedRecordCount"] = c.processed
    out["successRecordCount"] = c.success
    out["errorRecordCount"] = c.error
    return out


REGIONS = ["us-east-1", "cn-north-1", "us-gov-west-1"]
MODELS = [
    "anthropic.claude-3-haiku-20240307-v1:0",
    "us.anthropic.claude-3-5-sonnet-20240620-v1:0",  # a profile: reported as its ARN
    "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-text-lite-v1",
]
MESSAGES = [None, "", 'Input "file" not found\n\ttab \\ \u00e9\u4e2d\U0001f600 \x01\x1f']
TIMES = [
    datetime(2026, 12, 1, 13, 2, 3, 999_999, tzinfo=UTC),
    datetime(2024, 2, 29, 0, 0, 0, 0, tzinfo=UTC),
    datetime(1000, 1, 1, 0, 0, 0, 500, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 1_000, tzinfo=UTC),  # before the epoch
    datetime(9999, 12, 20, 23, 59, 59, 999_000, tzinfo=UTC),
]


def varied_jobs() -> list[Job]:
    rng = random.Random(5)
    out = []
    optional = itertools.product([False, True], repeat=6)
    for i, (status, flags) in enumerate(
        zip(itertools.cycle(JobStatus), itertools.islice(itertools.cycle(optional), 200))
    ):
        token, owner_in, kms, owner_out, vpc, fmt = flags
        region = REGIONS[i % len(REGIONS)]
        submit = TIMES[i % len(TIMES)] + timedelta(microseconds=rng.randrange(1_000_000))
        out.append(
            Job(
                job_id=jobs.new_job_id(),
                account_id="123456789012",
                region=region,
                name=f"job-{i}",
                model_id=MODELS[i % len(MODELS)],
                role_arn="arn:aws:iam::123456789012:role/R",
                client_request_token=f"t{i}" if token else None,
                status=status,
                message=MESSAGES[i % len(MESSAGES)],
                submit_time=submit,
                last_modified_time=submit + timedelta(microseconds=rng.randrange(10**9)),
                end_time=submit + timedelta(seconds=i) if status in jobs.TERMINAL else None,
                input_s3_uri="s3://b/in/",
                input_format="JSONL" if fmt else None,
                input_bucket_owner="111122223333" if owner_in else None,
                output_s3_uri="s3://b/out/",
                output_kms_key_id="alias/k" if kms else None,
                output_bucket_owner="111122223333" if owner_out else None,
                vpc_subnet_ids=(("subnet-a", "subnet-b") if i % 4 else ()) if vpc else None,
                vpc_security_group_ids=(("sg-1",) if i % 4 else ()) if vpc else None,
                timeout_hours=24 + i % 100,
                expiration_time=submit + timedelta(hours=24 + i % 100),
                invocation_type="Converse" if i % 2 else "InvokeModel",
                counters=Counters(total=i, processed=i // 2, success=i // 3, error=0),
            )
        )
    return out


async def stored(path: Path) -> tuple[SqliteStore, list[Job]]:
    store = await SqliteStore.open(path)
    made = varied_jobs()
    for job in made:
        await store.create(job.evolve(status=jobs.INITIAL, message=None, end_time=None), {})
        # Then straight to the state the job is made in (walking the lifecycle would set the
        # message and times itself; this test wants every combination).
        store._conn.execute(
            "UPDATE jobs SET status = ?, message = ?, end_time = ? WHERE job_id = ?",
            (
                job.status.value,
                job.message,
                None if job.end_time is None else to_micros(job.end_time),
                job.job_id,
            ),
        )
    return store, made


def test_get_gives_the_bytes_the_job_encoder_gave(tmp_path: Path) -> None:
    asyncio.run(check_get(tmp_path / "db.sqlite3"))


async def check_get(path: Path) -> None:
    store, made = await stored(path)
    for job in made:
        full = await store.get(job.account_id, job.region, job.job_id)
        row = await store.get_row(job.account_id, job.region, job.job_id)
        assert full is not None and row is not None
        assert row == job_row(full)
        assert orjson.dumps(codec.job_to_wire(row)) == orjson.dumps(reference_wire(full))
    assert await store.get_row("123456789012", "eu-west-1", made[0].job_id) is None


def test_listings_give_the_bytes_the_job_encoder_gave(tmp_path: Path) -> None:
    asyncio.run(check_listings(tmp_path / "db.sqlite3"))


async def check_listings(path: Path) -> None:
    store, _ = await stored(path)
    pages = 0
    for region, descending, status in itertools.product(REGIONS, [True, False], [None, *JobStatus]):
        job_filter = JobFilter(account_id="123456789012", region=region, status=status)
        page = PageRequest(limit=1000, descending=descending)
        full = await store.list_jobs(job_filter, page)
        rows = await store.list_rows(job_filter, page)
        assert [r.job_id for r in rows] == [j.job_id for j in full]
        ours = orjson.dumps({"invocationJobSummaries": [codec.job_to_wire(r) for r in rows]})
        theirs = orjson.dumps({"invocationJobSummaries": [reference_wire(j) for j in full]})
        assert ours == theirs
        pages += bool(rows)
    assert pages > 20
    # A name that no job has: nothing, by either path.
    none = JobFilter(account_id="123456789012", region="us-east-1", name_contains="zzzq")
    assert await store.list_rows(none, PageRequest(limit=10)) == []


def test_kept_summaries_give_the_bytes_the_job_encoder_gave(tmp_path: Path) -> None:
    """Through the API's summary cache (api/summaries.py), kept bytes and fresh alike, at
    every cache size: Get's body, and every page joined with and without a nextToken."""
    asyncio.run(check_kept(tmp_path / "db.sqlite3"))


async def check_kept(path: Path) -> None:
    store, made = await stored(path)
    service = JobService(store, FakeClock(TIMES[0]))
    for size in (0, 50, 10_000):
        cache = SummaryCache(service, size)
        for _ in range(2):  # encoded, then (where kept) joined from the kept bytes
            for job in made:
                full = await store.get(job.account_id, job.region, job.job_id)
                assert full is not None
                caller = Caller(job.account_id, job.region)
                got = await cache.get(caller, job.job_id)
                assert got.body == orjson.dumps(reference_wire(full))
            for region, limit in itertools.product(REGIONS, [7, 1000]):
                job_filter = JobFilter(account_id="123456789012", region=region)
                request = PageRequest(limit=limit)
                page = await cache.page(job_filter, request)
                full_page = await store.list_jobs(job_filter, request)
                expected: dict[str, Any] = {
                    "invocationJobSummaries": [reference_wire(j) for j in full_page]
                }
                assert page.body(None).body == orjson.dumps(expected)
                expected["nextToken"] = 'a "token"/+='
                assert page.body('a "token"/+=').body == orjson.dumps(expected)
                assert page.more == (limit == 7)
                expected.pop("nextToken")
                listing = pagination.fingerprint(Caller("123456789012", region), job_filter, True)
                if page.more:
                    last = full_page[-1]
                    assert page.last == (to_micros(last.submit_time), last.job_id)
                    cursor = Cursor(last.submit_time, last.job_id)
                    expected["nextToken"] = pagination.encode(cursor, listing)
                # The API's body, made or kept (the second time round, where the cache holds
                # the page).
                listed = await cache.listing(job_filter, request, listing)
                assert listed.body == orjson.dumps(expected)
        assert len(cache) == min(size, len(made))
        # The submit times kept for the cursors are evicted with the bytes.
        assert cache._submitted.keys() == cache._entries.keys()


def test_a_page_body_of_any_size_is_the_dicts_encoding() -> None:
    """The body is joined in one allocation (head and tail joined to the first and last
    summaries): empty, one, two and many summaries, with and without a nextToken."""
    rows = [job_row(j) for j in varied_jobs()[:5]]
    for n in range(len(rows) + 1):
        summaries = [codec.job_to_wire(r) for r in rows[:n]]
        page = SummaryPage([orjson.dumps(s) for s in summaries], False, None)
        expected: dict[str, Any] = {"invocationJobSummaries": summaries}
        assert page.body(None).body == orjson.dumps(expected), n
        expected["nextToken"] = "t/+="
        assert page.body("t/+=").body == orjson.dumps(expected), n
        assert page.body(None).body == orjson.dumps({"invocationJobSummaries": summaries})


def test_format_micros_matches_strftime_across_the_range() -> None:
    rng = random.Random(3)
    low, high = to_micros(datetime(1000, 1, 1, tzinfo=UTC)), to_micros(TIMES[-1])
    samples = [rng.randrange(low, high) for _ in range(20_000)]
    samples += [to_micros(t) + d for t in TIMES for d in (-1, 0, 1, 999, 1000)]
    for value in samples:
        assert codec.format_micros(value) == reference_time(from_micros(value)), value


def test_the_plain_credential_parse_agrees_with_the_regex() -> None:
    """``caller_from`` reads an SDK's Authorization header without RE2; whatever the header,
    the answer is the regex's."""
    rng = random.Random(11)
    good = (
        "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261201/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=abc"
    )
    pieces = [
        "Credential=",
        "AKIA",
        "123456789012",
        "/",
        "20261201",
        "2026120",
        "us-east-1",
        "EU-WEST-1",
        "bedrock",
        "aws4_request",
        "aws4_requestX",
        ",",
        " ",
        "\t",
        "\v",
        "\u00a0",
        "\u0663",
        "",
    ]
    headers = [good, good.replace("us-east-1", "eu-west-1"), "Credential=", ""]
    for _ in range(5000):
        if rng.random() < 0.5:
            at = rng.randrange(len(good))
            headers.append(good[:at] + rng.choice(pieces) + good[at + rng.randrange(3) :])
        else:
            headers.append("".join(rng.choice(pieces) for _ in range(rng.randrange(1, 14))))
    answered = 0
    for header in headers:
        match = identity._SCOPE.search(header)
        expected = (match.group(1), match.group(2)) if match else None
        credential = identity._credential(header)
        plain = None if credential is None else identity._plain_scope(credential)
        if plain is not None:
            assert plain == expected, header
            answered += 1
        # And the caller, made or kept (each header asked twice): the regex's.
        key, region = expected or (None, None)
        account = key if key and re.fullmatch(r"\d{12}", key) else "000000000000"
        for _ in range(2):
            caller = identity.caller_from(
                header, "", default_region="eu-west-1", default_account="000000000000"
            )
            assert (caller.account_id, caller.region) == (account, region or "eu-west-1")
    assert answered > 500  # the plain parse answered most of the near-misses itself
    assert identity._plain_scope(identity._credential(good) or "") == ("AKIAEXAMPLE", "us-east-1")
    caller = identity.caller_from(
        good.replace("AKIAEXAMPLE", "123456789012"),
        "",
        default_region="eu-west-1",
        default_account="000000000000",
    )
    assert (caller.account_id, caller.region) == ("123456789012", "us-east-1")


def test_open_identities_kept_by_credential_are_the_headers_own() -> None:
    """Open mode keeps each identity by the Authorization header's credential when that alone
    decides the caller (``Gate.open_identity``): for any header (bytes, as sent) and query,
    in any order, asked again and again, the caller is the one ``caller_from`` reads from
    the whole header, the query included."""
    rng = random.Random(12)
    settings = Settings(default_region="eu-west-1", default_account_id="000000000000")
    gate = Gate(settings, lambda: datetime(2026, 12, 1, tzinfo=UTC))
    good = "Credential=123456789012/20261201/us-east-1/bedrock/aws4_request"
    variants = [
        f"AWS4-HMAC-SHA256 {good}, SignedHeaders=host, Signature=" + "0" * 64,
        f"AWS4-HMAC-SHA256 {good}, Signature=1",  # the same credential, another header
        f"AWS4-HMAC-SHA256 {good}",
        # A first credential that does not decide: the regex reads the second one, so two
        # headers with the same first credential name different callers.
        "Credential=X, Credential=111111111111/20261201/us-west-2/bedrock/aws4_request",
        "Credential=X, Credential=222222222222/20261201/ap-south-1/bedrock/aws4_request",
        "Credential=X",
        "Credential=123456789012/20261201/us-east-1/bedrock/aws4_request\xa0",
        "Credential=123456789012/20261201/us-east-1/bedrock/aws4_request \u0663",
        "",
        "Bearer abc",
    ]
    queries = [
        "",
        "X-Amz-Credential=333333333333%2F20261201%2Fca-central-1%2Fbedrock%2Faws4_request",
    ]
    asked: list[tuple[bytes | None, str]] = [(None, q) for q in queries]
    asked += [(v.encode(), q) for v in variants for q in queries]
    for _ in range(6):
        rng.shuffle(asked)
        for authorization, query in asked:
            text = None if authorization is None else authorization.decode("latin-1")
            expected = identity.caller_from(
                text, query, default_region="eu-west-1", default_account="000000000000"
            )
            assert gate.open_identity(authorization, query).caller == expected, (text, query)
    callers = {gate.open_identity(a, q).caller for a, q in asked}
    assert len(callers) >= 5  # the headers name several callers
