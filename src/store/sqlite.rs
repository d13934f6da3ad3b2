//! SQLite: the embedded default. WAL, one writer at a time (`BEGIN IMMEDIATE`),
//! a large page cache; batches stay far under the 32,766 bind limit.

use super::customers::{customer, record_progress};
use super::jobs::{claimed, job, Claimed, JobLease, JobProgress, ONE_JOB_PER_ACCOUNT};
use super::sql::{Backend, Sql};
use super::{Inserted, NewCustomer, Result, StoredCustomer};
use crate::clock::Timestamp;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

/// Timestamps are fixed-width UTC text that sorts as time does (see
/// `clock::format_stored`).
impl Backend for Sqlite {
    const EPOCH_NOW: &'static str = "CAST(strftime('%s', 'now') AS INTEGER)";
    const NOW: &'static str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const JOB_COLUMNS: &'static str = "job_id, account, file_name, spool_path, sha256, bytes, status, received_at, \
        started_at, finished_at, rows_total, records_done, results_offset, created, updated, unchanged, failed, \
        error_code, error_message, uploader, may_update, phase, outcome, attempts, retries, retry_at, last_error, \
        visible_path, kind, settings, results_owner";
    const CUSTOMER_COLUMNS: &'static str = "customer_id, ref, addresses, metadata, appdata, last_job_id, last_line";
    type Stamp = String;

    fn at(t: Timestamp) -> String {
        crate::clock::format_stored(t)
    }

    fn seconds_from_now(param: &str) -> String {
        format!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', {param} || ' seconds')")
    }

