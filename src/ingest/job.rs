//! Runs one upload job, one batch at a time: parse records, claim refs, upsert,
//! append the results, and commit the batch's upserts together with the job's
//! progress, so a job resumed after a crash neither redoes nor miscounts rows.
//! Then publishes the report and archives the upload.

use super::report::{ResultsWriter, RowResult, RowStatus, Summary, SummaryError};
use super::rows::{scan, FileLimits, ParsedRow, RowReader};
use crate::clock;
use crate::domain::{AccountSettings, FileEncoding, FileError, PhoneCheck};
use crate::layout::{publish_atomically, report_stem, Layout};
use crate::store::{BatchRecord, Job, JobStatus, RecordOutcome, Store, StoreError, UpsertOutcome};
use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("a worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> IngestError {
    let what = what.into();
    move |source| IngestError::Io { what, source }
}

/// What every job needs.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub layout: Layout,
    pub limits: FileLimits,
    /// Records per batch (one transaction each).
    pub batch_size: usize,
    /// This process's name in the jobs table.
    pub owner: String,
}

/// What a step left to do.
pub enum Step {
    More,
    Done(Summary),
}

/// The next batch, read and parsed on a blocking thread while the current one
/// is written to the database.
type NextBatch = tokio::task::JoinHandle<(Box<RowReader<File>>, std::io::Result<Vec<ParsedRow>>)>;

fn read_batch(mut reader: Box<RowReader<File>>, batch_size: usize) -> NextBatch {
    tokio::task::spawn_blocking(move || {
        let mut rows = Vec::with_capacity(batch_size);
        while rows.len() < batch_size {
            match reader.next_row() {
                Ok(Some(row)) => rows.push(row),
                Ok(None) => break,
                Err(e) => return (reader, Err(e)),
            }
        }
        (reader, Ok(rows))
    })
}

enum State {
    Rows {
        next: NextBatch,
        results: ResultsWriter,
    },
    /// Every row is done (possibly before a restart): publish the report.
    Finishing,
    Rejected(FileError),
}

/// One job in progress.
pub struct JobRunner {
    job: Job,
    state: Option<State>,
    started: Instant,
}

