//! Completion webhooks: when a job ends, its summary is recorded as an event
//! in the database's outbox (`webhook_deliveries`) and POSTed to the
//! account's URL by a delivery loop that never holds up ingestion. At least
//! once: an attempt leases its event, a failure (or a crash: the lease runs
//! out) makes it due again with exponential backoff, until `give_up_hours`.
//!
//! Each request carries `Intake-Delivery` (the event's id, the same on every
//! attempt), `Intake-Event` and `Intake-Signature: t=<unix>,v1=<hex
//! HMAC-SHA256(secret, "<t>.<body>")>` (Stripe's scheme). The secret and the
//! body never reach the logs.

use crate::clock;
use crate::config::WebhookSettings;
use crate::domain::Summary;
use crate::store::{Delivery, Store, StoreError};
use hmac::{Hmac, Mac};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SIGNATURE_HEADER: &str = "Intake-Signature";
pub const DELIVERY_HEADER: &str = "Intake-Delivery";
pub const EVENT_HEADER: &str = "Intake-Event";
/// Events taken per round of the delivery loop.
const DUE_PER_ROUND: u32 = 32;
/// Attempts in flight at once.
const MAX_IN_FLIGHT: usize = 16;
/// Attempts in flight at once for one account: a receiver that hangs holds
/// this many, never every slot (events are taken round-robin by account).
const MAX_IN_FLIGHT_PER_ACCOUNT: usize = 4;
const POLL: Duration = Duration::from_secs(1);

/// The `Intake-Signature` value of `body` signed at `t` (unix seconds).
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The event id of a job's completion event: one per job, so recording it
/// again (a publish redone after a crash) changes nothing.
pub fn job_delivery_id(job_id: &str) -> String {
    format!("evt_{job_id}")
}

/// Records the completion event of a job whose account has a webhook.
pub async fn job_ended(store: &Store, summary: &Summary) -> Result<(), StoreError> {
    let Some(webhook) = store.get_webhook(&summary.account).await? else { return Ok(()) };
    let delivery = Delivery::pending(
        job_delivery_id(&summary.job_id),
        summary.account.clone(),
        Some(summary.job_id.clone()),
        // A dry run of /validate is announced as what it is.
        summary.event(),
        webhook.url,
        serde_json::to_string(summary).expect("a summary serialises"),
    );
    store.enqueue_delivery(&delivery).await
}

/// Records a `pgp.key_expiring` event for an account with a webhook: its
/// key `key` (`role`: "merchant" or "server") expires at `expires_at`.
/// One event id per key and day, so recording it twice changes nothing.
pub async fn key_expiring(store: &Store, key: &crate::store::StoredPgpKey, now: i64) -> Result<(), StoreError> {
    let Some(webhook) = store.get_webhook(&key.account).await? else { return Ok(()) };
    let expires_at = key.expires_at.unwrap_or(now);
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t).map(clock::format_rfc3339).unwrap_or_else(|_| t.to_string())
    };
    let body = serde_json::json!({
        "event": KEY_EXPIRING,
        "account": key.account,
        "fingerprint": key.fingerprint,
        "key": key.role.as_str(),
        "expires_at": at(expires_at),
        "days_left": (expires_at - now).max(0) / 86_400,
        "warned_at": at(now),
    });
    let delivery = Delivery::pending(
        format!("evt_key_{}_{}_{}", key.account, key.fingerprint, now / 86_400),
        key.account.clone(),
        None,
        KEY_EXPIRING.to_owned(),
        webhook.url,
        body.to_string(),
    );
    store.enqueue_delivery(&delivery).await
}

/// The event of a key that expires soon.
pub const KEY_EXPIRING: &str = "pgp.key_expiring";

/// Sends events until `shutdown`; an attempt cut short by the stop is due
/// again once its lease runs out.
pub async fn run(store: Store, settings: WebhookSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let sender = Arc::new(Sender::new(store.clone(), settings)?);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let in_flight = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let mut attempts = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(POLL) => {}
        }
        while attempts.try_join_next().is_some() {}
        let now = clock::now_rfc3339();
        let due = match store.due_deliveries_fair(&now, MAX_IN_FLIGHT_PER_ACCOUNT as u32, DUE_PER_ROUND).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook outbox; retrying");
                continue;
            }
        };
        for delivery in due {
            let Some(account_slot) = InFlight::take(&in_flight, &delivery.account) else { continue };
            let Ok(slot) = slots.clone().try_acquire_owned() else { break };
            let lease = clock::seconds_ago_rfc3339(-(sender.settings.timeout_secs.max(1) as i64 + 5));
            match store.lease_delivery(&delivery.delivery_id, &delivery.next_attempt_at, &lease).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot lease a webhook event; retrying");
                    break;
                }
            }
            let sender = sender.clone();
            attempts.spawn(async move {
                sender.attempt(delivery).await;
                drop((slot, account_slot));
            });
        }
    }
    attempts.abort_all();
    while attempts.join_next().await.is_some() {}
    Ok(())
}

/// Attempts in flight per account.
type InFlightCounts = Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>;

/// One account's attempt in flight, counted until dropped.
struct InFlight {
    counts: InFlightCounts,
    account: String,
}

