//! Runs one upload job, one batch at a time: parse records, claim refs, upsert,
//! append the results, and commit the batch's upserts together with the job's
//! progress, so a job resumed after a crash neither redoes nor miscounts rows.
//! Where a job stands is stored with it (`JobPhase`): a resumed job reads
//! that, it never guesses from which files exist. How it ends is `publish`'s.
//! The runner holds the job's lease (its right to change the job), the job
//! as it was read, and the progress it has committed since.

use super::context::{
    account_settings, blocking, io_err, job_settings, opening, ChunkLimits, Context, IngestError, CHUNK_VALUES,
};
use super::progress::{self, ProgressState};
use super::publish::{self, Ending};
use super::report::{ResultsWriter, RowResult, RowStatus};
use super::rows::{scan_with, FileLimits, ParsedRow, RowReader};
use super::thread::{JobThread, Pending};
use super::upsert::{self, BatchRecord, RecordOutcome, UpsertOutcome, Writes};
use crate::clock;
use crate::domain::mapping::MappingChoice;
use crate::domain::{AccountSettings, FileError, Summary};
use crate::store::{Claimed, Job, JobLease, JobPhase, JobProgress, StoreError};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a step left to do.
pub enum Step {
    /// The job goes on: step it again.
    More(Box<JobRunner>),
    /// The job has ended; its report is published.
    Done(Box<Summary>),
}

/// An upload's records, read from its content (decompressed if need be).
pub(crate) type Rows = RowReader<Box<dyn Read + Send>>;

/// The rows of one chunk, and how far into the upload they reach.
struct ReadBatch {
    rows: Vec<ParsedRow>,
    /// Their bytes in the upload.
    bytes: usize,
    /// Bytes of the upload read once its last row was (the reader's buffers ahead).
    consumed: u64,
}

/// An open upload: its records, and how many of its bytes were read.
struct Upload {
    rows: Box<Rows>,
    consumed: Arc<AtomicU64>,
}

/// The next chunk, read and parsed on the job's reading thread while the
/// current one is written to the database.
type NextBatch = Pending<(Upload, std::io::Result<ReadBatch>)>;

fn read_batch(reader: &JobThread, mut upload: Upload, limits: ChunkLimits) -> NextBatch {
    reader.run(move || {
        let mut rows = Vec::with_capacity(limits.rows.min(8192));
        let (mut bytes, mut values) = (0, 0);
        while rows.len() < limits.rows && bytes < limits.bytes && values < CHUNK_VALUES {
            match upload.rows.next_row() {
                Ok(Some(row)) => {
                    bytes += row.bytes;
                    values += row.values();
                    rows.push(row);
                }
                Ok(None) => break,
                Err(e) => return (upload, Err(e)),
            }
        }
        let consumed = upload.consumed.load(Ordering::Relaxed);
        (upload, Ok(ReadBatch { rows, bytes, consumed }))
    })
}

/// The results file, written on the job's results thread while the job
/// applies its next chunk: formatting and writing a chunk's results (and
/// freeing its rows) is off the path between one database round trip and the
/// next.
struct Results {
    thread: JobThread,
    writer: Option<Box<ResultsWriter>>,
    pending: Option<Pending<(Box<ResultsWriter>, std::io::Result<()>)>>,
}

impl Results {
    fn new(thread: JobThread, writer: ResultsWriter) -> Results {
        Results { thread, writer: Some(Box::new(writer)), pending: None }
    }

    /// The writer, once what was handed to it is written.
    async fn ready(&mut self) -> Result<&mut ResultsWriter, IngestError> {
        if let Some(pending) = self.pending.take() {
            let (writer, written) = pending.await?;
            self.writer = Some(writer);
            written.map_err(io_err("while writing the results file"))?;
        }
        Ok(self.writer.as_mut().expect("the results writer is here or pending"))
    }

    /// Appends `rows` on the results thread (`ready` waits for it).
    async fn write(&mut self, rows: Vec<RowResult>) -> Result<(), IngestError> {
        self.ready().await?;
        let mut writer = self.writer.take().expect("the results writer is here");
        self.pending = Some(self.thread.run(move || {
            let written = rows.iter().try_for_each(|r| writer.write(r));
            (writer, written)
        }));
        Ok(())
    }