impl JobRunner {
    /// Opens a claimed job: on its first run, the first pass (hash, size,
    /// record count, rejection); on a resumed one, skips the records already
    /// committed and truncates the results to what was committed with them.
    pub async fn open(ctx: &Context, mut job: Job) -> Result<JobRunner, IngestError> {
        let started = Instant::now();
        let account = ctx.store.get_account(&job.account).await?.unwrap_or_else(|| AccountSettings {
            avid: job.account.clone(),
            default_region: None,
            encoding: FileEncoding::Utf8,
            phone_check: PhoneCheck::Possible,
        });
        let spool = ctx.layout.spool(&job.job_id);
        let upload = PathBuf::from(&job.spool_path);
        let results_path = spool.join("results.csv");
        let now = clock::now_rfc3339();
        let fresh = job.progress.records_done == 0;
        let mut rejection = None;
        if fresh && upload.exists() {
            let (path, acct, limits) = (upload.clone(), account.clone(), ctx.limits);
            let scanned = tokio::task::spawn_blocking(move || {
                let file = File::open(&path)?;
                scan(file, &acct, limits)
            })
            .await?
            .map_err(io_err(format!("while reading upload {}", job.file_name)))?;
            ctx.store.start_job(&job.job_id, &ctx.owner, &scanned.sha256, scanned.bytes, scanned.records, &now).await?;
            job.sha256 = scanned.sha256;
            job.bytes = scanned.bytes;
            job.rows_total = scanned.records;
            job.started_at.get_or_insert(now);
            job.status = JobStatus::Running;
            rejection = scanned.rejection;
        }
        tracing::info!(account = %job.account, file = %job.file_name, job_id = %job.job_id,
            rows = job.rows_total, resumed_at = job.progress.records_done, "job started");
        let state = if let Some(error) = rejection {
            State::Rejected(error)
        } else if !upload.exists() || (job.progress.records_done >= job.rows_total && !results_path.exists() && !fresh)
        {
            State::Finishing
        } else {
            let (path, acct, skip) = (upload.clone(), account.clone(), job.progress.records_done);
            let opened = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                let file = File::open(&path)?;
                let mut reader = match RowReader::open(file, acct)? {
                    Ok(reader) => reader,
                    Err(e) => return Ok(Err(e)),
                };
                for _ in 0..skip {
                    reader.skip_row()?;
                }
                Ok(Ok(reader))
            })
            .await?
            .map_err(io_err(format!("while reading upload {}", job.file_name)))?;
            match opened {
                Err(e) => State::Rejected(e),
                Ok(reader) => {
                    std::fs::create_dir_all(&spool).map_err(io_err("while creating the job's spool"))?;
                    let results = ResultsWriter::open(&results_path, job.progress.results_offset)
                        .map_err(io_err("while opening the results file"))?;
                    State::Rows { next: read_batch(Box::new(reader), ctx.batch_size.max(1)), results }
                }
            }
        };
        Ok(JobRunner { job, state: Some(state), started })
    }

    pub fn job(&self) -> &Job {
        &self.job
    }

    /// Processes one batch, or publishes the report when no record is left.
    pub async fn step(&mut self, ctx: &Context) -> Result<Step, IngestError> {
        match self.state.take().expect("a finished job is not stepped again") {
            State::Rejected(error) => self.finish(ctx, Some(error)).await.map(Step::Done),
            State::Finishing => self.finish(ctx, None).await.map(Step::Done),
            State::Rows { next, mut results } => {
                let (reader, rows) = next.await?;
                let rows = rows.map_err(io_err(format!("while reading upload {}", self.job.file_name)))?;
                if rows.is_empty() {
                    results.finish().map_err(io_err("while writing the results file"))?;
                    return self.finish(ctx, None).await.map(Step::Done);
                }
                let next = read_batch(reader, ctx.batch_size.max(1));
                self.apply(ctx, rows, &mut results).await?;
                self.state = Some(State::Rows { next, results });
                Ok(Step::More)
            }
        }
    }

    /// One batch in one transaction: claims, upserts, results, progress.
    async fn apply(
        &mut self,
        ctx: &Context,
        mut rows: Vec<ParsedRow>,
        results: &mut ResultsWriter,
    ) -> Result<(), IngestError> {
        let started = Instant::now();
        let mut batch = ctx.store.begin_batch(&self.job.account).await?;
        let records: Vec<BatchRecord<'_>> = rows
            .iter()
            .map(|r| BatchRecord { line: r.line, claim: r.claim.as_deref(), command: r.outcome.as_ref().ok() })
            .collect();
        let outcomes = batch.apply(&self.job.job_id, &self.job.account, self.job.may_update, &records).await?;
        drop(records);
        let applied = Instant::now();
        let progress = &mut self.job.progress;
        for (row, outcome) in rows.iter_mut().zip(&outcomes) {
            if let RecordOutcome::Duplicate(first) = outcome {
                row.mark_duplicate(*first);
            }
        }
        for (row, outcome) in rows.into_iter().zip(outcomes) {
            let customer_ref = row.claim.clone().unwrap_or_default();
            let (status, customer_id, errors) = match (row.outcome, outcome) {
                (Err(errors), _) => (RowStatus::Failed, String::new(), errors),
                (Ok(_), RecordOutcome::Applied(UpsertOutcome::Created(id))) => (RowStatus::Created, id, vec![]),
                (Ok(_), RecordOutcome::Applied(UpsertOutcome::Updated(id))) => (RowStatus::Updated, id, vec![]),
                (Ok(_), RecordOutcome::Applied(UpsertOutcome::Unchanged(id))) => (RowStatus::Unchanged, id, vec![]),
                (Ok(command), RecordOutcome::Applied(UpsertOutcome::RefExists)) => (
                    RowStatus::Failed,
                    String::new(),
                    vec![crate::domain::RowError::new(
                        crate::domain::RowErrorCode::RefExists,
                        "ref",
                        format!(
                            "a customer with ref {} already exists and this login may not update customers",
                            crate::domain::customer::quote(command.customer_ref().as_str())
                        ),
                    )],
                ),
                (Ok(_), other) => unreachable!("a valid record that is not a duplicate is applied: {other:?}"),
            };
            match status {
                RowStatus::Created => progress.created += 1,
                RowStatus::Updated => progress.updated += 1,
                RowStatus::Unchanged => progress.unchanged += 1,
                RowStatus::Failed => progress.failed += 1,
            }
            progress.records_done += 1;
            results
                .write(&RowResult { line: row.line, customer_ref, status, customer_id, errors })
                .map_err(io_err("while writing the results file"))?;
        }
        progress.results_offset = results.flush().map_err(io_err("while writing the results file"))?;
        // On disk before the offset is committed: after a power loss the
        // committed offset never points past the file's end.
        results.sync().map_err(io_err("while writing the results file"))?;
        let written = Instant::now();
        batch.commit(&self.job.job_id, &ctx.owner, &self.job.progress, &clock::now_rfc3339()).await?;
        // After batches 4, 8, 16, ...: statistics within 2x of what a large
        // upload has grown the tables to; small uploads never pay for it.
        let batches = self.job.progress.records_done.div_ceil(ctx.batch_size.max(1) as u64);
        if batches >= 4 && batches.is_power_of_two() {
            ctx.store.refresh_statistics().await?;
        }
        tracing::debug!(job_id = %self.job.job_id, records = self.job.progress.records_done,
            apply_ms = (applied - started).as_millis() as u64, results_ms = (written - applied).as_millis() as u64,
            commit_ms = written.elapsed().as_millis() as u64, "batch committed");
        Ok(())
    }

    /// Publishes the results, then the summary, archives the upload and
    /// records the end. Every step can be redone after a crash.
    async fn finish(&mut self, ctx: &Context, rejection: Option<FileError>) -> Result<Summary, IngestError> {
        let layout = &ctx.layout;
        let job = &mut self.job;
        let spool = layout.spool(&job.job_id);
        let results_path = spool.join("results.csv");
        let stem = report_stem(&job.file_name).to_owned();
        layout.ensure_account(&job.account).map_err(io_err("while creating the account's folders"))?;
        if let Some(error) = &rejection {
            std::fs::create_dir_all(&spool).map_err(io_err("while creating the job's spool"))?;
            let results = ResultsWriter::open(&results_path, 0).map_err(io_err("while writing the results file"))?;
            results.finish().map_err(io_err("while writing the results file"))?;
            job.status = JobStatus::Rejected;
            job.progress = Default::default();
            job.error_code = Some(error.code.code().to_owned());
            job.error_message = Some(error.message.clone());
        } else if job.status != JobStatus::Rejected {
            job.status = JobStatus::Completed;
        }
        let summary_path = layout.outbox(&job.account).join(format!("{stem}.summary.json"));
        let published = std::fs::read(&summary_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Summary>(&bytes).ok())
            .filter(|s| s.job_id == job.job_id);
        let summary = match published {
            // A restart after the report was published: it is the record.
            Some(summary) if rejection.is_none() => {
                job.status = if summary.status == JobStatus::Rejected.as_str() {
                    JobStatus::Rejected
                } else {
                    JobStatus::Completed
                };
                job.finished_at = Some(summary.finished_at.clone());
                job.error_code = summary.error.as_ref().map(|e| e.code.clone());
                job.error_message = summary.error.as_ref().map(|e| e.message.clone());
                summary
            }
            _ => {
                // An older upload's summary must not stand beside this upload's results.
                let _ = std::fs::remove_file(&summary_path);
                if results_path.exists() {
                    std::fs::rename(&results_path, layout.outbox(&job.account).join(format!("{stem}.results.csv")))
                        .map_err(io_err("while publishing the results file"))?;
                }
                let finished_at = clock::now_rfc3339();
                job.finished_at = Some(finished_at.clone());
                let summary = Summary {
                    account: job.account.clone(),
                    file: job.file_name.clone(),
                    job_id: job.job_id.clone(),
                    sha256: job.sha256.clone(),
                    bytes: job.bytes,
                    status: job.status.as_str().to_owned(),
                    rows: job.progress.records_done,
                    created: job.progress.created,
                    updated: job.progress.updated,
                    unchanged: job.progress.unchanged,
                    failed: job.progress.failed,
                    received_at: job.received_at.clone(),
                    started_at: job.started_at.clone().unwrap_or_else(|| finished_at.clone()),
                    finished_at,
                    error: job.error_code.as_ref().map(|code| SummaryError {
                        code: code.clone(),
                        message: job.error_message.clone().unwrap_or_default(),
                    }),
                };
                let json = serde_json::to_vec_pretty(&summary).expect("a summary serialises");
                publish_atomically(&summary_path, &json).map_err(io_err("while publishing the summary"))?;
                summary
            }
        };
        let upload = PathBuf::from(&job.spool_path);
        if upload.exists() {
            let archived = format!(
                "{}-{}-{}",
                clock::compact(&job.received_at),
                &job.job_id[job.job_id.len().saturating_sub(8)..],
                job.file_name
            );
            std::fs::rename(&upload, layout.archive(&job.account).join(archived))
                .map_err(io_err("while archiving the upload"))?;
        }
        ctx.store.finish_job(job, &ctx.owner).await?;
        let _ = std::fs::remove_dir_all(&spool);
        tracing::info!(account = %job.account, file = %job.file_name, job_id = %job.job_id,
            status = job.status.as_str(), rows = summary.rows, created = summary.created, updated = summary.updated,
            unchanged = summary.unchanged, failed = summary.failed,
            error = job.error_code.as_deref().unwrap_or(""),
            duration_ms = self.started.elapsed().as_millis() as u64, "job finished");
        Ok(summary)
    }
}

