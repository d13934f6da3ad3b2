//! The end of a job, in two durable steps. First the outcome is *decided*:
//! the summary is computed from the committed state and stored with the job
//! (phase `publishing`), the results file in the spool made to match it.
//! Then it is *published*, in the order the contract promises: the results
//! and the failed records, then the summary last (its presence means the
//! report is complete), then the progress file removed, the upload archived
//! and the job finished. Every publishing step can be redone after a crash;
//! nothing here reads back what the merchant can delete.

use super::job::{io_err, Context, IngestError};
use super::report::{count_error_codes, ResultsWriter, Summary, SummaryError, SummaryMapping};
use crate::clock;
use crate::domain::{AccountSettings, FileError};
use crate::mailbox::{archive_name, publish_atomically, rename_durably, ReportNames};
use crate::store::{Job, JobPhase, JobStatus, StoreError};
use std::path::{Path, PathBuf};

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

/// Decides how `job` (as committed) ends: stores the summary with the job,
/// after making the spool's results file hold exactly the committed rows.
pub async fn decide(ctx: &Context, job: &mut Job, ending: Ending) -> Result<Summary, IngestError> {
    let spool = ctx.layout.spool(&job.job_id);
    std::fs::create_dir_all(&spool).map_err(io_err("while creating the job's spool"))?;
    let results = results_path(ctx, job);
    let (status, error) = match &ending {
        Ending::Completed => (JobStatus::Completed, None),
        Ending::Rejected(e) => {
            job.progress = Default::default();
            (JobStatus::Rejected, Some(SummaryError::from(e)))
        }
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
        ),
    };
    let account = super::job::job_settings(ctx, job).await?;
    let mut error = error;
    if let (Ending::Rejected(e), Some(error)) = (&ending, error.as_mut()) {
        if suggestion_text(ctx, job, e.code, &account).is_some() {
            let name = super::mappings::suggestion_name(&job.file_name);
            error.message = format!(
                "{}; a mapping profile for these columns is suggested in {name}: check it, upload it into /mappings, \
                 then upload the file again",
                error.message
            );
        }
    }
    let applied = account.mapping.applied();
    let mapping = applied.map(|a| SummaryMapping {
        name: a.profile.name.clone(),
        preset: a.profile.preset,
        sha256: a.profile.sha256().to_owned(),
    });
    let ignored_columns = applied.map(|a| a.ignored.clone()).unwrap_or_default();
    adopt_results(ctx, job).map_err(io_err("while taking over the committed results"))?;
    // The committed rows, or the header alone (offset 0).
    let offset = if results.exists() { job.progress.results_offset } else { 0 };
    ResultsWriter::open(&results, offset, account.report_bom)
        .and_then(ResultsWriter::finish)
        .map_err(io_err("while writing the results file"))?;
    let (errors_by_code, any_failed_file) = write_failed_records(ctx, job, &ending, account).await?;
    let failed_file = any_failed_file.then(|| ReportNames::of(&job.file_name, job.kind.is_dry_run()).failed);
    job.status = status;
    job.error_code = error.as_ref().map(|e| e.code.clone());
    job.error_message = error.as_ref().map(|e| e.message.clone());
    let finished_at = clock::now();
    job.finished_at = Some(finished_at);
    let summary = Summary {
        account: job.account.clone(),
        file: job.file_name.clone(),
        job_id: job.job_id.to_string(),
        sha256: job.sha256.clone(),
        bytes: job.bytes,
        status: status.as_str().to_owned(),
        rows: job.progress.records_done,
        created: job.progress.created,
        updated: job.progress.updated,
        unchanged: job.progress.unchanged,
        failed: job.progress.failed,
        received_at: clock::format_rfc3339(job.received_at),
        started_at: clock::format_rfc3339(job.started_at.unwrap_or(finished_at)),
        finished_at: clock::format_rfc3339(finished_at),
        error,
        errors_by_code,
        dry_run: job.kind.is_dry_run(),
        failed_file,
        mapping,
        ignored_columns,
    };
    let json = serde_json::to_string(&summary).expect("a summary serialises");
    ctx.store.decide_job(&job.job_id, &ctx.owner, &json).await?;
    job.results_owner = Some(ctx.owner.clone());
    job.phase = JobPhase::Publishing;
    job.outcome = Some(json);
    Ok(summary)
}

