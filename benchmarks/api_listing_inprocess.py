"""ListModelInvocationJobs and GetModelInvocationJob in-process: where a request's CPU goes.

    .venv/bin/python benchmarks/api_listing_inprocess.py

The same store as benchmarks/api_listing.py (``--jobs`` jobs, every status, optional members
present and absent), but no server and no sockets: the ASGI app (``BedrockApp``) is called
directly with a signed request's scope, and each figure is the best, over ``--tries``, of the
CPU time (``time.process_time``) of ``--calls`` calls in a row. Beside whole requests it times
the listing's pieces: the store's key query, the summary cache's listing when the body it kept
is the answer (keys and a comparison), its page made from the kept summaries (keys and
lookups) and the body's join. The best of several tries is the figure least moved by other
work on the machine; it is a floor of what the server spends in the app, not what a loaded
server spends (docs/benchmarks.md). Nothing passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_listing import ACCOUNT, REGION, fill, signed

from batchrock.api import pagination
from batchrock.api.app import BedrockApp
from batchrock.api.summaries import SummaryPage
from batchrock.clock import SystemClock
from batchrock.service import Caller, JobService
from batchrock.settings import Settings
from batchrock.store.base import JobFilter, PageRequest
from batchrock.store.sqlite import SqliteStore


def scope_of(raw: bytes) -> dict[str, Any]:
    """The ASGI scope uvicorn would give for the request head ``raw``."""
    lines = raw.decode().split("\r\n")
    method, target, _ = lines[0].split(" ")
    path, _, query = target.partition("?")
    headers = []
    for line in lines[1:]:
        if line:
            name, value = line.split(":", 1)
            headers.append((name.strip().lower().encode(), value.strip().encode()))
    return {
        "type": "http",
        "http_version": "1.1",
        "scheme": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


async def best_of(tries: int, calls: int, step: Callable[[], Awaitable[Any]]) -> float:
    """The least CPU µs per call over ``tries`` runs of ``calls`` calls."""
    await step()
    best = float("inf")
    for _ in range(tries):
        started = time.process_time_ns()
        for _ in range(calls):
            await step()
        best = min(best, (time.process_time_ns() - started) / calls / 1e3)
    return best


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1100)
    parser.add_argument("--tries", type=int, default=7)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="batchrock-inprocess-") as folder:
        await measure(args, Path(folder))


async def measure(args: argparse.Namespace, work: Path) -> None:
    first_id = await fill(work / "batchrock.sqlite3", args.jobs)
    store = await SqliteStore.open(work / "batchrock.sqlite3")
    app = BedrockApp(JobService(store, SystemClock()), Settings(data_dir=work))
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    def request(target: str) -> Callable[[], Awaitable[None]]:
        raw = signed(80, target)

        async def call() -> None:
            sent.clear()  # as a server frees each body once sent
            await app(scope_of(raw), receive, send)
            if sent[0]["status"] != 200:
                raise RuntimeError(f"{target}: {sent}")

        return call

    try:
        print(f"{args.jobs} jobs stored; best of {args.tries} x {args.calls} calls, CPU µs")
        print(
            "| request | whole request (app) | key query | kept listing | cache page | body join |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        job_filter = JobFilter(account_id=ACCOUNT, region=REGION)
        listing = pagination.fingerprint(Caller(ACCOUNT, REGION), job_filter, True)
        cache = app._summaries
        for limit in (100, 1000):
            whole = await best_of(
                args.tries, args.calls, request(f"/model-invocation-jobs?maxResults={limit}")
            )
            # What the service asks of the store: one more key than the page, to tell if more
            # follow.
            one_more, page_of = PageRequest(limit=limit + 1), PageRequest(limit=limit)

            async def key_query(request: PageRequest = one_more) -> None:
                await store.list_row_keys(job_filter, request)

            async def cache_page(request: PageRequest = page_of) -> None:
                await cache.page(job_filter, request)

            async def kept_listing(request: PageRequest = page_of) -> None:
                await cache.listing(job_filter, request, listing)

            kept = await cache.page(job_filter, page_of)

            async def join(kept: SummaryPage = kept) -> None:
                kept.body("t" * 200)

            keys = await best_of(args.tries, args.calls, key_query)
            # An older tree (PYTHONPATH pointing at it, for a before/after) has no kept bodies.
            kept_body = "-"
            if hasattr(cache, "listing"):
                kept_body = f"{await best_of(args.tries, args.calls, kept_listing):.0f}"
            page = await best_of(args.tries, args.calls, cache_page)
            body = await best_of(args.tries, args.calls, join)
            print(
                f"| List, page of {limit} | {whole:.0f} | {keys:.0f} | {kept_body} "
                f"| {page:.0f} | {body:.0f} |"
            )
        get = await best_of(args.tries, args.calls, request(f"/model-invocation-job/{first_id}"))
        print(f"| Get | {get:.0f} | | | | |")
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
