"""The files seam (:mod:`batchrock.store.files`) on the job store's SQLite connection.

Two tables of their own (created with the job store's schema, never altered), written in
the same ``BEGIN IMMEDIATE`` discipline and with the same typed errors and lock waits off the
event loop (``sqlite._typed_errors``); queries are indexed and short, so they run on the
event loop as the job store's do.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

import orjson

from batchrock.clock import from_micros, to_micros
from batchrock.store.files import FileJob, StoredFile
from batchrock.store.sqlite import _typed_errors, _write

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    file_id     TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    filename    TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    bucket      TEXT NOT NULL,
    key         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_listing ON files (account_id, created_at, file_id);
CREATE INDEX IF NOT EXISTS files_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS file_jobs (
    job_id          TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    endpoint        TEXT NOT NULL,
    input_file_id   TEXT NOT NULL,
    metadata        TEXT,
    errors          TEXT,
    output_file_id  TEXT,
    error_file_id   TEXT,
    finished_at     INTEGER
);
CREATE INDEX IF NOT EXISTS file_jobs_listing ON file_jobs (account_id, created_at, job_id);
"""

_FILE_COLUMNS = "file_id, account_id, purpose, filename, size, created_at, expires_at, bucket, key"
_JOB_COLUMNS = (
    "job_id, account_id, created_at, endpoint, input_file_id, metadata, errors, "
    "output_file_id, error_file_id, finished_at"
)


def _file(row: sqlite3.Row) -> StoredFile:
    return StoredFile(
        file_id=row["file_id"],
        account_id=row["account_id"],
        purpose=row["purpose"],
        filename=row["filename"],
        size=row["size"],
        created_at=from_micros(row["created_at"]),
        expires_at=None if row["expires_at"] is None else from_micros(row["expires_at"]),
        bucket=row["bucket"],
        key=row["key"],
    )


def _file_job(row: sqlite3.Row) -> FileJob:
    return FileJob(
        job_id=row["job_id"],
        account_id=row["account_id"],
        created_at=from_micros(row["created_at"]),
        endpoint=row["endpoint"],
        input_file_id=row["input_file_id"],
        metadata=orjson.loads(row["metadata"]) if row["metadata"] is not None else None,
        errors=tuple(orjson.loads(row["errors"])) if row["errors"] else (),
        output_file_id=row["output_file_id"],
        error_file_id=row["error_file_id"],
        finished_at=None if row["finished_at"] is None else from_micros(row["finished_at"]),
    )


class SqliteFileStore:
    """:class:`batchrock.store.files.FileStore` sharing the job store's connection."""

    def __init__(self, conn: sqlite3.Connection, busy_timeout: float = 10.0) -> None:
        self._conn = conn
        self.busy_timeout = busy_timeout

    @_typed_errors
    async def add_file(self, stored: StoredFile) -> None:
        with _write(self._conn):
            self._conn.execute(
                f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
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

    @_typed_errors
    async def get_file(self, account_id: str, file_id: str) -> StoredFile | None:
        row = self._conn.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE file_id = ? AND account_id = ?",
            (file_id, account_id),
        ).fetchone()
        return None if row is None else _file(row)

    @_typed_errors
    async def list_files(
        self,
        account_id: str,
        *,
        limit: int,
        purpose: str | None = None,
        after: str | None = None,
        descending: bool = True,
    ) -> list[StoredFile]:
        where = ["account_id = ?"]
        args: list[object] = [account_id]
        if purpose is not None:
            where.append("purpose = ?")
            args.append(purpose)
        if after is not None:
            op = "<" if descending else ">"
            where.append(
                f"(created_at, file_id) {op} (SELECT created_at, file_id FROM files "
                "WHERE file_id = ? AND account_id = ?)"
            )
            args += [after, account_id]
        order = "DESC" if descending else "ASC"
        rows = self._conn.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE {' AND '.join(where)} "
            f"ORDER BY created_at {order}, file_id {order} LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [_file(r) for r in rows]

    @_typed_errors
    async def delete_file(self, account_id: str, file_id: str) -> StoredFile | None:
        with _write(self._conn):
            row = self._conn.execute(
                f"DELETE FROM files WHERE file_id = ? AND account_id = ? RETURNING {_FILE_COLUMNS}",
                (file_id, account_id),
            ).fetchone()
        return None if row is None else _file(row)

    @_typed_errors
    async def expired_files(self, before: datetime, *, limit: int) -> list[StoredFile]:
        rows = self._conn.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE expires_at IS NOT NULL AND expires_at <= ? "
            "ORDER BY expires_at, file_id LIMIT ?",
            (to_micros(before), limit),
        ).fetchall()
        return [_file(r) for r in rows]

    @_typed_errors
    async def add_file_job(self, record: FileJob) -> None:
        with _write(self._conn):
            self._conn.execute(
                f"INSERT INTO file_jobs ({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.job_id,
                    record.account_id,
                    to_micros(record.created_at),
                    record.endpoint,
                    record.input_file_id,
                    None if record.metadata is None else orjson.dumps(dict(record.metadata)),
                    orjson.dumps([dict(e) for e in record.errors]) if record.errors else None,
                    record.output_file_id,
                    record.error_file_id,
                    None if record.finished_at is None else to_micros(record.finished_at),
                ),
            )

    @_typed_errors
    async def delete_file_job(self, account_id: str, job_id: str) -> bool:
        with _write(self._conn):
            cursor = self._conn.execute(
                "DELETE FROM file_jobs WHERE job_id = ? AND account_id = ?", (job_id, account_id)
            )
        return cursor.rowcount > 0

    @_typed_errors
    async def get_file_job(self, account_id: str, job_id: str) -> FileJob | None:
        row = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM file_jobs WHERE job_id = ? AND account_id = ?",
            (job_id, account_id),
        ).fetchone()
        return None if row is None else _file_job(row)

    @_typed_errors
    async def list_file_jobs(
        self, account_id: str, *, limit: int, after: str | None = None
    ) -> list[FileJob]:
        where, args = "account_id = ?", [account_id]
        if after is not None:
            where += (
                " AND (created_at, job_id) < (SELECT created_at, job_id FROM file_jobs "
                "WHERE job_id = ? AND account_id = ?)"
            )
            args += [after, account_id]
        rows = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM file_jobs WHERE {where} "
            "ORDER BY created_at DESC, job_id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [_file_job(r) for r in rows]

    @_typed_errors
    async def finish_file_job(
        self,
        job_id: str,
        *,
        output_file_id: str | None,
        error_file_id: str | None,
        finished_at: datetime,
    ) -> FileJob:
        with _write(self._conn):
            self._conn.execute(
                "UPDATE file_jobs SET output_file_id = ?, error_file_id = ?, finished_at = ? "
                "WHERE job_id = ? AND finished_at IS NULL",
                (output_file_id, error_file_id, to_micros(finished_at), job_id),
            )
            row = self._conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM file_jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
        if row is None:
            raise LookupError(job_id)
        return _file_job(row)
