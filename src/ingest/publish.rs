//! The end of a job, in two durable steps. First the outcome is *decided*:
//! the summary is computed from the committed state and stored with the job
//! (phase `publishing`), the results file in the spool made to match it.
//! Then it is *published*, in the order the contract promises: the results
//! and the failed records, then the summary last (its presence means the
//! report is complete), then the progress file removed, the upload archived
//! and the job finished. Every publishing step can be redone after a crash;
//! nothing here reads back what the merchant can delete.

use super::context::{blocking, job_settings, Context, Fault, IngestError};
use super::report::{count_error_codes, ResultsWriter};
use crate::clock;
use crate::domain::{
    AccountSettings, FileError, FileErrorCode, FileLimits, JobStatus, Summary, SummaryError, SummaryMapping,
};
use crate::keyring::Sealing;
use crate::mailbox::{archive_name, publish_atomically, rename_durably, ReportNames};
use crate::openpgp::Opening;
use crate::store::{Job, JobLease, JobPhase, JobProgress, StoreError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a job ends.
#[derive(Debug, Clone)]
pub enum Ending {
    /// Every record was processed.
    Completed,
    /// The file was rejected whole; no row was applied.
    Rejected(FileError),
    /// The daemon could not finish it (the message is for the operator):
    /// the rows committed so far are the report.
    Aborted(String),
}

/// The job error code of an aborted job.
pub const INTERNAL_ERROR: &str = "internal_error";

/// A spool file of `job` that `owner` writes (`None`: a job from before
/// each owner wrote its own).
fn owned_path(ctx: &Context, job: &Job, name: &str, owner: Option<&str>) -> PathBuf {
    let spool = ctx.layout.spool(&job.job_id);
    match owner {
        None => spool.join(format!("{name}.csv")),
        Some(owner) => {
            let tag: String = owner.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
            spool.join(format!("{name}.{tag}.csv"))
        }
    }
}

/// The results file this process writes for `job`. Each owner writes its
/// own: a former owner that was paused and wakes up writes into a file no
/// one publishes (its commit is then refused).
pub fn results_path(ctx: &Context, job: &Job) -> PathBuf {
    owned_path(ctx, job, "results", Some(&ctx.owner))
}

/// The failed-records file this process writes for `job`.
fn failed_path(ctx: &Context, job: &Job) -> PathBuf {
    owned_path(ctx, job, "failed", Some(&ctx.owner))
}

/// Makes this process's results file of `job` hold exactly the committed
/// results, when another process committed them: the committed prefix of
/// that owner's file is copied (it was on disk before the commit).
pub fn adopt_results(ctx: &Context, job: &Job) -> std::io::Result<()> {
    let offset = job.progress.results_offset;
    if offset == 0 || job.results_owner.as_deref() == Some(ctx.owner.as_str()) {
        return Ok(());
    }
    let theirs = owned_path(ctx, job, "results", job.results_owner.as_deref());
    let mine = results_path(ctx, job);
    let part = mine.with_extension("csv.part");
    let mut from = std::fs::File::open(&theirs)?;
    let mut to = std::fs::File::create(&part)?;
    let copied = std::io::copy(&mut std::io::Read::take(&mut from, offset), &mut to)?;
    if copied != offset {
        let _ = std::fs::remove_file(&part);
        return Err(std::io::Error::other(format!(
            "the committed results are {offset} bytes, the previous owner's file has {copied}"
        )));
    }
    to.sync_all()?;
    std::fs::rename(&part, &mine)?;
    crate::mailbox::sync_dir(&ctx.layout.spool(&job.job_id))
}

/// The job as committed: what deciding and publishing read, never what a
/// runner held in memory.
async fn committed(ctx: &Context, lease: &JobLease) -> Result<Job, IngestError> {
    let job = ctx.store.get_job(lease.job_id()).await?;
    Ok(job.ok_or_else(|| StoreError::NotFound(format!("job {}", lease.job_id())))?)
}

/// Decides how the leased job (as committed) ends: stores the summary with
/// the job, after making the spool's results file hold exactly the
/// committed rows and writing the failed records.
pub async fn decide(ctx: &Context, lease: &JobLease, ending: Ending) -> Result<Summary, IngestError> {
    let job = committed(ctx, lease).await?;
    let (status, error, progress) = match &ending {
        Ending::Completed => (JobStatus::Completed, None, job.progress),
        Ending::Rejected(e) => (JobStatus::Rejected, Some(SummaryError::from(e)), JobProgress::default()),
        Ending::Aborted(message) => (
            JobStatus::Aborted,
            Some(SummaryError {
                code: INTERNAL_ERROR.to_owned(),
                message: format!(
                    "intake could not finish this file (job {}): {message}; the rows listed in the results were \
                     processed, the others were not; uploading the file again is safe",
                    job.job_id
                ),
            }),
            job.progress,
        ),
    };
    let account = job_settings(ctx, &job).await?;
    let applied = account.mapping.applied();
    let mapping = applied.map(|a| SummaryMapping {
        name: a.profile.name.clone(),
        preset: a.profile.preset,
        sha256: a.profile.sha256().to_owned(),
    });
    let ignored_columns = applied.map(|a| a.ignored.clone()).unwrap_or_default();
    let rejected_code = match &ending {
        Ending::Rejected(e) => Some(e.code),
        _ => None,
    };
    let (work_ctx, work_job) = (ctx.clone(), job.clone());
    let pgp_signer = account.pgp_signer.clone();
    // Reports encrypted to the merchant's keys, when the account says so
    // and has a current one (decided once, kept in the summary).
    let sealed = ctx.keyring.sealing(&account.avid, account.pgp).await?.is_some();
    let pgp = super::context::opening(ctx, &account, Path::new(&job.spool_path)).await?;
    let (errors_by_code, any_failed_file, suggested) = blocking("while writing the report", move || {
        let suggested =
            rejected_code.is_some_and(|code| suggestion_text(&work_ctx, &work_job, code, &account, &pgp).is_some());
        let (counts, any_failed) = write_decided_files(&work_ctx, &work_job, &ending, progress, account, &pgp)?;
        Ok((counts, any_failed, suggested))
    })
    .await?;
    let mut error = error;
    if let (true, Some(error)) = (suggested, error.as_mut()) {
        let name = super::mappings::suggestion_name(&job.file_name);
        error.message = format!(
            "{}; a mapping profile for these columns is suggested in {name}: check it, upload it into /mappings, \
             then upload the file again",
            error.message
        );
    }
    let names = ReportNames::of(&job.file_name, job.kind.is_dry_run());
    let failed_file = any_failed_file.then(|| if sealed { sealed_name(&names.failed) } else { names.failed.clone() });
    let finished_at = clock::now();
    let summary = Summary {
        account: job.account.clone(),
        file: job.file_name.clone(),
        job_id: job.job_id.to_string(),
        sha256: job.sha256.clone(),
        bytes: job.bytes,
        status,
        rows: progress.records_done,
        created: progress.created,
        updated: progress.updated,
        unchanged: progress.unchanged,
        failed: progress.failed,
        received_at: job.received_at,
        started_at: job.started_at.unwrap_or(finished_at),
        finished_at,
        error,
        errors_by_code,
        dry_run: job.kind.is_dry_run(),
        failed_file,
        mapping,
        ignored_columns,
        pgp: (pgp_signer.is_some() || sealed).then(|| crate::domain::SummaryPgp {
            signer: pgp_signer,
            results_file: sealed.then(|| sealed_name(&names.results)),
        }),
    };
    ctx.store.decide_job(lease, &summary).await?;
    Ok(summary)
}

/// The spool's results file cut to the committed rows (or the header alone),
/// and the failed records; the error codes counted, and whether any record
/// failed. An aborted job's upload may be what failed: then it has no
/// failed-records file.
fn write_decided_files(
    ctx: &Context,
    job: &Job,
    ending: &Ending,
    progress: JobProgress,
    account: AccountSettings,
    pgp: &Arc<Opening>,
) -> std::io::Result<(BTreeMap<String, u64>, bool)> {
    std::fs::create_dir_all(ctx.layout.spool(&job.job_id))?;
    let (results, failed) = (results_path(ctx, job), failed_path(ctx, job));
    adopt_results(ctx, job)?;
    let offset = if results.exists() { progress.results_offset } else { 0 };
    ResultsWriter::open(&results, offset, account.report_bom).and_then(ResultsWriter::finish)?;
    remove_if_present(&failed)?;
    // Both read the whole results file (the failed records the upload too):
    // side by side, the job's last step takes the time of the longer.
    std::thread::scope(|scope| {
        let counting = scope.spawn(|| count_error_codes(&results));
        let written = if progress.failed == 0 || matches!(ending, Ending::Rejected(_)) {
            Ok(false)
        } else {
            write_failed_file(job, ending, &results, &failed, &account, ctx.limits, pgp)
        };
        let counts = counting.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok((counts, written?))
    })
}

/// The failed-records file; whether it has any (none is left otherwise).
fn write_failed_file(
    job: &Job,
    ending: &Ending,
    results: &Path,
    failed: &Path,
    account: &AccountSettings,
    limits: FileLimits,
    pgp: &Arc<Opening>,
) -> std::io::Result<bool> {
    match super::failed::write(Path::new(&job.spool_path), results, failed, account, limits, pgp) {
        Ok(n) if n > 0 => Ok(true),
        Ok(_) => {
            let _ = std::fs::remove_file(failed);
            Ok(false)
        }
        Err(e) => {
            let _ = std::fs::remove_file(failed);
            if !matches!(ending, Ending::Aborted(_)) {
                return Err(e);
            }
            tracing::warn!(job_id = %job.job_id, file = %job.file_name, error = %e,
                "an aborted job gets no failed-records file");
            Ok(false)
        }
    }
}

/// A report file's name when it is encrypted.
fn sealed_name(name: &str) -> String {
    format!("{name}.pgp")
}

/// Moves a report file from the spool to `target` in the outbox; with
/// `sealing`, encrypted (to `target`.pgp, as a stream) instead, and no
/// plain file of that name is left (an older upload's).
fn publish_report_file(from: &Path, target: &Path, sealing: Option<&Sealing>) -> std::io::Result<()> {
    let Some(sealing) = sealing else {
        remove_if_present(&PathBuf::from(format!("{}.pgp", target.display())))?;
        return rename_durably(from, target);
    };
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("report.csv").to_owned();
    let sealed = PathBuf::from(format!("{}.pgp", from.display()));
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&sealed)?);
        crate::openpgp::encrypt_report(
            std::io::BufReader::new(std::fs::File::open(from)?),
            &name,
            &sealing.recipients,
            &sealing.signer,
            &sealing.passphrase,
            &mut out,
        )
        .map_err(std::io::Error::other)?;
        std::io::Write::flush(&mut out)?;
        out.get_ref().sync_data()?;
    }
    remove_if_present(target)?;
    rename_durably(&sealed, &PathBuf::from(format!("{}.pgp", target.display())))?;
    std::fs::remove_file(from)
}

