"""The service's own sub-commands: ``serve``, ``worker``, ``models``, ``demo`` (and ``keys``,
in :mod:`batchrock.keys`).

Every option is a :class:`batchrock.settings.Settings` field: flags are generated from that one
table (``--data-dir`` for ``data_dir``), so flags > environment > config file > defaults holds
for every setting without a second list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from batchrock import __version__, datadir, processes
from batchrock import settings as settings_mod
from batchrock.cli.main import ADMIN_COMMANDS
from batchrock.clock import Clock, SystemClock
from batchrock.settings import Settings, SettingsError
from batchrock.store.base import JobStore

if TYPE_CHECKING:
    from batchrock.access.credfile import LiveDirectory
    from batchrock.backends.routing import BackendResolver
    from batchrock.catalogue import ModelCatalogue
    from batchrock.engine.grants import BucketPolicy
    from batchrock.objects.base import ObjectStore
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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:  # sub-commands of its own, not the settings' flags
        from batchrock import keys

        return keys.main(argv[1:])
    parser = _parser()
    # `models` and `demo` take arguments of their own (model ids, --records): pass them on.
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in {"models", "demo"}:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    flags = {f.name: getattr(args, f.name, None) for f in settings_mod.fields_table()}
    try:
        settings = settings_mod.load(flags)
    except SettingsError as exc:
        print(f"batchrock {args.command}: {exc}", file=sys.stderr)
        return 2
    from batchrock import logs

    logs.configure(settings.log_level, settings.log_format)
    command: str = args.command
    if command == "serve" or (command == "worker" and settings.metrics_port):
        from batchrock.api.guard import open_mode_refusal

        refusal = open_mode_refusal(settings)
        if refusal is not None:
            print(f"batchrock {command}: {refusal}", file=sys.stderr)
            return 2
    if command in {"serve", "worker"}:
        from batchrock.access.credfile import CredentialsFileError
        from batchrock.events.sinks import check_settings

        try:
            directory = open_directory(settings)
            tls = tls_options(settings) if command == "serve" else None
            check_settings(settings)
            factory = loop_factory(settings.event_loop)
        except (SettingsError, CredentialsFileError) as exc:
            print(f"batchrock {command}: {exc}", file=sys.stderr)
            return 2
        from batchrock.backends.routing import ConfigError

        count = processes.process_count(settings) if command == "serve" else 1
        if count > 1:
            logs.name_process(0)  # the one with the engine; each forked one names itself
        # Several API processes count their metrics in files of a shared folder; the backends
        # built next keep this process's Metrics, so it must count there from the start.
        shared = _share_metrics(settings) if count > 1 else None
        try:
            resolver = _resolver(settings) if command == "worker" or settings.engine else None
            catalogue = model_catalogue(settings, resolver)
        except ConfigError as exc:
            print(f"batchrock {command}: {exc}", file=sys.stderr)
            if shared is not None:
                shutil.rmtree(shared, ignore_errors=True)
            return 2
        if command == "serve":
            if shared is not None:
                socks = _listen_or_say(command, settings.host, settings.port, count)
                if socks is None:
                    shutil.rmtree(shared, ignore_errors=True)
                    return 1
                return _serve_processes(
                    settings, resolver, socks, directory, tls, catalogue, shared
                )
            sock = _listen_or_say(command, settings.host, settings.port)
            if sock is None:
                return 1
            return _run(
                serve(settings, resolver, sock, directory=directory, tls=tls, catalogue=catalogue),
                command,
                factory,
            )
        assert resolver is not None
        metrics_sock = None
        if settings.metrics_port:
            metrics_sock = _listen_or_say(command, settings.host, settings.metrics_port)
            if metrics_sock is None:
                return 1
        return _run(
            worker(settings, resolver, directory=directory, metrics_sock=metrics_sock),
            command,
            factory,
        )
    if command == "models":
        from batchrock.backends import cli as models_cli

        return models_cli.main(rest, settings)
    from batchrock import demo

    return demo.main(rest, settings)


def _serve_processes(
    settings: Settings,
    resolver: BackendResolver | None,
    socks: list[socket.socket],
    directory: LiveDirectory | None,
    tls: tuple[str, str] | None,
    catalogue: ModelCatalogue,
    folder: Path,
) -> int:
    """``serve`` in one process per socket of ``socks`` (bound to one port with
    :func:`listen_shared`; setting ``api_processes``; see :mod:`batchrock.processes`): this
    one with the engine on the first, the others forked API-only; ``folder`` is what they
    share (:func:`_share_metrics`)."""
    from batchrock import logs
    from batchrock.shared_state import SharedState

    factory = loop_factory(settings.event_loop)  # checked by main already
    SharedState.create(folder / processes.SHARED_STATE)

    def child(role: processes.Child) -> int:
        logs.name_process(role.index)
        for index, other in enumerate(socks):
            if index != role.index:
                other.close()  # its own only: the kernel spreads connections over the sockets
        return _run(
            serve(
                settings,
                None,
                socks[role.index],
                directory=directory,
                tls=tls,
                catalogue=catalogue,
                child=role,
            ),
            "serve",
            factory,
        )

    parent = processes.fork_children(len(socks), folder, child)
    for other in socks[1:]:
        other.close()
    try:
        code = _run(
            serve(
                settings,
                resolver,
                socks[0],
                directory=directory,
                tls=tls,
                catalogue=catalogue,
                parent=parent,
            ),
            "serve",
            factory,
        )
    finally:
        parent.stop_now()
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if parent.failed else code


def _share_metrics(settings: Settings) -> Path:
    """The folder several API processes share (removed when ``serve`` ends), with this
    process's metrics counting in its files from now on."""
    from batchrock import metrics

    datadir.prepare(settings)  # once, before forking: the umask is inherited
    folder = processes.run_folder(settings.data_dir)
    metrics.share_between_processes(folder / "metrics")
    return folder


