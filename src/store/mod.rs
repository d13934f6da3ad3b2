//! The customer store, accounts, SFTP users and upload jobs: one interface over
//! SQLite (the embedded default) and PostgreSQL. Sees only domain types, never
//! CSV or SFTP types.

#[macro_use]
mod shared;
#[macro_use]
pub mod ops;
#[macro_use]
pub mod nodes;
mod deliveries_fair;
mod health;
mod nodes_quiet;
mod postgres;
mod sqlite;

use crate::clock::Timestamp;
use crate::domain::user::{Scopes, SftpUser};
use crate::domain::{AccountId, AccountSettings, FileEncoding, JobId, PhoneCheck, PhoneRegion, SettingError};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

pub use nodes::{NodeInfo, NodeLock, NodeStart, OwnedJob};
pub use ops::{Delivery, DeliveryStatus, JobCounts, Webhook, WebhookSecret};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

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

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Whole seconds, as the statements bind them.
fn secs(d: Duration) -> i64 {
    d.as_secs().min(i64::MAX as u64) as i64
}

/// A job's progress, committed together with the batch that produced it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobProgress {
    pub records_done: u64,
    pub results_offset: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
}

/// One upload job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub job_id: JobId,
    pub account: String,
    pub file_name: String,
    pub spool_path: String,
    pub sha256: String,
    pub bytes: u64,
    pub status: JobStatus,
    /// On the database's clock.
    pub received_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub rows_total: u64,
    pub progress: JobProgress,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub uploader: Option<String>,
    /// What the uploader may do: `update` decides whether existing refs
    /// are updated or fail with `ref_exists`.
    pub scopes: Scopes,
    pub phase: JobPhase,
    /// The summary (JSON) once the outcome is decided: what is published.
    pub outcome: Option<String>,
    /// Starts of processing since progress was last committed.
    pub attempts: u32,
    /// Transient failures in a row.
    pub retries: u32,
    /// On the database's clock.
    pub retry_at: Option<Timestamp>,
    pub last_error: Option<String>,
    /// The upload's name in `/customers` while it stays visible there.
    pub visible_path: Option<String>,
    pub kind: JobKind,
    /// The account's settings as the job's first pass read the file with them.
    pub settings: Option<String>,
    /// The process whose results file the committed offset refers to.
    pub results_owner: Option<String>,
}

/// What a job does with its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobKind {
    /// A file in `/customers`: rows are upserted.
    #[default]
    Import,
    /// A file in `/validate`: rows are checked against the database as an
    /// import would, nothing is written to customers.
    Validation,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Import => "import",
            Self::Validation => "validation",
        }
    }

    pub fn is_dry_run(self) -> bool {
        self == Self::Validation
    }

    fn parse(raw: &str) -> Result<Self> {
        Ok(match raw {
            "import" => Self::Import,
            "validation" => Self::Validation,
            other => return Err(StoreError::Corrupt(format!("job kind `{other}`"))),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Recorded; its upload is being moved into the spool.
    Arriving,
    Queued,
    Running,
    /// A transient fault; taken again at `retry_at`.
    Retrying,
    Completed,
    Rejected,
    /// Could not be finished: the rows committed so far are reported.
    Aborted,
}

/// Where a running job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    /// Batches of rows are being applied.
    Rows,
    /// The outcome is decided (`Job::outcome`); the report is being published.
    Publishing,
    /// Finished: the report is out and the upload archived.
    Done,
}

impl JobPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rows => "rows",
            Self::Publishing => "publishing",
            Self::Done => "done",
        }
    }

    fn parse(raw: &str) -> Result<Self> {
        Ok(match raw {
            "rows" => Self::Rows,
            "publishing" => Self::Publishing,
            "done" => Self::Done,
            other => return Err(StoreError::Corrupt(format!("job phase `{other}`"))),
        })
    }
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Arriving => "arriving",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Completed => "completed",
            Self::Rejected => "rejected",
            Self::Aborted => "aborted",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Rejected | Self::Aborted)
    }

    pub fn parse(raw: &str) -> Result<Self> {
        Ok(match raw {
            "arriving" => Self::Arriving,
            "queued" => Self::Queued,
            "running" => Self::Running,
            "retrying" => Self::Retrying,
            "completed" => Self::Completed,
            "rejected" => Self::Rejected,
            "aborted" => Self::Aborted,
            other => return Err(StoreError::Corrupt(format!("job status `{other}`"))),
        })
    }
}

