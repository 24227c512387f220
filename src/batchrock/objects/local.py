"""The embedded object store: ``s3://bucket/key`` is the file ``ROOT/bucket/key``.

``ROOT`` is ``DATA_DIR/s3``. A bucket is a folder directly under it; a key is a relative path
inside that folder. Keys that would leave their bucket (``..`` segments, absolute paths) are
rejected.

Only regular files are objects. Below the bucket folder nothing is followed or opened that
is not a folder or a regular file: paths are walked one folder at a time with ``O_NOFOLLOW``
(a symbolic link could lead anywhere on the machine, and be swapped in after a check), and a
FIFO, socket or device is refused by its ``lstat`` before any ``open`` (opening a FIFO for
reading waits for a writer, forever). The bucket folder itself may be a link: whoever runs
the service made it so, as with a mount point.

Writes go to a temporary file in ``ROOT/.tmp`` first and are renamed into place, so a reader
never sees half an object. A writer holds an ``flock`` on its temporary file until the
rename; a store starting up removes the temporary files nobody holds (left by a process that
was killed), whichever process or machine sharing the data dir wrote them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TypeVar

from batchrock.objects.base import (
    READ_CHUNK_BYTES,
    InvalidLocation,
    NoSuchBucket,
    NoSuchKey,
    NotAFolder,
    NotAnObject,
    ObjectChanged,
    ObjectInfo,
    ObjectStoreError,
    ReadStalled,
)

log = logging.getLogger("batchrock.objects")

# S3's bucket naming rules (lowercase, digits, dots, hyphens; 3-63 characters). Holding local
# buckets to them also keeps our temporary folder (".tmp") out of the bucket namespace.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TMP_DIR = ".tmp"
_TMP_SUFFIX = ".tmp"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: should a FIFO be swapped in between the lstat and the open, the open returns
# at once instead of waiting for a writer (the fstat after it then refuses the FIFO).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: How long a read may wait for its next chunk by default (``object_read_timeout_seconds``).
DEFAULT_READ_TIMEOUT = 60.0

T = TypeVar("T")


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        key,
        st.st_size,
        etag=_etag(st),
        modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC),
    )


def _etag(st: os.stat_result) -> str:
    """What stands in for an ETag: a file rewritten in place gets a new modification time,
    one replaced (written beside and renamed over, as most tools do) a new inode."""
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISREG, "a file"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _what(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def _refused(bucket: str, key: str, mode: int) -> NotAnObject:
    if stat.S_ISLNK(mode):
        return NotAnObject(
            bucket,
            key,
            "is a symbolic link: the local object store does not follow links below a bucket "
            "folder (one could lead anywhere on the machine). Put the file itself there, or "
            "make the bucket folder itself the link.",
        )
    return NotAnObject(
        bucket,
        key,
        f"is {_what(mode)}, not a regular file: the local object store reads regular files only.",
    )


async def _off_loop(
    fn: Callable[..., T], *args: object, abandoned: Callable[[T], object] | None = None
) -> T:
    """``fn(*args)`` in a thread of its own. A read may hang in the file system (a network
    mount that stopped answering); the default executor's threads are joined when the process
    exits, so one stuck there would keep a stopped service from exiting. A daemon thread is
    left behind instead. ``abandoned`` gets a result that came after its waiter gave up (a
    descriptor to close)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # cancelled (timed out): nobody waits any more
            if error is None and abandoned is not None:
                abandoned(result)  # type: ignore[arg-type]
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting task, which raises it
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop has closed since
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="batchrock-read", daemon=True).start()
    return await future


