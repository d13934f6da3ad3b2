//! Statements whose SQL is the same on both backends (SQLite takes `$N`
//! parameters too), written once and expanded into each store's `impl`.
//! Each backend provides `NOW` (the database's clock, as it stores
//! timestamps), `seconds_from_now("$N")` and `at(timestamp)` (a host
//! timestamp as it binds one).

/// A claimable job must be its account's oldest unfinished one, and no other
/// job of the account may be running: an account's files are processed one at
/// a time, in order, whichever process takes them, so a later upload's report
/// replaces an earlier one's and never the reverse.
macro_rules! one_job_per_account {
    () => {
        "NOT EXISTS (SELECT 1 FROM jobs AS other WHERE other.account = jobs.account \
           AND other.job_id <> jobs.job_id AND other.status IN ('arriving', 'queued', 'running', 'retrying') \
           AND (other.status IN ('running', 'retrying') OR other.received_at < jobs.received_at \
                OR (other.received_at = jobs.received_at AND other.job_id < jobs.job_id)))"
    };
}

/// Expands to the shared methods inside `impl SqliteStore` / `impl PgStore`;
/// each provides `pool` and `begin_write()`.
macro_rules! shared_statements {
    () => {
        /// Creates an account; with `replace`, an existing one takes the new settings.
        pub async fn add_account(&self, a: &AccountSettings, replace: bool) -> Result<()> {
            let sql = if replace {
                "INSERT INTO accounts (avid, default_region, encoding, phone_check, report_bom) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (avid) DO UPDATE SET default_region = excluded.default_region,
                   encoding = excluded.encoding, phone_check = excluded.phone_check, report_bom = excluded.report_bom"
            } else {
                "INSERT INTO accounts (avid, default_region, encoding, phone_check, report_bom) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING"
            };
            let done = sqlx::query(sql)
                .bind(a.avid.as_str())
                .bind(a.default_region.map(|r| r.code()))
                .bind(a.encoding.as_str())
                .bind(a.phone_check.as_str())
                .bind(a.report_bom)
                .execute(&self.pool)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::AlreadyExists(format!("account `{}`", a.avid)));
            }
            Ok(())
        }

        pub async fn get_account(&self, avid: &str) -> Result<Option<AccountSettings>> {
            let row = sqlx::query("SELECT avid, default_region, encoding, phone_check, report_bom FROM accounts WHERE avid = $1")
                .bind(avid)
                .fetch_optional(&self.pool)
                .await?;
            row.map(|r| rows::account(&r)).transpose()
        }

        pub async fn list_accounts(&self) -> Result<Vec<AccountSettings>> {
            let rows = sqlx::query("SELECT avid, default_region, encoding, phone_check, report_bom FROM accounts ORDER BY avid")
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(rows::account).collect()
        }

        pub async fn remove_account(&self, avid: &str) -> Result<()> {
            let done = sqlx::query("DELETE FROM accounts WHERE avid = $1").bind(avid).execute(&self.pool).await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("account `{avid}`")));
            }
            Ok(())
        }

        pub async fn add_user(&self, u: &SftpUser, replace: bool) -> Result<()> {
            let sql = if replace {
                "INSERT INTO sftp_users (username, account, public_keys, password_hash, scopes) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (username) DO UPDATE SET account = excluded.account, public_keys = excluded.public_keys,
                   password_hash = excluded.password_hash, scopes = excluded.scopes"
            } else {
                "INSERT INTO sftp_users (username, account, public_keys, password_hash, scopes) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING"
            };
            let done = sqlx::query(sql)
                .bind(&u.username)
                .bind(u.account.as_str())
                .bind(u.public_keys.join("\n"))
                .bind(&u.password_hash)
                .bind(scopes_to_text(u.scopes))
                .execute(&self.pool)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                        StoreError::NotFound(format!("account `{}`", u.account))
                    }
                    _ => StoreError::Database(e),
                })?;
            if done.rows_affected() == 0 {
                return Err(StoreError::AlreadyExists(format!("user `{}`", u.username)));
            }
            Ok(())
        }

        pub async fn find_user(&self, username: &str) -> Result<Option<SftpUser>> {
            let row = sqlx::query("SELECT username, account, public_keys, password_hash, scopes FROM sftp_users WHERE username = $1")
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
            let done = sqlx::query("DELETE FROM sftp_users WHERE username = $1").bind(username).execute(&self.pool).await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("user `{username}`")));
            }
            Ok(())
        }

        /// Records an arriving job, received now on the database's clock.
        pub async fn create_job(&self, j: &NewJob) -> Result<()> {
            sqlx::query(&format!(
                "INSERT INTO jobs (job_id, account, file_name, spool_path, sha256, bytes, status, received_at, uploader,
                   may_update, source_key, kind, owner)
                 VALUES ($1, $2, $3, $4, $5, $6, 'arriving', {NOW}, $7, $8, $9, $10, $11)",
            ))
            .bind(j.job_id.as_str())
            .bind(&j.account)
            .bind(&j.file_name)
            .bind(&j.spool_path)
            .bind(&j.sha256)
            .bind(j.bytes as i64)
            .bind(&j.uploader)
            .bind(j.scopes.update)
            .bind(&j.source_key)
            .bind(j.kind.as_str())
            .bind(&j.owner)
            .execute(&self.pool)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_unique_violation() => {
                    StoreError::AlreadyExists(format!("a job for the upload {}", j.file_name))
                }
                _ => StoreError::Database(e),
            })?;
            Ok(())
        }

        pub async fn get_job(&self, job_id: &str) -> Result<Option<Job>> {
            let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1"))
                .bind(job_id)
                .fetch_optional(&self.pool)
                .await?;
            row.map(|r| rows::job(&r)).transpose()
        }

        pub async fn list_jobs(&self, account: Option<&str>, limit: u32) -> Result<Vec<Job>> {
            let rows = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE (CAST($1 AS TEXT) IS NULL OR account = $1)
                 ORDER BY received_at DESC, job_id DESC LIMIT $2"
            ))
            .bind(account)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(rows::job).collect()
        }

        pub async fn start_job(&self, job_id: &str, owner: &str, pass: &super::FirstPass<'_>) -> Result<()> {
            let super::FirstPass { sha256, bytes, rows_total, started_at, settings } = *pass;
            let done = sqlx::query(&format!(
                "UPDATE jobs SET rows_total = $2, heartbeat_at = {NOW}, started_at = COALESCE(started_at, $3),
                   sha256 = $5, bytes = $6, settings = $7 WHERE job_id = $4 AND owner = $1 AND status = 'running'",
            ))
            .bind(owner)
            .bind(rows_total as i64)
            .bind(at(started_at))
            .bind(job_id)
            .bind(sha256)
            .bind(bytes as i64)
            .bind(settings)
            .execute(&self.pool)
            .await?;
            super::fenced(done.rows_affected(), job_id)
        }

        pub async fn decide_job(&self, job_id: &str, owner: &str, outcome: &str) -> Result<()> {
            let done = sqlx::query(
                "UPDATE jobs SET phase = 'publishing', outcome = $3, results_owner = $2
                 WHERE job_id = $1 AND owner = $2 AND status = 'running'",
            )
            .bind(job_id)
            .bind(owner)
            .bind(outcome)
            .execute(&self.pool)
            .await?;
            super::fenced(done.rows_affected(), job_id)
        }

        pub async fn retry_job(&self, job_id: &str, owner: &str, retries: u32, wait_secs: i64, error: &str) -> Result<()> {
            let done = sqlx::query(&format!(
                "UPDATE jobs SET status = 'retrying', owner = NULL, retries = $3, retry_at = {}, last_error = $5, attempts = 0
                 WHERE job_id = $1 AND owner = $2 AND status = 'running'",
                seconds_from_now("$4")
            ))
            .bind(job_id)
            .bind(owner)
            .bind(retries as i64)
            .bind(wait_secs)
            .bind(error)
            .execute(&self.pool)
            .await?;
            super::fenced(done.rows_affected(), job_id)
        }

        pub async fn mark_running(&self, job_id: &str, owner: &str, uploader: Option<&str>, may_update: bool) -> Result<()> {
            let done = sqlx::query(&format!(
                "UPDATE jobs SET status = 'running', owner = $2, heartbeat_at = {NOW}, attempts = 1, uploader = $3,
                   may_update = $4 WHERE job_id = $1 AND status = 'arriving'",
            ))
            .bind(job_id)
            .bind(owner)
            .bind(uploader)
            .bind(may_update)
            .execute(&self.pool)
            .await?;
            super::fenced(done.rows_affected(), job_id)
        }

        pub async fn set_visible(&self, job_id: &str, path: Option<&str>) -> Result<()> {
            sqlx::query("UPDATE jobs SET visible_path = $2 WHERE job_id = $1")
                .bind(job_id)
                .bind(path)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        pub async fn visible_uploads(&self, age_secs: i64) -> Result<Vec<Job>> {
            let rows = sqlx::query(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE visible_path IS NOT NULL
                   AND status IN ('completed', 'rejected', 'aborted') AND received_at < {}",
                seconds_from_now("$1")
            ))
            .bind(-age_secs)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(rows::job).collect()
        }

        pub async fn heartbeat(&self, owner: &str) -> Result<()> {
            sqlx::query(&format!("UPDATE jobs SET heartbeat_at = {NOW} WHERE owner = $1 AND status = 'running'"))
                .bind(owner)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        pub async fn finish_job(&self, j: &Job, owner: &str) -> Result<()> {
            let mut tx = self.begin_write().await?;
            let done = sqlx::query(
                "UPDATE jobs SET status = $1, finished_at = $2, started_at = COALESCE(started_at, $3), rows_total = $4,
                   records_done = $5, results_offset = $6, created = $7, updated = $8, unchanged = $9, failed = $10,
                   error_code = $11, error_message = $12, owner = NULL, phase = 'done', retry_at = NULL
                 WHERE job_id = $13 AND owner = $14",
            )
            .bind(j.status.as_str())
            .bind(j.finished_at.map(at))
            .bind(j.started_at.map(at))
            .bind(j.rows_total as i64)
            .bind(j.progress.records_done as i64)
            .bind(j.progress.results_offset as i64)
            .bind(j.progress.created as i64)
            .bind(j.progress.updated as i64)
            .bind(j.progress.unchanged as i64)
            .bind(j.progress.failed as i64)
            .bind(&j.error_code)
            .bind(&j.error_message)
            .bind(j.job_id.as_str())
            .bind(owner)
            .execute(&mut *tx)
            .await?;
            super::fenced(done.rows_affected(), &j.job_id)?;
            sqlx::query("DELETE FROM job_refs WHERE job_id = $1").bind(j.job_id.as_str()).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        }

        pub async fn mark_queued(&self, job_id: &str, uploader: Option<&str>, may_update: bool) -> Result<()> {
            sqlx::query(
                "UPDATE jobs SET status = 'queued', uploader = $2, may_update = $3, owner = NULL
                 WHERE job_id = $1 AND status = 'arriving'",
            )
                .bind(job_id)
                .bind(uploader)
                .bind(may_update)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        pub async fn delete_job(&self, job_id: &str) -> Result<()> {
            sqlx::query("DELETE FROM jobs WHERE job_id = $1").bind(job_id).execute(&self.pool).await?;
            Ok(())
        }

        pub async fn running_owners(&self) -> Result<Vec<String>> {
            Ok(sqlx::query_scalar("SELECT DISTINCT owner FROM jobs WHERE status = 'running' AND owner IS NOT NULL")
                .fetch_all(&self.pool)
                .await?)
        }

        pub async fn release_owner(&self, owner: &str, stopped_cleanly: bool) -> Result<()> {
            sqlx::query("UPDATE jobs SET owner = NULL, attempts = CASE WHEN $2 THEN 0 ELSE attempts END
                         WHERE owner = $1 AND status = 'running'")
                .bind(owner)
                .bind(stopped_cleanly)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        pub async fn arriving_jobs(&self, age_secs: i64) -> Result<Vec<Job>> {
            let rows = sqlx::query(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'arriving' AND received_at < {0}
                   AND (owner IS NULL OR NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.owner = jobs.owner
                          AND nodes.stopped_at IS NULL AND nodes.heartbeat_at >= {0}))",
                seconds_from_now("$1")
            ))
                .bind(-age_secs)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(rows::job).collect()
        }

        /// `CUSTOMER_COLUMNS` is each backend's column list (JSON as text).
        pub async fn get_customer(&self, account: &str, customer_ref: &str) -> Result<Option<StoredCustomer>> {
            let row = sqlx::query(&format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE account = $1 AND ref = $2"))
                .bind(account)
                .bind(customer_ref)
                .fetch_optional(&self.pool)
                .await?;
            row.map(|r| rows::customer(&r)).transpose()
        }

        pub async fn count_customers(&self, account: &str) -> Result<u64> {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE account = $1")
                .bind(account)
                .fetch_one(&self.pool)
                .await?;
            Ok(n as u64)
        }
    };
}

/// Expands to the shared methods inside `impl SqliteBatch` / `impl PgBatch`;
/// each has its transaction in `tx`.
macro_rules! batch_statements {
    () => {
        /// Saves the job's progress and commits the batch, only while
        /// `owner` still owns the job (else nothing of it is committed).
        pub async fn commit(mut self, job_id: &str, owner: &str, p: &JobProgress) -> Result<()> {
            let done = sqlx::query(&format!(
                "UPDATE jobs SET records_done = $1, results_offset = $2, created = $3, updated = $4, unchanged = $5,
                   failed = $6, heartbeat_at = {NOW}, attempts = 1, retries = 0, results_owner = $8
                 WHERE job_id = $7 AND owner = $8",
            ))
            .bind(p.records_done as i64)
            .bind(p.results_offset as i64)
            .bind(p.created as i64)
            .bind(p.updated as i64)
            .bind(p.unchanged as i64)
            .bind(p.failed as i64)
            .bind(job_id)
            .bind(owner)
            .execute(&mut *self.tx)
            .await?;
            super::fenced(done.rows_affected(), job_id)?;
            self.tx.commit().await?;
            Ok(())
        }
    };
}
