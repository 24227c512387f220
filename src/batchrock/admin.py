"""The service's own sub-commands: ``serve``, ``worker``, ``models`` and ``demo``.

Every option is a :class:`batchrock.settings.Settings` field: flags are generated from that one
table (``--data-dir`` for ``data_dir``), so flags > environment > config file > defaults holds
for every setting without a second list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from batchrock import __version__
from batchrock import settings as settings_mod
from batchrock.cli.main import ADMIN_COMMANDS
from batchrock.clock import Clock, SystemClock
from batchrock.settings import Settings, SettingsError
from batchrock.store.base import JobStore

if TYPE_CHECKING:
    from batchrock.backends.routing import BackendResolver
    from batchrock.engine.grants import BucketPolicy
    from batchrock.service import JobService

log = logging.getLogger("batchrock")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchrock",
        description="Self-hosted Amazon Bedrock batch inference.",
    )
    parser.add_argument("--version", action="version", version=f"batchrock {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, description in ADMIN_COMMANDS.items():
        sub = commands.add_parser(name, help=description, description=description)
        _add_setting_flags(sub)
    return parser


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for f in settings_mod.fields_table():
        flag = "--" + f.name.replace("_", "-")
        env = settings_mod.env_name(f.name)
        help_text = f"{f.metadata.get('help', '')} [env {env}]"
        if str(f.type).startswith("bool"):
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # `models` and `demo` take arguments of their own (model ids, --records): pass them on.
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if rest and args.command not in {"models", "demo"}:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    flags = {f.name: getattr(args, f.name, None) for f in settings_mod.fields_table()}
    try:
        settings = settings_mod.load(flags)
    except SettingsError as exc:
        print(f"batchrock: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    command: str = args.command
    if command == "serve":
        from batchrock.api.guard import open_mode_refusal

        refusal = open_mode_refusal(settings)
        if refusal is not None:
            print(f"batchrock serve: {refusal}", file=sys.stderr)
            return 2
    if command in {"serve", "worker"}:
        try:
            bucket_policy(settings)
        except SettingsError as exc:
            print(f"batchrock {command}: {exc}", file=sys.stderr)
            return 2
        from batchrock.backends.routing import ConfigError

        try:
            resolver = _resolver(settings) if command == "worker" or settings.engine else None
        except ConfigError as exc:
            print(f"batchrock {command}: {exc}", file=sys.stderr)
            return 2
        if command == "serve":
            return _run(serve(settings, resolver))
        assert resolver is not None
        return _run(worker(settings, resolver))
    if command == "models":
        from batchrock.backends import cli as models_cli

        return models_cli.main(rest, settings)
    from batchrock import demo

    return demo.main(rest, settings)


def _resolver(settings: Settings) -> BackendResolver:
    """Build the model routes up front, so a bad routes file is one clear line at start-up."""
    from batchrock.backends.routing import build_resolver

    return build_resolver(settings)


def _run(coro: Any) -> int:
    try:
        asyncio.run(coro)
    except KeyboardInterrupt:
        pass
    return 0


def bucket_policy(settings: Settings) -> BucketPolicy:
    """Which buckets each account's jobs may use: the one place serve and worker get it from.

    Without a credentials file this is open mode (any account, any bucket). With one, the
    accounts it lists and their ``buckets`` patterns decide; that directory is not part of
    this build yet, so a credentials file is refused rather than silently ignored.
    """
    from batchrock.engine.grants import OpenBuckets

    if settings.credentials_file is None:
        return OpenBuckets()
    raise SettingsError(
        f"credentials_file {settings.credentials_file}: accounts from a credentials file are "
        f"not supported by this build (see docs/access.md)"
    )


def make_clock(settings: Settings) -> Clock:
    return SystemClock(settings.time_scale)


async def open_store(settings: Settings) -> JobStore:
    from batchrock.store.sqlite import SqliteStore

    return await SqliteStore.open(settings.database_path)


@contextlib.asynccontextmanager
async def engine_running(
    settings: Settings,
    store: JobStore,
    clock: Clock,
    resolver: BackendResolver,
    service: JobService | None = None,
) -> AsyncIterator[None]:
    """Run one engine in the current event loop for the duration of the block; ``service``
    (the API's, in ``serve``) wakes it when a job is created or stopped."""
    from batchrock.engine import Engine

    engine = Engine(settings, store, clock, resolver, buckets=bucket_policy(settings))
    if service is not None:
        service.on_change = engine.wake
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop), name="engine")
    try:
        yield
    finally:
        if service is not None:
            service.on_change = None
        stop.set()
        await task
        await resolver.aclose()


async def serve(settings: Settings, resolver: BackendResolver | None) -> None:
    import uvicorn

    from batchrock.api.app import BedrockApp
    from batchrock.service import JobService

    store = await open_store(settings)
    clock = make_clock(settings)
    service = JobService(
        store, clock, max_unfinished_per_model=settings.quota_max_unfinished_jobs_per_model
    )

    def lifespan() -> contextlib.AbstractAsyncContextManager[None]:
        if resolver is not None:
            return engine_running(settings, store, clock, resolver, service)
        return contextlib.nullcontext()

    app = BedrockApp(service, settings, lifespan=lifespan)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=settings.log_level.lower() == "debug",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    log.info(
        "batchrock %s serving http://%s:%d (data dir %s)",
        __version__,
        settings.host,
        settings.port,
        settings.data_dir,
    )
    try:
        await server.serve()
    finally:
        await store.close()


async def worker(settings: Settings, resolver: BackendResolver) -> None:
    store = await open_store(settings)
    clock = make_clock(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("batchrock worker running on %s", settings.data_dir)
    try:
        async with engine_running(settings, store, clock, resolver):
            await stop.wait()
    finally:
        await store.close()


if __name__ == "__main__":
    raise SystemExit(main())
