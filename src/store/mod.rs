//! The store: customers, accounts and users, jobs, nodes and webhooks, one
//! interface (`Store`) over SQLite (the embedded default) and PostgreSQL.
//! Sees only domain types, never CSV or SFTP types.
//!
//! One file per table (or pair of tables): `accounts.rs`, `jobs.rs`,
//! `customers.rs`, `nodes.rs`, `webhooks.rs`. Their SQL is written once, as
//! methods of [`Sql`] generic over the backend (`sql.rs` says what differs:
//! the clock, timestamps, how a write transaction begins), each with a
//! `Store` method that forwards to it. What one backend does its own way —
//! PostgreSQL's `COPY` and advisory locks, SQLite's one-writer fairness, the
//! job claim — is in `postgres.rs` and `sqlite.rs`.

mod accounts;
mod console;
mod customers;
mod health;
mod idempotency;
mod jobs;
mod mappings;
mod nodes;
mod pgp_keys;
mod postgres;
mod sql;
mod sqlite;
mod tokens;
mod webhooks;

use crate::domain::job::UnknownName;
use std::time::Duration;

pub use crate::domain::{JobKind, JobPhase, JobStatus};
pub use console::{AuditEntry, ConsoleSession, PrincipalKind, SessionLife, TotpState};
pub use customers::{claim_key, Batch, CustomerKey, CustomerRecord, Inserted, NewCustomer, StoredCustomer};
pub use idempotency::StoredAnswer;
pub use jobs::{Claimed, FirstPass, Job, JobCounts, JobLease, JobProgress, NewJob};
pub use mappings::{PutMapping, StoredMapping};
pub use nodes::{NodeInfo, NodeLock, NodeStart, OwnedJob};
pub use pgp_keys::{PgpRole, StoredPgpKey};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use tokens::{NewToken, TokenInfo, TokenUser};
pub use webhooks::{Delivery, DeliveryStatus, Webhook, WebhookSecret};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL (use sqlite://PATH or postgres://...): {0}")]
    UnsupportedUrl(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("job {0} is no longer this process's (another process took it over)")]
    NotOwner(String),
    #[error("the database holds a value intake cannot read: {0}")]
    Corrupt(String),
    #[error("cannot take the node's lock file: {0}")]
    LockFile(std::io::Error),
}

impl From<UnknownName> for StoreError {
    fn from(e: UnknownName) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Whole seconds, as the statements bind them.
fn secs(d: Duration) -> i64 {
    d.as_secs().min(i64::MAX as u64) as i64
}

/// The store: SQLite or PostgreSQL behind one interface.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    /// Connects and runs the embedded migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, Duration::from_secs(60)).await
    }

    /// Connects; on PostgreSQL a session left idle inside a transaction for
    /// `idle_in_transaction` (a frozen process) is ended by the server, so
    /// its locks never hold up the process that takes its jobs over.
    pub async fn connect_with(url: &str, idle_in_transaction: Duration) -> Result<Store> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteStore::connect(url).await?))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Store::Postgres(PgStore::connect(url, idle_in_transaction).await?))
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// This store's instance: random at each connect, the tail of the names
    /// its process owns jobs under (`NODE:INSTANCE`) and, on PostgreSQL, of
    /// its sessions' `application_name` (`intake:INSTANCE`), so a process
    /// taking a job over from a frozen one finds that one's sessions.
    pub fn instance(&self) -> &str {
        match self {
            Store::Sqlite(s) => &s.instance,
            Store::Postgres(s) => &s.instance,
        }
    }

    /// The name node `node_id` of this process owns jobs under: `NODE:INSTANCE`.
    pub fn owner_name(&self, node_id: &str) -> String {
        format!("{node_id}:{}", self.instance())
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// The database answers a query.
    pub async fn ping(&self) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.ping().await,
            Store::Postgres(s) => s.sql.ping().await,
        }
    }
}

/// A fenced write changed no row: the job is no longer this owner's.
fn fenced(rows_affected: u64, job_id: &str) -> Result<()> {
    if rows_affected == 0 {
        return Err(StoreError::NotOwner(job_id.to_owned()));
    }
    Ok(())
}

/// A new store instance id (see `Store::instance`).
fn new_instance() -> std::sync::Arc<str> {
    uuid::Uuid::new_v4().simple().to_string()[..12].into()
}

/// The PostgreSQL `application_name` of a store instance's sessions.
fn instance_session_name(instance: &str) -> String {
    format!("intake:{instance}")
}

/// The PostgreSQL `application_name` of the sessions of the store that owns
/// jobs as `owner` (`Store::owner_name`); `None` for an owner of another form.
fn session_name(owner: &str) -> Option<String> {
    let (_, instance) = owner.rsplit_once(':')?;
    (!instance.is_empty()).then(|| instance_session_name(instance))
}

/// A database URL with its password hidden, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &userinfo[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_password_never_shows_in_a_redacted_url() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/intake"), "postgres://app:***@db:5432/intake");
        assert_eq!(redact_url("sqlite://data/intake.db"), "sqlite://data/intake.db");
    }

    #[test]
    fn an_owner_names_the_sessions_of_its_store_instance() {
        let instance = new_instance();
        assert_eq!(instance.len(), 12);
        let owner = format!("node-a.example_1:{instance}");
        assert_eq!(session_name(&owner), Some(format!("intake:{instance}")));
        // Within PostgreSQL's 63 bytes of application_name, whatever the node id.
        assert!(session_name(&format!("{}:{instance}", "n".repeat(64))).unwrap().len() <= 63);
        assert_eq!(session_name("w1"), None, "an owner of another form names no session");
        assert_eq!(session_name("node-a:"), None);
    }
}
