"""Crash an engine at an exact write, then carry the job on in a new "process".

A :class:`Process` is one engine process's view of the world: the job store and the object
store wrapped so that every write they make is traced (``"put_file a.jsonl.out"``,
``"save file=0 spool_size=1234 done"``, ``"transition Stopped"``...) and so that the process
can die just before or just after its k-th write. Dying raises :class:`Crash`, which is not
an ``Exception``: no handler in the engine catches it, and from then on every call the dead
process makes raises it again, so it writes nothing more (its lease is not even released, as
with a SIGKILL; the next process waits the lease out on the fake clock).

Jobs are driven step by step (:meth:`Process.drive`): claim the job as an engine would, run
its :class:`JobRunner` to the end of the step, repeat until the job is final. Nothing waits
on wall-clock time except the runner's own heartbeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from datetime import timedelta
from typing import Any

import orjson

from batchrock import jobs
from batchrock.backends.base import MockBackend
from batchrock.clock import FakeClock
from batchrock.engine import Engine
from batchrock.engine.runner import JobRunner
from batchrock.jobs import Job, JobStatus

from .harness import Harness, OneBackend

S = JobStatus


class Crash(BaseException):
    """A simulated SIGKILL (not an ``Exception``, so nothing in the engine handles it)."""


class Nth:
    """A crash point by label: the ``n``-th write whose label contains ``text``."""

    def __init__(self, text: str, n: int = 1) -> None:
        self.text, self.n, self.seen = text, n, 0

    def hit(self, label: str) -> bool:
        if self.text not in label:
            return False
        self.seen += 1
        return self.seen == self.n


class _Dead:
    """Shared by a process's wrapped stores: which write kills it, and whether it is dead."""

    def __init__(self, crash_at: int | str | Nth | None, after: bool, on_write: Any) -> None:
        if isinstance(crash_at, Nth):
            # A count of this process's own: one Nth names the point for every process given
            # it (a parametrised test's, once per store), and a count carried over from the
            # last would never reach n again, so that process would never die.
            crash_at = Nth(crash_at.text, crash_at.n)
        self.crash_at = crash_at
        self.after = after
        self.on_write = on_write
        self.dead = False
        self.trace: list[str] = []

    def check(self) -> None:
        if self.dead:
            raise Crash("the process is dead")

    async def write(self, label: str, do: Callable[[], Awaitable[Any]]) -> Any:
        self.check()
        self.trace.append(label)
        at = self.crash_at
        if isinstance(at, Nth):
            hit = at.hit(label)
        else:
            hit = label == at if isinstance(at, str) else len(self.trace) == at
        if hit and not self.after:
            self.dead = True
            raise Crash(f"before {label}")
        result = await do()
        if hit:
            self.dead = True
            raise Crash(f"after {label}")
        if self.on_write is not None:
            await self.on_write(label)
        return result


class _Wrapped:
    def __init__(self, inner: Any, dead: _Dead) -> None:
        self._inner = inner
        self._dead = dead

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr
        dead = self._dead

        def call(*args: Any, **kwargs: Any) -> Any:
            dead.check()
            return attr(*args, **kwargs)

        return call


class TracedObjects(_Wrapped):
    async def put(self, bucket: str, key: str, data: bytes) -> None:
        name = key.rsplit("/", 1)[-1]
        await self._dead.write(f"put {name}", lambda: self._inner.put(bucket, key, data))

    async def put_file(self, bucket: str, key: str, path: Any, *, move: bool = False) -> None:
        name = key.rsplit("/", 1)[-1]
        await self._dead.write(
            f"put_file {name}", lambda: self._inner.put_file(bucket, key, path, move=move)
        )

    async def delete(self, bucket: str, key: str) -> None:
        name = key.rsplit("/", 1)[-1]
        await self._dead.write(f"delete {name}", lambda: self._inner.delete(bucket, key))

    # The resumable uploads of the S3 store: the file in progress checkpointed into the bucket.
    async def create_upload(self, bucket: str, key: str) -> str:
        name = key.rsplit("/", 1)[-1]
        result: str = await self._dead.write(
            f"create_upload {name}", lambda: self._inner.create_upload(bucket, key)
        )
        return result

    async def upload_part(self, bucket: str, key: str, upload_id: str, n: int, data: bytes) -> Any:
        name = key.rsplit("/", 1)[-1]
        return await self._dead.write(
            f"upload_part {name}", lambda: self._inner.upload_part(bucket, key, upload_id, n, data)
        )

    async def complete_upload(self, bucket: str, key: str, upload_id: str, parts: Any) -> None:
        name = key.rsplit("/", 1)[-1]
        await self._dead.write(
            f"complete_upload {name}",
            lambda: self._inner.complete_upload(bucket, key, upload_id, parts),
        )

    async def abort_uploads(self, bucket: str, prefix: str) -> int:
        result: int = await self._dead.write(
            "abort_uploads", lambda: self._inner.abort_uploads(bucket, prefix)
        )
        return result

    async def read(self, bucket: str, key: str, start: int = 0, **kw: Any) -> AsyncIterator[bytes]:
        self._dead.check()
        async for chunk in self._inner.read(bucket, key, start, **kw):
            self._dead.check()
            yield chunk


