//! What operating intake needs from the store (issue 11): account webhooks,
//! the durable outbox of webhook deliveries, job queries for the job-control
//! commands and the metrics, a readiness ping. The same SQL on both backends,
//! expanded into each store's `impl` like `shared_statements!`.

use super::{Job, JobStatus, Result, Store};
use std::fmt;

/// A webhook's signing secret: never shown in `Debug` or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(secret: String) -> Self {
        WebhookSecret(secret)
    }

    /// The secret itself, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An account's completion webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub secret: WebhookSecret,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// Given up after `give_up_hours`.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    fn parse(raw: &str) -> Result<Self> {
        Ok(match raw {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            other => return Err(super::StoreError::Corrupt(format!("delivery status `{other}`"))),
        })
    }
}

/// One webhook event in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub delivery_id: String,
    pub account: String,
    pub job_id: Option<String>,
    pub event: String,
    /// The webhook URL when the event was recorded (it is sent to the
    /// account's current one).
    pub url: String,
    pub body: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub created_at: String,
    pub next_attempt_at: String,
    pub last_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
}

impl Delivery {
    /// A new event, due at once.
    pub fn pending(
        delivery_id: String,
        account: String,
        job_id: Option<String>,
        event: String,
        url: String,
        body: String,
    ) -> Delivery {
        let now = crate::clock::now_rfc3339();
        Delivery {
            delivery_id,
            account,
            job_id,
            event,
            url,
            body,
            status: DeliveryStatus::Pending,
            attempts: 0,
            created_at: now.clone(),
            next_attempt_at: now,
            last_attempt_at: None,
            last_error: None,
            delivered_at: None,
        }
    }
}

/// Unfinished jobs, for the gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobCounts {
    pub arriving: u64,
    pub queued: u64,
    pub running: u64,
    pub retrying: u64,
    /// How long the oldest queued job has waited, on the database's clock.
    pub oldest_queued_secs: Option<f64>,
    /// Webhook events not delivered yet.
    pub webhooks_pending: u64,
}

pub(crate) const DELIVERY_COLUMNS: &str = "delivery_id, account, job_id, event, url, body, status, attempts, \
    created_at, next_attempt_at, last_attempt_at, last_error, delivered_at";

