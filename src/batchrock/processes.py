"""Several processes serving the API of one ``batchrock serve`` (setting ``api_processes``).

One event loop is the limit of an API under load: a closed loop of clients waits behind each
other on it (docs/benchmarks.md, "API under load"). So ``serve`` binds its listening socket
once, then forks API-only processes that inherit it and each accept from it with uvicorn of
their own; the kernel hands every new connection to one of them. The parent process keeps
everything else that must run once: the engine, the event outbox, the expiry sweep.

Forking happens before any event loop or thread exists (the parent's loop starts after), so a
child starts from a plain copy of the start-up state: settings, the credentials directory,
the model catalogue. Each child opens the store itself (SQLite in WAL mode and PostgreSQL are
both made for several processes; see the store modules).

The processes stay tied together:

* a child dies with its parent: ``PR_SET_PDEATHSIG`` (Linux) sends it SIGTERM when the parent
  goes, even by SIGKILL, and every child also watches a pipe whose only writer is the parent,
  so it sees end-of-file then on any system;
* SIGTERM or SIGINT to the parent is passed on to every child, and the parent waits for them
  (up to :data:`STOP_SECONDS`, then SIGKILL) before it exits;
* a child that ends on its own (a crash, the OOM killer) is one error line and takes the whole
  server down (exit status 1), for its supervisor to restart, rather than leaving it serving
  with fewer processes than configured and nobody noticing;
* a job created or stopped in a child wakes the parent's engine at once (one byte on a pipe),
  as it does in the parent itself, rather than at its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from batchrock.settings import Settings

log = logging.getLogger("batchrock")

#: How long the parent waits for its children to finish their requests once it stops.
STOP_SECONDS = 15.0
#: How often the parent checks that every child still runs.
WATCH_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1
#: The data dir's folder of what the API processes of a ``serve`` share (metrics files, the
#: shared-state file), one sub-folder per ``serve``, named by its process id.
RUN_FOLDER = "serve-processes"
#: In that folder: the file of the rate limit, failed sign-ins and wrong signatures
#: (shared_state.py; its generation file beside it).
SHARED_STATE = "shared.sqlite3"


def run_folder(data_dir: Path) -> Path:
    """A new, empty folder for what this ``serve``'s processes share; those of ``serve``
    processes that are gone (killed before they could remove theirs) are removed."""
    root = data_dir / RUN_FOLDER
    root.mkdir(mode=0o700, exist_ok=True)
    for old in root.iterdir():
        if old.name.isdigit() and not _alive(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    folder = root / str(os.getpid())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700)
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not ours to remove
        return True
    return True


def process_count(settings: Settings) -> int:
    """How many processes serve the API: ``api_processes``, or one per CPU this process may
    run on when it is 0."""
    if settings.api_processes > 0:
        return settings.api_processes
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # pragma: no cover - systems without affinity


@dataclass
class Child:
    """What a forked API process knows of its place: its number (1 on; the parent is 0), the
    pipe that reaches end-of-file when the parent is gone, and the engine's wake pipe."""

    index: int
    count: int
    parent_gone_fd: int
    wake_fd: int
    folder: Path

    def wake_engine(self) -> None:
        """Tell the parent's engine that a job was created or stopped here. A full pipe
        already holds a wake-up the parent has not read yet: nothing is lost."""
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_fd, b"\0")

    @property
    def shared_state(self) -> Path:
        return self.folder / SHARED_STATE

    @contextlib.contextmanager
    def watching_parent(self, stop: Callable[[], None]) -> Iterator[None]:
        """Call ``stop`` once the parent is gone, for the duration of the block (in the
        child's event loop)."""
        loop = asyncio.get_running_loop()
        loop.add_reader(self.parent_gone_fd, _once(loop, self.parent_gone_fd, stop))
        try:
            yield
        finally:
            loop.remove_reader(self.parent_gone_fd)


def _once(loop: asyncio.AbstractEventLoop, fd: int, stop: Callable[[], None]) -> Callable[[], None]:
    def gone() -> None:
        loop.remove_reader(fd)
        log.warning("the serve process that started this one is gone: stopping")
        stop()

    return gone


