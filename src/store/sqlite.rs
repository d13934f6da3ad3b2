//! SQLite: the embedded default. WAL, one writer at a time (`BEGIN IMMEDIATE`),
//! a large page cache; batches stay far under the 32,766 bind limit.

use super::rows::{self, JOB_COLUMNS};
use super::{claim_key, scopes_to_text, Job, JobProgress, NewJob, Result, StoreError, StoredCustomer};
use crate::domain::user::SftpUser;
use crate::domain::{AccountSettings, CreateCustomer};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// Rows per multi-row statement: 8 binds each, far under the bind limit.
const ROWS_PER_STATEMENT: usize = 500;

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", "-65536")
            .pragma("wal_autocheckpoint", "10000")
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    pub async fn add_account(&self, a: &AccountSettings) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO accounts (avid, default_region, encoding, phone_check) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&a.avid)
        .bind(a.default_region.map(|r| r.code()))
        .bind(a.encoding.as_str())
        .bind(a.phone_check.as_str())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists(format!("account `{}`", a.avid)));
        }
        Ok(())
    }

    pub async fn put_account(&self, a: &AccountSettings) -> Result<()> {
        sqlx::query(
            "INSERT INTO accounts (avid, default_region, encoding, phone_check) VALUES (?, ?, ?, ?)
             ON CONFLICT (avid) DO UPDATE SET default_region = excluded.default_region,
               encoding = excluded.encoding, phone_check = excluded.phone_check",
        )
        .bind(&a.avid)
        .bind(a.default_region.map(|r| r.code()))
        .bind(a.encoding.as_str())
        .bind(a.phone_check.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_account(&self, avid: &str) -> Result<Option<AccountSettings>> {
        let row = sqlx::query("SELECT avid, default_region, encoding, phone_check FROM accounts WHERE avid = ?")
            .bind(avid)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rows::account(&r)).transpose()
    }

    pub async fn list_accounts(&self) -> Result<Vec<AccountSettings>> {
        let rows = sqlx::query("SELECT avid, default_region, encoding, phone_check FROM accounts ORDER BY avid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::account).collect()
    }

    pub async fn remove_account(&self, avid: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM accounts WHERE avid = ?").bind(avid).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("account `{avid}`")));
        }
        Ok(())
    }

    pub async fn add_user(&self, u: &SftpUser, replace: bool) -> Result<()> {
        let sql = if replace {
            "INSERT INTO sftp_users (username, account, public_keys, password_hash, scopes) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (username) DO UPDATE SET account = excluded.account, public_keys = excluded.public_keys,
               password_hash = excluded.password_hash, scopes = excluded.scopes"
        } else {
            "INSERT INTO sftp_users (username, account, public_keys, password_hash, scopes) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING"
        };
        let done = sqlx::query(sql)
            .bind(&u.username)
            .bind(&u.account)
            .bind(u.public_keys.join("\n"))
            .bind(&u.password_hash)
            .bind(scopes_to_text(u.scopes))
            .execute(&self.pool)
            .await
            .map_err(|e| foreign_key_as_not_found(e, &u.account))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists(format!("user `{}`", u.username)));
        }
        Ok(())
    }

    pub async fn find_user(&self, username: &str) -> Result<Option<SftpUser>> {
        let row = sqlx::query("SELECT username, account, public_keys, password_hash, scopes FROM sftp_users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rows::user(&r)).transpose()
    }

    pub async fn list_users(&self) -> Result<Vec<SftpUser>> {
        let rows = sqlx::query("SELECT username, account, public_keys, password_hash, scopes FROM sftp_users ORDER BY username")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::user).collect()
    }

    pub async fn remove_user(&self, username: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM sftp_users WHERE username = ?").bind(username).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user `{username}`")));
        }
        Ok(())
    }

    pub async fn create_job(&self, j: &NewJob) -> Result<()> {
        sqlx::query(
            "INSERT INTO jobs (job_id, account, file_name, spool_path, sha256, bytes, status, received_at, uploader, may_update)
             VALUES (?, ?, ?, ?, ?, ?, 'arriving', ?, ?, ?)",
        )
        .bind(&j.job_id)
        .bind(&j.account)
        .bind(&j.file_name)
        .bind(&j.spool_path)
        .bind(&j.sha256)
        .bind(j.bytes as i64)
        .bind(&j.received_at)
        .bind(&j.uploader)
        .bind(j.may_update)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_job(&self, job_id: &str) -> Result<Option<Job>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?"))
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rows::job(&r)).transpose()
    }

    pub async fn list_jobs(&self, account: Option<&str>, limit: u32) -> Result<Vec<Job>> {
        let rows = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR account = ?1)
             ORDER BY received_at DESC, rowid DESC LIMIT ?2"
        ))
        .bind(account)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::job).collect()
    }

    pub async fn start_job(&self, job_id: &str, owner: &str, sha256: &str, bytes: u64, rows_total: u64, started_at: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'running', owner = ?, sha256 = ?, bytes = ?, rows_total = ?, heartbeat_at = ?,
               started_at = COALESCE(started_at, ?) WHERE job_id = ?",
        )
        .bind(owner)
        .bind(sha256)
        .bind(bytes as i64)
        .bind(rows_total as i64)
        .bind(started_at)
        .bind(started_at)
        .bind(job_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn claim_job(&self, owner: &str, now: &str, stale_before: &str, busy: &[String]) -> Result<Option<Job>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE (status = 'queued' OR (status = 'running' AND (owner IS NULL OR owner = "
        ));
        q.push_bind(owner).push(" OR heartbeat_at < ").push_bind(stale_before).push(")))");
        if !busy.is_empty() {
            q.push(" AND account NOT IN (");
            let mut list = q.separated(", ");
            for account in busy {
                list.push_bind(account);
            }
            q.push(")");
        }
        q.push(" ORDER BY received_at, rowid LIMIT 1");
        let row = q.build().fetch_optional(&mut *tx).await?;
        let Some(row) = row else { return Ok(None) };
        let job = rows::job(&row)?;
        sqlx::query("UPDATE jobs SET owner = ?, heartbeat_at = ?, status = 'running' WHERE job_id = ?")
            .bind(owner)
            .bind(now)
            .bind(&job.job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    pub async fn heartbeat(&self, owner: &str, now: &str) -> Result<()> {
        sqlx::query("UPDATE jobs SET heartbeat_at = ? WHERE owner = ? AND status = 'running'")
            .bind(now)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn finish_job(&self, j: &Job) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "UPDATE jobs SET status = ?, finished_at = ?, started_at = COALESCE(started_at, ?), rows_total = ?,
               records_done = ?, results_offset = ?, created = ?, updated = ?, unchanged = ?, failed = ?,
               error_code = ?, error_message = ?, owner = NULL WHERE job_id = ?",
        )
        .bind(j.status.as_str())
        .bind(&j.finished_at)
        .bind(&j.started_at)
        .bind(j.rows_total as i64)
        .bind(j.progress.records_done as i64)
        .bind(j.progress.results_offset as i64)
        .bind(j.progress.created as i64)
        .bind(j.progress.updated as i64)
        .bind(j.progress.unchanged as i64)
        .bind(j.progress.failed as i64)
        .bind(&j.error_code)
        .bind(&j.error_message)
        .bind(&j.job_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM job_refs WHERE job_id = ?").bind(&j.job_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn mark_queued(&self, job_id: &str) -> Result<()> {
        sqlx::query("UPDATE jobs SET status = 'queued' WHERE job_id = ? AND status = 'arriving'")
            .bind(job_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_job(&self, job_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM jobs WHERE job_id = ?").bind(job_id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn running_owners(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT DISTINCT owner FROM jobs WHERE status = 'running' AND owner IS NOT NULL")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn release_owner(&self, owner: &str) -> Result<()> {
        sqlx::query("UPDATE jobs SET owner = NULL WHERE owner = ? AND status = 'running'")
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn arriving_jobs(&self) -> Result<Vec<Job>> {
        let rows = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'arriving'"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::job).collect()
    }

    pub async fn begin_batch(&self) -> Result<SqliteBatch> {
        Ok(SqliteBatch { tx: self.pool.begin_with("BEGIN IMMEDIATE").await? })
    }

    pub async fn get_customer(&self, account: &str, customer_ref: &str) -> Result<Option<StoredCustomer>> {
        let row = sqlx::query(
            "SELECT customer_id, ref, addresses, metadata, appdata FROM customers WHERE account = ? AND ref = ?",
        )
        .bind(account)
        .bind(customer_ref)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| rows::customer(&r)).transpose()
    }

    pub async fn count_customers(&self, account: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE account = ?")
            .bind(account)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }
}

pub struct SqliteBatch {
    tx: Transaction<'static, Sqlite>,
}

impl SqliteBatch {
    pub async fn claim_refs(&mut self, job_id: &str, claims: &[(String, u64)]) -> Result<Vec<Option<u64>>> {
        let mut earlier: HashMap<String, u64> = HashMap::new();
        for chunk in claims.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("SELECT ref_key, line FROM job_refs WHERE job_id = ");
            q.push_bind(job_id).push(" AND ref_key IN (");
            let mut list = q.separated(", ");
            for (claim, _) in chunk {
                list.push_bind(claim_key(claim));
            }
            q.push(")");
            for row in q.build().fetch_all(&mut *self.tx).await? {
                earlier.insert(row.try_get(0)?, row.try_get::<i64, _>(1)? as u64);
            }
        }
        let fresh: Vec<(String, u64)> = claims
            .iter()
            .map(|(c, line)| (claim_key(c), *line))
            .filter(|(key, _)| !earlier.contains_key(key))
            .collect();
        for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO job_refs (job_id, ref_key, line) ");
            q.push_values(chunk, |mut b, (key, line)| {
                b.push_bind(job_id).push_bind(key.as_str()).push_bind(*line as i64);
            });
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(claims.iter().map(|(c, _)| earlier.get(&claim_key(c)).copied()).collect())
    }

    pub async fn existing(&mut self, account: &str, commands: &[&CreateCustomer]) -> Result<HashMap<String, StoredCustomer>> {
        let mut found = HashMap::new();
        for chunk in commands.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT customer_id, ref, addresses, metadata, appdata FROM customers WHERE account = ",
            );
            q.push_bind(account).push(" AND ref IN (");
            let mut list = q.separated(", ");
            for c in chunk {
                list.push_bind(c.customer_ref().as_str());
            }
            q.push(")");
            for row in q.build().fetch_all(&mut *self.tx).await? {
                let c = rows::customer(&row)?;
                found.insert(c.customer_ref.clone(), c);
            }
        }
        Ok(found)
    }

    pub async fn write(&mut self, account: &str, inserts: &[StoredCustomer], updates: &[StoredCustomer], now: &str) -> Result<()> {
        for chunk in inserts.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO customers (customer_id, account, ref, addresses, metadata, appdata, created_at, updated_at) ",
            );
            q.push_values(chunk, |mut b, c| {
                b.push_bind(&c.customer_id)
                    .push_bind(account)
                    .push_bind(&c.customer_ref)
                    .push_bind(c.addresses.to_string())
                    .push_bind(serde_json::Value::Object(c.metadata.clone()).to_string())
                    .push_bind(serde_json::Value::Object(c.appdata.clone()).to_string())
                    .push_bind(now)
                    .push_bind(now);
            });
            q.build().execute(&mut *self.tx).await?;
        }
        for c in updates {
            sqlx::query("UPDATE customers SET addresses = ?, metadata = ?, appdata = ?, updated_at = ? WHERE customer_id = ?")
                .bind(c.addresses.to_string())
                .bind(serde_json::Value::Object(c.metadata.clone()).to_string())
                .bind(serde_json::Value::Object(c.appdata.clone()).to_string())
                .bind(now)
                .bind(&c.customer_id)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    pub async fn commit(mut self, job_id: &str, p: &JobProgress, heartbeat_at: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET records_done = ?, results_offset = ?, created = ?, updated = ?, unchanged = ?, failed = ?,
               heartbeat_at = ? WHERE job_id = ?",
        )
        .bind(p.records_done as i64)
        .bind(p.results_offset as i64)
        .bind(p.created as i64)
        .bind(p.updated as i64)
        .bind(p.unchanged as i64)
        .bind(p.failed as i64)
        .bind(heartbeat_at)
        .bind(job_id)
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(())
    }
}


fn foreign_key_as_not_found(e: sqlx::Error, account: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.message().contains("FOREIGN KEY") => {
            StoreError::NotFound(format!("account `{account}`"))
        }
        _ => StoreError::Database(e),
    }
}