/// Who is behind an upload, which decides whether existing refs may be updated.
pub enum Uploader {
    /// An operator (`intake ingest`): as given.
    Operator { may_update: bool },
    /// A file in `/customers`: the SFTP login recorded on it by intake's SFTP
    /// server, or none (another server or an operator placed it: may update).
    Recorded,
}

/// Makes a job of a complete upload: records it (`arriving`), then moves (or
/// copies) the file into the job's spool, so a new upload of the same name
/// never disturbs it, then reads who uploaded it from the spooled file and
/// queues the job. A crash in between is settled by `recover_arriving`.
pub async fn enqueue(
    ctx: &Context,
    account: &str,
    source: &std::path::Path,
    file_name: &str,
    uploader: Uploader,
    copy: bool,
) -> Result<Job, IngestError> {
    let job_id = uuid::Uuid::now_v7().to_string();
    let spool = ctx.layout.spool(&job_id);
    let upload = spool.join("upload.csv");
    let new = crate::store::NewJob {
        job_id: job_id.clone(),
        account: account.to_owned(),
        file_name: file_name.to_owned(),
        spool_path: upload.to_string_lossy().into_owned(),
        sha256: String::new(),
        bytes: 0,
        received_at: clock::now_rfc3339(),
        uploader: None,
        may_update: false,
    };
    ctx.store.create_job(&new).await?;
    let moved = std::fs::create_dir_all(&spool).and_then(|()| {
        if copy {
            // Copied aside, then renamed: a partial copy never looks complete.
            let part = spool.join("upload.csv.part");
            std::fs::copy(source, &part)?;
            std::fs::File::open(&part)?.sync_all()?;
            std::fs::rename(&part, &upload)
        } else {
            std::fs::rename(source, &upload)
        }
    });
    if let Err(e) = moved {
        let _ = std::fs::remove_dir_all(&spool);
        ctx.store.delete_job(&job_id).await?;
        return Err(io_err(format!("while taking the upload {file_name}"))(e));
    }
    let (who, may_update) = match uploader {
        Uploader::Operator { may_update } => (None, may_update),
        Uploader::Recorded => recorded_uploader(ctx, &upload).await,
    };
    ctx.store.mark_queued(&job_id, who.as_deref(), may_update).await?;
    Ok(ctx.store.get_job(&job_id).await?.expect("the job was just created"))
}

