"""The contract suite's stores: ``store`` and ``second_store`` (another connection to the same
database, as a second process would have), once per implementation in
``tests/stores.py`` STORE_FACTORIES."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from batchrock.store.base import JobStore
from tests.stores import StoreFactory


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[JobStore]:
    opened = await store_factory.open()
    yield opened
    await opened.close()


@pytest.fixture
async def second_store(store_factory: StoreFactory, store: JobStore) -> AsyncIterator[JobStore]:
    other = await store_factory.open()
    yield other
    await other.close()