/// The decided summary of a job in phase `publishing`.
pub fn decided(job: &Job) -> Result<Summary, IngestError> {
    job.outcome.clone().ok_or_else(|| {
        IngestError::Store(StoreError::Corrupt(format!("job {} is publishing without an outcome", job.job_id)))
    })
}

/// Publishes a decided job's report, archives its upload and finishes it.
pub async fn publish(ctx: &Context, lease: JobLease, summary: &Summary) -> Result<(), IngestError> {
    // A process frozen after deciding that wakes up once another has
    // published (and a newer upload of the name perhaps too) touches nothing.
    if !ctx.store.owns_job(lease.job_id(), lease.owner()).await? {
        return Err(IngestError::Store(StoreError::NotOwner(lease.job_id().to_string())));
    }
    let job = committed(ctx, &lease).await?;
    let code = summary.error.as_ref().and_then(|e| super::mappings::mappable_code(&e.code));
    let suggestion = match (summary.status, code) {
        (JobStatus::Rejected, Some(code)) => {
            let account = job_settings(ctx, &job).await?;
            let pgp = super::context::opening(ctx, &account, Path::new(&job.spool_path)).await?;
            Some((code, account, pgp))
        }
        _ => None,
    };
    let (work_ctx, work_job, failed_file) = (ctx.clone(), job.clone(), summary.failed_file.is_some());
    let json = serde_json::to_vec_pretty(summary).expect("a summary serialises");
    let sealing = match summary.pgp.as_ref().and_then(|p| p.results_file.as_ref()) {
        None => None,
        Some(_) => {
            let account = job_settings(ctx, &job).await?;
            let sealing = ctx.keyring.sealing(&account.avid, account.pgp).await?;
            // Never plain instead: the merchant's keys were removed since.
            Some(Arc::new(sealing.ok_or_else(|| IngestError::Io {
                what: "while encrypting the report".to_owned(),
                source: std::io::Error::other("the account has no current merchant key to encrypt its report to"),
            })?))
        }
    };
    blocking("while publishing the report", move || {
        publish_files(&work_ctx, &work_job, failed_file, &json, suggestion, sealing.as_deref())
    })
    .await?;
    crate::webhooks::job_ended(&ctx.store, summary).await?;
    ctx.store.finish_job(lease, summary).await?;
    crate::telemetry::metrics().job_finished(summary);
    let spool = ctx.layout.spool(&job.job_id);
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(spool)).await;
    tracing::info!(account = %job.account, file = %job.file_name, job_id = %job.job_id,
        status = %summary.status, rows = summary.rows, created = summary.created, updated = summary.updated,
        unchanged = summary.unchanged, failed = summary.failed,
        error = summary.error.as_ref().map(|e| e.code.as_str()).unwrap_or(""), "job finished");
    Ok(())
}