/// The login recorded on a spooled upload and whether it may update;
/// anything unreadable fails closed (no updates).
async fn recorded_uploader(ctx: &Context, upload: &std::path::Path) -> (Option<String>, bool) {
    match crate::layout::uploader(upload) {
        Ok(None) => (None, true),
        Ok(Some(username)) => match ctx.store.find_user(&username).await {
            Ok(Some(user)) => (Some(username), user.scopes.update),
            Ok(None) => (Some(username), false),
            Err(e) => {
                tracing::warn!(user = %username, error = %e, "cannot look up the uploader's scopes; no updates");
                (Some(username), false)
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read who uploaded a file; no updates");
            (None, false)
        }
    }
}

/// Settles jobs left `arriving` by a crash between recording a job and moving
/// its upload: queued if the upload reached the spool, forgotten otherwise
/// (the file is still in `/customers` and is picked up again).
pub async fn recover_arriving(ctx: &Context, older_than: &str) -> Result<(), IngestError> {
    for job in ctx.store.arriving_jobs().await? {
        if job.received_at.as_str() >= older_than {
            continue;
        }
        if std::path::Path::new(&job.spool_path).exists() {
            let (who, may_update) = recorded_uploader(ctx, std::path::Path::new(&job.spool_path)).await;
            ctx.store.mark_queued(&job.job_id, who.as_deref(), may_update).await?;
        } else {
            let _ = std::fs::remove_dir_all(ctx.layout.spool(&job.job_id));
            ctx.store.delete_job(&job.job_id).await?;
        }
    }
    Ok(())
}
