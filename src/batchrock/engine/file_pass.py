"""One pass over one input file: records go to the model concurrently, results come out in
input order.

``concurrency`` workers pull lines from a shared reader and await the backend; each result
waits in ``pending`` until every earlier record is done, then is appended to the output
buffer, so the spool (and the ``.out``) is always a prefix of the input in order. The number
of records read but not yet written is bounded (``window``), so one slow record cannot make
memory grow without end.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from batchrock.backends.base import ModelBackend, ModelRequest, ModelResult, RecordError
from batchrock.engine import records
from batchrock.engine.records import Line
from batchrock.jobs import Counters

log = logging.getLogger("batchrock.engine")

_dumps = orjson.dumps
#: Records a worker answers in a row before letting other tasks run.
_YIELD_EVERY = 256
_INTERNAL_ERROR = RecordError(500, "Internal server error while invoking the model.")


@dataclass(slots=True)
class Progress:
    """Where the written prefix ends: what a checkpoint records."""

    offset: int
    line: int
    processed: int = 0
    success: int = 0
    error: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add_to(self, base: Counters) -> Counters:
        return Counters(
            total=base.total,
            processed=base.processed + self.processed,
            success=base.success + self.success,
            error=base.error + self.error,
            input_tokens=base.input_tokens + self.input_tokens,
            output_tokens=base.output_tokens + self.output_tokens,
        )


class FilePass:
    """Process one file from ``start_offset`` until its end or until ``halt`` is set."""

    def __init__(
        self,
        *,
        lines: AsyncIterator[list[Line]],
        backend: ModelBackend,
        model_id: str,
        invocation_type: str,
        job_id: str,
        file_index: int,
        start_offset: int,
        start_line: int,
        concurrency: int,
        halt: asyncio.Event,
    ) -> None:
        self._lines = lines
        self._backend = backend
        self._model_id = model_id
        self._invocation_type: Any = invocation_type
        self._job_id = job_id
        self._file_index = file_index
        self._concurrency = max(1, concurrency)
        self._window = max(1024, 16 * self._concurrency)
        self._halt = halt
        self._queue: deque[tuple[int, Line]] = deque()
        self._refill_lock = asyncio.Lock()
        self._eof = False
        self._next_seq = 0
        self._written_seq = 0
        self._advanced = asyncio.Event()
        self._pending: dict[int, tuple[Line, bytes, ModelResult | None]] = {}
        #: Output bytes not yet in the spool; taken by :meth:`take_output`.
        self._out: list[bytes] = []
        self.progress = Progress(start_offset, start_line)
        self.finished = False

    # --- output side (called by the checkpointer) -------------------------------------------

    def take_output(self) -> tuple[bytes, Progress]:
        """The output written since the last call, and the progress it brings the file to.
        Synchronous on purpose: nothing can interleave between the two."""
        data = b"".join(self._out)
        self._out.clear()
        snap = Progress(**{f: getattr(self.progress, f) for f in Progress.__slots__})
        return data, snap

    def buffered_bytes(self) -> int:
        return sum(len(b) for b in self._out)

    # --- the pass ----------------------------------------------------------------------

    async def run(self) -> None:
        """Return when the file is done (``finished``) or ``halt`` was set (in-flight records
        are finished first, or dropped when they do not finish within the grace period)."""
        workers = [asyncio.create_task(self._worker()) for _ in range(self._concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
        self.finished = self._eof and not self._queue and self._written_seq == self._next_seq

    async def _take(self) -> tuple[int, Line] | None:
        """The next record to answer, waiting for input or for the writer to catch up;
        ``None`` when there is no more work (end of file, or halt)."""
        while True:
            if self._halt.is_set():
                return None
            if self._queue:
                if self._queue[0][0] - self._written_seq >= self._window:
                    self._advanced.clear()
                    await self._advanced.wait()
                    continue
                return self._queue.popleft()
            if self._eof:
                return None
            async with self._refill_lock:
                if self._queue or self._eof:
                    continue
                try:
                    batch = await anext(self._lines)
                except StopAsyncIteration:
                    self._eof = True
                    continue
                self._enqueue(batch)

    def _enqueue(self, batch: list[Line]) -> None:
        queue, seq = self._queue, self._next_seq
        for line in batch:
            if not line[2] or line[2].isspace():
                # Not a record, but reading resumes after it.
                if not queue and seq == self._written_seq:
                    self.progress.offset = line[1]
                    self.progress.line = line[0]
                continue
            queue.append((seq, line))
            seq += 1
        self._next_seq = seq

    async def _worker(self) -> None:
        queue, halt, window = self._queue, self._halt, self._window
        answer, complete = self._answer, self._complete
        streak = 0
        while True:
            # Fast path: take queued records without a call into _take (a hot loop when the
            # model answers at once); _take handles refills, back-pressure and halting.
            if queue and not halt.is_set() and queue[0][0] - self._written_seq < window:
                seq, line = queue.popleft()
                streak += 1
                if streak >= _YIELD_EVERY:
                    # A model that never suspends would otherwise keep the event loop (and the
                    # API served from it, and the checkpoints) waiting for a whole batch.
                    streak = 0
                    await asyncio.sleep(0)
            else:
                item = await self._take()
                if item is None:
                    return
                seq, line = item
            out, result = await answer(line)
            complete(seq, line, out, result)

    async def _answer(self, line: Line) -> tuple[bytes, ModelResult | None]:
        value = records.loads_record(line[2])
        if value is None:
            # Validated earlier, so the object changed since: report it on that record.
            gen = records.generated_record_id(self._job_id, self._file_index, line[0])
            try:
                records.parse_record(line[2])
                reason = "is not a record"
            except records.BadRecord as exc:
                reason = str(exc)
            return records.error_line(gen, None, 400, f"Line {line[0]} {reason}"), None
        model_input = value["modelInput"]
        rid: str | None = value.get("recordId")
        if rid is None:
            rid = records.generated_record_id(self._job_id, self._file_index, line[0])
        request = ModelRequest(self._model_id, self._invocation_type, model_input, rid)
        try:
            result = await self._backend.invoke(request)
        except Exception:
            # Backends report bad records as results; an exception is a bug or an outage.
            # The record gets a 500, like a model endpoint failing, and the job goes on.
            log.exception("backend failed on record %s of job %s", rid, self._job_id)
            result = ModelResult(error=_INTERNAL_ERROR)
        try:
            if result.error is None:
                return _dumps(
                    {"recordId": rid, "modelInput": model_input, "modelOutput": result.output}
                ) + b"\n", result
            err = result.error
            return records.error_line(rid, model_input, err.code, err.message), result
        except orjson.JSONEncodeError as exc:
            msg = f"The model returned a response that is not JSON: {exc}"
            return records.error_line(rid, model_input, 500, msg), None

    def _complete(self, seq: int, line: Line, out: bytes, result: ModelResult | None) -> None:
        if seq != self._written_seq:
            self._pending[seq] = (line, out, result)
            return
        p = self.progress
        pending = self._pending
        while True:
            self._out.append(out)
            p.processed += 1
            if result is not None:
                if result.error is None:
                    p.success += 1
                else:
                    p.error += 1
                p.input_tokens += result.input_tokens
                p.output_tokens += result.output_tokens
            else:
                p.error += 1
            self._written_seq += 1
            if not pending:
                break
            nxt = pending.pop(self._written_seq, None)
            if nxt is None:
                break
            line, out, result = nxt
        p.line, p.offset = line[0], line[1]
        self._advanced.set()
