//! The request rate of each token: a token bucket per token, in this
//! process's memory (no database round trip; each node counts its own).
//! `rate` requests a second on average, `burst` at once; a request over it
//! is answered 429 with `Retry-After`. Buckets exist only for tokens that
//! were valid, so guesses cannot fill the table.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The buckets of all tokens seen valid by this process.
pub(super) struct RateLimits {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The table is pruned of full buckets (as good as absent) past this size.
const PRUNE_ABOVE: usize = 10_000;

impl RateLimits {
    /// `rate` per second (0: no limit), `burst` at once (at least 1).
    pub(super) fn new(rate: f64, burst: u32) -> RateLimits {
        RateLimits { rate, burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    /// Whether `key` (a token's hash) is known to be out of requests now:
    /// checked before the token is looked up, so a client over its rate
    /// costs no database round trip. `Some(wait)` when it is.
    pub(super) fn exhausted(&self, key: &str) -> Option<Duration> {
        if !self.enabled() {
            return None;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.get_mut(key)?;
        self.refill(bucket);
        (bucket.tokens < 1.0).then(|| self.wait(bucket))
    }

    /// Takes one request from `key`'s bucket (made full on first use);
    /// `Err(wait)` when it has none.
    pub(super) fn take(&self, key: &str) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + b.at.elapsed().as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: self.burst, at: Instant::now() });
        self.refill(bucket);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait(bucket))
        }
    }

    fn refill(&self, bucket: &mut Bucket) {
        let now = Instant::now();
        let gained = now.saturating_duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + gained).min(self.burst);
        bucket.at = now;
    }

    /// Until the bucket holds one request again.
    fn wait(&self, bucket: &Bucket) -> Duration {
        Duration::from_secs_f64(((1.0 - bucket.tokens) / self.rate).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_a_wait_and_each_token_has_its_own() {
        let limits = RateLimits::new(1.0, 3);
        assert!(limits.exhausted("a").is_none(), "an unknown token is not refused before its lookup");
        for _ in 0..3 {
            limits.take("a").unwrap();
        }
        let wait = limits.take("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limits.exhausted("a").is_some());
        limits.take("b").expect("another token is not starved");
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let limits = RateLimits::new(0.0, 1);
        for _ in 0..100 {
            limits.take("a").unwrap();
        }
    }
}
