"""Object storage: the local folder mapping and S3 (against moto's server) behave alike."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from batchrock.objects import (
    InvalidLocation,
    LocalObjectStore,
    NoSuchBucket,
    NoSuchKey,
    NotAnObject,
    ObjectChanged,
    ObjectStore,
    S3ObjectStore,
    parse_s3_uri,
)

from .conftest import s3_client


@pytest.fixture(params=["local", "s3"])
def store_and_bucket(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ObjectStore, str]:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    if request.param == "local":
        (tmp_path / "s3" / bucket).mkdir(parents=True)
        return LocalObjectStore(tmp_path / "s3"), bucket
    url = request.getfixturevalue("moto_url")
    s3_client(url).create_bucket(Bucket=bucket)
    store = S3ObjectStore(
        endpoint_url=url, access_key_id="testing", secret_access_key="testing", max_retries=0
    )
    return store, bucket


async def _collect(chunks: Any) -> bytes:
    return b"".join([c async for c in chunks])


def test_put_list_head_read(store_and_bucket: tuple[ObjectStore, str], tmp_path: Path) -> None:
    store, bucket = store_and_bucket

    async def main() -> None:
        await store.put(bucket, "in/a.jsonl", b"0123456789")
        src = tmp_path / "upload.bin"
        src.write_bytes(b"x" * 100_000)
        await store.put_file(bucket, "in/sub/b.jsonl", src)
        await store.put(bucket, "inx/c.jsonl", b"c")
        listed = await store.list_objects(bucket, "in/")
        expected = [("in/a.jsonl", 10), ("in/sub/b.jsonl", 100_000)]
        assert [(o.key, o.size) for o in listed] == expected
        head = await store.head(bucket, "in/a.jsonl")
        assert head is not None and head.size == 10
        assert await store.head(bucket, "in/nope.jsonl") is None
        assert await _collect(store.read(bucket, "in/a.jsonl")) == b"0123456789"
        assert await _collect(store.read(bucket, "in/a.jsonl", 4)) == b"456789"
        assert await _collect(store.read(bucket, "in/sub/b.jsonl")) == b"x" * 100_000
        # Overwrite replaces the whole object.
        await store.put(bucket, "in/a.jsonl", b"new")
        assert await _collect(store.read(bucket, "in/a.jsonl")) == b"new"
        assert await store.bucket_exists(bucket)
        assert not await store.bucket_exists("no-such-bucket-here")
        with pytest.raises(NoSuchBucket):
            await store.list_objects("no-such-bucket-here", "")
        with pytest.raises(NoSuchKey):
            await _collect(store.read(bucket, "in/missing.jsonl"))
        await store.aclose()

    asyncio.run(main())


def test_read_if_match_refuses_another_object_and_delete(
    store_and_bucket: tuple[ObjectStore, str],
) -> None:
    store, bucket = store_and_bucket

    async def main() -> None:
        await store.put(bucket, "in/a.jsonl", b"first")
        first = await store.head(bucket, "in/a.jsonl")
        assert first is not None and first.etag and first.modified is not None
        (listed,) = await store.list_objects(bucket, "in/")
        assert listed == first
        assert await _collect(store.read(bucket, "in/a.jsonl", if_match=first.etag)) == b"first"
        await store.put(bucket, "in/a.jsonl", b"other")  # the same size
        with pytest.raises(ObjectChanged):
            await _collect(store.read(bucket, "in/a.jsonl", if_match=first.etag))
        with pytest.raises(ObjectChanged):
            await _collect(store.read(bucket, "in/a.jsonl", 2, if_match=first.etag))
        now = await store.head(bucket, "in/a.jsonl")
        assert now is not None and now.etag != first.etag
        assert await _collect(store.read(bucket, "in/a.jsonl", 2, if_match=now.etag)) == b"her"
        await store.delete(bucket, "in/a.jsonl")
        assert await store.head(bucket, "in/a.jsonl") is None
        await store.delete(bucket, "in/a.jsonl")  # nothing there: nothing happens
        await store.aclose()

    asyncio.run(main())


def test_local_read_if_match_notices_a_write_in_place_during_the_read(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "s3")
    path = tmp_path / "s3" / "bucket" / "a.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"0123456789")

    async def main() -> None:
        info = await store.head("bucket", "a.jsonl")
        assert info is not None
        chunks = store.read("bucket", "a.jsonl", if_match=info.etag)
        assert await anext(chunks) == b"0123456789"
        st = path.stat()
        with path.open("r+b") as fh:
            fh.write(b"X")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        with pytest.raises(ObjectChanged):
            await anext(chunks)

    asyncio.run(main())


def test_local_keys_cannot_leave_their_bucket(tmp_path: Path) -> None:
    root = tmp_path / "s3"
    (root / "bucket").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path, root / "bucket" / "escape")
    store = LocalObjectStore(root)

    async def main() -> None:
        for key in ["../secret.txt", "a/../../secret.txt", "/etc/passwd"]:
            with pytest.raises(InvalidLocation):
                await store.head("bucket", key)
            with pytest.raises(InvalidLocation):
                await store.put("bucket", key, b"x")
        # A link is not followed, whether it leads out of the bucket or not.
        with pytest.raises(NotAnObject, match="symbolic link"):
            await store.head("bucket", "escape/secret.txt")
        with pytest.raises(NotAnObject, match="symbolic link"):
            await store.put("bucket", "escape/secret.txt", b"x")
        for bucket in ["..", ".tmp", "a/b", "UPPER"]:
            with pytest.raises(InvalidLocation):
                await store.list_objects(bucket, "")
        # Listed as the entry it is (reading it says it is a link), never what it leads to.
        assert [o.key for o in await store.list_objects("bucket", "")] == ["escape"]
        with pytest.raises(NotAnObject, match="symbolic link"):
            await _collect(store.read("bucket", "escape"))
        assert (tmp_path / "secret.txt").read_text() == "secret"

    asyncio.run(main())


def test_parse_s3_uri() -> None:
    loc = parse_s3_uri("s3://bucket/a/b.jsonl")
    assert (loc.bucket, loc.key) == ("bucket", "a/b.jsonl")
    assert parse_s3_uri("s3://bucket").key == ""
    assert parse_s3_uri("s3://bucket/out/").child("job", "f.out").key == "out/job/f.out"
    assert parse_s3_uri("s3://bucket").child("job").key == "job"
    for bad in ["http://x/y", "s3://", "s3:///key"]:
        with pytest.raises(InvalidLocation):
            parse_s3_uri(bad)
