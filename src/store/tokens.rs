//! API tokens: stored by a hash of the token, never the token. A token is
//! looked up at every request (so a revocation or an expiry holds on every
//! node at once) together with its user, whose scopes bound the token's.

use super::rows::Decodes;
use super::{PgStore, Result, SqliteStore, Store, StoreError};
use crate::domain::user::Scopes;
use crate::domain::AccountId;

/// A token to record.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token_id: String,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    pub username: String,
    pub name: Option<String>,
    pub scopes: Scopes,
    /// Days from now; `None`: never expires.
    pub expires_in_days: Option<u32>,
}

/// A token as `intake token list` shows it (no hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    pub token_id: String,
    pub username: String,
    pub account: String,
    pub name: Option<String>,
    pub scopes: Vec<&'static str>,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Who a valid token acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUser {
    pub token_id: String,
    pub username: String,
    pub account: AccountId,
    /// The token's scopes that its user has now.
    pub scopes: Scopes,
}

const SQLITE_NOW: &str = "CAST(strftime('%s', 'now') AS INTEGER)";
const PG_NOW: &str = "CAST(extract(epoch FROM now()) AS BIGINT)";

fn insert_sql(now: &str) -> String {
    format!(
        "INSERT INTO api_tokens (token_id, token_hash, username, name, scopes, created_at, expires_at)
         SELECT $1, $2, username, $3, $4, {now}, CASE WHEN $5 IS NULL THEN NULL ELSE {now} + $5 * 86400 END
         FROM sftp_users WHERE username = $6"
    )
}

const LIST_SQL: &str =
    "SELECT t.token_id, t.username, u.account, t.name, t.scopes, t.created_at, t.expires_at, t.revoked_at
     FROM api_tokens AS t JOIN sftp_users AS u ON u.username = t.username
     WHERE $1 IS NULL OR u.account = $1 ORDER BY t.created_at, t.token_id";

fn lookup_sql(now: &str) -> String {
    format!(
        "SELECT t.token_id, t.username, u.account, t.scopes, u.scopes
         FROM api_tokens AS t JOIN sftp_users AS u ON u.username = t.username
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > {now})"
    )
}

fn revoke_sql(now: &str) -> String {
    format!("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, {now}) WHERE token_id = $1")
}

fn scopes_of(text: &str) -> Result<Scopes> {
    Scopes::parse(text.split_whitespace()).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn info<'r, R: Decodes<'r>>(row: &'r R) -> Result<TokenInfo>
where
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(TokenInfo {
        token_id: row.text(0)?,
        username: row.text(1)?,
        account: row.text(2)?,
        name: row.maybe_text(3)?,
        scopes: scopes_of(&row.text(4)?)?.names(),
        created_at: row.try_get(5)?,
        expires_at: row.try_get(6)?,
        revoked_at: row.try_get(7)?,
    })
}

fn token_user<'r, R: Decodes<'r>>(row: &'r R) -> Result<TokenUser>
where
    usize: sqlx::ColumnIndex<R>,
{
    let token = scopes_of(&row.text(3)?)?;
    let user = scopes_of(&row.text(4)?)?;
    Ok(TokenUser {
        token_id: row.text(0)?,
        username: row.text(1)?,
        account: AccountId::parse(&row.text(2)?).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        scopes: Scopes { create: token.create && user.create, update: token.update && user.update },
    })
}

fn scope_text(scopes: Scopes) -> String {
    scopes.names().join(" ")
}

impl SqliteStore {
    async fn create_token(&self, t: &NewToken) -> Result<()> {
        let done = sqlx::query(&insert_sql(SQLITE_NOW))
            .bind(&t.token_id)
            .bind(&t.token_hash)
            .bind(t.name.as_deref())
            .bind(scope_text(t.scopes))
            .bind(t.expires_in_days.map(i64::from))
            .bind(&t.username)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user `{}`", t.username)));
        }
        Ok(())
    }

    async fn list_tokens(&self, account: Option<&str>) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query(LIST_SQL).bind(account).fetch_all(&self.pool).await?;
        rows.iter().map(info).collect()
    }

    async fn token_user(&self, token_hash: &str) -> Result<Option<TokenUser>> {
        let row = sqlx::query(&lookup_sql(SQLITE_NOW)).bind(token_hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(token_user).transpose()
    }

    async fn revoke_token(&self, token_id: &str) -> Result<bool> {
        let done = sqlx::query(&revoke_sql(SQLITE_NOW)).bind(token_id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}

impl PgStore {
    async fn create_token(&self, t: &NewToken) -> Result<()> {
        let done = sqlx::query(&insert_sql(PG_NOW).replace("$5", "$5::bigint"))
            .bind(&t.token_id)
            .bind(&t.token_hash)
            .bind(t.name.as_deref())
            .bind(scope_text(t.scopes))
            .bind(t.expires_in_days.map(i64::from))
            .bind(&t.username)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user `{}`", t.username)));
        }
        Ok(())
    }

    async fn list_tokens(&self, account: Option<&str>) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query(&LIST_SQL.replace("$1 IS NULL", "$1::text IS NULL"))
            .bind(account)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(info).collect()
    }

    async fn token_user(&self, token_hash: &str) -> Result<Option<TokenUser>> {
        let row = sqlx::query(&lookup_sql(PG_NOW)).bind(token_hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(token_user).transpose()
    }

    async fn revoke_token(&self, token_id: &str) -> Result<bool> {
        let done = sqlx::query(&revoke_sql(PG_NOW)).bind(token_id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}

impl Store {
    /// Records a token for an existing user.
    pub async fn create_token(&self, token: &NewToken) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.create_token(token).await,
            Store::Postgres(s) => s.create_token(token).await,
        }
    }

    /// Tokens (revoked and expired too), of one account or all.
    pub async fn list_tokens(&self, account: Option<&str>) -> Result<Vec<TokenInfo>> {
        match self {
            Store::Sqlite(s) => s.list_tokens(account).await,
            Store::Postgres(s) => s.list_tokens(account).await,
        }
    }

    /// The user a token acts as, if the token is known, not revoked, not
    /// expired (on the database's clock) and its user exists.
    pub async fn token_user(&self, token_hash: &str) -> Result<Option<TokenUser>> {
        match self {
            Store::Sqlite(s) => s.token_user(token_hash).await,
            Store::Postgres(s) => s.token_user(token_hash).await,
        }
    }

    /// Revokes a token at once; false if there is no such token.
    pub async fn revoke_token(&self, token_id: &str) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.revoke_token(token_id).await,
            Store::Postgres(s) => s.revoke_token(token_id).await,
        }
    }
}
