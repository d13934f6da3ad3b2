//! PostgreSQL: production. Batches travel as arrays (`UNNEST`), one statement
//! per step whatever the batch size, far under the 65,535 bind limit; inserts
//! are sorted by ref for the unique index. Upserts of one account are
//! serialised with a transaction-scoped advisory lock, so several intake
//! processes can share one database.

use super::customers::{customer, record_progress};
use super::jobs::{claimed, job, Claimed, JobLease, JobProgress, ONE_JOB_PER_ACCOUNT};
use super::nodes::{PgNodeLock, NODE_LOCK_CLASS};
use super::sql::{Backend, Sql};
use super::{Inserted, NewCustomer, Result, StoreError, StoredCustomer};
use crate::clock::Timestamp;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use std::collections::HashMap;
use std::str::FromStr;

/// Timestamps are `timestamptz`, read back as RFC 3339 text.
impl Backend for Postgres {
    const EPOCH_NOW: &'static str = "CAST(extract(epoch FROM now()) AS BIGINT)";
    const NOW: &'static str = "now()";
    const BEGIN_WRITE: &'static str = "BEGIN";
    const JOB_COLUMNS: &'static str = concat!(
        "job_id, account, file_name, spool_path, sha256, bytes, status, ",
        "to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS received_at, ",
        "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS started_at, ",
        "to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS finished_at, ",
        "rows_total, records_done, results_offset, created, updated, unchanged, failed, error_code, error_message, ",
        "uploader, may_update, phase, outcome, attempts, retries, ",
        "to_char(retry_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS retry_at, ",
        "last_error, visible_path, kind, settings, results_owner"
    );
    const CUSTOMER_COLUMNS: &'static str =
        "customer_id, ref, addresses::text AS addresses, metadata::text AS metadata, \
        appdata::text AS appdata, last_job_id, last_line";
    type Stamp = Timestamp;

    fn at(t: Timestamp) -> Timestamp {
        t
    }

    fn seconds_from_now(param: &str) -> String {
        format!("(now() + {param}::double precision * interval '1 second')")
    }

    fn seconds_since(expr: &str) -> String {
        format!("EXTRACT(EPOCH FROM (now() - {expr}))::float8")
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn json(param: &str) -> String {
        format!("{param}::jsonb")
    }

    fn time_text(column: &str, alias: &str) -> String {
        format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS {alias}")
    }
}

#[derive(Clone)]
pub struct PgStore {
    pub(super) sql: Sql<Postgres>,
    pub(super) instance: std::sync::Arc<str>,
}

