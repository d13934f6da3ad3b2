-- Mapping profiles: per account, how the columns of the merchant's own
-- exports map onto the CSV vocabulary. The text is kept as uploaded (it is
-- what a job keeps and what `mapping show` prints); sha256 is of the text.
CREATE TABLE mapping_profiles (
    account    TEXT NOT NULL,
    name       TEXT NOT NULL,
    text       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (account, name)
);
-- The built-in presets an account has enabled, comma-separated, in the
-- order they are tried. No row: none.
CREATE TABLE account_presets (
    account TEXT PRIMARY KEY,
    presets TEXT NOT NULL
);
