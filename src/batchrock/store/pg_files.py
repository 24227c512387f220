"""The files seam (:mod:`batchrock.store.files`) on the PostgreSQL job store's pool: the SQLite
version's two tables and queries (store/sqlite_files.py), in PostgreSQL's dialect, with the job
store's typed errors."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import orjson

from batchrock.clock import from_micros, to_micros
from batchrock.store.files import FileJob, StoredFile
from batchrock.store.rows import Row

if TYPE_CHECKING:
    from batchrock.store.postgres import PostgresStore

#: Created by migration 2 (store/pg_schema.py).
SCHEMA = """
CREATE TABLE files (
    file_id     text COLLATE "C" PRIMARY KEY,
    account_id  text NOT NULL,
    purpose     text NOT NULL,
    filename    text NOT NULL,
    size        bigint NOT NULL,
    created_at  bigint NOT NULL,
    expires_at  bigint,
    bucket      text NOT NULL,
    key         text NOT NULL
);
CREATE INDEX files_listing ON files (account_id, created_at, file_id);

CREATE TABLE file_jobs (
    job_id          text COLLATE "C" PRIMARY KEY,
    account_id      text NOT NULL,
    created_at      bigint NOT NULL,
    endpoint        text NOT NULL,
    input_file_id   text NOT NULL,
    metadata        jsonb,
    errors          jsonb,
    output_file_id  text,
    error_file_id   text,
    finished_at     bigint
);
CREATE INDEX file_jobs_listing ON file_jobs (account_id, created_at, job_id);
"""

_FILE_COLUMNS = "file_id, account_id, purpose, filename, size, created_at, expires_at, bucket, key"
_JOB_COLUMNS = (
    "job_id, account_id, created_at, endpoint, input_file_id, metadata, errors, "
    "output_file_id, error_file_id, finished_at"
)


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _file(row: Row) -> StoredFile:
    return StoredFile(
        file_id=row[0],
        account_id=row[1],
        purpose=row[2],
        filename=row[3],
        size=row[4],
        created_at=from_micros(row[5]),
        expires_at=None if row[6] is None else from_micros(row[6]),
        bucket=row[7],
        key=row[8],
    )


def _file_job(row: Row) -> FileJob:
    return FileJob(
        job_id=row[0],
        account_id=row[1],
        created_at=from_micros(row[2]),
        endpoint=row[3],
        input_file_id=row[4],
        metadata=row[5],
        errors=tuple(row[6]) if row[6] else (),
        output_file_id=row[7],
        error_file_id=row[8],
        finished_at=None if row[9] is None else from_micros(row[9]),
    )


class PostgresFileStore:
    """:class:`batchrock.store.files.FileStore` on the job store's connection pool."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def add_file(self, stored: StoredFile) -> None:
        async with self._store._tx() as conn:
            await conn.execute(
                f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (file_id) DO NOTHING",
                (
                    stored.file_id,
                    stored.account_id,
                    stored.purpose,
                    stored.filename,
                    stored.size,
                    to_micros(stored.created_at),
                    None if stored.expires_at is None else to_micros(stored.expires_at),
                    stored.bucket,
                    stored.key,
                ),
            )

    async def get_file(self, account_id: str, file_id: str) -> StoredFile | None:
        row = await self._store._one(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE file_id = %s AND account_id = %s",
            (file_id, account_id),
        )
        return None if row is None else _file(row)

    async def list_files(
        self,
        account_id: str,
        *,
        limit: int,
        purpose: str | None = None,
        after: str | None = None,
        descending: bool = True,
    ) -> list[StoredFile]:
        where = ["account_id = %s"]
        args: list[object] = [account_id]
        if purpose is not None:
            where.append("purpose = %s")
            args.append(purpose)
        if after is not None:
            op = "<" if descending else ">"
            where.append(
                f"(created_at, file_id) {op} (SELECT created_at, file_id FROM files "
                "WHERE file_id = %s AND account_id = %s)"
            )
            args += [after, account_id]
        order = "DESC" if descending else "ASC"
        rows = await self._store._all(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE {' AND '.join(where)} "
            f"ORDER BY created_at {order}, file_id {order} LIMIT %s",
            (*args, limit),
        )
        return [_file(r) for r in rows]

    async def delete_file(self, account_id: str, file_id: str) -> StoredFile | None:
        row = await self._store._one(
            f"DELETE FROM files WHERE file_id = %s AND account_id = %s RETURNING {_FILE_COLUMNS}",
            (file_id, account_id),
        )
        return None if row is None else _file(row)

    async def expired_files(self, before: datetime, *, limit: int) -> list[StoredFile]:
        rows = await self._store._all(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE expires_at IS NOT NULL "
            "AND expires_at <= %s ORDER BY expires_at, file_id LIMIT %s",
            (to_micros(before), limit),
        )
        return [_file(r) for r in rows]

    async def delete_file_job(self, account_id: str, job_id: str) -> bool:
        async with self._store._connection() as conn:
            cur = await conn.execute(
                "DELETE FROM file_jobs WHERE job_id = %s AND account_id = %s", (job_id, account_id)
            )
            return cur.rowcount > 0

    async def add_file_job(self, record: FileJob) -> None:
        async with self._store._tx() as conn:
            await conn.execute(
                f"INSERT INTO file_jobs ({_JOB_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s)",
                (
                    record.job_id,
                    record.account_id,
                    to_micros(record.created_at),
                    record.endpoint,
                    record.input_file_id,
                    None
                    if record.metadata is None
                    else orjson.dumps(dict(record.metadata)).decode(),
                    orjson.dumps([dict(e) for e in record.errors]).decode()
                    if record.errors
                    else None,
                    record.output_file_id,
                    record.error_file_id,
                    None if record.finished_at is None else to_micros(record.finished_at),
                ),
            )

    async def get_file_job(self, account_id: str, job_id: str) -> FileJob | None:
        row = await self._store._one(
            f"SELECT {_JOB_COLUMNS} FROM file_jobs WHERE job_id = %s AND account_id = %s",
            (job_id, account_id),
        )
        return None if row is None else _file_job(row)

    async def list_file_jobs(
        self, account_id: str, *, limit: int, after: str | None = None
    ) -> list[FileJob]:
        where, args = "account_id = %s", [account_id]
        if after is not None:
            where += (
                " AND (created_at, job_id) < (SELECT created_at, job_id FROM file_jobs "
                "WHERE job_id = %s AND account_id = %s)"
            )
            args += [after, account_id]
        rows = await self._store._all(
            f"SELECT {_JOB_COLUMNS} FROM file_jobs WHERE {where} "
            "ORDER BY created_at DESC, job_id DESC LIMIT %s",
            (*args, limit),
        )
        return [_file_job(r) for r in rows]

    async def finish_file_job(
        self,
        job_id: str,
        *,
        output_file_id: str | None,
        error_file_id: str | None,
        finished_at: datetime,
    ) -> FileJob:
        async with self._store._tx() as conn:
            await conn.execute(
                "UPDATE file_jobs SET output_file_id = %s, error_file_id = %s, finished_at = %s "
                "WHERE job_id = %s AND finished_at IS NULL",
                (output_file_id, error_file_id, to_micros(finished_at), job_id),
            )
            cur = await conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM file_jobs WHERE job_id = %s", (job_id,)
            )
            row = await cur.fetchone()
        if row is None:
            raise LookupError(job_id)
        return _file_job(row)
