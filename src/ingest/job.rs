//! Runs one upload job, one batch at a time: parse records, claim refs, upsert,
//! append the results, and commit the batch's upserts together with the job's
//! progress, so a job resumed after a crash neither redoes nor miscounts rows.
//! Where a job stands is stored with it (`JobPhase`): a resumed job reads
//! that, it never guesses from which files exist. How it ends is `publish`'s.

use super::progress::{self, ProgressState};
use super::publish::{self, Ending};
use super::report::{ResultsWriter, RowResult, RowStatus, Summary};
use super::rows::{scan, FileLimits, ParsedRow, RowReader};
use super::thread::{JobThread, Pending};
use super::upsert::{self, BatchRecord, RecordOutcome, UpsertOutcome, Writes};
use crate::clock;
use crate::config::Config;
use crate::domain::user::Scopes;
use crate::domain::{AccountId, AccountSettings, FileError, JobId};
use crate::mailbox::Layout;
use crate::store::{Job, JobKind, JobPhase, Store, StoreError};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("a worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("a bug in intake: {0}")]
    Panic(String),
}

/// The settings of a job's account; an account removed since the upload
/// arrived reads its files with the defaults.
pub(crate) async fn account_settings(ctx: &Context, account: &str) -> Result<AccountSettings, IngestError> {
    match ctx.store.get_account(account).await? {
        Some(settings) => Ok(settings),
        None => AccountId::parse(account)
            .map(AccountSettings::new)
            .map_err(|e| IngestError::Store(StoreError::Corrupt(e.to_string()))),
    }
}

/// The settings a job reads and reports its file with: those kept when its
/// first pass began, or (a job from before they were kept) the account's.
pub(crate) async fn job_settings(ctx: &Context, job: &Job) -> Result<AccountSettings, IngestError> {
    match &job.settings {
        Some(snapshot) => AccountId::parse(&job.account)
            .and_then(|avid| AccountSettings::from_snapshot(avid, snapshot))
            .map_err(|e| IngestError::Store(StoreError::Corrupt(e.to_string()))),
        None => account_settings(ctx, &job.account).await,
    }
}

/// What a failure means for the job it happened to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Another process owns the job now: leave it alone.
    LostOwnership,
    /// Worth another try later (the database is unreachable, the disk full).
    Transient,
    /// Will fail the same way every time: end the job as `aborted`.
    Deterministic,
}

impl IngestError {
    pub fn fault(&self) -> Fault {
        match self {
            IngestError::Store(StoreError::NotOwner(_)) => Fault::LostOwnership,
            IngestError::Store(StoreError::Database(_)) => Fault::Transient,
            IngestError::Store(_) | IngestError::Task(_) | IngestError::Panic(_) => Fault::Deterministic,
            IngestError::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC | libc::EDQUOT | libc::EAGAIN | libc::EINTR | libc::ENOMEM | libc::EMFILE) => {
                    Fault::Transient
                }
                Some(libc::ENFILE | libc::ETIMEDOUT | libc::EBUSY) => Fault::Transient,
                _ => Fault::Deterministic,
            },
        }
    }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> IngestError {
    let what = what.into();
    move |source| IngestError::Io { what, source }
}

/// How often a job is tried before it is given up as `aborted`.
#[derive(Debug, Clone, Copy)]
pub struct JobPolicy {
    /// Starts of processing without committed progress in between (each
    /// one ended by a crash) after which the job is aborted, not resumed.
    pub max_attempts: u32,
    /// Transient failures in a row (retried with exponential backoff)
    /// after which the job is aborted.
    pub max_retries: u32,
}

/// How a batch (one transaction: its upserts, results and progress commit
/// together) is bounded: by records, by their bytes and by time. A batch is
/// read and applied in chunks of at most [`CHUNK_ROWS`] records and
/// [`CHUNK_BYTES`], so memory stays bounded whatever the batch's size; the
/// time bound keeps commits (and so progress files and the other jobs'
/// turns) coming at least about once a second.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub rows: usize,
    pub bytes: usize,
    pub time: Duration,
}