/// Counts the committed results' error codes and, when any row failed,
/// copies the failed records into the spool's failed file; says whether
/// there is one. An aborted job's upload may be what failed: then it has
/// no failed file.
async fn write_failed_records(
    ctx: &Context,
    job: &Job,
    ending: &Ending,
    account: AccountSettings,
) -> Result<(std::collections::BTreeMap<String, u64>, bool), IngestError> {
    let (results, failed) = (results_path(ctx, job), failed_path(ctx, job));
    let upload = PathBuf::from(&job.spool_path);
    let (any_failed, limits) = (job.progress.failed > 0 && !matches!(ending, Ending::Rejected(_)), ctx.limits);
    let aborted = matches!(ending, Ending::Aborted(_));
    let (job_id, file) = (job.job_id.clone(), job.file_name.clone());
    let work = move || -> Result<_, IngestError> {
        let counts = count_error_codes(&results).map_err(io_err("while reading the results file"))?;
        remove_if_present(&failed).map_err(io_err("while writing the failed records"))?;
        if !any_failed {
            return Ok((counts, false));
        }
        match super::failed::write(&upload, &results, &failed, &account, limits) {
            Ok(n) if n > 0 => Ok((counts, true)),
            Ok(_) => {
                let _ = std::fs::remove_file(&failed);
                Ok((counts, false))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&failed);
                if !aborted {
                    return Err(io_err("while writing the failed records")(e));
                }
                tracing::warn!(job_id = %job_id, file = %file, error = %e, "an aborted job gets no failed-records file");
                Ok((counts, false))
            }
        }
    };
    tokio::task::spawn_blocking(work).await?
}

/// The decided summary of a job in phase `publishing`.
pub fn decided(job: &Job) -> Result<Summary, IngestError> {
    let json = job.outcome.as_deref().unwrap_or_default();
    serde_json::from_str(json)
        .map_err(|e| IngestError::Store(StoreError::Corrupt(format!("the outcome of job {}: {e}", job.job_id))))
}

/// Publishes a decided job's report, archives its upload and finishes it.
pub async fn publish(ctx: &Context, job: &mut Job, summary: &Summary) -> Result<(), IngestError> {
    // A process frozen after deciding that wakes up once another has
    // published (and a newer upload of the name perhaps too) touches nothing.
    if !ctx.store.owns_job(&job.job_id, &ctx.owner).await? {
        return Err(IngestError::Store(StoreError::NotOwner(job.job_id.to_string())));
    }
    let layout = &ctx.layout;
    layout.ensure_account(&job.account).map_err(io_err("while creating the account's folders"))?;
    let names = ReportNames::of(&job.file_name, job.kind.is_dry_run());
    let outbox = layout.outbox(&job.account);
    let summary_path = outbox.join(&names.summary);
    // The files of the process that decided the outcome.
    let decider = job.results_owner.as_deref();
    let results = owned_path(ctx, job, "results", decider);
    if results.exists() {
        // An older upload's summary must not stand beside this upload's results.
        remove_if_present(&summary_path).map_err(io_err("while replacing the summary"))?;
        rename_durably(&results, &outbox.join(&names.results)).map_err(io_err("while publishing the results file"))?;
    }
    let failed = owned_path(ctx, job, "failed", decider);
    if summary.failed_file.is_none() {
        // An older upload's failed records are no part of this report.
        remove_if_present(&outbox.join(&names.failed)).map_err(io_err("while replacing the failed records"))?;
    } else if failed.exists() {
        rename_durably(&failed, &outbox.join(&names.failed)).map_err(io_err("while publishing the failed records"))?;
    }
    // The suggested profile of a file rejected for its columns (derived
    // from the upload again: it is still in the spool until archived);
    // an older upload's suggestion is no part of this report.
    let suggestion_path = outbox.join(super::mappings::suggestion_name(&job.file_name));
    let code = summary.error.as_ref().and_then(|e| super::mappings::mappable_code(&e.code));
    let suggestion = match (summary.status.as_str(), code) {
        ("rejected", Some(code)) => {
            let account = super::job::job_settings(ctx, job).await?;
            suggestion_text(ctx, job, code, &account)
        }
        _ => None,
    };
    match suggestion {
        Some(text) => publish_atomically(&suggestion_path, text.as_bytes())
            .map_err(io_err("while publishing the suggested mapping"))?,
        None => remove_if_present(&suggestion_path).map_err(io_err("while replacing the suggested mapping"))?,
    }
    let json = serde_json::to_vec_pretty(summary).expect("a summary serialises");
    publish_atomically(&summary_path, &json).map_err(io_err("while publishing the summary"))?;
    super::progress::remove(ctx, job).map_err(io_err("while removing the progress file"))?;
    let upload = PathBuf::from(&job.spool_path);
    if upload.exists() {
        let archived = archive_name(&clock::compact(job.received_at), &job.job_id, &job.file_name);
        rename_durably(&upload, &layout.archive(&job.account).join(archived))
            .map_err(io_err("while archiving the upload"))?;
    }
    job.status = JobStatus::parse(&summary.status)?;
    // Decided in this process: the exact time; after a restart, the
    // summary's (to the second), never before the start.
    let finished = job.finished_at.or_else(|| clock::parse(&summary.finished_at));
    job.finished_at = finished.map(|f| job.started_at.map_or(f, |s| f.max(s)));
    job.progress.records_done = summary.rows;
    crate::webhooks::job_ended(&ctx.store, summary).await?;
    ctx.store.finish_job(job, &ctx.owner).await?;
    crate::telemetry::metrics().job_finished(summary);
    job.phase = JobPhase::Done;
    let _ = std::fs::remove_dir_all(layout.spool(&job.job_id));
    tracing::info!(account = %job.account, file = %job.file_name, job_id = %job.job_id,
        status = %summary.status, rows = summary.rows, created = summary.created, updated = summary.updated,
        unchanged = summary.unchanged, failed = summary.failed,
        error = summary.error.as_ref().map(|e| e.code.as_str()).unwrap_or(""), "job finished");
    Ok(())
}

