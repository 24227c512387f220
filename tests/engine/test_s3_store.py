"""The S3 object store's time limits: a server that stops answering fails a read after
``object_read_timeout_seconds``; a read that is merely slow (a job reads its input as the
model goes) is never cut off."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from batchrock.objects import ObjectStoreError, ReadStalled, S3ObjectStore

from .conftest import s3_client

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def stalling_s3() -> Iterator[str]:
    """An S3 endpoint that stops answering: a listing gets no answer at all, a GET its
    headers and the first bytes of its body, then nothing (a hung peer, a dead route)."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if "list-type" not in self.path:
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.send_header("ETag", '"e"')
                self.send_header("Last-Modified", "Mon, 01 Dec 2025 00:00:00 GMT")
                self.end_headers()
                self.wfile.write(b'{"modelInput": {}}\n' * 10)
                self.wfile.flush()
            release.wait(60)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_a_server_that_stops_answering_fails_the_read_in_time(stalling_s3: str) -> None:
    store = S3ObjectStore(
        endpoint_url=stalling_s3,
        access_key_id="testing",
        secret_access_key="testing",
        max_retries=0,
        read_timeout=1.0,
    )

    async def main() -> None:
        started = time.monotonic()
        got = []
        with pytest.raises(ReadStalled) as err:
            async for chunk in store.read("bucket", "in/a.jsonl"):
                got.append(chunk)
        assert str(err.value) == (
            "Reading s3://bucket/in/a.jsonl stalled: no data came for 1 seconds (the setting "
            "object_read_timeout_seconds)."
        )
        with pytest.raises(ObjectStoreError) as listing:
            await store.list_objects("bucket", "in/")
        assert str(listing.value) == (
            "Cannot list s3://bucket/in/: no answer came for 1 seconds (the setting "
            "object_read_timeout_seconds)"
        )
        assert time.monotonic() - started < 10

    asyncio.run(main())


def test_a_read_slower_than_thirty_seconds_is_not_cut_off(moto_url: str) -> None:
    """The S3 client's default limit on a whole request is 30 seconds, body included; a job
    reading a file as a slow model answers keeps one GET open far longer. (This test takes
    over 30 seconds, sleeping.)"""
    bucket = f"slow-{uuid.uuid4().hex[:10]}"
    s3 = s3_client(moto_url)
    s3.create_bucket(Bucket=bucket)
    body = bytes(range(256)) * (8 * 4096)  # 8 MiB
    s3.put_object(Bucket=bucket, Key="big.jsonl", Body=body)
    store = S3ObjectStore(
        endpoint_url=moto_url, access_key_id="testing", secret_access_key="testing"
    )

    async def main() -> bytes:
        started = time.monotonic()
        chunks = []
        async for chunk in store.read(bucket, "big.jsonl"):
            if not chunks:
                await asyncio.sleep(31)  # the model is slow with the first records
            chunks.append(chunk)
        assert time.monotonic() - started > 31
        return b"".join(chunks)

    assert asyncio.run(main()) == body