/// The report's files in the order the contract promises: results and
/// failed records, then the summary (`json`) last, then the progress file
/// removed and the upload archived. Each step can be redone after a crash.
fn publish_files(
    ctx: &Context,
    job: &Job,
    failed_file: bool,
    json: &[u8],
    suggestion: Option<(FileErrorCode, AccountSettings, Arc<Opening>)>,
    sealing: Option<&Sealing>,
) -> std::io::Result<()> {
    let layout = &ctx.layout;
    layout.ensure_account(&job.account)?;
    let names = ReportNames::of(&job.file_name, job.kind.is_dry_run());
    let outbox = layout.outbox(&job.account);
    let summary_path = outbox.join(&names.summary);
    // The files of the process that decided the outcome.
    let decider = job.results_owner.as_deref();
    let results = owned_path(ctx, job, "results", decider);
    if results.exists() {
        // An older upload's summary must not stand beside this upload's results.
        remove_if_present(&summary_path)?;
        publish_report_file(&results, &outbox.join(&names.results), sealing)?;
    }
    let failed = owned_path(ctx, job, "failed", decider);
    if !failed_file {
        // An older upload's failed records are no part of this report.
        remove_if_present(&outbox.join(&names.failed))?;
        remove_if_present(&outbox.join(sealed_name(&names.failed)))?;
    } else if failed.exists() {
        publish_report_file(&failed, &outbox.join(&names.failed), sealing)?;
    }
    // The suggested profile of a file rejected for its columns (derived
    // from the upload again: it is still in the spool until archived);
    // an older upload's suggestion is no part of this report.
    let suggestion_path = outbox.join(super::mappings::suggestion_name(&job.file_name));
    match suggestion.and_then(|(code, account, pgp)| suggestion_text(ctx, job, code, &account, &pgp)) {
        Some(text) => publish_atomically(&suggestion_path, text.as_bytes())?,
        None => remove_if_present(&suggestion_path)?,
    }
    publish_atomically(&summary_path, json)?;
    super::progress::remove(ctx, job)?;
    let upload = PathBuf::from(&job.spool_path);
    if upload.exists() {
        let archived = archive_name(&clock::compact(job.received_at), &job.job_id, &job.file_name);
        rename_durably(&upload, &layout.archive(&job.account).join(archived))?;
    }
    Ok(())
}

