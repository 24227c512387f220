-- batchrock SQLite schema. Applied with CREATE ... IF NOT EXISTS at every start;
-- PRAGMA user_version records the schema version for future migrations.

CREATE TABLE IF NOT EXISTS jobs (
    job_id                TEXT PRIMARY KEY,
    account_id            TEXT NOT NULL,
    region                TEXT NOT NULL,
    name                  TEXT NOT NULL,
    model_id              TEXT NOT NULL,
    role_arn              TEXT NOT NULL,
    client_request_token  TEXT,
    status                TEXT NOT NULL,
    message               TEXT,
    -- Times are integer microseconds since the Unix epoch, UTC.
    submit_time           INTEGER NOT NULL,
    last_modified_time    INTEGER NOT NULL,
    end_time              INTEGER,
    expiration_time       INTEGER NOT NULL,
    timeout_hours         INTEGER NOT NULL,
    invocation_type       TEXT NOT NULL,
    input_s3_uri          TEXT NOT NULL,
    input_format          TEXT,
    input_bucket_owner    TEXT,
    output_s3_uri         TEXT NOT NULL,
    output_kms_key_id     TEXT,
    output_bucket_owner   TEXT,
    -- JSON {"subnetIds": [...], "securityGroupIds": [...]} or NULL.
    vpc_config            TEXT,
    total_records         INTEGER NOT NULL DEFAULT 0,
    processed_records     INTEGER NOT NULL DEFAULT 0,
    success_records       INTEGER NOT NULL DEFAULT 0,
    error_records         INTEGER NOT NULL DEFAULT 0,
    input_tokens          INTEGER NOT NULL DEFAULT 0,
    output_tokens         INTEGER NOT NULL DEFAULT 0,
    -- Throttled model requests (schema version 2; added by migration to older databases).
    throttled_requests    INTEGER NOT NULL DEFAULT 0,
    -- The engine's lease: which worker runs the job, until when (microseconds).
    lease_owner           TEXT,
    lease_expires         INTEGER,
    -- The engine's resume point (JSON).
    checkpoint            TEXT,
    -- Moved on by the trigger jobs_row_version (store/sqlite.py) whenever a column the API
    -- shows changes, whichever process writes: the API keeps each job's encoded summary under
    -- (job_id, row_version). Schema version 3.
    row_version           INTEGER NOT NULL DEFAULT 0,
    -- The row's key as the API keeps it, "job_id:row_version" (store/base.py RowKey): computed,
    -- not stored in the table, but held by the listing indexes, so a page's keys are read
    -- from the index as they are sent (schema version 5; added by migration to older ones).
    row_key               TEXT GENERATED ALWAYS AS (job_id || ':' || row_version) VIRTUAL
);

-- Idempotency: one job per (account, clientRequestToken).
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_token
    ON jobs (account_id, client_request_token) WHERE client_request_token IS NOT NULL;

-- Listing: keyset pagination over (submit_time, job_id) within an account and region,
-- with or without a status filter. The two indexes (jobs_listing, jobs_listing_by_status)
-- are made by store/sqlite.py at every open (_LISTING_INDEXES): they end with row_key,
-- which a database older than schema version 5 gets only from the migration after this.

-- The engine claims the oldest job in a given status.
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (status, submit_time, job_id);

-- nameContains: a trigram index, so substring search need not scan every job. It holds each
-- name with every character written three times ("ab-1" -> "aaabbb---111"): then a pattern of
-- any length, tripled the same way, is at least one trigram long, and an occurrence of the
-- pattern in the name is an occurrence of the tripled pattern in the tripled name. (Plain
-- trigrams cannot find patterns of 1-2 characters.) Candidates are re-checked against the
-- name itself. Contentless; rowid = jobs.rowid; names never change after creation.
CREATE VIRTUAL TABLE IF NOT EXISTS job_names USING fts5 (name, tokenize = 'trigram', content = '');

CREATE TABLE IF NOT EXISTS job_events (
    id           INTEGER PRIMARY KEY,
    job_id       TEXT NOT NULL,
    from_status  TEXT,
    to_status    TEXT NOT NULL,
    at           INTEGER NOT NULL,
    message      TEXT
);
CREATE INDEX IF NOT EXISTS job_events_by_job ON job_events (job_id, id);

-- The event outbox's delivery cursors (docs/events.md): per sink, the job_events id delivered
-- up to, and which process delivers now (a lease, as for jobs). job_events.id is the global
-- sequence: writers are serialized (BEGIN IMMEDIATE), so ids follow commit order, and
-- events are never deleted, so an id is never reused.
CREATE TABLE IF NOT EXISTS event_sinks (
    sink           TEXT PRIMARY KEY,
    position       INTEGER NOT NULL,
    lease_owner    TEXT,
    lease_expires  INTEGER
);

CREATE TABLE IF NOT EXISTS job_tags (
    job_id  TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (job_id, key)
) WITHOUT ROWID;
