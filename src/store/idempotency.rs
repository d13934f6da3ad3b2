//! Answers remembered for an `Idempotency-Key` (24 hours): what was answered
//! to the first request with a key, and which request it was.

use super::rows::Decodes;
use super::{PgStore, Result, SqliteStore, Store};

/// How long an answer is remembered, in seconds.
const IDEMPOTENCY_SECS: i64 = 24 * 3600;

/// A remembered answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The route and body hash of the request that made it.
    pub request_hash: String,
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

const SQLITE_NOW: &str = "CAST(strftime('%s', 'now') AS INTEGER)";
const PG_NOW: &str = "CAST(extract(epoch FROM now()) AS BIGINT)";

fn find_sql(now: &str) -> String {
    format!(
        "SELECT request_hash, status, location, body FROM api_idempotency
         WHERE account = $1 AND idem_key = $2 AND created_at > {now} - {IDEMPOTENCY_SECS}"
    )
}

fn prune_sql(now: &str) -> String {
    format!("DELETE FROM api_idempotency WHERE created_at <= {now} - {IDEMPOTENCY_SECS}")
}

fn remember_sql(now: &str) -> String {
    format!(
        "INSERT INTO api_idempotency (account, idem_key, request_hash, status, location, body, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, {now}) ON CONFLICT DO NOTHING"
    )
}

fn answer<'r, R: Decodes<'r>>(row: &'r R) -> Result<StoredAnswer>
where
    usize: sqlx::ColumnIndex<R>,
{
    Ok(StoredAnswer {
        request_hash: row.text(0)?,
        status: row.count(1)?.min(999) as u16,
        location: row.maybe_text(2)?,
        body: row.text(3)?,
    })
}

impl SqliteStore {
    async fn remembered_answer(&self, account: &str, key: &str) -> Result<Option<StoredAnswer>> {
        let row = sqlx::query(&find_sql(SQLITE_NOW)).bind(account).bind(key).fetch_optional(&self.pool).await?;
        row.as_ref().map(answer).transpose()
    }

    async fn remember_answer(&self, account: &str, key: &str, a: &StoredAnswer) -> Result<bool> {
        sqlx::query(&prune_sql(SQLITE_NOW)).execute(&self.pool).await?;
        let done = sqlx::query(&remember_sql(SQLITE_NOW))
            .bind(account)
            .bind(key)
            .bind(&a.request_hash)
            .bind(i64::from(a.status))
            .bind(a.location.as_deref())
            .bind(&a.body)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl PgStore {
    async fn remembered_answer(&self, account: &str, key: &str) -> Result<Option<StoredAnswer>> {
        let row = sqlx::query(&find_sql(PG_NOW)).bind(account).bind(key).fetch_optional(&self.pool).await?;
        row.as_ref().map(answer).transpose()
    }

    async fn remember_answer(&self, account: &str, key: &str, a: &StoredAnswer) -> Result<bool> {
        sqlx::query(&prune_sql(PG_NOW)).execute(&self.pool).await?;
        let done = sqlx::query(&remember_sql(PG_NOW))
            .bind(account)
            .bind(key)
            .bind(&a.request_hash)
            .bind(i64::from(a.status))
            .bind(a.location.as_deref())
            .bind(&a.body)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// The answer remembered for `key` of `account` within 24 hours.
    pub async fn remembered_answer(&self, account: &str, key: &str) -> Result<Option<StoredAnswer>> {
        match self {
            Store::Sqlite(s) => s.remembered_answer(account, key).await,
            Store::Postgres(s) => s.remembered_answer(account, key).await,
        }
    }

    /// Remembers an answer; false if one was remembered for the key meanwhile.
    pub async fn remember_answer(&self, account: &str, key: &str, answer: &StoredAnswer) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.remember_answer(account, key, answer).await,
            Store::Postgres(s) => s.remember_answer(account, key, answer).await,
        }
    }
}