    /// Flushes what was handed to it and waits until it is on disk, on the
    /// results thread (an fsync takes up to a few hundred milliseconds on a
    /// busy disk: not on the runtime's threads); the file's length then.
    async fn sync(&mut self) -> Result<u64, IngestError> {
        self.ready().await?;
        let mut writer = self.writer.take().expect("the results writer is here");
        let (writer, synced) = self
            .thread
            .run(move || {
                let synced = writer.flush().and_then(|length| writer.sync().map(|()| length));
                (writer, synced)
            })
            .await?;
        self.writer = Some(writer);
        synced.map_err(io_err("while writing the results file"))
    }

    /// Flushes everything to disk.
    async fn finish(mut self) -> Result<(), IngestError> {
        self.ready().await?;
        let writer = self.writer.take().expect("the results writer is here");
        self.thread.run(move || writer.finish()).await?.map_err(io_err("while writing the results file"))
    }
}

/// How often a running job's progress file is brought up to date, at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

enum State {
    Rows {
        reader: JobThread,
        next: NextBatch,
        results: Results,
    },
    /// No record is left, or the file is rejected: decide, then publish.
    Ending(Ending),
    /// Decided (possibly before a restart): publish.
    Publishing(Box<Summary>),
}

/// One job in progress.
pub struct JobRunner {
    lease: JobLease,
    /// As read when the runner opened it (after its first pass).
    job: Job,
    /// Committed so far.
    progress: JobProgress,
    /// Taken while a step runs.
    state: Option<State>,
    /// When the progress file was last published.
    progress_at: Option<Instant>,
    /// What its earlier chunks told it.
    hints: upsert::Hints,
}

