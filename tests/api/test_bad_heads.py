"""Bad request heads are answered 400 each, and connections past ``http_max_connections``
429 each, but logged a bounded number of times: a client sending them, or opening connections,
in a loop cannot fill the server's log (docs/events.md, "Bad request heads", "Connections
refused")."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

from batchrock.logs import BoundedWarnings
from tests.api.test_connections import busy_connections, closed_within, connect, read_reply
from tests.api.test_validation import assert_error
from tests.conftest import ServerProcess

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
BAD_HEADS = [
    b"hello\r\n\r\n",  # not HTTP
    b"GET /_batchrock/health HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /_batchrock/health HTTP/1.1\r\n\r\n",  # no Host
    # A header llhttp cannot read, after an Authorization that must never reach the log.
    b"GET /model-invocation-jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261201/us-east-1/bedrock/"
    b"aws4_request, SignedHeaders=host, Signature=" + SECRET.encode() + b"\r\n"
    b"Bad Header\x01: x\r\n\r\n",
]
UPGRADE = (
    b"GET /_batchrock/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
    b"Upgrade: h2c\r\n\r\n"
)
HEALTH = b"GET /_batchrock/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in server.log().splitlines() if line.startswith("{")]


#: The ``action`` of the lines logged one by one, and of their summaries.
BAD_HEAD = ("bad_request", "bad_requests_summary")
REFUSED = ("connection_refused", "connections_refused_summary")


def accounted(records: list[dict[str, Any]], actions: tuple[str, str]) -> int:
    """How many events the lines logged one by one and the summaries account for."""
    one, summary = actions
    one_by_one = sum(r.get("action") == one for r in records)
    return one_by_one + sum(r["count"] for r in records if r.get("action") == summary)


def bounded_log(
    server: ServerProcess, actions: tuple[str, str], sent: int, started: float, window: float
) -> list[dict[str, Any]]:
    """The lines about the ``sent`` events of ``actions`` since ``started``, once they account
    for all of them, checked bounded: one address, so its first 3 a window in full, then one
    summary line a window, and no other warning."""
    windows = (time.monotonic() - started) / window + 2  # the flood's, and the one after
    deadline = time.monotonic() + 30 + window  # the last window's summary comes at its end
    while accounted(json_lines(server), actions) < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    records = json_lines(server)
    warned = [r for r in records if r["level"] == "WARNING"]
    assert len(warned) <= 4 * windows, (len(warned), warned[:5])
    about = [r for r in warned if r.get("action") in actions]
    assert len(about) == len(warned), warned
    assert accounted(about, actions) == sent, about  # every one counted, none twice
    return about


def test_a_flood_of_bad_heads_is_answered_each_and_logged_a_bounded_number_of_times(
    server_factory: Any,
) -> None:
    window = 2.0
    server = server_factory(engine=False, log_format="json", bad_request_log_seconds=window)
    started = time.monotonic()
    with connect(server) as sock:  # answered as HTTP/1.1, and the connection closed
        sock.sendall(UPGRADE)
        assert read_reply(sock).status == 200
        assert closed_within(sock, 5)
    sent = 1
    for i in range(500):
        with connect(server) as sock:
            sock.sendall(BAD_HEADS[i % len(BAD_HEADS)])
            reply = read_reply(sock)
            assert closed_within(sock, 5)
        assert_error(reply, 400, "ValidationException")
        sent += 1
    # Before, uvicorn wrote one line for each bad head, and two for an Upgrade.
    about = bounded_log(server, BAD_HEAD, sent, started, window)
    assert all("bad request head" in r["message"] for r in about), about
    first = [r["message"] for r in about if r["action"] == "bad_request"][:3]
    assert first[0].startswith("bad request head from 127.0.0.1:"), first
    assert first[0].endswith(": an Upgrade request (never done: answered as HTTP/1.1, closed)")
    assert first[1].endswith(": unreadable (Invalid method encountered); answered 400"), first
    assert re.search(
        r": an HTTP/2.0 request; answered 400; more from 127.0.0.1 in the next [012] s are"
        " counted, not logged one by one$",
        first[2],
    ), first
    summary = next(r["message"] for r in about if r["action"] == "bad_requests_summary")
    assert " more bad request heads in the last 2 s, not logged one by one: " in summary
    assert " from 127.0.0.1; most for: " in summary and "; answered 400 (" in summary, summary
    assert SECRET not in server.log()
    assert "AKIDEXAMPLE" not in server.log()


def test_a_flood_of_connections_past_the_limit_is_answered_429_each_and_logged_bounded(
    server_factory: Any,
) -> None:
    window = 2.0
    server = server_factory(
        engine=False,
        log_format="json",
        bad_request_log_seconds=window,
        http_max_connections=2,
        http_keepalive_timeout_seconds=60,
        http_client_timeout_seconds=60,
    )
    with busy_connections(2, server):
        started = time.monotonic()
        sent = 0
        for _ in range(200):  # a client opening connections in a loop
            with connect(server) as sock:
                sock.sendall(HEALTH)
                reply = read_reply(sock)
            assert_error(reply, 429, "ThrottlingException")
            sent += 1
        about = bounded_log(server, REFUSED, sent, started, window)  # before: 200 lines
    first = [r for r in about if r["action"] == "connection_refused"][:3]
    assert first[0]["message"].startswith("connection refused from 127.0.0.1:"), first
    assert first[0]["message"].endswith(
        ": 2 connections open (http_max_connections), each with a request in progress; answered 429"
    ), first
    assert first[0]["client"].startswith("127.0.0.1:"), first
    assert re.search(
        r"; answered 429; more from 127.0.0.1 in the next [012] s are counted, not logged one"
        " by one$",
        first[2]["message"],
    ), first
    summary = next(r for r in about if r["action"] == "connections_refused_summary")
    assert summary["message"].startswith(f"{summary['count']} more connections refused in the ")
    assert (
        " from 127.0.0.1; most for: 2 connections open (http_max_connections)"
        in (summary["message"])
    ), summary
    assert call_health(server) == 200  # the busy ones gone, it serves again


def call_health(server: ServerProcess) -> int:
    with connect(server) as sock:
        sock.sendall(HEALTH)
        return read_reply(sock).status


class FakeLoop:
    """The two things :class:`BoundedWarnings` asks of its loop: the time and a timer."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Any]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any) -> None:
        self.timers.append((self.now + delay, callback))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [t for t in self.timers if t[0] <= self.now]
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _, callback in due:
            callback()


