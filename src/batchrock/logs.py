"""The service's log lines: text, or one JSON object per line (setting ``log_format``).

A JSON line carries the message and the structured fields the code passes as ``extra``
(``action``, ``job_id``, ``account_id``, ``status`` ...), plus the ``request_id`` of the API
request being served when the line was written (:data:`request_id`), so one job can be
followed through the log from its Create to its last event delivery (docs/events.md, "Logs").

Secrets never reach a line through a field: a field whose name says it holds one
(authorization, signature, secret, password, token, key) is written as ``"[redacted]"``.

With several API processes (setting ``api_processes``) every line says which one wrote it
(:func:`name_process`): ``[api 1 pid 4242]`` in text, ``api_process`` and ``pid`` in JSON,
uvicorn's own lines included (:func:`uvicorn_log_config`). One process's lines are as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

#: The x-amzn-RequestId of the API request this task serves (``None`` outside requests).
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "batchrock_request_id", default=None
)

#: Random hex digits for request ids, drawn from the OS a batch at a time, and how many of
#: them are used (see new_request_id).
_random_hex: list[Any] = ["", 0]
_RANDOM_BATCH = 2048  # bytes: 128 ids a system call
# A UUID's variant digit (RFC 9562 section 4.1: its top two bits 10), for any random digit.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_request_id() -> str:
    """A random UUID (version 4) for an x-amzn-RequestId, as ``str(uuid.uuid4())`` writes
    one, at a quarter of its cost: ``uuid4`` makes a ``getrandom`` call, an integer and a
    ``UUID`` object per id, a tenth of a GetModelInvocationJob's own CPU. The random digits
    come from ``os.urandom`` as uuid4's do, 128 ids' worth at a time; a forked child starts
    with none of its parent's, so no two processes share ids."""
    pool, used = _random_hex
    if used >= len(pool):
        pool, used = os.urandom(_RANDOM_BATCH).hex(), 0
        _random_hex[0] = pool
    _random_hex[1] = used + 32
    h = pool[used : used + 32]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def _forget_random_hex() -> None:
    _random_hex[:] = ["", 0]


os.register_at_fork(after_in_child=_forget_random_hex)

_SECRET_NAME = re.compile(r"authori[sz]ation|signature|secret|password|token|(^|_)key$", re.I)
# What every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: TEXT_FORMAT with the API process that wrote the line, when ``serve`` runs several.
PROCESSES_TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [api %(api_process)s pid %(process)d]: %(message)s"
)
#: Which of ``serve``'s API processes this is (0: the one with the engine); ``None`` while
#: there is only one.
_api_process: int | None = None


class _RequestId(logging.Filter):
    """Puts the current request's id on every record written while it is served."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            current = request_id.get()
            if current is not None:
                record.request_id = current
        return True


class _ProcessLabel(logging.Filter):
    """Puts the API process (:func:`name_process`) on every record, for either format."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _api_process is not None:
            record.api_process = _api_process
            record.pid = record.process
        return True


class _TextFormatter(logging.Formatter):
    """The text lines :func:`configure` writes (and :func:`name_process` labels)."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name in _STANDARD or name.startswith("_"):
                continue
            line[name] = "[redacted]" if _SECRET_NAME.search(name) else value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str, fmt: str) -> None:
    """Log to stderr in ``fmt`` (``text`` or ``json``) at ``level``, as
    :func:`logging.basicConfig` would: a root logger that has handlers already (a test's
    capture) keeps them, and gets the request-id filter."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        formatter = JsonFormatter() if fmt == "json" else _TextFormatter(TEXT_FORMAT)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    # httpx logs every request's URL at info: a webhook URL can itself be a secret (a token
    # in its path or query), so only debug shows them.
    if level.lower() != "debug":
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
    for each in root.handlers:
        if not any(isinstance(f, _RequestId) for f in each.filters):
            each.addFilter(_RequestId())


def name_process(index: int) -> None:
    """From now on, say on every line that API process ``index`` of several wrote it (0: the
    one with the engine, as the health check's ``x-batchrock-process`` says). Called in each
    process of a ``serve`` with ``api_processes`` > 1, after the fork."""
    global _api_process
    _api_process = index
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _ProcessLabel) for f in handler.filters):
            handler.addFilter(_ProcessLabel())
        if isinstance(handler.formatter, _TextFormatter):
            handler.setFormatter(_TextFormatter(PROCESSES_TEXT_FORMAT))