/// Records read and parsed at once, at most: one chunk is applied while the
/// next is parsed and the last one's results are written. A record in flight
/// costs a few KiB of heap (its parsed form, the row made of it, its results
/// line), and a job has three chunks in flight (one parsed, one applied, one's
/// results written). 2,500 rather than 5,000 took 8–11 MiB off the peak RSS
/// and kept it flat from 1 M to 10 M rows; the same speed on SQLite, 3 %
/// less on PostgreSQL (9 % on short, all-valid rows through the daemon).
/// BENCHMARKS.md, issue 10.
pub const CHUNK_ROWS: usize = 2_500;
/// Bytes of records read and parsed at once, at most (one record past it).
pub const CHUNK_BYTES: usize = 2 * 1024 * 1024;

impl BatchLimits {
    /// How much the next chunk may hold, when `rows` records of `bytes`
    /// are in the batch it goes into (0, 0: a new batch).
    fn chunk(&self, rows: usize, bytes: usize) -> ChunkLimits {
        ChunkLimits {
            rows: CHUNK_ROWS.min(self.rows.saturating_sub(rows)).max(1),
            bytes: CHUNK_BYTES.min(self.bytes.saturating_sub(bytes)).max(1),
        }
    }
}

/// How much one chunk of a batch may hold.
#[derive(Debug, Clone, Copy)]
struct ChunkLimits {
    rows: usize,
    bytes: usize,
}

/// What every job needs.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub layout: Layout,
    pub limits: FileLimits,
    /// One transaction each.
    pub batch: BatchLimits,
    pub policy: JobPolicy,
    /// This process's name in the jobs table.
    pub owner: String,
    /// How often this process says it is alive, and after how long without
    /// a word another process takes its jobs over.
    pub heartbeat: Duration,
    pub takeover_after: Duration,
}

impl Context {
    pub fn new(config: &Config, store: Store, owner: String) -> Context {
        Context {
            store,
            layout: Layout::new(&config.data_dir),
            limits: config.file_limits(),
            batch: BatchLimits {
                rows: config.batch_size.max(1),
                bytes: config.batch_max_bytes.max(1),
                time: Duration::from_millis(config.batch_max_millis.max(1)),
            },
            policy: JobPolicy { max_attempts: config.max_job_attempts.max(1), max_retries: config.max_job_retries },
            owner,
            heartbeat: config.cluster.heartbeat(),
            takeover_after: config.cluster.takeover_after(),
        }
    }
}

