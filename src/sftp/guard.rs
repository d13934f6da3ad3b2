//! Limits kept in memory: connections per source, sessions and handles per
//! account, connections not logged in yet (MaxStartups), and the per-source
//! penalty after repeated login failures.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use super::config::MaxStartups;

/// Connections not logged in yet, all sources together, with OpenSSH's
/// random early drop between `start` and `full`.
pub(crate) struct Startups {
    limits: MaxStartups,
    count: AtomicUsize,
}

/// One connection counted by [`Startups`] until it logs in or ends.
pub(crate) struct Startup(Arc<Startups>);

impl Startups {
    pub(crate) fn new(limits: MaxStartups) -> Arc<Self> {
        Arc::new(Self { limits, count: AtomicUsize::new(0) })
    }

    /// Admits one more connection, or `None` to drop it: always below
    /// `start`, never at `full`, in between with a drop probability rising
    /// linearly from `rate`% to 100%.
    pub(crate) fn try_admit(self: &Arc<Self>) -> Option<Startup> {
        let MaxStartups { start, rate, full } = self.limits;
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        let admit = if n < start {
            true
        } else if n >= full {
            false
        } else {
            // As sshd's drop_connection(): p = rate + (100 - rate) * (n - start) / (full - start).
            let span = (full - start) as f64;
            let p = f64::from(rate) + (100.0 - f64::from(rate)) * (n - start) as f64 / span;
            rand::thread_rng().gen_range(0.0..100.0) >= p
        };
        if admit {
            Some(Startup(Arc::clone(self)))
        } else {
            self.count.fetch_sub(1, Ordering::SeqCst);
            None
        }
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
    }
}

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
    fn startups_admit_below_start_drop_at_full_and_free_on_drop() {
        let startups = Startups::new(MaxStartups { start: 2, rate: 30, full: 4 });
        let a = startups.try_admit().unwrap();
        let _b = startups.try_admit().unwrap();
        // Between start and full some are dropped, some admitted; at full all.
        let mut held = Vec::new();
        for _ in 0..200 {
            if let Some(s) = startups.try_admit() {
                held.push(s);
            }
        }
        assert_eq!(startups.count(), 4);
        assert!(startups.try_admit().is_none());
        drop(a);
        held.clear();
        assert_eq!(startups.count(), 1);
    }

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
