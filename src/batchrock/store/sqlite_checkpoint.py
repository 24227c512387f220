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

The start over itself costs a sync: the first commit into a restarted WAL writes the WAL's new
header and ``fdatasync``-s it (SQLite does so unless ``synchronous = OFF``, so that no frame
written after it can reach the disk before it). Left to the loop's next commit, that is an
``fdatasync`` on the event loop, 12-16 times in 10 s under benchmarks/api_load.py. So a pass
that copied the whole WAL (not busy, every frame checkpointed, none appended since) ends with
a write of the checkpointer's own (:meth:`WalCheckpointer._restart`: the schema's
``user_version`` rewritten unchanged, one page): SQLite starts the WAL over in that commit,
on this thread, syncs the new header here and cuts the file back to the limit (this
connection has the same ``journal_size_limit``); the loop's next commit appends to a WAL
already started. It is a race: a loop writer that begins between the pass and that write
starts the WAL over itself, on the loop, as before (0-1 times in 10 s under the benchmark,
docs/benchmarks.md). A pass that finds the WAL holding no more than such a write
(:data:`_RESTART_FRAMES`, read from the WAL index: store/sqlite_wal_index.py) copies nothing:
copying it would make the next writer start the WAL over again, on the loop, and restarting
it would write at every pass of an idle store.

Every process that opens the file (``api_processes``, workers) runs one; checkpoints from
several connections are serialised by SQLite (one holds the checkpoint lock, the others return
busy), so that is safe.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import struct
import threading
from pathlib import Path

from batchrock.store.sqlite_wal_index import WalIndexHeader

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
#: The WAL frames :meth:`WalCheckpointer._restart`'s write leaves (page 1, where the
#: database header keeps ``user_version``); a WAL holding no more has nothing to copy.
_RESTART_FRAMES = 1
#: Where one copy of the WAL-index header keeps ``mxFrame``, the WAL's valid frames
#: (https://www.sqlite.org/walformat.html): after its version, unused word, change counter,
#: two flag bytes and page size.
_MX_FRAME_AT = 16
_HEADER = 48


@dataclasses.dataclass(frozen=True, slots=True)
class Pass:
    """One checkpoint's answer (``PRAGMA wal_checkpoint``): ``busy`` when it could not copy
    everything (another checkpoint, a reader or a writer in the way), the WAL's frames and how
    many of them are now in the database. Mode ``NONE``: the pass copied nothing, the WAL
    holding at most a restart's write (``checkpointed`` 0). ``restarted``: the pass ended
    with the write that starts the WAL over (see the module's doc)."""

    mode: str
    busy: bool
    wal_frames: int
    checkpointed: int
    restarted: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
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
        try:
            # The store's connection's settings (store/sqlite.py): the commit that starts the
            # WAL over (here, see _restart) cuts the file back to the limit, durably as any.
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute(f"PRAGMA journal_size_limit = {policy.wal_limit_bytes}")
            #: The WAL's frame count, read without a transaction; None: every pass copies.
            self._wal_index = WalIndexHeader.open(self._conn, path)
        except BaseException:
            self._conn.close()
            raise
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
            self._close()

    def _close(self) -> None:
        # The mapping is valid while a connection of this process is open on the file.
        wal_index, self._wal_index = self._wal_index, None
        if wal_index is not None:
            wal_index.close()
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
                self._close()
            except sqlite3.Error:
                log.exception("closing the WAL checkpointer's connection to %s failed", self.path)

    def checkpoint(self) -> Pass | None:
        """One pass (``PASSIVE``, then ``FULL`` when the WAL is past its bound, then the write
        that starts the WAL over when it was all copied; nothing when the WAL holds no more
        than that write); a failure is logged (the first of a run of them with its traceback,
        the others at debug level until one succeeds again) and the next pass tries again."""
        try:
            frames = self._wal_frames()
            if frames is not None and frames <= _RESTART_FRAMES:
                answer = Pass("NONE", False, frames, 0)
            else:
                # The size first: between the pass that copied everything and the restart's
                # BEGIN, each call that lets go of the GIL is a chance for a loop writer to
                # begin first and start the WAL over itself (the file only grows meanwhile).
                past_bound = self._wal_bytes() > self.wal_bound_bytes
                answer = self._checkpoint("PASSIVE")
                if past_bound:
                    answer = self._checkpoint("FULL")
                if (
                    not answer.busy
                    and answer.wal_frames > _RESTART_FRAMES
                    and answer.checkpointed == answer.wal_frames
                    # A writer that began during the pass appended meanwhile: no connection
                    # can start the WAL over until the next pass has copied that too.
                    and self._wal_frames() in (None, answer.wal_frames)
                    and self._restart()
                ):
                    answer = dataclasses.replace(answer, restarted=True)
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

    def _restart(self) -> bool:
        """A write after a checkpoint that copied the whole WAL: SQLite starts the WAL over
        in it and syncs the new header here, off the loop. It rewrites ``user_version``
        unchanged (one page; the schema's own value, read in the same transaction). ``True``
        when it did start the WAL over (the WAL index then holds its frame alone); ``False``
        when a loop writer began first (it started the WAL over itself, on the loop, and this
        write appended a page, without a sync, or found the lock held past :data:`_BUSY_MS`),
        or a reader of an older snapshot kept SQLite from starting over."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            log.debug("no WAL restart on the checkpointer's thread: %s", exc)
            return False
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            conn.execute(f"PRAGMA user_version = {int(version)}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        frames = self._wal_frames()
        return frames is None or frames <= _RESTART_FRAMES

    def _wal_frames(self) -> int | None:
        """The WAL's valid frames from the WAL index (no transaction), or ``None`` where there
        is no index to read or its header is being written."""
        if self._wal_index is None:
            return None
        both = self._wal_index.read()
        if both[:_HEADER] != both[_HEADER:]:
            return None
        (frames,) = struct.unpack_from("=I", both, _MX_FRAME_AT)
        return int(frames)

    def _wal_bytes(self) -> int:
        try:
            return self._wal.stat().st_size
        except FileNotFoundError:
            return 0