/// What a step left to do.
pub enum Step {
    More,
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
        let mut bytes = 0;
        while rows.len() < limits.rows && bytes < limits.bytes {
            match upload.rows.next_row() {
                Ok(Some(row)) => {
                    bytes += row.bytes;
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
    job: Job,
    state: Option<State>,
    /// When the progress file was last published.
    progress_at: Option<Instant>,
    /// What its earlier chunks told it.
    hints: upsert::Hints,
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    what: String,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, IngestError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work)).await?.map_err(io_err(what))
}

impl JobRunner {
    /// Opens a claimed job where it stands: a decided one is published; on
    /// its first run, the first pass (hash, size, record count, rejection);
    /// a resumed one skips the records already committed and truncates the
    /// results to what was committed with them.
    pub async fn open(ctx: &Context, mut job: Job) -> Result<JobRunner, IngestError> {
        if job.phase == JobPhase::Publishing {
            let summary = publish::decided(&job)?;
            return Ok(JobRunner::new(job, State::Publishing(Box::new(summary))));
        }
        // A first pass reads with the account's settings as they are now and
        // keeps them with the job; a resumed job reads as it began.
        let fresh = job.progress.records_done == 0;
        let account = if fresh { account_settings(ctx, &job.account).await? } else { job_settings(ctx, &job).await? };
        let bom = account.report_bom;
        let upload = PathBuf::from(&job.spool_path);
        let reading = format!("while reading upload {} of job {}", job.file_name, job.job_id);
        if fresh {
            let (path, acct, limits) = (upload.clone(), account.clone(), ctx.limits);
            let scanned = blocking(reading.clone(), move || scan(File::open(&path)?, &acct, limits)).await?;
            let now = clock::now();
            let settings = account.snapshot();
            let pass = crate::store::FirstPass {
                sha256: &scanned.sha256,
                bytes: scanned.bytes,
                rows_total: scanned.records,
                started_at: now,
                settings: &settings,
            };
            ctx.store.start_job(&job.job_id, &ctx.owner, &pass).await?;
            job.settings = Some(settings);
            job.sha256 = scanned.sha256;
            job.bytes = scanned.bytes;
            job.rows_total = scanned.records;
            job.started_at.get_or_insert(now);
            if let Some(error) = scanned.rejection {
                return Ok(JobRunner::ending(job, Ending::Rejected(error)));
            }
        }
        tracing::info!(account = %job.account, file = %job.file_name, job_id = %job.job_id,
            rows = job.rows_total, resumed_at = job.progress.records_done, attempt = job.attempts, "job started");
        let (path, acct, skip, limits) = (upload, account, job.progress.records_done, ctx.limits);
        let opened = blocking(reading, move || open_reader(&path, acct, limits, skip)).await?;
        let upload = match opened {
            Ok(upload) => upload,
            Err(rejection) => return Ok(JobRunner::ending(job, Ending::Rejected(rejection))),
        };
        let spool = ctx.layout.spool(&job.job_id);
        std::fs::create_dir_all(&spool).map_err(io_err("while creating the job's spool"))?;
        publish::adopt_results(ctx, &job).map_err(io_err("while taking over the committed results"))?;
        let writer = ResultsWriter::open(&publish::results_path(ctx, &job), job.progress.results_offset, bom)
            .map_err(io_err("while opening the results file"))?;
        let threads = JobThread::spawn("intake-read").and_then(|r| Ok((r, JobThread::spawn("intake-results")?)));
        let (reader, results) = threads.map_err(io_err("while starting the job's threads"))?;
        let results = Results::new(results, writer);
        progress::publish_owned(ctx, &job, ProgressState::Running, upload.consumed.load(Ordering::Relaxed)).await;
        let next = read_batch(&reader, upload, ctx.batch.chunk(0, 0));
        let mut runner = JobRunner::new(job, State::Rows { reader, next, results });
        runner.progress_at = Some(Instant::now());
        if fresh {
            runner.hints = upsert::Hints::fresh(runner.job.rows_total);
        }
        Ok(runner)
    }

    fn new(job: Job, state: State) -> JobRunner {
        JobRunner { job, state: Some(state), progress_at: None, hints: upsert::Hints::default() }
    }

    fn ending(job: Job, ending: Ending) -> JobRunner {
        JobRunner::new(job, State::Ending(ending))
    }

    pub fn job(&self) -> &Job {
        &self.job
    }