impl JobRunner {
    /// Opens a claimed job where it stands: a decided one is published; on
    /// its first run, the first pass (hash, size, record count, rejection);
    /// a resumed one skips the records already committed and truncates the
    /// results to what was committed with them.
    pub async fn open(ctx: &Context, claimed: Claimed) -> Result<JobRunner, IngestError> {
        let Claimed { lease, mut job } = claimed;
        if job.phase == JobPhase::Publishing {
            let summary = publish::decided(&job)?;
            return Ok(JobRunner::new(lease, job, State::Publishing(Box::new(summary))));
        }
        // A first pass reads with the account's settings as they are now and
        // keeps them with the job; a resumed job reads as it began.
        let fresh = job.progress.records_done == 0;
        let mut account =
            if fresh { account_settings(ctx, &job.account).await? } else { job_settings(ctx, &job).await? };
        if fresh {
            // The profiles as they are now; the one the file is read with is
            // kept with the job (a profile changed or removed later does not
            // change it).
            // One asked for (an HTTP bulk job's `mapping`) applies as if
            // its `files` glob matched the file's name.
            let spool = Path::new(&job.spool_path).parent().unwrap_or(Path::new(&job.spool_path));
            let requested = super::mappings::requested(spool).map_err(|e| {
                io_err(format!("while reading the mapping profile kept for job {}", job.job_id))(std::io::Error::other(
                    e,
                ))
            })?;
            if let Some(profile) = requested {
                account.mapping =
                    MappingChoice::Chosen(crate::domain::mapping::AppliedMapping { profile, ignored: Vec::new() });
            } else {
                let profiles = super::mappings::candidates(&ctx.store, &job.account).await?;
                if !profiles.is_empty() {
                    account.mapping =
                        MappingChoice::Select { file_name: job.file_name.clone(), profiles: Arc::new(profiles) };
                }
            }
        }
        let bom = account.report_bom;
        let upload = PathBuf::from(&job.spool_path);
        let reading = format!("while reading upload {} of job {}", job.file_name, job.job_id);
        let pgp = opening(ctx, &account, &upload).await?;
        if fresh {
            let (path, acct, limits, keys) = (upload.clone(), account.clone(), ctx.limits, pgp.clone());
            let scanned =
                blocking(reading.clone(), move || scan_with(File::open(&path)?, &acct, limits, &keys)).await?;
            let now = clock::now();
            account.mapping = scanned.mapping.clone().map_or(MappingChoice::Unmapped, MappingChoice::Chosen);
            account.pgp_signer = scanned.pgp_signer.clone();
            let settings = account.snapshot();
            let pass = crate::store::FirstPass {
                sha256: &scanned.sha256,
                bytes: scanned.bytes,
                rows_total: scanned.records,
                started_at: now,
                settings: &settings,
            };
            ctx.store.start_job(&lease, &pass).await?;
            job = ctx.store.get_job(&job.job_id).await?.ok_or_else(|| StoreError::NotFound(job.job_id.to_string()))?;
            if let Some(error) = scanned.rejection {
                return Ok(JobRunner::new(lease, job, State::Ending(Ending::Rejected(error))));
            }
        }
        tracing::info!(account = %job.account, file = %job.file_name, job_id = %job.job_id,
            rows = job.rows_total, resumed_at = job.progress.records_done, attempt = job.attempts, "job started");
        let (path, acct, skip, limits) = (upload, account, job.progress.records_done, ctx.limits);
        let opened = blocking(reading, move || open_reader(&path, acct, limits, skip, &pgp)).await?;
        let upload = match opened {
            Ok(upload) => upload,
            Err(rejection) => return Ok(JobRunner::new(lease, job, State::Ending(Ending::Rejected(rejection)))),
        };
        let (results_file, offset) = (publish::results_path(ctx, &job), job.progress.results_offset);
        let (spool, adopt_ctx, adopt_job) = (ctx.layout.spool(&job.job_id), ctx.clone(), job.clone());
        let writer = blocking("while opening the results file", move || {
            std::fs::create_dir_all(&spool)?;
            publish::adopt_results(&adopt_ctx, &adopt_job)?;
            ResultsWriter::open(&results_file, offset, bom)
        })
        .await?;
        let threads = JobThread::spawn("intake-read").and_then(|r| Ok((r, JobThread::spawn("intake-results")?)));
        let (reader, results) = threads.map_err(io_err("while starting the job's threads"))?;
        let results = Results::new(results, writer);
        progress::publish_owned(
            ctx,
            &job,
            &job.progress,
            ProgressState::Running,
            upload.consumed.load(Ordering::Relaxed),
        )
        .await;
        let next = read_batch(&reader, upload, ctx.batch.chunk(0, 0));
        let mut runner = JobRunner::new(lease, job, State::Rows { reader, next, results });
        runner.progress_at = Some(Instant::now());
        if fresh {
            runner.hints = upsert::Hints::fresh(runner.job.rows_total);
        }
        Ok(runner)
    }

    fn new(lease: JobLease, job: Job, state: State) -> JobRunner {
        let progress = job.progress;
        JobRunner { lease, job, progress, state: Some(state), progress_at: None, hints: upsert::Hints::default() }
    }

    /// The job as it was opened (its progress as committed then).
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// Records processed and committed so far.
    pub fn records_done(&self) -> u64 {
        self.progress.records_done
    }

