"""A pass whose records are answered a block at a time (``BlockOffload``: the worker
processes of a remote route, process_pool.PooledRoute), here with a double that answers its
blocks in this process exactly as a worker does (``answer_block``) or hands them back to be
answered here. Whatever answers each block, the pass writes the bytes and counts a
record-by-record pass writes, keeps the job's records in flight within
``engine_record_concurrency``, and a halted pass writes a prefix of the file and stops.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from batchrock.backends.base import (
    Block,
    BlockAnswer,
    BlockAnswerer,
    BlockOffload,
    MockBackend,
    ModelBackend,
    ModelRequest,
    ModelResult,
)
from batchrock.engine.file_pass import FilePass, Progress
from batchrock.jobs import JobStatus

from .harness import Harness, OneBackend, echo, jsonl, one_pass, out_lines, pass_over, records
from .test_in_order import awkward_input

MODEL = "m"


class Offload:
    """A :class:`BlockOffload` double: the blocks read whose number ``remote`` accepts are
    taken, and their parts answered by ``answer_block`` as a worker process would (with the
    worker's own backend, or, for those ``refuse`` names, handed back to be answered here
    whole); the pass answers the others record by record with :attr:`local`."""

    def __init__(
        self,
        local: ModelBackend,
        worker: ModelBackend,
        remote: Any,
        workers: int = 2,
        refuse: Any = lambda n: False,
    ) -> None:
        self.local = local
        self.worker = worker
        self.workers = workers
        self._remote = remote
        self._refuse = refuse
        self.read = 0
        self.taken: list[int] = []
        self.parts: list[tuple[Block, int]] = []

    async def invoke(self, request: ModelRequest) -> ModelResult:
        raise AssertionError("the pass answers its records with the offload's local backend")

    async def aclose(self) -> None:
        return None

    def takes_block(self) -> bool:
        self.read += 1
        if self._remote(self.read - 1):
            self.taken.append(self.read - 1)
            return True
        return False

    async def answer_block(
        self, block: Block, concurrency: int, answerer: BlockAnswerer
    ) -> BlockAnswer | None:
        self.parts.append((block, concurrency))
        if self._refuse(len(self.parts) - 1):
            return None
        return await answerer(self.worker, block, concurrency)


async def block_pass(
    backend: Any, data: bytes, *, concurrency: int, halt: asyncio.Event | None = None
) -> tuple[FilePass, list[bytes], Progress]:
    return await pass_over(
        backend, MODEL, data, concurrency=concurrency, block_bytes=1024, halt=halt
    )


def test_the_offload_double_is_what_the_pass_looks_for() -> None:
    double = Offload(MockBackend(echo), MockBackend(echo), bool)
    assert isinstance(double, BlockOffload)
    assert not isinstance(MockBackend(echo), BlockOffload)


def test_blocks_answered_anywhere_write_what_one_pass_writes() -> None:
    """A byte order mark, a blank line, records without an id (ids from their line
    numbers), failing records, a last line without a newline: the same bytes and counts
    whether each block is answered "in a worker", here whole, here record by record, or the
    file in one pass."""
    data = awkward_input()

    async def main() -> None:
        # (The reader ends a last line without a newline with one: so does one_pass's file.)
        want, want_progress = await one_pass(MockBackend(echo), MODEL, data + b"\n", concurrency=8)
        cases = [
            (lambda n: n % 2 == 0, lambda n: False),
            (lambda n: True, lambda n: False),
            (lambda n: False, lambda n: False),
            (lambda n: n % 3 != 1, lambda n: n % 2 == 1),
        ]
        for remote, refuse in cases:
            local, worker = MockBackend(echo), MockBackend(echo)
            offload = Offload(local, worker, remote, refuse=refuse)
            fp, got, progress = await block_pass(offload, data, concurrency=12)
            assert b"".join(got) == b"".join(want)
            assert progress == want_progress
            assert fp.finished
            assert len(local.calls) + len(worker.calls) == 340
            assert offload.read > 10
            assert offload.taken == [n for n in range(offload.read) if remote(n)]
            # Each part taken is whole lines, answering its share of the job's concurrency
            # (12 // (2 * 2 + 2), or its lines if fewer), in 4 rounds of it at most.
            parts = offload.parts
            assert all(b.data.endswith(b"\n") for b, _ in parts)
            sizes = [(b.data.count(b"\n"), c) for b, c in parts]
            assert all(n <= 8 and c == min(2, n) for n, c in sizes)
            starts = [(b.start_line, b.start_offset) for b, _ in parts]
            assert starts == sorted(starts)
            if remote(0):
                assert starts[0] == (0, 0)

    asyncio.run(main())


def test_the_jobs_records_in_flight_stay_within_its_concurrency() -> None:
    flying = peak = 0

    async def counted(request: ModelRequest) -> ModelResult:
        nonlocal flying, peak
        flying += 1
        peak = max(peak, flying)
        await asyncio.sleep(0.001)
        flying -= 1
        return await echo(request)

    async def main() -> None:
        backend = MockBackend(counted)
        offload = Offload(backend, backend, lambda n: n % 3 == 0, workers=3)
        _, got, progress = await block_pass(offload, jsonl(records(400)), concurrency=16)
        assert progress.success == 400 and len(got) > 1
        assert offload.parts and len(offload.taken) < offload.read

    asyncio.run(main())
    # The parts (2 records each for 8 parts at once) and the records answered here share
    # the job's 16 slots.
    assert 8 <= peak <= 16


def test_a_halted_block_pass_writes_a_prefix_and_stops() -> None:
    halt = asyncio.Event()
    answered = 0

    async def halting(request: ModelRequest) -> ModelResult:
        nonlocal answered
        answered += 1
        if answered == 150:
            halt.set()
        await asyncio.sleep(0)
        return await echo(request)

    data = jsonl(records(1000))

    async def main() -> None:
        backend = MockBackend(halting)
        offload = Offload(backend, backend, lambda n: n % 2 == 1)
        fp, got, progress = await block_pass(offload, data, concurrency=12, halt=halt)
        assert not fp.finished
        lines = out_lines(b"".join(got))
        assert 0 < len(lines) < 1000
        assert [line["recordId"] for line in lines] == [f"REC{i:08d}" for i in range(len(lines))]
        # The checkpoint's resume point is exactly where the written lines end.
        assert progress.line == len(lines) == progress.processed
        assert progress.offset == len(b"".join(data.splitlines(keepends=True)[: len(lines)]))

    asyncio.run(main())


def test_a_job_through_blocks_completes_as_in_one_process(tmp_path: Path) -> None:
    """A whole job (engine, spools, checkpoints, manifest) whose backend is answered in
    blocks, against the same job answered record by record."""

    async def run(h: Harness) -> tuple[Any, bytes, bytes]:
        h.put("s3://in-bucket/in/a.jsonl", awkward_input())
        h.bucket("out-bucket")
        job = await h.submit("s3://in-bucket/in/", "s3://out-bucket/r/")
        (done,) = await h.run(job.job_id)
        assert done.status is JobStatus.COMPLETED, done.message
        out = h.read(f"s3://out-bucket/r/{job.job_id}/a.jsonl.out")
        manifest = h.read(f"s3://out-bucket/r/{job.job_id}/manifest.json.out")
        return done.counters, out, manifest

    async def main() -> None:
        plain = Harness(tmp_path / "plain")
        blocks = Harness(tmp_path / "blocks")
        offload = Offload(MockBackend(echo), MockBackend(echo), lambda n: n % 2 == 0)
        blocks.backend = offload  # type: ignore[assignment]
        blocks.resolver = OneBackend(offload)  # type: ignore[arg-type]
        c1, out1, m1 = await run(plain)
        c2, out2, m2 = await run(blocks)
        assert c2 == c1 and m2 == m1
        # The generated recordIds name the job: compare everything else.
        assert len(out_lines(out2)) == len(out_lines(out1)) == 340
        assert [x.get("modelOutput", {}).get("echo") for x in out_lines(out2)] == [
            x.get("modelOutput", {}).get("echo") for x in out_lines(out1)
        ]
        assert offload.parts and offload.taken

    asyncio.run(main())


def flight_recorder() -> tuple[Any, list[int]]:
    """A handler answering after a millisecond, and the most records it had at once."""
    flying, peak = [0], [0]

    async def counted(request: ModelRequest) -> ModelResult:
        flying[0] += 1
        peak[0] = max(peak[0], flying[0])
        await asyncio.sleep(0.001)
        flying[0] -= 1
        return await echo(request)

    return counted, peak


def test_reader_blocks_of_many_parts_stay_within_the_concurrency() -> None:
    """A 64 KiB block of short records is many parts (16 workers: 64 // 34 = one record at
    a time each): together they hold no more than the job's slots."""
    handler, peak = flight_recorder()

    async def main() -> None:
        backend = MockBackend(handler)
        offload = Offload(backend, backend, lambda n: n % 4 != 3, workers=16)
        data = jsonl(records(3000))
        _, _, progress = await pass_over(
            offload, MODEL, data, concurrency=64, block_bytes=64 * 1024
        )
        assert progress.success == 3000 and len(offload.parts) > 100

    asyncio.run(main())
    assert 32 <= peak[0] <= 64


def test_big_records_keep_the_jobs_concurrency() -> None:
    """Records of 40 KB are a block each: a part of one record holds one slot, so the job
    still has its 16 records in flight."""
    handler, peak = flight_recorder()

    async def main() -> None:
        backend = MockBackend(handler)
        offload = Offload(backend, backend, lambda n: True)
        recs = [
            {"recordId": f"REC{i:08d}", "modelInput": {"prompt": "x" * 40_000}} for i in range(64)
        ]
        _, _, progress = await pass_over(
            offload, MODEL, jsonl(recs), concurrency=16, block_bytes=64 * 1024
        )
        assert progress.success == 64 and len(offload.parts) == 64

    asyncio.run(main())
    assert peak[0] == 16
