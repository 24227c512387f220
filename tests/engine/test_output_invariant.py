"""At every final status the output location holds exactly what the manifest and
GetModelInvocationJob count, whatever crashed where before (see crashpoints.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from batchrock.clock import FakeClock
from batchrock.engine import file_pass, runner
from batchrock.jobs import Job, JobStatus
from batchrock.objects.base import ObjectStoreError

from .crashpoints import Process, check_output_matches_counts, gate, stop
from .harness import Gate, Harness, jsonl, records, yielding_echo
from .test_s3_resume import s3_harness

S = JobStatus
OUT = "s3://out-bucket/results/"
#: A short lease: the heartbeat (a third of it) notices a stop quickly.
SETTINGS: dict[str, Any] = {"engine_lease_seconds": 0.15}


@pytest.fixture(autouse=True)
def _short_halt_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    # Records held by the gate model never finish: drop them soon after the halt.
    monkeypatch.setattr(runner, "HALT_GRACE_SECONDS", 0.05)


def harness(tmp_path: Path, files: dict[str, list[dict[str, Any]]]) -> Harness:
    h = Harness(tmp_path, clock=FakeClock(), **SETTINGS)
    h.bucket("out-bucket")
    for name, recs in files.items():
        h.put(f"s3://in-bucket/in/{name}", jsonl(recs))
    return h


def test_stop_after_a_crash_between_publish_and_checkpoint_keeps_output_and_counts_equal(
    tmp_path: Path,
) -> None:
    """The deterministic reproduction: a.jsonl.out is published, the process dies before the
    checkpoint that moves on, the next run is stopped before it writes anything. Before the
    fix the output held 300 records while the manifest and Get counted 0."""
    files = {"a.jsonl": records(300), "b.jsonl": records(100, start=300)}
    h = harness(tmp_path, files)

    async def main() -> None:
        job = await h.submit("s3://in-bucket/in/", OUT)
        first = Process(h, crash_at="put_file a.jsonl.out", after=True)
        assert not await first.drive(job.job_id)
        assert (await h.get(job.job_id)).status is S.IN_PROGRESS

        async def stop_at_first_save(label: str) -> None:
            if label.startswith("save"):
                await stop(h, job.job_id)

        _, held = gate()
        second = Process(h, handler=held, on_write=stop_at_first_save)
        assert await second.drive(job.job_id)
        done = await check_output_matches_counts(h, OUT, job.job_id, files)
        assert done.status is S.STOPPED
        # The published file is kept and counted, not redone: its records stay exactly once.
        assert done.counters.processed == 300

    asyncio.run(main())


# --- the walk: every crash point of a run, then each way a job ends --------------------------
#
# On both object stores. On S3 the file in progress is checkpointed as parts of a multipart
# upload (every few records here: small parts, output written every few records), and the
# run after a crash is an engine on another host: a data dir of its own, without the spool.

STORES = ["local", "s3"]

#: Two files, so that crashes fall before, between and after files.
FILES = {"a.jsonl": records(30), "b.jsonl": records(20, start=30)}
FILES["a.jsonl"][7]["modelInput"] = {"fail": True}  # an error record is counted too
ACTIONS = ["complete", "stop", "stop-at-resume", "timeout", "fail"]


class Walk:
    """Scenarios on one store: each its own input folder and job (a store per scenario
    would cost more than the scenario). ``other``: the engine host that carries a crashed
    job on (``h`` itself for the local store: one data dir)."""

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest, store: str) -> None:
        if store == "s3":
            url = request.getfixturevalue("moto_small_parts_url")
            request.getfixturevalue("_small_flushes")
            self.h = s3_harness(tmp_path / "one", url, handler=yielding_echo)
            self.other = s3_harness(tmp_path / "two", url, like=self.h, handler=yielding_echo)
        else:
            self.h = harness(tmp_path, {})
            self.other = self.h
        self.run = uuid.uuid4().hex[:8]
        self.n = 0

    async def submit(self) -> tuple[str, str]:
        self.n += 1
        folder = f"in-{self.run}-{self.n}"
        for name, recs in FILES.items():
            self.h.put(f"s3://in-bucket/{folder}/{name}", jsonl(recs))
        job = await self.h.submit(f"s3://in-bucket/{folder}/", OUT)
        return job.job_id, folder

    async def finish(
        self, job_id: str, folder: str, action: str, *, on: Harness | None = None, **crash: Any
    ) -> Process:
        """Carry the job on in a new process (on the ``other`` host unless ``on``) and end it
        the ``action`` way; ``crash`` kills that process at one of its writes, as in
        :class:`Process`."""
        h = on or self.other
        handler: Any = None
        on_write: Any = None
        if action == "stop":
            await stop(h, job_id)
        elif action == "stop-at-resume":
            # Stopped at the new run's first checkpoint, while the model answers nothing.
            _, handler = gate()

            async def on_write(label: str) -> None:
                if label.startswith("save"):
                    await stop(h, job_id)

        elif action == "timeout":
            if h.clock.now() < (await h.get(job_id)).expiration_time:
                h.clock.advance(timedelta(hours=25))  # type: ignore[attr-defined]
        elif action == "fail":
            for name in FILES:
                h.delete(f"s3://in-bucket/{folder}/{name}")
        process = Process(h, handler=handler, on_write=on_write, **crash)
        await process.drive(job_id)
        return process

    async def check(self, job_id: str, where: str) -> Job:
        try:
            return await check_output_matches_counts(self.h, OUT, job_id, FILES)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from exc


def crash_points(trace: list[str]) -> list[tuple[int, bool, str]]:
    """(k, after, label): just before and just after each write, once per run of writes
    alike (the empty checkpoints of a run that waits on its model, say)."""
    points = []
    for k, label in enumerate(trace, 1):
        if k == 1 or trace[k - 2] != label:
            points += [(k, False, label), (k, True, label)]
    return points


#: The walks' seed on stores other than SQLite (see :func:`sampled`).
SAMPLE_SEED = 20261201


def crash_kind(label: str) -> str:
    """What kind of write a label names: the label without the sizes and part counts that
    vary along a file ("save file=0 spool_size=N parts=N done", "put_file a.jsonl.out")."""
    return re.sub(r"(spool_size|parts)=\d+", r"\1=N", label)


def sampled(
    points: list[tuple[int, bool, str]], h: Harness, test: str, action: str | None = None
) -> list[tuple[int, bool, str]]:
    """The crash points a walk visits: all of them on SQLite.

    On PostgreSQL each point costs a few store round trips more, and the whole walks (13
    minutes there on a busy machine) are too slow for every CI run. There a walk visits a
    subset drawn with a seed fixed per test, so that every kind of crash point
    (:func:`crash_kind`) is still crashed at and a failure names a point that recurs:

    - a run's walk (``action`` given; every action walks the same reference run): each kind,
      before and after its write, is visited by one of the ACTIONS, drawn by the seed, at
      one of its points;
    - an ending's walk (each action's run has writes of its own): one point of each kind,
      just before or just after the write, drawn by the seed.

    ``BATCHROCK_TEST_EVERY_CRASH_POINT=1`` walks every point on PostgreSQL too."""
    if h.store_factory.name == "sqlite" or os.environ.get("BATCHROCK_TEST_EVERY_CRASH_POINT"):
        return points
    kinds: dict[str, list[tuple[int, bool, str]]] = {}
    for point in points:
        kinds.setdefault(crash_kind(point[2]), []).append(point)
    chosen = []
    for kind, group in kinds.items():
        if action is None:
            chosen.append(random.Random(f"{SAMPLE_SEED}:{test}:{kind}").choice(group))
            continue
        for after in (False, True):
            rng = random.Random(f"{SAMPLE_SEED}:{test}:{kind}:{after}")
            if rng.choice(ACTIONS) == action:
                chosen.append(rng.choice([p for p in group if p[1] is after]))
    return sorted(chosen)


@pytest.fixture
def _small_flushes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Output is written every few records, so parts are cut mid-file.
    monkeypatch.setattr(file_pass, "FLUSH_BYTES", 300)


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("action", ACTIONS)
def test_every_crash_point_of_a_run_then_each_ending_keeps_output_equal_to_counts(
    tmp_path: Path, request: pytest.FixtureRequest, action: str, store: str
) -> None:
    walk = Walk(tmp_path, request, store)

    async def main() -> None:
        job_id, _ = await walk.submit()
        # On S3 the walk must see a part saved mid-file. How many records are answered while a
        # part goes to the object server depends on the machine's load, so the reference
        # run's last record of the first file waits for the first part's checkpoint.
        first_part = asyncio.Event()
        last_of_first_file = FILES["a.jsonl"][-1]["recordId"]

        async def on_write(label: str) -> None:
            if "parts=1" in label:
                first_part.set()

        async def paced(request: Any) -> Any:
            if store == "s3" and request.record_id == last_of_first_file:
                with contextlib.suppress(TimeoutError):  # never hang: the assertion below says
                    await asyncio.wait_for(first_part.wait(), 60)
            return await yielding_echo(request)

        reference = Process(walk.h, on_write=on_write, handler=paced)
        assert await reference.drive(job_id)
        await walk.check(job_id, "no crash")
        trace = reference.trace
        published = "complete_upload a.jsonl.out" if store == "s3" else "put_file a.jsonl.out"
        assert published in trace and trace[-1] == "transition Completed"
        if store == "s3":  # parts are checkpointed mid-file, not only at its end
            first_part = next(label for label in trace if "parts=1" in label)
            assert " done" not in first_part, trace
        for k, after, label in sampled(crash_points(trace), walk.h, f"run-{store}", action):
            job_id, folder = await walk.submit()
            await Process(walk.h, crash_at=k, after=after).drive(job_id)
            await walk.finish(job_id, folder, action)
            where = f"crash {'after' if after else 'before'} write {k} ({label}), then {action}"
            done = await walk.check(job_id, where)
            if action == "complete":
                assert done.status is S.COMPLETED, (where, done.message)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("store", "lose_spool"),
    [("local", False), ("local", True), ("s3", False)],
    ids=["same-disk", "spool-lost", "s3-other-host"],
)
@pytest.mark.parametrize("action", ACTIONS)
def test_every_crash_point_of_an_ending_then_the_next_run_keeps_output_equal_to_counts(
    tmp_path: Path, request: pytest.FixtureRequest, action: str, lose_spool: bool, store: str
) -> None:
    """The run that ends the job (settling a stop, a timeout, a failure) dies at each of its
    writes in turn, and the run after it (on another machine's disk, with ``lose_spool``, or
    on S3 another host than the one that crashed) must still leave output and counts equal."""
    walk = Walk(tmp_path, request, store)
    published = "complete_upload a.jsonl.out" if store == "s3" else "put_file a.jsonl.out"

    async def crashed_after_publish() -> tuple[str, str]:
        job_id, folder = await walk.submit()
        first = Process(walk.h, crash_at=published, after=True)
        assert not await first.drive(job_id)
        return job_id, folder

    async def main() -> None:
        job_id, folder = await crashed_after_publish()
        trace = (await walk.finish(job_id, folder, action)).trace
        await walk.check(job_id, f"{action} without a crash")
        test = f"ending-{action}-{store}-{lose_spool}"
        for k, after, label in sampled(crash_points(trace), walk.h, test):
            job_id, folder = await crashed_after_publish()
            await walk.finish(job_id, folder, action, crash_at=k, after=after)
            if lose_spool:
                shutil.rmtree(walk.h.data_dir / "spool" / job_id, ignore_errors=True)
            await walk.finish(job_id, folder, action, on=walk.h)
            where = f"crash {'after' if after else 'before'} write {k} ({label}) of {action}"
            await walk.check(job_id, where + ", then again")

    asyncio.run(main())


def test_the_sampled_walks_crash_at_every_kind_of_point() -> None:
    """On PostgreSQL the actions' run walks share out every kind of crash point (before and
    after each kind of write) once between them; an ending's walk visits each kind once."""
    trace = [
        "transition Validating",
        "save file=0 spool_size=10",
        "save file=0 spool_size=20",
        "put_file a.jsonl.out",
        "save file=1 spool_size=0",
        "transition Completed",
    ]
    points = crash_points(trace)

    pg: Any = SimpleNamespace(store_factory=SimpleNamespace(name="postgres"))  # a Harness's
    visited = [p for action in ACTIONS for p in sampled(points, pg, "run-local", action)]
    kinds = {(crash_kind(label), after) for _, after, label in points}
    assert sorted((crash_kind(label), after) for _, after, label in visited) == sorted(kinds)
    ending = sampled(points, pg, "ending-stop-local-False")
    assert sorted({crash_kind(label) for _, _, label in ending}) == sorted(
        {crash_kind(label) for label in trace}
    )
    assert len(ending) == len({crash_kind(label) for label in trace})
    assert sampled(points, pg, "run-local", "stop") == sampled(points, pg, "run-local", "stop")


