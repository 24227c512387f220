"""Worker processes that answer the records of remote routes for the engine.

One engine process runs its jobs on one event loop, so a job's CPU work (translating the
family's body, the HTTP exchange with the model server, parsing and rendering the answer) is
capped by one core. With ``engine_processes`` above 1 the leaves of the remote routes (the
``openai`` and ``bedrock`` backends, one per replica) are replaced by :class:`PooledBackend`
proxies, and that work runs in child processes; docs/engine-processes.md tells why it is
split this way. A route with one model server is further a :class:`PooledRoute`: its jobs'
records go to the children a block of whole lines at a time, each answered there entirely
(the line's parse, the retry layer, the output line) by the engine's own block answerer, so
the engine's part of a record is its share of the block's bytes. Routes with several model
servers (``base_urls``) go record by record, as follows. What stays in the engine process:

- the job: input, output, spools, checkpoints (so crash safety and exactly-once output are
  what they were: the engine writes a record's line only when its answer has come back);
- everything above the leaf: retries and their throttling counts, per-record deadlines,
  ``max_concurrency`` (:class:`~batchrock.backends.resilience.ResilientBackend`), replica
  health (:class:`~batchrock.backends.replicas.ReplicaSet`), ``base_model``, metrics. Those
  limits therefore hold across every child exactly as they did in one process.

The parent sends records to the least busy child in batches (one frame per child per turn of
the event loop: a MessagePack list of requests and of cancellations), each child answers in
batches too. A cancelled call (its record's deadline, a halted job) is cancelled in the
child, so a route's concurrency bound holds there as well.

Whether a record goes to a child at all is decided record by record (:class:`Offload`): only
while the engine's event loop is busy enough that it limits the job and the process's CPUs
have idle time for the children, and then only the share of the records it cannot answer
itself. Otherwise the record is answered with the leaf built in this process: a crossing to a
child costs CPU in both processes and the child's turns of its own loop, which a
latency-bound job, or one on cores the model server or other work keeps busy, pays in time
and gains nothing for. Children start with the first record :class:`Offload` would send to
one; until one of them has said it is ready, such records are answered here too, so none
waits for a child's start.

Children live exactly as long as their socket to the engine: they ignore SIGINT and SIGTERM
(the engine drains its jobs first, then closes the sockets) and exit when the socket reaches
its end, which the kernel brings about however the engine ends, SIGKILL included. A child
that dies is replaced, and the records it was answering are sent to another child (at most
:data:`MAX_SENDS` times each, then they get a retryable 500). Children that cannot start at
all leave every record to this process (with ``engine_offload_load`` 0, every record of their
routes gets a 500 saying why).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import msgspec
from orjson import Fragment

from batchrock.backends.base import (
    Block,
    BlockAnswer,
    BlockAnswerer,
    ModelBackend,
    ModelRequest,
    ModelResult,
    RecordError,
)
from batchrock.backends.resilience import Slots
from batchrock.jobs import Counters
from batchrock.metrics import process_metrics
from batchrock.settings import Settings

if TYPE_CHECKING:
    from batchrock.backends.routing import Route

log = logging.getLogger("batchrock.backends.pool")

#: Backend types whose records go to the worker processes: those whose cost is the HTTP
#: exchange and the translation around it. The built-in model answers in microseconds in
#: the engine's own loop; a local model holds its weights (and GPU) once, in the engine.
POOLED_TYPES = frozenset({"openai", "bedrock"})
#: How a worker process learns the ``event_loop`` setting (pool_child.main).
LOOP_ENV = "BATCHROCK_EVENT_LOOP"
#: How many times one record is sent to a child before the children's deaths fail it.
MAX_SENDS = 3
#: A child that dies this soon after starting without answering anything counts as a
#: failed start; this many failed starts in a row and the pool gives up (the log says why).
FAILED_START_S = 5.0
MAX_FAILED_STARTS = 3
#: How long a closing pool waits for its children to exit before killing them.
CLOSE_WAIT_S = 5.0

#: How often :class:`Offload` looks at the event loop's CPU time, in seconds: long enough that
#: a job's start (its connections, its first reads) is not taken for a busy loop.
OFFLOAD_WINDOW_S = 0.5
#: How much the share of records sent to the children moves after each look.
OFFLOAD_STEP = 0.25
#: The share falls only once the loop is this far below ``engine_offload_load`` (the loop
#: sheds the children's part of a record's cost when records go to them: without a band the
#: share would swing at every look).
OFFLOAD_BAND = 0.2
#: The share rises only while the CPUs this process may use had at least this many cores'
#: worth of idle time over the look: a loop that is busy on a machine whose other cores are
#: busy too (the model server beside it, other work) would hand its records to children that
#: find no core to run on, and each record would pay the crossing for nothing. A record that
#: crosses costs the engine about half of what it costs answered here and the child about as
#: much again, so half a core is what a step of OFFLOAD_STEP at ~10,000 records/s needs.
OFFLOAD_FREE_CORES = 0.5

#: Frames: a 4-byte big-endian length, then MessagePack (the first frame, the child's
#: configuration, is a pickle). Parent to child: ``[requests, cancelled ids, blocks,
#: cancelled block ids]``, each request ``[id, leaf, model_id, invocation_type, body,
#: record_id]``, each block ``[id, route, answerer, model_id, invocation_type, job_id,
#: file_index, start_line, start_offset, concurrency, data]``. Child to parent: ``[]`` once
#: (ready), then ``[answers, block answers, model requests]``: each answer ``[id, output |
#: None, code, message, retryable, input_tokens, output_tokens, info]``, each block answer
#: ``[id, output, line, offset, processed, success, error, input_tokens, output_tokens,
#: throttled]`` (``[id, None]``: answer it in the engine), and the attempts the child's
#: retry layers made as ``[route, outcome, [seconds, ...]]`` for the engine's metrics.
FRAME = struct.Struct(">I")
encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder().decode


def frame(data: bytes) -> bytes:
    return FRAME.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next frame's payload; raises ``asyncio.IncompleteReadError`` at the end."""
    head = await reader.readexactly(FRAME.size)
    return await reader.readexactly(FRAME.unpack(head)[0])


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's or taskset's limit),
    what Python 3.13's ``os.process_cpu_count`` gives."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def idle_cpu_seconds() -> float | None:
    """The idle time (idle and iowait) so far of the CPUs this process may use, in seconds,
    from ``/proc/stat``; ``None`` where it cannot be read (not Linux)."""
    try:
        cpus = {f"cpu{n}" for n in os.sched_getaffinity(0)}
        with open("/proc/stat", "rb") as stat:
            text = stat.read()
    except (AttributeError, OSError):
        return None
    ticks = 0
    for line in text.split(b"\n"):
        fields = line.split()
        if len(fields) > 5 and fields[0].decode() in cpus:
            ticks += int(fields[4]) + int(fields[5])
    return ticks / _CLOCK_TICKS


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def worker_count(settings: Settings) -> int:
    """How many worker processes ``settings`` ask for: 0 for none (answer in the engine)."""
    wanted = settings.engine_processes or available_cpus()
    return wanted if wanted > 1 else 0