@contextlib.contextmanager
def _typed_errors(bucket: str, key: str, doing: str) -> Iterator[None]:
    """Any other file system error (permissions, a full disk) as an :class:`ObjectStoreError`,
    whose message names the object and the reason."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ObjectStoreError(f"Cannot {doing} s3://{bucket}/{key}: {reason}.") from exc


class LocalObjectStore:
    """Buckets as folders under ``root``.

    ``private``: objects are written readable by their owner only (0600, folders 0700);
    otherwise with the usual modes (0666 and 0777 less the umask).
    ``read_timeout``: how long a read may wait for its next chunk (a stalled network file
    system) before it fails with :class:`ReadStalled`.

    >>> store = LocalObjectStore(Path("/data/s3"))   # s3://in/a.jsonl -> /data/s3/in/a.jsonl
    """

    def __init__(
        self, root: Path, *, private: bool = True, read_timeout: float = DEFAULT_READ_TIMEOUT
    ) -> None:
        self.root = root
        self.private = private
        self._file_mode = 0o600 if private else 0o666
        self._dir_mode = 0o700 if private else 0o777
        self._read_timeout = read_timeout
        self.remove_stale_temporary_files()

    # --- path mapping ------------------------------------------------------------------

    def _bucket_dir(self, bucket: str) -> Path:
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise InvalidLocation(f"{bucket!r} is not a valid S3 bucket name.")
        return self.root / bucket

    @staticmethod
    def _key_parts(bucket: str, key: str) -> list[str]:
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or "\\" in key
            or "\x00" in key
            or any(p in {".", ".."} for p in parts)
        ):
            raise InvalidLocation(f"s3://{bucket}/{key} is not a valid object key here.")
        return [p for p in parts if p]

    def path_for(self, bucket: str, key: str) -> Path:
        """The file that holds ``s3://bucket/key`` (whether or not it exists)."""
        return self._bucket_dir(bucket).joinpath(*self._key_parts(bucket, key))

    def _bucket_is_a_file(self, bucket: str) -> NotAFolder:
        return NotAFolder(
            f"The local bucket folder {self._bucket_dir(bucket)} is a file, not a folder.",
            bucket=bucket,
            key="",
        )

    def _open_bucket(self, bucket: str) -> int:
        base = self._bucket_dir(bucket)
        try:
            return os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NoSuchBucket(bucket) from None
        except NotADirectoryError:
            raise self._bucket_is_a_file(bucket) from None

    def _open_folder(self, bucket: str, key: str, parts: list[str], *, create: bool) -> int:
        """A descriptor of the folder holding the key's last part, reached from the bucket
        folder one folder at a time without following links; ``create`` makes the missing
        ones. Raises FileNotFoundError (a folder is missing), :class:`NotAFolder` (a part is
        a file) or :class:`NotAnObject` (a part is a link)."""
        fd = self._open_bucket(bucket)
        try:
            for i, part in enumerate(parts[:-1]):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, self._dir_mode, dir_fd=fd)
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    mode = os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
                    through = "/".join(parts[: i + 1])
                    if stat.S_ISLNK(mode):
                        raise _refused(bucket, through, mode) from None
                    raise NotAFolder(
                        f"s3://{bucket}/{through} is {_what(mode)}, so no object can be stored "
                        f"below it (s3://{bucket}/{key}).",
                        bucket=bucket,
                        key=key,
                    ) from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    # --- ObjectStore: reading ----------------------------------------------------------

    def local_folder(self, bucket: str, key: str = "") -> Path | None:
        parts = [p for p in key.split("/") if p]
        try:
            base = self._bucket_dir(bucket)
        except InvalidLocation:
            return None
        if any(p in (".", "..") for p in parts):
            return None  # not a place in the bucket; path_for says why when it is used
        return Path(os.path.abspath(base.joinpath(*parts)))

    async def bucket_exists(self, bucket: str) -> bool:
        return await self._bounded(_off_loop(self._bucket_exists_sync, bucket), bucket, "")

    def _bucket_exists_sync(self, bucket: str) -> bool:
        with _typed_errors(bucket, "", "read"):
            try:
                st = os.stat(self._bucket_dir(bucket))
            except FileNotFoundError:
                return False
        if not stat.S_ISDIR(st.st_mode):
            raise self._bucket_is_a_file(bucket)
        return True

    async def list_objects(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        return await self._bounded(_off_loop(self._list_sync, bucket, prefix), bucket, "")

    def _list_sync(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        """Every entry below the bucket folder whose key starts with ``prefix``, folders aside.
        Entries that are not regular files (links, FIFOs, ...) are listed too, as S3 would
        list an object there: reading one then says what it is."""
        base = self._bucket_dir(bucket)
        if not self._bucket_exists_sync(bucket):
            raise NoSuchBucket(bucket)
        found: list[ObjectInfo] = []
        pending: list[tuple[str, str]] = [(str(base), "")]
        with _typed_errors(bucket, prefix, "list"):
            while pending:
                folder, rel = pending.pop()
                try:
                    with os.scandir(folder) as it:
                        entries = list(it)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # removed while listing
                for entry in entries:
                    key = rel + entry.name
                    if entry.is_dir(follow_symlinks=False):
                        sub = key + "/"
                        # Only folders the prefix can reach: a prefix names a small part of
                        # a big bucket.
                        if sub.startswith(prefix) or prefix.startswith(sub):
                            pending.append((entry.path, sub))
                        continue
                    if prefix.startswith(key + "/") and entry.is_symlink():
                        # The prefix runs through a link: "no such prefix" would mislead.
                        raise _refused(bucket, key, stat.S_IFLNK)
                    if not key.startswith(prefix):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while listing
                    found.append(_info(key, st))
        found.sort(key=lambda o: o.key)
        return found

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        return await self._bounded(_off_loop(self._head_sync, bucket, key), bucket, key)

    def _head_sync(self, bucket: str, key: str) -> ObjectInfo | None:
        parts = self._key_parts(bucket, key)
        with _typed_errors(bucket, key, "read"):
            try:
                fd = self._open_folder(bucket, key, parts, create=False)
            except (FileNotFoundError, NotAFolder):
                return None
            try:
                st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return None
            finally:
                os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            return None  # a folder is a prefix, not an object
        if not stat.S_ISREG(st.st_mode):
            raise _refused(bucket, key, st.st_mode)
        return _info(key, st)

    async def read(
        self, bucket: str, key: str, start: int = 0, *, if_match: str | None = None
    ) -> AsyncIterator[bytes]:
        opening = _off_loop(self._open_for_read, bucket, key, abandoned=os.close)
        fd = await self._bounded(opening, bucket, key)
        try:
            # The open file is the object read from here on, whatever replaces the path: it
            # is checked as opened, and again at the end (a write in place changes its time).
            if if_match is not None and _etag(os.fstat(fd)) != if_match:
                raise ObjectChanged(bucket, key)
            offset = start
            while True:
                # pread on the bare descriptor: a read that timed out may still be running in
                # its thread, and closing a buffered file under it would wait for it.
                chunk = await self._bounded(
                    _off_loop(self._pread, bucket, key, fd, offset), bucket, key
                )
                if not chunk:
                    break
                offset += len(chunk)
                yield chunk
            if if_match is not None and _etag(os.fstat(fd)) != if_match:
                raise ObjectChanged(bucket, key)
        finally:
            os.close(fd)

    @staticmethod
    def _pread(bucket: str, key: str, fd: int, offset: int) -> bytes:
        with _typed_errors(bucket, key, "read"):
            return os.pread(fd, READ_CHUNK_BYTES, offset)

    def _open_for_read(self, bucket: str, key: str) -> int:
        parts = self._key_parts(bucket, key)
        with _typed_errors(bucket, key, "read"):
            try:
                folder = self._open_folder(bucket, key, parts, create=False)
            except (FileNotFoundError, NotAFolder):
                raise NoSuchKey(bucket, key) from None
            try:
                name = parts[-1]
                try:
                    mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
                except (FileNotFoundError, NotADirectoryError):
                    raise NoSuchKey(bucket, key) from None
                if stat.S_ISDIR(mode):
                    raise NoSuchKey(bucket, key)
                if not stat.S_ISREG(mode):
                    raise _refused(bucket, key, mode)  # never opened
                try:
                    fd = os.open(name, _READ_FLAGS, dir_fd=folder)
                except FileNotFoundError:
                    raise NoSuchKey(bucket, key) from None
                except OSError as exc:
                    if exc.errno == errno.ELOOP:  # became a link since the stat
                        raise _refused(bucket, key, stat.S_IFLNK) from None
                    raise
            finally:
                os.close(folder)
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                os.close(fd)
                raise _refused(bucket, key, mode)
            return fd

    async def _bounded(self, step: Awaitable[T], bucket: str, key: str) -> T:
        """``step`` within the read timeout. On a timeout its thread may still wait on the
        file system, but the job (and a stop, and the shutdown) no longer waits with it."""
        try:
            return await asyncio.wait_for(step, self._read_timeout)
        except TimeoutError:
            raise ReadStalled(bucket, key, self._read_timeout) from None

    # --- ObjectStore: writing ----------------------------------------------------------

    def _tmp_dir(self) -> Path:
        tmp = self.root / _TMP_DIR
        tmp.mkdir(mode=self._dir_mode, parents=True, exist_ok=True)
        return tmp

    def _check_writable(self, bucket: str, key: str) -> list[str]:
        if key.endswith("/"):
            raise InvalidLocation(f"s3://{bucket}/{key} names a folder, not an object.")
        return self._key_parts(bucket, key)

    async def put(self, bucket: str, key: str, data: bytes) -> None:
        parts = self._check_writable(bucket, key)
        await asyncio.to_thread(self._replace_with, bucket, key, parts, lambda f: f.write(data))

    async def put_file(self, bucket: str, key: str, source: Path, *, move: bool = False) -> None:
        parts = self._check_writable(bucket, key)
        if move and await asyncio.to_thread(self._move_into_place, bucket, key, parts, source):
            return

        def copy(f: IO[bytes]) -> None:
            with source.open("rb") as src:
                shutil.copyfileobj(src, f, READ_CHUNK_BYTES)

        await asyncio.to_thread(self._replace_with, bucket, key, parts, copy)

    def _move_into_place(self, bucket: str, key: str, parts: list[str], source: Path) -> bool:
        """Rename ``source`` into place; ``False`` when it is on another file system."""
        with _typed_errors(bucket, key, "write"):
            folder = self._open_folder(bucket, key, parts, create=True)
            try:
                with source.open("rb") as fh:
                    if self.private:  # the file was made elsewhere, under the process's umask
                        os.fchmod(fh.fileno(), self._file_mode)
                    os.fsync(fh.fileno())
                try:
                    os.replace(source, parts[-1], dst_dir_fd=folder)
                except OSError as exc:
                    if exc.errno == errno.EXDEV:
                        return False
                    raise
            finally:
                os.close(folder)
        return True

    def _replace_with(
        self, bucket: str, key: str, parts: list[str], fill: Callable[[IO[bytes]], object]
    ) -> None:
        with _typed_errors(bucket, key, "write"):
            folder = self._open_folder(bucket, key, parts, create=True)
            try:
                fd, name = self._new_temporary()
                with os.fdopen(fd, "wb") as tmp:  # closing it releases the lock, after the rename
                    try:
                        fill(tmp)
                        tmp.flush()
                        os.fsync(tmp.fileno())
                        os.replace(name, parts[-1], dst_dir_fd=folder)
                    except BaseException:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(name)
                        raise
            finally:
                os.close(folder)

    def _new_temporary(self) -> tuple[int, str]:
        """A new temporary file, open and locked (see the module docstring)."""
        tmp = self._tmp_dir()
        while True:
            name = os.path.join(tmp, secrets.token_hex(8) + _TMP_SUFFIX)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self._file_mode)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A store starting meanwhile may have taken the file, not yet locked, for a dead
            # writer's and removed it: then start over under another name.
            try:
                if os.path.samestat(os.stat(name, follow_symlinks=False), os.fstat(fd)):
                    return fd, name
            except FileNotFoundError:
                pass
            os.close(fd)

    def remove_stale_temporary_files(self) -> int:
        """Remove the temporary files that no live writer holds (a process killed while
        writing left them); return how many. Called when the store is made, at start-up."""
        tmp = self.root / _TMP_DIR
        try:
            entries = list(os.scandir(tmp))
        except (FileNotFoundError, NotADirectoryError):
            return 0
        except OSError as exc:
            log.warning("cannot look for stale temporary files in %s: %s", tmp, exc)
            return 0
        removed = 0
        for entry in entries:
            if not entry.name.endswith(_TMP_SUFFIX):
                continue
            try:
                removed += _remove_if_unlocked(entry.path)
            except OSError as exc:
                log.warning("cannot remove the stale temporary file %s: %s", entry.path, exc)
        if removed:
            log.info("removed %d temporary file(s) left by a stopped process in %s", removed, tmp)
        return removed

    async def delete(self, bucket: str, key: str) -> None:
        await asyncio.to_thread(self._delete_sync, bucket, key)

    def _delete_sync(self, bucket: str, key: str) -> None:
        parts = self._key_parts(bucket, key)
        with _typed_errors(bucket, key, "remove"):
            try:
                folder = self._open_folder(bucket, key, parts, create=False)
            except (FileNotFoundError, NotAFolder):
                return  # no such object
            try:
                os.unlink(parts[-1], dir_fd=folder)  # a link is removed, not what it leads to
            except FileNotFoundError:
                pass
            finally:
                os.close(folder)

    async def aclose(self) -> None:
        return None


def _remove_if_unlocked(path: str) -> int:
    """Remove ``path`` unless a writer holds its lock; 1 if removed."""
    try:
        if not stat.S_ISREG(os.stat(path, follow_symlinks=False).st_mode):
            return 0
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # its writer is alive
        # Still the file we locked (not renamed into place, and its name not reused)?
        if not os.path.samestat(os.stat(path, follow_symlinks=False), os.fstat(fd)):
            return 0
        os.unlink(path)
        return 1
    except FileNotFoundError:
        return 0
    finally:
        os.close(fd)
