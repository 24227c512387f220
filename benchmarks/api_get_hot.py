"""GetModelInvocationJob through the whole server path, in-process and hot, beside the floor.

    .venv/bin/python benchmarks/api_get_hot.py

What ``batchrock serve`` runs for one request, without sockets: its HTTP protocol (uvicorn's
httptools parser with the guards of api/connections.py and the request cycle of
api/cycle.py) fed the signed request head by ``data_received``, the ASGI app run on the
event loop (uvloop) until the response is written to a transport that keeps the bytes.
Beside it the same for the floor (benchmarks/_api_floor.py's app on plain httptools), and
each app on the other protocol.
Each figure is the least, over ``--tries``, of the CPU time per request of ``--requests`` in
a row: the cost of the code with warm caches. On the real server (benchmarks/api_listing.py)
both cost about 2-2.5x this, the same code run cold after the client and the kernel had the
core (docs/benchmarks.md, "Where a Get's CPU goes on the real server"). Nothing passes or
fails. With ``--credentials`` the app verifies the request's signature against a credentials
file holding the benchmark's key (as ``api_listing.py --credentials`` serves); without, open
mode.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from uvicorn.server import ServerState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _api_floor import make_app
from api_listing import fill, signed, write_credentials

from batchrock.access.credfile import LiveDirectory
from batchrock.admin import http_config
from batchrock.api.app import BedrockApp
from batchrock.clock import SystemClock
from batchrock.service import JobService
from batchrock.settings import Settings
from batchrock.store.sqlite import SqliteStore


class KeptTransport(asyncio.Transport):
    """A connection's transport that keeps what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self.written.extend(chunks)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8765)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def connected(app: Any, guarded: bool, data_dir: Path) -> tuple[Any, KeptTransport]:
    """A protocol with its connection made: batchrock serve's (``guarded``: limits from the
    default settings) or plain uvicorn httptools."""
    if guarded:
        config = http_config(Settings(data_dir=data_dir), app, lifespan="off")
    else:
        config = uvicorn.Config(app, http="httptools", lifespan="off", log_level="warning")
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = KeptTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def per_request(
    app: Any, guarded: bool, head: bytes, requests: int, tries: int, data_dir: Path
) -> float:
    """The least CPU µs per request over ``tries`` runs of ``requests`` requests."""
    protocol, transport = connected(app, guarded, data_dir)

    async def one() -> None:
        protocol.data_received(head)
        while not protocol.cycle.response_complete:
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # what the loop runs after a response (a scheduled flush)

    for _ in range(100):
        await one()
    if not transport.written or b" 200 " not in transport.written[0][:16]:
        raise RuntimeError(f"not answered 200: {transport.written[:2]!r}")
    best = float("inf")
    for _ in range(tries):
        transport.written.clear()
        started = time.process_time_ns()
        for _ in range(requests):
            await one()
        best = min(best, (time.process_time_ns() - started) / requests / 1e3)
    protocol.connection_lost(None)
    return best


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--tries", type=int, default=5)
    parser.add_argument(
        "--credentials",
        action="store_true",
        help="verify every request's SigV4 signature against a credentials file",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchrock-get-hot-") as folder:
        work = Path(folder)
        first_id = await fill(work / "batchrock.sqlite3", 200)
        store = await SqliteStore.open(work / "batchrock.sqlite3")
        try:
            settings = Settings(data_dir=work)
            directory = None
            if args.credentials:
                credentials = write_credentials(work / "credentials.toml")
                settings = Settings(data_dir=work, credentials_file=credentials)
                directory = LiveDirectory(credentials, interval=3600)
            app = BedrockApp(JobService(store, SystemClock()), settings, directory=directory)
            target = f"/model-invocation-job/{first_id}"
            head = signed(8765, target)
            floor = make_app({target.encode(): b"{}"})
            mode = "signatures verified" if args.credentials else "open mode"
            print(f"best of {args.tries} x {args.requests} requests, {mode}, CPU µs per request")
            print("| app | plain httptools | batchrock serve's protocol (guards) |")
            print("| --- | ---: | ---: |")
            for name, each in (("floor", floor), ("batchrock", app)):
                plain = await per_request(each, False, head, args.requests, args.tries, work)
                ours = await per_request(each, True, head, args.requests, args.tries, work)
                print(f"| {name} | {plain:.1f} | {ours:.1f} |")
        finally:
            await store.close()


if __name__ == "__main__":
    uvloop.run(main())
