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
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from batchrock.backends.base import (
    Block,
    BlockAnswer,
    BlockOffload,
    JsonBytes,
    MediaReader,
    ModelBackend,
    ModelRequest,
    ModelResult,
    NeedsAwait,
    RawAnswerer,
    RecordError,
)
from batchrock.backends.resilience import Slots
from batchrock.engine import records
from batchrock.jobs import Counters

log = logging.getLogger("batchrock.engine")

_dumps = orjson.dumps
_loads = orjson.loads
_output_line = records.output_line
_Item = tuple[int, int, int, bytes]
#: Records a worker answers in a row before letting other tasks run.
_YIELD_EVERY = 256
#: ... or sooner, once it has kept the event loop this long (the API is served from the same
#: loop: no request may wait on it for more than a few milliseconds), checked every
#: _CLOCK_EVERY records so that a quick model pays for no clock reads.
_SLICE_SECONDS = 0.004
_CLOCK_EVERY = 8
#: How long a pass that never waits on the model may keep the event loop (and the GIL)
#: before it pauses for a moment. Worker threads (file reads, spool fsyncs, of this job and
#: others) need the GIL back after each system call, and CPython gives it straight back to
#: a loop whose only pauses are ``sleep(0)``: without a real pause now and then they would
#: wait until the pass ends (measured: seconds for a 1 MB write).
_HOLD_SECONDS = 0.01
_PAUSE_SECONDS = 0.0001
#: Output waiting beyond this is written without waiting for the next checkpoint.
FLUSH_BYTES = 1024 * 1024
_INTERNAL_ERROR = RecordError(500, "Internal server error while invoking the model.")
_NONE = Counters()
#: How many rounds of its share of records in flight a part of a block sent whole has at most.
BLOCK_ROUNDS = 4


class _Deferred(Exception):
    """An immediate model could not answer this record at once (``NeedsAwait``): the
    in-order pass awaits ``invoke`` for it, at a point where its progress is consistent."""

    def __init__(self, rid: str, raw: JsonBytes, request: ModelRequest) -> None:
        super().__init__(rid)
        self.rid, self.raw, self.request = rid, raw, request


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

    def add(self, counts: Counters) -> None:
        """``counts`` (of records after these) added to these."""
        self.processed += counts.processed
        self.success += counts.success
        self.error += counts.error
        self.input_tokens += counts.input_tokens
        self.output_tokens += counts.output_tokens
        self.throttled += counts.throttled

    def count(self, answered: ModelResult | None) -> None:
        """One more record done: the model's result, or ``None`` for a line that got no
        answer (no longer a record, or an output the model could not encode)."""
        self.processed += 1
        if answered is None:
            self.error += 1
            return
        if answered.error is None:
            self.success += 1
        else:
            self.error += 1
        self.input_tokens += answered.input_tokens
        self.output_tokens += answered.output_tokens
        if answered.info:
            self.throttled += answered.info.get("throttled", 0)


@dataclass(slots=True, eq=False)
class _Part:
    """A part of a block sent whole: its lines (its weight in the order), the job's slots it
    holds, and, once answered, its counts."""

    lines: int
    slots: int
    counts: Counters = _NONE