/// What a job's first pass over its file learnt, recorded when it starts.
#[derive(Debug, Clone)]
pub struct FirstPass<'a> {
    pub sha256: &'a str,
    pub bytes: u64,
    pub rows_total: u64,
    pub started_at: Timestamp,
    /// The account's settings the file is read with (`AccountSettings::snapshot`).
    pub settings: &'a str,
}

/// A job to be created: the upload has been moved into its spool.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub job_id: JobId,
    pub account: String,
    pub file_name: String,
    pub spool_path: String,
    pub sha256: String,
    pub bytes: u64,
    pub uploader: Option<String>,
    pub scopes: Scopes,
    /// Identifies a visible upload that stays in place; no two jobs take the same.
    pub source_key: Option<String>,
    pub kind: JobKind,
    /// The process taking the upload in: while its node heartbeats, no
    /// other process settles the arriving job (a long copy is no crash).
    pub owner: Option<String>,
}

/// The store: SQLite or PostgreSQL behind one interface.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

macro_rules! dispatch {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            Store::Sqlite($s) => $body,
            Store::Postgres($s) => $body,
        }
    };
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
        dispatch!(self, s => &s.instance)
    }

    /// The name node `node_id` of this process owns jobs under: `NODE:INSTANCE`.
    pub fn owner_name(&self, node_id: &str) -> String {
        format!("{node_id}:{}", self.instance())
    }

    /// Due webhook events, at most `per_account` of each account's, taken
    /// round-robin across accounts.
    pub async fn due_deliveries_fair(&self, now: &str, per_account: u32, limit: u32) -> Result<Vec<Delivery>> {
        dispatch!(self, s => s.due_deliveries_fair(now, per_account, limit).await)
    }

    /// Commits one small write for `node`: whether the store takes writes.
    pub async fn write_probe(&self, node: &str) -> Result<()> {
        dispatch!(self, s => s.write_probe(node).await)
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn add_account(&self, account: &AccountSettings) -> Result<()> {
        dispatch!(self, s => s.add_account(account, false).await)
    }

    /// Creates or updates an account (used for accounts declared in config).
    pub async fn put_account(&self, account: &AccountSettings) -> Result<()> {
        dispatch!(self, s => s.add_account(account, true).await)
    }

    pub async fn get_account(&self, avid: &str) -> Result<Option<AccountSettings>> {
        dispatch!(self, s => s.get_account(avid).await)
    }

    pub async fn list_accounts(&self) -> Result<Vec<AccountSettings>> {
        dispatch!(self, s => s.list_accounts().await)
    }

    /// Removes the account and its users; its customers stay in the store.
    pub async fn remove_account(&self, avid: &str) -> Result<()> {
        dispatch!(self, s => s.remove_account(avid).await)
    }

    pub async fn add_user(&self, user: &SftpUser) -> Result<()> {
        dispatch!(self, s => s.add_user(user, false).await)
    }

    /// Creates or replaces a user (used for users declared in config).
    pub async fn put_user(&self, user: &SftpUser) -> Result<()> {
        dispatch!(self, s => s.add_user(user, true).await)
    }

    pub async fn find_user(&self, username: &str) -> Result<Option<SftpUser>> {
        dispatch!(self, s => s.find_user(username).await)
    }

    pub async fn list_users(&self) -> Result<Vec<SftpUser>> {
        dispatch!(self, s => s.list_users().await)
    }

    pub async fn remove_user(&self, username: &str) -> Result<()> {
        dispatch!(self, s => s.remove_user(username).await)
    }

    pub async fn create_job(&self, job: &NewJob) -> Result<()> {
        dispatch!(self, s => s.create_job(job).await)
    }

    pub async fn get_job(&self, job_id: &str) -> Result<Option<Job>> {
        dispatch!(self, s => s.get_job(job_id).await)
    }

    /// Whether `owner` owns the unfinished job `job_id` now.
    pub async fn owns_job(&self, job_id: &str, owner: &str) -> Result<bool> {
        dispatch!(self, s => s.owns_job(job_id, owner).await)
    }

    /// Recent jobs, newest first.
    pub async fn list_jobs(&self, account: Option<&str>, limit: u32) -> Result<Vec<Job>> {
        dispatch!(self, s => s.list_jobs(account, limit).await)
    }

    /// Records what the first pass learnt about a job `owner` runs.
    pub async fn start_job(&self, job_id: &str, owner: &str, pass: &FirstPass<'_>) -> Result<()> {
        dispatch!(self, s => s.start_job(job_id, owner, pass).await)
    }

    /// Takes the next queued job, a retrying one whose time has come, or a
    /// running one whose owner has not heartbeated for `stale_after` (on the
    /// database's clock), for `owner`; never two processes the same job.
    /// Accounts in `busy_accounts` are skipped, so one account's files never
    /// hold every worker.
    pub async fn claim_job(&self, owner: &str, stale_after: Duration, busy_accounts: &[String]) -> Result<Option<Job>> {
        dispatch!(self, s => s.claim_job(owner, secs(stale_after), busy_accounts).await)
    }

    /// Says that `owner` is alive, for each job it runs.
    pub async fn heartbeat(&self, owner: &str) -> Result<()> {
        dispatch!(self, s => s.heartbeat(owner).await)
    }

    /// Records the end of a job owned by `owner` (its status, counts and
    /// `finished_at` as in `job`) and forgets its claimed refs.
    pub async fn finish_job(&self, job: &Job, owner: &str) -> Result<()> {
        dispatch!(self, s => s.finish_job(job, owner).await)
    }

    /// Stores the decided outcome (the summary to publish) of a job `owner`
    /// runs: from now on it is only published, never processed again.
    pub async fn decide_job(&self, job_id: &str, owner: &str, outcome: &str) -> Result<()> {
        dispatch!(self, s => s.decide_job(job_id, owner, outcome).await)
    }

    /// Puts a job `owner` runs aside after a transient fault, to be taken
    /// again (by any process) `wait` from now.
    pub async fn retry_job(&self, job_id: &str, owner: &str, retries: u32, wait: Duration, error: &str) -> Result<()> {
        dispatch!(self, s => s.retry_job(job_id, owner, retries, secs(wait), error).await)
    }

    /// Takes an arriving job straight to running for `owner` (an operator's
    /// `intake ingest`), so no other process can claim it.
    pub async fn mark_running(&self, job_id: &str, owner: &str, uploader: Option<&str>, scopes: Scopes) -> Result<()> {
        dispatch!(self, s => s.mark_running(job_id, owner, uploader, scopes.update).await)
    }

    /// Records (or clears) the upload's visible name in `/customers`.
    pub async fn set_visible(&self, job_id: &str, path: Option<&str>) -> Result<()> {
        dispatch!(self, s => s.set_visible(job_id, path).await)
    }

    /// Finished jobs whose upload is still visible, received longer than `age` ago.
    pub async fn visible_uploads(&self, age: Duration) -> Result<Vec<Job>> {
        dispatch!(self, s => s.visible_uploads(secs(age)).await)
    }

    pub async fn delete_job(&self, job_id: &str) -> Result<()> {
        dispatch!(self, s => s.delete_job(job_id).await)
    }

    /// Owners of running jobs (`host:pid` of the intake process).
    pub async fn running_owners(&self) -> Result<Vec<String>> {
        dispatch!(self, s => s.running_owners().await)
    }

    /// Lets any process resume the running jobs of an owner that is gone;
    /// `stopped_cleanly` (a graceful stop, not a crash) forgets their attempts.
    pub async fn release_owner(&self, owner: &str, stopped_cleanly: bool) -> Result<()> {
        dispatch!(self, s => s.release_owner(owner, stopped_cleanly).await)
    }

    /// Jobs recorded longer than `age` ago whose upload may not have
    /// reached the spool (a crash in between), unless the node taking it
    /// in has heartbeated within `age` (a long copy is not a crash).
    pub async fn arriving_jobs(&self, age: Duration) -> Result<Vec<Job>> {
        dispatch!(self, s => s.arriving_jobs(secs(age)).await)
    }

    /// The upload is in the spool: the job may be taken, with who uploaded it.
    pub async fn mark_queued(&self, job_id: &str, uploader: Option<&str>, scopes: Scopes) -> Result<()> {
        dispatch!(self, s => s.mark_queued(job_id, uploader, scopes.update).await)
    }

    /// Keeps the planner's statistics current while a job grows the tables
    /// (PostgreSQL; SQLite's planner needs none for key lookups).
    pub async fn refresh_statistics(&self) -> Result<()> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.refresh_statistics().await,
        }
    }

    /// How long an open batch may have run before it commits for others
    /// that wait for the database; None: no one waits. Only on SQLite, which
    /// has one writer; on PostgreSQL batches of different accounts run side
    /// by side, and nothing else waits for them.
    pub fn yield_after(&self) -> Option<std::time::Duration> {
        match self {
            Store::Sqlite(s) => s.yield_after(),
            Store::Postgres(_) => None,
        }
    }

    /// Starts a batch: claims, upserts and progress commit together.
    pub async fn begin_batch(&self, account: &str) -> Result<Batch> {
        Ok(match self {
            Store::Sqlite(s) => Batch::Sqlite(s.begin_batch().await?),
            Store::Postgres(s) => Batch::Postgres(s.begin_batch(account).await?),
        })
    }

    /// The stored form of a customer, for tests and support.
    pub async fn get_customer(&self, account: &str, customer_ref: &str) -> Result<Option<StoredCustomer>> {
        dispatch!(self, s => s.get_customer(account, customer_ref).await)
    }

    pub async fn count_customers(&self, account: &str) -> Result<u64> {
        dispatch!(self, s => s.count_customers(account).await)
    }
}

