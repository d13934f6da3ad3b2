-- The account's settings as the job's first pass read the file with them
-- (encoding, default region, phone check, report BOM): a job resumed after
-- a change of them, or after a restart that applies the config again,
-- reads and reports its file exactly as it began.
ALTER TABLE jobs ADD COLUMN settings TEXT;
-- The process whose spool results file the committed results_offset (and,
-- once decided, the outcome) refers to: each owner writes a file of its own,
-- so a former owner that was paused and wakes up writes nothing that
-- another owner publishes.
ALTER TABLE jobs ADD COLUMN results_owner TEXT;
