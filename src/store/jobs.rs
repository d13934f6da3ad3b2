//! Table `jobs`: an upload from arrival to its published report. A running
//! job changes only through a [`JobLease`], which only this module makes
//! (when a process claims a job, takes an arriving one, or finds one it
//! owns): every write to a running job is fenced by the lease's owner, so a
//! process that lost a job (frozen, then taken over) changes nothing.

use super::sql::{exists_as, time, Backend, Columns, Sql};
use super::{fenced, secs, Result, Store, StoreError};
use crate::clock::Timestamp;
use crate::domain::user::Scopes;
use crate::domain::{JobId, JobKind, JobPhase, JobStatus, Summary, SummaryError};
use sqlx::{Encode, Executor, IntoArguments, Type};
use std::time::Duration;

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

/// One upload job as stored: read-only outside the store.
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
    /// How it ends, once decided: what is published.
    pub outcome: Option<Summary>,
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

/// A job to be created: the upload is on its way into the spool.
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

/// The right of one process (`owner`) to change one running job. Only the
/// store makes one; the transitions that end a job's run consume it.
#[derive(Debug, PartialEq, Eq)]
pub struct JobLease {
    job_id: JobId,
    owner: String,
}

impl JobLease {
    pub fn job_id(&self) -> &JobId {
        &self.job_id
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }
}

/// A job a process has just claimed: the right to run it, and the job as it
/// was claimed.
#[derive(Debug)]
pub struct Claimed {
    pub lease: JobLease,
    pub job: Job,
}

/// Unfinished jobs, for the gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobCounts {
    pub arriving: u64,
    pub queued: u64,
    pub running: u64,
    pub retrying: u64,
    /// How long the oldest queued job has waited, on the database's clock.
    pub oldest_queued_secs: Option<f64>,
    /// Webhook events not delivered yet.
    pub webhooks_pending: u64,
}

/// A claimable job must be its account's oldest unfinished one, and no other
/// job of the account may be running: an account's files are processed one at
/// a time, in order, whichever process takes them, so a later upload's report
/// replaces an earlier one's and never the reverse.
pub(super) const ONE_JOB_PER_ACCOUNT: &str = "NOT EXISTS (SELECT 1 FROM jobs AS other \
    WHERE other.account = jobs.account AND other.job_id <> jobs.job_id \
      AND other.status IN ('arriving', 'queued', 'running', 'retrying') \
      AND (other.status IN ('running', 'retrying') OR other.received_at < jobs.received_at \
           OR (other.received_at = jobs.received_at AND other.job_id < jobs.job_id)))";

/// Decodes [`Backend::JOB_COLUMNS`].
pub(super) fn job(r: &impl Columns) -> Result<Job> {
    let job_id: JobId = r.text("job_id")?.into();
    let outcome = match r.maybe_text("outcome")? {
        None => None,
        Some(json) => Some(
            serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("the outcome of job {job_id}: {e}")))?,
        ),
    };
    Ok(Job {
        account: r.text("account")?,
        file_name: r.text("file_name")?,
        spool_path: r.text("spool_path")?,
        sha256: r.text("sha256")?,
        bytes: r.count("bytes")?,
        status: JobStatus::parse(&r.text("status")?)?,
        received_at: time(&r.text("received_at")?)?,
        started_at: r.maybe_text("started_at")?.as_deref().map(time).transpose()?,
        finished_at: r.maybe_text("finished_at")?.as_deref().map(time).transpose()?,
        rows_total: r.count("rows_total")?,
        progress: JobProgress {
            records_done: r.count("records_done")?,
            results_offset: r.count("results_offset")?,
            created: r.count("created")?,
            updated: r.count("updated")?,
            unchanged: r.count("unchanged")?,
            failed: r.count("failed")?,
        },
        error_code: r.maybe_text("error_code")?,
        error_message: r.maybe_text("error_message")?,
        uploader: r.maybe_text("uploader")?,
        scopes: Scopes { create: true, update: r.flag("may_update")? },
        phase: JobPhase::parse(&r.text("phase")?)?,
        outcome,
        attempts: r.count("attempts")? as u32,
        retries: r.count("retries")? as u32,
        retry_at: r.maybe_text("retry_at")?.as_deref().map(time).transpose()?,
        last_error: r.maybe_text("last_error")?,
        visible_path: r.maybe_text("visible_path")?,
        kind: JobKind::parse(&r.text("kind")?)?,
        settings: r.maybe_text("settings")?,
        results_owner: r.maybe_text("results_owner")?,
        job_id,
    })
}

