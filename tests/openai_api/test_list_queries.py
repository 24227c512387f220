"""GET /v1/batches reads a page with a bounded number of store queries, however many batches
it shows (not two per batch, on the event loop), and shows what GET /v1/batches/{id} shows."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from batchrock.jobs import JobStatus

from .inprocess import harness


def test_a_page_of_batches_is_a_few_queries_and_matches_each_batch(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            file_id = await h.upload()
            ids = []
            for _ in range(30):
                reply = await h.create(file_id)
                assert reply.status == 200, reply.json()
                ids.append(reply.json()["id"])
                h.clock.advance(timedelta(seconds=1))
            # Some batches further on, so that their events differ.
            for batch in ids[::3]:
                job_id = batch.removeprefix("batch_")
                await h.store.transition(job_id, JobStatus.VALIDATING, now=h.clock.now())
                await h.store.transition(job_id, JobStatus.SCHEDULED, now=h.clock.now())
                await h.store.transition(job_id, JobStatus.IN_PROGRESS, now=h.clock.now())
            queries: list[str] = []
            conn = h.store._conn
            conn.set_trace_callback(queries.append)
            try:
                page = await h.call("GET", "/v1/batches", query="limit=100")
            finally:
                conn.set_trace_callback(None)
            assert page.status == 200, page.json()
            selects = [q for q in queries if q.lstrip().upper().startswith("SELECT")]
            assert len(selects) <= 4, selects  # records, jobs, events (+ the caller's key)
            listed = page.json()["data"]
            assert [b["id"] for b in listed] == ids[::-1]  # newest first
            for batch in listed:
                one = await h.call("GET", f"/v1/batches/{batch['id']}")
                assert one.json() == batch
            assert sum(b["in_progress_at"] is not None for b in listed) == 10

    asyncio.run(scenario())
