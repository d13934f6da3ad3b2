//! Limits kept in memory: connections per source, sessions and handles per
//! account, connections not logged in yet (MaxStartups), and the per-source
//! penalty after repeated login failures.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use tokio_util::sync::CancellationToken;

use super::config::MaxStartups;

/// Connections not logged in yet, all sources together (the pre-auth
/// table), with OpenSSH's random early drop between `start` and `full`.
/// From `start` on, a newcomer first evicts the connection that made least
/// progress: one that sent no SSH identification for [`SILENT_EVICTABLE`]
/// (of those, from the source holding most, the oldest), then one
/// identified that has not begun to log in for [`IDENTIFIED_EVICTABLE`];
/// so silent floods cannot keep merchants out.
pub(crate) struct Startups {
    limits: MaxStartups,
    table: Mutex<StartupTable>,
}

/// How long a connection that sent nothing is safe from eviction (a real
/// client sends its identification within a round trip).
const SILENT_EVICTABLE: Duration = Duration::from_secs(1);
/// How long an identified connection that has not begun to log in is.
const IDENTIFIED_EVICTABLE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct StartupTable {
    next: u64,
    entries: HashMap<u64, StartupEntry>,
}

struct StartupEntry {
    source: IpAddr,
    since: Instant,
    progress: Arc<AtomicU8>,
    evicted: CancellationToken,
}

/// How far a connection not logged in has come.
pub(crate) mod progress {
    /// Accepted; no SSH identification yet.
    pub(crate) const SILENT: u8 = 0;
    /// Its SSH identification arrived.
    pub(crate) const IDENTIFIED: u8 = 1;
    /// It asked to log in (key exchange done).
    pub(crate) const AUTHENTICATING: u8 = 2;
}

/// One connection counted by [`Startups`] until it logs in or ends.
pub(crate) struct Startup {
    table: Arc<Startups>,
    id: u64,
    /// Raised by the connection as it goes (see [`progress`]).
    pub(crate) progress: Arc<AtomicU8>,
    /// Cancelled when a newcomer evicts this connection.
    pub(crate) evicted: CancellationToken,
}

impl Startups {
    pub(crate) fn new(limits: MaxStartups) -> Arc<Self> {
        Arc::new(Self { limits, table: Mutex::new(StartupTable::default()) })
    }

    /// Admits one more connection from `source`, or `None` to drop it:
    /// always below `start`; from `start` on by evicting the one that made
    /// least progress if one may be evicted, else with a drop probability
    /// rising linearly from `rate`% to 100% at `full`.
    pub(crate) fn try_admit(self: &Arc<Self>, source: IpAddr) -> Option<Startup> {
        let MaxStartups { start, rate, full } = self.limits;
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let n = table.entries.len();
        let admit = n < start || table.evict_one() || {
            if n >= full {
                false
            } else {
                // As sshd's drop_connection(): p = rate + (100 - rate) * (n - start) / (full - start).
                let span = (full - start).max(1) as f64;
                let p = f64::from(rate) + (100.0 - f64::from(rate)) * (n - start) as f64 / span;
                rand::thread_rng().gen_range(0.0..100.0) >= p
            }
        };
        if !admit {
            return None;
        }
        table.next += 1;
        let id = table.next;
        let (progress, evicted) = (Arc::new(AtomicU8::new(progress::SILENT)), CancellationToken::new());
        let entry =
            StartupEntry { source, since: Instant::now(), progress: progress.clone(), evicted: evicted.clone() };
        table.entries.insert(id, entry);
        Some(Startup { table: Arc::clone(self), id, progress, evicted })
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.table.lock().unwrap().entries.len()
    }
}

impl StartupTable {
    /// Evicts the connection that made least progress, if one may be.
    fn evict_one(&mut self) -> bool {
        let now = Instant::now();
        let mut per_source: HashMap<IpAddr, usize> = HashMap::new();
        for entry in self.entries.values() {
            *per_source.entry(entry.source).or_insert(0) += 1;
        }
        let victim = self
            .entries
            .iter()
            .filter_map(|(id, e)| {
                let level = e.progress.load(Ordering::Relaxed);
                let age = now.saturating_duration_since(e.since);
                let evictable = (level == progress::SILENT && age >= SILENT_EVICTABLE)
                    || (level == progress::IDENTIFIED && age >= IDENTIFIED_EVICTABLE);
                evictable.then(|| ((level, std::cmp::Reverse(per_source[&e.source]), e.since), *id))
            })
            .min()
            .map(|(_, id)| id);
        let Some(entry) = victim.and_then(|id| self.entries.remove(&id)) else { return false };
        tracing::info!(peer = %entry.source, progress = entry.progress.load(Ordering::Relaxed),
            "connection evicted: the table of connections not logged in is full (max_startups)");
        entry.evicted.cancel();
        true
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        let mut table = self.table.table.lock().unwrap_or_else(|e| e.into_inner());
        table.entries.remove(&self.id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startups_admit_below_start_drop_at_full_and_free_on_drop() {
        let startups = Startups::new(MaxStartups { start: 2, rate: 30, full: 4 });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = startups.try_admit(ip).unwrap();
        let _b = startups.try_admit(ip).unwrap();
        // Between start and full some are dropped, some admitted; at full all
        // (nothing is old enough to be evicted).
        let mut held = Vec::new();
        for _ in 0..200 {
            if let Some(s) = startups.try_admit(ip) {
                held.push(s);
            }
        }
        assert_eq!(startups.count(), 4);
        assert!(startups.try_admit(ip).is_none());
        drop(a);
        held.clear();
        assert_eq!(startups.count(), 1);
    }

    #[test]
    fn a_full_table_evicts_the_silent_connection_of_the_busiest_source_first() {
        let startups = Startups::new(MaxStartups { start: 3, rate: 100, full: 3 });
        let (flood, other, merchant): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let lone = startups.try_admit(other).unwrap();
        let flood1 = startups.try_admit(flood).unwrap();
        let flood2 = startups.try_admit(flood).unwrap();
        // Too young to evict: refused.
        assert!(startups.try_admit(merchant).is_none());
        std::thread::sleep(SILENT_EVICTABLE);
        let _m = startups.try_admit(merchant).expect("a silent connection is evicted");
        assert!(flood1.evicted.is_cancelled(), "the oldest of the source holding most goes first");
        assert!(!flood2.evicted.is_cancelled() && !lone.evicted.is_cancelled());
        // One that identified itself is evicted only after a silent one.
        flood2.progress.store(progress::IDENTIFIED, Ordering::Relaxed);
        let _n = startups.try_admit(merchant).expect("evicts the lone silent one");
        assert!(lone.evicted.is_cancelled() && !flood2.evicted.is_cancelled());
        assert_eq!(startups.count(), 3);
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
}
