-- What a job is for: 'import' (a file in /customers) or 'validation' (a
-- dry run of a file in /validate: checked against the database, nothing
-- written to customers, reported under its own names).
ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'import';
-- Whether the account's CSV reports start with a UTF-8 BOM (for Excel).
ALTER TABLE accounts ADD COLUMN report_bom BOOLEAN NOT NULL DEFAULT 0;