/// One batch in one transaction.
pub enum Batch {
    Sqlite(sqlite::SqliteBatch),
    Postgres(postgres::PgBatch),
}

macro_rules! on_batch {
    ($self:expr, $b:ident => $body:expr) => {
        match $self {
            Batch::Sqlite($b) => $body,
            Batch::Postgres($b) => $body,
        }
    };
}

/// The questions a batch asks and the writes it makes; what to write is
/// decided above the store (`ingest::upsert`, spec §3).
impl Batch {
    /// The earlier lines of job `job_id` that claimed these ref keys
    /// without leaving a trace in `customers` (see `claim_key`).
    pub async fn claimed_refs(&mut self, job_id: &str, keys: &[&str]) -> Result<HashMap<String, u64>> {
        on_batch!(self, b => b.claimed_refs(job_id, keys).await)
    }

    /// The account's customers with these refs, by ref.
    pub async fn existing(&mut self, account: &str, refs: &[&str]) -> Result<HashMap<String, StoredCustomer>> {
        on_batch!(self, b => b.existing(account, refs).await)
    }

    pub async fn insert_customers(&mut self, account: &str, rows: &[StoredCustomer]) -> Result<()> {
        on_batch!(self, b => b.insert_customers(account, rows).await)
    }

    /// Inserts those of `rows` whose ref the account has no customer for,
    /// and returns their refs; the others are left as they are. One pass
    /// over the `(account, ref)` index for rows that are mostly new.
    pub async fn insert_new(&mut self, account: &str, rows: &[StoredCustomer]) -> Result<HashSet<String>> {
        on_batch!(self, b => b.insert_new(account, rows).await)
    }

