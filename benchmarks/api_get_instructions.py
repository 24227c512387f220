"""Gets through an HTTP protocol in-process, to be counted in instructions under callgrind.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/api_get_instructions.py --app batchrock --requests 100
    (the same with --requests 1100: the difference of the two "Collected" counts over 1000
    is the instructions a Get)

Timings on the two shared cores move by tens of percent with the load; instruction counts
do not. The path is ``api_get_hot.py``'s (the signed head fed to ``data_received``, the app
run until the response is written to a transport that keeps the bytes), after 200 Gets to
warm up: ``--app`` the floor's or batchrock's (open mode, a fresh store of 20 jobs),
``--protocol`` serve's (guards and api/cycle.py) or plain uvicorn httptools. Prints nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _api_floor import make_app
from api_get_hot import connected
from api_listing import fill, signed

from batchrock.api.app import BedrockApp
from batchrock.clock import SystemClock
from batchrock.service import JobService
from batchrock.settings import Settings
from batchrock.store.sqlite import SqliteStore


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", choices=["floor", "batchrock"], default="batchrock")
    parser.add_argument("--protocol", choices=["serve", "plain"], default="serve")
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchrock-get-instructions-") as folder:
        work = Path(folder)
        first_id = await fill(work / "batchrock.sqlite3", 20)
        store = await SqliteStore.open(work / "batchrock.sqlite3")
        try:
            target = f"/model-invocation-job/{first_id}"
            app: Any = (
                make_app({target.encode(): b"{}"})
                if args.app == "floor"
                else BedrockApp(JobService(store, SystemClock()), Settings(data_dir=work))
            )
            protocol, transport = connected(app, args.protocol == "serve", work)
            head = signed(8765, target)
            for _ in range(200 + args.requests):
                protocol.data_received(head)
                while not protocol.cycle.response_complete:
                    await asyncio.sleep(0)
                await asyncio.sleep(0)
                if b" 200 " not in transport.written[0][:16]:
                    raise RuntimeError(f"not answered 200: {transport.written[:1]!r}")
                transport.written.clear()
            protocol.connection_lost(None)
        finally:
            await store.close()


if __name__ == "__main__":
    uvloop.run(main())