pub(crate) fn delivery<'r, R: super::rows::Decodes<'r>>(r: &'r R) -> Result<Delivery>
where
    usize: sqlx::ColumnIndex<R>,
{
    Ok(Delivery {
        delivery_id: r.text(0)?,
        account: r.text(1)?,
        job_id: r.maybe_text(2)?,
        event: r.text(3)?,
        url: r.text(4)?,
        body: r.text(5)?,
        status: DeliveryStatus::parse(&r.text(6)?)?,
        attempts: r.count(7)? as u32,
        created_at: r.text(8)?,
        next_attempt_at: r.text(9)?,
        last_attempt_at: r.maybe_text(10)?,
        last_error: r.maybe_text(11)?,
        delivered_at: r.maybe_text(12)?,
    })
}

/// Expands to the operations statements inside `impl SqliteStore` / `impl PgStore`.
macro_rules! ops_statements {
    () => {
        /// Sets (or replaces) an account's webhook.
        pub async fn set_webhook(&self, avid: &str, url: &str, secret: &str) -> Result<()> {
            sqlx::query(
                "INSERT INTO account_webhooks (avid, url, secret) VALUES ($1, $2, $3)
                 ON CONFLICT (avid) DO UPDATE SET url = excluded.url, secret = excluded.secret",
            )
            .bind(avid)
            .bind(url)
            .bind(secret)
            .execute(&self.pool)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                    StoreError::NotFound(format!("account `{avid}`"))
                }
                _ => StoreError::Database(e),
            })?;
            Ok(())
        }

        pub async fn remove_webhook(&self, avid: &str) -> Result<bool> {
            let done =
                sqlx::query("DELETE FROM account_webhooks WHERE avid = $1").bind(avid).execute(&self.pool).await?;
            Ok(done.rows_affected() > 0)
        }

        pub async fn get_webhook(&self, avid: &str) -> Result<Option<super::ops::Webhook>> {
            let row: Option<(String, String)> =
                sqlx::query_as("SELECT url, secret FROM account_webhooks WHERE avid = $1")
                    .bind(avid)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(row.map(|(url, secret)| super::ops::Webhook { url, secret: super::ops::WebhookSecret::new(secret) }))
        }

        /// Records a delivery; one already recorded under its id is kept as it is.
        pub async fn enqueue_delivery(&self, d: &super::ops::Delivery) -> Result<()> {
            sqlx::query(
                "INSERT INTO webhook_deliveries (delivery_id, account, job_id, event, url, body, status, attempts,
                   created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9) ON CONFLICT (delivery_id) DO NOTHING",
            )
            .bind(&d.delivery_id)
            .bind(&d.account)
            .bind(&d.job_id)
            .bind(&d.event)
            .bind(&d.url)
            .bind(&d.body)
            .bind(d.status.as_str())
            .bind(&d.created_at)
            .bind(&d.next_attempt_at)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        pub async fn due_deliveries(&self, now: &str, limit: u32) -> Result<Vec<super::ops::Delivery>> {
            let rows = sqlx::query(&format!(
                "SELECT {} FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1
                 ORDER BY next_attempt_at LIMIT $2",
                super::ops::DELIVERY_COLUMNS
            ))
            .bind(now)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(super::ops::delivery).collect()
        }

        /// Takes a due delivery for one attempt until `lease_until`; false when
        /// another process took it first.
        pub async fn lease_delivery(&self, delivery_id: &str, due_at: &str, lease_until: &str) -> Result<bool> {
            let done = sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = $3
                 WHERE delivery_id = $1 AND status = 'pending' AND next_attempt_at = $2",
            )
            .bind(delivery_id)
            .bind(due_at)
            .bind(lease_until)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        pub async fn delivery_succeeded(&self, delivery_id: &str, now: &str) -> Result<()> {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, last_attempt_at = $2,
                   delivered_at = $2, last_error = NULL WHERE delivery_id = $1",
            )
            .bind(delivery_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        /// Records a failed attempt: due again at `retry_at`, or given up (`None`).
        pub async fn delivery_failed(
            &self,
            delivery_id: &str,
            now: &str,
            error: &str,
            retry_at: Option<&str>,
        ) -> Result<()> {
            sqlx::query(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = $2, last_error = $3,
                   status = CASE WHEN CAST($4 AS TEXT) IS NULL THEN 'failed' ELSE 'pending' END,
                   next_attempt_at = COALESCE(CAST($4 AS TEXT), next_attempt_at)
                 WHERE delivery_id = $1",
            )
            .bind(delivery_id)
            .bind(now)
            .bind(error)
            .bind(retry_at)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        /// Deliveries, newest first: of one account and/or job; delivered ones only with `delivered`.
        pub async fn list_deliveries(
            &self,
            account: Option<&str>,
            job_id: Option<&str>,
            delivered: bool,
            limit: u32,
        ) -> Result<Vec<super::ops::Delivery>> {
            let rows = sqlx::query(&format!(
                "SELECT {} FROM webhook_deliveries
                 WHERE (CAST($1 AS TEXT) IS NULL OR account = $1) AND (CAST($2 AS TEXT) IS NULL OR job_id = $2)
                   AND ($3 OR status <> 'delivered')
                 ORDER BY created_at DESC, delivery_id DESC LIMIT $4",
                super::ops::DELIVERY_COLUMNS
            ))
            .bind(account)
            .bind(job_id)
            .bind(delivered)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(super::ops::delivery).collect()
        }

        /// Recent jobs, newest first, of one account and/or status.
        pub async fn find_jobs(&self, account: Option<&str>, status: Option<&str>, limit: u32) -> Result<Vec<Job>> {
            let rows = sqlx::query(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE (CAST($1 AS TEXT) IS NULL OR account = $1) AND (CAST($2 AS TEXT) IS NULL OR status = $2)
                 ORDER BY received_at DESC, job_id DESC LIMIT $3"
            ))
            .bind(account)
            .bind(status)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(rows::job).collect()
        }

        pub async fn job_counts(&self) -> Result<super::ops::JobCounts> {
            let rows: Vec<(String, i64, Option<f64>)> = sqlx::query_as(&format!(
                "SELECT status, COUNT(*), {} FROM jobs
                 WHERE status IN ('arriving', 'queued', 'running', 'retrying') GROUP BY status",
                seconds_since("MIN(received_at)")
            ))
            .fetch_all(&self.pool)
            .await?;
            let mut counts = super::ops::JobCounts::default();
            for (status, n, oldest) in rows {
                let n = n as u64;
                match status.as_str() {
                    "arriving" => counts.arriving = n,
                    "queued" => {
                        counts.queued = n;
                        counts.oldest_queued_secs = oldest.map(|s| s.max(0.0));
                    }
                    "running" => counts.running = n,
                    _ => counts.retrying = n,
                }
            }
            let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
            counts.webhooks_pending = pending as u64;
            Ok(counts)
        }

        /// Deletes delivered and given-up events recorded before `before`.
        pub async fn prune_deliveries(&self, before: &str) -> Result<u64> {
            let done = sqlx::query("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected())
        }

        /// The database answers a query.
        pub async fn ping(&self) -> Result<()> {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        }
    };
}