def _resolver(settings: Settings) -> BackendResolver:
    """Build the model routes up front, so a bad routes file is one clear line at start-up."""
    from batchrock.backends.routing import build_resolver

    return build_resolver(settings)


def model_catalogue(settings: Settings, resolver: BackendResolver | None = None) -> ModelCatalogue:
    """What CreateModelInvocationJob accepts: any id (``allow_any_model``), or the shipped
    catalogue plus every id a route of the models config matches. Raises ConfigError when
    the routes file is unusable."""
    from batchrock.catalogue import AnyModel, RoutedOrCatalogued, load_catalogue

    if settings.allow_any_model:
        return AnyModel()
    from batchrock.backends.routing import load_routes, match_route

    if resolver is not None:
        routes = resolver.routes
    else:
        routes = load_routes(settings.models_config) if settings.models_config else []
    return RoutedOrCatalogued(
        load_catalogue(), lambda model_id: match_route(routes, model_id) is not None
    )


def open_directory(settings: Settings) -> LiveDirectory | None:
    """The credentials file's accounts (re-read as it changes), or ``None``: open mode.
    A missing, unreadable, public or invalid file raises CredentialsFileError (one line)."""
    if settings.credentials_file is None:
        return None
    from batchrock.access.credfile import LiveDirectory

    return LiveDirectory(settings.credentials_file)


def tls_options(settings: Settings) -> tuple[str, str] | None:
    """uvicorn's TLS options; the certificate and key are loaded once here, so a wrong path or
    a key that does not match is one line at start-up rather than a traceback."""
    if settings.tls_cert is None and settings.tls_key is None:
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise SettingsError("--tls-cert and --tls-key must be given together")
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.tls_cert, settings.tls_key
        )
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"cannot use TLS certificate {settings.tls_cert} with key {settings.tls_key}: {exc}"
        ) from None
    return str(settings.tls_cert), str(settings.tls_key)


