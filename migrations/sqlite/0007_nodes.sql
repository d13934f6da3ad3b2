-- The nodes (intake processes) using this database: who runs, since when,
-- their last heartbeat on the database's clock (`intake nodes`). `owner` is
-- the running process's name in jobs.owner (node id and a per-start nonce).
CREATE TABLE nodes (
    node_id      TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    version      TEXT NOT NULL,
    sftp_addr    TEXT,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    stopped_at   TEXT
);
-- Login penalties are kept in memory on SQLite (one node); the table keeps
-- the schema the same on both backends.
CREATE TABLE login_penalties (
    source   TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    since    TEXT NOT NULL
);
