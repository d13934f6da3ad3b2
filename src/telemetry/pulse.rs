//! Whether this process's workers can take jobs: each worker round asks the
//! database for due jobs; readiness fails once those requests have failed
//! for longer than [`CLAIMS_FAILING_LIMIT`] (a store that cannot begin a
//! transaction, a wedged pool), even while a read still answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long taking jobs may fail before `/readyz` says so.
pub const CLAIMS_FAILING_LIMIT: Duration = Duration::from_secs(60);

/// Unix milliseconds of the first failed request since the last good one; 0: none.
static FAILING_SINCE: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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