    fn seconds_since(expr: &str) -> String {
        format!("((julianday('now') - julianday({expr})) * 86400.0)")
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn json(param: &str) -> String {
        param.to_owned()
    }

    fn time_text(column: &str, alias: &str) -> String {
        format!("{column} AS {alias}")
    }
}

/// Rows per multi-row statement: 10 binds each, far under the bind limit.
const ROWS_PER_STATEMENT: usize = 500;

#[derive(Clone)]
pub struct SqliteStore {
    pub(super) sql: Sql<Sqlite>,
    /// The one connection batches are written through: SQLite has one
    /// writer anyway, and the customers' pages are cached once, in it.
    batches: SqlitePool,
    /// When batches began, for the yield to other writers.
    batch_clock: std::sync::Arc<std::sync::Mutex<BatchClock>>,
    /// Jobs waiting for the batch connection.
    batches_waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub(super) instance: std::sync::Arc<str>,
}

/// A pause before a batch once batches have followed one another for
/// `YIELD_EVERY`: writers on the other connections (heartbeats, job claims,
/// another account's upload) wait on SQLite's lock by sleeping and retrying,
/// and would otherwise never find it free between back-to-back batches,
/// whether they are long (one large upload) or short (a small `batch_size`).
const YIELD_TO_OTHER_WRITERS: Duration = Duration::from_millis(50);
const YIELD_EVERY: Duration = Duration::from_millis(500);
/// Batches further apart than this are not back to back.
const BACK_TO_BACK: Duration = Duration::from_secs(2);
/// How long a batch runs at least before it commits for another job's batch.
const BATCH_TURN: Duration = Duration::from_millis(250);
/// How long a batch about to begin waits, at most, while statements on the
/// other connections are under way (most likely waiting for the lock the
/// last batch held): SQLite's busy handler retries a writer that has waited
/// a while only every 100 ms, so a shorter pause could fall between two tries.
const WAIT_FOR_OTHER_WRITERS: Duration = Duration::from_millis(150);

#[derive(Default)]
struct BatchClock {
    /// When the last batch began.
    last: Option<std::time::Instant>,
    /// When batches began following one another, or the last yield ended.
    since: Option<std::time::Instant>,
}

impl BatchClock {
    /// Records a batch beginning now; whether it should first yield.
    fn begin(&mut self, now: std::time::Instant) -> bool {
        if self.last.is_none_or(|at| now.duration_since(at) >= BACK_TO_BACK) {
            self.since = Some(now);
        }
        self.last = Some(now);
        let yields = self.since.is_some_and(|since| now.duration_since(since) >= YIELD_EVERY);
        if yields {
            self.since = Some(now + YIELD_TO_OTHER_WRITERS);
        }
        yields
    }
}

/// Page cache of the batch connection (KiB): the `(account, ref)` index a
/// batch probes and extends.
const BATCH_CACHE_KIB: u32 = 32_768;
/// Page cache of each other connection (KiB): jobs, accounts, users.
const CACHE_KIB: u32 = 2_048;
/// WAL pages after which a commit checkpoints: large, so a page written by
/// many batches is copied back once (and the WAL is reset at a job's end).
const WAL_AUTOCHECKPOINT: u32 = 25_000;

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT.to_string())
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .after_release(super::health::release_unless_in_doubt::<Sqlite>)
            .max_connections(2)
            .connect_with(options.clone().pragma("cache_size", format!("-{CACHE_KIB}")))
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        // Jobs wait their turn here rather than on SQLite's lock; at most
        // `workers` batches are open at once, each for about a second.
        let batches = SqlitePoolOptions::new()
            .after_release(super::health::release_unless_in_doubt::<Sqlite>)
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(300))
            .connect_with(options.pragma("cache_size", format!("-{BATCH_CACHE_KIB}")))
            .await?;
        Ok(SqliteStore {
            sql: Sql::new(pool),
            batches,
            batch_clock: Default::default(),
            batches_waiting: Default::default(),
            instance: super::new_instance(),
        })
    }

    pub(super) async fn claim_job(
        &self,
        owner: &str,
        stale_after_secs: i64,
        busy: &[String],
    ) -> Result<Option<Claimed>> {
        let mut tx = self.sql.pool.begin_with(Sqlite::BEGIN_WRITE).await?;
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {} FROM jobs WHERE (status = 'queued' OR (status = 'retrying' AND retry_at <= {}) \
             OR (status = 'running' AND (owner IS NULL OR owner = ",
            Sqlite::JOB_COLUMNS,
            Sqlite::NOW
        ));
        q.push_bind(owner).push(" OR heartbeat_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ");
        q.push_bind(-stale_after_secs).push(" || ' seconds'))))");
        if !busy.is_empty() {
            q.push(" AND account NOT IN (");
            let mut list = q.separated(", ");
            for account in busy {
                list.push_bind(account);
            }
            q.push(")");
        }
        q.push(" AND ").push(ONE_JOB_PER_ACCOUNT).push(" ORDER BY received_at, rowid LIMIT 1");
        let row = q.build().persistent(false).fetch_optional(&mut *tx).await?;
        let Some(row) = row else { return Ok(None) };
        let mut job = job(&row)?;
        job.attempts += 1;
        job.status = super::JobStatus::Running;
        sqlx::query(&format!(
            "UPDATE jobs SET owner = ?, heartbeat_at = {}, status = 'running', attempts = attempts + 1 WHERE job_id = ?",
            Sqlite::NOW
        ))
        .bind(owner)
        .bind(job.job_id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(claimed(job, owner)))
    }

    /// How long the open batch may have run before it commits for others
    /// that wait for SQLite's one writer; None: no one waits. Statements on
    /// the other connections (an arrival, a job's claim or report, a
    /// heartbeat: short, and each holds up a step of another job) get it
    /// after the batch's current chunk; another job's batch once the open one
    /// has run `BATCH_TURN`, so that two large uploads taking turns still
    /// commit thousands of rows at a time.
    pub fn yield_after(&self) -> Option<Duration> {
        if self.statements_under_way() {
            Some(Duration::ZERO)
        } else if self.batches_waiting.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            Some(BATCH_TURN)
        } else {
            None
        }
    }

    fn statements_under_way(&self) -> bool {
        self.sql.pool.size() as usize > self.sql.pool.num_idle()
    }

    /// Begins a batch once the writers on the other connections are done
    /// (at most `WAIT_FOR_OTHER_WRITERS`), and after the periodic yield to
    /// writers this process does not see (another process's).
    pub(super) async fn begin_batch(&self) -> Result<SqliteBatch> {
        let started = std::time::Instant::now();
        let yields = self.batch_clock.lock().expect("batch clock").begin(started);
        loop {
            let waited = started.elapsed();
            let for_others = self.statements_under_way() && waited < WAIT_FOR_OTHER_WRITERS;
            let periodic = yields && waited < YIELD_TO_OTHER_WRITERS;
            if !(for_others || periodic) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut tx = {
            let _waiting = Waiting::on(&self.batches_waiting);
            self.batches.begin_with(Sqlite::BEGIN_WRITE).await?
        };
        let now = sqlx::query_scalar(&format!("SELECT {}", Sqlite::NOW)).fetch_one(&mut *tx).await?;
        Ok(SqliteBatch { tx, now })
    }
}

/// Counts a job waiting for the batch connection while it waits (a future
/// dropped while waiting included).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn on(count: &'a std::sync::atomic::AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub struct SqliteBatch {
    tx: Transaction<'static, Sqlite>,
    /// The database's clock when the batch began: the creation time of the
    /// customers it inserts (as PostgreSQL's `now()`, the transaction's
    /// start), bound once rather than computed twice for every row.
    now: String,
}