def uvicorn_log_config(base: dict[str, Any]) -> dict[str, Any]:
    """uvicorn's text logging config (``base``: its LOGGING_CONFIG) with this API process's
    label in each line, when :func:`name_process` named one; ``base`` itself otherwise."""
    if _api_process is None:
        return base
    config = copy.deepcopy(base)
    label = f"[api {_api_process} pid {os.getpid()}] "
    for formatter in config.get("formatters", {}).values():
        fmt = formatter.get("fmt", "%(message)s")
        head, sep, tail = fmt.partition("%(levelprefix)s ")
        formatter["fmt"] = head + sep + label + tail if sep else label + fmt
    return config


class BoundedWarnings:
    """Warnings about what clients do, bounded however often they do it.

    uvicorn writes a warning for each request head it cannot read (two for an Upgrade
    request), and a server at ``max_connections`` refuses each new connection with one: one
    client sending bad heads, or opening connections, in a loop would fill the log, and its
    disk. Here, within a window of ``interval`` seconds (from the first such event), the
    first ``per_source`` from each address and ``overall`` in all are logged one by one; the
    rest are only counted, and when the window ends one line sums them up: how many, from
    which addresses (the ``sources_named`` busiest) and why. So at most ``overall + 1`` lines
    an interval, whatever comes in, and nothing when nothing does (the summary's timer is
    armed by the first event of a window). The tallies are bounded too (``_KEPT`` addresses
    and reasons; more are counted as "other"). The lines' ``action`` fields are ``action``
    and ``summary_action``: one kind of event, one instance. Lines are written at ``level``
    (WARNING; INFO for what is routine, such as a wrong signature).

    Callers pass a ``reason`` that holds nothing the client sent (llhttp's fixed error
    strings, our own refusals) but what is known to be no secret (an access key id an
    account holds), so no header, and no ``Authorization``, reaches the log.
    Runs on the event loop: a few dict operations an event, the summary on a timer."""

    _KEPT = 1000

    def __init__(
        self,
        logger: logging.Logger,
        one: str,
        many: str,
        interval: float,
        *,
        per_source: int = 3,
        overall: int = 10,
        sources_named: int = 5,
        action: str = "bad_request",
        summary_action: str = "bad_requests_summary",
        level: int = logging.WARNING,
    ) -> None:
        self._log = logger
        self._level = level
        self._one = one
        self._many = many
        self._action = action
        self._summary_action = summary_action
        self.interval = interval
        self._per_source = per_source
        self._overall = overall
        self._sources_named = sources_named
        self._window_end: float | None = None
        self._logged: dict[str, int] = {}
        self._logged_total = 0
        self._counted: dict[str, int] = {}
        self._reasons: dict[str, int] = {}

    def warn(self, loop: asyncio.AbstractEventLoop, source: str, peer: str, reason: str) -> None:
        """One event from address ``source`` (``peer``: with its port) for ``reason``."""
        now = loop.time()
        if self._window_end is None:
            self._window_end = now + self.interval
            loop.call_later(self.interval, self.summarize)
        logged = self._logged.get(source, 0)
        total = self._logged_total
        if logged < self._per_source and total < self._overall:
            self._logged[source] = logged + 1
            self._logged_total += 1
            last = logged + 1 == self._per_source or total + 1 == self._overall
            whose = "more" if total + 1 == self._overall else f"more from {source}"
            suffix = (
                f"; {whose} in the next {max(self._window_end - now, 0):.0f} s are counted,"
                " not logged one by one"
                if last
                else ""
            )
            self._log.log(
                self._level,
                "%s from %s: %s%s",
                self._one,
                peer,
                reason,
                suffix,
                extra={"action": self._action, "client": peer, "reason": reason},
            )
            return
        _tally(self._counted, source, "other addresses")
        _tally(self._reasons, reason, "other reasons")

    def summarize(self) -> None:
        """End the window: one line for what was counted and not logged, if anything was."""
        counted, reasons = self._counted, self._reasons
        self._window_end = None
        self._logged, self._counted, self._reasons = {}, {}, {}
        self._logged_total = 0
        if not counted:
            return
        total = sum(counted.values())
        busiest = sorted(counted.items(), key=lambda item: -item[1])
        named = ", ".join(f"{n} from {source}" for source, n in busiest[: self._sources_named])
        if len(busiest) > self._sources_named:
            named += f" (and {len(busiest) - self._sources_named} more addresses)"
        why = ", ".join(
            f"{reason} ({n})" for reason, n in sorted(reasons.items(), key=lambda i: -i[1])[:3]
        )
        self._log.log(
            self._level,
            "%d more %s in the last %.0f s, not logged one by one: %s; most for: %s",
            total,
            self._many,
            self.interval,
            named,
            why,
            extra={
                "action": self._summary_action,
                "count": total,
                "seconds": self.interval,
            },
        )


def _tally(counts: dict[str, int], key: str, other: str) -> None:
    if key not in counts and len(counts) >= BoundedWarnings._KEPT:
        key = other
    counts[key] = counts.get(key, 0) + 1
