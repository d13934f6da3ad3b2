//! One customer at a time, for the API: load by id or ref (with its times),
//! create if the ref is free, replace the content of one found before.
//! The rules (what a create or an update makes) are decided by the caller.

use super::rows::Decodes;
use super::{PgStore, Result, SqliteStore, Store, StoreError, StoredCustomer};

/// A stored customer with its times (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRecord {
    pub customer: StoredCustomer,
    pub created_at: String,
    pub updated_at: String,
}

/// How a customer is looked up, always within one account.
#[derive(Debug, Clone, Copy)]
pub enum CustomerKey<'a> {
    Id(&'a str),
    Ref(&'a str),
}

const SQLITE_COLUMNS: &str = "customer_id, ref, addresses, metadata, appdata, created_at, updated_at";
const PG_COLUMNS: &str = "customer_id, ref, addresses::text, metadata::text, appdata::text, \
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";
const SQLITE_NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

fn select_sql(columns: &str, key: CustomerKey<'_>) -> String {
    let by = match key {
        CustomerKey::Id(_) => "customer_id",
        CustomerKey::Ref(_) => "ref",
    };
    format!("SELECT {columns} FROM customers WHERE account = $1 AND {by} = $2")
}

fn key_value(key: CustomerKey<'_>) -> &str {
    match key {
        CustomerKey::Id(v) | CustomerKey::Ref(v) => v,
    }
}

fn record<'r, R: Decodes<'r>>(row: &'r R) -> Result<CustomerRecord>
where
    usize: sqlx::ColumnIndex<R>,
{
    let customer =
        StoredCustomer::from_columns(row.text(0)?, row.text(1)?, &row.text(2)?, &row.text(3)?, &row.text(4)?, None)?;
    Ok(CustomerRecord { customer, created_at: row.text(5)?, updated_at: row.text(6)? })
}

fn json_text(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SqliteStore {
    async fn find_customer(&self, account: &str, key: CustomerKey<'_>) -> Result<Option<CustomerRecord>> {
        let row = sqlx::query(&select_sql(SQLITE_COLUMNS, key))
            .bind(account)
            .bind(key_value(key))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    async fn create_customer(&self, account: &str, c: &StoredCustomer) -> Result<bool> {
        let done = sqlx::query(&format!(
            "INSERT INTO customers (customer_id, account, ref, addresses, metadata, appdata, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, {SQLITE_NOW}, {SQLITE_NOW}) ON CONFLICT DO NOTHING"
        ))
        .bind(&c.customer_id)
        .bind(account)
        .bind(&c.customer_ref)
        .bind(json_text(&c.addresses)?)
        .bind(json_text(&c.metadata)?)
        .bind(json_text(&c.appdata)?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn replace_customer(&self, account: &str, c: &StoredCustomer) -> Result<bool> {
        let done = sqlx::query(&format!(
            "UPDATE customers SET addresses = $3, metadata = $4, appdata = $5, updated_at = {SQLITE_NOW},
               last_job_id = NULL, last_line = NULL
             WHERE account = $1 AND customer_id = $2"
        ))
        .bind(account)
        .bind(&c.customer_id)
        .bind(json_text(&c.addresses)?)
        .bind(json_text(&c.metadata)?)
        .bind(json_text(&c.appdata)?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl PgStore {
    async fn find_customer(&self, account: &str, key: CustomerKey<'_>) -> Result<Option<CustomerRecord>> {
        let row = sqlx::query(&select_sql(PG_COLUMNS, key))
            .bind(account)
            .bind(key_value(key))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    async fn create_customer(&self, account: &str, c: &StoredCustomer) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO customers (customer_id, account, ref, addresses, metadata, appdata)
             VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6::jsonb) ON CONFLICT DO NOTHING",
        )
        .bind(&c.customer_id)
        .bind(account)
        .bind(&c.customer_ref)
        .bind(json_text(&c.addresses)?)
        .bind(json_text(&c.metadata)?)
        .bind(json_text(&c.appdata)?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn replace_customer(&self, account: &str, c: &StoredCustomer) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE customers SET addresses = $3::jsonb, metadata = $4::jsonb, appdata = $5::jsonb,
               updated_at = now(), last_job_id = NULL, last_line = NULL
             WHERE account = $1 AND customer_id = $2",
        )
        .bind(account)
        .bind(&c.customer_id)
        .bind(json_text(&c.addresses)?)
        .bind(json_text(&c.metadata)?)
        .bind(json_text(&c.appdata)?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// One customer of `account`, with its times.
    pub async fn find_customer(&self, account: &str, key: CustomerKey<'_>) -> Result<Option<CustomerRecord>> {
        match self {
            Store::Sqlite(s) => s.find_customer(account, key).await,
            Store::Postgres(s) => s.find_customer(account, key).await,
        }
    }

    /// Creates `customer` unless its ref is taken in `account`; whether it was.
    pub async fn create_customer(&self, account: &str, customer: &StoredCustomer) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.create_customer(account, customer).await,
            Store::Postgres(s) => s.create_customer(account, customer).await,
        }
    }

    /// Writes `customer`'s addresses, metadata and appdata over the stored
    /// ones; false if it is gone.
    pub async fn replace_customer(&self, account: &str, customer: &StoredCustomer) -> Result<bool> {
        match self {
            Store::Sqlite(s) => s.replace_customer(account, customer).await,
            Store::Postgres(s) => s.replace_customer(account, customer).await,
        }
    }
}
