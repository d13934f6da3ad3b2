//! Tables `account_webhooks` (an account's completion webhook) and
//! `webhook_deliveries` (the durable outbox of events to deliver). Their
//! times are the hosts' (RFC 3339 text, to the second): a delivery is
//! scheduled, not fenced.

use super::sql::{Backend, Columns, Sql};
use super::{Result, Store, StoreError};
use sqlx::{Encode, Executor, IntoArguments, Type};
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

const DELIVERY_COLUMNS: &str = "delivery_id, account, job_id, event, url, body, status, attempts, created_at, \
    next_attempt_at, last_attempt_at, last_error, delivered_at";

fn delivery(r: &impl Columns) -> Result<Delivery> {
    Ok(Delivery {
        delivery_id: r.text("delivery_id")?,
        account: r.text("account")?,
        job_id: r.maybe_text("job_id")?,
        event: r.text("event")?,
        url: r.text("url")?,
        body: r.text("body")?,
        status: DeliveryStatus::parse(&r.text("status")?)?,
        attempts: r.count("attempts")? as u32,
        created_at: r.text("created_at")?,
        next_attempt_at: r.text("next_attempt_at")?,
        last_attempt_at: r.maybe_text("last_attempt_at")?,
        last_error: r.maybe_text("last_error")?,
        delivered_at: r.maybe_text("delivered_at")?,
    })
}

impl<DB> Sql<DB>
where
    DB: Backend,
    DB::Row: Columns,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
{
    /// Sets (or replaces) an account's webhook.
    pub(crate) async fn set_webhook(&self, avid: &str, url: &str, secret: &str) -> Result<()> {
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

    pub(crate) async fn remove_webhook(&self, avid: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM account_webhooks WHERE avid = $1").bind(avid).execute(&self.pool).await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    pub(crate) async fn get_webhook(&self, avid: &str) -> Result<Option<Webhook>> {
        let row = sqlx::query("SELECT url, secret FROM account_webhooks WHERE avid = $1")
            .bind(avid)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(Webhook { url: r.text("url")?, secret: WebhookSecret::new(r.text("secret")?) })).transpose()
    }

    /// Records a delivery; one already recorded under its id is kept as it is.
    pub(crate) async fn enqueue_delivery(&self, d: &Delivery) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhook_deliveries (delivery_id, account, job_id, event, url, body, status, attempts,
               created_at, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9) ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(d.delivery_id.as_str())
        .bind(d.account.as_str())
        .bind(d.job_id.as_deref())
        .bind(d.event.as_str())
        .bind(d.url.as_str())
        .bind(d.body.as_str())
        .bind(d.status.as_str())
        .bind(d.created_at.as_str())
        .bind(d.next_attempt_at.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Due events, at most `per_account` of each account's, taken
    /// round-robin (every account's oldest first, then every account's
    /// second...), so one account's backlog never hides another's.
    pub(crate) async fn due_deliveries_fair(&self, now: &str, per_account: u32, limit: u32) -> Result<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM (
                 SELECT *, ROW_NUMBER() OVER (PARTITION BY account ORDER BY next_attempt_at, delivery_id) AS turn
                 FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1
             ) AS due WHERE turn <= $2 ORDER BY turn, next_attempt_at LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(i64::from(per_account))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery).collect()
    }

    /// Takes a due delivery for one attempt until `lease_until`; false when
    /// another process took it first.
    pub(crate) async fn lease_delivery(&self, delivery_id: &str, due_at: &str, lease_until: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = $3
             WHERE delivery_id = $1 AND status = 'pending' AND next_attempt_at = $2",
        )
        .bind(delivery_id)
        .bind(due_at)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    pub(crate) async fn delivery_succeeded(&self, delivery_id: &str, now: &str) -> Result<()> {
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
    pub(crate) async fn delivery_failed(
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
    pub(crate) async fn list_deliveries(
        &self,
        account: Option<&str>,
        job_id: Option<&str>,
        delivered: bool,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM webhook_deliveries
             WHERE (CAST($1 AS TEXT) IS NULL OR account = $1) AND (CAST($2 AS TEXT) IS NULL OR job_id = $2)
               AND ($3 OR status <> 'delivered')
             ORDER BY created_at DESC, delivery_id DESC LIMIT $4",
            DELIVERY_COLUMNS
        ))
        .bind(account)
        .bind(job_id)
        .bind(delivered)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery).collect()
    }

    /// Deletes delivered and given-up events recorded before `before`.
    pub(crate) async fn prune_deliveries(&self, before: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done))
    }
}

