//! Failed logins per source address, counted once for every way in: an
//! SFTP login and an API token are refused alike once a source reached
//! the limit (`[sftp] max_login_failures_per_source` within
//! `login_penalty_secs`). This is the count of one process; on PostgreSQL
//! the store also keeps one all nodes share (`login_penalties`).

use crate::store::Store;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Remembers login failures per source address; a source that reaches the
/// limit within the window is refused until the window has passed, like
/// OpenSSH's `PerSourcePenalties`.
pub struct Penalties {
    max_failures: u32,
    window: Duration,
    sources: Mutex<HashMap<IpAddr, Failures>>,
}

struct Failures {
    count: u32,
    /// Start of the counting window, or of the penalty once the limit is hit.
    since: Instant,
}

impl Penalties {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self { max_failures, window, sources: Mutex::new(HashMap::new()) }
    }

    /// Failures before a source is refused (0: never).
    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    /// How long a refusal lasts (and the window failures are counted in).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether `ip` is currently refused.
    pub fn is_penalised(&self, ip: IpAddr) -> bool {
        if self.max_failures == 0 {
            return false;
        }
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        match sources.get(&ip) {
            Some(f) if f.since.elapsed() >= self.window => {
                sources.remove(&ip);
                false
            }
            Some(f) => f.count >= self.max_failures,
            None => false,
        }
    }

    /// Records one failed login from `ip`; returns true if it is now refused.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        if self.max_failures == 0 {
            return false;
        }
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        // Bound memory under a flood of distinct sources.
        if sources.len() > 100_000 {
            let window = self.window;
            sources.retain(|_, f| f.since.elapsed() < window);
        }
        let now = Instant::now();
        let entry = sources.entry(ip).or_insert(Failures { count: 0, since: now });
        if entry.since.elapsed() >= self.window {
            *entry = Failures { count: 0, since: now };
        }
        entry.count += 1;
        if entry.count == self.max_failures {
            // The penalty runs a full window from the failure that triggered it.
            entry.since = now;
            return true;
        }
        entry.count >= self.max_failures
    }
}

impl Penalties {
    /// Refused by this process's count (every way in together) or by the
    /// count nodes share. The first is memory only: a source that is
    /// refused costs no database round trip.
    pub async fn refuses(&self, store: &Store, ip: IpAddr) -> bool {
        if self.is_penalised(ip) {
            return true;
        }
        if self.max_failures == 0 {
            return false;
        }
        let source = ip.to_string();
        let shared = store.login_refused(&source, self.max_failures, self.window.as_secs_f64());
        matches!(shared.await, Ok(Some(true)))
    }

    /// Counts a failure (`what`: a token, a console sign-in) here and for
    /// all nodes; whether the source is refused now.
    pub async fn count_failure(&self, store: &Store, ip: IpAddr, what: &str) -> bool {
        let here = self.record_failure(ip);
        if self.max_failures == 0 {
            return here;
        }
        let source = ip.to_string();
        let shared = store.record_login_failure(&source, self.max_failures, self.window.as_secs_f64());
        match shared.await {
            Ok(refused) => refused.unwrap_or(false) || here,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count a failed {what} for all nodes");
                here
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_refused_after_repeated_failures_and_only_that_source() {
        let penalties = Penalties::new(3, Duration::from_secs(60));
        let bad: IpAddr = "10.0.0.1".parse().unwrap();
        let good: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(!penalties.record_failure(bad));
        assert!(!penalties.record_failure(bad));
        assert!(!penalties.is_penalised(bad));
        assert!(penalties.record_failure(bad));
        assert!(penalties.is_penalised(bad));
        assert!(!penalties.is_penalised(good));
    }

    #[test]
    fn a_penalty_expires_after_its_window() {
        let penalties = Penalties::new(1, Duration::from_millis(10));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        penalties.record_failure(ip);
        assert!(penalties.is_penalised(ip));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!penalties.is_penalised(ip));
    }
}
