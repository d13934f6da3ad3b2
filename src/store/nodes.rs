//! The nodes sharing one database (issue 13): who runs, their heartbeats on
//! the database's clock, the jobs they own; on PostgreSQL also each node's
//! session lock (held while its process lives, so a killed node is seen dead
//! at once) and the login failures all nodes count together.

use super::{Result, Store, StoreError};

/// What a node says of itself when it starts.
#[derive(Debug, Clone)]
pub struct NodeStart {
    pub node_id: String,
    /// The process's name in `jobs.owner`: `Store::owner_name`.
    pub owner: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub sftp_addr: Option<String>,
}

/// One row of `intake nodes`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    pub node_id: String,
    pub owner: String,
    pub host: String,
    pub pid: u64,
    pub version: String,
    pub sftp_addr: Option<String>,
    /// Seconds since the node started and since its last heartbeat, on the
    /// database's clock.
    pub up_secs: f64,
    pub heartbeat_age_secs: f64,
    pub stopped: bool,
    /// Running jobs it owns: job id, account, file.
    pub jobs: Vec<OwnedJob>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct OwnedJob {
    pub job_id: String,
    pub account: String,
    pub file: String,
}

/// The first key of every node's PostgreSQL advisory lock (`int` in ASCII,
/// and a tag); the second is derived from the node id.
pub(crate) const NODE_LOCK_CLASS: i32 = 0x696e_746b;

/// The same SQL on both backends, expanded into each store's `impl`.
macro_rules! nodes_statements {
    () => {
        /// Records that `n` runs now (a restart replaces the row of its node).
        pub async fn register_node(&self, n: &super::nodes::NodeStart) -> Result<()> {
            sqlx::query(&format!(
                "INSERT INTO nodes (node_id, owner, host, pid, version, sftp_addr, started_at, heartbeat_at, stopped_at)
                 VALUES ($1, $2, $3, $4, $5, $6, {NOW}, {NOW}, NULL)
                 ON CONFLICT (node_id) DO UPDATE SET owner = excluded.owner, host = excluded.host, pid = excluded.pid,
                   version = excluded.version, sftp_addr = excluded.sftp_addr, started_at = excluded.started_at,
                   heartbeat_at = excluded.heartbeat_at, stopped_at = NULL"
            ))
            .bind(&n.node_id)
            .bind(&n.owner)
            .bind(&n.host)
            .bind(n.pid as i64)
            .bind(&n.version)
            .bind(&n.sftp_addr)
            .execute(&self.pool)
            .await?;
            // Commands run as nodes of their own: forget those stopped a day ago.
            sqlx::query(&format!("DELETE FROM nodes WHERE stopped_at < {}", seconds_from_now("$1")))
                .bind(-86_400i64)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        /// The node's heartbeat and its running jobs'; false when the node's
        /// row names another process now (a newer start of the same node).
        pub async fn node_heartbeat(&self, node_id: &str, owner: &str) -> Result<bool> {
            let mut tx = self.begin_write().await?;
            let done = sqlx::query(&format!("UPDATE nodes SET heartbeat_at = {NOW} WHERE node_id = $1 AND owner = $2"))
                .bind(node_id)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("UPDATE jobs SET heartbeat_at = {NOW} WHERE owner = $1 AND status = 'running'"))
                .bind(owner)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        }

        pub async fn node_stopped(&self, node_id: &str, owner: &str) -> Result<()> {
            sqlx::query(&format!("UPDATE nodes SET stopped_at = {NOW} WHERE node_id = $1 AND owner = $2"))
                .bind(node_id)
                .bind(owner)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        /// Marks the process `owner` stopped (it was seen dead), once.
        pub async fn owner_stopped(&self, owner: &str) -> Result<()> {
            sqlx::query(&format!("UPDATE nodes SET stopped_at = {NOW} WHERE owner = $1 AND stopped_at IS NULL"))
                .bind(owner)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        /// Running jobs of earlier starts of node `node_id` (owners
        /// `node_id:…` other than `owner`) are released at once: the node's
        /// lock says no other process of it lives. A crash counts as an attempt.
        pub async fn release_node_leftovers(&self, node_id: &str, owner: &str) -> Result<u64> {
            let done = sqlx::query(
                "UPDATE jobs SET owner = NULL
                 WHERE status = 'running' AND owner <> $2 AND substr(owner, 1, length($1)) = $1",
            )
            .bind(format!("{node_id}:"))
            .bind(owner)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        }

        pub async fn owns_job(&self, job_id: &str, owner: &str) -> Result<bool> {
            let owned: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs WHERE job_id = $1 AND owner = $2 AND status IN ('running', 'retrying')",
            )
            .bind(job_id)
            .bind(owner)
            .fetch_one(&self.pool)
            .await?;
            Ok(owned > 0)
        }

        pub async fn list_nodes(&self) -> Result<Vec<super::nodes::NodeInfo>> {
            let rows: Vec<(String, String, String, i64, String, Option<String>, f64, f64, bool)> =
                sqlx::query_as(&format!(
                    "SELECT node_id, owner, host, pid, version, sftp_addr, {}, {}, stopped_at IS NOT NULL
                     FROM nodes ORDER BY node_id",
                    seconds_since("started_at"),
                    seconds_since("heartbeat_at"),
                ))
                .fetch_all(&self.pool)
                .await?;
            let jobs: Vec<(String, String, String, String)> = sqlx::query_as(
                "SELECT owner, job_id, account, file_name FROM jobs
                 WHERE status = 'running' AND owner IS NOT NULL ORDER BY received_at, job_id",
            )
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(node_id, owner, host, pid, version, sftp_addr, up, age, stopped)| {
                    let jobs = jobs
                        .iter()
                        .filter(|(o, ..)| *o == owner)
                        .map(|(_, job_id, account, file)| super::nodes::OwnedJob {
                            job_id: job_id.clone(),
                            account: account.clone(),
                            file: file.clone(),
                        })
                        .collect();
                    super::nodes::NodeInfo {
                        node_id,
                        owner,
                        host,
                        pid: pid.max(0) as u64,
                        version,
                        sftp_addr,
                        up_secs: up.max(0.0),
                        heartbeat_age_secs: age.max(0.0),
                        stopped,
                        jobs,
                    }
                })
                .collect())
        }
    };
}

