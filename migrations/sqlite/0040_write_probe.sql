-- One row per node, rewritten by the readiness check: proof that the
-- store takes a committed write (a full disk fails it), not only a read.
CREATE TABLE write_probe (
    node TEXT PRIMARY KEY NOT NULL,
    probed_at INTEGER NOT NULL
);
