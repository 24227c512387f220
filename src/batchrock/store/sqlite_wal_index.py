"""The change signal of a SQLite database in WAL mode: the header of its WAL index.

Why: every GetModelInvocationJob runs one query, the row's key (store/sqlite.py
``get_row_key``), and answers the body kept for that key; the query is most of what a Get's
CPU is above a bare server's (docs/benchmarks.md, "What 0.8 would take"). The key cannot have
changed while no transaction has committed to the file, and SQLite itself says when one has:
the WAL index (the ``-shm`` file, https://www.sqlite.org/walformat.html) starts with a 48-byte
header that every commit rewrites (its change counter, frame count, salts and checksums), by
any connection of any process on the host, before the commit returns. The header is written
twice, the second copy first, so a reader that finds both copies equal holds one whole
header. Reading the two copies from memory costs about 0.1 µs; SQLite's own ``PRAGMA
data_version`` starts a read transaction (a lock of the shared memory taken and dropped), 4.3
against the key query's 4.8 µs, so it would save next to nothing (docs/benchmarks.md).

Only a reading, never an answer: a header that changed (a commit, a checkpoint that restarted
the WAL, a recovery) only makes the caller read the database again.

The mapping is of the descriptor SQLite itself holds open on the ``-shm`` file, found in
``/proc/self/fd``, and made with ``mmap(2)`` directly: a descriptor of our own would have to
be closed some time, and closing any descriptor of a file drops every POSIX lock this process
holds on it (SQLite's read locks and the one that keeps other processes from starting the
index over), which Python's :class:`mmap.mmap` does at close (it keeps a duplicate). The
mapping stays valid while the store's connection is open: that connection holds the lock that
keeps any other connection from truncating the file (SQLite truncates it only when it is the
first to open it). So the store reads it only while its connection is open and unmaps it
before closing that.

Anything unexpected (not WAL mode, exclusive locking, no ``/proc``, no such descriptor, a
header of another version or one being written) means no signal: the store then reads the
database every time, as it always did.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import sqlite3
import struct
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("batchrock.store")

#: The WAL index header's version (``iVersion``), the same since SQLite 3.7.0.
_VERSION = 3007000
#: One header copy's size; the two copies are the first 96 bytes.
_HEADER = 48
_BOTH = 2 * _HEADER
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc = libc
    return _libc


class WalIndexHeader:
    """The two copies of a database's WAL index header, mapped read-only.

    ``read()`` is the 96 bytes as they are now: a commit since an earlier reading makes them
    differ from it; copies that differ from each other are a header being written."""

    def __init__(self, address: int) -> None:
        self._address = address
        view = memoryview((ctypes.c_char * _BOTH).from_address(address)).cast("B")
        self._view: memoryview | None = view
        #: The fast path's call: no Python frame of our own per reading.
        self.read: Callable[[], bytes] = view.tobytes

    @classmethod
    def open(cls, conn: sqlite3.Connection, path: Path) -> WalIndexHeader | None:
        """The header of the file ``conn`` has open, or ``None`` (with a debug line) where
        there is no such signal to trust (see the module's doc)."""
        why = _unusable(conn)
        if why is None:
            try:
                found = _sqlites_descriptor(Path(f"{path}-shm"))
            except OSError as exc:
                found, why = None, f"the -shm file: {exc}"
            else:
                if found is None:
                    why = "no descriptor of the -shm file in /proc/self/fd"
        if why is not None or found is None:
            log.debug("no WAL-index signal for %s: %s", path, why)
            return None
        address = _c().mmap(None, _BOTH, mmap.PROT_READ, mmap.MAP_SHARED, found, 0)
        if address is None or address == _MAP_FAILED:
            log.debug("no WAL-index signal for %s: mmap: %s", path, os.strerror(ctypes.get_errno()))
            return None
        header = cls(address)
        why = header._check()
        if why is not None:
            header.close()
            log.debug("no WAL-index signal for %s: %s", path, why)
            return None
        return header

    def _check(self) -> str | None:
        # A header being written (copies unequal) is tried again: a commit takes microseconds.
        for _ in range(100):
            both = self.read()
            if both[:_HEADER] == both[_HEADER:]:
                version, _unused, _change, initialised = struct.unpack_from("=IIIB", both)
                if version != _VERSION:
                    return f"WAL-index version {version}, not {_VERSION}"
                if initialised != 1:
                    return "WAL index not initialised"
                return None
        return "the WAL-index header kept changing"

    def close(self) -> None:
        view, self._view = self._view, None
        if view is not None:
            self.read = _closed
            view.release()
            _c().munmap(self._address, _BOTH)


def _closed() -> bytes:
    raise ValueError("the WAL-index header is closed")


def _unusable(conn: sqlite3.Connection) -> str | None:
    if not sys.platform.startswith("linux"):
        return f"needs Linux's /proc (this is {sys.platform})"
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    if str(mode).lower() != "wal":
        return f"journal_mode {mode}"
    (locking,) = conn.execute("PRAGMA locking_mode").fetchone()
    if str(locking).lower() != "normal":
        # Exclusive locking keeps the WAL index in the process's heap, not the file.
        return f"locking_mode {locking}"
    conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # the index is mapped
    return None


def _sqlites_descriptor(shm: Path) -> int | None:
    """The descriptor this process holds open on ``shm`` (SQLite's: one per file and process,
    shared by its connections), by device and inode."""
    wanted = os.stat(shm)
    if wanted.st_size < _BOTH:
        return None
    for name in os.listdir("/proc/self/fd"):
        try:
            held = os.fstat(int(name))
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if (held.st_dev, held.st_ino) == (wanted.st_dev, wanted.st_ino):
            return int(name)
    return None
