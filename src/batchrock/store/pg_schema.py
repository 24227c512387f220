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
from batchrock.store.pg_sessions import SCHEMA as SESSIONS_SCHEMA

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

# 3: a rare nameContains pattern's listing, planned once per session (store/postgres.py
# list_jobs): the trigram index's few matches, filtered and sorted. A plain prepared statement
# would not do: PostgreSQL keeps planning it per call (its generic plan, costed for a pattern
# of unknown frequency, looks dearer than each custom one), and that planning is most of the
# time such a query takes. The function's own settings make its one query generic, and the
# trigram index is its only way in whatever the table's size (a generic plan would otherwise
# read a small table whole or through the listing index): no scan of the table,
# ``account_id || ''`` (and region) no condition of the account's indexes, ``submit_time + 0``
# no order of theirs. Every filter is an optional parameter, tested on the few matching rows.


def _named_page(order: str, beyond: str) -> str:
    """Migration 3's query for one order: ``beyond`` is the keyset comparison after a cursor."""
    return f"""RETURN QUERY SELECT * FROM jobs
        WHERE batchrock_tripled(name) LIKE p_pattern AND strpos(lower(name), p_needle) > 0
          AND account_id || '' = p_account AND region || '' = p_region
          AND (p_status IS NULL OR status = p_status)
          AND (p_after IS NULL OR submit_time > p_after)
          AND (p_before IS NULL OR submit_time < p_before)
          AND (p_cursor_time IS NULL
               OR (submit_time, job_id) {beyond} (p_cursor_time, p_cursor_id))
        ORDER BY submit_time + 0 {order}, job_id {order} LIMIT p_limit;"""


MIGRATIONS.append(
    (
        3,
        f"""
CREATE FUNCTION batchrock_jobs_named(
    p_account text, p_region text, p_status text, p_after bigint, p_before bigint,
    p_cursor_time bigint, p_cursor_id text, p_descending boolean,
    p_needle text, p_pattern text, p_limit integer
) RETURNS SETOF jobs
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    IF p_descending THEN
        {_named_page("DESC", "<")}
    ELSE
        {_named_page("ASC", ">")}
    END IF;
END
$$;
""",
    )
)

# 4: the web console's sessions, valid on every API process (store/sessions.py).
MIGRATIONS.append((4, SESSIONS_SCHEMA))

# 5: a version per row, as the SQLite store's (store/base.py RowKey): an update that changes
# any column of the view (store/base.py JobRow, as of this migration) moves it on, whoever
# writes, so a listing can tell which of its jobs' kept summaries (api/summaries.py) still hold
# by reading (job_id, submit_time, row_version) alone. The trigger's WHEN clause keeps the
# engine's lease, heartbeat and checkpoint updates out of it (no function called, the version
# unmoved); the column is in no index, so those updates and the view's stay HOT. A column
# added to the view later takes a migration that recreates the trigger with it.
_VIEW_COLUMNS = [
    "job_id",
    "account_id",
    "region",
    "name",
    "model_id",
    "role_arn",
    "client_request_token",
    "status",
    "message",
    "submit_time",
    "last_modified_time",
    "end_time",
    "expiration_time",
    "timeout_hours",
    "invocation_type",
    "input_s3_uri",
    "input_format",
    "input_bucket_owner",
    "output_s3_uri",
    "output_kms_key_id",
    "output_bucket_owner",
    "vpc_config",
    "total_records",
    "processed_records",
    "success_records",
    "error_records",
]


def _version_trigger() -> str:
    """Migration 5's function and trigger: ``row_version`` + 1 when the view changes."""
    old = ", ".join(f"OLD.{c}" for c in _VIEW_COLUMNS)
    new = ", ".join(f"NEW.{c}" for c in _VIEW_COLUMNS)
    return f"""
ALTER TABLE jobs ADD COLUMN row_version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION batchrock_next_row_version() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.row_version := OLD.row_version + 1;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_row_version BEFORE UPDATE ON jobs FOR EACH ROW
    WHEN (ROW({old}) IS DISTINCT FROM ROW({new}))
    EXECUTE FUNCTION batchrock_next_row_version();
"""


MIGRATIONS.append((5, _version_trigger()))

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