class StoreUnavailable(Exception):
    """The job store could not be opened at start-up (an unreachable database, say)."""


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the ``event_loop`` setting names (None: asyncio's own)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SettingsError(
                "setting event_loop: uvloop is not installed (pip install uvloop), "
                "or set event_loop = asyncio"
            ) from None
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: the running loop's package, for the start-up line."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def _run(
    coro: Any, command: str, factory: Callable[[], asyncio.AbstractEventLoop] | None = None
) -> int:
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(coro)
    except KeyboardInterrupt:
        pass
    except StoreUnavailable as exc:
        # One line, as for a bad setting: the reason, never the URL (it may hold a password).
        print(f"batchrock {command}: {exc}", file=sys.stderr)
        return 2
    return 0


def bucket_policy(settings: Settings, directory: LiveDirectory | None) -> BucketPolicy:
    """Which buckets each account's jobs may use: the one place serve and worker get it from.

    Without a credentials file this is open mode (any account, any bucket). With one, the
    accounts it lists and their ``buckets`` patterns decide, as the file is now (the
    directory follows it).
    """
    from batchrock.engine.grants import OpenBuckets, WithFilesBuckets

    if directory is None:
        if settings.credentials_file is not None:  # pragma: no cover - main opens it first
            raise SettingsError("a credentials file is set but was not opened")
        return WithFilesBuckets(OpenBuckets(), settings.files_bucket_prefix)
    return WithFilesBuckets(directory, settings.files_bucket_prefix)


def make_clock(settings: Settings) -> Clock:
    return SystemClock(settings.time_scale)


async def open_store(settings: Settings) -> JobStore:
    """The job store ``settings`` name: PostgreSQL at ``database_url``, else the embedded
    SQLite file in the data dir."""
    if settings.database_url is not None:
        from batchrock.store.base import StoreError
        from batchrock.store.postgres import PostgresStore

        try:
            return await PostgresStore.open(settings.database_url)
        except StoreError as exc:
            raise StoreUnavailable(f"cannot open the job database (database_url): {exc}") from exc
    from batchrock.store.sqlite import SqliteStore

    return await SqliteStore.open(settings.database_path)


@contextlib.asynccontextmanager
async def engine_running(
    settings: Settings,
    store: JobStore,
    clock: Clock,
    resolver: BackendResolver,
    service: JobService | None = None,
    directory: LiveDirectory | None = None,
) -> AsyncIterator[None]:
    """Run one engine in the current event loop for the duration of the block; ``service``
    (the API's, in ``serve``) wakes it when a job is created or stopped; ``directory`` (the
    credentials file's accounts) grants buckets."""
    from batchrock.engine import Engine

    buckets = bucket_policy(settings, directory)
    engine = Engine(settings, store, clock, resolver, buckets=buckets)
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


@contextlib.asynccontextmanager
async def events_running(settings: Settings, store: JobStore, clock: Clock) -> AsyncIterator[None]:
    """Deliver job state-change events to the configured sinks for the duration of the block
    (docs/events.md); nothing when none is configured. Each sink's cursor is taken before the
    block starts, so a new sink sees every job created from then on."""
    from batchrock.events.outbox import Outbox
    from batchrock.events.sinks import sinks_from

    sinks = sinks_from(settings, clock)
    if not sinks:
        yield
        return
    outbox = Outbox(settings, store, clock, sinks)
    await outbox.start()
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop), name="events")
    log.info("job events go to %s", ", ".join(s.name for s in sinks))
    try:
        yield
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def expired_files_removed(
    store: JobStore, objects: ObjectStore, clock: Clock
) -> AsyncIterator[None]:
    """Remove expired OpenAI files (bytes and records) every few minutes for the duration of
    the block (docs/openai.md)."""
    from batchrock.api.openai.files import sweep_expired

    stop = asyncio.Event()
    task = asyncio.create_task(sweep_expired(store.files, objects, clock, stop), name="expiry")
    try:
        yield
    finally:
        stop.set()
        await task


@overload
def _listen_or_say(command: str, host: str, port: int) -> socket.socket | None: ...
@overload
def _listen_or_say(
    command: str, host: str, port: int, count: int
) -> list[socket.socket] | None: ...
def _listen_or_say(
    command: str, host: str, port: int, count: int | None = None
) -> socket.socket | list[socket.socket] | None:
    """:func:`listen` (:func:`listen_shared` with a ``count``), or ``None`` after one line
    saying why not."""
    try:
        return listen(host, port) if count is None else listen_shared(host, port, count)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        print(f"batchrock {command}: cannot listen on {host}:{port}: {reason}", file=sys.stderr)
        return None


