//! Limits kept in memory: connections per source, sessions per account, and
//! the per-source penalty after repeated login failures.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts holders per key, up to a maximum; a slot is freed when its
/// [`Slot`] is dropped.
pub(crate) struct Counter<K: Eq + Hash + Clone + Send + 'static> {
    max: usize,
    counts: Mutex<HashMap<K, usize>>,
}

/// One held slot of a [`Counter`].
pub(crate) struct Slot<K: Eq + Hash + Clone + Send + 'static> {
    counter: Arc<Counter<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone + Send + 'static> Counter<K> {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, counts: Mutex::new(HashMap::new()) })
    }

    /// Takes a slot for `key`, or `None` when `key` already holds the maximum.
    pub(crate) fn try_acquire(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot { counter: Arc::clone(self), key })
    }
}

impl<K: Eq + Hash + Clone + Send + 'static> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.counter.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Remembers login failures per source address; a source that reaches the
/// limit within the window is refused until the window has passed, like
/// OpenSSH's `PerSourcePenalties`.
pub(crate) struct Penalties {
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
    pub(crate) fn new(max_failures: u32, window: Duration) -> Self {
        Self { max_failures, window, sources: Mutex::new(HashMap::new()) }
    }

    /// Whether `ip` is currently refused.
    pub(crate) fn is_penalised(&self, ip: IpAddr) -> bool {
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
    pub(crate) fn record_failure(&self, ip: IpAddr) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_frees_its_slot_on_drop() {
        let counter = Counter::new(1);
        let slot = counter.try_acquire("acme").unwrap();
        assert!(counter.try_acquire("acme").is_none());
        assert!(counter.try_acquire("other").is_some());
        drop(slot);
        assert!(counter.try_acquire("acme").is_some());
    }

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
