//! `intake serve`: wiring of the SFTP server, the watcher and the workers.

use crate::config::Config;
use std::path::Path;

pub async fn serve(_config: Config, _config_path: &Path) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
