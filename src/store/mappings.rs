//! Tables `mapping_profiles` and `account_presets`: an account's mapping
//! profiles and enabled presets. Knows nothing of what a profile means (the
//! domain parses and checks the text before it is stored).

use super::sql::{Backend, Columns, Sql};
use super::{Result, Store};
use sqlx::{Encode, Executor, IntoArguments, Type};

/// One stored profile, as `intake mapping list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMapping {
    pub name: String,
    pub text: String,
    pub sha256: String,
    pub updated_at: String,
}

/// How a `put_mapping` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMapping {
    Stored,
    /// The account has `max` profiles already; a new name is refused.
    TooMany,
}

/// Inserts or replaces; a new name only while the account has fewer than
/// `$6` profiles (one statement, so concurrent uploads cannot overshoot).
const PUT: &str = "INSERT INTO mapping_profiles (account, name, text, sha256, updated_at)
     SELECT $1, $2, $3, $4, $5
     WHERE EXISTS (SELECT 1 FROM mapping_profiles WHERE account = $1 AND name = $2)
        OR (SELECT count(*) FROM mapping_profiles WHERE account = $1) < $6
     ON CONFLICT (account, name) DO UPDATE SET text = excluded.text, sha256 = excluded.sha256,
       updated_at = excluded.updated_at";
const GET: &str = "SELECT name, text, sha256, updated_at FROM mapping_profiles WHERE account = $1 AND name = $2";
const LIST: &str = "SELECT name, text, sha256, updated_at FROM mapping_profiles WHERE account = $1 ORDER BY name";
const REMOVE: &str = "DELETE FROM mapping_profiles WHERE account = $1 AND name = $2";
const REMOVE_ALL: &str = "DELETE FROM mapping_profiles WHERE account = $1";
const SET_PRESETS: &str = "INSERT INTO account_presets (account, presets) VALUES ($1, $2)
     ON CONFLICT (account) DO UPDATE SET presets = excluded.presets";
const GET_PRESETS: &str = "SELECT presets FROM account_presets WHERE account = $1";
const REMOVE_PRESETS: &str = "DELETE FROM account_presets WHERE account = $1";

fn now() -> String {
    crate::clock::format_rfc3339(crate::clock::now())
}

fn split(presets: &str) -> Vec<String> {
    presets.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect()
}

fn stored(r: &impl Columns) -> Result<StoredMapping> {
    Ok(StoredMapping {
        name: r.text("name")?,
        text: r.text("text")?,
        sha256: r.text("sha256")?,
        updated_at: r.text("updated_at")?,
    })
}

impl<DB> Sql<DB>
where
    DB: Backend,
    DB::Row: Columns,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    pub(crate) async fn put_mapping(
        &self,
        account: &str,
        name: &str,
        text: &str,
        sha256: &str,
        max: u32,
    ) -> Result<PutMapping> {
        let now = now();
        let done = sqlx::query(PUT)
            .bind(account)
            .bind(name)
            .bind(text)
            .bind(sha256)
            .bind(now.as_str())
            .bind(i64::from(max))
            .execute(&self.pool)
            .await?;
        Ok(if DB::rows_affected(&done) == 0 { PutMapping::TooMany } else { PutMapping::Stored })
    }

    pub(crate) async fn get_mapping(&self, account: &str, name: &str) -> Result<Option<StoredMapping>> {
        let row = sqlx::query(GET).bind(account).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(stored).transpose()
    }

    pub(crate) async fn list_mappings(&self, account: &str) -> Result<Vec<StoredMapping>> {
        let rows = sqlx::query(LIST).bind(account).fetch_all(&self.pool).await?;
        rows.iter().map(stored).collect()
    }

    pub(crate) async fn remove_mapping(&self, account: &str, name: &str) -> Result<bool> {
        let done = sqlx::query(REMOVE).bind(account).bind(name).execute(&self.pool).await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    pub(crate) async fn remove_account_mappings(&self, account: &str) -> Result<()> {
        sqlx::query(REMOVE_ALL).bind(account).execute(&self.pool).await?;
        sqlx::query(REMOVE_PRESETS).bind(account).execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn set_presets(&self, account: &str, presets: &[String]) -> Result<()> {
        let presets = presets.join(",");
        sqlx::query(SET_PRESETS).bind(account).bind(presets.as_str()).execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn get_presets(&self, account: &str) -> Result<Vec<String>> {
        let row = sqlx::query(GET_PRESETS).bind(account).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.text("presets")).transpose()?.map(|p| split(&p)).unwrap_or_default())
    }
}

impl Store {
    /// Stores a (checked) profile; a new name only under `max` per account.
    pub async fn put_mapping(
        &self,
        account: &str,
        name: &str,
        text: &str,
        sha256: &str,
        max: u32,
    ) -> Result<PutMapping> {
        match self {
            Store::Sqlite(s) => s.sql.put_mapping(account, name, text, sha256, max).await,
            Store::Postgres(s) => s.sql.put_mapping(account, name, text, sha256, max).await,
        }
    }

    pub async fn get_mapping(&self, account: &str, name: &str) -> Result<Option<StoredMapping>> {
        match self {
            Store::Sqlite(s) => s.sql.get_mapping(account, name).await,
            Store::Postgres(s) => s.sql.get_mapping(account, name).await,
        }
    }

    /// The account's profiles, by name.
    pub async fn list_mappings(&self, account: &str) -> Result<Vec<StoredMapping>> {
        match self {
            Store::Sqlite(s) => s.sql.list_mappings(account).await,
            Store::Postgres(s) => s.sql.list_mappings(account).await,
        }
    }

    pub async fn remove_mapping(&self, account: &str, name: &str) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.sql.remove_mapping(account, name).await,
            Store::Postgres(s) => s.sql.remove_mapping(account, name).await,
        }
    }

    pub async fn set_presets(&self, account: &str, presets: &[String]) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.set_presets(account, presets).await,
            Store::Postgres(s) => s.sql.set_presets(account, presets).await,
        }
    }

    /// The presets the account has enabled, in the order they are tried.
    pub async fn get_presets(&self, account: &str) -> Result<Vec<String>> {
        match self {
            Store::Sqlite(s) => s.sql.get_presets(account).await,
            Store::Postgres(s) => s.sql.get_presets(account).await,
        }
    }
}
