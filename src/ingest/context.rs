//! What every step of a job needs (`Context`: the store, the data layout,
//! the limits and the failure policy) and how its failures are classed
//! (`IngestError`, `Fault`). Knows nothing about SFTP.

use crate::config::Config;
use crate::domain::{AccountId, AccountSettings, FileLimits};
use crate::keyring::{Keyring, KeyringError};
use crate::mailbox::Layout;
use crate::openpgp::Opening;
use crate::store::{Job, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

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
    #[error(transparent)]
    Keyring(#[from] KeyringError),
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

/// What opening `account`'s upload at `upload` needs: its keys when the
/// upload is an OpenPGP message or the account has rules about it (the
/// database is asked only then), else no keys.
pub(crate) async fn opening(
    ctx: &Context,
    account: &AccountSettings,
    upload: &std::path::Path,
) -> Result<Arc<Opening>, IngestError> {
    let rules = account.pgp;
    let path = upload.to_owned();
    // An upload already archived (a report published again after a crash)
    // reads as no message: whoever reads it next finds it gone anyway.
    let pgp_upload = blocking("while reading an upload's first bytes", move || {
        use std::io::Read;
        let mut head = Vec::with_capacity(64);
        let read = std::fs::File::open(&path).and_then(|f| f.take(64).read_to_end(&mut head));
        Ok(read.is_ok() && crate::openpgp::looks_like_message(&head))
    })
    .await?;
    if !pgp_upload && !rules.require_encryption {
        return Ok(Arc::new(Opening { require_signature: rules.require_signature, ..Opening::none() }));
    }
    Ok(Arc::new(ctx.keyring.opening(&account.avid, rules).await?))
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
            IngestError::Keyring(KeyringError::Store(StoreError::Database(_))) => Fault::Transient,
            IngestError::Store(_) | IngestError::Task(_) | IngestError::Panic(_) | IngestError::Keyring(_) => {
                Fault::Deterministic
            }
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
    /// How long a batch runs before it commits for the other jobs open in
    /// this process; a job alone on SQLite runs to its rows or bytes, or
    /// [`ALONE`] times this.
    pub time: Duration,
}

/// How many times `batch_max_millis` a batch runs at most on SQLite when no
/// other job is open in this process. Each commit writes every page the
/// batch touched: refs in random order touch most of the `(account, ref)`
/// index in every batch, so fewer commits write it fewer times (BENCHMARKS.md,
/// "CPU per row"). Statements and batches waiting for SQLite's one writer
/// still get it after a chunk, or 250 ms.
pub const ALONE: u32 = 10;

/// Records read and parsed at once, at most: one chunk is applied while the
/// next is parsed and the last one's results are written. A record in flight
/// costs a few KiB of heap (its parsed form, which the row written borrows,
/// its results line), and a job has three chunks in flight (one parsed, one applied, one's
/// results written). 2,500 rather than 5,000 took 8–11 MiB off the peak RSS
/// and kept it flat from 1 M to 10 M rows; the same speed on SQLite, 3 %
/// less on PostgreSQL (9 % on short, all-valid rows through the daemon).
/// BENCHMARKS.md, "Memory".
pub const CHUNK_ROWS: usize = 2_500;
/// Bytes of records read and parsed at once, at most (one record past it).
pub const CHUNK_BYTES: usize = 2 * 1024 * 1024;
/// Values (addresses, metadata and appdata keys) of the records read and
/// parsed at once, at most (one record past it). A parsed value costs about
/// 100 bytes of heap whatever its size in the file, so rows of many short
/// cells are bounded here: 2,500 rows of up to 8 values fit, rows of 20 more
/// metadata columns come about 1,000 at a time (BENCHMARKS.md, file shapes).
pub const CHUNK_VALUES: usize = 20_000;

impl BatchLimits {
    /// Whether a batch that has run `elapsed` commits now: for whoever waits
    /// for the database (`yield_after`), past `time` unless its job is
    /// `alone`, and past [`ALONE`] times `time` at the latest.
    pub fn turn_over(&self, elapsed: Duration, alone: bool, yield_after: Option<Duration>) -> bool {
        let limit = if alone { self.time * ALONE } else { self.time };
        elapsed >= limit || yield_after.is_some_and(|after| elapsed >= after)
    }

    /// How much the next chunk may hold, when `rows` records of `bytes`
    /// are in the batch it goes into (0, 0: a new batch).
    pub(crate) fn chunk(&self, rows: usize, bytes: usize) -> ChunkLimits {
        ChunkLimits {
            rows: CHUNK_ROWS.min(self.rows.saturating_sub(rows)).max(1),
            bytes: CHUNK_BYTES.min(self.bytes.saturating_sub(bytes)).max(1),
        }
    }
}

/// How much one chunk of a batch may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkLimits {
    pub(crate) rows: usize,
    pub(crate) bytes: usize,
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
    /// The accounts' OpenPGP keys (spec §12).
    pub keyring: Keyring,
    /// Wakes this process's workers: a job was queued (by the watcher, or
    /// a front end that queued it itself, as an HTTP bulk job's complete).
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    /// Jobs open in this process (the workers' round-robin): past one, a
    /// batch commits at `batch.time` so the others get their turn.
    pub jobs_open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Context {
    pub fn new(config: &Config, store: Store, owner: String) -> Context {
        Context {
            keyring: Keyring::new(store.clone(), config.pgp_passphrase_path()),
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
            wake: Default::default(),
            jobs_open: Default::default(),
        }
    }

    /// Whether a batch that has run `elapsed` commits now for others: a
    /// statement or another job's batch waiting for SQLite's one writer,
    /// or, past `batch.time`, another job open in this process; alone on
    /// SQLite, it runs to its rows or bytes (at most [`ALONE`] times
    /// `batch.time`).
    pub fn batch_turn_over(&self, elapsed: Duration) -> bool {
        let alone = self.jobs_open.load(std::sync::atomic::Ordering::Relaxed) <= 1;
        self.batch.turn_over(elapsed, alone && self.store.longer_batches_alone(), self.store.yield_after())
    }
}

/// Runs blocking file work (reads, renames, fsyncs) off the runtime's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    what: impl Into<String>,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, IngestError> {
    let (what, span) = (what.into(), tracing::Span::current());
    tokio::task::spawn_blocking(move || span.in_scope(work)).await?.map_err(io_err(what))
}

/// What a caught panic said.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_commits_on_time_only_for_others_and_alone_runs_longer() {
        let limits = BatchLimits { rows: 100_000, bytes: 1 << 25, time: Duration::from_millis(1000) };
        let ms = Duration::from_millis;
        // Alone, with no one waiting for the database: on to ten times the time.
        assert!(!limits.turn_over(ms(1500), true, None));
        assert!(!limits.turn_over(ms(9999), true, None));
        assert!(limits.turn_over(ms(10_000), true, None));
        // Another job open in this process (or PostgreSQL): at the time.
        assert!(!limits.turn_over(ms(999), false, None));
        assert!(limits.turn_over(ms(1000), false, None));
        // Waiting for SQLite's one writer: a statement at once, a batch after its turn.
        assert!(limits.turn_over(ms(1), true, Some(Duration::ZERO)));
        assert!(!limits.turn_over(ms(200), true, Some(ms(250))));
        assert!(limits.turn_over(ms(250), true, Some(ms(250))));
    }
}