class Offload:
    """Which records go to the children: none while the engine's event loop uses less than
    ``load`` of one core, a share growing by :data:`OFFLOAD_STEP` at each look
    (:data:`OFFLOAD_WINDOW_S`) while it uses more and the process's CPUs had
    :data:`OFFLOAD_FREE_CORES` idle, falling again once it uses less than
    ``load - OFFLOAD_BAND``. ``load`` 0: every record goes to the children.

    What is measured is the CPU time of the thread running the event loop (the records
    answered here, the API, the jobs' other work), not the wall time: a loop that waits on
    the model server has time to spare, and one that the machine's other processes keep off
    its core uses less than ``load`` too, where children would find no core either. A loop
    that does use its core while the machine's other cores are busy as well (a small machine
    shared with the model server) is no case for children either: they would take their CPU
    from the loop and the model server, hence the idle time also looked at. ``cpu``,
    ``idle`` and ``clock`` are seams for tests (the thread's CPU seconds, the idle seconds of
    the process's CPUs or ``None`` where unknown, monotonic seconds); looks happen only when
    a record asks, so nothing runs in between.
    """

    def __init__(
        self,
        load: float,
        *,
        cpu: Callable[[], float] = time.thread_time,
        idle: Callable[[], float | None] = idle_cpu_seconds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.load = load
        #: The share of records sent to the children now.
        self.share = 0.0 if load else 1.0
        self._cpu, self._idle, self._clock = cpu, idle, clock
        #: When the current look began and the loop's CPU time and the idle time then; set by
        #: the first record (in the loop's own thread: the pool may be built in another).
        self._at: float | None = None
        self._cpu_at = 0.0
        self._idle_at: float | None = None
        #: Records owed to the children so far (the share, summed record by record).
        self._owed = 0.0

    def to_children(self) -> bool:
        """Whether the next record goes to a child."""
        if not self.load:
            return True
        now = self._clock()
        if self._at is None:
            self._at, self._cpu_at, self._idle_at = now, self._cpu(), self._idle()
            return False
        span = now - self._at
        if span >= OFFLOAD_WINDOW_S:
            cpu, idle = self._cpu(), self._idle()
            used = (cpu - self._cpu_at) / span
            free = (
                (idle - self._idle_at) / span
                if idle is not None and self._idle_at is not None
                else OFFLOAD_FREE_CORES
            )
            self._at, self._cpu_at, self._idle_at = now, cpu, idle
            if used >= self.load:
                if free >= OFFLOAD_FREE_CORES:
                    self.share = min(1.0, self.share + OFFLOAD_STEP)
            elif used < self.load - OFFLOAD_BAND:
                self.share = max(0.0, self.share - OFFLOAD_STEP)
                if not self.share:
                    self._owed = 0.0
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "engine loop at %.2f of a core, %.2f cores idle: %.0f%% of the records "
                    "to the worker processes",
                    used,
                    free,
                    self.share * 100,
                )
        if not self.share:
            return False
        self._owed += self.share
        if self._owed >= 1.0:
            self._owed -= 1.0
            return True
        return False