impl InFlight {
    /// Counts one more attempt for `account`, or `None` at its cap.
    fn take(counts: &InFlightCounts, account: &str) -> Option<InFlight> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(account.to_owned()).or_insert(0);
        if *n >= MAX_IN_FLIGHT_PER_ACCOUNT {
            return None;
        }
        *n += 1;
        Some(InFlight { counts: counts.clone(), account: account.to_owned() })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.account);
            }
        }
    }
}

/// Sends one event at a time; shared by the delivery loop and `intake webhook test`.
pub struct Sender {
    store: Store,
    client: reqwest::Client,
    settings: WebhookSettings,
}

impl Sender {
    pub fn new(store: Store, settings: WebhookSettings) -> anyhow::Result<Sender> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs.max(1)))
            .user_agent(concat!("intake/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Sender { store, client, settings })
    }

    /// POSTs `delivery` to the account's current webhook URL, signed with
    /// its current secret (both may have changed since the event was
    /// recorded); `Ok` with the HTTP status of a 2xx answer, else why not.
    pub async fn send(&self, delivery: &Delivery) -> Result<u16, Failure> {
        let webhook = match self.store.get_webhook(&delivery.account).await {
            Ok(Some(webhook)) => webhook,
            Ok(None) => return Err(Failure::NoWebhook),
            Err(e) => return Err(Failure::Other(format!("cannot read the account's webhook: {e}"))),
        };
        let t = time::OffsetDateTime::now_utc().unix_timestamp();
        let response = self
            .client
            .post(&webhook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, &delivery.delivery_id)
            .header(EVENT_HEADER, &delivery.event)
            .header(SIGNATURE_HEADER, signature(webhook.secret.expose(), t, &delivery.body))
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|e| Failure::Other(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(Failure::Other(format!("HTTP {}", status.as_u16())))
        }
    }

    async fn attempt(&self, delivery: Delivery) {
        let (id, account) = (&delivery.delivery_id, &delivery.account);
        let attempt = delivery.attempts + 1;
        let outcome = self.send(&delivery).await;
        let now = clock::now_rfc3339();
        let recorded = match &outcome {
            Ok(status) => {
                tracing::info!(account = %account, delivery_id = %id, event = %delivery.event, attempt, status,
                    "webhook delivered");
                crate::telemetry::metrics().webhook_delivery(account, "delivered");
                self.store.delivery_succeeded(id, &now).await
            }
            Err(failure) => {
                let error = failure.to_string();
                // An account whose webhook was removed wants no more events.
                let retry_at = match failure {
                    Failure::NoWebhook => None,
                    Failure::Other(_) => self.retry_at(&delivery),
                };
                let result = if retry_at.is_some() { "failed" } else { "gave_up" };
                crate::telemetry::metrics().webhook_delivery(account, result);
                match &retry_at {
                    Some(at) => tracing::warn!(account = %account, delivery_id = %id, event = %delivery.event,
                        attempt, error = %error, retry_at = %at, "webhook delivery failed; it is retried"),
                    None => tracing::error!(account = %account, delivery_id = %id, event = %delivery.event,
                        attempt, error = %error, give_up_hours = self.settings.give_up_hours,
                        "webhook delivery failed; given up"),
                }
                self.store.delivery_failed(id, &now, &error, retry_at.as_deref()).await
            }
        };
        if let Err(e) = recorded {
            // The lease runs out and the event is sent again: at least once.
            tracing::warn!(delivery_id = %id, error = %e, "cannot record a webhook attempt");
        }
    }

    /// When a failed delivery is tried next: `first * 2^attempts`, at most
    /// `retry_max_secs`; `None` once it is older than `give_up_hours`.
    fn retry_at(&self, delivery: &Delivery) -> Option<String> {
        let s = &self.settings;
        let age = crate::telemetry::age_seconds(&delivery.created_at).unwrap_or(0.0);
        if age >= (s.give_up_hours * 3600) as f64 {
            return None;
        }
        let wait =
            s.retry_first_secs.max(1).saturating_mul(1u64 << delivery.attempts.min(30)).min(s.retry_max_secs.max(1));
        Some(clock::seconds_ago_rfc3339(-(wait as i64)))
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The account has no webhook (any more): given up at once.
    NoWebhook,
    /// The receiver did not answer 2xx in time: retried.
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoWebhook => f.write_str("the account has no webhook any more"),
            Failure::Other(why) => f.write_str(why),
        }
    }
}

/// A transport error without its URL (which may carry a token).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// A test event for `intake webhook test`: sent at once, not recorded.
pub fn test_delivery(account: &str, url: &str) -> Delivery {
    let id = format!("evt_test_{}", uuid::Uuid::now_v7());
    let now = clock::now_rfc3339();
    let body = serde_json::json!({ "type": "test", "account": account, "id": id, "created_at": now }).to_string();
    Delivery::pending(id, account.to_owned(), None, "test".into(), url.to_owned(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_follows_stripes_scheme() {
        // HMAC-SHA256("whsec", "1700000000.{}") computed independently (Python's hmac).
        let sig = signature("whsec", 1_700_000_000, "{}");
        assert_eq!(sig, "t=1700000000,v1=7d44587dddbaf4c7f70fef20f48cd594834ffea1641e3ac227b84408298738af");
        assert_ne!(sig, signature("other", 1_700_000_000, "{}"));
    }
}