class FilePass:
    """Process one file from ``start_offset`` until its end or until ``halt`` is set."""

    def __init__(
        self,
        *,
        blocks: AsyncIterator[bytes],
        backend: ModelBackend,
        model_id: str,
        invocation_type: str,
        job_id: str,
        file_index: int,
        start_offset: int,
        start_line: int,
        concurrency: int,
        halt: asyncio.Event,
        media: MediaReader | None = None,
    ) -> None:
        self._blocks = blocks
        #: The job's reader of media named by S3 location, handed to the model per record.
        self._media = media
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
        #: With a BlockOffload (_use_blocks): what answers the records kept here, the job's
        #: slots, how many parts may be out and each part's share of the slots.
        self._offload: BlockOffload | None = None
        self._invoke = backend.invoke
        self._slots: Slots | None = None
        self._share = 1
        #: The parts sent, until they come back.
        self._sent: set[asyncio.Task[None]] = set()
        self._failed: Exception | None = None
        self._eof = False
        self._next_seq = 0
        self._written_seq = 0
        self._advanced = asyncio.Event()
        self._pending: dict[int, tuple[int, int, bytes, ModelResult | _Part | None]] = {}
        #: Where the next line read starts: its number minus one, and its byte offset.
        self._read_line = start_line
        self._read_offset = start_offset
        #: Output lines not yet in the spool, and their size; taken by :meth:`take_output`.
        self._out: list[bytes] = []
        self._out_bytes = 0
        #: Set when enough output waits that the runner should write it now rather than at
        #: its next checkpoint: the write and its fsync then overlap with the pass.
        self.output_ready = asyncio.Event()
        self._paused_at = time.monotonic()
        self.progress = Progress(start_offset, start_line)
        self.finished = False

    # --- output side (called by the checkpointer) -------------------------------------------

    def take_output(self) -> tuple[list[bytes], int, Progress]:
        """The output lines written since the last call, their size in bytes, and the
        progress they bring the file to. Synchronous on purpose: nothing can interleave."""
        data, size, self._out = self._out, self._out_bytes, []
        self._out_bytes = 0
        self.output_ready.clear()
        snap = Progress(**{f: getattr(self.progress, f) for f in Progress.__slots__})
        return data, size, snap

    # --- the pass ----------------------------------------------------------------------

    async def run(self) -> None:
        """Return when the file is done (``finished``) or ``halt`` was set (in-flight records
        are finished first, or dropped when they do not finish within the grace period)."""
        backend = self._backend
        if isinstance(backend, BlockOffload):
            self._use_blocks(backend)
        invoke_now = getattr(backend, "invoke_now", None)
        if invoke_now is not None and getattr(backend, "immediate", False):
            make_answerer = getattr(backend, "raw_answerer", None)
            answerer = None
            if make_answerer is not None:
                answerer = make_answerer(self._model_id, self._invocation_type)
            await self._run_in_order(invoke_now, answerer)
            return
        workers = [asyncio.create_task(self._worker()) for _ in range(self._concurrency)]
        try:
            await asyncio.gather(*workers)
            while self._sent and self._failed is None:  # the blocks still with a worker
                await asyncio.wait(set(self._sent))
        finally:
            for w in workers:
                w.cancel()
            for task in self._sent:
                task.cancel()
        if self._failed is not None:
            raise self._failed
        self.finished = self._eof and not self._queue and self._written_seq == self._next_seq

    # --- blocks answered whole elsewhere (BlockOffload) ----------------------------------

    def _use_blocks(self, offload: BlockOffload) -> None:
        """Set this pass up for a route whose records worker processes may answer a block at
        a time. The pass is the usual one (records taken from the queue by ``concurrency``
        coroutines, answered by the route's ``local`` backend, written in order), except
        that a block the offload takes (:meth:`BlockOffload.takes_block`, asked as each
        block is read) is cut into parts of a few rounds of their share of records, each
        part taking one place in the order and that share of the job's slots, and sent: a
        worker answers the part's lines whole (:func:`answer_block`: the line's parse, the
        retries, the model's exchange, the output line), and the pass writes the part's
        output when its turn comes. The engine's part of such a record is its share of the
        part's bytes, so one engine feeds as many workers as the machine has cores.

        Every record, answered here or in a part, holds one of the job's
        ``engine_record_concurrency`` slots while in flight (a part holds one for each
        record it may answer at once: its share, ``concurrency // (2 x workers + 2)``, or
        its lines if fewer), so the bound holds across every process. A halted pass takes
        no more records and sends no more parts; the parts out are written if they come
        back in the grace period, as records are.
        """
        self._offload = offload
        self._invoke = offload.local.invoke
        self._slots = Slots(self._concurrency)
        self._share = max(1, self._concurrency // (2 * offload.workers + 2))

    async def _send_block(self, offload: BlockOffload, data: bytes) -> None:
        """Send ``data`` (whole lines, just read) to the offload, in parts. A part weighs its
        lines in the order (the window bounds records read but not written, as for records
        answered here) and holds a slot for each record it may answer at once."""
        slots, share, halt = self._slots, self._share, self._halt
        assert slots is not None
        for part in _split(data, BLOCK_ROUNDS * share):
            lines = part.count(b"\n")
            while self._next_seq + lines - self._written_seq > self._window:
                if halt.is_set() or self._failed is not None:
                    return
                self._advanced.clear()
                await self._advanced.wait()
            taken = min(share, lines)
            for _ in range(taken):
                if slots.free and not slots.waiting:
                    slots.free -= 1
                else:
                    await slots.wait()
            if halt.is_set():
                for _ in range(taken):
                    slots.release()
                return
            block = Block(
                self._model_id,
                self._invocation_type,
                self._job_id,
                self._file_index,
                self._read_line,
                self._read_offset,
                part,
            )
            self._read_line += lines
            self._read_offset += len(part)
            seq = self._next_seq
            self._next_seq += lines
            task = asyncio.get_running_loop().create_task(
                self._answer_sent(offload, seq, block, _Part(lines, taken))
            )
            self._sent.add(task)
            task.add_done_callback(self._sent.discard)

    async def _answer_sent(
        self, offload: BlockOffload, seq: int, block: Block, part: _Part
    ) -> None:
        slots, taken = self._slots, part.slots
        assert slots is not None
        try:
            answer = await offload.answer_block(block, taken, answer_block)
            if answer is None:  # no worker could: answered here, whole
                answer = await answer_block(offload.local, block, taken, media=self._media)
        except Exception as exc:  # a bug: the pass ends with it (the runner fails the job)
            log.exception("a block of job %s could not be answered", self._job_id)
            self._failed = exc
            self._advanced.set()
            return
        finally:
            for _ in range(taken):
                slots.release()
        part.counts = answer.counts
        self._complete(seq, answer.line, answer.offset, answer.output, part)

    async def _run_in_order(
        self,
        invoke_now: Callable[[ModelRequest], ModelResult],
        answerer: RawAnswerer | None,
    ) -> None:
        """The pass for a model that answers at once: one plain loop, record after record, no
        task per record and nothing to put back in order. Output and progress are brought up
        to date before every suspension point, so a checkpoint always sees a consistent pair.

        With an ``answerer`` the common record never becomes Python objects: msgspec finds
        its recordId and modelInput bytes, the answerer reads those and returns the encoded
        output, and the output line is joined from the pieces.
        """
        p, halt, blocks = self.progress, self._halt, self._blocks
        number, offset = self._read_line, self._read_offset
        read_lines, line_errors, output_line = records.read_lines, records.LINE_ERRORS, _output_line
        while not halt.is_set():
            try:
                block = await anext(blocks)
            except StopAsyncIteration:
                self._eof = True
                break
            # A block at a time, with a yield after each: a model that never suspends would
            # otherwise keep the event loop (the API served from it, the checkpoints).
            success = tokens_in = tokens_out = 0
            # The block's output and results stay local until its end: a record the model
            # must await (media to check) suspends mid-block, and a checkpoint taken then
            # must see output and progress that match.
            out: list[bytes] = []
            answers: list[ModelResult | None] = []
            deferred: list[tuple[int, int, _Deferred]] = []
            lines: list[bytes] | None = None
            parsed: list[Any] | None = None
            if answerer is not None:
                try:
                    parsed = read_lines(block)
                except line_errors:
                    parsed = None
                else:
                    # Blank lines are skipped by read_lines: such blocks go line by line.
                    if len(parsed) != block.count(b"\n"):
                        parsed = None
            if parsed is None or answerer is None:
                # Line by line, with progress kept per line: a slow immediate model yields
                # every _YIELD_EVERY lines instead of once a block.
                number, offset = await self._lines_in_order(invoke_now, block, number, offset)
                continue
            first = number
            for record in parsed:
                number += 1
                rid, raw = record.recordId, record.modelInput
                if rid is None:
                    rid = records.generated_record_id(self._job_id, self._file_index, number)
                try:
                    fast = answerer(raw, rid)
                except Exception:  # a bug: the regular path decides
                    log.exception("raw answerer failed on record %s", rid)
                    fast = None
                if fast is not None:
                    out.append(output_line(rid, raw, fast[0]))
                    success += 1
                    tokens_in += fast[1]
                    tokens_out += fast[2]
                    continue
                if lines is None:
                    lines = records.block_lines(block)
                data = lines[number - first - 1]
                try:
                    line, answered = self._answer_now(invoke_now, number, data)
                except _Deferred as later:
                    # Answered with the block's other deferred records, concurrently.
                    deferred.append((len(out), len(answers), later))
                    line, answered = b"", None
                assert line is not None  # a record is not blank
                out.append(line)
                answers.append(answered)
            await self._settle(deferred, out, answers)
            for answered in answers:
                p.count(answered)
            self._out.extend(out)
            offset += len(block)
            p.processed += success
            p.success += success
            p.input_tokens += tokens_in
            p.output_tokens += tokens_out
            p.line = number
            p.offset = offset
            self._out_bytes += sum(map(len, out))
            if self._out_bytes >= FLUSH_BYTES:
                self.output_ready.set()
            await self._yield()
        self.finished = self._eof and not halt.is_set()

    async def _lines_in_order(
        self,
        invoke_now: Callable[[ModelRequest], ModelResult],
        block: bytes,
        number: int,
        offset: int,
    ) -> tuple[int, int]:
        """A block for :meth:`_run_in_order`, line by line; returns where it stopped (the
        end of the block, or an earlier line when halted)."""
        halt = self._halt
        # Lines wait here until the next yield point, where the deferred ones among them
        # are answered (concurrently) and all join the output with their progress.
        out: list[bytes] = []
        answers: list[ModelResult | None] = []
        deferred: list[tuple[int, int, _Deferred]] = []
        monotonic = time.monotonic
        slice_end = monotonic() + _SLICE_SECONDS
        for index, data in enumerate(records.block_lines(block)):
            if (
                index
                and not index % _CLOCK_EVERY
                and (not index % _YIELD_EVERY or monotonic() >= slice_end)
            ):
                await self._flush_lines(deferred, out, answers, number, offset)
                await self._yield()
                if halt.is_set():
                    return number, offset
                slice_end = monotonic() + _SLICE_SECONDS
            number += 1
            offset += len(data) + 1
            try:
                line, answered = self._answer_now(invoke_now, number, data)
            except _Deferred as later:
                deferred.append((len(out), len(answers), later))
                line, answered = b"", None
            if line is not None:
                out.append(line)
                answers.append(answered)
        await self._flush_lines(deferred, out, answers, number, offset)
        if self._out_bytes >= FLUSH_BYTES:
            self.output_ready.set()
        await self._yield()
        return number, offset

    async def _flush_lines(
        self,
        deferred: list[tuple[int, int, _Deferred]],
        out: list[bytes],
        answers: list[ModelResult | None],
        number: int,
        offset: int,
    ) -> None:
        """Answer the deferred lines, then move every waiting line into the output with its
        progress, up to line ``number`` ending at ``offset``; empties the lists."""
        await self._settle(deferred, out, answers)
        p = self.progress
        for line, answered in zip(out, answers, strict=True):
            self._out.append(line)
            self._out_bytes += len(line)
            p.count(answered)
        p.line, p.offset = number, offset
        deferred.clear()
        out.clear()
        answers.clear()

    async def _settle(
        self,
        deferred: list[tuple[int, int, _Deferred]],
        out: list[bytes],
        answers: list[ModelResult | None],
    ) -> None:
        """Answer deferred records (``(place in out, place in answers, record)``), at most
        ``concurrency`` at once, and put their lines and results in their places."""
        if not deferred:
            return
        if len(deferred) == 1:
            done = [await self._answer_deferred(deferred[0][2])]
        else:
            slots = asyncio.Semaphore(self._concurrency)

            async def one(record: _Deferred) -> tuple[bytes, ModelResult | None]:
                async with slots:
                    return await self._answer_deferred(record)

            done = await asyncio.gather(*(one(record) for _, _, record in deferred))
        for (at, answer_at, _), (line, answered) in zip(deferred, done, strict=True):
            out[at] = line
            answers[answer_at] = answered

    async def _yield(self) -> None:
        """Let other tasks run; now and then long enough for threads (see _HOLD_SECONDS)."""
        now = time.monotonic()
        if now - self._paused_at < _HOLD_SECONDS:
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(_PAUSE_SECONDS)
            self._paused_at = time.monotonic()

    def _answer_now(
        self, invoke_now: Callable[[ModelRequest], ModelResult], number: int, data: bytes
    ) -> tuple[bytes | None, ModelResult | None]:
        """One line of the in-order pass the regular way: ``(None, None)`` for a line that is
        not a record (blank), else its output line and the model's result, if it got one."""
        if number == 1 and data.startswith(records.UTF8_BOM):
            data = data[len(records.UTF8_BOM) :]
        if not data or data.isspace():
            return None, None
        record = self._read(number, data)
        if isinstance(record, bytes):
            return record, None
        rid, raw, body = record
        request = ModelRequest(self._model_id, self._invocation_type, body, rid, self._media)
        try:
            result = invoke_now(request)
        except NeedsAwait:
            raise _Deferred(rid, raw, request) from None
        except Exception:
            result = self._backend_failed(rid)
        return self._render(rid, raw, result)

    async def _answer_deferred(self, deferred: _Deferred) -> tuple[bytes, ModelResult | None]:
        """A record :meth:`_answer_now` could not answer at once, awaited."""
        try:
            result = await self._backend.invoke(deferred.request)
        except Exception:
            result = self._backend_failed(deferred.rid)
        return self._render(deferred.rid, deferred.raw, result)

    def _read(self, number: int, data: bytes) -> tuple[str, JsonBytes, dict[str, Any]] | bytes:
        """``(recordId, modelInput as JSON, modelInput)`` of a record line, or the error line
        for a line that is not one after all: the file was rewritten after Validating with
        its size and time kept (the runner fails the job when it notices), or its
        modelInput holds what msgspec skips over but orjson refuses (a number no double
        holds, like 1e999)."""
        raw: JsonBytes
        try:
            line = records.read_line(data)
        except records.LINE_ERRORS:
            value = records.loads_record(data)  # what msgspec refuses but orjson may read
            if value is None:
                return self._not_a_record(number, data, None)
            rid, body = value.get("recordId"), value["modelInput"]
            raw = _dumps(body)
        else:
            rid, raw = line.recordId, line.modelInput
            try:
                body = _loads(bytes(raw))
            except orjson.JSONDecodeError:
                return self._not_a_record(number, data, rid)
            if type(body) is not dict:
                return self._not_a_record(number, data, rid)
        if rid is None:
            rid = records.generated_record_id(self._job_id, self._file_index, number)
        return rid, raw, body

    def _not_a_record(self, number: int, data: bytes, rid: str | None) -> bytes:
        """The error line for line ``number``, under its recordId if it has a readable one."""
        if rid is None:
            rid = records.generated_record_id(self._job_id, self._file_index, number)
        try:
            records.parse_record(data)
            reason = "is not a record"
        except records.BadRecord as exc:
            reason = str(exc)
        return records.error_line(rid, None, 400, f"Line {number} {reason}")

    async def _take(self) -> _Item | None:
        """The next record to answer, waiting for input or for the writer to catch up;
        ``None`` when there is no more work (end of file, or halt)."""
        while True:
            if self._halt.is_set() or self._failed is not None:
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
                offload = self._offload
                try:
                    block = await anext(self._blocks)
                except StopAsyncIteration:
                    self._eof = True
                    continue
                if offload is not None and offload.takes_block():
                    await self._send_block(offload, block)
                    continue
                self._enqueue(records.block_lines(block))

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
        complete, invoke, slots = self._complete, self._invoke, self._slots
        model_id, invocation_type = self._model_id, self._invocation_type
        streak = 0
        monotonic = time.monotonic
        slice_end = monotonic() + _SLICE_SECONDS
        while True:
            # Fast path: take queued records without a call into _take (a hot loop when the
            # model answers at once); _take handles refills, back-pressure and halting.
            if queue and not halt.is_set() and queue[0][0] - self._written_seq < window:
                item = queue.popleft()
                streak += 1
                if not streak % _CLOCK_EVERY and (
                    streak >= _YIELD_EVERY or monotonic() >= slice_end
                ):
                    # A model that never suspends would otherwise keep the event loop (and the
                    # API served from it, and the checkpoints) waiting for a whole batch.
                    streak = 0
                    await self._yield()
                    slice_end = monotonic() + _SLICE_SECONDS
            else:
                next_item = await self._take()
                if next_item is None:
                    return
                item = next_item
                streak = 0
                slice_end = monotonic() + _SLICE_SECONDS
            seq, number, end, data = item
            record = self._read(number, data)
            if isinstance(record, bytes):
                complete(seq, number, end, record, None)
                continue
            rid, raw, body = record
            if slots is not None:  # a job whose blocks may go to workers (_use_blocks)
                if slots.free and not slots.waiting:
                    slots.free -= 1
                else:
                    await slots.wait()
            try:
                request = ModelRequest(model_id, invocation_type, body, rid, self._media)
                result = await invoke(request)
            except Exception:
                result = self._backend_failed(rid)
            finally:
                if slots is not None:
                    slots.release()
            line, answered = self._render(rid, raw, result)
            complete(seq, number, end, line, answered)

    def _backend_failed(self, rid: str) -> ModelResult:
        # Backends report bad records as results; an exception is a bug or an outage. The
        # record gets a 500, like a model endpoint failing, and the job goes on.
        log.exception("backend failed on record %s of job %s", rid, self._job_id)
        return ModelResult(error=_INTERNAL_ERROR)

    def _render(
        self, rid: str, raw: JsonBytes, result: ModelResult
    ) -> tuple[bytes, ModelResult | None]:
        try:
            if result.error is None:
                return _output_line(rid, raw, _dumps(result.output)), result
            err = result.error
            return records.error_line(rid, raw, err.code, err.message), result
        except orjson.JSONEncodeError as exc:
            msg = f"The model returned a response that is not JSON: {exc}"
            return records.error_line(rid, raw, 500, msg), None

    def _complete(
        self, seq: int, number: int, end: int, out: bytes, result: ModelResult | _Part | None
    ) -> None:
        """Record ``seq`` answered (its output line and result), or a part of a block sent
        whole (its output lines and counts): written now if every earlier one is, with those
        after it that were waiting for it."""
        if seq != self._written_seq:
            self._pending[seq] = (number, end, out, result)
            return
        p = self.progress
        pending = self._pending
        while True:
            self._out.append(out)
            self._out_bytes += len(out)
            if type(result) is _Part:
                p.add(result.counts)
                self._written_seq += result.lines
            else:
                p.count(result)  # type: ignore[arg-type]
                self._written_seq += 1
            if not pending:
                break
            nxt = pending.pop(self._written_seq, None)
            if nxt is None:
                break
            number, end, out, result = nxt
        p.line, p.offset = number, end
        self._advanced.set()
        if self._out_bytes >= FLUSH_BYTES:
            self.output_ready.set()


def _split(data: bytes, lines: int) -> list[bytes]:
    """``data`` (whole lines) cut into parts of at most ``lines`` lines."""
    if data.count(b"\n") <= lines:
        return [data]
    parts = []
    start = 0
    find = data.find
    while start < len(data):
        end = start
        for _ in range(lines):
            end = find(b"\n", end) + 1
            if not end:
                end = len(data)
                break
        parts.append(data[start:end])
        start = end
    return parts


async def _one_block(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def answer_block(
    backend: ModelBackend,
    block: Block,
    concurrency: int,
    *,
    halt: asyncio.Event | None = None,
    media: MediaReader | None = None,
) -> BlockAnswer:
    """The records of ``block`` answered with ``backend``, at most ``concurrency`` at a time,
    exactly as a pass answers them (the same :class:`FilePass`, over this one block): the
    :data:`~batchrock.backends.base.BlockAnswerer` a worker process runs for the engine,
    and the engine for the blocks it keeps. ``halt`` ends it early with the answered prefix.
    """
    fp = FilePass(
        blocks=_one_block(block.data),
        backend=backend,
        model_id=block.model_id,
        invocation_type=block.invocation_type,
        job_id=block.job_id,
        file_index=block.file_index,
        start_offset=block.start_offset,
        start_line=block.start_line,
        concurrency=concurrency,
        halt=halt if halt is not None else asyncio.Event(),
        media=media,
    )
    await fp.run()
    out, _, done = fp.take_output()
    line, offset = done.line, done.offset
    if fp.finished:  # blank lines after its last record end it too
        line, offset = block.start_line + block.data.count(b"\n"), block.start_offset
        offset += len(block.data)
    return BlockAnswer(b"".join(out), line, offset, done.add_to(_NONE))