@dataclass(slots=True, eq=False)
class _Call:
    """One record on its way to a child and back."""

    id: int
    leaf: int
    request: ModelRequest
    future: asyncio.Future[ModelResult]
    sends: int = 0
    child: _Child | None = None


@dataclass(slots=True, eq=False)
class _BlockCall:
    """One block of a job's lines on its way to a child and back."""

    id: int
    #: The frame's item, sent again as it is when its child dies.
    item: tuple[Any, ...]
    #: Its records (lines), the child's load while it answers them.
    records: int
    future: asyncio.Future[BlockAnswer | None]
    sends: int = 0
    child: _Child | None = None


@dataclass(slots=True, eq=False)
class _Child:
    number: int
    process: subprocess.Popen[bytes]
    writer: asyncio.StreamWriter
    started: float
    inflight: dict[int, _Call] = field(default_factory=dict)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    blocks: dict[int, _BlockCall] = field(default_factory=dict)
    #: The records of its blocks in flight.
    block_records: int = 0
    block_outbox: list[tuple[Any, ...]] = field(default_factory=list)
    blocks_cancelled: list[int] = field(default_factory=list)
    scheduled: bool = False
    #: Whether it has sent its first frame (it has read its configuration and is waiting for
    #: records): until then a record sent to it would wait for its start.
    ready: bool = False
    answered: int = 0
    dead: bool = False
    reader_task: asyncio.Task[None] | None = None


class PoolBroken(Exception):
    """The worker processes cannot be started (the log says why)."""