/// PostgreSQL only: node locks and shared login penalties.
macro_rules! pg_cluster_statements {
    () => {
        /// Takes node `node_id`'s session lock on a connection of its own,
        /// kept for the process's life; `None` when another live process holds it.
        pub async fn lock_node(&self, node_id: &str) -> Result<Option<super::nodes::PgNodeLock>> {
            let mut conn = self.pool.acquire().await?.detach();
            let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2) & 2147483647)")
                .bind(super::nodes::NODE_LOCK_CLASS)
                .bind(node_id)
                .fetch_one(&mut conn)
                .await?;
            Ok(held.then(|| super::nodes::PgNodeLock { conn: tokio::sync::Mutex::new(conn) }))
        }

        /// The owners of nodes that have not stopped and whose session lock is
        /// gone from this database: their processes died (the server ends a
        /// dead client's session), so their jobs can be taken over at once.
        pub async fn dead_node_owners(&self) -> Result<Vec<String>> {
            Ok(sqlx::query_scalar(
                "SELECT owner FROM nodes WHERE stopped_at IS NULL AND NOT EXISTS (
                   SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                     AND classid = $1::oid AND objid = (hashtext(nodes.node_id) & 2147483647)::oid AND objsubid = 2)",
            )
            .bind(super::nodes::NODE_LOCK_CLASS)
            .fetch_all(&self.pool)
            .await?)
        }

        /// Counts one failed login of `source`; returns whether it is now
        /// refused (`max_failures` within `window_secs`; the refusal lasts a
        /// full window from the failure that reached the limit).
        pub async fn record_login_failure(&self, source: &str, max_failures: u32, window_secs: f64) -> Result<bool> {
            Ok(sqlx::query_scalar(
                "INSERT INTO login_penalties AS p (source, failures, since) VALUES ($1, 1, now())
                 ON CONFLICT (source) DO UPDATE SET
                   failures = CASE WHEN p.since < now() - $3 * interval '1 second' THEN 1 ELSE p.failures + 1 END,
                   since = CASE WHEN p.since < now() - $3 * interval '1 second' OR p.failures + 1 = $2 THEN now()
                                ELSE p.since END
                 RETURNING failures >= $2",
            )
            .bind(source)
            .bind(max_failures as i32)
            .bind(window_secs)
            .fetch_one(&self.pool)
            .await?)
        }

        pub async fn login_refused(&self, source: &str, max_failures: u32, window_secs: f64) -> Result<bool> {
            Ok(sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM login_penalties
                   WHERE source = $1 AND failures >= $2 AND since >= now() - $3 * interval '1 second')",
            )
            .bind(source)
            .bind(max_failures as i32)
            .bind(window_secs)
            .fetch_one(&self.pool)
            .await?)
        }

        /// Forgets failures whose window has passed.
        pub async fn prune_login_failures(&self, window_secs: f64) -> Result<u64> {
            let done = sqlx::query("DELETE FROM login_penalties WHERE since < now() - $1 * interval '1 second'")
                .bind(window_secs)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected())
        }
    };
}

