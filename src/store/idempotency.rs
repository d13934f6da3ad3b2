//! Table `api_idempotency`: answers remembered for an `Idempotency-Key` (24 hours): what was answered
//! to the first request with a key, and which request it was.

use super::sql::{Backend, Columns, Sql};
use super::{Result, Store};
use sqlx::{Encode, Executor, IntoArguments, Type};

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

fn answer(row: &impl Columns) -> Result<StoredAnswer> {
    Ok(StoredAnswer {
        request_hash: row.text("request_hash")?,
        status: row.count("status")?.min(999) as u16,
        location: row.maybe_text("location")?,
        body: row.text("body")?,
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
{
    pub(crate) async fn remembered_answer(&self, account: &str, key: &str) -> Result<Option<StoredAnswer>> {
        let sql = format!(
            "SELECT request_hash, status, location, body FROM api_idempotency
             WHERE account = $1 AND idem_key = $2 AND created_at > {} - {IDEMPOTENCY_SECS}",
            DB::EPOCH_NOW
        );
        let row = sqlx::query(&sql).bind(account).bind(key).fetch_optional(&self.pool).await?;
        row.as_ref().map(answer).transpose()
    }

    pub(crate) async fn remember_answer(&self, account: &str, key: &str, a: &StoredAnswer) -> Result<bool> {
        let now = DB::EPOCH_NOW;
        let prune = format!("DELETE FROM api_idempotency WHERE created_at <= {now} - {IDEMPOTENCY_SECS}");
        sqlx::query(&prune).execute(&self.pool).await?;
        let sql = format!(
            "INSERT INTO api_idempotency (account, idem_key, request_hash, status, location, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, {now}) ON CONFLICT DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(account)
            .bind(key)
            .bind(a.request_hash.as_str())
            .bind(i64::from(a.status))
            .bind(a.location.as_deref())
            .bind(a.body.as_str())
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }
}

impl Store {
    /// The answer remembered for `key` of `account` within 24 hours.
    pub async fn remembered_answer(&self, account: &str, key: &str) -> Result<Option<StoredAnswer>> {
        match self {
            Store::Sqlite(s) => s.sql.remembered_answer(account, key).await,
            Store::Postgres(s) => s.sql.remembered_answer(account, key).await,
        }
    }

    /// Remembers an answer; false if one was remembered for the key meanwhile.
    pub async fn remember_answer(&self, account: &str, key: &str, answer: &StoredAnswer) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.remember_answer(account, key, answer).await,
            Store::Postgres(s) => s.sql.remember_answer(account, key, answer).await,
        }
    }
}