    pub async fn update_customers(&mut self, rows: &[StoredCustomer]) -> Result<()> {
        on_batch!(self, b => b.update_customers(rows).await)
    }

    /// Records claims of ref keys (key, line) by job `job_id`.
    pub async fn record_claims(&mut self, job_id: &str, claims: &[(String, u64)]) -> Result<()> {
        on_batch!(self, b => b.record_claims(job_id, claims).await)
    }

    /// Saves the job's progress and commits everything of the batch at once,
    /// only while `owner` still owns the job (else nothing is committed).
    pub async fn commit(self, job_id: &str, owner: &str, progress: &JobProgress) -> Result<()> {
        on_batch!(self, b => b.commit(job_id, owner, progress).await)
    }
}

/// A customer as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCustomer {
    pub customer_id: String,
    pub customer_ref: String,
    /// `[{"type": ..., "value": ...}]`
    pub addresses: Value,
    pub metadata: Map<String, Value>,
    pub appdata: Map<String, Value>,
    /// The job and line that last created or updated it.
    pub last_job: Option<(String, u64)>,
}

impl StoredCustomer {
    /// The stored text of `addresses`, `metadata` and `appdata`.
    fn json_columns(&self) -> (String, String, String) {
        let text = |r: serde_json::Result<String>| r.expect("JSON values serialise");
        (
            text(serde_json::to_string(&self.addresses)),
            text(serde_json::to_string(&self.metadata)),
            text(serde_json::to_string(&self.appdata)),
        )
    }