macro_rules! on_store {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            Store::Sqlite($s) => $body,
            Store::Postgres($s) => $body,
        }
    };
}

impl Store {
    /// Sets (or replaces) an account's completion webhook.
    pub async fn set_webhook(&self, avid: &str, url: &str, secret: &WebhookSecret) -> Result<()> {
        on_store!(self, s => s.set_webhook(avid, url, secret.expose()).await)
    }

    /// Removes an account's webhook; false when it had none.
    pub async fn remove_webhook(&self, avid: &str) -> Result<bool> {
        on_store!(self, s => s.remove_webhook(avid).await)
    }

    pub async fn get_webhook(&self, avid: &str) -> Result<Option<Webhook>> {
        on_store!(self, s => s.get_webhook(avid).await)
    }

    /// Records a delivery to make; idempotent by `delivery_id`.
    pub async fn enqueue_delivery(&self, delivery: &Delivery) -> Result<()> {
        on_store!(self, s => s.enqueue_delivery(delivery).await)
    }

    /// Pending deliveries due at `now`, the longest waiting first.
    pub async fn due_deliveries(&self, now: &str, limit: u32) -> Result<Vec<Delivery>> {
        on_store!(self, s => s.due_deliveries(now, limit).await)
    }

    /// Takes a due delivery (still due at `due_at`) for one attempt, until
    /// `lease_until` (a crash during the attempt: it is due again then).
    pub async fn lease_delivery(&self, delivery_id: &str, due_at: &str, lease_until: &str) -> Result<bool> {
        on_store!(self, s => s.lease_delivery(delivery_id, due_at, lease_until).await)
    }

    pub async fn delivery_succeeded(&self, delivery_id: &str, now: &str) -> Result<()> {
        on_store!(self, s => s.delivery_succeeded(delivery_id, now).await)
    }

    /// A failed attempt: due again at `retry_at`, or given up with `None`.
    pub async fn delivery_failed(
        &self,
        delivery_id: &str,
        now: &str,
        error: &str,
        retry_at: Option<&str>,
    ) -> Result<()> {
        on_store!(self, s => s.delivery_failed(delivery_id, now, error, retry_at).await)
    }

    /// Deliveries, newest first; delivered ones only with `delivered`.
    pub async fn list_deliveries(
        &self,
        account: Option<&str>,
        job_id: Option<&str>,
        delivered: bool,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        on_store!(self, s => s.list_deliveries(account, job_id, delivered, limit).await)
    }

    /// Recent jobs, newest first, of one account and/or one status.
    pub async fn find_jobs(&self, account: Option<&str>, status: Option<JobStatus>, limit: u32) -> Result<Vec<Job>> {
        on_store!(self, s => s.find_jobs(account, status.map(JobStatus::as_str), limit).await)
    }

    /// How many jobs wait, run and retry, and since when the oldest queued one waits.
    pub async fn job_counts(&self) -> Result<JobCounts> {
        on_store!(self, s => s.job_counts().await)
    }

    /// Deletes delivered and given-up webhook events recorded before `before`.
    pub async fn prune_deliveries(&self, before: &str) -> Result<u64> {
        on_store!(self, s => s.prune_deliveries(before).await)
    }

    /// One query through the pool.
    pub async fn ping(&self) -> Result<()> {
        on_store!(self, s => s.ping().await)
    }
}
