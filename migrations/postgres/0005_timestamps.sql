-- The jobs' timestamps become real timestamps, compared as such; the
-- database's clock sets heartbeats, retries and arrivals from now on.
ALTER TABLE jobs
    ALTER COLUMN received_at TYPE timestamptz USING received_at::timestamptz,
    ALTER COLUMN started_at TYPE timestamptz USING started_at::timestamptz,
    ALTER COLUMN finished_at TYPE timestamptz USING finished_at::timestamptz,
    ALTER COLUMN heartbeat_at TYPE timestamptz USING heartbeat_at::timestamptz,
    ALTER COLUMN retry_at TYPE timestamptz USING retry_at::timestamptz;
