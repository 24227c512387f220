"""The web console in a real browser, against real ``batchrock serve`` processes.

Jobs are made slow with the built-in model's latency (one record at a time), so a test can
watch the counters move; every wait is on what the page shows or the store's history.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.access.conftest import (
    ALICE,
    ALICE_API_KEY,
    BOB,
    READER,
    client,
    job_args,
    write_credentials,
)
from tests.conftest import REPO_ROOT, bedrock_client
from tests.engine.test_e2e import CLAUDE, FAST, claude_records, put

pytestmark = pytest.mark.timeout(180)

#: Screenshots for docs/ (docs/console.md): set to a folder to write them there.
SCREENSHOTS = os.environ.get("BATCHROCK_CONSOLE_SCREENSHOTS")


def create(server: Any, prefix: str, name: str, **extra: Any) -> str:
    (server.data_dir / "s3" / "bucket").mkdir(parents=True, exist_ok=True)
    response = bedrock_client(server.url).create_model_invocation_job(
        jobName=name,
        roleArn="arn:aws:iam::123456789012:role/batch",
        modelId=CLAUDE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://bucket/{prefix}"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bucket/out/"}},
        **extra,
    )
    return str(response["jobArn"])


def expect(page: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(page)


def shot(page: Any, tmp_path: Path, name: str) -> None:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    page.screenshot(path=str(folder / name), full_page=True)


def test_list_filter_watch_stop_and_error_records(
    server_factory: Any, page: Any, tmp_path: Path
) -> None:
    server = server_factory(
        **FAST, builtin_latency_ms=25, builtin_error_rate=0.5, engine_record_concurrency=1
    )
    # Whatever the page logs as an error (a script error, a refused load) fails the test.
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    small_records = claude_records(80)
    for record in small_records:  # markup in a record is shown as text, never run
        record["modelInput"]["messages"][0]["content"] = "<img src=x id=injected>"
    put(server, "small/a.jsonl", small_records)
    put(server, "big/a.jsonl", claude_records(4000))
    small = create(server, "small/", "alpha-small")
    server.wait_history(small, "Completed", timeout=60)
    big = create(server, "big/", "beta-big", tags=[{"key": "team", "value": "ml/batch"}])
    big_id = big.rsplit("/", 1)[-1]
    small_id = small.rsplit("/", 1)[-1]

    page.goto(server.url + "/console")
    rows = page.locator("#jobs tbody tr[data-job]")
    expect(rows).to_have_count(2)
    # Newest first, as the API lists them; then the other order.
    expect(rows.first).to_have_attribute("data-job", big_id)
    page.select_option("#filter-sort", "Ascending")
    expect(rows.first).to_have_attribute("data-job", small_id)
    # Live status without reloading: the big job's row reaches InProgress on its own.
    expect(page.locator(f"tr[data-job='{big_id}'] .status")).to_have_text("InProgress")

    page.fill("#filter-name", "beta")
    page.click("#apply-filters")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job", big_id)
    page.fill("#filter-name", "")
    page.select_option("#filter-status", "Completed")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job", small_id)
    # Submit-time bounds: nothing was submitted before 2001.
    page.select_option("#filter-status", "")
    page.fill("#filter-before", "2001-01-01T00:00")
    page.click("#apply-filters")
    expect(page.locator("#jobs .empty")).to_have_text("No jobs match.")
    page.fill("#filter-before", "")
    page.fill("#filter-after", "2001-01-01T00:00")
    page.click("#apply-filters")
    expect(rows).to_have_count(2)
    shot(page, tmp_path, "console-list.png")

    # The running job: its counters move while the page stays loaded.
    page.click(f"tr[data-job='{big_id}'] a.job-link")
    expect(page.locator("h1")).to_have_text("beta-big")
    processed = page.locator("#counter-processed")
    expect(processed).not_to_have_text("—")
    first = int(processed.inner_text().replace(",", ""))
    page.wait_for_function(
        "n => Number(document.querySelector('#counter-processed').textContent"
        ".replace(/,/g, '')) > n",
        arg=first,
    )
    expect(page.locator("#counter-total")).to_have_text("4,000")
    expect(page.locator("#counter-rate")).not_to_have_text("—")
    expect(page.locator("#counter-eta")).not_to_have_text("—")
    expect(page.locator("#setting-model")).to_have_text("anthropic.claude-3-haiku-20240307-v1:0")
    expect(page.locator("#setting-input")).to_have_text("s3://bucket/big/")
    expect(page.locator("#setting-timeout")).to_have_text("24 hours")
    expect(page.locator("#tags")).to_contain_text("team = ml/batch")
    expect(page.locator("#timeline li[data-status=InProgress]")).to_have_count(1)
    shot(page, tmp_path, "console-job.png")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#stop-job")
    expect(page.locator(".title-row .status")).to_have_text("Stopped", timeout=30_000)
    expect(page.locator("#stop-job")).to_be_hidden()
    statuses = [s for s, _ in server.history(big)]
    assert statuses[-2:] == ["Stopping", "Stopped"]
    expect(page.locator("#timeline li[data-status=Stopped]")).to_have_count(1)

    # The finished job: its files, its manifest, its error records.
    page.goto(server.url + f"/console#/job/{small_id}")
    expect(page.locator(".title-row .status")).to_have_text("Completed")
    expect(page.locator("#files tr[data-file]")).to_have_count(2)
    expect(page.locator("#manifest")).to_contain_text('"totalRecordCount": 80')
    errors = page.locator("#errors tr.error-record")
    error_count = int(page.locator("#counter-error").inner_text())
    assert error_count > 20  # half the records fail: more than one page of them
    expect(errors).to_have_count(20)
    first_page = errors.all_inner_texts()
    page.click("#errors-next")
    expect(errors.first).not_to_have_text(first_page[0])  # the next page is shown
    expect(errors).to_have_count(min(error_count - 20, 20))
    # The rows are replaced one by one: wait until none of the first page's is left.
    page.wait_for_function(
        "first => [...document.querySelectorAll('#errors tr.error-record')]"
        ".every(row => !first.includes(row.innerText))",
        arg=first_page,
    )
    assert not set(errors.all_inner_texts()) & set(first_page)
    page.click("#errors-first")
    expect(errors).to_have_count(20)
    errors.first.click()
    expect(page.locator("#detail-code")).to_have_text("500")
    expect(page.locator("#error-detail pre")).to_contain_text("<img src=x id=injected>")
    expect(page.locator("#injected")).to_have_count(0)

    # Download and view go through the object store seam, with their own headers.
    manifest = page.request.get(
        server.url + f"/console/files/{small_id}/manifest.json.out?download=1"
    )
    assert manifest.status == 200
    assert manifest.headers["content-type"].startswith("application/json")
    assert manifest.headers["content-disposition"].startswith(
        'attachment; filename="manifest.json.out"'
    )
    assert b'"processedRecordCount":80' in manifest.body()
    view = page.request.get(server.url + f"/console/files/{small_id}/a.jsonl.out")
    assert view.headers["content-type"] == "text/plain; charset=utf-8"
    assert "sandbox" in view.headers["content-security-policy"]
    assert view.body().count(b"\n") == 80
    # A name with spaces and non-ASCII letters, as the page's links encode it.
    odd = server.data_dir / "s3" / "bucket" / "out" / small_id / "sub dir" / "résumé.out"
    odd.parent.mkdir()
    odd.write_bytes(b'{"recordId": "x"}\n')
    names = [
        f["name"]
        for f in page.request.get(server.url + f"/console/api/jobs/{small_id}").json()["files"]
    ]
    assert "sub dir/résumé.out" in names
    answer = page.request.get(
        server.url + f"/console/files/{small_id}/sub%20dir/r%C3%A9sum%C3%A9.out?download=1"
    )
    assert answer.status == 200 and answer.body() == b'{"recordId": "x"}\n'
    disposition = answer.headers["content-disposition"]
    assert (
        disposition == "attachment; filename=\"r_sum_.out\"; filename*=UTF-8''r%C3%A9sum%C3%A9.out"
    )
    # No name outside the job's own output listing is served, however it is spelled.
    (server.data_dir / "s3" / "bucket" / "secret.txt").write_text("no")
    for name in ("../secret.txt", "..%2F..%2Fsecret.txt", "%2e%2e/%2e%2e/secret.txt"):
        answer = page.request.get(server.url + f"/console/files/{small_id}/{name}")
        assert answer.status == 404, name
    assert problems == []


def test_create_a_job_from_the_form(server_factory: Any, page: Any) -> None:
    server = server_factory(**FAST)
    put(server, "input/batch/a.jsonl", claude_records(12))
    page.goto(server.url + "/console#/new")
    page.fill("#job-name", "from-the-form")
    page.fill("#model-id", "anthropic.claude-3-haiku-20240307-v1:0")
    # The prefix browser: bucket, folder, folder, then "use this prefix".
    page.click("#browse")
    page.click("#browser a.folder:text-is('bucket/')")
    page.click("#browser a.folder:text-is('input/')")
    page.click("#browser a.folder:text-is('batch/')")
    expect(page.locator("#browser a.file")).to_have_text("a.jsonl")
    page.click("#browser .use-prefix")
    expect(page.locator("#input-uri")).to_have_value("s3://bucket/input/batch/")
    page.fill("#output-uri", "s3://bucket/output/")
    page.fill("#timeout-hours", "30")
    page.click("#submit-job")
    expect(page.locator("h1")).to_have_text("from-the-form")
    expect(page.locator(".title-row .status")).to_have_text("Completed", timeout=60_000)
    expect(page.locator("#counter-processed")).to_have_text("12")
    expect(page.locator("#setting-timeout")).to_have_text("30 hours")
    (job,) = bedrock_client(server.url).list_model_invocation_jobs()["invocationJobSummaries"]
    assert job["jobName"] == "from-the-form"
    assert job["timeoutDurationInHours"] == 30
    # The API's own rules, message and all: a bad model id is refused in the form.
    page.goto(server.url + "/console#/new")
    page.fill("#model-id", "no.such-model")
    page.fill("#input-uri", "s3://bucket/input/")
    page.fill("#output-uri", "s3://bucket/output/")
    page.click("#submit-job")
    expect(page.locator("#create-form .error")).to_contain_text("model")
    assert (
        len(bedrock_client(server.url).list_model_invocation_jobs()["invocationJobSummaries"]) == 1
    )


def test_security_headers_and_csrf(server_factory: Any, page: Any) -> None:
    server = server_factory(engine=False)
    answer = page.goto(server.url + "/console")
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert answer.headers["x-frame-options"] == "DENY"
    expect(page.locator("#jobs .empty")).to_have_text("No jobs match.")
    cookie = next(c for c in page.context.cookies() if c["name"] == "batchrock_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # A state change without the session's CSRF token is refused, even with the cookie.
    body = {"jobName": "x", "roleArn": "arn:aws:iam::123456789012:role/r", "modelId": "m"}
    refused = page.request.post(server.url + "/console/api/jobs", data=body)
    assert refused.status == 403
    assert "CSRF" in refused.json()["message"]
    # A cross-site form post is refused by the API's guard before the console sees it.
    request = urllib.request.Request(
        server.url + "/console/api/jobs",
        data=b"jobName=x",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 403
    assert bedrock_client(server.url).list_model_invocation_jobs()["invocationJobSummaries"] == []
    # Console requests are counted with the API's, under one bounded label.
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        scraped = response.read().decode()
    assert re.search(
        r'batchrock_api_requests_total\{code="200",operation="Console"\} [1-9]', scraped
    )
    assert re.search(
        r'batchrock_api_requests_total\{code="403",operation="Console"\} 1\.0', scraped
    )


def test_open_mode_switches_region_and_account(server_factory: Any, page: Any) -> None:
    server = server_factory(engine=False)
    args = job_args("west-job", bucket="bucket", roleArn="arn:aws:iam::123456789012:role/r")
    bedrock_client(server.url, region="us-west-2").create_model_invocation_job(**args)
    # In open mode a 12-digit access key id names the account (docs/access.md).
    other = bedrock_client(server.url, access_key="444455556666")
    other.create_model_invocation_job(**{**args, "jobName": "other-account-job"})
    page.goto(server.url + "/console")
    expect(page.locator("#jobs .empty")).to_have_text("No jobs match.")
    page.fill("#scope-region", "us-west-2")
    page.click("#scope-switch")
    rows = page.locator("#jobs tbody tr[data-job]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("west-job")
    page.fill("#scope-region", "us-east-1")
    page.fill("#scope-account", "444455556666")
    page.click("#scope-switch")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("other-account-job")
    expect(page.locator("#scope-account")).to_have_value("444455556666")
    page.reload()  # the session keeps its choice
    expect(rows.first).to_contain_text("other-account-job")
    page.fill("#scope-region", "not a region")
    page.click("#scope-switch")
    expect(page.locator("main .scope-error")).to_contain_text("is not a Region name")
    assert page.request.get(server.url + "/console/api/session").json()["region"] == "us-east-1"


def test_sign_in_shows_only_the_accounts_jobs(
    server_factory: Any, page: Any, tmp_path: Path
) -> None:
    creds = write_credentials(tmp_path / "credentials.toml")
    server = server_factory(engine=False, credentials_file=creds)
    alice_arn = client(server.url, ALICE).create_model_invocation_job(**job_args("alice-job"))[
        "jobArn"
    ]
    bob_arn = client(server.url, BOB).create_model_invocation_job(
        **job_args("bob-job", bucket="team-b-data", roleArn="arn:aws:iam::222222222222:role/r")
    )["jobArn"]
    page.goto(server.url + "/console")
    expect(page.locator("#sign-in")).to_be_visible()
    # Nothing is readable before signing in.
    assert page.request.get(server.url + "/console/api/jobs").status == 401
    page.fill("#access-key-id", ALICE.access_key_id)
    page.fill("#secret-access-key", "wrong")
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#sign-in .error")).to_have_text("The key or secret is not right.")
    page.fill("#secret-access-key", ALICE.secret)
    page.click("#sign-in button[type=submit]")
    rows = page.locator("#jobs tbody tr[data-job]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("alice-job")
    expect(page.locator("#scope-account")).to_have_text("111111111111")
    # Bob's job is not found for Alice, by page or by file.
    bob_id = bob_arn.rsplit("/", 1)[-1]
    page.goto(server.url + f"/console#/job/{bob_id}")
    expect(page.locator("main .error")).to_contain_text("Could not find")
    assert page.request.get(server.url + f"/console/api/jobs/{bob_id}").status == 404
    # Her own job opens; the bucket browser lists only her buckets.
    (server.data_dir / "s3" / "team-a-data").mkdir(parents=True)
    (server.data_dir / "s3" / "team-b-data").mkdir(parents=True)
    page.goto(server.url + f"/console#/job/{alice_arn.rsplit('/', 1)[-1]}")
    expect(page.locator("h1")).to_have_text("alice-job")
    buckets = page.request.get(server.url + "/console/api/browse?uri=").json()["buckets"]
    assert buckets == ["team-a-data"]
    denied = page.request.get(server.url + "/console/api/browse?uri=s3://team-b-data/")
    assert denied.status == 403
    csrf = page.request.get(server.url + "/console/api/session").json()["csrf"]
    switched = page.request.post(
        server.url + "/console/api/session/scope",
        data={"region": "us-east-1", "account": BOB.account},
        headers={"X-Batchrock-Csrf": csrf},
    )
    assert switched.status == 400
    assert "own account" in switched.json()["message"]
    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible()
    assert page.request.get(server.url + "/console/api/jobs").status == 401

    # A Bedrock API key signs in too; a key's permissions hold in the console as in the API.
    signed = page.request.post(server.url + "/console/api/session", data={"apiKey": ALICE_API_KEY})
    assert signed.json()["account"] == ALICE.account
    reader = page.request.post(
        server.url + "/console/api/session",
        data={"accessKeyId": READER.access_key_id, "secretAccessKey": READER.secret},
    ).json()
    alice_id = alice_arn.rsplit("/", 1)[-1]
    assert page.request.get(server.url + f"/console/api/jobs/{alice_id}").ok
    stop = page.request.post(
        server.url + f"/console/api/jobs/{alice_id}/stop",
        data={},
        headers={"X-Batchrock-Csrf": reader["csrf"]},
    )
    assert stop.status == 403
    assert "bedrock:StopModelInvocationJob" in stop.json()["message"]
    assert (
        client(server.url, ALICE).get_model_invocation_job(jobIdentifier=alice_arn)["status"]
        == "Submitted"
    )


def test_console_assets_ship_in_the_package() -> None:
    static = REPO_ROOT / "src" / "batchrock" / "console" / "static"
    names = {p.name for p in static.iterdir()}
    assert {"index.html", "console.js", "console.css"} <= names
    # Nothing is loaded from elsewhere (SVG's namespace name is a name, not a load).
    for path in static.iterdir():
        text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]", text), path