impl SqliteBatch {
    /// Earlier claims of `keys` by this job recorded in `job_refs`: one
    /// statement, the keys bound as one JSON array.
    pub async fn claimed_refs(&mut self, job_id: &str, keys: &[&str]) -> Result<HashMap<String, u64>> {
        let mut earlier = HashMap::new();
        if keys.is_empty() {
            return Ok(earlier);
        }
        let keys = serde_json::to_string(keys).expect("strings serialise");
        let rows = sqlx::query(
            "SELECT ref_key, line FROM job_refs WHERE job_id = ? AND ref_key IN (SELECT value FROM json_each(?))",
        )
        .bind(job_id)
        .bind(keys)
        .fetch_all(&mut *self.tx)
        .await?;
        for row in rows {
            earlier.insert(row.try_get(0)?, row.try_get::<i64, _>(1)? as u64);
        }
        Ok(earlier)
    }

    pub async fn record_claims(&mut self, job_id: &str, claims: &[(String, u64)]) -> Result<()> {
        for chunk in claims.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO job_refs (job_id, ref_key, line) ");
            q.push_values(chunk, |mut b, (key, line)| {
                b.push_bind(job_id).push_bind(key.as_str()).push_bind(*line as i64);
            });
            q.build().persistent(chunk.len() == ROWS_PER_STATEMENT).execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn existing(&mut self, account: &str, refs: &[&str]) -> Result<HashMap<String, StoredCustomer>> {
        let mut found = HashMap::new();
        for chunk in refs.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(format!(
                "SELECT {} FROM customers WHERE account = ",
                Sqlite::CUSTOMER_COLUMNS
            ));
            q.push_bind(account).push(" AND ref IN (");
            let mut list = q.separated(", ");
            for r in chunk {
                list.push_bind(*r);
            }
            q.push(")");
            for row in q.build().persistent(chunk.len() == ROWS_PER_STATEMENT).fetch_all(&mut *self.tx).await? {
                let c = customer(&row)?;
                found.insert(c.customer_ref.clone(), c);
            }
        }
        Ok(found)
    }

