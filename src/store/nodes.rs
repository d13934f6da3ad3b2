//! Table `nodes`: the processes sharing one database, their heartbeats on
//! the database's clock and the jobs they own; each node's lock (on
//! PostgreSQL a session lock held while its process lives, so a killed node
//! is seen dead at once; on SQLite a file lock on the one host). Table
//! `login_penalties` (PostgreSQL): the failed logins all nodes count together.

use super::sql::{Backend, Columns, Sql};
use super::{Result, Store, StoreError};
use sqlx::{Encode, Executor, IntoArguments, Type};

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

impl<DB> Sql<DB>
where
    DB: Backend,
    DB::Row: Columns,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    /// Records that `n` runs now (a restart replaces the row of its node).
    pub(crate) async fn register_node(&self, n: &NodeStart) -> Result<()> {
        let now = DB::NOW;
        sqlx::query(&format!(
            "INSERT INTO nodes (node_id, owner, host, pid, version, sftp_addr, started_at, heartbeat_at, stopped_at)
             VALUES ($1, $2, $3, $4, $5, $6, {now}, {now}, NULL)
             ON CONFLICT (node_id) DO UPDATE SET owner = excluded.owner, host = excluded.host, pid = excluded.pid,
               version = excluded.version, sftp_addr = excluded.sftp_addr, started_at = excluded.started_at,
               heartbeat_at = excluded.heartbeat_at, stopped_at = NULL"
        ))
        .bind(n.node_id.as_str())
        .bind(n.owner.as_str())
        .bind(n.host.as_str())
        .bind(n.pid as i64)
        .bind(n.version.as_str())
        .bind(n.sftp_addr.as_deref())
        .execute(&self.pool)
        .await?;
        // Commands run as nodes of their own: forget those stopped a day ago.
        sqlx::query(&format!("DELETE FROM nodes WHERE stopped_at < {}", DB::seconds_from_now("$1")))
            .bind(-86_400i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The node's heartbeat and its running jobs'; false when the node's
    /// row names another process now (a newer start of the same node).
    pub(crate) async fn node_heartbeat(&self, node_id: &str, owner: &str) -> Result<bool> {
        let now = DB::NOW;
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let done = sqlx::query(&format!("UPDATE nodes SET heartbeat_at = {now} WHERE node_id = $1 AND owner = $2"))
            .bind(node_id)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("UPDATE jobs SET heartbeat_at = {now} WHERE owner = $1 AND status = 'running'"))
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    pub(crate) async fn node_stopped(&self, node_id: &str, owner: &str) -> Result<()> {
        let now = DB::NOW;
        sqlx::query(&format!("UPDATE nodes SET stopped_at = {now} WHERE node_id = $1 AND owner = $2"))
            .bind(node_id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks the process `owner` stopped (it was seen dead), once.
    pub(crate) async fn owner_stopped(&self, owner: &str) -> Result<()> {
        let now = DB::NOW;
        sqlx::query(&format!("UPDATE nodes SET stopped_at = {now} WHERE owner = $1 AND stopped_at IS NULL"))
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Running jobs of earlier starts of node `node_id` (owners
    /// `node_id:…` other than `owner`) are released at once: the node's
    /// lock says no other process of it lives. A crash counts as an attempt.
    pub(crate) async fn release_node_leftovers(&self, node_id: &str, owner: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET owner = NULL
             WHERE status = 'running' AND owner <> $2 AND substr(owner, 1, length($1)) = $1",
        )
        .bind(format!("{node_id}:").as_str())
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done))
    }

    pub(crate) async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        let sql = format!(
            "SELECT node_id, owner, host, pid, version, sftp_addr, {} AS up, {} AS age, stopped_at IS NOT NULL AS stopped
             FROM nodes ORDER BY node_id",
            DB::seconds_since("started_at"),
            DB::seconds_since("heartbeat_at"),
        );
        let nodes = sqlx::query(&sql).fetch_all(&self.pool).await?;
        let jobs = sqlx::query(
            "SELECT owner, job_id, account, file_name FROM jobs
             WHERE status = 'running' AND owner IS NOT NULL ORDER BY received_at, job_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let jobs = jobs
            .iter()
            .map(|r| {
                let job =
                    OwnedJob { job_id: r.text("job_id")?, account: r.text("account")?, file: r.text("file_name")? };
                Ok((r.text("owner")?, job))
            })
            .collect::<Result<Vec<_>>>()?;
        nodes
            .iter()
            .map(|r| {
                let owner = r.text("owner")?;
                let jobs = jobs.iter().filter(|(o, _)| *o == owner).map(|(_, job)| job.clone()).collect();
                Ok(NodeInfo {
                    node_id: r.text("node_id")?,
                    host: r.text("host")?,
                    pid: r.count("pid")?,
                    version: r.text("version")?,
                    sftp_addr: r.maybe_text("sftp_addr")?,
                    up_secs: r.real("up")?.max(0.0),
                    heartbeat_age_secs: r.real("age")?.max(0.0),
                    stopped: r.flag("stopped")?,
                    owner,
                    jobs,
                })
            })
            .collect()
    }
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

impl Store {
    pub async fn register_node(&self, n: &NodeStart) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.register_node(n).await,
            Store::Postgres(s) => s.sql.register_node(n).await,
        }
    }

    pub async fn node_heartbeat(&self, node_id: &str, owner: &str) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.node_heartbeat(node_id, owner).await,
            Store::Postgres(s) => s.sql.node_heartbeat(node_id, owner).await,
        }
    }

    pub async fn node_stopped(&self, node_id: &str, owner: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.node_stopped(node_id, owner).await,
            Store::Postgres(s) => s.sql.node_stopped(node_id, owner).await,
        }
    }

    pub async fn owner_stopped(&self, owner: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.owner_stopped(owner).await,
            Store::Postgres(s) => s.sql.owner_stopped(owner).await,
        }
    }

    pub async fn release_node_leftovers(&self, node_id: &str, owner: &str) -> Result<u64> {
        match self {
            Store::Sqlite(s) => s.sql.release_node_leftovers(node_id, owner).await,
            Store::Postgres(s) => s.sql.release_node_leftovers(node_id, owner).await,
        }
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        match self {
            Store::Sqlite(s) => s.sql.list_nodes().await,
            Store::Postgres(s) => s.sql.list_nodes().await,
        }
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

    /// Owners of nodes seen dead: their lock gone (PostgreSQL) and no
    /// heartbeat for `quiet`; none on SQLite, where a node's earlier starts
    /// are released when it starts.
    pub async fn dead_node_owners_after(&self, quiet: std::time::Duration) -> Result<Vec<String>> {
        match self {
            Store::Postgres(s) => s.dead_node_owners(quiet.as_secs_f64()).await,
            Store::Sqlite(_) => Ok(Vec::new()),
        }
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
