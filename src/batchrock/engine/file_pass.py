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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from batchrock.backends.base import ModelBackend, ModelRequest, ModelResult, RecordError
from batchrock.engine import records
from batchrock.jobs import Counters

log = logging.getLogger("batchrock.engine")

_dumps = orjson.dumps
_loads = orjson.loads
_NEWLINE = orjson.OPT_APPEND_NEWLINE
_Item = tuple[int, int, int, bytes]
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
    throttled: int = 0

    def add_to(self, base: Counters) -> Counters:
        return Counters(
            total=base.total,
            processed=base.processed + self.processed,
            success=base.success + self.success,
            error=base.error + self.error,
            input_tokens=base.input_tokens + self.input_tokens,
            output_tokens=base.output_tokens + self.output_tokens,
            throttled=base.throttled + self.throttled,
        )


class FilePass:
    """Process one file from ``start_offset`` until its end or until ``halt`` is set."""

    def __init__(
        self,
        *,
        lines: AsyncIterator[list[bytes]],
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
        #: (seq, line number, end offset, line bytes): flat, one tuple per record.
        self._queue: deque[_Item] = deque()
        self._refill_lock = asyncio.Lock()
        self._eof = False
        self._next_seq = 0
        self._written_seq = 0
        self._advanced = asyncio.Event()
        self._pending: dict[int, tuple[int, int, bytes, ModelResult | None]] = {}
        #: Where the next line read starts: its number minus one, and its byte offset.
        self._read_line = start_line
        self._read_offset = start_offset
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

    # --- the pass ----------------------------------------------------------------------

    async def run(self) -> None:
        """Return when the file is done (``finished``) or ``halt`` was set (in-flight records
        are finished first, or dropped when they do not finish within the grace period)."""
        backend = self._backend
        invoke_now = getattr(backend, "invoke_now", None)
        if invoke_now is not None and getattr(backend, "immediate", False):
            await self._run_in_order(invoke_now)
            return
        workers = [asyncio.create_task(self._worker()) for _ in range(self._concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
        self.finished = self._eof and not self._queue and self._written_seq == self._next_seq

    async def _run_in_order(self, invoke_now: Callable[[ModelRequest], ModelResult]) -> None:
        """The pass for a model that answers at once: one plain loop, record after record, no
        task per record and nothing to put back in order. Output and progress are brought up
        to date before every suspension point, so a checkpoint always sees a consistent pair.
        """
        p, out, halt, lines = self.progress, self._out, self._halt, self._lines
        model_id, invocation_type = self._model_id, self._invocation_type
        number, offset = self._read_line, self._read_offset
        bom = records.UTF8_BOM
        while not halt.is_set():
            try:
                batch = await anext(lines)
            except StopAsyncIteration:
                self._eof = True
                break
            start = 0
            while start < len(batch) and not halt.is_set():
                # Slices, with a yield after each: a model that never suspends would otherwise
                # keep the event loop (the API served from it, the checkpoints) for a chunk.
                success = error = tokens_in = tokens_out = throttled = 0
                for data in batch[start : start + _YIELD_EVERY]:
                    number += 1
                    offset += len(data) + 1
                    try:
                        value = _loads(data)
                    except orjson.JSONDecodeError:
                        value = None
                    if type(value) is dict:
                        model_input = value.get("modelInput")
                        rid = value.get("recordId")
                        if type(model_input) is dict and (type(rid) is str or rid is None):
                            if rid is None:
                                rid = records.generated_record_id(
                                    self._job_id, self._file_index, number
                                )
                            try:
                                result = invoke_now(
                                    ModelRequest(model_id, invocation_type, model_input, rid)
                                )
                            except Exception:
                                result = self._backend_failed(rid)
                            if result.error is None:
                                try:
                                    out.append(
                                        _dumps(
                                            {"recordId": rid, "modelInput": model_input,
                                             "modelOutput": result.output},
                                            option=_NEWLINE,
                                        )
                                    )  # fmt: skip
                                    success += 1
                                    tokens_in += result.input_tokens
                                    tokens_out += result.output_tokens
                                    if result.info:
                                        throttled += result.info.get("throttled", 0)
                                    continue
                                except orjson.JSONEncodeError:
                                    pass
                            line, answered = self._render(rid, model_input, result)
                        else:
                            line, answered = self._answer_now(invoke_now, number, data)
                    else:
                        if number == 1 and data.startswith(bom):
                            data = data[len(bom) :]
                        if not data or data.isspace():
                            continue  # not a record, but reading resumes after it
                        line, answered = self._answer_now(invoke_now, number, data)
                    out.append(line)
                    if answered is not None and answered.error is None:
                        success += 1
                    else:
                        error += 1
                    if answered is not None:
                        tokens_in += answered.input_tokens
                        tokens_out += answered.output_tokens
                        if answered.info:
                            throttled += answered.info.get("throttled", 0)
                start += _YIELD_EVERY
                p.processed += success + error
                p.success += success
                p.error += error
                p.input_tokens += tokens_in
                p.output_tokens += tokens_out
                p.throttled += throttled
                p.line = number
                p.offset = offset
                await asyncio.sleep(0)
        self.finished = self._eof and not halt.is_set()

    def _answer_now(
        self, invoke_now: Callable[[ModelRequest], ModelResult], number: int, data: bytes
    ) -> tuple[bytes, ModelResult | None]:
        """:meth:`_answer` for the in-order pass: records without a recordId, lines that are
        no longer records."""
        value = records.loads_record(data)
        if value is None:
            return self._not_a_record(number, data), None
        model_input = value["modelInput"]
        rid: str | None = value.get("recordId")
        if rid is None:
            rid = records.generated_record_id(self._job_id, self._file_index, number)
        try:
            request = ModelRequest(self._model_id, self._invocation_type, model_input, rid)
            result = invoke_now(request)
        except Exception:
            result = self._backend_failed(rid)
        return self._render(rid, model_input, result)

    def _not_a_record(self, number: int, data: bytes) -> bytes:
        # Validated earlier, so the object changed since: report it on that record.
        gen = records.generated_record_id(self._job_id, self._file_index, number)
        try:
            records.parse_record(data)
            reason = "is not a record"
        except records.BadRecord as exc:
            reason = str(exc)
        return records.error_line(gen, None, 400, f"Line {number} {reason}")

    async def _take(self) -> _Item | None:
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

    def _enqueue(self, batch: list[bytes]) -> None:
        queue, seq = self._queue, self._next_seq
        number, offset = self._read_line, self._read_offset
        append = queue.append
        for data in batch:
            number += 1
            offset += len(data) + 1
            if number == 1 and data.startswith(records.UTF8_BOM):
                data = data[len(records.UTF8_BOM) :]
            if not data or data.isspace():
                # Not a record, but reading resumes after it.
                if not queue and seq == self._written_seq:
                    self.progress.offset = offset
                    self.progress.line = number
                continue
            append((seq, number, offset, data))
            seq += 1
        self._next_seq = seq
        self._read_line, self._read_offset = number, offset

    async def _worker(self) -> None:
        queue, halt, window = self._queue, self._halt, self._window
        complete, invoke = self._complete, self._backend.invoke
        model_id, invocation_type = self._model_id, self._invocation_type
        streak = 0
        while True:
            # Fast path: take queued records without a call into _take (a hot loop when the
            # model answers at once); _take handles refills, back-pressure and halting.
            if queue and not halt.is_set() and queue[0][0] - self._written_seq < window:
                item = queue.popleft()
                streak += 1
                if streak >= _YIELD_EVERY:
                    # A model that never suspends would otherwise keep the event loop (and the
                    # API served from it, and the checkpoints) waiting for a whole batch.
                    streak = 0
                    await asyncio.sleep(0)
            else:
                next_item = await self._take()
                if next_item is None:
                    return
                item = next_item
            seq, number, end, data = item
            # The common case inline (a well-formed record with its own recordId); anything
            # else goes through _answer.
            try:
                value = _loads(data)
            except orjson.JSONDecodeError:
                value = None
            if type(value) is dict:
                model_input = value.get("modelInput")
                rid = value.get("recordId")
                if type(model_input) is dict and type(rid) is str:
                    try:
                        result = await invoke(
                            ModelRequest(model_id, invocation_type, model_input, rid)
                        )
                    except Exception:
                        result = self._backend_failed(rid)
                    if result.error is None:
                        try:
                            out = _dumps(
                                {"recordId": rid, "modelInput": model_input,
                                 "modelOutput": result.output}
                            )  # fmt: skip
                            complete(seq, number, end, out + b"\n", result)
                            continue
                        except orjson.JSONEncodeError:
                            pass
                    out, answered = self._render(rid, model_input, result)
                    complete(seq, number, end, out, answered)
                    continue
            out, answered = await self._answer(number, data)
            complete(seq, number, end, out, answered)

    def _backend_failed(self, rid: str) -> ModelResult:
        # Backends report bad records as results; an exception is a bug or an outage. The
        # record gets a 500, like a model endpoint failing, and the job goes on.
        log.exception("backend failed on record %s of job %s", rid, self._job_id)
        return ModelResult(error=_INTERNAL_ERROR)

    def _render(
        self, rid: str, model_input: Any, result: ModelResult
    ) -> tuple[bytes, ModelResult | None]:
        try:
            if result.error is None:
                return records.output_line(rid, model_input, result.output), result
            err = result.error
            return records.error_line(rid, model_input, err.code, err.message), result
        except orjson.JSONEncodeError as exc:
            msg = f"The model returned a response that is not JSON: {exc}"
            return records.error_line(rid, model_input, 500, msg), None

    async def _answer(self, number: int, data: bytes) -> tuple[bytes, ModelResult | None]:
        value = records.loads_record(data)
        if value is None:
            return self._not_a_record(number, data), None
        model_input = value["modelInput"]
        rid: str | None = value.get("recordId")
        if rid is None:
            rid = records.generated_record_id(self._job_id, self._file_index, number)
        request = ModelRequest(self._model_id, self._invocation_type, model_input, rid)
        try:
            result = await self._backend.invoke(request)
        except Exception:
            result = self._backend_failed(rid)
        return self._render(rid, model_input, result)

    def _complete(
        self, seq: int, number: int, end: int, out: bytes, result: ModelResult | None
    ) -> None:
        if seq != self._written_seq:
            self._pending[seq] = (number, end, out, result)
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
                if result.info:
                    p.throttled += result.info.get("throttled", 0)
            else:
                p.error += 1
            self._written_seq += 1
            if not pending:
                break
            nxt = pending.pop(self._written_seq, None)
            if nxt is None:
                break
            number, end, out, result = nxt
        p.line, p.offset = number, end
        self._advanced.set()