/// How soon an aborted job whose report could not be published (a full
/// disk, a database that cannot write) is tried again.
const PUBLISH_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Ends the leased job as `aborted`, from what the database says was
/// committed (whatever the process held in memory is not trusted). A job
/// whose outcome was already decided is published as decided. When that
/// fails for a passing reason (a full disk), the job waits and is tried
/// again; when it fails for good, the job is closed in the database
/// without a report, so its account's next upload is not held up: the
/// error is logged.
pub async fn abort(ctx: &Context, lease: JobLease, reason: &str) -> Result<Summary, IngestError> {
    let job = committed(ctx, &lease).await?;
    tracing::error!(account = %job.account, file = %job.file_name, job_id = %job.job_id, reason, "aborting the job");
    let summary = match job.phase {
        JobPhase::Publishing => decided(&job),
        _ => decide(ctx, &lease, Ending::Aborted(reason.to_owned())).await,
    };
    let published = match summary {
        Ok(summary) => publish(ctx, lease, &summary).await.map(|()| summary),
        Err(e) => Err(e),
    };
    match published {
        Ok(summary) => Ok(summary),
        Err(e @ IngestError::Store(StoreError::NotOwner(_))) => Err(e),
        // A full disk or a database that cannot write now: the report is
        // owed, so the job is put aside and its publishing tried again
        // (its summary, once decided, is kept with it), however long that takes.
        Err(e) if e.fault() == Fault::Transient => {
            tracing::warn!(account = %job.account, file = %job.file_name, job_id = %job.job_id, error = %e,
                retry_secs = PUBLISH_RETRY.as_secs(), "cannot publish the aborted job's report yet; trying again");
            if let Some(lease) = ctx.store.lease_owned(&job.job_id, &ctx.owner).await? {
                let message = format!("{reason}; its report could not be published yet: {e}");
                ctx.store.retry_job(lease, job.retries, PUBLISH_RETRY, &message).await?;
            }
            Err(e)
        }
        Err(e) => {
            tracing::error!(account = %job.account, file = %job.file_name, job_id = %job.job_id, error = %e,
                "cannot publish the report of an aborted job; closing it without one");
            let error = SummaryError {
                code: INTERNAL_ERROR.to_owned(),
                message: format!("{reason}; the report could not be published: {e}"),
            };
            let _ = super::progress::remove(ctx, &job);
            if let Some(lease) = ctx.store.lease_owned(&job.job_id, &ctx.owner).await? {
                ctx.store.finish_unreported(lease, &error).await?;
            }
            Err(e)
        }
    }
}

/// The profile suggested for `job`'s upload, rejected with `code` (`None`:
/// none is, or the upload cannot be read for it, which only loses the hint).
fn suggestion_text(
    ctx: &Context,
    job: &Job,
    code: FileErrorCode,
    account: &AccountSettings,
    pgp: &Arc<Opening>,
) -> Option<String> {
    let upload = PathBuf::from(&job.spool_path);
    match super::mappings::suggestion(&upload, &job.file_name, code, account.encoding, ctx.limits, pgp) {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(job_id = %job.job_id, file = %job.file_name, error = %e, "no mapping suggestion");
            None
        }
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