    /// Processes one batch, or ends the job when no record is left.
    pub async fn step(mut self, ctx: &Context) -> Result<Step, IngestError> {
        match self.state.take().expect("a runner always has a state between steps") {
            State::Ending(ending) => {
                let summary = publish::decide(ctx, &self.lease, ending).await?;
                self.state = Some(State::Publishing(Box::new(summary)));
                Ok(Step::More(Box::new(self)))
            }
            State::Publishing(summary) => {
                publish::publish(ctx, self.lease, &summary).await?;
                Ok(Step::Done(summary))
            }
            State::Rows { reader, mut next, mut results } => {
                // One batch: chunks applied in one transaction until a bound is met.
                let mut batch: Option<OpenBatch> = None;
                loop {
                    let (upload, read) = next.await?;
                    let read = read.map_err(io_err(format!("while reading upload {}", self.job.file_name)))?;
                    if read.rows.is_empty() {
                        if let Some(open) = batch.take() {
                            self.commit(ctx, open, &mut results).await?;
                        }
                        results.finish().await?;
                        self.state = Some(State::Ending(Ending::Completed));
                        return Ok(Step::More(Box::new(self)));
                    }
                    let mut open = match batch.take() {
                        Some(open) => open,
                        None => OpenBatch::begin(ctx, &self.job.account, self.progress).await?,
                    };
                    let (rows, bytes) = (open.rows + read.rows.len(), open.bytes + read.bytes);
                    let full = rows >= ctx.batch.rows || bytes >= ctx.batch.bytes;
                    // Parsed while this chunk is written.
                    next = read_batch(
                        &reader,
                        upload,
                        if full { ctx.batch.chunk(0, 0) } else { ctx.batch.chunk(rows, bytes) },
                    );
                    self.apply_chunk(&mut open, read.rows, &mut results).await?;
                    open.bytes += read.bytes;
                    // Others waiting for the database (SQLite's one writer:
                    // another account's arrival, claim, batch or report) get
                    // it after this chunk, not after the whole batch.
                    if full || ctx.batch_turn_over(open.started.elapsed()) {
                        self.commit(ctx, open, &mut results).await?;
                        if self.progress_at.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
                            progress::publish_owned(
                                ctx,
                                &self.job,
                                &self.progress,
                                ProgressState::Running,
                                read.consumed,
                            )
                            .await;
                            self.progress_at = Some(Instant::now());
                        }
                        self.state = Some(State::Rows { reader, next, results });
                        return Ok(Step::More(Box::new(self)));
                    }
                    batch = Some(open);
                }
            }
        }
    }

    /// Applies one chunk of records in the open batch: claims, upserts,
    /// results (written, not yet committed).
    async fn apply_chunk(
        &mut self,
        open: &mut OpenBatch,
        mut rows: Vec<ParsedRow>,
        results: &mut Results,
    ) -> Result<(), IngestError> {
        let started = Instant::now();
        let records: Vec<BatchRecord<'_>> = rows
            .iter()
            .map(|r| BatchRecord { line: r.line, claim: r.claim.as_deref(), command: r.outcome.as_ref().ok() })
            .collect();
        let writes = if self.job.kind.is_dry_run() { Writes::DryRun } else { Writes::Apply };
        let (job_id, account, scopes) = (&self.job.job_id, &self.job.account, self.job.scopes);
        let outcomes =
            upsert::apply(&mut open.batch, job_id, account, scopes, &records, writes, &mut self.hints).await?;
        drop(records);
        open.apply_time += started.elapsed();
        let written = Instant::now();
        for (row, outcome) in rows.iter_mut().zip(&outcomes) {
            if let RecordOutcome::Duplicate(first) = outcome {
                row.mark_duplicate(*first);
            }
        }
        let progress = &mut open.progress;
        let mut chunk = Vec::with_capacity(rows.len());
        for (row, outcome) in rows.into_iter().zip(outcomes) {
            fault_injection::at_ref(row.claim.as_deref());
            let result = row_result(row, outcome);
            match result.status {
                RowStatus::Created => progress.created += 1,
                RowStatus::Updated => progress.updated += 1,
                RowStatus::Unchanged => progress.unchanged += 1,
                RowStatus::Failed => progress.failed += 1,
            }
            progress.records_done += 1;
            open.rows += 1;
            chunk.push(result);
        }
        results.write(chunk).await?;
        open.results_time += written.elapsed();
        Ok(())
    }

    /// Commits the batch: its upserts with the results written so far (on
    /// disk first) and the job's progress, in one transaction.
    async fn commit(&mut self, ctx: &Context, open: OpenBatch, results: &mut Results) -> Result<(), IngestError> {
        let OpenBatch { batch, mut progress, started, apply_time, results_time, .. } = open;
        let synced = Instant::now();
        // On disk before the offset is committed: after a power loss the
        // committed offset never points past the file's end.
        progress.results_offset = results.sync().await?;
        let written = Instant::now();
        batch.commit(&self.lease, &progress).await?;
        crate::telemetry::metrics().batch_committed(written.elapsed());
        let before = self.progress.records_done;
        self.progress = progress;
        // Once 20k, 40k, 80k, ... records are in: statistics within 2x of
        // what a large upload has grown the tables to; small uploads never
        // pay for it.
        let threshold = |records: u64| (records / STATISTICS_FIRST).checked_ilog2();
        if progress.records_done >= STATISTICS_FIRST && threshold(before) != threshold(progress.records_done) {
            ctx.store.refresh_statistics().await?;
        }
        tracing::debug!(job_id = %self.job.job_id, records = progress.records_done,
            batch_ms = started.elapsed().as_millis() as u64, apply_ms = apply_time.as_millis() as u64,
            results_ms = (results_time + (written - synced)).as_millis() as u64,
            commit_ms = written.elapsed().as_millis() as u64, "batch committed");
        Ok(())
    }
}