@dataclass
class Parent:
    """The parent's view of its children: their process ids, the read end of the wake pipe,
    and the write end of the pipe they watch (held open, never written)."""

    count: int
    pids: list[int]
    wake_fd: int
    keep_alive_fd: int
    folder: Path
    stopping: bool = False
    #: Set when a child ended on its own: the server then exits with status 1.
    failed: bool = False
    _reaped: dict[int, int] = field(default_factory=dict)

    @property
    def shared_state(self) -> Path:
        return self.folder / SHARED_STATE

    def signal_children(self, sig: int = signal.SIGTERM) -> None:
        """Pass ``sig`` on to every child still running (the parent is stopping)."""
        self.stopping = True
        for pid in self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def running(self) -> list[int]:
        return [pid for pid in self.pids if pid not in self._reaped]

    def reap(self) -> list[tuple[int, int]]:
        """Collect the children that have ended since the last call: (pid, wait status)."""
        ended = []
        for pid in self.running():
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # pragma: no cover - reaped elsewhere
                done, status = pid, 0
            if done:
                self._reaped[pid] = status
                ended.append((pid, status))
        return ended

    @contextlib.asynccontextmanager
    async def supervising(
        self, wake: Callable[[], None], fail: Callable[[], None], tick: Callable[[], None]
    ) -> AsyncIterator[None]:
        """For the duration of the block: wake the engine (``wake``) when a child says so,
        call ``fail`` when a child ends on its own, and ``tick`` every :data:`WATCH_SECONDS`.
        On leaving it, stop the children and wait for them."""
        loop = asyncio.get_running_loop()

        def woken() -> None:
            try:
                os.read(self.wake_fd, 4096)
            except BlockingIOError:  # pragma: no cover - another reader took it
                return
            wake()

        os.set_blocking(self.wake_fd, False)
        loop.add_reader(self.wake_fd, woken)
        watch = asyncio.create_task(self._watch(fail, tick), name="api-processes")
        try:
            yield
        finally:
            loop.remove_reader(self.wake_fd)
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            self.signal_children()
            deadline = loop.time() + STOP_SECONDS
            while self.running() and loop.time() < deadline:
                self.reap()
                if self.running():
                    await asyncio.sleep(0.02)
            self.stop_now()

    async def _watch(self, fail: Callable[[], None], tick: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            tick()
            for pid, status in self.reap():
                if self.stopping:
                    continue
                log.error(
                    "API process %d ended on its own (%s): stopping the server",
                    pid,
                    _describe(status),
                )
                self.failed = True
                fail()

    def stop_now(self) -> None:
        """Make sure no child outlives the parent: SIGTERM, a moment to finish, SIGKILL. Used
        after the parent's event loop is over (a failed start-up included), synchronously."""
        if not self.running():
            return
        self.signal_children()
        deadline = time.monotonic() + STOP_SECONDS
        while self.running() and time.monotonic() < deadline:
            self.reap()
            if self.running():
                time.sleep(0.02)
        for pid in self.running():
            log.error("API process %d did not stop within %.0f s: killed", pid, STOP_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self._reaped[pid] = -signal.SIGKILL


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def fork_children(count: int, folder: Path, run_child: Callable[[Child], int]) -> Parent:
    """Fork ``count - 1`` API processes, each running ``run_child`` and exiting with what it
    returns; the caller (the parent) serves too. ``folder`` (:func:`run_folder`) holds what
    they share. Call before any event loop or thread."""
    if threading.active_count() > 1:  # a thread's locks would be copied held, and never let go
        log.warning("forking API processes with %d threads running", threading.active_count())
    parent = os.getpid()
    gone_r, gone_w = os.pipe()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    pids: list[int] = []
    sys.stdout.flush()
    sys.stderr.flush()
    for index in range(1, count):
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.close(gone_w)
                os.close(wake_r)
                _die_with(parent)
                code = run_child(Child(index, count, gone_r, wake_w, folder))
            except BaseException:
                log.exception("API process %d failed", index)
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    os.close(gone_r)
    os.close(wake_w)
    return Parent(count, pids, wake_r, gone_w, folder)


def _die_with(parent: int) -> None:
    """Have the kernel send this process SIGTERM when its parent ends (Linux); the parent
    pipe covers other systems. A parent already gone before this ran means: stop now."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("cannot ask to be stopped with the parent: errno %d", ctypes.get_errno())
    if os.getppid() != parent:
        os._exit(0)