    pub async fn insert_customers(&mut self, account: &str, rows: &[NewCustomer<'_>]) -> Result<()> {
        // In key order: each index page is visited once per batch.
        let mut rows: Vec<&NewCustomer> = rows.iter().collect();
        rows.sort_unstable_by(|a, b| a.customer_ref().cmp(b.customer_ref()));
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = insert_statement("INSERT", account, &self.now, chunk);
            q.build().persistent(chunk.len() == ROWS_PER_STATEMENT).execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub async fn insert_new(&mut self, account: &str, rows: &[NewCustomer<'_>]) -> Result<Inserted> {
        let mut rows: Vec<&NewCustomer> = rows.iter().collect();
        rows.sort_unstable_by(|a, b| a.customer_ref().cmp(b.customer_ref()));
        // Only when a row was ignored: the refs of the rows that went in.
        let mut only: Option<foldhash::HashSet<String>> = None;
        let mut done_before = Vec::new();
        let now = self.now.clone();
        // OR IGNORE, not ON CONFLICT DO NOTHING: a statement that cannot
        // abort needs no statement journal (a copy of every page it changes).
        let statement = |chunk| insert_statement("INSERT OR IGNORE", account, &now, chunk);
        let mut chunks = rows.chunks(ROWS_PER_STATEMENT);
        let mut next = chunks.next().map(|chunk| (chunk, statement(chunk)));
        while let Some((chunk, mut q)) = next.take() {
            // The next statement is built (its JSON written, its values
            // bound) while SQLite's thread runs this one.
            let (done, following) =
                tokio::join!(q.build().persistent(chunk.len() == ROWS_PER_STATEMENT).execute(&mut *self.tx), async {
                    chunks.next().map(|chunk| (chunk, statement(chunk)))
                });
            if done?.rows_affected() == chunk.len() as u64 {
                // The usual case, a new customer per row: no row to read back.
                match &mut only {
                    Some(refs) => refs.extend(chunk.iter().map(|c| c.customer_ref().to_owned())),
                    None => done_before.push(chunk),
                }
            } else {
                let refs = only.get_or_insert_with(Default::default);
                refs.extend(done_before.drain(..).flatten().map(|c| c.customer_ref().to_owned()));
                refs.extend(self.inserted_of(chunk).await?);
            }
            next = following;
        }
        Ok(only.map_or(Inserted::All, Inserted::Only))
    }

    /// Which rows of `chunk` an `INSERT OR IGNORE` inserted: those whose new
    /// customer id is in the table with the row's own ref, job and line.
    async fn inserted_of(&mut self, chunk: &[&NewCustomer<'_>]) -> Result<Vec<String>> {
        let mut q =
            QueryBuilder::<Sqlite>::new("SELECT ref, last_job_id, last_line FROM customers WHERE customer_id IN (");
        let mut list = q.separated(", ");
        for c in chunk {
            list.push_bind(c.customer_id.as_str());
        }
        q.push(")");
        let found: HashSet<(String, Option<String>, Option<i64>)> = q
            .build()
            .persistent(false)
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect::<Result<_>>()?;
        Ok(chunk
            .iter()
            .filter(|c| found.contains(&(c.customer_ref().to_owned(), Some(c.job.to_owned()), Some(c.line as i64))))
            .map(|c| c.customer_ref().to_owned())
            .collect())
    }

    pub async fn update_customers(&mut self, updates: &[StoredCustomer]) -> Result<()> {
        for c in updates {
            let (addresses, metadata, appdata) = c.json_columns();
            let (job, line) =
                c.last_job.as_ref().map(|(j, l)| (Some(j.as_str()), Some(*l as i64))).unwrap_or((None, None));
            sqlx::query(
                "UPDATE customers SET addresses = ?, metadata = ?, appdata = ?, updated_at = ?, last_job_id = ?,
                   last_line = ? WHERE customer_id = ?",
            )
            .bind(addresses)
            .bind(metadata)
            .bind(appdata)
            .bind(self.now.as_str())
            .bind(job)
            .bind(line)
            .bind(&c.customer_id)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    pub(super) async fn commit(mut self, lease: &JobLease, progress: &JobProgress) -> Result<()> {
        record_progress::<Sqlite>(&mut self.tx, lease, progress).await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// `VERB INTO customers (…) VALUES …` for one chunk of `account`'s customers, created `now`.
fn insert_statement<'a>(
    verb: &str,
    account: &'a str,
    now: &'a str,
    chunk: &[&'a NewCustomer<'a>],
) -> QueryBuilder<'a, Sqlite> {
    let mut q = QueryBuilder::<Sqlite>::new(format!(
        "{verb} INTO customers (customer_id, account, ref, addresses, metadata, appdata, created_at, updated_at, \
         last_job_id, last_line) "
    ));
    q.push_values(chunk, |mut b, c| {
        let (addresses, metadata, appdata) = c.json_columns();
        b.push_bind(&c.customer_id)
            .push_bind(account)
            .push_bind(c.customer_ref())
            .push_bind(addresses)
            .push_bind(metadata)
            .push_bind(appdata)
            .push_bind(now)
            .push_bind(now)
            .push_bind(c.job)
            .push_bind(c.line as i64);
    });
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Waits (10 s at most) for `condition`: a connection goes back to its
    /// pool on a task of its own, after it is dropped.
    async fn until(what: &str, condition: impl Fn() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while !condition() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        waited.await.unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    #[tokio::test]
    async fn a_batch_sees_who_waits_and_begins_after_the_other_connections_writers() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::connect(&format!("sqlite://{}/t.db", dir.path().display())).await.unwrap();
        until("the migrations' connection back in its pool", || store.yield_after().is_none()).await;
        // A statement under way on the other connections (here: one held).
        let held = store.sql.pool.acquire().await.unwrap();
        assert_eq!(store.yield_after(), Some(Duration::ZERO), "at the open batch's next chunk");
        let started = Instant::now();
        let batch = store.begin_batch().await.unwrap();
        assert!(started.elapsed() >= WAIT_FOR_OTHER_WRITERS, "began after {:?}", started.elapsed());
        drop(held);
        until("the connection back in its pool", || store.yield_after().is_none()).await;
        // Another job waiting for the batch connection.
        let other = store.clone();
        let waiting = tokio::spawn(async move { other.begin_batch().await.map(|_| ()) });
        until("the other job's wait to be seen", || store.yield_after() == Some(BATCH_TURN)).await;
        drop(batch);
        waiting.await.unwrap().unwrap();
        until("no one waiting", || store.yield_after().is_none()).await;
    }

    #[test]
    fn back_to_back_batches_yield_every_half_second_whatever_their_length() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Short batches, every 10 ms: one yield per 500 ms of them.
        let mut clock = BatchClock::default();
        let yields: Vec<u64> = (0..=120).map(|i| i * 10).filter(|&t| clock.begin(ms(t))).collect();
        assert_eq!(yields, [500, 1050]);
        // Long batches (1 s each): a yield before each one after the first.
        let mut clock = BatchClock::default();
        let yields: Vec<bool> = [0, 1_000, 2_050, 3_100].into_iter().map(|t| clock.begin(ms(t))).collect();
        assert_eq!(yields, [false, true, true, true]);
        // A batch after a pause is not back to back: no yield.
        assert!(!clock.begin(ms(3_100 + 2_500)));
    }
}