/// A node's PostgreSQL session lock: held while this value and its
/// connection live.
pub struct PgNodeLock {
    pub(super) conn: tokio::sync::Mutex<sqlx::PgConnection>,
}

impl PgNodeLock {
    /// Whether the lock's connection still answers (a dropped connection has
    /// lost the lock: other nodes see this one dead and take its jobs over).
    pub async fn alive(&self) -> bool {
        let mut conn = self.conn.lock().await;
        sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok()
    }
}

/// This node's hold on its id: a PostgreSQL session lock, or (SQLite, one
/// host) an exclusive lock on a file beside the database.
pub enum NodeLock {
    Postgres(PgNodeLock),
    File(std::fs::File),
}

// `on_store!` is ops.rs's (declared before this module).
impl Store {
    pub async fn register_node(&self, n: &NodeStart) -> Result<()> {
        on_store!(self, s => s.register_node(n).await)
    }

    pub async fn node_heartbeat(&self, node_id: &str, owner: &str) -> Result<bool> {
        on_store!(self, s => s.node_heartbeat(node_id, owner).await)
    }

    pub async fn node_stopped(&self, node_id: &str, owner: &str) -> Result<()> {
        on_store!(self, s => s.node_stopped(node_id, owner).await)
    }

    pub async fn owner_stopped(&self, owner: &str) -> Result<()> {
        on_store!(self, s => s.owner_stopped(owner).await)
    }

    pub async fn release_node_leftovers(&self, node_id: &str, owner: &str) -> Result<u64> {
        on_store!(self, s => s.release_node_leftovers(node_id, owner).await)
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        on_store!(self, s => s.list_nodes().await)
    }

    /// Takes node `node_id`'s lock; `None` when another live process holds it.
    /// On SQLite, `lock_dir` holds the lock files.
    pub async fn lock_node(&self, node_id: &str, lock_dir: &std::path::Path) -> Result<Option<NodeLock>> {
        match self {
            Store::Postgres(s) => Ok(s.lock_node(node_id).await?.map(NodeLock::Postgres)),
            Store::Sqlite(_) => {
                std::fs::create_dir_all(lock_dir).map_err(StoreError::LockFile)?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(lock_dir.join(format!("{node_id}.lock")))
                    .map_err(StoreError::LockFile)?;
                match file.try_lock() {
                    Ok(()) => Ok(Some(NodeLock::File(file))),
                    Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => Err(StoreError::LockFile(e)),
                }
            }
        }
    }

    /// Owners of nodes seen dead through their lock (PostgreSQL); none on
    /// SQLite, where a node's earlier starts are released when it starts.
    pub async fn dead_node_owners(&self) -> Result<Vec<String>> {
        match self {
            Store::Postgres(s) => s.dead_node_owners().await,
            Store::Sqlite(_) => Ok(Vec::new()),
        }
    }

    /// Whether login failures are shared between nodes (PostgreSQL).
    pub fn shares_login_failures(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// PostgreSQL: counts a failed login for all nodes; `None` on SQLite.
    pub async fn record_login_failure(&self, source: &str, max: u32, window_secs: f64) -> Result<Option<bool>> {
        match self {
            Store::Postgres(s) => Ok(Some(s.record_login_failure(source, max, window_secs).await?)),
            Store::Sqlite(_) => Ok(None),
        }
    }

    pub async fn login_refused(&self, source: &str, max: u32, window_secs: f64) -> Result<Option<bool>> {
        match self {
            Store::Postgres(s) => Ok(Some(s.login_refused(source, max, window_secs).await?)),
            Store::Sqlite(_) => Ok(None),
        }
    }

    pub async fn prune_login_failures(&self, window_secs: f64) -> Result<u64> {
        match self {
            Store::Postgres(s) => s.prune_login_failures(window_secs).await,
            Store::Sqlite(_) => Ok(0),
        }
    }
}
