-- The web console: sign-in sessions, operators, the operators' audit log,
-- and which job resubmits which. A session is kept by a SHA-256 of its id
-- (the cookie), never the id. Times are Unix seconds on the database's clock.
CREATE TABLE console_sessions (
    session_hash    TEXT PRIMARY KEY,
    -- 'user' (an SFTP user of one account) or 'operator'.
    kind            TEXT NOT NULL,
    principal       TEXT NOT NULL,
    -- The per-session token every form carries.
    csrf            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_seen       BIGINT NOT NULL,
    source          TEXT
);
CREATE INDEX console_sessions_principal ON console_sessions (kind, principal);

CREATE TABLE console_operators (
    name            TEXT PRIMARY KEY,
    password_hash   TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE TABLE console_audit (
    audit_id        TEXT PRIMARY KEY,
    at              BIGINT NOT NULL,
    operator        TEXT NOT NULL,
    action          TEXT NOT NULL,
    target          TEXT NOT NULL,
    source          TEXT
);
CREATE INDEX console_audit_at ON console_audit (at);

-- A job made from the fixed failed rows of another.
CREATE TABLE console_resubmissions (
    job_id          TEXT PRIMARY KEY,
    from_job_id     TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX console_resubmissions_from ON console_resubmissions (from_job_id);
