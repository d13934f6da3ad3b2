-- The job lifecycle as data (status and phase), so resuming reads where a
-- job stands instead of probing files; attempts for the poison-pill breaker,
-- retries with backoff for transient faults; the upload left visible.

-- Within status 'running': 'rows' (batches being applied) or 'publishing'
-- (the outcome is decided and stored in outcome; the report is being
-- published). 'done' once finished.
ALTER TABLE jobs ADD COLUMN phase TEXT NOT NULL DEFAULT 'rows';
-- The summary JSON, decided before anything is published.
ALTER TABLE jobs ADD COLUMN outcome TEXT;
-- Starts of processing since the last committed progress (a job whose
-- processing keeps killing the process is aborted after a few).
ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
-- Transient failures in a row; status 'retrying' waits until retry_at.
ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN retry_at TEXT;
ALTER TABLE jobs ADD COLUMN last_error TEXT;
-- The upload's visible name in /customers, kept until its report is out;
-- cleared once the visible copy is removed.
ALTER TABLE jobs ADD COLUMN visible_path TEXT;
CREATE INDEX jobs_visible ON jobs (received_at) WHERE visible_path IS NOT NULL;
-- The visible upload a job took (device, inode, mtime, size): two processes
-- that see the same upload at once cannot both take it.
ALTER TABLE jobs ADD COLUMN source_key TEXT;
CREATE UNIQUE INDEX jobs_source ON jobs (source_key);