    fn from_columns(
        customer_id: String,
        customer_ref: String,
        addresses: &str,
        metadata: &str,
        appdata: &str,
        last_job: Option<(String, u64)>,
    ) -> Result<Self> {
        let object = |text: &str, what: &str| match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(StoreError::Corrupt(format!("{what} of customer {customer_id} is not a JSON object"))),
        };
        Ok(StoredCustomer {
            addresses: serde_json::from_str(addresses)
                .map_err(|_| StoreError::Corrupt(format!("addresses of customer {customer_id}")))?,
            metadata: object(metadata, "metadata")?,
            appdata: object(appdata, "appdata")?,
            customer_ref,
            customer_id,
            last_job,
        })
    }
}

/// Decoding of rows, shared by both backends: the columns are selected in
/// the same order (`JOB_COLUMNS`, ...) and have the same Rust types.
pub(crate) mod rows {
    use super::*;
    use sqlx::{ColumnIndex, Decode, Row, Type};

    /// A stored setting that does not parse: the database was changed by hand.
    fn corrupt(e: SettingError) -> StoreError {
        StoreError::Corrupt(e.to_string())
    }

    pub(crate) const CUSTOMER_COLUMNS_SQLITE: &str =
        "customer_id, ref, addresses, metadata, appdata, last_job_id, last_line";
    pub(crate) const CUSTOMER_COLUMNS_PG: &str =
        "customer_id, ref, addresses::text, metadata::text, appdata::text, last_job_id, last_line";

    /// The columns [`job`] reads; timestamps as SQLite keeps them.
    pub(crate) const JOB_COLUMNS_SQLITE: &str = "job_id, account, file_name, spool_path, sha256, bytes, status, \
        received_at, started_at, finished_at, rows_total, records_done, results_offset, created, updated, unchanged, \
        failed, error_code, error_message, uploader, may_update, phase, outcome, attempts, retries, retry_at, \
        last_error, visible_path, kind, settings, results_owner";
    /// The same, with PostgreSQL's timestamps as RFC 3339 text.
    pub(crate) const JOB_COLUMNS_PG: &str = "job_id, account, file_name, spool_path, sha256, bytes, status, \
        to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
        to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
        to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
        rows_total, records_done, results_offset, created, updated, unchanged, failed, error_code, error_message, \
        uploader, may_update, phase, outcome, attempts, retries, \
        to_char(retry_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), last_error, visible_path, kind, \
        settings, results_owner";

    fn time(text: &str) -> Result<Timestamp> {
        crate::clock::parse(text).ok_or_else(|| StoreError::Corrupt(format!("timestamp `{text}`")))
    }

