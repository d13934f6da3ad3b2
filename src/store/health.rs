//! What keeps the store usable after a fault (table `write_probe`): a connection whose transaction
//! state is in doubt never goes back to its pool, and a write probe that
//! tells readiness whether the store takes committed writes.

use super::sql::{Backend, Sql};
use super::{Result, Store};
use sqlx::pool::PoolConnectionMetadata;
use sqlx::{Connection, Database, Encode, Executor, IntoArguments, TransactionManager, Type};
use std::future::Future;
use std::pin::Pin;

type Released<'c> = Pin<Box<dyn Future<Output = Result<bool, sqlx::Error>> + Send + 'c>>;

/// The pools' `after_release` check: a connection goes back to its pool
/// only outside any transaction. A failed COMMIT or ROLLBACK can leave the
/// driver's transaction depth above zero (SQLite rolls back by itself on
/// SQLITE_FULL, sqlx-sqlite still counts the transaction), and every later
/// `BEGIN` on that connection would fail: such a connection is closed and
/// the pool opens a fresh one. The ping first runs the rollback a dropped
/// transaction queued, so a rolled-back one is kept.
pub(super) fn release_unless_in_doubt<DB: Database>(
    conn: &mut DB::Connection,
    _: PoolConnectionMetadata,
) -> Released<'_> {
    Box::pin(async move {
        conn.ping().await?;
        let depth = <DB::TransactionManager as TransactionManager>::get_transaction_depth(conn);
        if depth > 0 {
            tracing::warn!(
                depth,
                "a database connection left inside a transaction (a failed commit or rollback) is closed, not reused"
            );
        }
        Ok(depth == 0)
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl<DB> Sql<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    /// Commits one small write (this node's probe row).
    pub(crate) async fn write_probe(&self, node: &str) -> Result<()> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        sqlx::query(
            "INSERT INTO write_probe (node, probed_at) VALUES ($1, $2)
             ON CONFLICT (node) DO UPDATE SET probed_at = excluded.probed_at",
        )
        .bind(node)
        .bind(unix_now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Commits one small write for `node`: whether the store takes writes.
    pub async fn write_probe(&self, node: &str) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.sql.write_probe(node).await,
            Store::Postgres(s) => s.sql.write_probe(node).await,
        }
    }
}
