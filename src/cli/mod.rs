//! The `intake` subcommands, one file each; `main.rs` parses the command
//! line and dispatches here.

pub mod accounts;
pub mod admin;
pub mod check;
pub mod ingest;
pub mod jobs;
pub mod mappings;
pub mod nodes;
pub mod pgp;
pub mod tokens;
pub mod webhooks;

use anyhow::Result;
use intake::config::Config;
use intake::store::Store;

/// The configured database, as the daemon opens it.
pub async fn open_store(config: &Config) -> Result<Store> {
    intake::app::open_store(config).await
}
