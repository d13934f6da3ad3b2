//! Tables `customers` (one row per customer, read by other services too;
//! written in batches by jobs, one at a time by the API) and
//! `job_refs` (the refs a running job has claimed), written in batches: a
//! [`Batch`] is one transaction whose upserts commit together with its
//! job's progress. What to write is decided above the store
//! (`ingest::upsert`); each backend writes it its own fastest way.

use super::jobs::{JobLease, JobProgress};
use super::sql::{Backend, Columns, Sql};
use super::{fenced, postgres, sqlite, Result, Store, StoreError};
use crate::domain::CreateCustomer;
use serde_json::{Map, Value};
use sqlx::{Encode, Executor, IntoArguments, Type};
use std::collections::HashMap;

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
    /// A new customer made of `command`, with a new id.
    pub fn of(command: &CreateCustomer, last_job: Option<(String, u64)>) -> StoredCustomer {
        StoredCustomer {
            customer_id: uuid::Uuid::now_v7().to_string(),
            customer_ref: command.customer_ref().as_str().to_owned(),
            addresses: command.addresses().to_json(),
            metadata: command.metadata().as_map().clone(),
            appdata: command.appdata().as_map().clone(),
            last_job,
        }
    }

    /// The stored text of `addresses`, `metadata` and `appdata`.
    pub(super) fn json_columns(&self) -> (String, String, String) {
        let text = |r: serde_json::Result<String>| r.expect("JSON values serialise");
        (
            text(serde_json::to_string(&self.addresses)),
            text(serde_json::to_string(&self.metadata)),
            text(serde_json::to_string(&self.appdata)),
        )
    }
}

/// A customer a batch creates: its new id, and the command it is made of,
/// borrowed rather than copied (a chunk holds thousands of them, and a copy
/// of their maps cost about what writing them does).
#[derive(Debug, Clone)]
pub struct NewCustomer<'a> {
    pub customer_id: String,
    pub command: &'a CreateCustomer,
    /// The job and line that create it.
    pub job: &'a str,
    pub line: u64,
}

impl<'a> NewCustomer<'a> {
    pub fn customer_ref(&self) -> &'a str {
        self.command.customer_ref().as_str()
    }

    /// The stored text of `addresses`, `metadata` and `appdata`.
    pub(super) fn json_columns(&self) -> (String, String, String) {
        let text = |r: serde_json::Result<String>| r.expect("JSON values serialise");
        (
            text(serde_json::to_string(self.command.addresses())),
            text(serde_json::to_string(self.command.metadata().as_map())),
            text(serde_json::to_string(self.command.appdata().as_map())),
        )
    }
}

/// Which of the rows given to `Batch::insert_new` went in (the others' refs
/// were taken).
#[derive(Debug)]
pub enum Inserted {
    /// Every one: the usual case, known without reading anything back.
    All,
    /// The refs of those that went in.
    Only(foldhash::HashSet<String>),
}

impl Inserted {
    pub fn contains(&self, customer_ref: &str) -> bool {
        match self {
            Inserted::All => true,
            Inserted::Only(refs) => refs.contains(customer_ref),
        }
    }
}

/// A stored customer with its times (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRecord {
    pub customer: StoredCustomer,
    pub created_at: String,
    pub updated_at: String,
}

/// How one customer is looked up, always within one account.
#[derive(Debug, Clone, Copy)]
pub enum CustomerKey<'a> {
    Id(&'a str),
    Ref(&'a str),
}

/// Decodes [`Backend::CUSTOMER_COLUMNS`].
pub(super) fn customer(r: &impl Columns) -> Result<StoredCustomer> {
    let customer_id = r.text("customer_id")?;
    let object = |column: &str| match serde_json::from_str::<Value>(&r.text(column)?) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(StoreError::Corrupt(format!("{column} of customer {customer_id} is not a JSON object"))),
    };
    let last_job = match (r.maybe_text("last_job_id")?, r.maybe_count("last_line")?) {
        (Some(job), Some(line)) => Some((job, line)),
        _ => None,
    };
    Ok(StoredCustomer {
        addresses: serde_json::from_str(&r.text("addresses")?)
            .map_err(|_| StoreError::Corrupt(format!("addresses of customer {customer_id}")))?,
        metadata: object("metadata")?,
        appdata: object("appdata")?,
        customer_ref: r.text("ref")?,
        last_job,
        customer_id,
    })
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

/// Saves the leased job's progress inside its batch's transaction, only
/// while the lease's owner still owns the job (else the batch must not commit).
pub(super) async fn record_progress<DB>(conn: &mut DB::Connection, lease: &JobLease, p: &JobProgress) -> Result<()>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let sql = format!(
        "UPDATE jobs SET records_done = $1, results_offset = $2, created = $3, updated = $4, unchanged = $5,
           failed = $6, heartbeat_at = {}, attempts = 1, retries = 0, results_owner = $8
         WHERE job_id = $7 AND owner = $8",
        DB::NOW
    );
    let done = sqlx::query(&sql)
        .bind(p.records_done as i64)
        .bind(p.results_offset as i64)
        .bind(p.created as i64)
        .bind(p.updated as i64)
        .bind(p.unchanged as i64)
        .bind(p.failed as i64)
        .bind(lease.job_id().as_str())
        .bind(lease.owner())
        .execute(conn)
        .await?;
    fenced(DB::rows_affected(&done), lease.job_id())
}

