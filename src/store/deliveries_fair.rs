//! Due webhook events, fair across accounts: at most `per_account` of each
//! account's, taken round-robin (every account's oldest first, then every
//! account's second...), so one account's backlog never hides another's.

use super::ops::{delivery, Delivery, DELIVERY_COLUMNS};
use super::{PgStore, Result, SqliteStore};

fn fair_query() -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM (
             SELECT *, ROW_NUMBER() OVER (PARTITION BY account ORDER BY next_attempt_at, delivery_id) AS turn
             FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1
         ) AS due WHERE turn <= $2 ORDER BY turn, next_attempt_at LIMIT $3"
    )
}

impl SqliteStore {
    pub async fn due_deliveries_fair(&self, now: &str, per_account: u32, limit: u32) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&fair_query())
            .bind(now)
            .bind(i64::from(per_account))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery).collect()
    }
}

impl PgStore {
    pub async fn due_deliveries_fair(&self, now: &str, per_account: u32, limit: u32) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&fair_query())
            .bind(now)
            .bind(i64::from(per_account))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery).collect()
    }
}