    /// The types every backend decodes.
    pub(crate) trait Decodes<'r>: Row
    where
        usize: ColumnIndex<Self>,
    {
        fn text(&'r self, i: usize) -> Result<String>;
        fn maybe_text(&'r self, i: usize) -> Result<Option<String>>;
        fn count(&'r self, i: usize) -> Result<u64>;
        fn maybe_count(&'r self, i: usize) -> Result<Option<u64>>;
        fn flag(&'r self, i: usize) -> Result<bool>;
    }

    impl<'r, R: Row> Decodes<'r> for R
    where
        usize: ColumnIndex<R>,
        String: Decode<'r, R::Database> + Type<R::Database>,
        Option<String>: Decode<'r, R::Database> + Type<R::Database>,
        i64: Decode<'r, R::Database> + Type<R::Database>,
        Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
        bool: Decode<'r, R::Database> + Type<R::Database>,
    {
        fn text(&'r self, i: usize) -> Result<String> {
            Ok(self.try_get(i)?)
        }
        fn maybe_text(&'r self, i: usize) -> Result<Option<String>> {
            Ok(self.try_get(i)?)
        }
        fn count(&'r self, i: usize) -> Result<u64> {
            Ok(self.try_get::<i64, _>(i)? as u64)
        }
        fn flag(&'r self, i: usize) -> Result<bool> {
            Ok(self.try_get(i)?)
        }
        fn maybe_count(&'r self, i: usize) -> Result<Option<u64>> {
            Ok(self.try_get::<Option<i64>, _>(i)?.map(|n| n as u64))
        }
    }

    pub(crate) fn job<'r, R: Decodes<'r>>(r: &'r R) -> Result<Job>
    where
        usize: ColumnIndex<R>,
    {
        Ok(Job {
            job_id: r.text(0)?.into(),
            account: r.text(1)?,
            file_name: r.text(2)?,
            spool_path: r.text(3)?,
            sha256: r.text(4)?,
            bytes: r.count(5)?,
            status: JobStatus::parse(&r.text(6)?)?,
            received_at: time(&r.text(7)?)?,
            started_at: r.maybe_text(8)?.as_deref().map(time).transpose()?,
            finished_at: r.maybe_text(9)?.as_deref().map(time).transpose()?,
            rows_total: r.count(10)?,
            progress: JobProgress {
                records_done: r.count(11)?,
                results_offset: r.count(12)?,
                created: r.count(13)?,
                updated: r.count(14)?,
                unchanged: r.count(15)?,
                failed: r.count(16)?,
            },
            error_code: r.maybe_text(17)?,
            error_message: r.maybe_text(18)?,
            uploader: r.maybe_text(19)?,
            scopes: Scopes { create: true, update: r.flag(20)? },
            phase: JobPhase::parse(&r.text(21)?)?,
            outcome: r.maybe_text(22)?,
            attempts: r.count(23)? as u32,
            retries: r.count(24)? as u32,
            retry_at: r.maybe_text(25)?.as_deref().map(time).transpose()?,
            last_error: r.maybe_text(26)?,
            visible_path: r.maybe_text(27)?,
            kind: JobKind::parse(&r.text(28)?)?,
            settings: r.maybe_text(29)?,
            results_owner: r.maybe_text(30)?,
        })
    }

    /// `avid, default_region, encoding, phone_check, report_bom`
    pub(crate) fn account<'r, R: Decodes<'r>>(r: &'r R) -> Result<AccountSettings>
    where
        usize: ColumnIndex<R>,
    {
        Ok(AccountSettings {
            default_region: r.maybe_text(1)?.map(|c| PhoneRegion::parse(&c)).transpose().map_err(corrupt)?,
            encoding: FileEncoding::parse(&r.text(2)?).map_err(corrupt)?,
            phone_check: PhoneCheck::parse(&r.text(3)?).map_err(corrupt)?,
            report_bom: r.flag(4)?,
            avid: AccountId::parse(&r.text(0)?).map_err(corrupt)?,
        })
    }

    /// `username, account, public_keys, password_hash, scopes`
    pub(crate) fn user<'r, R: Decodes<'r>>(r: &'r R) -> Result<SftpUser>
    where
        usize: ColumnIndex<R>,
    {
        Ok(SftpUser {
            username: r.text(0)?,
            account: AccountId::parse(&r.text(1)?).map_err(corrupt)?,
            public_keys: r.text(2)?.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect(),
            password_hash: r.maybe_text(3)?,
            scopes: Scopes::parse(r.text(4)?.split_whitespace()).map_err(corrupt)?,
        })
    }

    /// `CUSTOMER_COLUMNS` (JSON as text)
    pub(crate) fn customer<'r, R: Decodes<'r>>(r: &'r R) -> Result<StoredCustomer>
    where
        usize: ColumnIndex<R>,
    {
        let last_job = match (r.maybe_text(5)?, r.maybe_count(6)?) {
            (Some(job), Some(line)) => Some((job, line)),
            _ => None,
        };
        StoredCustomer::from_columns(r.text(0)?, r.text(1)?, &r.text(2)?, &r.text(3)?, &r.text(4)?, last_job)
    }
}

/// A fenced write changed no row: the job is no longer this owner's.
fn fenced(rows_affected: u64, job_id: &str) -> Result<()> {
    if rows_affected == 0 {
        return Err(StoreError::NotOwner(job_id.to_owned()));
    }
    Ok(())
}

fn scopes_to_text(scopes: Scopes) -> String {
    scopes.names().join(" ")
}

/// The key a claimed ref is stored under: the ref itself, or a hash for refs
/// too long to index (those fail with `ref_too_long` anyway).
pub fn claim_key(claim: &str) -> String {
    if claim.len() <= 512 {
        claim.to_owned()
    } else {
        use sha2::Digest;
        format!("#sha256:{}", hex::encode(sha2::Sha256::digest(claim.as_bytes())))
    }
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