impl PgStore {
    pub async fn connect(url: &str, idle_in_transaction: std::time::Duration) -> Result<Self> {
        let idle = format!("{}ms", idle_in_transaction.as_millis().max(1000));
        let instance = super::new_instance();
        let options = PgConnectOptions::from_str(url)?
            .options([("idle_in_transaction_session_timeout", idle.as_str())])
            .application_name(&super::instance_session_name(&instance));
        let pool = PgPoolOptions::new()
            .after_release(super::health::release_unless_in_doubt::<sqlx::Postgres>)
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PgStore { sql: Sql::new(pool), instance })
    }

    pub(super) async fn claim_job(
        &self,
        owner: &str,
        stale_after_secs: i64,
        busy: &[String],
    ) -> Result<Option<Claimed>> {
        let mut tx = self.sql.pool.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {}, CASE WHEN status = 'running' THEN owner END AS previous_owner FROM jobs
             WHERE (status = 'queued' OR (status = 'retrying' AND retry_at <= now())
                    OR (status = 'running' AND (owner IS NULL OR owner = $1 OR heartbeat_at < {})))
               AND NOT (account = ANY($3)) AND {ONE_JOB_PER_ACCOUNT}
             ORDER BY received_at, job_id LIMIT 1 FOR UPDATE SKIP LOCKED",
            Postgres::JOB_COLUMNS,
            Postgres::seconds_from_now("$2"),
        ))
        .bind(owner)
        .bind(-stale_after_secs)
        .bind(busy)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut job = job(&row)?;
        let previous: Option<String> = row.try_get("previous_owner")?;
        job.attempts += 1;
        job.status = super::JobStatus::Running;
        sqlx::query(
            "UPDATE jobs SET owner = $1, heartbeat_at = now(), status = 'running', attempts = attempts + 1 WHERE job_id = $2",
        )
            .bind(owner)
            .bind(job.job_id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if let Some(previous) = previous.filter(|p| p != owner) {
            self.fence(&previous, &job).await;
        }
        Ok(Some(claimed(job, owner)))
    }

    /// Ends the open transactions of the process that ran `job` before it was
    /// taken over. That process stopped heartbeating, but a frozen process
    /// (SIGSTOP, a paused VM) can hold its batch's locks for ever: the
    /// server ends an idle transaction after `idle_in_transaction`, not one
    /// stopped inside a statement, such as a `COPY` waiting for its next rows.
    /// Ended here, its locks go, and the job's new owner is not held up;
    /// if the process wakes up, its batch fails and it finds the job gone.
    async fn fence(&self, previous: &str, job: &super::Job) {
        let Some(name) = super::session_name(previous) else { return };
        let ended = sqlx::query_scalar::<_, i64>(
            "WITH stale AS MATERIALIZED (
               SELECT pid FROM pg_stat_activity
               WHERE application_name = $1 AND xact_start IS NOT NULL AND pid <> pg_backend_pid()
                 AND datname = current_database())
             SELECT count(*) FROM stale WHERE pg_terminate_backend(pid)",
        )
        .bind(&name)
        .fetch_one(&self.sql.pool)
        .await;
        match ended {
            Ok(0) => {}
            Ok(n) => tracing::warn!(job_id = %job.job_id, previous_owner = previous, sessions = n,
                "ended the open transactions of the process the job was taken from"),
            Err(e) => tracing::warn!(job_id = %job.job_id, previous_owner = previous, error = %e,
                "cannot end the open transactions of the process the job was taken from"),
        }
    }

    /// Refreshes the planner's statistics of the tables a batch reads. A
    /// table that grew from a few rows to millions within one upload still
    /// carries the plan for a few rows (scanning every row of the account
    /// for each batch) until autovacuum's next ANALYZE. Only the key's
    /// columns: the JSON columns' statistics cost seconds and no plan needs them.
    pub async fn refresh_statistics(&self) -> Result<()> {
        sqlx::query("ANALYZE customers (account, ref)").execute(&self.sql.pool).await?;
        sqlx::query("ANALYZE job_refs").execute(&self.sql.pool).await?;
        Ok(())
    }

    /// Takes node `node_id`'s session lock on a connection of its own,
    /// kept for the process's life; `None` when another live process holds it.
    pub(super) async fn lock_node(&self, node_id: &str) -> Result<Option<PgNodeLock>> {
        let mut conn = self.sql.pool.acquire().await?.detach();
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2) & 2147483647)")
            .bind(NODE_LOCK_CLASS)
            .bind(node_id)
            .fetch_one(&mut conn)
            .await?;
        Ok(held.then(|| PgNodeLock { conn: tokio::sync::Mutex::new(conn) }))
    }

    /// Owners of nodes not stopped, without their session lock, that have
    /// not heartbeaten for `quiet_secs`. A server restart ends every node's
    /// session (and lock) at once, and a node that is alive takes its lock
    /// again at its next beat: a lost lock means a dead node only once its
    /// heartbeat is quiet too.
    pub(super) async fn dead_node_owners(&self, quiet_secs: f64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT owner FROM nodes WHERE stopped_at IS NULL
               AND heartbeat_at < now() - $2 * interval '1 second'
               AND NOT EXISTS (
                 SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND classid = $1::oid AND objid = (hashtext(nodes.node_id) & 2147483647)::oid AND objsubid = 2)",
        )
        .bind(NODE_LOCK_CLASS)
        .bind(quiet_secs)
        .fetch_all(&self.sql.pool)
        .await?)
    }

    /// Counts one failed login of `source`; returns whether it is now
    /// refused (`max_failures` within `window_secs`; the refusal lasts a
    /// full window from the failure that reached the limit).
    pub(super) async fn record_login_failure(&self, source: &str, max_failures: u32, window_secs: f64) -> Result<bool> {
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
        .fetch_one(&self.sql.pool)
        .await?)
    }

    pub(super) async fn login_refused(&self, source: &str, max_failures: u32, window_secs: f64) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM login_penalties
               WHERE source = $1 AND failures >= $2 AND since >= now() - $3 * interval '1 second')",
        )
        .bind(source)
        .bind(max_failures as i32)
        .bind(window_secs)
        .fetch_one(&self.sql.pool)
        .await?)
    }

    /// Forgets failures whose window has passed.
    pub(super) async fn prune_login_failures(&self, window_secs: f64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM login_penalties WHERE since < now() - $1 * interval '1 second'")
            .bind(window_secs)
            .execute(&self.sql.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn begin_batch(&self, account: &str) -> Result<PgBatch> {
        let mut tx = self.sql.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('intake.customers'), hashtext($1))")
            .bind(account)
            .execute(&mut *tx)
            .await?;
        Ok(PgBatch { tx, savepoints: 0, conflicted: false })
    }
}