    /// Processes one batch, or ends the job when no record is left.
    pub async fn step(&mut self, ctx: &Context) -> Result<Step, IngestError> {
        match self.state.take().expect("a finished job is not stepped again") {
            State::Ending(ending) => {
                let summary = publish::decide(ctx, &mut self.job, ending).await?;
                self.state = Some(State::Publishing(Box::new(summary)));
                Ok(Step::More)
            }
            State::Publishing(summary) => {
                publish::publish(ctx, &mut self.job, &summary).await?;
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
                        return Ok(Step::More);
                    }
                    let mut open = match batch.take() {
                        Some(open) => open,
                        None => OpenBatch::begin(ctx, &self.job).await?,
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
                    let elapsed = open.started.elapsed();
                    let others_first = ctx.store.yield_after().is_some_and(|after| elapsed >= after);
                    if full || elapsed >= ctx.batch.time || others_first {
                        self.commit(ctx, open, &mut results).await?;
                        if self.progress_at.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
                            progress::publish_owned(ctx, &self.job, ProgressState::Running, read.consumed).await;
                            self.progress_at = Some(Instant::now());
                        }
                        self.state = Some(State::Rows { reader, next, results });
                        return Ok(Step::More);
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
        batch.commit(&self.job.job_id, &ctx.owner, &progress).await?;
        self.job.results_owner = Some(ctx.owner.clone());
        crate::telemetry::metrics().batch_committed(written.elapsed());
        let before = self.job.progress.records_done;
        self.job.progress = progress;
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
    progress: crate::store::JobProgress,
    rows: usize,
    bytes: usize,
    started: Instant,
    apply_time: Duration,
    results_time: Duration,
}

impl OpenBatch {
    async fn begin(ctx: &Context, job: &Job) -> Result<OpenBatch, IngestError> {
        Ok(OpenBatch {
            batch: ctx.store.begin_batch(&job.account).await?,
            progress: job.progress,
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
) -> std::io::Result<Result<Upload, FileError>> {
    let content = super::upload::open(File::open(path)?, limits.max_gzip_ratio)?;
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
    RowResult { line: row.line, customer_ref, status, customer_id, errors }
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

/// Who is behind an upload, which decides whether existing refs may be updated.
pub enum Uploader {
    /// An operator (`intake ingest`): as given.
    Operator { scopes: Scopes },
    /// A file in `/customers`: the SFTP login recorded on it by intake's SFTP
    /// server, or none (another server or an operator placed it: may update).
    Recorded,
}

/// How an upload gets into its job's spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Copied (an operator's file, which stays theirs).
    Copy,
    /// Moved: the upload leaves `/customers` at once (files placed by another server).
    Move,
    /// Hard-linked: the upload stays visible in `/customers` until its report
    /// is out (clients stat and timestamp a file right after uploading it),
    /// marked as taken so that it is never taken twice.
    Link,
}

/// A complete upload to make a job of.
pub struct Arrival<'a> {
    pub account: &'a str,
    /// Where the upload is.
    pub source: &'a Path,
    /// Its name as the merchant gave it.
    pub file_name: &'a str,
    pub kind: JobKind,
    pub uploader: Uploader,
    pub take: Take,
    /// The job's id when the front end chose it before the file was complete
    /// (an HTTP bulk job); otherwise a new one.
    pub job_id: Option<JobId>,
}

/// Makes a job of a complete upload: records it (`arriving`), then brings
/// the file into the job's spool, so a new upload of the same name never
/// disturbs it, then reads who uploaded it from the spooled file and queues
/// the job (its progress file says so) — or, with `owner`, runs it as that
/// owner's at once. A crash in between is settled by `recover_arriving`.
pub async fn enqueue(ctx: &Context, arrival: Arrival<'_>, owner: Option<&str>) -> Result<Job, IngestError> {
    let Arrival { account, source, file_name, kind, uploader, take, job_id } = arrival;
    let job_id = job_id.unwrap_or_else(JobId::generate);
    let spool = ctx.layout.spool(&job_id);
    let upload = spool.join("upload.csv");
    let new = crate::store::NewJob {
        job_id: job_id.clone(),
        account: account.to_owned(),
        file_name: file_name.to_owned(),
        spool_path: upload.to_string_lossy().into_owned(),
        sha256: String::new(),
        bytes: 0,
        uploader: None,
        scopes: Scopes::CREATE_ONLY,
        source_key: if take == Take::Link {
            Some(source_key(source).map_err(io_err("while taking the upload"))?)
        } else {
            None
        },
        kind,
        owner: Some(ctx.owner.clone()),
    };
    ctx.store.create_job(&new).await?;
    let moved = std::fs::create_dir_all(&spool)
        .and_then(|()| match take {
            Take::Copy => {
                // Copied aside, then renamed: a partial copy never looks complete.
                let part = spool.join("upload.csv.part");
                std::fs::copy(source, &part)?;
                File::open(&part)?.sync_all()?;
                std::fs::rename(&part, &upload)
            }
            Take::Move => std::fs::rename(source, &upload),
            Take::Link => {
                // Marked first: a crash before the link leaves a mark naming a
                // job that `recover_arriving` forgets, and the file is taken again.
                crate::mailbox::set_taken_by(source, &job_id)?;
                std::fs::hard_link(source, &upload)
            }
        })
        .and_then(|()| crate::mailbox::sync_dir(&spool));
    if let Err(e) = moved {
        let _ = std::fs::remove_dir_all(&spool);
        ctx.store.delete_job(&job_id).await?;
        return Err(io_err(format!("while taking the upload {file_name}"))(e));
    }
    if take == Take::Link {
        ctx.store.set_visible(&job_id, Some(&source.to_string_lossy())).await?;
    }
    let (who, scopes) = match uploader {
        Uploader::Operator { scopes } => (None, scopes),
        Uploader::Recorded => recorded_uploader(ctx, &upload).await,
    };
    match owner {
        None => ctx.store.mark_queued(&job_id, who.as_deref(), scopes).await?,
        Some(owner) => ctx.store.mark_running(&job_id, owner, who.as_deref(), scopes).await?,
    }
    let job = ctx.store.get_job(&job_id).await?.ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))?;
    if owner.is_none() {
        progress::publish_or_log(ctx, &job, ProgressState::Queued, 0);
    }
    Ok(job)
}

/// What identifies one visible upload: another upload under the same name
/// is another file (intake's SFTP server publishes by renaming a new file).
fn source_key(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)?;
    Ok(format!("{}:{}:{}.{}:{}", m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// The login recorded on a spooled upload and its scopes; anything
/// unreadable fails closed (no updates). A file no login is recorded on was
/// placed by an operator or another server: all scopes.
async fn recorded_uploader(ctx: &Context, upload: &Path) -> (Option<String>, Scopes) {
    match crate::mailbox::uploader(upload) {
        Ok(None) => (None, Scopes::ALL),
        Ok(Some(username)) => match ctx.store.find_user(&username).await {
            Ok(Some(user)) => (Some(username), user.scopes),
            Ok(None) => (Some(username), Scopes::CREATE_ONLY),
            Err(e) => {
                tracing::warn!(user = %username, error = %e, "cannot look up the uploader's scopes; no updates");
                (Some(username), Scopes::CREATE_ONLY)
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read who uploaded a file; no updates");
            (None, Scopes::CREATE_ONLY)
        }
    }
}

/// Settles jobs left `arriving` by a crash between recording a job and moving
/// its upload: queued if the upload reached the spool, forgotten otherwise
/// (the file is still in `/customers` and is picked up again).
pub async fn recover_arriving(ctx: &Context, older_than: Duration) -> Result<(), IngestError> {
    for job in ctx.store.arriving_jobs(older_than).await? {
        if Path::new(&job.spool_path).exists() {
            let (who, scopes) = recorded_uploader(ctx, Path::new(&job.spool_path)).await;
            ctx.store.mark_queued(&job.job_id, who.as_deref(), scopes).await?;
            progress::publish_or_log(ctx, &job, ProgressState::Queued, 0);
        } else {
            let _ = std::fs::remove_dir_all(ctx.layout.spool(&job.job_id));
            ctx.store.delete_job(&job.job_id).await?;
        }
    }
    Ok(())
}

/// Removes the visible copies of finished jobs' uploads once they have been
/// visible for `keep_visible_secs`: only the copy a job took, never a newer
/// upload that took its name meanwhile.
pub async fn remove_visible_uploads(ctx: &Context, keep_visible_secs: u64) -> Result<(), IngestError> {
    for job in ctx.store.visible_uploads(Duration::from_secs(keep_visible_secs)).await? {
        let Some(path) = job.visible_path.as_deref() else { continue };
        match crate::mailbox::remove_if_taken_by(Path::new(path), &job.job_id) {
            Ok(_) => ctx.store.set_visible(&job.job_id, None).await?,
            Err(e) => tracing::warn!(account = %job.account, file = %job.file_name, job_id = %job.job_id,
                error = %e, "cannot remove the visible copy of a processed upload"),
        }
    }
    Ok(())
}
