"""Per-record deadlines for one event loop, without a timeout context per record.

``asyncio.timeout`` costs a context manager, a timer handle and a reschedule per record, about
a twentieth of what a record costs on the OpenAI-compatible path. The retry layer's deadlines
all have the same length and start in time order, so they expire in the order they start:
one queue in start order, and one timer for its head, serve every record of the loop. A
record that finishes is marked done and left for the timer (or the next finish at the head)
to drop; when the timer fires, it cancels the tasks whose records are past their deadline
and sets itself for the next live one.

An entry is a list ``[when, task, state]``: the caller makes it (``new``), starts it when
the record's time starts to run (``start``), and ends it (``finish``) however the record
ends; after a cancellation, ``state is EXPIRED`` tells the deadline's from any other.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from typing import Any

#: An entry's states.
WAITING, ACTIVE, EXPIRED, DONE = "waiting", "active", "expired", "done"
#: Done entries behind a live head are kept until there are this many more than live ones
#: (then the queue is rebuilt): memory stays in proportion to the records in flight.
_SLACK = 256

Entry = list[Any]

#: asyncio's own map of each running loop to its current task. Python 3.11's
#: ``asyncio.current_task()`` asks ``get_running_loop()`` first, which makes a system call
#: (``getpid``) each time: a microsecond per record on this path. Where the map is not there
#: (later Pythons keep it elsewhere), :func:`current_task` asks asyncio.
_CURRENT_TASKS: dict[Any, asyncio.Task[Any]] | None = getattr(asyncio.tasks, "_current_tasks", None)


def current_task(known: Deadlines | None) -> asyncio.Task[Any]:
    """The running task, found through the loop of ``known`` when that loop is the one
    running it (a loop that is not running has no current task there), else asyncio's
    way."""
    if known is not None and _CURRENT_TASKS is not None:
        task = _CURRENT_TASKS.get(known.loop)
        if task is not None:
            return task
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("a record's deadline needs to be awaited in a task")
    return task


class Deadlines:
    """The deadlines of the records awaited on ``loop``."""

    __slots__ = ("_entries", "_handle", "_live", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._entries: deque[Entry] = deque()
        self._handle: asyncio.TimerHandle | None = None
        self._live = 0

    def __len__(self) -> int:
        """Entries held (live ones, and done ones not dropped yet)."""
        return len(self._entries)

    @staticmethod
    def new(task: asyncio.Task[Any]) -> Entry:
        """An entry for a record awaited by ``task``, not started yet."""
        return [0.0, task, WAITING]

    def start(self, entry: Entry, seconds: float) -> None:
        """``entry``'s record must finish within ``seconds`` from now."""
        when = self.loop.time() + seconds
        entry[0] = when
        entry[2] = ACTIVE
        entries = self._entries
        if not entries or entries[-1][0] <= when:
            entries.append(entry)
        else:  # a shorter deadline than one before it (the policy changed): keep the order
            bisect.insort(entries, entry, key=_when)
        self._live += 1
        if self._handle is None or self._handle.when() > entries[0][0]:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self.loop.call_at(entries[0][0], self._expire)

    def finish(self, entry: Entry) -> None:
        """``entry``'s record is over (answered, failed, expired or cancelled)."""
        if entry[2] is ACTIVE:
            self._live -= 1
        entry[2] = DONE
        entries = self._entries
        while entries and entries[0][2] is DONE:
            entries.popleft()
        if len(entries) > 2 * self._live + _SLACK:
            self._entries = deque(e for e in entries if e[2] is ACTIVE)

    def _expire(self) -> None:
        self._handle = None
        # Handles run when their time is within the clock's resolution; a microsecond's
        # margin keeps a head due now from re-arming the timer for itself.
        now = self.loop.time() + 1e-6
        entries = self._entries
        while entries:
            head = entries[0]
            if head[2] is ACTIVE:
                if head[0] > now:
                    break
                head[2] = EXPIRED
                self._live -= 1
                head[1].cancel()
            entries.popleft()
        if entries:
            self._handle = self.loop.call_at(entries[0][0], self._expire)


def _when(entry: Entry) -> float:
    return float(entry[0])