impl<DB> Sql<DB>
where
    DB: Backend,
    DB::Row: Columns,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    pub(crate) async fn get_customer(&self, account: &str, customer_ref: &str) -> Result<Option<StoredCustomer>> {
        let sql = format!("SELECT {} FROM customers WHERE account = $1 AND ref = $2", DB::CUSTOMER_COLUMNS);
        let row = sqlx::query(&sql).bind(account).bind(customer_ref).fetch_optional(&self.pool).await?;
        row.as_ref().map(customer).transpose()
    }

    /// One customer of `account`, with its times.
    pub(crate) async fn find_customer(&self, account: &str, key: CustomerKey<'_>) -> Result<Option<CustomerRecord>> {
        let (by, value) = match key {
            CustomerKey::Id(v) => ("customer_id", v),
            CustomerKey::Ref(v) => ("ref", v),
        };
        let sql = format!(
            "SELECT {}, {}, {} FROM customers WHERE account = $1 AND {by} = $2",
            DB::CUSTOMER_COLUMNS,
            DB::time_text("created_at", "created_text"),
            DB::time_text("updated_at", "updated_text"),
        );
        let row = sqlx::query(&sql).bind(account).bind(value).fetch_optional(&self.pool).await?;
        row.map(|r| {
            let customer = StoredCustomer { last_job: None, ..customer(&r)? };
            Ok(CustomerRecord { customer, created_at: r.text("created_text")?, updated_at: r.text("updated_text")? })
        })
        .transpose()
    }

    /// Creates `c` unless its ref is taken in `account`; whether it was created.
    pub(crate) async fn create_customer(&self, account: &str, c: &StoredCustomer) -> Result<bool> {
        let (addresses, metadata, appdata) = c.json_columns();
        let sql = format!(
            "INSERT INTO customers (customer_id, account, ref, addresses, metadata, appdata, created_at, updated_at)
             VALUES ($1, $2, $3, {}, {}, {}, {now}, {now}) ON CONFLICT DO NOTHING",
            DB::json("$4"),
            DB::json("$5"),
            DB::json("$6"),
            now = DB::NOW,
        );
        let done = sqlx::query(&sql)
            .bind(c.customer_id.as_str())
            .bind(account)
            .bind(c.customer_ref.as_str())
            .bind(addresses.as_str())
            .bind(metadata.as_str())
            .bind(appdata.as_str())
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// Writes `c`'s addresses, metadata and appdata over the stored ones;
    /// false if it is gone.
    pub(crate) async fn replace_customer(&self, account: &str, c: &StoredCustomer) -> Result<bool> {
        let (addresses, metadata, appdata) = c.json_columns();
        let sql = format!(
            "UPDATE customers SET addresses = {}, metadata = {}, appdata = {}, updated_at = {},
               last_job_id = NULL, last_line = NULL
             WHERE account = $1 AND customer_id = $2",
            DB::json("$3"),
            DB::json("$4"),
            DB::json("$5"),
            DB::NOW,
        );
        let done = sqlx::query(&sql)
            .bind(account)
            .bind(c.customer_id.as_str())
            .bind(addresses.as_str())
            .bind(metadata.as_str())
            .bind(appdata.as_str())
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    pub(crate) async fn count_customers(&self, account: &str) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM customers WHERE account = $1")
            .bind(account)
            .fetch_one(&self.pool)
            .await?;
        row.count("n")
    }
}

impl Store {
    /// The stored form of a customer, for tests and support.
    pub async fn get_customer(&self, account: &str, customer_ref: &str) -> Result<Option<StoredCustomer>> {
        match self {
            Store::Sqlite(s) => s.sql.get_customer(account, customer_ref).await,
            Store::Postgres(s) => s.sql.get_customer(account, customer_ref).await,
        }
    }

    /// One customer of `account`, with its times.
    pub async fn find_customer(&self, account: &str, key: CustomerKey<'_>) -> Result<Option<CustomerRecord>> {
        match self {
            Store::Sqlite(s) => s.sql.find_customer(account, key).await,
            Store::Postgres(s) => s.sql.find_customer(account, key).await,
        }
    }