class TracedStore(_Wrapped):
    async def save_progress(self, job_id: str, **kw: Any) -> None:
        cp = kw.get("checkpoint")
        label = "save"
        if cp is not None:
            label += f" file={cp['file']} spool_size={cp['spool_size']}"
            if cp.get("parts"):
                label += f" parts={len(cp['parts'])}"
            if cp.get("done"):
                label += " done"
        await self._dead.write(label, lambda: self._inner.save_progress(job_id, **kw))

    async def transition(self, job_id: str, to: JobStatus, **kw: Any) -> Job:
        result: Job = await self._dead.write(
            f"transition {to.value}", lambda: self._inner.transition(job_id, to, **kw)
        )
        return result

    async def start_next(self, worker_id: str, **kw: Any) -> Job | None:
        result: Job | None = await self._dead.write(
            "start InProgress", lambda: self._inner.start_next(worker_id, **kw)
        )
        return result


class Process:
    """One engine process over ``h``'s data dir.

    ``crash_at``/``after``: die just before (or after) the process's ``crash_at``-th write
    (or its first write labelled ``crash_at``, or the one :class:`Nth` names).
    ``on_write(label)`` is awaited after each write the process survives (a test's hook to
    stop the job at an exact moment). ``handler``: the model, if not ``h``'s.
    """

    def __init__(
        self,
        h: Harness,
        *,
        crash_at: int | str | Nth | None = None,
        after: bool = True,
        on_write: Callable[[str], Awaitable[None]] | None = None,
        handler: Any = None,
        objects: Any = None,
    ) -> None:
        assert isinstance(h.clock, FakeClock), "crash tests run on a FakeClock"
        self.h = h
        self._dead = _Dead(crash_at, after, on_write)
        self.store = TracedStore(h.store, self._dead)
        self.objects = TracedObjects(objects if objects is not None else h.objects, self._dead)
        resolver = OneBackend(MockBackend(handler)) if handler is not None else h.resolver
        self.engine = Engine(
            h.settings,
            self.store,  # type: ignore[arg-type]
            h.clock,
            resolver,
            self.objects,  # type: ignore[arg-type]
            buckets=h.buckets,
        )

    @property
    def trace(self) -> list[str]:
        return self._dead.trace

    @property
    def crashed(self) -> bool:
        return self._dead.dead

    async def drive(
        self, job_id: str, *, until: Collection[JobStatus] = jobs.TERMINAL, max_steps: int = 20
    ) -> bool:
        """Run the job's steps until it is final (or in ``until``: ``True``) or this process
        dies (``False``). A dead process's lease is left to lapse: the clock moves past it."""
        settings, clock = self.h.settings, self.h.clock
        lease = settings.engine_lease_seconds
        for _ in range(max_steps):
            job = await self.h.get(job_id)
            if job.status in until or job.is_terminal:
                return True
            try:
                await self.engine.expire_overdue()
                if job.status is S.SCHEDULED:
                    claimed = await self.store.start_next(
                        self.engine.worker_id,
                        now=clock.now(),
                        lease_seconds=lease,
                        max_in_progress=settings.quota_max_concurrent_jobs_per_model,
                    )
                else:
                    claimed = await self.store.claim(
                        self.engine.worker_id, {job.status}, now=clock.now(), lease_seconds=lease
                    )
                if claimed is None:
                    continue  # expired meanwhile
                assert claimed.job_id == job_id
                await _with_time_passing(clock, JobRunner(self.engine.ctx, claimed).run())
            except Crash:
                assert isinstance(clock, FakeClock)
                clock.advance(timedelta(seconds=lease + 1))
                return False
        raise AssertionError(f"job {job_id} not final after {max_steps} steps")