/// The lease of `owner` on the job just claimed (see the backends' `claim_job`).
pub(super) fn claimed(job: Job, owner: &str) -> Claimed {
    Claimed { lease: JobLease { job_id: job.job_id.clone(), owner: owner.to_owned() }, job }
}

impl<DB> Sql<DB>
where
    DB: Backend,
    DB::Row: Columns,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
{
    /// Records an arriving job, received now on the database's clock.
    pub(crate) async fn create_job(&self, j: &NewJob) -> Result<()> {
        let sql = format!(
            "INSERT INTO jobs (job_id, account, file_name, spool_path, sha256, bytes, status, received_at, uploader,
               may_update, source_key, kind, owner)
             VALUES ($1, $2, $3, $4, $5, $6, 'arriving', {}, $7, $8, $9, $10, $11)",
            DB::NOW
        );
        sqlx::query(&sql)
            .bind(j.job_id.as_str())
            .bind(j.account.as_str())
            .bind(j.file_name.as_str())
            .bind(j.spool_path.as_str())
            .bind(j.sha256.as_str())
            .bind(j.bytes as i64)
            .bind(j.uploader.as_deref())
            .bind(j.scopes.update)
            .bind(j.source_key.as_deref())
            .bind(j.kind.as_str())
            .bind(j.owner.as_deref())
            .execute(&self.pool)
            .await
            .map_err(exists_as(|| format!("a job for the upload {}", j.file_name)))?;
        Ok(())
    }

    pub(crate) async fn get_job(&self, job_id: &str) -> Result<Option<Job>> {
        let sql = format!("SELECT {} FROM jobs WHERE job_id = $1", DB::JOB_COLUMNS);
        let row = sqlx::query(&sql).bind(job_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(job).transpose()
    }

    pub(crate) async fn find_jobs(
        &self,
        account: Option<&str>,
        status: Option<JobStatus>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {} FROM jobs
             WHERE (CAST($1 AS TEXT) IS NULL OR account = $1) AND (CAST($2 AS TEXT) IS NULL OR status = $2)
             ORDER BY received_at DESC, job_id DESC LIMIT $3",
            DB::JOB_COLUMNS
        );
        let rows = sqlx::query(&sql)
            .bind(account)
            .bind(status.map(JobStatus::as_str))
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job).collect()
    }

    /// One page of `account`'s jobs, newest first (received time, then id),
    /// in one of `statuses` (all when empty, at most 3), after the job
    /// `after` (keyset: no job is skipped or repeated however many there
    /// are). `None` when `after` is not a job of the account.
    pub(crate) async fn account_jobs_page(
        &self,
        account: &str,
        statuses: &[JobStatus],
        after: Option<&str>,
        limit: u32,
    ) -> Result<Option<Vec<Job>>> {
        if let Some(after) = after {
            let known = sqlx::query("SELECT job_id FROM jobs WHERE job_id = $1 AND account = $2")
                .bind(after)
                .bind(account)
                .fetch_optional(&self.pool)
                .await?;
            if known.is_none() {
                return Ok(None);
            }
        }
        let sql = format!(
            "SELECT {} FROM jobs
             WHERE account = $1 AND (CAST($2 AS TEXT) IS NULL OR status IN ($2, $3, $4))
               AND (CAST($5 AS TEXT) IS NULL
                    OR (received_at, job_id) < (SELECT received_at, job_id FROM jobs WHERE job_id = $5))
             ORDER BY received_at DESC, job_id DESC LIMIT $6",
            DB::JOB_COLUMNS
        );
        let status = |i: usize| statuses.get(i).or(statuses.first()).map(|s| s.as_str());
        let rows = sqlx::query(&sql)
            .bind(account)
            .bind(status(0))
            .bind(status(1))
            .bind(status(2))
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(Some(rows.iter().map(job).collect::<Result<Vec<Job>>>()?))
    }

    pub(crate) async fn start_job(&self, lease: &JobLease, pass: &FirstPass<'_>) -> Result<()> {
        let FirstPass { sha256, bytes, rows_total, started_at, settings } = *pass;
        let sql = format!(
            "UPDATE jobs SET rows_total = $2, heartbeat_at = {}, started_at = COALESCE(started_at, $3),
               sha256 = $5, bytes = $6, settings = $7 WHERE job_id = $4 AND owner = $1 AND status = 'running'",
            DB::NOW
        );
        let done = sqlx::query(&sql)
            .bind(lease.owner.as_str())
            .bind(rows_total as i64)
            .bind(DB::at(started_at))
            .bind(lease.job_id.as_str())
            .bind(sha256)
            .bind(bytes as i64)
            .bind(settings)
            .execute(&self.pool)
            .await?;
        fenced(DB::rows_affected(&done), &lease.job_id)
    }

    pub(crate) async fn decide_job(&self, lease: &JobLease, summary: &Summary) -> Result<()> {
        let outcome = serde_json::to_string(summary).expect("a summary serialises");
        let done = sqlx::query(
            "UPDATE jobs SET phase = 'publishing', outcome = $3, results_owner = $2
             WHERE job_id = $1 AND owner = $2 AND status = 'running'",
        )
        .bind(lease.job_id.as_str())
        .bind(lease.owner.as_str())
        .bind(outcome.as_str())
        .execute(&self.pool)
        .await?;
        fenced(DB::rows_affected(&done), &lease.job_id)
    }

    pub(crate) async fn retry_job(&self, lease: JobLease, retries: u32, wait: Duration, error: &str) -> Result<()> {
        let sql = format!(
            "UPDATE jobs SET status = 'retrying', owner = NULL, retries = $3, retry_at = {}, last_error = $5,
               attempts = 0
             WHERE job_id = $1 AND owner = $2 AND status = 'running'",
            DB::seconds_from_now("$4")
        );
        let done = sqlx::query(&sql)
            .bind(lease.job_id.as_str())
            .bind(lease.owner.as_str())
            .bind(retries as i64)
            .bind(secs(wait))
            .bind(error)
            .execute(&self.pool)
            .await?;
        fenced(DB::rows_affected(&done), &lease.job_id)
    }

    /// Takes an arriving job straight to running for `owner`.
    pub(crate) async fn mark_running(
        &self,
        job_id: &JobId,
        owner: &str,
        uploader: Option<&str>,
        scopes: Scopes,
    ) -> Result<JobLease> {
        let sql = format!(
            "UPDATE jobs SET status = 'running', owner = $2, heartbeat_at = {}, attempts = 1, uploader = $3,
               may_update = $4 WHERE job_id = $1 AND status = 'arriving'",
            DB::NOW
        );
        let done = sqlx::query(&sql)
            .bind(job_id.as_str())
            .bind(owner)
            .bind(uploader)
            .bind(scopes.update)
            .execute(&self.pool)
            .await?;
        fenced(DB::rows_affected(&done), job_id)?;
        Ok(JobLease { job_id: job_id.clone(), owner: owner.to_owned() })
    }

    pub(crate) async fn mark_queued(&self, job_id: &str, uploader: Option<&str>, scopes: Scopes) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'queued', uploader = $2, may_update = $3, owner = NULL
             WHERE job_id = $1 AND status = 'arriving'",
        )
        .bind(job_id)
        .bind(uploader)
        .bind(scopes.update)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn set_visible(&self, job_id: &str, path: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE jobs SET visible_path = $2 WHERE job_id = $1")
            .bind(job_id)
            .bind(path)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn visible_uploads(&self, age: Duration) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE visible_path IS NOT NULL
               AND status IN ('completed', 'rejected', 'aborted') AND received_at < {}",
            DB::JOB_COLUMNS,
            DB::seconds_from_now("$1")
        );
        let rows = sqlx::query(&sql).bind(-secs(age)).fetch_all(&self.pool).await?;
        rows.iter().map(job).collect()
    }

    /// Ends the run: status, counts, error and times as the published
    /// summary says; the job's claimed refs are forgotten.
    pub(crate) async fn finish_job(&self, lease: JobLease, summary: &Summary) -> Result<()> {
        let (code, message) = match &summary.error {
            Some(SummaryError { code, message }) => (Some(code.as_str()), Some(message.as_str())),
            None => (None, None),
        };
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let done = sqlx::query(
            "UPDATE jobs SET status = $1, started_at = COALESCE(started_at, $3),
               finished_at = CASE WHEN started_at IS NOT NULL AND started_at > $2 THEN started_at ELSE $2 END,
               records_done = $4, created = $5, updated = $6, unchanged = $7, failed = $8, error_code = $9,
               error_message = $10, owner = NULL, phase = 'done', retry_at = NULL
             WHERE job_id = $11 AND owner = $12",
        )
        .bind(summary.status.as_str())
        .bind(DB::at(summary.finished_at))
        .bind(DB::at(summary.started_at))
        .bind(summary.rows as i64)
        .bind(summary.created as i64)
        .bind(summary.updated as i64)
        .bind(summary.unchanged as i64)
        .bind(summary.failed as i64)
        .bind(code)
        .bind(message)
        .bind(lease.job_id.as_str())
        .bind(lease.owner.as_str())
        .execute(&mut *tx)
        .await?;
        fenced(DB::rows_affected(&done), &lease.job_id)?;
        sqlx::query("DELETE FROM job_refs WHERE job_id = $1").bind(lease.job_id.as_str()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends the run as `aborted` without a report (not even that could be
    /// published): the committed counts stay as they are.
    pub(crate) async fn finish_unreported(&self, lease: JobLease, error: &SummaryError) -> Result<()> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let sql = format!(
            "UPDATE jobs SET status = 'aborted', finished_at = {}, error_code = $1, error_message = $2, owner = NULL,
               phase = 'done', retry_at = NULL
             WHERE job_id = $3 AND owner = $4",
            DB::NOW
        );
        let done = sqlx::query(&sql)
            .bind(error.code.as_str())
            .bind(error.message.as_str())
            .bind(lease.job_id.as_str())
            .bind(lease.owner.as_str())
            .execute(&mut *tx)
            .await?;
        fenced(DB::rows_affected(&done), &lease.job_id)?;
        sqlx::query("DELETE FROM job_refs WHERE job_id = $1").bind(lease.job_id.as_str()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn delete_job(&self, job_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM jobs WHERE job_id = $1").bind(job_id).execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn release_owner(&self, owner: &str, stopped_cleanly: bool) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET owner = NULL, attempts = CASE WHEN $2 THEN 0 ELSE attempts END
             WHERE owner = $1 AND status = 'running'",
        )
        .bind(owner)
        .bind(stopped_cleanly)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn arriving_jobs(&self, age: Duration) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {0} FROM jobs WHERE status = 'arriving' AND received_at < {1}
               AND (owner IS NULL OR NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.owner = jobs.owner
                      AND nodes.stopped_at IS NULL AND nodes.heartbeat_at >= {1}))",
            DB::JOB_COLUMNS,
            DB::seconds_from_now("$1")
        );
        let rows = sqlx::query(&sql).bind(-secs(age)).fetch_all(&self.pool).await?;
        rows.iter().map(job).collect()
    }

    pub(crate) async fn owns_job(&self, job_id: &str, owner: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs
             WHERE job_id = $1 AND owner = $2 AND status IN ('running', 'retrying')",
        )
        .bind(job_id)
        .bind(owner)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.count("n")? > 0)
    }

    pub(crate) async fn job_counts(&self) -> Result<JobCounts> {
        let sql = format!(
            "SELECT status, COUNT(*) AS n, {} AS oldest FROM jobs
             WHERE status IN ('arriving', 'queued', 'running', 'retrying') GROUP BY status",
            DB::seconds_since("MIN(received_at)")
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        let mut counts = JobCounts::default();
        for row in rows {
            let n = row.count("n")?;
            match JobStatus::parse(&row.text("status")?)? {
                JobStatus::Arriving => counts.arriving = n,
                JobStatus::Queued => {
                    counts.queued = n;
                    counts.oldest_queued_secs = row.maybe_real("oldest")?.map(|s| s.max(0.0));
                }
                JobStatus::Running => counts.running = n,
                _ => counts.retrying = n,
            }
        }
        let pending = sqlx::query("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE status = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        counts.webhooks_pending = pending.count("n")?;
        Ok(counts)
    }
}

impl Store {
    /// Records an arriving job (`arriving`), received now on the database's clock.
    pub async fn create_job(&self, job: &NewJob) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.create_job(job).await,
            Store::Postgres(s) => s.sql.create_job(job).await,
        }
    }

    pub async fn get_job(&self, job_id: &str) -> Result<Option<Job>> {
        match self {
            Store::Sqlite(s) => s.sql.get_job(job_id).await,
            Store::Postgres(s) => s.sql.get_job(job_id).await,
        }
    }

    /// Recent jobs, newest first, of one account and/or one status.
    /// A page of an account's jobs after the job `after` (see `Sql::account_jobs_page`).
    pub async fn account_jobs_page(
        &self,
        account: &str,
        statuses: &[JobStatus],
        after: Option<&str>,
        limit: u32,
    ) -> Result<Option<Vec<Job>>> {
        match self {
            Store::Sqlite(s) => s.sql.account_jobs_page(account, statuses, after, limit).await,
            Store::Postgres(s) => s.sql.account_jobs_page(account, statuses, after, limit).await,
        }
    }

    pub async fn find_jobs(&self, account: Option<&str>, status: Option<JobStatus>, limit: u32) -> Result<Vec<Job>> {
        match self {
            Store::Sqlite(s) => s.sql.find_jobs(account, status, limit).await,
            Store::Postgres(s) => s.sql.find_jobs(account, status, limit).await,
        }
    }

    /// Takes the next queued job, a retrying one whose time has come, or a
    /// running one whose owner has not heartbeated for `stale_after` (on the
    /// database's clock), for `owner`; never two processes the same job.
    /// Accounts in `busy_accounts` are skipped, so one account's files never
    /// hold every worker.
    pub async fn claim_job(
        &self,
        owner: &str,
        stale_after: Duration,
        busy_accounts: &[String],
    ) -> Result<Option<Claimed>> {
        match self {
            Store::Sqlite(s) => s.claim_job(owner, secs(stale_after), busy_accounts).await,
            Store::Postgres(s) => s.claim_job(owner, secs(stale_after), busy_accounts).await,
        }
    }

    /// Takes an arriving job straight to running for `owner` (an operator's
    /// `intake ingest`), so no other process can claim it.
    pub async fn mark_running(
        &self,
        job_id: &JobId,
        owner: &str,
        uploader: Option<&str>,
        scopes: Scopes,
    ) -> Result<JobLease> {
        match self {
            Store::Sqlite(s) => s.sql.mark_running(job_id, owner, uploader, scopes).await,
            Store::Postgres(s) => s.sql.mark_running(job_id, owner, uploader, scopes).await,
        }
    }

    /// The upload is in the spool: the job may be taken, with who uploaded it.
    pub async fn mark_queued(&self, job_id: &str, uploader: Option<&str>, scopes: Scopes) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.mark_queued(job_id, uploader, scopes).await,
            Store::Postgres(s) => s.sql.mark_queued(job_id, uploader, scopes).await,
        }
    }

    /// The lease of `owner` on job `job_id`, when `owner` runs it now (to
    /// end a job whose runner was lost to a fault).
    pub async fn lease_owned(&self, job_id: &JobId, owner: &str) -> Result<Option<JobLease>> {
        let owned = self.owns_job(job_id, owner).await?;
        Ok(owned.then(|| JobLease { job_id: job_id.clone(), owner: owner.to_owned() }))
    }

    /// Whether `owner` owns the unfinished job `job_id` now.
    pub async fn owns_job(&self, job_id: &str, owner: &str) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.owns_job(job_id, owner).await,
            Store::Postgres(s) => s.sql.owns_job(job_id, owner).await,
        }
    }

    /// Records what the first pass learnt about the leased job.
    pub async fn start_job(&self, lease: &JobLease, pass: &FirstPass<'_>) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.start_job(lease, pass).await,
            Store::Postgres(s) => s.sql.start_job(lease, pass).await,
        }
    }

    /// Stores the decided outcome (the summary to publish) of the leased
    /// job: from now on it is only published, never processed again.
    pub async fn decide_job(&self, lease: &JobLease, summary: &Summary) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.decide_job(lease, summary).await,
            Store::Postgres(s) => s.sql.decide_job(lease, summary).await,
        }
    }

    /// Puts the leased job aside after a transient fault, to be taken again
    /// (by any process) `wait` from now.
    pub async fn retry_job(&self, lease: JobLease, retries: u32, wait: Duration, error: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.retry_job(lease, retries, wait, error).await,
            Store::Postgres(s) => s.sql.retry_job(lease, retries, wait, error).await,
        }
    }

    /// Records the end of the leased job as its published summary says, and
    /// forgets its claimed refs.
    pub async fn finish_job(&self, lease: JobLease, summary: &Summary) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.finish_job(lease, summary).await,
            Store::Postgres(s) => s.sql.finish_job(lease, summary).await,
        }
    }

    /// Ends the leased job as `aborted` with no report (publishing failed).
    pub async fn finish_unreported(&self, lease: JobLease, error: &SummaryError) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.finish_unreported(lease, error).await,
            Store::Postgres(s) => s.sql.finish_unreported(lease, error).await,
        }
    }

    /// Records (or clears) the upload's visible name in `/customers`.
    pub async fn set_visible(&self, job_id: &str, path: Option<&str>) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.set_visible(job_id, path).await,
            Store::Postgres(s) => s.sql.set_visible(job_id, path).await,
        }
    }

    /// Finished jobs whose upload is still visible, received longer than `age` ago.
    pub async fn visible_uploads(&self, age: Duration) -> Result<Vec<Job>> {
        match self {
            Store::Sqlite(s) => s.sql.visible_uploads(age).await,
            Store::Postgres(s) => s.sql.visible_uploads(age).await,
        }
    }

    /// Forgets an arriving job whose upload never reached the spool.
    pub async fn delete_job(&self, job_id: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.delete_job(job_id).await,
            Store::Postgres(s) => s.sql.delete_job(job_id).await,
        }
    }

    /// Lets any process resume the running jobs of an owner that is gone;
    /// `stopped_cleanly` (a graceful stop, not a crash) forgets their attempts.
    pub async fn release_owner(&self, owner: &str, stopped_cleanly: bool) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.release_owner(owner, stopped_cleanly).await,
            Store::Postgres(s) => s.sql.release_owner(owner, stopped_cleanly).await,
        }
    }

    /// Jobs recorded longer than `age` ago whose upload may not have
    /// reached the spool (a crash in between), unless the node taking it
    /// in has heartbeated within `age` (a long copy is not a crash).
    pub async fn arriving_jobs(&self, age: Duration) -> Result<Vec<Job>> {
        match self {
            Store::Sqlite(s) => s.sql.arriving_jobs(age).await,
            Store::Postgres(s) => s.sql.arriving_jobs(age).await,
        }
    }

    /// How many jobs wait, run and retry, and since when the oldest queued one waits.
    pub async fn job_counts(&self) -> Result<JobCounts> {
        match self {
            Store::Sqlite(s) => s.sql.job_counts().await,
            Store::Postgres(s) => s.sql.job_counts().await,
        }
    }
}