    /// Creates `customer` unless its ref is taken in `account`; whether it was.
    pub async fn create_customer(&self, account: &str, customer: &StoredCustomer) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.create_customer(account, customer).await,
            Store::Postgres(s) => s.sql.create_customer(account, customer).await,
        }
    }

    /// Writes `customer`'s addresses, metadata and appdata over the stored
    /// ones; false if it is gone.
    pub async fn replace_customer(&self, account: &str, customer: &StoredCustomer) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.replace_customer(account, customer).await,
            Store::Postgres(s) => s.sql.replace_customer(account, customer).await,
        }
    }

    pub async fn count_customers(&self, account: &str) -> Result<u64> {
        match self {
            Store::Sqlite(s) => s.sql.count_customers(account).await,
            Store::Postgres(s) => s.sql.count_customers(account).await,
        }
    }

    /// Starts a batch: claims, upserts and progress commit together.
    pub async fn begin_batch(&self, account: &str) -> Result<Batch> {
        Ok(match self {
            Store::Sqlite(s) => Batch::Sqlite(s.begin_batch().await?),
            Store::Postgres(s) => Batch::Postgres(s.begin_batch(account).await?),
        })
    }

    /// How long an open batch may have run before it commits for others
    /// that wait for the database; None: no one waits. Only on SQLite, which
    /// has one writer; on PostgreSQL batches of different accounts run side
    /// by side, and nothing else waits for them.
    /// Whether a job alone in its process runs longer batches: SQLite,
    /// where each commit rewrites every page its batch touched (fewer
    /// commits: -8 % on 1 M random-order refs); not PostgreSQL, where 10 s
    /// batches were 10 % slower than 1 s ones on the same file
    /// (BENCHMARKS.md, "CPU per row").
    pub fn longer_batches_alone(&self) -> bool {
        matches!(self, Store::Sqlite(_))
    }

    pub fn yield_after(&self) -> Option<std::time::Duration> {
        match self {
            Store::Sqlite(s) => s.yield_after(),
            Store::Postgres(_) => None,
        }
    }

    /// Keeps the planner's statistics current while a job grows the tables
    /// (PostgreSQL; SQLite's planner needs none for key lookups).
    pub async fn refresh_statistics(&self) -> Result<()> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.refresh_statistics().await,
        }
    }
}

/// One batch in one transaction.
pub enum Batch {
    Sqlite(sqlite::SqliteBatch),
    Postgres(postgres::PgBatch),
}

/// The questions a batch asks and the writes it makes.
impl Batch {
    /// The earlier lines of job `job_id` that claimed these ref keys
    /// without leaving a trace in `customers` (see `claim_key`).
    pub async fn claimed_refs(&mut self, job_id: &str, keys: &[&str]) -> Result<HashMap<String, u64>> {
        match self {
            Batch::Sqlite(b) => b.claimed_refs(job_id, keys).await,
            Batch::Postgres(b) => b.claimed_refs(job_id, keys).await,
        }
    }

    /// The account's customers with these refs, by ref.
    pub async fn existing(&mut self, account: &str, refs: &[&str]) -> Result<HashMap<String, StoredCustomer>> {
        match self {
            Batch::Sqlite(b) => b.existing(account, refs).await,
            Batch::Postgres(b) => b.existing(account, refs).await,
        }
    }

    pub async fn insert_customers(&mut self, account: &str, rows: &[NewCustomer<'_>]) -> Result<()> {
        match self {
            Batch::Sqlite(b) => b.insert_customers(account, rows).await,
            Batch::Postgres(b) => b.insert_customers(account, rows).await,
        }
    }

    /// Inserts those of `rows` whose ref the account has no customer for,
    /// and says which went in; the others are left as they are. One pass
    /// over the `(account, ref)` index for rows that are mostly new.
    pub async fn insert_new(&mut self, account: &str, rows: &[NewCustomer<'_>]) -> Result<Inserted> {
        match self {
            Batch::Sqlite(b) => b.insert_new(account, rows).await,
            Batch::Postgres(b) => b.insert_new(account, rows).await,
        }
    }

    pub async fn update_customers(&mut self, rows: &[StoredCustomer]) -> Result<()> {
        match self {
            Batch::Sqlite(b) => b.update_customers(rows).await,
            Batch::Postgres(b) => b.update_customers(rows).await,
        }
    }

    /// Records claims of ref keys (key, line) by job `job_id`.
    pub async fn record_claims(&mut self, job_id: &str, claims: &[(String, u64)]) -> Result<()> {
        match self {
            Batch::Sqlite(b) => b.record_claims(job_id, claims).await,
            Batch::Postgres(b) => b.record_claims(job_id, claims).await,
        }
    }

    /// Saves the leased job's progress and commits everything of the batch
    /// at once, only while the lease holds (else nothing is committed).
    pub async fn commit(self, lease: &JobLease, progress: &JobProgress) -> Result<()> {
        match self {
            Batch::Sqlite(b) => b.commit(lease, progress).await,
            Batch::Postgres(b) => b.commit(lease, progress).await,
        }
    }
}