def http_config(settings: Settings, app: Any, **options: Any) -> Any:
    """uvicorn's configuration for one of our listeners: keep-alive, client timeouts, the
    connection limit and the head size bound from the settings, then ``options``."""
    import uvicorn

    from batchrock import logs
    from batchrock.api.connections import Limits, protocol_class

    limits = Limits(
        keepalive_timeout=settings.http_keepalive_timeout_seconds,
        client_timeout=settings.http_client_timeout_seconds,
        max_connections=settings.http_max_connections,
        max_head_bytes=settings.max_head_bytes,
        bad_request_log_seconds=settings.bad_request_log_seconds,
    )
    return uvicorn.Config(
        app,
        # httptools, with keep-alive, client timeouts, the connection and head size limits
        http=protocol_class(limits),
        # HTTP/1.1 only: no WebSocket upgrade, even where a WebSocket library is installed.
        ws="none",
        log_level=settings.log_level.lower(),
        access_log=settings.log_level.lower() == "debug",
        # The scheme must be the connection's own: bearer tokens are refused over plain HTTP,
        # and an X-Forwarded-Proto header must not talk the server out of that.
        proxy_headers=False,
        # JSON logs: uvicorn's lines go through the root logger's JSON handler too.
        log_config=None
        if settings.log_format == "json"
        else logs.uvicorn_log_config(uvicorn.config.LOGGING_CONFIG),
        **options,
    )


