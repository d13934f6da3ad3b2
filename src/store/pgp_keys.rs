//! Table `pgp_keys`: an account's OpenPGP keys (spec §12). Server keys are
//! kept armoured with their secret parts locked (this layer never sees the
//! passphrase); merchant keys are public keys, checked before they get here.

use super::sql::{Backend, Columns, Sql};
use super::{Result, Store};
use sqlx::{Encode, Executor, IntoArguments, Type};

/// Whose key it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgpRole {
    /// The account's own key (intake's): decrypts uploads, signs reports.
    Server,
    /// The merchant's public key: verifies uploads, encrypts reports.
    Merchant,
}

impl PgpRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PgpRole::Server => "server",
            PgpRole::Merchant => "merchant",
        }
    }
}

/// A key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPgpKey {
    pub account: String,
    pub fingerprint: String,
    pub role: PgpRole,
    pub armored: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

fn key(row: &impl Columns) -> Result<StoredPgpKey> {
    Ok(StoredPgpKey {
        account: row.text("account")?,
        fingerprint: row.text("fingerprint")?,
        role: if row.text("role")? == "server" { PgpRole::Server } else { PgpRole::Merchant },
        armored: row.text("armored")?,
        created_at: row.count("created_at")? as i64,
        expires_at: row.maybe_count("expires_at")?.map(|n| n as i64),
    })
}

impl<DB> Sql<DB>
where
    DB: Backend,
    DB::Row: Columns,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    /// Adds a key; `false` when the account has it already.
    pub(crate) async fn add_pgp_key(
        &self,
        account: &str,
        fingerprint: &str,
        role: PgpRole,
        armored: &str,
        expires_at: Option<i64>,
    ) -> Result<bool> {
        let now = DB::EPOCH_NOW;
        let sql = format!(
            "INSERT INTO pgp_keys (account, fingerprint, role, armored, created_at, expires_at, serial)
             SELECT $1, $2, $3, $4, {now}, $5, COALESCE(MAX(serial), 0) + 1 FROM pgp_keys WHERE account = $1
             ON CONFLICT DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(account)
            .bind(fingerprint)
            .bind(role.as_str())
            .bind(armored)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// The account's keys, in the order they were added.
    pub(crate) async fn pgp_keys(&self, account: &str) -> Result<Vec<StoredPgpKey>> {
        let rows = sqlx::query(
            "SELECT account, fingerprint, role, armored, created_at, expires_at FROM pgp_keys
             WHERE account = $1 ORDER BY serial, created_at, fingerprint",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key).collect()
    }

    /// Every account's keys that have not expired at `now` but will by
    /// `until` (Unix seconds).
    pub(crate) async fn pgp_keys_expiring(&self, now: i64, until: i64) -> Result<Vec<StoredPgpKey>> {
        let rows = sqlx::query(
            "SELECT account, fingerprint, role, armored, created_at, expires_at FROM pgp_keys
             WHERE expires_at > $1 AND expires_at <= $2 ORDER BY account, serial",
        )
        .bind(now)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key).collect()
    }

    /// Claims the expiry warning of a key at `now`: `true` for the one
    /// caller (of any node) that may warn, when the last warning is older
    /// than `every` seconds or there was none.
    pub(crate) async fn claim_expiry_warning(
        &self,
        account: &str,
        fingerprint: &str,
        now: i64,
        every: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE pgp_keys SET expiry_warned_at = $3
             WHERE account = $1 AND fingerprint = $2 AND (expiry_warned_at IS NULL OR expiry_warned_at <= $4)",
        )
        .bind(account)
        .bind(fingerprint)
        .bind(now)
        .bind(now - every)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    /// Removes one of the account's keys; `false` when it has no such key.
    pub(crate) async fn remove_pgp_key(&self, account: &str, fingerprint: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM pgp_keys WHERE account = $1 AND fingerprint = $2")
            .bind(account)
            .bind(fingerprint)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }
}

impl Store {
    pub async fn add_pgp_key(
        &self,
        account: &str,
        fingerprint: &str,
        role: PgpRole,
        armored: &str,
        expires_at: Option<i64>,
    ) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.add_pgp_key(account, fingerprint, role, armored, expires_at).await,
            Store::Postgres(s) => s.sql.add_pgp_key(account, fingerprint, role, armored, expires_at).await,
        }
    }

    pub async fn pgp_keys(&self, account: &str) -> Result<Vec<StoredPgpKey>> {
        match self {
            Store::Sqlite(s) => s.sql.pgp_keys(account).await,
            Store::Postgres(s) => s.sql.pgp_keys(account).await,
        }
    }

    pub async fn pgp_keys_expiring(&self, now: i64, until: i64) -> Result<Vec<StoredPgpKey>> {
        match self {
            Store::Sqlite(s) => s.sql.pgp_keys_expiring(now, until).await,
            Store::Postgres(s) => s.sql.pgp_keys_expiring(now, until).await,
        }
    }

    pub async fn claim_expiry_warning(&self, account: &str, fingerprint: &str, now: i64, every: i64) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.claim_expiry_warning(account, fingerprint, now, every).await,
            Store::Postgres(s) => s.sql.claim_expiry_warning(account, fingerprint, now, every).await,
        }
    }

    pub async fn remove_pgp_key(&self, account: &str, fingerprint: &str) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.remove_pgp_key(account, fingerprint).await,
            Store::Postgres(s) => s.sql.remove_pgp_key(account, fingerprint).await,
        }
    }
}
