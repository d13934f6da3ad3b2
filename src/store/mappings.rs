//! Mapping profiles and enabled presets, per account: plain rows, the same
//! SQL on both backends. Knows nothing of what a profile means (the domain
//! parses and checks the text before it is stored).

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::Result;
use sqlx::Row;

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

fn stored<R: Row>(r: &R) -> Result<StoredMapping>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(StoredMapping {
        name: r.try_get("name")?,
        text: r.try_get("text")?,
        sha256: r.try_get("sha256")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl SqliteStore {
    pub async fn put_mapping(
        &self,
        account: &str,
        name: &str,
        text: &str,
        sha256: &str,
        max: u32,
    ) -> Result<PutMapping> {
        let done = sqlx::query(PUT)
            .bind(account)
            .bind(name)
            .bind(text)
            .bind(sha256)
            .bind(now())
            .bind(i64::from(max))
            .execute(&self.pool)
            .await?;
        Ok(if done.rows_affected() == 0 { PutMapping::TooMany } else { PutMapping::Stored })
    }

    pub async fn get_mapping(&self, account: &str, name: &str) -> Result<Option<StoredMapping>> {
        let row = sqlx::query(GET).bind(account).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(stored).transpose()
    }

    pub async fn list_mappings(&self, account: &str) -> Result<Vec<StoredMapping>> {
        let rows = sqlx::query(LIST).bind(account).fetch_all(&self.pool).await?;
        rows.iter().map(stored).collect()
    }

    pub async fn remove_mapping(&self, account: &str, name: &str) -> Result<bool> {
        Ok(sqlx::query(REMOVE).bind(account).bind(name).execute(&self.pool).await?.rows_affected() > 0)
    }

    pub async fn remove_account_mappings(&self, account: &str) -> Result<()> {
        sqlx::query(REMOVE_ALL).bind(account).execute(&self.pool).await?;
        sqlx::query(REMOVE_PRESETS).bind(account).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn set_presets(&self, account: &str, presets: &[String]) -> Result<()> {
        sqlx::query(SET_PRESETS).bind(account).bind(presets.join(",")).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn get_presets(&self, account: &str) -> Result<Vec<String>> {
        let row = sqlx::query(GET_PRESETS).bind(account).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?.map(|p| split(&p)).unwrap_or_default())
    }
}

impl PgStore {
    pub async fn put_mapping(
        &self,
        account: &str,
        name: &str,
        text: &str,
        sha256: &str,
        max: u32,
    ) -> Result<PutMapping> {
        let done = sqlx::query(PUT)
            .bind(account)
            .bind(name)
            .bind(text)
            .bind(sha256)
            .bind(now())
            .bind(i64::from(max))
            .execute(&self.pool)
            .await?;
        Ok(if done.rows_affected() == 0 { PutMapping::TooMany } else { PutMapping::Stored })
    }

    pub async fn get_mapping(&self, account: &str, name: &str) -> Result<Option<StoredMapping>> {
        let row = sqlx::query(GET).bind(account).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(stored).transpose()
    }

    pub async fn list_mappings(&self, account: &str) -> Result<Vec<StoredMapping>> {
        let rows = sqlx::query(LIST).bind(account).fetch_all(&self.pool).await?;
        rows.iter().map(stored).collect()
    }

    pub async fn remove_mapping(&self, account: &str, name: &str) -> Result<bool> {
        Ok(sqlx::query(REMOVE).bind(account).bind(name).execute(&self.pool).await?.rows_affected() > 0)
    }

    pub async fn remove_account_mappings(&self, account: &str) -> Result<()> {
        sqlx::query(REMOVE_ALL).bind(account).execute(&self.pool).await?;
        sqlx::query(REMOVE_PRESETS).bind(account).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn set_presets(&self, account: &str, presets: &[String]) -> Result<()> {
        sqlx::query(SET_PRESETS).bind(account).bind(presets.join(",")).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn get_presets(&self, account: &str) -> Result<Vec<String>> {
        let row = sqlx::query(GET_PRESETS).bind(account).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?.map(|p| split(&p)).unwrap_or_default())
    }
}
