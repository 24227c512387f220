"""Each job's encoded summary, kept under the row's key: a listing is mostly a join of bytes.

A job's summary (ModelInvocationJobSummary, and GetModelInvocationJob's body, the same 20
members) is a function of its row alone. So the bytes are kept under the row's
:data:`~batchrock.store.base.RowKey` (its id and a version that any change of the row moves
on, whichever process writes), and a listing first reads only the keys (two columns, both in
the listing index, read as one string for the whole page): when every key has its bytes the
page is their join, with no row decoded and no time formatted. Another process's write changes
the row's key, so its old bytes are never looked up again; correctness never depends on the
cache, only the cost does.

When a key is missing, the page is read again whole, each row with its key
(:meth:`JobStore.list_keyed_rows`: one query, one consistent snapshot), and answered from
those rows, each found or encoded under its own key. The entries are bounded by count
(setting ``summary_cache_jobs``); the oldest-encoded go first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, cast

import orjson

from batchrock.api import codec
from batchrock.service import Caller, JobService
from batchrock.store.base import JobFilter, JobRow, PageRequest, RowKey, key_job_id

_LIST_HEAD = b'{"invocationJobSummaries":['


class Encoded:
    """A response body already in its wire bytes (what ``orjson.dumps`` of the response's
    dict gives, byte for byte)."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body

    def decoded(self) -> dict[str, Any]:
        """The body as the dict it encodes (for the console, which reads members)."""
        value: dict[str, Any] = orjson.loads(self.body)
        return value


@dataclass(frozen=True, slots=True)
class SummaryPage:
    #: The page's summaries, encoded, in the listing's order.
    summaries: list[bytes]
    #: Whether more jobs follow; then ``last`` is the (submit_time µs, job_id) of the last one.
    more: bool
    last: tuple[int, str] | None

    def body(self, next_token: str | None) -> Encoded:
        """The ListModelInvocationJobs response, with ``nextToken`` when given.

        Made in one allocation of the page's size: the head and tail are joined to the first
        and last summaries (small copies), then one ``join`` writes the whole body. Head +
        join + tail copied a page of 1000 (800 kB) twice; memory copies were an eighth of the
        server's CPU for such a page (perf, docs/benchmarks.md)."""
        tail = b"]}" if next_token is None else b'],"nextToken":' + orjson.dumps(next_token) + b"}"
        parts = self.summaries
        if not parts:
            return Encoded(_LIST_HEAD + tail)
        if len(parts) == 1:
            return Encoded(_LIST_HEAD + parts[0] + tail)
        ends = [_LIST_HEAD + parts[0], *parts[1:-1], parts[-1] + tail]
        return Encoded(b",".join(ends))


class SummaryCache:
    """Encoded summaries of the jobs read lately, by row key (at most ``max_jobs``; 0 keeps
    none and encodes every time)."""

    def __init__(self, service: JobService, max_jobs: int) -> None:
        self._service = service
        self._max = max_jobs
        self._entries: OrderedDict[RowKey, bytes] = OrderedDict()
        #: Each kept key's submit time (µs), for a page's cursor: a job's never changes, so it
        #: need not be read with every key (store/base.py RowKey).
        self._submitted: dict[RowKey, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, caller: Caller, job_id: str) -> Encoded:
        """GetModelInvocationJob's body; ResourceNotFoundException when the caller has no such
        job."""
        key = await self._service.get_row_key(caller, job_id)
        body = self._entries.get(key)
        if body is None:
            # Read the row itself; it may be newer than the key just read, and is kept (and
            # answered) under its own.
            body = self._encode(*await self._service.get_keyed(caller, job_id))
        return Encoded(body)

    async def page(self, job_filter: JobFilter, request: PageRequest) -> SummaryPage:
        packed = await self._service.list_keys(job_filter, request)
        keys = packed.split(",") if packed else []
        more = len(keys) > request.limit
        if more:
            del keys[request.limit :]
        # Looked up in C (map), and checked in C: every kept body is non-empty bytes, so a
        # page with a missing key is one with a falsy entry.
        summaries: list[bytes | None] = list(map(self._entries.get, keys))
        if not all(summaries):
            return await self._read_whole(job_filter, request)
        last = (self._submitted[keys[-1]], key_job_id(keys[-1])) if more and keys else None
        return SummaryPage(cast("list[bytes]", summaries), more, last)

    async def _read_whole(self, job_filter: JobFilter, request: PageRequest) -> SummaryPage:
        keyed, more = await self._service.list_keyed(job_filter, request)
        found = self._entries.get
        summaries = [found(key) or self._encode(key, row) for key, row in keyed]
        last = None
        if more and keyed:
            last = (keyed[-1][1].submit_time, keyed[-1][1].job_id)
        return SummaryPage(summaries, more, last)

    def _encode(self, key: RowKey, row: JobRow) -> bytes:
        body = orjson.dumps(codec.job_to_wire(row))
        if self._max > 0:
            entries = self._entries
            entries[key] = body
            self._submitted[key] = row.submit_time
            while len(entries) > self._max:
                del self._submitted[entries.popitem(last=False)[0]]
        return body
