"""A model worker process: answers records for its engine (process_pool.py).

    python -m batchrock.backends.pool_child FD

``FD`` is its end of a socket pair with the engine. The first frame is the configuration
(the settings, the route of every leaf, the worker's number, the routes whose blocks it
answers whole); then it answers each request frame's records concurrently, each with the
backend its route builds, and its blocks (a job's lines, each block with the engine's
answerer: the line's parse, the retry layer, the output line), and sends the answers back in
batches. It ignores SIGINT and SIGTERM and exits when the socket reaches its end: the
engine closed it, or the engine is gone (however it ended).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import pickle
import signal
import socket
import sys
from typing import Any, cast

import orjson

from batchrock import logs
from batchrock.backends.base import Block, BlockAnswerer, ModelBackend, ModelRequest
from batchrock.backends.process_pool import decode, encode, frame, read_frame

log = logging.getLogger("batchrock.backends.pool")
_dumps = orjson.dumps

#: What a child answers for a record whose output is not JSON data: what the engine writes
#: for such an output in one process (file_pass.py).
_NOT_JSON = "The model returned a response that is not JSON: {}"


class Attempts:
    """The attempts of the blocks' retry layers since the last frame, for the engine's
    metrics (the engine's process counts them, as when it answers the records itself)."""

    def __init__(self) -> None:
        self.times: dict[tuple[str, str], list[float]] = {}

    def model_request(self, route: str, outcome: str, seconds: float) -> None:
        times = self.times.get((route, outcome))
        if times is None:
            times = self.times[route, outcome] = []
        times.append(seconds)

    def take(self) -> list[list[Any]]:
        taken, self.times = self.times, {}
        return [[route, outcome, times] for (route, outcome), times in taken.items()]


class Worker:
    def __init__(
        self,
        settings: Any,
        routes: list[Any],
        writer: asyncio.StreamWriter,
        block_routes: list[Any] | None = None,
    ) -> None:
        from batchrock.backends.routing import backend_types

        self._settings = settings
        self._routes = routes
        self._block_routes = block_routes or []
        self._types = backend_types()
        self._leaves: dict[int, ModelBackend] = {}
        self._stacks: dict[int, ModelBackend] = {}
        self._answerers: dict[str, BlockAnswerer] = {}
        self._attempts = Attempts()
        self._writer = writer
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._block_tasks: dict[int, asyncio.Task[None]] = {}
        self._out: list[list[Any]] = []
        self._blocks_out: list[list[Any]] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()

    def take(self, message: list[Any]) -> None:
        requests, cancelled, blocks, blocks_cancelled = message
        tasks = self._tasks
        create = self._loop.create_task
        for number, leaf, model_id, invocation_type, body, record_id in requests:
            request = ModelRequest(model_id, invocation_type, body, record_id)
            tasks[number] = create(self._answer(number, leaf, request))
        # After the requests: a record cancelled before its frame left comes in both lists.
        for number in cancelled:
            task = tasks.pop(number, None)
            if task is not None:
                task.cancel()
        for item in blocks:
            self._block_tasks[item[0]] = create(self._answer_block(item))
        for number in blocks_cancelled:
            task = self._block_tasks.pop(number, None)
            if task is not None:
                task.cancel()

    def _stack(self, route: int) -> ModelBackend:
        from batchrock.backends.routing import worker_stack

        backend = self._stacks[route] = worker_stack(
            self._block_routes[route], self._settings, self._attempts
        )
        return backend

    def _answerer(self, name: str) -> BlockAnswerer:
        module, _, function = name.partition(":")
        answerer = self._answerers[name] = cast(
            BlockAnswerer, getattr(importlib.import_module(module), function)
        )
        return answerer

    async def _answer_block(self, item: list[Any]) -> None:
        number, route, name, model_id, invocation_type, job_id, file_index = item[:7]
        start_line, start_offset, concurrency, data = item[7:]
        answer: list[Any]
        try:
            backend = self._stacks.get(route) or self._stack(route)
            answerer = self._answerers.get(name) or self._answerer(name)
            block = Block(
                model_id, invocation_type, job_id, file_index, start_line, start_offset, data
            )
            done = await answerer(backend, block, concurrency)
        except Exception:  # a bug: the engine answers the block itself
            log.exception("model worker process could not answer a block of job %s", job_id)
            answer = [number, None]
        else:
            c = done.counts
            answer = [number, done.output, done.line, done.offset, c.processed, c.success]
            answer += (c.error, c.input_tokens, c.output_tokens, c.throttled)
        self._block_tasks.pop(number, None)
        self._blocks_out.append(answer)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _leaf(self, leaf: int) -> ModelBackend:
        route = self._routes[leaf]
        backend = self._leaves[leaf] = self._types[route.backend](route, self._settings)
        return backend

    async def _answer(self, number: int, leaf: int, request: ModelRequest) -> None:
        item: list[Any]
        try:
            backend = self._leaves.get(leaf)
            if backend is None:
                backend = self._leaf(leaf)
            result = await backend.invoke(request)
        except Exception as exc:  # as ResilientBackend treats a backend that raises
            log.exception("model backend raised on record %s", request.record_id)
            message = f"The model backend failed: {type(exc).__name__}: {exc}"
            item = [number, None, 500, message, True, 0, 0, {}]
        else:
            error = result.error
            if error is None:
                try:
                    output = _dumps(result.output)
                except orjson.JSONEncodeError as exc:
                    item = [number, None, 500, _NOT_JSON.format(exc), False, 0, 0, {}]
                else:
                    tokens_in, tokens_out = result.input_tokens, result.output_tokens
                    item = [number, output, 0, "", False, tokens_in, tokens_out, result.info]
            else:
                item = [number, None, error.code, error.message, error.retryable]
                item += (result.input_tokens, result.output_tokens, result.info)
        self._tasks.pop(number, None)
        self._out.append(item)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        out, self._out = self._out, []
        blocks, self._blocks_out = self._blocks_out, []
        attempts = self._attempts.take()
        try:
            data = encode([out, blocks, attempts])
        except (TypeError, OverflowError):
            data = encode([[_checked(item) for item in out], blocks, attempts])
        self._writer.write(frame(data))


def _checked(item: list[Any]) -> list[Any]:
    try:
        encode(item)
    except (TypeError, OverflowError) as exc:
        return [item[0], None, 500, _NOT_JSON.format(exc), False, 0, 0, {}]
    return item


async def serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        settings, routes, number, block_routes = pickle.loads(await read_frame(reader))
    except asyncio.IncompleteReadError:
        return
    logs.configure(settings.log_level, settings.log_format)
    worker = Worker(settings, routes, writer, block_routes)
    # An empty frame: ready (configured, the backends' modules imported). Until it comes the
    # engine answers the records it would send here itself (process_pool.answers_here).
    writer.write(frame(encode([])))
    try:
        while True:
            worker.take(decode(await read_frame(reader)))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the engine closed the socket, or is gone
    log.debug("model worker process %d: the engine closed its socket", number)


def main() -> None:
    # The engine decides when its workers end (it drains its jobs on SIGTERM first); a
    # Ctrl-C or a service manager's SIGTERM to the whole group must not end them early.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    from batchrock.admin import loop_factory
    from batchrock.backends.process_pool import LOOP_ENV

    # The engine's event_loop setting (uvloop by default): the HTTP exchanges are here.
    with asyncio.Runner(loop_factory=loop_factory(os.environ.get(LOOP_ENV, "asyncio"))) as run:
        run.run(serve(sock))
    # Nothing to finish: answers not sent have no one to go to. Leave without waiting for
    # the backends' connections to close.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
