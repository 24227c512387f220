"""Store factories: how the contract suite and the engine harness get a store, whichever
implementation it is.

A factory stands for one fresh, empty database (one per test). It opens any number of
connections to it (``open``: as separate processes would each have their own) and names it by
a URL that :func:`open_url` opens in another process (the multi-process races).

Adding a store to every contract test takes a fixture giving its factory, named in
:data:`STORE_FACTORIES` (``tests/conftest.py`` defines ``sqlite_store_factory``), and its URL
scheme in :data:`OPENERS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from batchrock.store.base import JobStore
from batchrock.store.postgres import PostgresStore
from batchrock.store.sqlite import SqliteStore

#: The fixtures (by name) giving a :class:`StoreFactory` each: every contract test runs once
#: per entry.
STORE_FACTORIES = ["sqlite_store_factory", "pg_store_factory"]


class StoreFactory(Protocol):
    """One fresh database of one store implementation."""

    #: The implementation's short name (test ids).
    name: str

    @property
    def url(self) -> str:
        """Where the database is: :func:`open_url` opens it in any process."""
        ...

    async def open(self) -> JobStore:
        """A new connection to the database, as a separate process would have."""
        ...

    def open_sync(self) -> JobStore:
        """The same, made outside any event loop (the engine harness builds its store before
        the test's loop runs); a store may connect on its first call."""
        ...


@dataclass(frozen=True)
class SqliteFactory:
    path: Path
    name: str = "sqlite"

    @property
    def url(self) -> str:
        return f"sqlite:{self.path}"

    async def open(self) -> JobStore:
        return await SqliteStore.open(self.path)

    def open_sync(self) -> JobStore:
        return SqliteStore.open_sync(self.path)


@dataclass(frozen=True)
class PostgresFactory:
    """A fresh database on the tests' own PostgreSQL server (tests/pg.py)."""

    url: str
    name: str = "postgres"

    async def open(self) -> JobStore:
        return await PostgresStore.open(self.url, max_size=4)

    def open_sync(self) -> JobStore:
        return PostgresStore.open_sync(self.url, max_size=4)


async def _open_sqlite(url: str) -> JobStore:
    return await SqliteStore.open(Path(url.removeprefix("sqlite:")))


#: URL scheme -> how to open a store at such a URL.
OPENERS: dict[str, Callable[[str], Awaitable[JobStore]]] = {
    "sqlite": _open_sqlite,
    "postgresql": PostgresStore.open,
}


async def open_url(url: str) -> JobStore:
    """Open the store a factory's :attr:`StoreFactory.url` names (in this process)."""
    scheme = url.split(":", 1)[0]
    if scheme not in OPENERS:
        raise ValueError(f"no store opens {url!r}")
    return await OPENERS[scheme](url)
