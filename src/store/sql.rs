//! What the SQL written once for both backends needs to know about each:
//! the database's clock, how a timestamp binds, how a write transaction
//! begins, how the job and customer columns read back as text. Rows are
//! decoded by column name ([`Columns`]), never by position.

use super::{Result, StoreError};
use crate::clock::Timestamp;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

/// A backend the shared statements run on: SQLite or PostgreSQL.
pub(crate) trait Backend: Database {
    /// The database's clock, as the backend keeps timestamps.
    const NOW: &'static str;
    /// How a transaction that writes begins (SQLite takes its one writer's
    /// lock up front, not at the first write).
    const BEGIN_WRITE: &'static str;
    /// The columns a [`super::Job`] is read from, timestamps as RFC 3339 text.
    const JOB_COLUMNS: &'static str;
    /// The columns a [`super::StoredCustomer`] is read from, JSON as text.
    const CUSTOMER_COLUMNS: &'static str;
    /// A host timestamp as the backend binds it.
    type Stamp: for<'q> Encode<'q, Self> + Type<Self> + Send + 'static;
    fn at(t: Timestamp) -> Self::Stamp;
    /// The database's clock `param` seconds from now (negative: ago).
    fn seconds_from_now(param: &str) -> String;
    /// Seconds from the timestamp `expr` to the database's now.
    fn seconds_since(expr: &str) -> String;
    /// The rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;
    /// The database's clock in whole Unix seconds.
    const EPOCH_NOW: &'static str;
    /// A bound JSON text parameter as the backend stores JSON.
    fn json(param: &str) -> String;
    /// A timestamp column as RFC 3339 text with milliseconds, named `alias`.
    fn time_text(column: &str, alias: &str) -> String;
}

/// A backend's pool, on which the shared statements of each table are
/// methods (`impl<DB> Sql<DB>` in the table's file). Their `where` clauses
/// say which Rust types the statements bind and read; both backends have them.
pub(crate) struct Sql<DB: Database> {
    pub(crate) pool: Pool<DB>,
}

impl<DB: Database> Clone for Sql<DB> {
    fn clone(&self) -> Self {
        Sql { pool: self.pool.clone() }
    }
}

impl<DB: Database> Sql<DB> {
    pub(crate) fn new(pool: Pool<DB>) -> Self {
        Sql { pool }
    }
}

impl<DB> Sql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    /// The database answers a query.
    pub(crate) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Reads a column of a row by name, as the types intake stores.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> Result<String>;
    fn maybe_text(&self, column: &str) -> Result<Option<String>>;
    fn count(&self, column: &str) -> Result<u64>;
    fn maybe_count(&self, column: &str) -> Result<Option<u64>>;
    fn flag(&self, column: &str) -> Result<bool>;
    fn real(&self, column: &str) -> Result<f64>;
    fn maybe_real(&self, column: &str) -> Result<Option<f64>>;
}

impl<R: Row> Columns for R
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> Result<String> {
        Ok(self.try_get(column)?)
    }
    fn maybe_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }
    fn count(&self, column: &str) -> Result<u64> {
        Ok(self.try_get::<i64, _>(column)?.max(0) as u64)
    }
    fn maybe_count(&self, column: &str) -> Result<Option<u64>> {
        Ok(self.try_get::<Option<i64>, _>(column)?.map(|n| n.max(0) as u64))
    }
    fn flag(&self, column: &str) -> Result<bool> {
        Ok(self.try_get(column)?)
    }
    fn real(&self, column: &str) -> Result<f64> {
        Ok(self.try_get(column)?)
    }
    fn maybe_real(&self, column: &str) -> Result<Option<f64>> {
        Ok(self.try_get(column)?)
    }
}

/// A stored timestamp (RFC 3339 text, as [`Backend::JOB_COLUMNS`] reads them).
pub(crate) fn time(text: &str) -> Result<Timestamp> {
    crate::clock::parse(text).ok_or_else(|| StoreError::Corrupt(format!("timestamp `{text}`")))
}

/// A unique violation as `AlreadyExists(what)`, any other error as it is.
pub(crate) fn exists_as(what: impl FnOnce() -> String) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists(what()),
        _ => StoreError::Database(e),
    }
}

/// A foreign key violation as `NotFound(what)`, any other error as it is.
pub(crate) fn missing_as(what: impl FnOnce() -> String) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound(what()),
        _ => StoreError::Database(e),
    }
}
