-- Operations (issue 11): completion webhooks per account and their durable
-- outbox of deliveries.

-- An account's completion webhook: where finished jobs are POSTed, and the
-- secret their HMAC-SHA256 signature is made with.
CREATE TABLE account_webhooks (
    avid            TEXT PRIMARY KEY NOT NULL REFERENCES accounts (avid) ON DELETE CASCADE,
    url             TEXT NOT NULL,
    secret          TEXT NOT NULL
);

-- One event to deliver (at least once): recorded when its job ends, in the
-- same place whichever process ends it; sent by any process.
CREATE TABLE webhook_deliveries (
    -- Sent as the Intake-Delivery header, the same on every attempt.
    delivery_id     TEXT PRIMARY KEY NOT NULL,
    account         TEXT NOT NULL,
    -- NULL for a test event.
    job_id          TEXT,
    -- job.completed | job.rejected | job.aborted
    event           TEXT NOT NULL,
    url             TEXT NOT NULL,
    -- The JSON body, exactly as signed and sent.
    body            TEXT NOT NULL,
    -- pending | delivered | failed (given up)
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    -- A pending delivery is due then; while an attempt runs, its lease ends then.
    next_attempt_at TEXT NOT NULL,
    last_attempt_at TEXT,
    last_error      TEXT,
    delivered_at    TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);
CREATE INDEX webhook_deliveries_account ON webhook_deliveries (account, created_at);