# --- an output location that refuses the output ----------------------------------------------


class RefusingObjects:
    """An object store that refuses every write of objects named ``name`` (parts of an upload
    aside, so a refused ``.out`` can have parts in the checkpoint). Only for S3: moto cannot
    be made to refuse one key, whereas the local store refuses for real (a folder at the key).
    """

    def __init__(self, inner: Any, name: str) -> None:
        self._inner = inner
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    def _check(self, bucket: str, key: str) -> None:
        if key.rsplit("/", 1)[-1] == self._name:
            raise ObjectStoreError(f"Cannot write s3://{bucket}/{key}: AccessDenied.")

    async def put(self, bucket: str, key: str, data: bytes) -> None:
        self._check(bucket, key)
        await self._inner.put(bucket, key, data)

    async def put_file(self, bucket: str, key: str, path: Any, *, move: bool = False) -> None:
        self._check(bucket, key)
        await self._inner.put_file(bucket, key, path, move=move)

    async def complete_upload(self, bucket: str, key: str, upload_id: str, parts: Any) -> None:
        self._check(bucket, key)
        await self._inner.complete_upload(bucket, key, upload_id, parts)


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("ending", ["finish", "stop", "timeout"])
def test_an_output_location_that_refuses_a_file_keeps_output_equal_to_counts(
    tmp_path: Path, request: pytest.FixtureRequest, ending: str, store: str
) -> None:
    """The location refuses b.jsonl.out when b's records are done ("finish") or when the job
    settles after a stop or a timeout midway through b: on the local store a folder stands at
    its key (the rename into place fails for real); on S3 the store refuses the object (its
    parts were taken: they are in the checkpoint). The job ends all the same (Failed, or
    Stopped after a stop), counting a.jsonl.out's records only, and the manifest says so.
    Before the fix Get counted b's records too, which no ``.out`` holds."""
    files = {"a.jsonl": records(30), "b.jsonl": records(20, start=30)}
    objects: Any = None
    if store == "s3":
        url = request.getfixturevalue("moto_small_parts_url")
        request.getfixturevalue("_small_flushes")
        h = s3_harness(tmp_path, url, handler=yielding_echo)
        folder = f"in-{uuid.uuid4().hex[:8]}"  # one moto server for the session
        objects = RefusingObjects(h.objects, "b.jsonl.out")
    else:
        h = harness(tmp_path, {})
        folder = "in"
    for name, recs in files.items():
        h.put(f"s3://in-bucket/{folder}/{name}", jsonl(recs))

    async def main() -> None:
        job = await h.submit(f"s3://in-bucket/{folder}/", OUT)
        blocker = h.data_dir / "s3" / "out-bucket" / "results" / job.job_id / "b.jsonl.out"
        if store == "local":
            blocker.mkdir(parents=True)
        handler: Any = None
        on_write: Any = None
        if ending != "finish":
            handler = Gate(allow=35)  # a's 30 and 5 of b's, then the model holds the rest

            async def on_write(label: str) -> None:
                if re.match(r"save file=1 spool_size=[1-9]", label):
                    if ending == "stop":
                        await stop(h, job.job_id)
                    elif h.clock.now() < job.expiration_time:
                        h.clock.advance(timedelta(hours=25))  # type: ignore[attr-defined]

        process = Process(h, handler=handler, on_write=on_write, objects=objects)
        assert await process.drive(job.job_id)
        if store == "s3" and ending == "finish":
            assert "upload_part b.jsonl.out" in process.trace  # b had parts when refused
        done = await check_output_matches_counts(h, OUT, job.job_id, files)
        assert done.status is (S.STOPPED if ending == "stop" else S.FAILED), done.status
        assert done.counters.processed == 30 and done.counters.total == 50
        assert done.message and "Cannot write" in done.message, done.message
        if store == "local":
            # The location takes writes again: nothing changes (the job is final).
            blocker.rmdir()
            assert await check_output_matches_counts(h, OUT, job.job_id, files) == done

    asyncio.run(main())
