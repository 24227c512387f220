"""Each job's encoded summary, kept under the row's key: a listing is mostly a join of bytes.

A job's summary (ModelInvocationJobSummary, and GetModelInvocationJob's body, the same 20
members) is a function of its row alone. So the bytes are kept under the row's
:data:`~batchrock.store.base.RowKey` (its id and a version that any change of the row moves
on, whichever process writes), and a listing first reads only the keys (two columns, both in
the listing index, read as one string for the whole page): when every key has its bytes the
page is their join, with no row decoded and no time formatted. Another process's write changes
the row's key, so its old bytes are never looked up again; correctness never depends on the
cache, only the cost does.

When a few keys are missing (a job on the page changed), their rows are read by id; each read
under the key it was listed with is encoded and kept, and the page is the one its keys name.
When more are missing, or a row read has moved on to another key since, the page is read again
whole, each row with its key (:meth:`JobStore.list_keyed_rows`: one query, one consistent
snapshot), and answered from those rows, each found or encoded under its own key. The entries
are bounded by count (setting ``summary_cache_jobs``); the oldest-encoded go first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, cast

import orjson

from batchrock.api import codec, pagination
from batchrock.clock import from_micros
from batchrock.service import Caller, JobService
from batchrock.store.base import (
    Cursor,
    JobFilter,
    JobRow,
    PageKeys,
    PageRequest,
    RowKey,
    key_job_id,
)

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


@dataclass(frozen=True, slots=True)
class _KeptPage:
    #: The keys the page was made of: its rows' and the one after them (store/base.py
    #: PageKeys), as the store read them.
    keys: PageKeys
    body: Encoded
    #: What it counts against ``max_jobs``: its summaries, at least 1.
    size: int


class SummaryCache:
    """Encoded summaries of the jobs read lately, by row key (at most ``max_jobs``; 0 keeps
    none and encodes every time), and the bodies of the listings answered lately (as many
    summaries again at most), each under its request and with the keys it was made of."""

    def __init__(self, service: JobService, max_jobs: int) -> None:
        self._service = service
        self._max = max_jobs
        self._entries: OrderedDict[RowKey, bytes] = OrderedDict()
        #: Each kept key's submit time (µs), for a page's cursor: a job's never changes, so it
        #: need not be read with every key (store/base.py RowKey).
        self._submitted: dict[RowKey, int] = {}
        self._pages: OrderedDict[tuple[JobFilter, PageRequest, str], _KeptPage] = OrderedDict()
        #: The summaries in ``_pages`` (their sizes' sum), at most ``max_jobs``.
        self._paged = 0

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

    async def listing(self, job_filter: JobFilter, request: PageRequest, listing: str) -> Encoded:
        """ListModelInvocationJobs' body, its ``nextToken`` (when more follow) one of
        ``listing``'s (:func:`batchrock.api.pagination.fingerprint`).

        The page's keys are read first, always. When they are the very keys the body kept for
        the same request was made of (the same jobs, in the same order, each at the same
        version, and the same one after the last), that body is the answer: it is what they
        make, byte for byte, so nothing is looked up, joined or allocated per job. Otherwise
        the page is made from its keys (or its rows) and kept in place of the old one."""
        packed = await self._service.list_keys(job_filter, request)
        where = (job_filter, request, listing)
        kept = self._pages.get(where)
        if kept is not None and kept.keys == packed:
            self._pages.move_to_end(where)
            return kept.body
        page, from_keys = await self._page_of(packed, job_filter, request)
        token = None
        if page.last is not None:
            token = pagination.encode(Cursor(from_micros(page.last[0]), page.last[1]), listing)
        body = page.body(token)
        if from_keys:
            # A page read whole may be newer than ``packed``; the next listing keeps it.
            self._keep_page(where, _KeptPage(packed, body, max(1, len(page.summaries))))
        return body

    async def page(self, job_filter: JobFilter, request: PageRequest) -> SummaryPage:
        """The page's summaries, from their keys' kept bytes or, when one is missing, from
        the rows read whole."""
        packed = await self._service.list_keys(job_filter, request)
        return (await self._page_of(packed, job_filter, request))[0]

    async def _page_of(
        self, packed: PageKeys, job_filter: JobFilter, request: PageRequest
    ) -> tuple[SummaryPage, bool]:
        """The page whose keys (and the one after) are ``packed``, and whether it is made of
        those keys' kept bytes (else of the rows, read again whole)."""
        keys = packed.split(",") if packed else []
        more = len(keys) > request.limit
        if more:
            del keys[request.limit :]
        # Looked up in C (map), and checked in C: every kept body is non-empty bytes, so a
        # page with a missing key is one with a falsy entry.
        summaries: list[bytes | None] = list(map(self._entries.get, keys))
        filled: dict[RowKey, int] = {}
        if not all(summaries):
            found = await self._fill(job_filter, keys, summaries)
            if found is None:
                return await self._read_whole(job_filter, request), False
            filled = found
        last = None
        if more and keys:
            # The last job's submit time, kept beside its bytes (or just read): a concurrent
            # listing may have evicted it while this one read the missing rows.
            submitted = filled.get(keys[-1])
            if submitted is None:
                submitted = self._submitted.get(keys[-1])
            if submitted is None:
                return await self._read_whole(job_filter, request), False
            last = (submitted, key_job_id(keys[-1]))
        return SummaryPage(cast("list[bytes]", summaries), more, last), True

    async def _fill(
        self, job_filter: JobFilter, keys: list[RowKey], summaries: list[bytes | None]
    ) -> dict[RowKey, int] | None:
        """Put the summaries of the page's missing keys in place, encoded from their rows read
        by id, and answer those keys' submit times (µs). ``None``, with nothing put in place,
        when more than half are missing (one ordered read of the whole page is then the
        cheaper) or a row's key is not the one the page was listed with (the row changed
        since: only a read of the whole page gives a page of one moment then). A row read
        under the very key it was listed with is the row listed, so the page is the one its
        keys name, and a job changed meanwhile costs one more read, never a stale row."""
        missing = [i for i, body in enumerate(summaries) if body is None]
        if 2 * len(missing) > len(keys):
            return None
        ids = [key_job_id(keys[i]) for i in missing]
        rows = dict(await self._service.get_keyed_many(job_filter, ids))
        if any(keys[i] not in rows for i in missing):
            return None
        submitted = {}
        for i in missing:
            row = rows[keys[i]]
            summaries[i] = self._encode(keys[i], row)
            submitted[keys[i]] = row.submit_time
        return submitted

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

    def _keep_page(self, where: tuple[JobFilter, PageRequest, str], page: _KeptPage) -> None:
        pages = self._pages
        old = pages.pop(where, None)
        if old is not None:
            self._paged -= old.size
        if page.size > self._max:
            return
        pages[where] = page
        self._paged += page.size
        while self._paged > self._max:
            self._paged -= pages.popitem(last=False)[1].size
