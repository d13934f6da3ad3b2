//! Whether this process's workers can take jobs: each worker round asks the
//! database for due jobs; health and readiness fail once those requests
//! have failed for longer than [`CLAIMS_FAILING_LIMIT`] (a store that cannot
//! begin a transaction, a wedged pool), even while a read still answers, and
//! once no worker has asked at all for [`CLAIMS_STALLED_LIMIT`] (every
//! worker stuck: a worker asks between two batches of a job).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long taking jobs may fail before `/readyz` says so.
pub const CLAIMS_FAILING_LIMIT: Duration = Duration::from_secs(60);

/// How long no worker may ask for due jobs before health says so: a batch
/// (one step of a job) never takes this long.
pub const CLAIMS_STALLED_LIMIT: Duration = Duration::from_secs(300);

/// Unix milliseconds of the first failed request since the last good one; 0: none.
static FAILING_SINCE: AtomicU64 = AtomicU64::new(0);
/// Unix milliseconds of the last request for due jobs; 0: no worker runs.
static LAST_ASKED: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A worker asks for due jobs.
pub fn claims_asked() {
    LAST_ASKED.store(now_ms(), Ordering::Relaxed);
}

/// How long since a worker last asked for due jobs, when workers run.
pub fn claims_quiet_for() -> Option<Duration> {
    match LAST_ASKED.load(Ordering::Relaxed) {
        0 => None,
        at => Some(Duration::from_millis(now_ms().saturating_sub(at))),
    }
}

/// What is wrong with taking jobs, if anything: requests failing for
/// [`CLAIMS_FAILING_LIMIT`], or none made for [`CLAIMS_STALLED_LIMIT`].
pub fn jobs_problem() -> Option<String> {
    if let Some(failing) = claims_failing_for().filter(|f| *f >= CLAIMS_FAILING_LIMIT) {
        return Some(format!("no job could be taken from the database for {} s", failing.as_secs()));
    }
    if let Some(quiet) = claims_quiet_for().filter(|q| *q >= CLAIMS_STALLED_LIMIT) {
        return Some(format!("no worker has asked for due jobs for {} s (workers stuck)", quiet.as_secs()));
    }
    None
}

/// A worker's request for due jobs answered.
pub fn claims_answered() {
    FAILING_SINCE.store(0, Ordering::Relaxed);
}

/// A worker's request for due jobs failed.
pub fn claims_failed() {
    let _ = FAILING_SINCE.compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
}

/// How long taking jobs has been failing, if it is.
pub fn claims_failing_for() -> Option<Duration> {
    match FAILING_SINCE.load(Ordering::Relaxed) {
        0 => None,
        since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
    }
}
