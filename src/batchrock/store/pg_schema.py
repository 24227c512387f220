"""The PostgreSQL store's schema, as numbered migrations.

Each process applies the migrations its database lacks when it opens the store
(:func:`migrate`). Several processes starting at once take turns on one transaction-scoped
advisory lock: the first applies what is missing and records each version in
``schema_migrations``; the others, once they get the lock, find nothing left to do. A
migration and its record commit together, so a crash half-way leaves the version unapplied.

Migrations are never edited once released: a change is a new entry at the end.

Column choices mirror the SQLite store (``sqlite_schema.sql``) so listings and pagination
tokens behave the same whichever store runs: times are integer microseconds since the epoch
(``bigint``), and text that is sorted or compared (job ids) uses the ``"C"`` collation, byte
order, like SQLite's BINARY.
"""

from __future__ import annotations

import logging

import psycopg

from batchrock.store.pg_files import SCHEMA as FILES_SCHEMA

log = logging.getLogger("batchrock.store")

#: The advisory lock key migrations hold ("batchrock" as a number; any constant would do,
#: but it must not collide with the application's other advisory locks).
MIGRATION_LOCK = 0x62617463_68726F63

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Every character three times, lower-cased ASCII-only (as SQLite's lower()): the trigram
-- index over it finds patterns of any length, 1 and 2 characters included (see the SQLite
-- schema's job_names for why tripling works).
CREATE FUNCTION batchrock_tripled(text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$SELECT regexp_replace(lower($1 COLLATE "C"), '(.)', '\\1\\1\\1', 'g')$$;

CREATE TABLE jobs (
    job_id                text COLLATE "C" PRIMARY KEY,
    account_id            text COLLATE "C" NOT NULL,
    region                text COLLATE "C" NOT NULL,
    name                  text COLLATE "C" NOT NULL,
    model_id              text COLLATE "C" NOT NULL,
    role_arn              text NOT NULL,
    client_request_token  text COLLATE "C",
    status                text COLLATE "C" NOT NULL,
    message               text,
    submit_time           bigint NOT NULL,
    last_modified_time    bigint NOT NULL,
    end_time              bigint,
    expiration_time       bigint NOT NULL,
    timeout_hours         integer NOT NULL,
    invocation_type       text NOT NULL,
    input_s3_uri          text NOT NULL,
    input_format          text,
    input_bucket_owner    text,
    output_s3_uri         text NOT NULL,
    output_kms_key_id     text,
    output_bucket_owner   text,
    vpc_config            jsonb,
    total_records         bigint NOT NULL DEFAULT 0,
    processed_records     bigint NOT NULL DEFAULT 0,
    success_records       bigint NOT NULL DEFAULT 0,
    error_records         bigint NOT NULL DEFAULT 0,
    input_tokens          bigint NOT NULL DEFAULT 0,
    output_tokens         bigint NOT NULL DEFAULT 0,
    throttled_requests    bigint NOT NULL DEFAULT 0,
    lease_owner           text,
    lease_expires         bigint,
    checkpoint            jsonb
)
-- Room on each page for a row's next version: leases, renewals and progress change no indexed
-- column, so they are HOT updates (no index touched, the trigram index least of all).
WITH (fillfactor = 80);

CREATE UNIQUE INDEX jobs_by_token
    ON jobs (account_id, client_request_token) WHERE client_request_token IS NOT NULL;
CREATE INDEX jobs_listing ON jobs (account_id, region, submit_time, job_id);
CREATE INDEX jobs_listing_by_status ON jobs (account_id, region, status, submit_time, job_id);
CREATE INDEX jobs_claim ON jobs (status, submit_time, job_id);
CREATE INDEX jobs_names ON jobs USING gin (batchrock_tripled(name) gin_trgm_ops);

CREATE TABLE job_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       text COLLATE "C" NOT NULL,
    from_status  text,
    to_status    text NOT NULL,
    at           bigint NOT NULL,
    message      text
);
CREATE INDEX job_events_by_job ON job_events (job_id, id);

-- The event outbox's delivery cursors (docs/events.md): per sink, the job_events id delivered
-- up to, and which process delivers now (a lease). job_events ids follow commit order: every
-- transaction that records an event holds the store's events advisory lock from the insert to
-- its commit, so no event can commit with an id below one already read.
CREATE TABLE event_sinks (
    sink           text COLLATE "C" PRIMARY KEY,
    position       bigint NOT NULL,
    lease_owner    text,
    lease_expires  bigint
);

CREATE TABLE job_tags (
    job_id  text COLLATE "C" NOT NULL,
    key     text COLLATE "C" NOT NULL,
    value   text NOT NULL,
    PRIMARY KEY (job_id, key)
);
""",
    ),
]

# 2: uploaded files and the jobs made from them (the files seam, store/pg_files.py).
MIGRATIONS.append((2, FILES_SCHEMA))

SCHEMA_VERSION = MIGRATIONS[-1][0]


async def migrate(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
    """Apply the migrations ``conn``'s database lacks; the version it is at after. Refuses a
    database newer than this code (a downgrade would run on a schema it does not know)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
        row = await cur.fetchone()
        current = int(row[0]) if row is not None else 0  # type: ignore[call-overload]
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database is at schema version {current}, newer than this batchrock's "
                f"{SCHEMA_VERSION}: upgrade batchrock"
            )
        for version, sql in MIGRATIONS:
            if version <= current:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            log.info("database migrated to schema version %d", version)
            current = version
    return current
