//! PostgreSQL: production. Batches travel as arrays (`UNNEST`), one statement
//! per step whatever the batch size, far under the 65,535 bind limit; inserts
//! are sorted by ref for the unique index. Upserts of one account are
//! serialised with a transaction-scoped advisory lock, so several intake
//! processes can share one database.

use super::rows::{self, JOB_COLUMNS};
use super::{claim_key, scopes_to_text, Job, JobProgress, NewJob, Result, StoreError, StoredCustomer};
use crate::domain::user::SftpUser;
use crate::domain::AccountSettings;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row, Transaction};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    shared_statements!();

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new().max_connections(8).connect_with(options).await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    pub async fn claim_job(&self, owner: &str, now: &str, stale_before: &str, busy: &[String]) -> Result<Option<Job>> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE (status = 'queued' OR (status = 'running' AND (owner IS NULL OR owner = $1 OR heartbeat_at < $2)))
               AND NOT (account = ANY($3)) AND {}
             ORDER BY received_at, job_id LIMIT 1 FOR UPDATE SKIP LOCKED",
            one_job_per_account!()
        ))
        .bind(owner)
        .bind(stale_before)
        .bind(busy)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let job = rows::job(&row)?;
        sqlx::query("UPDATE jobs SET owner = $1, heartbeat_at = $2, status = 'running' WHERE job_id = $3")
            .bind(owner)
            .bind(now)
            .bind(&job.job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    pub async fn begin_batch(&self, account: &str) -> Result<PgBatch> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('intake.customers'), hashtext($1))")
            .bind(account)
            .execute(&mut *tx)
            .await?;
        Ok(PgBatch { tx })
    }

    pub async fn get_customer(&self, account: &str, customer_ref: &str) -> Result<Option<StoredCustomer>> {
        let row = sqlx::query(
            "SELECT customer_id, ref, addresses::text, metadata::text, appdata::text FROM customers
             WHERE account = $1 AND ref = $2",
        )
        .bind(account)
        .bind(customer_ref)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| rows::customer(&r)).transpose()
    }

}

pub struct PgBatch {
    tx: Transaction<'static, Postgres>,
}

impl PgBatch {
    pub async fn claim_refs(&mut self, job_id: &str, claims: &[(String, u64)]) -> Result<Vec<Option<u64>>> {
        let keys: Vec<String> = claims.iter().map(|(c, _)| claim_key(c)).collect();
        let lines: Vec<i64> = claims.iter().map(|(_, l)| *l as i64).collect();
        // Insert first: the common case (a ref not seen before) costs one statement.
        let claimed: HashSet<String> = sqlx::query_scalar(
            "INSERT INTO job_refs (job_id, ref_key, line)
             SELECT $1, k, l FROM UNNEST($2::text[], $3::bigint[]) AS u(k, l)
             ON CONFLICT DO NOTHING RETURNING ref_key",
        )
        .bind(job_id)
        .bind(&keys)
        .bind(&lines)
        .fetch_all(&mut *self.tx)
        .await?
        .into_iter()
        .collect();
        let taken: Vec<&String> = keys.iter().filter(|k| !claimed.contains(*k)).collect();
        let mut earlier: HashMap<String, u64> = HashMap::with_capacity(taken.len());
        if !taken.is_empty() {
            let rows = sqlx::query("SELECT ref_key, line FROM job_refs WHERE job_id = $1 AND ref_key = ANY($2)")
                .bind(job_id)
                .bind(&taken)
                .fetch_all(&mut *self.tx)
                .await?;
            for row in rows {
                earlier.insert(row.try_get(0)?, row.try_get::<i64, _>(1)? as u64);
            }
        }
        Ok(keys.iter().map(|k| earlier.get(k).copied()).collect())
    }

    pub async fn insert_new(&mut self, account: &str, rows: &[StoredCustomer], now: &str) -> Result<HashSet<String>> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
        let (ids, refs, addresses, metadata, appdata) = columns(rows);
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO customers (customer_id, account, ref, addresses, metadata, appdata, created_at, updated_at)
             SELECT u.id, $1, u.ref, u.addr::jsonb, u.meta::jsonb, u.app::jsonb, $7::timestamptz, $7::timestamptz
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(id, ref, addr, meta, app)
             ORDER BY u.ref
             ON CONFLICT (account, ref) DO NOTHING RETURNING ref",
        )
        .bind(account)
        .bind(ids)
        .bind(refs)
        .bind(addresses)
        .bind(metadata)
        .bind(appdata)
        .bind(now)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(inserted.into_iter().collect())
    }

    pub async fn existing(&mut self, account: &str, refs: &[&str]) -> Result<HashMap<String, StoredCustomer>> {
        if refs.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(
            "SELECT customer_id, ref, addresses::text, metadata::text, appdata::text FROM customers
             WHERE account = $1 AND ref = ANY($2)",
        )
        .bind(account)
        .bind(refs)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            let c = rows::customer(&row)?;
            found.insert(c.customer_ref.clone(), c);
        }
        Ok(found)
    }

    pub async fn update(&mut self, updates: &[StoredCustomer], now: &str) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let (ids, _, addresses, metadata, appdata) = columns(updates);
        sqlx::query(
            "UPDATE customers AS c SET addresses = u.addr::jsonb, metadata = u.meta::jsonb, appdata = u.app::jsonb,
               updated_at = $5::timestamptz
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS u(id, addr, meta, app)
             WHERE c.customer_id = u.id",
        )
        .bind(ids)
        .bind(addresses)
        .bind(metadata)
        .bind(appdata)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn commit(mut self, job_id: &str, owner: &str, p: &JobProgress, heartbeat_at: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE jobs SET records_done = $1, results_offset = $2, created = $3, updated = $4, unchanged = $5,
               failed = $6, heartbeat_at = $7 WHERE job_id = $8 AND owner = $9",
        )
        .bind(p.records_done as i64)
        .bind(p.results_offset as i64)
        .bind(p.created as i64)
        .bind(p.updated as i64)
        .bind(p.unchanged as i64)
        .bind(p.failed as i64)
        .bind(heartbeat_at)
        .bind(job_id)
        .bind(owner)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotOwner(job_id.to_owned()));
        }
        self.tx.commit().await?;
        Ok(())
    }
}

type Columns = (Vec<String>, Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn columns(rows: &[StoredCustomer]) -> Columns {
    let mut out: Columns = Default::default();
    for c in rows {
        let (addresses, metadata, appdata) = c.json_columns();
        out.0.push(c.customer_id.clone());
        out.1.push(c.customer_ref.clone());
        out.2.push(addresses);
        out.3.push(metadata);
        out.4.push(appdata);
    }
    out
}