impl Store {
    /// Sets (or replaces) an account's completion webhook.
    pub async fn set_webhook(&self, avid: &str, url: &str, secret: &WebhookSecret) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.set_webhook(avid, url, secret.expose()).await,
            Store::Postgres(s) => s.sql.set_webhook(avid, url, secret.expose()).await,
        }
    }

    /// Removes an account's webhook; false when it had none.
    pub async fn remove_webhook(&self, avid: &str) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.remove_webhook(avid).await,
            Store::Postgres(s) => s.sql.remove_webhook(avid).await,
        }
    }

    pub async fn get_webhook(&self, avid: &str) -> Result<Option<Webhook>> {
        match self {
            Store::Sqlite(s) => s.sql.get_webhook(avid).await,
            Store::Postgres(s) => s.sql.get_webhook(avid).await,
        }
    }

    /// Records a delivery to make; idempotent by `delivery_id`.
    pub async fn enqueue_delivery(&self, delivery: &Delivery) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.enqueue_delivery(delivery).await,
            Store::Postgres(s) => s.sql.enqueue_delivery(delivery).await,
        }
    }

    /// Due webhook events, at most `per_account` of each account's, taken
    /// round-robin across accounts.
    pub async fn due_deliveries_fair(&self, now: &str, per_account: u32, limit: u32) -> Result<Vec<Delivery>> {
        match self {
            Store::Sqlite(s) => s.sql.due_deliveries_fair(now, per_account, limit).await,
            Store::Postgres(s) => s.sql.due_deliveries_fair(now, per_account, limit).await,
        }
    }

    /// Takes a due delivery (still due at `due_at`) for one attempt, until
    /// `lease_until` (a crash during the attempt: it is due again then).
    pub async fn lease_delivery(&self, delivery_id: &str, due_at: &str, lease_until: &str) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.lease_delivery(delivery_id, due_at, lease_until).await,
            Store::Postgres(s) => s.sql.lease_delivery(delivery_id, due_at, lease_until).await,
        }
    }

    pub async fn delivery_succeeded(&self, delivery_id: &str, now: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.delivery_succeeded(delivery_id, now).await,
            Store::Postgres(s) => s.sql.delivery_succeeded(delivery_id, now).await,
        }
    }

    /// A failed attempt: due again at `retry_at`, or given up with `None`.
    pub async fn delivery_failed(
        &self,
        delivery_id: &str,
        now: &str,
        error: &str,
        retry_at: Option<&str>,
    ) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.delivery_failed(delivery_id, now, error, retry_at).await,
            Store::Postgres(s) => s.sql.delivery_failed(delivery_id, now, error, retry_at).await,
        }
    }

    /// Deliveries, newest first; delivered ones only with `delivered`.
    pub async fn list_deliveries(
        &self,
        account: Option<&str>,
        job_id: Option<&str>,
        delivered: bool,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        match self {
            Store::Sqlite(s) => s.sql.list_deliveries(account, job_id, delivered, limit).await,
            Store::Postgres(s) => s.sql.list_deliveries(account, job_id, delivered, limit).await,
        }
    }

    /// Deletes delivered and given-up webhook events recorded before `before`.
    pub async fn prune_deliveries(&self, before: &str) -> Result<u64> {
        match self {
            Store::Sqlite(s) => s.sql.prune_deliveries(before).await,
            Store::Postgres(s) => s.sql.prune_deliveries(before).await,
        }
    }
}