def test_many_addresses_share_one_bound_and_the_summary_names_the_busiest(
    caplog: Any,
) -> None:
    import logging

    logger = logging.getLogger("tests.bad_heads")
    warnings = BoundedWarnings(logger, "bad head", "bad heads", 60.0)
    loop: Any = FakeLoop()
    caplog.set_level(logging.WARNING, logger="tests.bad_heads")
    for i in range(3000):  # 2000 addresses, one of them busy: past the tallies' bound
        source = "10.0.0.1" if i % 3 == 0 else f"10.1.{i // 250}.{i % 250}"
        warnings.warn(loop, source, f"{source}:1", "not HTTP/1.1: Invalid method encountered")
    assert len(caplog.records) == 10  # 3 from the busy one, 7 more in all
    assert len(loop.timers) == 1
    loop.advance(59)
    assert len(caplog.records) == 10
    loop.advance(1)
    assert len(caplog.records) == 11
    summary = caplog.records[-1].getMessage()
    assert summary.startswith("2990 more bad heads in the last 60 s, not logged one by one: ")
    assert "997 from 10.0.0.1, " in summary
    assert "other addresses" in summary and "more addresses)" in summary
    assert summary.endswith("most for: not HTTP/1.1: Invalid method encountered (2990)")
    loop.advance(600)  # nothing more came: no line, no timer
    assert len(caplog.records) == 11 and not loop.timers
    warnings.warn(loop, "10.0.0.1", "10.0.0.1:2", "again")  # a new window
    assert len(caplog.records) == 12 and len(loop.timers) == 1