/// Ends a job this process owns as `aborted`, from what the database says
/// was committed (whatever the process held in memory is not trusted). A
/// job whose outcome was already decided is published as decided. When even
/// that fails, the job is closed in the database without a report, so its
/// account's next upload is not held up: the error is logged.
pub async fn abort(ctx: &Context, job_id: &str, reason: &str) -> Result<Summary, IngestError> {
    let mut job = ctx
        .store
        .get_job(job_id)
        .await?
        .ok_or_else(|| IngestError::Store(StoreError::NotFound(format!("job {job_id}"))))?;
    tracing::error!(account = %job.account, file = %job.file_name, job_id, reason, "aborting the job");
    let published = async {
        let summary = match job.phase {
            JobPhase::Publishing => decided(&job)?,
            _ => decide(ctx, &mut job, Ending::Aborted(reason.to_owned())).await?,
        };
        publish(ctx, &mut job, &summary).await?;
        Ok::<_, IngestError>(summary)
    }
    .await;
    match published {
        Ok(summary) => Ok(summary),
        Err(e @ IngestError::Store(StoreError::NotOwner(_))) => Err(e),
        Err(e) => {
            tracing::error!(account = %job.account, file = %job.file_name, job_id, error = %e,
                "cannot publish the report of an aborted job; closing it without one");
            job.status = JobStatus::Aborted;
            job.finished_at = Some(clock::now());
            job.error_code = Some(INTERNAL_ERROR.to_owned());
            job.error_message = Some(format!("{reason}; the report could not be published: {e}"));
            let _ = super::progress::remove(ctx, &job);
            ctx.store.finish_job(&job, &ctx.owner).await?;
            Err(e)
        }
    }
}

/// The profile suggested for `job`'s upload, rejected with `code` (`None`:
/// none is, or the upload cannot be read for it, which only loses the hint).
fn suggestion_text(
    ctx: &Context,
    job: &Job,
    code: crate::domain::FileErrorCode,
    account: &AccountSettings,
) -> Option<String> {
    let upload = PathBuf::from(&job.spool_path);
    match super::mappings::suggestion(&upload, &job.file_name, code, account.encoding, ctx.limits) {
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
