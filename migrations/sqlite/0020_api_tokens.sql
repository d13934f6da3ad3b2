-- API tokens: a token acts as its user (account and scopes, never more than
-- the user has now). Only a SHA-256 of the token is kept. Times are Unix
-- seconds on the database's clock.
CREATE TABLE api_tokens (
    token_id        TEXT PRIMARY KEY NOT NULL,
    token_hash      TEXT NOT NULL UNIQUE,
    username        TEXT NOT NULL REFERENCES sftp_users (username) ON DELETE CASCADE,
    name            TEXT,
    -- Space-separated scope names.
    scopes          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    revoked_at      INTEGER
);
CREATE INDEX api_tokens_username ON api_tokens (username);
