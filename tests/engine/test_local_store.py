"""The local object store with what a folder tree holds besides files and folders: FIFOs,
sockets, links, files where a folder is wanted; its temporary files; its file modes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from batchrock.objects import (
    LocalObjectStore,
    NoSuchKey,
    NotAFolder,
    NotAnObject,
)

from .conftest import fifo_watchdog

pytestmark = pytest.mark.timeout(60)


async def _collect(chunks: Any) -> bytes:
    return b"".join([c async for c in chunks])


def test_fifo_socket_and_links_are_refused_without_being_opened(tmp_path: Path) -> None:
    root = tmp_path / "s3"
    bucket = root / "bucket"
    (bucket / "in").mkdir(parents=True)
    (bucket / "real").mkdir()
    (bucket / "real" / "r.jsonl").write_bytes(b"{}\n")
    fifo = bucket / "in" / "pipe.jsonl"
    os.mkfifo(fifo)
    sock_path = bucket / "in" / "sock.jsonl"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    os.symlink(bucket / "real" / "r.jsonl", bucket / "in" / "link.jsonl")
    os.symlink(bucket / "real", bucket / "linked")
    store = LocalObjectStore(root)

    async def main() -> None:
        # Listed, as S3 would list an object there; then reading one says what it is.
        listed = [o.key for o in await store.list_objects("bucket", "in/")]
        assert listed == ["in/link.jsonl", "in/pipe.jsonl", "in/sock.jsonl"]
        for key, what in [
            ("in/pipe.jsonl", "is a FIFO (named pipe), not a regular file"),
            ("in/sock.jsonl", "is a socket, not a regular file"),
            ("in/link.jsonl", "is a symbolic link: the local object store does not follow"),
        ]:
            with pytest.raises(NotAnObject) as err:
                await store.head("bucket", key)
            assert str(err.value).startswith(f"s3://bucket/{key} {what}")
            with pytest.raises(NotAnObject, match=re.escape(what)):
                await _collect(store.read("bucket", key))
        # A prefix or key through a linked folder: the link is named, not "no such object".
        with pytest.raises(NotAnObject, match="s3://bucket/linked is a symbolic link"):
            await store.list_objects("bucket", "linked/")
        with pytest.raises(NotAnObject, match="s3://bucket/linked is a symbolic link"):
            await store.head("bucket", "linked/r.jsonl")
        # The bucket folder itself may be a link (made by whoever runs the service).
        os.symlink(bucket / "real", root / "alias")
        assert await _collect(store.read("alias", "r.jsonl")) == b"{}\n"

    with fifo_watchdog(fifo) as released:
        asyncio.run(asyncio.wait_for(main(), 30))
    sock.close()
    assert not released, "the store opened the FIFO and waited for a writer"


def test_a_key_through_a_file_or_a_bucket_that_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "s3"
    (root / "bucket" / "c25").mkdir(parents=True)
    (root / "bucket" / "c25" / "a.jsonl").write_bytes(b"{}\n")
    (root / "filebucket").write_bytes(b"not a folder")
    store = LocalObjectStore(root)

    async def main() -> None:
        with pytest.raises(NotAFolder) as err:
            await store.put("bucket", "c25/a.jsonl/job/manifest.json.out", b"{}")
        assert str(err.value) == (
            "s3://bucket/c25/a.jsonl is a file, so no object can be stored below it "
            "(s3://bucket/c25/a.jsonl/job/manifest.json.out)."
        )
        # Reading through a file: no such object, as on S3.
        assert await store.head("bucket", "c25/a.jsonl/b.jsonl") is None
        assert await store.list_objects("bucket", "c25/a.jsonl/") == []
        with pytest.raises(NoSuchKey):
            await _collect(store.read("bucket", "c25/a.jsonl/b.jsonl"))
        for call in (
            store.bucket_exists("filebucket"),
            store.list_objects("filebucket", ""),
            store.put("filebucket", "x", b"x"),
        ):
            with pytest.raises(NotAFolder, match="filebucket is a file, not a folder"):
                await call

    asyncio.run(main())


def _tmp_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / ".tmp").iterdir())


def test_stale_temporary_files_are_removed_at_start_but_not_a_live_writers(
    tmp_path: Path,
) -> None:
    """A process killed while writing an object leaves its temporary file; the next store
    made on the data dir removes it, but not the one another live process is writing."""
    root = tmp_path / "s3"
    (root / "bucket").mkdir(parents=True)
    # Live writers: objects copied from FIFOs, which block until something writes there.
    sources = [tmp_path / "source-killed", tmp_path / "source-live"]
    for fifo in sources:
        os.mkfifo(fifo)
    code = (
        "import asyncio, sys; from pathlib import Path; "
        "from batchrock.objects import LocalObjectStore; "
        "asyncio.run(LocalObjectStore(Path(sys.argv[1])).put_file('bucket', sys.argv[2], "
        "Path(sys.argv[3])))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writers = [
        subprocess.Popen([sys.executable, "-c", code, str(root), key, str(src)], env=env)
        for key, src in [("killed.out", sources[0]), ("live.out", sources[1])]
    ]
    try:
        deadline = time.monotonic() + 20
        while not (root / ".tmp").is_dir() or len(_tmp_files(root)) < 2:  # one per writer
            assert time.monotonic() < deadline, "the writers made no temporary files"
            time.sleep(0.02)
        live = set(_tmp_files(root))
        (root / ".tmp" / "0123456789abcdef.tmp").write_bytes(b"x" * 1000)  # an older crash's
        writers[0].send_signal(signal.SIGKILL)
        writers[0].wait()

        store = LocalObjectStore(root)  # start-up: the killed writer's file and the stale go
        assert store.remove_stale_temporary_files() == 0  # nothing left to remove
        (survivor,) = _tmp_files(root)
        assert survivor in live

        with sources[1].open("wb") as fifo:  # the live writer finishes its object
            fifo.write(b"live data")
        assert writers[1].wait(timeout=20) == 0
        assert (root / "bucket" / "live.out").read_bytes() == b"live data"
        assert _tmp_files(root) == []
        assert not (root / "bucket" / "killed.out").exists()
    finally:
        for proc in writers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def _write_objects(store: LocalObjectStore, spool: Path, copied: Path) -> None:
    await store.put("bucket", "out/job/manifest.json.out", b"{}")
    await store.put_file("bucket", "out/job/a.jsonl.out", spool, move=True)
    await store.put_file("bucket", "out/job/b.jsonl.out", copied)


@pytest.mark.parametrize(
    ("private", "file_mode", "dir_mode"), [(True, 0o600, 0o700), (False, 0o644, 0o755)]
)
def test_objects_and_folders_are_private_unless_asked_otherwise(
    tmp_path: Path, private: bool, file_mode: int, dir_mode: int
) -> None:
    old_umask = os.umask(0o022)
    try:
        root = tmp_path / "s3"
        (root / "bucket").mkdir(parents=True)
        store = LocalObjectStore(root, private=private)
        spool = tmp_path / "spool"
        spool.write_bytes(b"moved")  # 0644 under this umask, as the engine's spool files
        copied = tmp_path / "copied"
        copied.write_bytes(b"copied")
        asyncio.run(_write_objects(store, spool, copied))
    finally:
        os.umask(old_umask)
    job = root / "bucket" / "out" / "job"
    for name in ("manifest.json.out", "a.jsonl.out", "b.jsonl.out"):
        assert _mode(job / name) == file_mode, name
    assert _mode(job) == _mode(job.parent) == _mode(root / ".tmp") == dir_mode