def listen_shared(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one port (``SO_REUSEPORT``), one for each API process:
    the kernel spreads new connections evenly over them. One socket shared by every process
    would not: the first process to wake takes every connection waiting, and under load of
    long keep-alive connections one process then serves most clients. Port 0 picks one free
    port for them all.

    A port where anything listens already is refused (``EADDRINUSE``), as for one socket:
    the port is first bound once without ``SO_REUSEPORT``, which no listener allows, so a
    second server of the same user cannot silently join the group."""
    with listen(host, port) as probe:
        port = probe.getsockname()[1]
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(listen(host, port, reuse_port=True))
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """The API's listening socket, bound before anything starts, so that a busy port or a bad
    address is one clear line and "serving" is printed only once the socket is ours."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def freeze_startup_objects() -> None:
    """Move what start-up built (the botocore model, compiled patterns, modules: hundreds of
    thousands of objects that live as long as the process) out of the garbage collector's
    reach. Otherwise every full collection walks them all again, and a request that
    allocates many objects (a page of 1000 jobs) triggers one every couple of requests: that
    was more than half the CPU of large listings (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()


async def serve(
    settings: Settings,
    resolver: BackendResolver | None,
    sock: socket.socket | None = None,
    *,
    directory: LiveDirectory | None = None,
    tls: tuple[str, str] | None = None,
    catalogue: ModelCatalogue | None = None,
    parent: processes.Parent | None = None,
    child: processes.Child | None = None,
) -> None:
    """Serve the API on ``sock`` (bound with :func:`listen`; bound here when not given);
    ``catalogue`` (built here from the settings when not given) decides which model ids
    Create accepts. With ``parent``, other processes serve the same socket (this one runs
    the engine, passes signals on and waits for them); ``child`` is one of those: API only."""

    from batchrock.api.app import BedrockApp
    from batchrock.api.openai.app import OpenAIApi
    from batchrock.objects import build_object_store
    from batchrock.service import JobService

    sock = sock or listen(settings.host, settings.port)
    datadir.prepare(settings)
    store = await open_store(settings)
    clock = make_clock(settings)
    service = JobService(
        store,
        clock,
        max_unfinished_per_model=settings.quota_max_unfinished_jobs_per_model,
        catalogue=model_catalogue(settings, resolver) if catalogue is None else catalogue,
    )

    host, port = sock.getsockname()[:2]

    @contextlib.asynccontextmanager
    async def child_lifespan() -> AsyncIterator[None]:
        assert child is not None
        service.on_change = child.wake_engine
        with child.watching_parent(server.stop):
            log.info("API process %d of %d serving", child.index + 1, child.count)
            yield

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        engine: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()
        if resolver is not None:
            engine = engine_running(settings, store, clock, resolver, service, directory)
        others: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()
        if parent is not None:
            others = parent.supervising(
                wake=service.changed, fail=server.stop, tick=app.metrics.process.publish_shared
            )
        async with (
            events_running(settings, store, clock),
            engine,
            expired_files_removed(store, objects, clock),
            others,  # last in: on the way out, the other processes are stopped first
        ):
            # Only now: the socket is bound and listening, and the engine has started.
            log.info(
                "batchrock %s serving %s://%s:%d (data dir %s; %s%s; event loop %s)",
                __version__,
                "https" if tls else "http",
                f"[{host}]" if ":" in host else host,
                port,
                settings.data_dir,
                f"credentials from {directory.path}" if directory else "open mode: any credentials",
                f"; {parent.count} API processes" if parent else "",
                loop_name(),
            )
            yield

    role = child or parent
    shared = None
    if role is not None:
        from batchrock.shared_state import SharedState

        shared = SharedState(role.shared_state)
    app = BedrockApp(
        service,
        settings,
        lifespan=child_lifespan if child is not None else lifespan,
        directory=directory,
        process_index=child.index if child is not None else 0,
        shared=shared,
    )
    objects = build_object_store(settings)
    app.openai = OpenAIApi(service, objects, settings, app.gate)
    config = http_config(
        settings,
        app,
        lifespan="on",
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    server = _make_server(config, parent)
    freeze_startup_objects()
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
        await objects.aclose()
        await store.close()
        if shared is not None:
            shared.close()


def _make_server(config: Any, parent: processes.Parent | None) -> Any:
    """uvicorn's server, accepting new connections in batches (api/accepting.py), with a
    ``stop()`` and, in a parent of other API processes, every SIGTERM/SIGINT passed on to them
    as it arrives (they finish their requests meanwhile)."""
    from batchrock.api.accepting import BatchAcceptingServer

    class Server(BatchAcceptingServer):
        def stop(self) -> None:
            self.should_exit = True

        def handle_exit(self, sig: int, frame: Any) -> None:
            if parent is not None:
                parent.signal_children(signal.SIGTERM)
            super().handle_exit(sig, frame)

    return Server(config)


async def worker(
    settings: Settings,
    resolver: BackendResolver,
    *,
    directory: LiveDirectory | None = None,
    metrics_sock: socket.socket | None = None,
) -> None:
    """Run an engine until SIGINT/SIGTERM; with ``metrics_sock`` (bound with :func:`listen`
    at ``metrics_port``), serve its ``/metrics`` there meanwhile."""
    datadir.prepare(settings)
    store = await open_store(settings)
    clock = make_clock(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("batchrock worker running on %s (event loop %s)", settings.data_dir, loop_name())
    try:
        async with (
            events_running(settings, store, clock),
            engine_running(settings, store, clock, resolver, directory=directory),
            _metrics_listener(settings, store, metrics_sock),
        ):
            await stop.wait()
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _metrics_listener(
    settings: Settings, store: JobStore, sock: socket.socket | None
) -> AsyncIterator[None]:
    """A worker's ``GET /metrics`` on ``sock`` for the duration of the block (nothing without
    one)."""
    if sock is None:
        yield
        return
    from batchrock.api.accepting import BatchAcceptingServer
    from batchrock.api.metrics_app import MetricsApp

    config = http_config(settings, MetricsApp(settings, store), lifespan="off")

    class Listener(BatchAcceptingServer):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The worker handles SIGINT/SIGTERM (its stop event) and ends the listener itself.
            yield

    server = Listener(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="metrics-listener")
    host, port = sock.getsockname()[:2]
    log.info("worker metrics at http://%s:%d/metrics", f"[{host}]" if ":" in host else host, port)
    try:
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()


if __name__ == "__main__":
    raise SystemExit(main())
