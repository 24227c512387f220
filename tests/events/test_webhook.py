"""Job state-change events to a webhook and a JSONL file, from a real `batchrock serve`: a
receiver that drops, refuses and delays deliveries still gets every event of every job, in
each job's order, signed; a SIGKILL between a transition and its delivery loses nothing."""

from __future__ import annotations

import collections
import hashlib
import hmac
import os
import stat
import subprocess
import sys
from typing import Any

import orjson
import pytest

from batchrock.events.sinks import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.engine.test_e2e import FAST, claude_records, create, put, wait
from tests.events.sinkserver import Received, sink_server

pytestmark = pytest.mark.timeout(180)

SECRET = "whsec-do-not-log-4f7a1c"
EVENTS: dict[str, Any] = {
    **FAST,
    "events_retry_initial_seconds": 0.05,
    "events_retry_max_seconds": 0.2,
    "events_poll_seconds": 0.05,
    "events_webhook_secret": SECRET,
}


def first_deliveries(received: list[Received]) -> dict[str, list[str]]:
    """Per job, the statuses of its events in the order they were first accepted."""
    seen: set[str] = set()
    per_job: dict[str, list[str]] = collections.defaultdict(list)
    for r in received:
        event = r.json
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        per_job[event["resources"][0].rsplit("/", 1)[-1]].append(event["detail"]["status"])
    return per_job


def check_signature(r: Received) -> None:
    timestamp = r.headers[TIMESTAMP_HEADER.lower()]
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + r.body, hashlib.sha256)
    assert r.headers[SIGNATURE_HEADER.lower()] == "sha256=" + expected.hexdigest()


def test_every_event_arrives_in_order_through_drops_refusals_and_delays(
    server_factory: Any, tmp_path: Any
) -> None:
    attempts: collections.Counter[str] = collections.Counter()

    def policy(r: Received) -> int | str:
        event = r.json
        attempts[event["id"]] += 1
        n = attempts[event["id"]]
        # Each event is refused, dropped or delayed before it is taken, by its status.
        plan = {
            "Submitted": ["drop", 503],
            "Validating": [500],
            "Scheduled": ["slow"],
            "InProgress": ["drop"],
            "Completed": [429, 502, "slow"],
        }.get(event["detail"]["status"], [])
        return plan[n - 1] if n <= len(plan) else 200

    jsonl = tmp_path / "events.jsonl"
    with sink_server(policy) as hook:
        server = server_factory(**EVENTS, events_webhook_url=hook.url, events_jsonl_path=str(jsonl))
        put(server, "in/a.jsonl", claude_records(5))
        arns = [create(server) for _ in range(3)]
        for arn in arns:
            assert wait(server, arn)["status"] == "Completed"
        histories = {arn.rsplit("/", 1)[-1]: [s for s, _ in server.history(arn)] for arn in arns}
        want = sum(len(h) for h in histories.values())
        hook.wait_for(lambda: len({r.json["id"] for r in hook.accepted()}) == want)
        assert first_deliveries(hook.accepted()) == histories
        # The plan was carried out: refused, dropped and slow attempts came first.
        answers = collections.Counter(str(r.answer) for r in hook.received)
        assert answers["drop"] >= 6 and answers["503"] == 3 and answers["slow"] >= 6
        for r in hook.accepted():
            check_signature(r)
            assert r.headers["x-batchrock-event-id"] == r.json["id"]
        # The JSONL file has each event (at least once), in order, and is private.
        server.stop()
        lines = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
        by_job: dict[str, list[str]] = collections.defaultdict(list)
        for event in lines:
            by_job[event["resources"][0].rsplit("/", 1)[-1]].append(event["detail"]["status"])
        assert by_job == histories
        assert {e["id"] for e in lines} == {r.json["id"] for r in hook.accepted()}
        assert stat.S_IMODE(jsonl.stat().st_mode) == 0o600
        assert SECRET not in server.log()


def test_sigkill_between_transition_and_delivery_loses_nothing(server_factory: Any) -> None:
    """The receiver takes every event but holds its answer to the job's Completed event; the
    server is killed meanwhile (Completed is recorded, its delivery not acknowledged). The
    restarted server delivers it again, after everything before it."""

    def policy(r: Received) -> int | str:
        return "hold" if r.json["detail"]["status"] == "Completed" and not restarted else 200

    restarted = False
    with sink_server(policy) as hook:
        server = server_factory(**EVENTS, events_webhook_url=hook.url)
        put(server, "in/a.jsonl", claude_records(5))
        arn = create(server)
        server.wait_history(arn, "Completed")
        hook.wait_for(lambda: any(r.answer == "hold" for r in hook.received))
        server.kill()
        restarted = True
        hook.released.set()  # the killed server's connection is gone: nobody reads this answer
        server.start()
        history = [s for s, _ in server.history(arn)]
        hook.wait_for(
            lambda: any(
                r.json["detail"]["status"] == "Completed" and r.answer == 200 for r in hook.received
            )
        )
        server.stop()
    job_id = arn.rsplit("/", 1)[-1]
    assert first_deliveries(hook.accepted()) == {job_id: history}
    completed = [r for r in hook.received if r.json["detail"]["status"] == "Completed"]
    assert len(completed) >= 2  # the same event again (same id): at least once
    assert len({r.json["id"] for r in completed}) == 1


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--events-webhook-url", "ftp://example.com/hook", "events_webhook_url"),
        ("--events-jsonl-path", "/nonexistent-folder/events.jsonl", "events_jsonl_path"),
        ("--log-format", "xml", "log_format"),
        ("--events-eventbridge-region", "not a region!", "events_eventbridge_region"),
    ],
)
def test_a_bad_sink_setting_is_one_line_at_start_up(
    tmp_path: Any, flag: str, value: str, says: str
) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "batchrock.admin", "serve", "--port", "0", flag, value),
            *(("--events-eventbridge-bus", "b") if "eventbridge" in flag else ()),
        ],
        env={**os.environ, "BATCHROCK_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("batchrock serve: setting " + says)
    assert len(done.stderr.strip().splitlines()) == 1


def test_one_delivery_per_event_with_several_processes(server_factory: Any) -> None:
    """`serve --no-engine` and two workers share the store, each with the webhook configured:
    the sink's lease lets one of them deliver, so every event arrives once, in order."""
    with sink_server(lambda r: 200) as hook:
        server = server_factory(
            **{**EVENTS, "engine_lease_seconds": 30}, engine=False, events_webhook_url=hook.url
        )
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "batchrock.admin", "worker"],
                env={**server.env(), "BATCHROCK_DATA_DIR": str(server.data_dir)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        try:
            put(server, "in/a.jsonl", claude_records(5))
            arns = [create(server) for _ in range(4)]
            for arn in arns:
                assert wait(server, arn)["status"] == "Completed"
            histories = {a.rsplit("/", 1)[-1]: [s for s, _ in server.history(a)] for a in arns}
            want = sum(len(h) for h in histories.values())
            hook.wait_for(lambda: len(hook.accepted()) >= want)
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                proc.wait(timeout=15)
        server.stop()
    ids = [r.json["id"] for r in hook.accepted()]
    assert len(ids) == len(set(ids)) == want  # nobody delivered twice
    assert first_deliveries(hook.accepted()) == histories
