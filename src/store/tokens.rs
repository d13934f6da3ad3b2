//! Table `api_tokens`: API tokens, stored by a hash of the token, never the token. A token is
//! looked up at every request (so a revocation or an expiry holds on every
//! node at once) together with its user, whose scopes bound the token's.

use super::sql::{Backend, Columns, Sql};
use super::{Result, Store, StoreError};
use crate::domain::user::Scopes;
use crate::domain::AccountId;
use sqlx::{Encode, Executor, IntoArguments, Type};

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

const TOKEN_INFO: &str =
    "t.token_id, t.username, u.account, t.name, t.scopes, t.created_at, t.expires_at, t.revoked_at";

fn scopes_of(text: &str) -> Result<Scopes> {
    Scopes::parse(text.split_whitespace()).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn info(row: &impl Columns) -> Result<TokenInfo> {
    let seconds = |column: &str| row.maybe_count(column).map(|n| n.map(|n| n as i64));
    Ok(TokenInfo {
        token_id: row.text("token_id")?,
        username: row.text("username")?,
        account: row.text("account")?,
        name: row.maybe_text("name")?,
        scopes: scopes_of(&row.text("scopes")?)?.names(),
        created_at: row.count("created_at")? as i64,
        expires_at: seconds("expires_at")?,
        revoked_at: seconds("revoked_at")?,
    })
}

fn token_user(row: &impl Columns) -> Result<TokenUser> {
    let token = scopes_of(&row.text("token_scopes")?)?;
    let user = scopes_of(&row.text("user_scopes")?)?;
    Ok(TokenUser {
        token_id: row.text("token_id")?,
        username: row.text("username")?,
        account: AccountId::parse(&row.text("account")?).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        scopes: Scopes { create: token.create && user.create, update: token.update && user.update },
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
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
{
    pub(crate) async fn create_token(&self, t: &NewToken) -> Result<()> {
        let now = DB::EPOCH_NOW;
        let sql = format!(
            "INSERT INTO api_tokens (token_id, token_hash, username, name, scopes, created_at, expires_at)
             SELECT $1, $2, username, $3, $4, {now},
               CASE WHEN CAST($5 AS BIGINT) IS NULL THEN NULL ELSE {now} + CAST($5 AS BIGINT) * 86400 END
             FROM sftp_users WHERE username = $6"
        );
        let scopes = t.scopes.names().join(" ");
        let done = sqlx::query(&sql)
            .bind(t.token_id.as_str())
            .bind(t.token_hash.as_str())
            .bind(t.name.as_deref())
            .bind(scopes.as_str())
            .bind(t.expires_in_days.map(i64::from))
            .bind(t.username.as_str())
            .execute(&self.pool)
            .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound(format!("user `{}`", t.username)));
        }
        Ok(())
    }

    pub(crate) async fn list_tokens(&self, account: Option<&str>) -> Result<Vec<TokenInfo>> {
        let sql = format!(
            "SELECT {TOKEN_INFO} FROM api_tokens AS t JOIN sftp_users AS u ON u.username = t.username
             WHERE CAST($1 AS TEXT) IS NULL OR u.account = $1 ORDER BY t.created_at, t.token_id"
        );
        let rows = sqlx::query(&sql).bind(account).fetch_all(&self.pool).await?;
        rows.iter().map(info).collect()
    }

    pub(crate) async fn token_user(&self, token_hash: &str) -> Result<Option<TokenUser>> {
        let sql = format!(
            "SELECT t.token_id, t.username, u.account, t.scopes AS token_scopes, u.scopes AS user_scopes
             FROM api_tokens AS t JOIN sftp_users AS u ON u.username = t.username
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > {})
               AND NOT u.disabled
               AND NOT EXISTS (SELECT 1 FROM accounts AS a WHERE a.avid = u.account AND a.disabled)",
            DB::EPOCH_NOW
        );
        let row = sqlx::query(&sql).bind(token_hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(token_user).transpose()
    }

    pub(crate) async fn revoke_token(&self, token_id: &str) -> Result<bool> {
        let sql =
            format!("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, {}) WHERE token_id = $1", DB::EPOCH_NOW);
        let done = sqlx::query(&sql).bind(token_id).execute(&self.pool).await?;
        Ok(DB::rows_affected(&done) > 0)
    }
}

impl Store {
    /// Records a token for an existing user.
    pub async fn create_token(&self, token: &NewToken) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.create_token(token).await,
            Store::Postgres(s) => s.sql.create_token(token).await,
        }
    }

    /// Tokens (revoked and expired too), of one account or all.
    pub async fn list_tokens(&self, account: Option<&str>) -> Result<Vec<TokenInfo>> {
        match self {
            Store::Sqlite(s) => s.sql.list_tokens(account).await,
            Store::Postgres(s) => s.sql.list_tokens(account).await,
        }
    }

    /// The user a token acts as, if the token is known, not revoked, not
    /// expired (on the database's clock) and its user exists and is not
    /// disabled (nor its account).
    pub async fn token_user(&self, token_hash: &str) -> Result<Option<TokenUser>> {
        match self {
            Store::Sqlite(s) => s.sql.token_user(token_hash).await,
            Store::Postgres(s) => s.sql.token_user(token_hash).await,
        }
    }

    /// Revokes a token at once; false if there is no such token.
    pub async fn revoke_token(&self, token_id: &str) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.revoke_token(token_id).await,
            Store::Postgres(s) => s.sql.revoke_token(token_id).await,
        }
    }
}