/// Records after which the planner's statistics are first refreshed, then
/// at each doubling.
const STATISTICS_FIRST: u64 = 20_000;

/// A batch being applied: its transaction and what it has done so far.
struct OpenBatch {
    batch: crate::store::Batch,
    /// The job's progress once this batch commits.
    progress: JobProgress,
    rows: usize,
    bytes: usize,
    started: Instant,
    apply_time: Duration,
    results_time: Duration,
}

impl OpenBatch {
    async fn begin(ctx: &Context, account: &str, progress: JobProgress) -> Result<OpenBatch, IngestError> {
        Ok(OpenBatch {
            batch: ctx.store.begin_batch(account).await?,
            progress,
            rows: 0,
            bytes: 0,
            started: Instant::now(),
            apply_time: Duration::ZERO,
            results_time: Duration::ZERO,
        })
    }
}

/// Opens the upload for reading rows, past the `skip` records already done.
fn open_reader(
    path: &Path,
    account: AccountSettings,
    limits: FileLimits,
    skip: u64,
    pgp: &Arc<crate::openpgp::Opening>,
) -> std::io::Result<Result<Upload, FileError>> {
    let content = super::upload::open(File::open(path)?, limits.max_gzip_ratio, pgp)?;
    let mut rows = match RowReader::open(content.reader, account, limits)? {
        Ok(rows) => Box::new(rows),
        Err(e) => return Ok(Err(e)),
    };
    for _ in 0..skip {
        rows.skip_row()?;
    }
    Ok(Ok(Upload { rows, consumed: content.consumed }))
}

/// A record's line in the results.
fn row_result(row: ParsedRow, outcome: RecordOutcome) -> RowResult {
    let ParsedRow { line, claim, outcome: parsed, .. } = row;
    let customer_ref = claim.unwrap_or_default();
    let (status, customer_id, errors) = match (parsed, outcome) {
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
    RowResult { line, customer_ref, status, customer_id, errors }
}

/// A test-only fault: debug builds panic (abort, stop) the process at the row
/// whose ref is named in `INTAKE_TEST_PANIC_AT_REF` (`INTAKE_TEST_ABORT_AT_REF`,
/// `INTAKE_TEST_STOP_AT_REF`),
/// so tests can prove that one job's fault stays in that job. Release
/// builds have no such hook.
mod fault_injection {
    #[cfg(debug_assertions)]
    pub(super) fn at_ref(claim: Option<&str>) {
        let Some(claim) = claim else { return };
        if std::env::var("INTAKE_TEST_PANIC_AT_REF").is_ok_and(|r| r == claim) {
            panic!("fault injected at ref {claim}");
        }
        if std::env::var("INTAKE_TEST_ABORT_AT_REF").is_ok_and(|r| r == claim) {
            eprintln!("fault injected at ref {claim}: aborting the process");
            std::process::abort();
        }
        // A process frozen (SIGSTOP) after its batch's upserts, before its
        // results: once per marker file, whichever process gets there first.
        if std::env::var("INTAKE_TEST_STOP_AT_REF").is_ok_and(|r| r == claim) {
            let marker = std::env::var("INTAKE_TEST_STOP_MARKER").unwrap_or_default();
            if std::fs::OpenOptions::new().write(true).create_new(true).open(&marker).is_ok() {
                eprintln!("fault injected at ref {claim}: stopping the process");
                let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP);
            }
        }
    }

    #[cfg(not(debug_assertions))]
    pub(super) fn at_ref(_claim: Option<&str>) {}
}