class WorkerPool:
    """The worker processes of one engine and the leaves they answer for (see the module
    docstring). Children are started by the first record, not before: a process that never
    runs a job on a remote route starts none."""

    def __init__(
        self,
        settings: Settings,
        size: int,
        command: Sequence[str] | None = None,
        *,
        offload: Offload | None = None,
    ) -> None:
        self.settings = settings
        self.size = size
        #: Which records go to the children rather than to the leaves built here.
        self.offload = offload or Offload(settings.engine_offload_load)
        #: How a child is started, its socket's descriptor appended (a seam for tests).
        self._command = list(command or [sys.executable, "-m", "batchrock.backends.pool_child"])
        #: The route (with its replica's ``base_url``) of each leaf, by leaf number.
        self._leaves: list[Route] = []
        #: The routes whose blocks the children answer whole (PooledRoute), by number.
        self._block_routes: list[Route] = []
        self._metrics = process_metrics()
        self._children: list[_Child] = []
        self._waiting: list[_Call] = []
        self._ids = itertools.count()
        self._numbers = itertools.count(1)
        self._starting: set[asyncio.Task[None]] = set()
        self._failed_starts = 0
        self._broken: str | None = None
        self._closing = False
        self._started = False
        #: The children that have said they are ready, in start order (kept by _answered,
        #: _lost and aclose: the per-record choice of a child reads only this).
        self._ready_children: list[_Child] = []
        #: The loop the pool is used from (set by the first record; built it may be in
        #: another thread).
        self._event_loop: asyncio.AbstractEventLoop | None = None
        #: Set once a child is ready (or the pool broke or closes): blocks wait on it when
        #: every record goes to the children.
        self._ready_event: asyncio.Event | None = None

    def backend(self, route: Route, leaf: ModelBackend) -> PooledBackend:
        """The proxy for ``leaf`` (built from ``route`` in this process to check its
        options; the children build their own from the same route)."""
        self._leaves.append(route)
        return PooledBackend(self, len(self._leaves) - 1, leaf)

    def route(
        self, leaf: PooledBackend, backend: ModelBackend, local: ModelBackend, slots: Slots | None
    ) -> PooledRoute:
        """``backend`` (the route's stack over ``leaf``, its one :class:`PooledBackend`) as a
        :class:`PooledRoute`, whose jobs' blocks the children answer whole; the blocks kept
        here ``local`` answers (the same stack over the leaf built here), and ``slots`` are
        the route's ``max_concurrency``. The children build the route as the leaf's (a
        ``base_urls`` of one URL is its ``base_url``)."""
        self._block_routes.append(self._leaves[leaf.leaf])
        return PooledRoute(backend, local, self, len(self._block_routes) - 1, slots)

    # --- calls ------------------------------------------------------------------------

    def answers_here(self) -> bool:
        """Whether the next record is answered by its leaf in this process.

        With ``engine_offload_load`` above 0 the engine answers a record itself unless
        :class:`Offload` sends it to the children and one of them is ready: a record never
        waits for a child's start (a Python process importing the backends, a second or more
        on a busy machine) when the engine could answer it now; the first record that
        :class:`Offload` sends starts the children, and records keep being answered here
        until one has said it is ready. A broken pool leaves every record to the engine.
        With 0 every record goes to the children (a closing or broken pool answers it with
        its error)."""
        if self._closing:
            return False
        offload = self.offload
        if not offload.load:
            return False
        if self._broken is not None or not offload.to_children():
            return True
        if self._ready:
            return False
        self._start()
        return True

    @property
    def _ready(self) -> bool:
        return bool(self._ready_children)

    def _start(self) -> None:
        if not self._started:
            self._started = True
            for _ in range(self.size):
                self._start_child()

    async def invoke(self, leaf: int, request: ModelRequest) -> ModelResult:
        # Once per record in the engine: the common case (a started pool with a ready child)
        # takes no call beyond the future's; _dispatch handles the others.
        if self._broken is not None:
            return ModelResult(error=RecordError(500, self._broken))
        if self._closing:
            return ModelResult(error=_CLOSED)
        if not self._started:
            self._start()
        call = _Call(next(self._ids), leaf, request, self._loop().create_future())
        child = self._least_busy()
        if child is None:
            self._dispatch(call)
        else:
            call.child = child
            call.sends = 1
            child.inflight[call.id] = call
            child.outbox.append(
                (
                    call.id,
                    leaf,
                    request.model_id,
                    request.invocation_type,
                    request.body,
                    request.record_id,
                )
            )
            if not child.scheduled:
                self._schedule(child)
        try:
            return await call.future
        except asyncio.CancelledError:
            self._cancel(call)
            raise

    async def answer_block(
        self, route: int, block: Block, concurrency: int, answerer: BlockAnswerer
    ) -> BlockAnswer | None:
        """``block`` answered whole by the least busy ready child with ``answerer``, at most
        ``concurrency`` of its records at a time; ``None`` when it is to be answered here:
        no child is ready, the pool is closing or broken, or the children answering it kept
        dying (:data:`MAX_SENDS`)."""
        if not self._started:
            self._start()
        child = self._least_busy()
        if child is None and not self.offload.load and self._broken is None:
            # Every record to the children (engine_offload_load 0): the block waits for one
            # to be ready, as a record does.
            await self._some_ready().wait()
            child = self._least_busy()
        if child is None or self._broken is not None or self._closing:
            return None
        item = (
            next(self._ids),
            route,
            f"{answerer.__module__}:{answerer.__qualname__}",
            block.model_id,
            block.invocation_type,
            block.job_id,
            block.file_index,
            block.start_line,
            block.start_offset,
            concurrency,
            block.data,
        )
        call = _BlockCall(item[0], item, block.data.count(b"\n"), self._loop().create_future())
        self._send_block(call, child)
        try:
            return await call.future
        except asyncio.CancelledError:
            self._cancel_block(call)
            raise

    def _some_ready(self) -> asyncio.Event:
        """Set once a child is ready, or the pool is broken or closing."""
        if self._ready_event is None:
            self._ready_event = asyncio.Event()
            if self._ready_children or self._broken is not None or self._closing:
                self._ready_event.set()
        return self._ready_event

    def _send_block(self, call: _BlockCall, child: _Child) -> None:
        call.child = child
        call.sends += 1
        child.blocks[call.id] = call
        child.block_records += call.records
        child.block_outbox.append(call.item)
        self._schedule(child)

    def _cancel_block(self, call: _BlockCall) -> None:
        child = call.child
        if child is not None and child.blocks.pop(call.id, None) is not None:
            child.block_records -= call.records
            child.blocks_cancelled.append(call.id)
            self._schedule(child)

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._event_loop
        if loop is None:
            loop = self._event_loop = asyncio.get_running_loop()
        return loop

    def _least_busy(self) -> _Child | None:
        """The ready child with the fewest records in flight, or ``None`` when none is
        ready (then :meth:`_dispatch` decides)."""
        best: _Child | None = None
        fewest = sys.maxsize
        for child in self._ready_children:
            load = len(child.inflight) + child.block_records
            if load < fewest:
                best, fewest = child, load
        return best

    def _dispatch(self, call: _Call) -> None:
        if self._broken is not None:
            call.future.set_result(ModelResult(error=RecordError(500, self._broken)))
            return
        # Ready children first: one still starting would keep the record until it has.
        live = self._ready_children or self._children
        if not live:
            self._waiting.append(call)
            return
        child = live[0] if len(live) == 1 else min(live, key=_load)
        call.child = child
        call.sends += 1
        child.inflight[call.id] = call
        body = call.request
        child.outbox.append(
            (call.id, call.leaf, body.model_id, body.invocation_type, body.body, body.record_id)
        )
        self._schedule(child)

    def _cancel(self, call: _Call) -> None:
        child = call.child
        if child is not None and child.inflight.pop(call.id, None) is not None:
            child.cancelled.append(call.id)
            self._schedule(child)
        with contextlib.suppress(ValueError):
            self._waiting.remove(call)

    def _schedule(self, child: _Child) -> None:
        if not child.scheduled:
            child.scheduled = True
            self._loop().call_soon(self._flush, child)

    def _flush(self, child: _Child) -> None:
        """Send what waits for ``child`` as one frame (a turn of the loop's worth)."""
        child.scheduled = False
        if child.dead or not (
            child.outbox or child.cancelled or child.block_outbox or child.blocks_cancelled
        ):
            return
        requests, child.outbox = child.outbox, []
        cancelled, child.cancelled = child.cancelled, []
        blocks, child.block_outbox = child.block_outbox, []
        blocks_cancelled, child.blocks_cancelled = child.blocks_cancelled, []
        try:
            data = encode([requests, cancelled, blocks, blocks_cancelled])
        except (TypeError, OverflowError):
            requests = self._encodable(child, requests)
            data = encode([requests, cancelled, blocks, blocks_cancelled])
        child.writer.write(frame(data))

    def _encodable(self, child: _Child, requests: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The requests that MessagePack can carry; the others are answered here (their
        modelInput held a value JSON decoding cannot make, such as an integer above 2**64)."""
        kept = []
        for item in requests:
            try:
                encode(item)
            except (TypeError, OverflowError) as exc:
                call = child.inflight.pop(item[0], None)
                if call is not None and not call.future.done():
                    message = f"The record could not be sent to the model: {exc}"
                    call.future.set_result(ModelResult(error=RecordError(400, message)))
            else:
                kept.append(item)
        return kept

    def _answered(self, child: _Child, received: list[Any]) -> None:
        if not child.ready:  # its first frame (empty) says so
            child.ready = True
            if not child.dead:
                self._ready_children.append(child)
                if self._ready_event is not None:
                    self._ready_event.set()
        if not received:
            return
        answers, blocks, attempts = received
        if attempts:
            model_request = self._metrics.model_request
            for route, outcome, times in attempts:
                for seconds in times:
                    model_request(route, outcome, seconds)
        if blocks:
            self._blocks_answered(child, blocks)
        if not answers:
            return
        child.answered += len(answers)
        self._failed_starts = 0
        pop = child.inflight.pop
        for number, output, code, message, retryable, tokens_in, tokens_out, info in answers:
            call = pop(number, None)
            if call is None or call.future.done():  # cancelled meanwhile
                continue
            # Positional: ModelResult(output, error, input_tokens, output_tokens, info).
            if output is None:
                error = RecordError(code, message, retryable)
                result = ModelResult(None, error, tokens_in, tokens_out, info)
            else:
                # The output is JSON already: a Fragment is written as it is by the
                # engine's orjson.dumps, so it is neither decoded nor encoded again here.
                fragment = cast(dict[str, Any], Fragment(output))
                result = ModelResult(fragment, None, tokens_in, tokens_out, info)
            call.future.set_result(result)

    def _blocks_answered(self, child: _Child, answers: list[list[Any]]) -> None:
        self._failed_starts = 0
        for answer in answers:
            call = child.blocks.pop(answer[0], None)
            if call is None:  # cancelled meanwhile
                continue
            child.block_records -= call.records
            child.answered += call.records
            if call.future.done():
                continue
            if answer[1] is None:  # the child could not answer it (its log says why)
                call.future.set_result(None)
            else:
                _, output, line, offset, *counts = answer
                call.future.set_result(BlockAnswer(output, line, offset, Counters(0, *counts)))

    # --- children ---------------------------------------------------------------------

    def _start_child(self) -> None:
        task = asyncio.get_running_loop().create_task(self._spawn())
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _spawn(self) -> None:
        number = next(self._numbers)
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [*self._command, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                # The loop is chosen before the child reads its settings from the socket.
                env={**os.environ, LOOP_ENV: self.settings.event_loop},
            )
        except OSError as exc:
            ours.close()
            log.warning("cannot start model worker process %d: %s", number, exc)
            self._start_failed(f"cannot start a model worker process: {exc}")
            if self._broken is None and not self._closing:
                self._start_child()  # as for a child that dies: try again, up to the limit
            return
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        config = (self.settings, self._leaves, number, self._block_routes)
        writer.write(frame(pickle.dumps(config)))
        child = _Child(number, process, writer, time.monotonic())
        if self._closing:
            self._children.append(child)
            await self._stop(child)
            return
        self._children.append(child)
        child.reader_task = asyncio.get_running_loop().create_task(self._read(child, reader))
        log.info("model worker process %d started (pid %d)", number, process.pid)
        waiting, self._waiting = self._waiting, []
        for call in waiting:
            self._dispatch(call)

    async def _read(self, child: _Child, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                self._answered(child, decode(await read_frame(reader)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            log.exception("model worker process %d sent what cannot be read", child.number)
        if not self._closing:
            await self._lost(child)

    async def _lost(self, child: _Child) -> None:
        """``child`` died (or broke its stream): reap it, send its records elsewhere, and
        start another in its place."""
        child.dead = True
        self._children.remove(child)
        if child in self._ready_children:
            self._ready_children.remove(child)
        child.writer.close()
        if child.process.poll() is None:
            child.process.kill()
        code = await asyncio.to_thread(child.process.wait)
        calls = list(child.inflight.values())
        child.inflight.clear()
        blocks = list(child.blocks.values())
        child.blocks.clear()
        child.block_records = 0
        log.warning(
            "model worker process %d (pid %d) ended (exit status %s); its %d record(s) in "
            "flight are sent again",
            child.number,
            child.process.pid,
            code,
            len(calls) + sum(block.records for block in blocks),
        )
        if not child.answered and time.monotonic() - child.started < FAILED_START_S:
            self._start_failed(
                f"model worker process {child.number} ended at start (exit status {code})"
            )
        for call in calls:
            if call.future.done():
                continue
            if call.sends >= MAX_SENDS and self._broken is None:
                message = (
                    f"The model worker process answering this record ended {call.sends} "
                    "times; see the server log."
                )
                call.future.set_result(ModelResult(error=RecordError(500, message, True)))
            else:
                self._dispatch(call)
        for block in blocks:
            if block.future.done():
                continue
            other = self._least_busy()
            if other is None or block.sends >= MAX_SENDS:
                # Answered in the engine: no child is ready, or its children kept dying.
                block.future.set_result(None)
            else:
                self._send_block(block, other)
        if self._broken is None and not self._closing:
            self._start_child()

    def _start_failed(self, reason: str) -> None:
        self._failed_starts += 1
        if self._failed_starts < MAX_FAILED_STARTS:
            return
        self._broken = (
            f"The model worker processes cannot start ({reason}, {self._failed_starts} times "
            "in a row); see the server log, or set engine_processes = 1."
        )
        log.error("%s", self._broken)
        if self._ready_event is not None:
            self._ready_event.set()
        waiting, self._waiting = self._waiting, []
        for call in waiting:
            if not call.future.done():
                call.future.set_result(ModelResult(error=RecordError(500, self._broken)))

    async def _stop(self, child: _Child) -> None:
        child.dead = True
        child.writer.close()
        try:
            await asyncio.wait_for(asyncio.to_thread(child.process.wait), CLOSE_WAIT_S)
        except TimeoutError:
            log.warning("model worker process %d did not exit; killed", child.number)
            child.process.kill()
            await asyncio.to_thread(child.process.wait)

    @property
    def pids(self) -> list[int]:
        """The running children's process ids (for tests and the log)."""
        return [child.process.pid for child in self._children]

    async def aclose(self) -> None:
        """End every child (each exits when its socket closes) and fail what is left."""
        self._closing = True
        if self._ready_event is not None:
            self._ready_event.set()
        for task in list(self._starting):
            with contextlib.suppress(Exception):
                await task
        children, self._children = self._children, []
        self._ready_children = []
        for child in children:
            if child.reader_task is not None:
                child.reader_task.cancel()
        await asyncio.gather(*(self._stop(child) for child in children))
        for call in [*self._waiting, *(c for ch in children for c in ch.inflight.values())]:
            if not call.future.done():
                call.future.set_result(ModelResult(error=_CLOSED))
        for block in [b for ch in children for b in ch.blocks.values()]:
            if not block.future.done():
                block.future.set_result(None)
        self._waiting = []


#: What a record gets from a pool that is closing (the engine drained its jobs first).
_CLOSED = RecordError(500, "The engine is shutting down.", retryable=True)


def _load(child: _Child) -> int:
    return len(child.inflight)


class PooledBackend:
    """A route's leaf backend, answered by the pool's children."""

    def __init__(self, pool: WorkerPool, leaf: int, local: ModelBackend) -> None:
        self.pool = pool
        self.leaf = leaf
        #: The leaf as built in this process (from the same route): it checked the route's
        #: options at start-up, describes the backend, and answers the records the pool
        #: keeps in this process (``WorkerPool.answers_here``).
        self.local = local

    def describe(self) -> str:
        text = getattr(self.local, "describe", None)
        # The worker processes are the engine's, not the route's: `batchrock models` names
        # them once, under the routes (routes_table).
        return str(text()) if callable(text) else type(self.local).__name__

    def invoke(self, request: ModelRequest) -> Coroutine[Any, Any, ModelResult]:
        # Not a coroutine itself: it hands back the one that answers, so a record's every
        # suspension and resumption passes one level of coroutines fewer.
        pool = self.pool
        if pool.answers_here():
            return self.local.invoke(request)
        return pool.invoke(self.leaf, request)

    async def aclose(self) -> None:
        await self.local.aclose()


class PooledRoute:
    """A remote route with one model server whose jobs' records the worker processes answer a
    block at a time (:class:`~batchrock.backends.base.BlockOffload`): each block is answered
    whole in a child (the line's parse, the retry layer, the exchange with the model server,
    the output line), so the engine's part of a record is its share of the block's bytes, and
    one engine feeds as many children as the machine has cores.

    Where a block goes is decided as records are with :class:`PooledBackend`
    (:meth:`WorkerPool.answers_here`, block by block). The route's ``max_concurrency`` is
    held here: a block sent to a child takes as many of the route's slots as records it may
    answer at once, and gives them back when it is answered, so the bound holds across the
    children and this process (whose blocks take a slot per record as before). Routes with
    several model servers (``base_urls``) keep the record-by-record pool, so that replica
    health is judged in the engine from every answer.
    """

    def __init__(
        self,
        backend: ModelBackend,
        local: ModelBackend,
        pool: WorkerPool,
        index: int,
        slots: Slots | None,
    ) -> None:
        #: The route's stack with its leaf proxied to the pool, record by record.
        self.backend = backend
        #: The same stack over the leaf built here: answers the blocks kept in this process.
        self.local = local
        self.pool = pool
        self.index = index
        self.workers = pool.size
        self._slots = slots
        #: One block takes its slots at a time: two taking theirs together could each hold
        #: part of what the other waits for.
        self._taking = asyncio.Lock()

    def describe(self) -> str:
        text = getattr(self.backend, "describe", None)
        if callable(text):
            return str(text())
        inner = getattr(self.backend, "inner", self.backend)
        text = getattr(inner, "describe", None)
        return str(text()) if callable(text) else type(inner).__name__

    async def invoke(self, request: ModelRequest) -> ModelResult:
        return await self.backend.invoke(request)

    def takes_block(self) -> bool:
        return not self.pool.answers_here()

    async def answer_block(
        self, block: Block, concurrency: int, answerer: BlockAnswerer
    ) -> BlockAnswer | None:
        pool = self.pool
        slots = self._slots
        if slots is None:
            return await pool.answer_block(self.index, block, concurrency, answerer)
        concurrency = min(concurrency, max(1, slots.size // max(1, self.workers)))
        await self._take(slots, concurrency)
        try:
            return await pool.answer_block(self.index, block, concurrency, answerer)
        finally:
            for _ in range(concurrency):
                slots.release()

    async def _take(self, slots: Slots, count: int) -> None:
        async with self._taking:
            taken = 0
            try:
                while taken < count:
                    if slots.free and not slots.waiting:
                        slots.free -= 1
                    else:
                        await slots.wait()
                    taken += 1
            except BaseException:
                for _ in range(taken):
                    slots.release()
                raise

    async def aclose(self) -> None:
        await self.backend.aclose()
