//! Dead nodes on PostgreSQL, seen through their session lock *and* their
//! heartbeat: a server restart ends every node's session (and lock) at
//! once, and a node that is alive takes its lock again at its next beat;
//! so a lost lock means a dead node only once its heartbeat is quiet too.

use super::{PgStore, Result, Store};
use std::time::Duration;

impl PgStore {
    /// Owners of nodes not stopped, without their session lock, that have
    /// not heartbeaten for `quiet_secs`.
    pub async fn dead_quiet_node_owners(&self, quiet_secs: f64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT owner FROM nodes WHERE stopped_at IS NULL
               AND heartbeat_at < now() - $2 * interval '1 second'
               AND NOT EXISTS (
                 SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND classid = $1::oid AND objid = (hashtext(nodes.node_id) & 2147483647)::oid AND objsubid = 2)",
        )
        .bind(super::nodes::NODE_LOCK_CLASS)
        .bind(quiet_secs)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Store {
    /// Owners of nodes seen dead: their lock gone (PostgreSQL) and no
    /// heartbeat for `quiet`; none on SQLite.
    pub async fn dead_node_owners_after(&self, quiet: Duration) -> Result<Vec<String>> {
        match self {
            Store::Postgres(s) => s.dead_quiet_node_owners(quiet.as_secs_f64()).await,
            Store::Sqlite(_) => Ok(Vec::new()),
        }
    }
}
