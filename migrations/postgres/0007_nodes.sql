-- The nodes (intake processes) sharing this database: who runs, since when,
-- their last heartbeat on the database's clock (`intake nodes`). `owner` is
-- the running process's name in jobs.owner (node id and a per-start nonce).
CREATE TABLE nodes (
    node_id      TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    version      TEXT NOT NULL,
    sftp_addr    TEXT,
    started_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    stopped_at   TIMESTAMPTZ
);
-- Failed logins per source address, counted by every node together (the
-- "provider" defender): a source refused on one node is refused on all.
CREATE TABLE login_penalties (
    source   TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    since    TIMESTAMPTZ NOT NULL
);
