"""A real PostgreSQL server of the tests' own: the machine's server binaries (Debian's
``postgresql`` package; the Makefile installs it on a fresh CI machine), a cluster in a
temporary folder, listening on a free loopback port, for the whole session.

``initdb`` and ``postgres`` refuse to run as root, and the tests run as root here and in CI:
then the server runs as the ``postgres`` user the package creates (``runuser``), in a folder
of its own that user owns. As another user the server simply runs as that user.

Each test gets a fresh database, copied from a template that already holds the schema
(``CREATE DATABASE ... TEMPLATE``: a few milliseconds, no migrations per test).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.conftest import free_port

#: The user the server runs as when the tests run as root.
SERVER_USER = "postgres"
#: The role the tests connect as (the cluster's superuser, trust authentication on loopback).
ROLE = "batchrock"
#: The database every test database is copied from (migrated once per session).
TEMPLATE = "batchrock_template"


def server_bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are: Debian keeps them off PATH, under
    /usr/lib/postgresql/<version>/bin (the newest wins); else ``pg_config --bindir``."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    return None


@dataclass
class PgServer:
    """A running server: :meth:`url` of a database on it, :meth:`new_database`."""

    port: int
    folder: Path
    #: The address this process reaches the server at.
    host: str = "127.0.0.1"
    _names = itertools.count()

    def url(self, database: str = "postgres", host: str | None = None) -> str:
        """A database's URL, at ``host`` (another of the server's addresses) when given."""
        return f"postgresql://{ROLE}@{host or self.host}:{self.port}/{database}"

    def new_database(self, template: str = TEMPLATE) -> str:
        """A fresh, empty database copied from ``template``; its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_server_user(cmd: list[str], wrap: Sequence[str] = ()) -> list[str]:
    if os.geteuid() != 0:
        return [*wrap, *cmd]
    return [*wrap, "runuser", "-u", SERVER_USER, "--", *cmd]


@contextlib.contextmanager
def pg_server(
    listen: str = "127.0.0.1", reach: str = "127.0.0.1", wrap: Sequence[str] = ()
) -> Iterator[PgServer]:
    """Start a throwaway cluster (no fsync: the tests never survive an OS crash) and stop and
    remove it after the block.

    By default it listens on loopback only. The multi-host test runs it inside a network
    namespace of its own: ``wrap`` prefixes the command that starts it (``ip netns exec NS``),
    ``listen`` is ``*`` (every address of that namespace, which then trusts the networks it is
    directly attached to) and ``reach`` is the address the tests connect to.
    """
    bindir = server_bindir()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL server binaries not found (initdb): "
            "apt-get install -y postgresql postgresql-contrib (make test does)"
        )
    folder = Path(tempfile.mkdtemp(prefix="batchrock-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVER_USER)
        os.chown(folder, user.pw_uid, user.pw_gid)
    data = folder / "data"
    log = folder / "server.log"
    port = free_port()
    run = {"check": True, "capture_output": True, "text": True}
    try:
        subprocess.run(
            _as_server_user(
                [
                    *(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", ROLE),
                    *("-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"),
                ]
            ),
            **run,  # type: ignore[arg-type]
        )
        if listen != "127.0.0.1":
            with (data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all samenet trust\n")
        options = (
            f"-c listen_addresses='{listen}' -p {port} -k {folder} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        subprocess.run(
            _as_server_user(
                [
                    *(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60"),
                    *("-o", options, "start"),
                ],
                wrap,
            ),
            **run,  # type: ignore[arg-type]
        )
    except subprocess.CalledProcessError as exc:
        server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{server_log}") from exc
    server = PgServer(port=port, folder=folder, host=reach)
    try:
        _wait_ready(server)
        yield server
    finally:
        subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(server: PgServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(server.url(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def listeners(url: str) -> int:
    """How many connections to ``url``'s database are LISTENing: one per engine that has
    started (the PostgreSQL store subscribes each engine to its channel)."""
    return sessions(url, "query LIKE 'LISTEN %%'")


def sessions_left(url: str, timeout: float = 10.0) -> int:
    """How many connections to ``url``'s database are still open once the server has seen
    every closed one end (a backend leaves pg_stat_activity a moment after its client
    closed the connection): 0 as soon as none is, else the count after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := sessions(url)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def sessions(url: str, where: str = "true") -> int:
    """How many connections to ``url``'s database (this count's own aside) are open, of
    those ``where`` (SQL on pg_stat_activity) holds for."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            f"AND pid <> pg_backend_pid() AND ({where})"
        ).fetchone()
    return int(row[0]) if row else 0


def create_template(server: PgServer) -> None:
    """Create :data:`TEMPLATE` and migrate it, by opening the store on it once."""
    import asyncio

    from batchrock.store.postgres import PostgresStore

    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')

    async def migrate() -> None:
        store = await PostgresStore.open(server.url(TEMPLATE))
        await store.close()

    asyncio.run(migrate())
