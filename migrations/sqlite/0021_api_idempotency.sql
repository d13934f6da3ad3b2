-- Answers of API requests sent with an Idempotency-Key, kept 24 hours: the
-- same key and body replay the answer; the same key with another body is
-- refused. Times are Unix seconds on the database's clock.
CREATE TABLE api_idempotency (
    account         TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    -- The route and a SHA-256 of the body the key was first used with.
    request_hash    TEXT NOT NULL,
    status          INTEGER NOT NULL,
    location        TEXT,
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (account, idem_key)
);
CREATE INDEX api_idempotency_created ON api_idempotency (created_at);