pub struct PgBatch {
    tx: Transaction<'static, Postgres>,
    /// Savepoints taken for optimistic inserts in this transaction.
    savepoints: u32,
    /// An optimistic insert of this transaction met an existing ref: the
    /// rest of it inserts with `ON CONFLICT`.
    conflicted: bool,
}

/// Optimistic inserts per transaction, at most: each savepoint is a
/// subtransaction, and more than 64 of them slow every session's snapshots.
const MAX_SAVEPOINTS: u32 = 32;

impl PgBatch {
    /// Earlier claims of `keys` by this job recorded in `job_refs`.
    pub async fn claimed_refs(&mut self, job_id: &str, keys: &[&str]) -> Result<HashMap<String, u64>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query("SELECT ref_key, line FROM job_refs WHERE job_id = $1 AND ref_key = ANY($2)")
            .bind(job_id)
            .bind(keys)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut earlier = HashMap::with_capacity(rows.len());
        for row in rows {
            earlier.insert(row.try_get(0)?, row.try_get::<i64, _>(1)? as u64);
        }
        Ok(earlier)
    }

    pub async fn record_claims(&mut self, job_id: &str, claims: &[(String, u64)]) -> Result<()> {
        if claims.is_empty() {
            return Ok(());
        }
        let (keys, lines): (Vec<&str>, Vec<i64>) = claims.iter().map(|(k, l)| (k.as_str(), *l as i64)).unzip();
        sqlx::query(
            "INSERT INTO job_refs (job_id, ref_key, line) SELECT $1, k, l FROM UNNEST($2::text[], $3::bigint[]) AS u(k, l)",
        )
        .bind(job_id)
        .bind(&keys)
        .bind(&lines)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn existing(&mut self, account: &str, refs: &[&str]) -> Result<HashMap<String, StoredCustomer>> {
        if refs.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {} FROM customers WHERE account = $1 AND ref = ANY($2)",
            Postgres::CUSTOMER_COLUMNS
        ))
        .bind(account)
        .bind(refs)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            let c = customer(&row)?;
            found.insert(c.customer_ref.clone(), c);
        }
        Ok(found)
    }

    /// New customers by binary `COPY` straight into the table, in key order
    /// (each page of the `(account, ref)` index is visited once per batch).
    /// The rules above the store decided that none of these refs exists, and
    /// the account's advisory lock keeps it so until the batch commits. The
    /// rows are sent as they are encoded, so the server inserts the first
    /// ones while the next are written.
    pub async fn insert_customers(&mut self, account: &str, rows: &[NewCustomer<'_>]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut sorted: Vec<&NewCustomer> = rows.iter().collect();
        sorted.sort_unstable_by(|a, b| a.customer_ref().cmp(b.customer_ref()));
        let mut copy = self
            .tx
            .copy_in_raw(
                "COPY customers (customer_id, account, ref, addresses, metadata, appdata, last_job_id, last_line) \
                 FROM STDIN (FORMAT binary)",
            )
            .await?;
        let mut data = CopyData::with_capacity(COPY_PIECE_ROWS * 256);
        for piece in sorted.chunks(COPY_PIECE_ROWS) {
            for c in piece {
                data.row(8);
                data.text(&c.customer_id);
                data.text(account);
                data.text(c.customer_ref());
                data.jsonb(c.command.addresses());
                data.jsonb(c.command.metadata().as_map());
                data.jsonb(c.command.appdata().as_map());
                data.text(c.job);
                data.int8(c.line as i64);
            }
            copy.send(data.take()).await?;
        }
        copy.send(data.finish()).await?;
        copy.finish().await?;
        Ok(())
    }

    /// New customers are usually new: they are copied into the table at
    /// once (binary `COPY`, in key order, each index entry written once, as
    /// a bulk load does), under a savepoint. If a ref exists after all, that
    /// is undone and the rows go in with `ON CONFLICT DO NOTHING` (which
    /// probes the unique index once more per row), as do the rest of the
    /// transaction's.
    pub async fn insert_new(&mut self, account: &str, rows: &[NewCustomer<'_>]) -> Result<Inserted> {
        if rows.is_empty() {
            return Ok(Inserted::All);
        }
        if !self.conflicted && self.savepoints < MAX_SAVEPOINTS {
            self.savepoints += 1;
            sqlx::query("SAVEPOINT intake_insert").execute(&mut *self.tx).await?;
            match self.insert_customers(account, rows).await {
                Ok(()) => {
                    sqlx::query("RELEASE SAVEPOINT intake_insert").execute(&mut *self.tx).await?;
                    return Ok(Inserted::All);
                }
                Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                    sqlx::query("ROLLBACK TO SAVEPOINT intake_insert").execute(&mut *self.tx).await?;
                    sqlx::query("RELEASE SAVEPOINT intake_insert").execute(&mut *self.tx).await?;
                    self.conflicted = true;
                }
                Err(e) => return Err(e),
            }
        }
        let mut c = Columns::default();
        for row in rows {
            c.push(&row.customer_id, row.customer_ref(), row.json_columns(), Some((row.job, row.line)));
        }
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO customers (customer_id, account, ref, addresses, metadata, appdata, created_at, updated_at,
               last_job_id, last_line)
             SELECT u.id, $1, u.ref, u.addr::jsonb, u.meta::jsonb, u.app::jsonb, now(), now(), u.job, u.line
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[])
               AS u(id, ref, addr, meta, app, job, line)
             ORDER BY u.ref
             ON CONFLICT (account, ref) DO NOTHING
             RETURNING ref",
        )
        .bind(account)
        .bind(c.ids)
        .bind(c.refs)
        .bind(c.addresses)
        .bind(c.metadata)
        .bind(c.appdata)
        .bind(c.jobs)
        .bind(c.lines)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(Inserted::Only(inserted.into_iter().collect()))
    }

    pub async fn update_customers(&mut self, updates: &[StoredCustomer]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut c = Columns::default();
        for row in updates {
            let job = row.last_job.as_ref().map(|(job, line)| (job.as_str(), *line));
            c.push(&row.customer_id, &row.customer_ref, row.json_columns(), job);
        }
        sqlx::query(
            "UPDATE customers AS c SET addresses = u.addr::jsonb, metadata = u.meta::jsonb, appdata = u.app::jsonb,
               updated_at = now(), last_job_id = u.job, last_line = u.line
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])
               AS u(id, addr, meta, app, job, line)
             WHERE c.customer_id = u.id",
        )
        .bind(c.ids)
        .bind(c.addresses)
        .bind(c.metadata)
        .bind(c.appdata)
        .bind(c.jobs)
        .bind(c.lines)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub(super) async fn commit(mut self, lease: &JobLease, progress: &JobProgress) -> Result<()> {
        record_progress::<Postgres>(&mut self.tx, lease, progress).await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// Customers as column arrays, for `UNNEST`.
#[derive(Default)]
struct Columns {
    ids: Vec<String>,
    refs: Vec<String>,
    addresses: Vec<String>,
    metadata: Vec<String>,
    appdata: Vec<String>,
    jobs: Vec<Option<String>>,
    lines: Vec<Option<i64>>,
}

impl Columns {
    fn push(&mut self, id: &str, customer_ref: &str, json: (String, String, String), job: Option<(&str, u64)>) {
        let (addresses, metadata, appdata) = json;
        self.ids.push(id.to_owned());
        self.refs.push(customer_ref.to_owned());
        self.addresses.push(addresses);
        self.metadata.push(metadata);
        self.appdata.push(appdata);
        self.jobs.push(job.map(|(job, _)| job.to_owned()));
        self.lines.push(job.map(|(_, line)| line as i64));
    }
}

/// Rows encoded before they are sent to the server, in a `COPY`.
const COPY_PIECE_ROWS: usize = 500;

/// Rows in PostgreSQL's binary `COPY` format.
struct CopyData {
    buf: Vec<u8>,
}

impl CopyData {
    fn with_capacity(bytes: usize) -> CopyData {
        let mut buf = Vec::with_capacity(bytes + 32);
        // Signature, flags, header extension length.
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        CopyData { buf }
    }

    /// Starts a row of `fields` fields.
    fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    fn text(&mut self, value: &str) {
        self.buf.extend_from_slice(&(value.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(value.as_bytes());
    }

    fn int8(&mut self, value: i64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    /// A `jsonb` field: format version 1, then the JSON text.
    fn jsonb(&mut self, value: &impl serde::Serialize) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0, 1]);
        serde_json::to_writer(&mut self.buf, value).expect("JSON values serialise");
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// What was encoded so far, to send; the buffer starts again empty.
    fn take(&mut self) -> Vec<u8> {
        let capacity = self.buf.capacity();
        std::mem::replace(&mut self.buf, Vec::with_capacity(capacity))
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}
