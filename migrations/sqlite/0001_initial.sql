-- Accounts: one per merchant AVID, with how its files are read.
CREATE TABLE accounts (
    avid            TEXT PRIMARY KEY NOT NULL,
    default_region  TEXT,
    encoding        TEXT NOT NULL DEFAULT 'utf-8',
    phone_check     TEXT NOT NULL DEFAULT 'possible',
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

-- SFTP users: each belongs to one account.
CREATE TABLE sftp_users (
    username        TEXT PRIMARY KEY NOT NULL,
    account         TEXT NOT NULL REFERENCES accounts (avid) ON DELETE CASCADE,
    -- OpenSSH authorized_keys lines, one per line.
    public_keys     TEXT NOT NULL DEFAULT '',
    -- Argon2id PHC string; NULL: no password login.
    password_hash   TEXT,
    -- Space-separated scope names.
    scopes          TEXT NOT NULL,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

-- Customers: one row per customer, read by other services of the platform.
CREATE TABLE customers (
    customer_id     TEXT PRIMARY KEY NOT NULL,
    account         TEXT NOT NULL,
    ref             TEXT NOT NULL,
    -- [{"type":"phone"|"email","value":"..."}], in order; the first is the default.
    addresses       TEXT NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{}',
    appdata         TEXT NOT NULL DEFAULT '{}',
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    -- The upload (job) and line that last created or updated the customer.
    last_job_id     TEXT,
    last_line       INTEGER,
    UNIQUE (account, ref)
);

-- Upload jobs: one per complete upload, durable across restarts.
CREATE TABLE jobs (
    job_id          TEXT PRIMARY KEY NOT NULL,
    account         TEXT NOT NULL,
    file_name       TEXT NOT NULL,
    spool_path      TEXT NOT NULL,
    sha256          TEXT NOT NULL,
    bytes           INTEGER NOT NULL,
    -- Who uploaded it (NULL: placed by an operator or another server) and
    -- whether rows whose ref exists may update (the customers:update scope).
    uploader        TEXT,
    may_update      BOOLEAN NOT NULL DEFAULT TRUE,
    -- arriving (upload not yet in the spool) | queued | running | completed | rejected
    status          TEXT NOT NULL,
    received_at     TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    -- Progress, committed with each batch's upserts.
    records_done    INTEGER NOT NULL DEFAULT 0,
    results_offset  INTEGER NOT NULL DEFAULT 0,
    rows_total      INTEGER NOT NULL DEFAULT 0,
    created         INTEGER NOT NULL DEFAULT 0,
    updated         INTEGER NOT NULL DEFAULT 0,
    unchanged       INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    error_code      TEXT,
    error_message   TEXT,
    -- Which process works on it, and when it last said so.
    owner           TEXT,
    heartbeat_at    TEXT
);
CREATE INDEX jobs_status ON jobs (status, received_at);
CREATE INDEX jobs_account ON jobs (account, received_at);

-- Refs claimed by each job's file so far that left no trace in `customers`
-- (rows that failed, were unchanged or hit ref_exists), for duplicate_ref;
-- emptied when the job ends. Created and updated rows are claimed through
-- customers.last_job_id / last_line.
CREATE TABLE job_refs (
    job_id          TEXT NOT NULL,
    ref_key         TEXT NOT NULL,
    line            INTEGER NOT NULL,
    PRIMARY KEY (job_id, ref_key)
) WITHOUT ROWID;
