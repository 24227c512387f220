"""The files seam's contract (store/files.py): every store implementation runs it, through
the ``store`` and ``second_store`` fixtures (tests/contract/conftest.py), once per
implementation in ``tests/stores.py`` STORE_FACTORIES."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from batchrock.store.base import JobStore
from batchrock.store.files import FileJob, StoredFile

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
A, B = "111111111111", "222222222222"


def a_file(n: int, account: str = A, **changes: Any) -> StoredFile:
    values: dict[str, Any] = {
        "file_id": f"file-{n:04d}",
        "account_id": account,
        "purpose": "batch",
        "filename": f"in-{n}.jsonl",
        "size": 100 + n,
        "created_at": T0 + timedelta(seconds=n),
        "expires_at": T0 + timedelta(days=30, seconds=n),
        "bucket": f"files-{account}",
        "key": f"files/file-{n:04d}",
    }
    values.update(changes)
    return StoredFile(**values)


def a_file_job(n: int, account: str = A, **changes: Any) -> FileJob:
    values: dict[str, Any] = {
        "job_id": f"job{n:09d}",
        "account_id": account,
        "created_at": T0 + timedelta(seconds=n),
        "endpoint": "/v1/chat/completions",
        "input_file_id": f"file-{n:04d}",
        "metadata": {"team": "a"},
    }
    values.update(changes)
    return FileJob(**values)


class TestFilesContract:
    async def test_a_file_is_its_owners_only(self, store: JobStore) -> None:
        await store.files.add_file(a_file(1))
        assert await store.files.get_file(A, "file-0001") == a_file(1)
        assert await store.files.get_file(B, "file-0001") is None
        assert await store.files.list_files(B, limit=10) == []
        assert await store.files.delete_file(B, "file-0001") is None
        assert await store.files.get_file(A, "file-0001") == a_file(1)

    async def test_listing_orders_filters_and_pages(self, store: JobStore) -> None:
        for n in range(5):
            await store.files.add_file(a_file(n, purpose="batch" if n % 2 else "batch_output"))
        await store.files.add_file(a_file(9, account=B))
        newest = await store.files.list_files(A, limit=10)
        assert [f.file_id for f in newest] == [f"file-{n:04d}" for n in (4, 3, 2, 1, 0)]
        page = await store.files.list_files(A, limit=2, after="file-0003")
        assert [f.file_id for f in page] == ["file-0002", "file-0001"]
        oldest = await store.files.list_files(A, limit=2, descending=False, after="file-0001")
        assert [f.file_id for f in oldest] == ["file-0002", "file-0003"]
        batch = await store.files.list_files(A, limit=10, purpose="batch")
        assert [f.file_id for f in batch] == ["file-0003", "file-0001"]
        # another account's file as the cursor shows nothing of it
        assert await store.files.list_files(A, limit=10, after="file-0009") == []

    async def test_adding_a_known_id_again_changes_nothing(self, store: JobStore) -> None:
        await store.files.add_file(a_file(1))
        await store.files.add_file(a_file(1, size=5))
        assert await store.files.get_file(A, "file-0001") == a_file(1)

    async def test_delete_returns_what_it_removed(self, store: JobStore) -> None:
        await store.files.add_file(a_file(1, expires_at=None))
        assert await store.files.delete_file(A, "file-0001") == a_file(1, expires_at=None)
        assert await store.files.get_file(A, "file-0001") is None
        assert await store.files.delete_file(A, "file-0001") is None

    async def test_file_jobs_are_per_account_and_newest_first(self, store: JobStore) -> None:
        for n in range(4):
            await store.files.add_file_job(a_file_job(n))
        await store.files.add_file_job(a_file_job(7, account=B, metadata=None))
        assert await store.files.get_file_job(A, "job000000002") == a_file_job(2)
        assert await store.files.get_file_job(B, "job000000002") is None
        listed = await store.files.list_file_jobs(A, limit=2)
        assert [j.job_id for j in listed] == ["job000000003", "job000000002"]
        more = await store.files.list_file_jobs(A, limit=5, after="job000000002")
        assert [j.job_id for j in more] == ["job000000001", "job000000000"]
        assert [j.job_id for j in await store.files.list_file_jobs(B, limit=5)] == ["job000000007"]

    async def test_errors_round_trip(self, store: JobStore) -> None:
        errors = ({"code": "invalid_json_line", "message": "m", "line": 3, "param": None},)
        await store.files.add_file_job(a_file_job(1, errors=errors))
        got = await store.files.get_file_job(A, "job000000001")
        assert got is not None and list(got.errors) == list(errors)

    async def test_results_are_recorded_once(self, store: JobStore, second_store: JobStore) -> None:
        await store.files.add_file_job(a_file_job(1))
        first = await store.files.finish_file_job(
            "job000000001", output_file_id="file-out", error_file_id=None, finished_at=T0
        )
        assert (first.output_file_id, first.error_file_id, first.finished_at) == (
            "file-out",
            None,
            T0,
        )
        later = T0 + timedelta(seconds=5)
        again = await second_store.files.finish_file_job(
            "job000000001", output_file_id="file-x", error_file_id="file-y", finished_at=later
        )
        assert again == first
        with pytest.raises(LookupError):
            await store.files.finish_file_job(
                "nosuchjob", output_file_id=None, error_file_id=None, finished_at=T0
            )

    async def test_a_record_is_deleted_by_its_owner_only(
        self, store: JobStore, second_store: JobStore
    ) -> None:
        # A batch's record is written before its job; one whose job was never made is removed.
        await store.files.add_file_job(a_file_job(1))
        await store.files.add_file_job(a_file_job(2))
        assert await store.files.delete_file_job(B, "job000000001") is False
        assert await store.files.get_file_job(A, "job000000001") is not None
        assert await second_store.files.delete_file_job(A, "job000000001") is True
        assert await store.files.get_file_job(A, "job000000001") is None
        assert await store.files.delete_file_job(A, "job000000001") is False
        assert [r.job_id for r in await store.files.list_file_jobs(A, limit=10)] == ["job000000002"]

    async def test_expired_files_of_every_account_soonest_first(self, store: JobStore) -> None:
        await store.files.add_file(a_file(1, expires_at=T0 + timedelta(hours=2)))
        await store.files.add_file(a_file(2, B, expires_at=T0 + timedelta(hours=1)))
        await store.files.add_file(a_file(3, expires_at=None))
        await store.files.add_file(a_file(4, expires_at=T0 + timedelta(hours=3)))
        assert await store.files.expired_files(T0, limit=10) == []
        due = await store.files.expired_files(T0 + timedelta(hours=2), limit=10)
        assert [f.file_id for f in due] == ["file-0002", "file-0001"]  # at the instant: due
        assert due[0] == a_file(2, B, expires_at=T0 + timedelta(hours=1))
        one = await store.files.expired_files(T0 + timedelta(days=9), limit=1)
        assert [f.file_id for f in one] == ["file-0002"]
