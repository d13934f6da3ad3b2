//! `NAME.progress.json`: while a file is queued, running or waiting to be
//! retried, where it stands — published atomically (never half written),
//! and removed once the summary is out. Written only by the job's owner,
//! in its own steps, so a removed progress file never comes back.

use super::context::Context;
use crate::clock;
use crate::mailbox::{publish_atomically, ReportNames};
use crate::store::{Job, JobProgress};
use serde::Serialize;
use std::io;

/// What a job is doing, as the merchant sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressState {
    /// Received; waiting behind the account's earlier uploads.
    Queued,
    Running,
    /// Interrupted by a fault it resumes from at `retry_at`.
    Retrying,
}

#[derive(Debug, Serialize)]
struct Progress<'a> {
    job_id: &'a str,
    file: &'a str,
    state: ProgressState,
    dry_run: bool,
    /// Records of the file (known once it has been read through once).
    rows_total: u64,
    rows_done: u64,
    created: u64,
    updated: u64,
    unchanged: u64,
    failed: u64,
    /// Bytes of the upload (as uploaded: compressed for a `.csv.gz`).
    bytes_done: u64,
    bytes_total: u64,
    received_at: String,
    started_at: Option<String>,
    updated_at: String,
    retry_at: Option<String>,
    /// When the account encrypts its reports: the encrypted files the job
    /// will publish instead of the plain ones (as summary.json's `pgp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pgp: Option<ProgressPgp>,
}

/// progress.json's `pgp`: the reports' names in `/outbox`, encrypted to the
/// merchant's keys (`failed_file` only if a row fails).
#[derive(Debug, Clone, Serialize)]
struct ProgressPgp {
    results_file: String,
    failed_file: String,
}

impl ProgressPgp {
    fn of(job: &Job) -> ProgressPgp {
        let names = ReportNames::of(&job.file_name, job.kind.is_dry_run());
        ProgressPgp { results_file: format!("{}.pgp", names.results), failed_file: format!("{}.pgp", names.failed) }
    }
}

/// Whether `job`'s reports will be encrypted (read from the store only for
/// an account that asks for it); unknown counts as no.
async fn sealed(ctx: &Context, job: &Job) -> bool {
    let rules = match super::context::job_settings(ctx, job).await {
        Ok(account) if account.pgp.encrypt_reports => account.pgp,
        _ => return false,
    };
    ctx.keyring.seals(&job.account, rules).await.unwrap_or_else(|e| {
        tracing::debug!(job_id = %job.job_id, error = %e, "progress: whether reports are encrypted is unknown");
        false
    })
}

/// Publishes `job`'s progress (`p`, committed); `bytes_done` is how far
/// into the upload its committed rows reach.
fn publish(
    ctx: &Context,
    job: &Job,
    p: &JobProgress,
    state: ProgressState,
    bytes_done: u64,
    sealed: bool,
) -> io::Result<()> {
    let bytes_total =
        if job.bytes > 0 { job.bytes } else { std::fs::metadata(&job.spool_path).map(|m| m.len()).unwrap_or_default() };
    let progress = Progress {
        job_id: &job.job_id,
        file: &job.file_name,
        state,
        dry_run: job.kind.is_dry_run(),
        rows_total: job.rows_total,
        rows_done: p.records_done,
        created: p.created,
        updated: p.updated,
        unchanged: p.unchanged,
        failed: p.failed,
        bytes_done: bytes_done.min(bytes_total),
        bytes_total,
        received_at: clock::format_rfc3339(job.received_at),
        started_at: job.started_at.map(clock::format_rfc3339),
        updated_at: clock::format_rfc3339(clock::now()),
        retry_at: job.retry_at.filter(|_| state == ProgressState::Retrying).map(clock::format_rfc3339),
        pgp: sealed.then(|| ProgressPgp::of(job)),
    };
    let json = serde_json::to_vec_pretty(&progress).expect("progress serialises");
    ctx.layout.ensure_account(&job.account)?;
    publish_atomically(&path(ctx, job), &json)
}

/// Publishes `job`'s progress (`progress`, committed) on a blocking
/// thread, logging rather than failing: progress is a courtesy to the
/// merchant, never a reason to stop a job.
pub async fn publish_or_log(ctx: &Context, job: &Job, progress: &JobProgress, state: ProgressState, bytes_done: u64) {
    let sealed = sealed(ctx, job).await;
    let (work_ctx, work_job, progress) = (ctx.clone(), job.clone(), *progress);
    let written =
        tokio::task::spawn_blocking(move || publish(&work_ctx, &work_job, &progress, state, bytes_done, sealed))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
    if let Err(e) = written {
        tracing::warn!(account = %job.account, file = %job.file_name, job_id = %job.job_id, error = %e,
            "cannot publish the job's progress");
    }
}

/// Publishes a running job's progress only while `ctx.owner` still owns
/// it: a node that was frozen and wakes up after another took the job over
/// (and perhaps finished it) writes none.
pub async fn publish_owned(ctx: &Context, job: &Job, progress: &JobProgress, state: ProgressState, bytes_done: u64) {
    match ctx.store.owns_job(&job.job_id, &ctx.owner).await {
        Ok(true) => publish_or_log(ctx, job, progress, state, bytes_done).await,
        Ok(false) => {}
        Err(e) => tracing::debug!(job_id = %job.job_id, error = %e, "progress not published: ownership unknown"),
    }
}

/// After this process lost `job` to another: if the job has ended, a
/// progress file of it can only be one this process wrote while it was
/// frozen between its ownership check and the write; remove it.
pub async fn remove_lost(ctx: &Context, job: &Job) {
    let Ok(Some(now)) = ctx.store.get_job(&job.job_id).await else { return };
    if !now.status.is_final() {
        return;
    }
    let path = path(ctx, job);
    let names_this_job = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["job_id"] == job.job_id.as_str());
    if names_this_job && std::fs::remove_file(&path).is_ok() {
        tracing::info!(job_id = %job.job_id, "removed a progress file this process wrote after losing the job");
    }
}

/// Removes `job`'s progress file (gone already is fine).
pub fn remove(ctx: &Context, job: &Job) -> io::Result<()> {
    match std::fs::remove_file(path(ctx, job)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn path(ctx: &Context, job: &Job) -> std::path::PathBuf {
    ctx.layout.outbox(&job.account).join(ReportNames::of(&job.file_name, job.kind.is_dry_run()).progress)
}