async def _with_time_passing(clock: FakeClock, step: Awaitable[None]) -> None:
    """Await ``step`` while the FakeClock moves on 10 ms whenever it waits (the engine's waits
    end only when the clock moves: heartbeats, checkpoints, halt grace periods)."""
    task = asyncio.ensure_future(step)
    while not task.done():
        await asyncio.wait({task}, timeout=0.002)
        if not task.done():
            clock.advance(0.01)
    task.result()


async def stop(h: Harness, job_id: str) -> None:
    """StopModelInvocationJob, as the service does it (a no-op on a final or Stopping job)."""
    job = await h.get(job_id)
    if job.status in jobs.STOPPABLE:
        await h.store.transition(job_id, S.STOPPING, now=h.clock.now(), expected={job.status})


async def output_of(h: Harness, out_uri: str, job: Job) -> dict[str, list[dict[str, Any]]]:
    """Every ``.out`` under the job's output folder (the manifest aside), by name."""
    bucket, _, prefix = out_uri.removeprefix("s3://").partition("/")
    folder = prefix.rstrip("/") + "/" + job.job_id + "/"
    found = await h.objects.list_objects(bucket, folder)
    out: dict[str, list[dict[str, Any]]] = {}
    for o in found:
        name = o.key[len(folder) :]
        if name == "manifest.json.out":
            continue
        data = b"".join([c async for c in h.objects.read(bucket, o.key)])
        out[name] = [orjson.loads(line) for line in data.splitlines()]
    return out


async def manifest_of(h: Harness, out_uri: str, job: Job) -> dict[str, Any] | None:
    bucket, _, prefix = out_uri.removeprefix("s3://").partition("/")
    key = prefix.rstrip("/") + "/" + job.job_id + "/manifest.json.out"
    if await h.objects.head(bucket, key) is None:
        return None
    data: dict[str, Any] = orjson.loads(b"".join([c async for c in h.objects.read(bucket, key)]))
    return data


async def check_output_matches_counts(
    h: Harness, out_uri: str, job_id: str, inputs: dict[str, list[dict[str, Any]]]
) -> Job:
    """The invariant: at a final status, the output location holds exactly what the manifest
    and GetModelInvocationJob count. Each file's ``.out`` is a prefix of that file's records,
    in order, every recordId at most once; the manifest equals the job's counters."""
    job = await h.get(job_id)
    assert job.is_terminal, job.status
    c = job.counters
    outs = await output_of(h, out_uri, job)
    seen: list[str] = []
    for name, lines in outs.items():
        assert name.removesuffix(".out") in inputs, f"unexpected output {name}"
        expected = [r["recordId"] for r in inputs[name.removesuffix(".out")]]
        got = [x["recordId"] for x in lines]
        assert got == expected[: len(got)], f"{name} is not a prefix of its input"
        seen += got
    lines = [x for ls in outs.values() for x in ls]
    assert len(seen) == len(set(seen)), "a record is in the output twice"
    errors = sum(1 for x in lines if "error" in x)
    assert (len(lines), len(lines) - errors, errors) == (c.processed, c.success, c.error), (
        f"output holds {len(lines)} records, the job counts {c.processed} ({job.status})"
    )
    assert c.processed <= c.total
    m = await manifest_of(h, out_uri, job)
    if m is None:
        # Only a job that never got through Validating has no manifest.
        assert c.processed == 0 and not outs
    else:
        assert m == {
            "totalRecordCount": c.total,
            "processedRecordCount": c.processed,
            "successRecordCount": c.success,
            "errorRecordCount": c.error,
            "inputTokenCount": c.input_tokens,
            "outputTokenCount": c.output_tokens,
            "throttledRequestCount": c.throttled,
        }
    if job.status is S.COMPLETED:
        total = sum(len(v) for v in inputs.values())
        assert c.processed == total == c.total
    return job


def gate() -> tuple[asyncio.Event, Any]:
    """A model that answers nothing until the event is set (so a stop finds nothing done)."""
    from .harness import echo

    opened = asyncio.Event()

    async def handler(request: Any) -> Any:
        await opened.wait()
        return await echo(request)

    return opened, handler
