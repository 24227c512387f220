"""WAL checkpoints of the job database, on a thread of their own.

Why: in WAL mode SQLite checkpoints automatically (every 1000 WAL pages) inside whichever
commit crosses the threshold, on the committing thread; with ``synchronous = NORMAL`` the
checkpoint is where the fsyncs happen, so on a slow disk the Create whose commit triggered one
would hold the event loop for as long as the disk takes. The store's connection therefore runs
with ``wal_autocheckpoint = 0`` and this checkpointer, with a connection of its own, copies the
WAL back into the database every :data:`INTERVAL` seconds (``PASSIVE``: it takes no lock that
writers or readers wait on; when nothing was written it reads the WAL index and returns).

It never truncates the WAL itself: ``TRUNCATE`` (and ``RESTART``) take the write lock and
wait for readers, and a Create that met that lock waited out the store's busy backoff (Create
p99 178-196 ms against 101-121 ms under benchmarks/api_load.py, docs/benchmarks.md). The file
is bounded instead by ``PRAGMA journal_size_limit`` (:data:`WAL_LIMIT_BYTES`) on the store's
connection: SQLite starts the WAL over when a writer begins after a checkpoint that copied
all of it, and that writer's commit cuts the file back to the limit. Under a steady stream of
writes a passive pass is rarely such a checkpoint: it copies what the WAL held when it began,
and writers append meanwhile (under the benchmark, 2-3 restarts in 54 passes and a WAL of
218-312 MiB after 10 s). So once the file is past :data:`WAL_BOUND_BYTES` a passive pass is
followed by a ``FULL`` one, which holds writers (off the loop, store/sqlite.py
``_typed_errors``) only while it copies what was appended during the passive pass and syncs
the database file; it waits at most :data:`_BUSY_MS` for the write lock and for readers, and
the next writer then starts the WAL over and cuts it back.

Every process that opens the file (``api_processes``, workers) runs one; checkpoints from
several connections are serialised by SQLite (one holds the checkpoint lock, the others return
busy), so that is safe.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("batchrock.store")

#: Seconds between checkpoints: the WAL gathers a fifth of a second of writes between passes
#: (a Create writes some 15 pages: 1500 of the contract suite's jobs, 23,000 WAL frames).
INTERVAL = 0.2
#: ``journal_size_limit``: the size the WAL file is cut back to when a writer starts it over
#: (SQLite's automatic checkpoint threshold, 1000 pages of 4 KiB).
WAL_LIMIT_BYTES = 4 * 1024 * 1024
#: WAL file size past which a passive pass is followed by a ``FULL`` one. Each costs writers a
#: wait (a sync of the database file), so not at every pass past the limit: under
#: benchmarks/api_load.py the WAL grows some 30 MiB a second.
WAL_BOUND_BYTES = 16 * 1024 * 1024
#: How long a ``FULL`` pass waits for the write lock and for readers.
_BUSY_MS = 20


@dataclass(frozen=True, slots=True)
class Pass:
    """One checkpoint's answer (``PRAGMA wal_checkpoint``): ``busy`` when it could not copy
    everything (another checkpoint, a reader or a writer in the way), the WAL's frames and how
    many of them are now in the database."""

    mode: str
    busy: bool
    wal_frames: int
    checkpointed: int


@dataclass(frozen=True, slots=True)
class Checkpoints:
    """How often the checkpointer runs, the store connection's ``journal_size_limit`` and the
    WAL size past which a pass ends with a ``FULL`` checkpoint."""

    interval: float = INTERVAL
    wal_limit_bytes: int = WAL_LIMIT_BYTES
    wal_bound_bytes: int = WAL_BOUND_BYTES


DEFAULT = Checkpoints()


class WalCheckpointer:
    """Checkpoints ``path``'s WAL on a daemon thread until :meth:`stop`."""

    def __init__(self, path: Path, policy: Checkpoints = DEFAULT) -> None:
        self.path = path
        self.interval = policy.interval
        self.wal_bound_bytes = policy.wal_bound_bytes
        self._wal = Path(f"{path}-wal")
        # Opened here (before serving), so a file that cannot be opened fails the store's open.
        self._conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=_BUSY_MS / 1000
        )
        self._stopping = threading.Event()
        self._failures = 0
        #: The latest pass's answer (None before the first); tests and logs read it.
        self.last: Pass | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"wal-checkpoint {path.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop and join the thread (blocking: call it off the loop). Its connection closes in
        the thread; when it is the process's last one on the file, SQLite's checkpoint at
        close runs there too."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        else:  # never started
            self._conn.close()

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self.interval):
                self.checkpoint()
        except BaseException:  # a defect: checkpoints stop, so say so loudly
            log.exception("the WAL checkpointer of %s stopped", self.path)
            raise
        finally:
            try:
                self._conn.close()
            except sqlite3.Error:
                log.exception("closing the WAL checkpointer's connection to %s failed", self.path)

    def checkpoint(self) -> Pass | None:
        """One pass (``PASSIVE``, then ``FULL`` when the WAL is past its bound); a failure is
        logged (the first of a run of them with its traceback, the others at debug level until
        one succeeds again) and the next pass tries again."""
        try:
            answer = self._checkpoint("PASSIVE")
            if self._wal_bytes() > self.wal_bound_bytes:
                answer = self._checkpoint("FULL")
        except (sqlite3.Error, OSError):
            self._failures += 1
            if self._failures == 1:
                log.exception("checkpointing the WAL of %s failed; trying again", self.path)
            else:
                log.debug("checkpointing the WAL of %s failed again", self.path, exc_info=True)
            return None
        if self._failures:
            log.info(
                "checkpointing the WAL of %s works again after %d failures",
                self.path,
                self._failures,
            )
            self._failures = 0
        self.last = answer
        return answer

    def _checkpoint(self, mode: str) -> Pass:
        busy, frames, done = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return Pass(mode, bool(busy), frames, done)

    def _wal_bytes(self) -> int:
        try:
            return self._wal.stat().st_size
        except FileNotFoundError:
            return 0
