"""A batch is two writes (its record in the files store, then its job): a crash between them,
or at either, never leaves a job that ListModelInvocationJobs shows and /v1/batches does not
(or the reverse); a record a crash left without its job is removed once it is old."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from batchrock.api.openai import batches

from .inprocess import harness


class Crash(BaseException):
    """The process dying at this point: nothing after it runs (not an error to answer)."""


def crash_at(target: Any, name: str) -> Callable[..., Awaitable[Any]]:
    async def crashing(*args: Any, **kwargs: Any) -> Any:
        raise Crash(name)

    original: Callable[..., Awaitable[Any]] = getattr(target, name)
    setattr(target, name, crashing)
    return original


@pytest.mark.parametrize("point", ["record", "job"])
def test_a_crash_at_either_write_leaves_both_apis_agreeing(tmp_path: Path, point: str) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            file_id = await h.upload()
            kept = await h.create(file_id)
            assert kept.status == 200, kept.json()
            # The crash: the process dies at the record's write or at the job's.
            if point == "record":
                target, name = h.store.files, "add_file_job"
            else:
                target, name = h.store, "create"
            original = crash_at(target, name)
            with pytest.raises(Crash):
                await h.create(file_id)
            setattr(target, name, original)
            jobs, listed = await h.both_views()
            assert jobs == listed == {kept.json()["id"].removeprefix("batch_")}

    asyncio.run(scenario())


def test_a_record_left_without_its_job_is_ignored_then_removed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            file_id = await h.upload()
            original = crash_at(h.store, "create")
            with pytest.raises(Crash):
                await h.create(file_id)
            h.store.create = original  # type: ignore[method-assign]
            records = await h.store.files.list_file_jobs(h.account(), limit=10)
            assert len(records) == 1  # the record the crash left, without its job
            orphan = batches.batch_id(records[0].job_id)
            assert (await h.call("GET", f"/v1/batches/{orphan}")).status == 404
            assert await h.both_views() == (set(), set())
            # Within the grace a creation may still be in flight: the record stays.
            assert len(await h.store.files.list_file_jobs(h.account(), limit=10)) == 1
            h.clock.advance(batches.ORPHAN_GRACE + timedelta(seconds=1))
            assert await h.both_views() == (set(), set())
            assert await h.store.files.list_file_jobs(h.account(), limit=10) == []

    asyncio.run(scenario())
