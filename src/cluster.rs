//! This process as one node of several sharing one database and one data
//! directory: its id, the lock that makes it the only live process of that
//! id, its heartbeat, and the takeover of the jobs of nodes that died.
//!
//! Every liveness decision is taken on the database: a heartbeat older than
//! `takeover_after` on the database's clock (a frozen or partitioned node),
//! or, on PostgreSQL, a node whose session lock is gone (its process died:
//! the server ends a dead client's session at once).

use crate::config::Config;
use crate::domain::NodeId;
use crate::store::{NodeLock, NodeStart, Store};
use anyhow::{Context as _, Result};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Default ids tried on one host (`ID`, `ID-2`, …) before giving up.
const MAX_DEFAULT_IDS: usize = 16;

/// This process's place in the cluster.
pub struct Node {
    pub id: NodeId,
    /// This start's name in `jobs.owner`: `Store::owner_name`.
    pub owner: String,
    lock: tokio::sync::Mutex<NodeLock>,
}

impl Node {
    /// Takes the node id (configured, or this host's default) and its lock;
    /// fails when another live process holds the same id. Jobs that earlier
    /// starts of this node left running are released at once.
    /// Without a configured id, processes sharing a host and a data
    /// directory take the host's default id, then `ID-2`, `ID-3`, … (the
    /// first one no live process holds).
    pub async fn claim(config: &Config, store: &Store) -> Result<Node> {
        if let Some(raw) = &config.cluster.node_id {
            let id = NodeId::parse(raw).map_err(anyhow::Error::msg).context("[cluster] node_id")?;
            return Self::claim_id(id.clone(), config, store).await?.with_context(|| {
                format!(
                    "node id `{id}` is held by another running intake process on this database; \
                     give each node its own `[cluster] node_id`"
                )
            });
        }
        let base = default_node_id(&config.data_dir)?;
        for n in 1..=MAX_DEFAULT_IDS {
            let id = if n == 1 {
                base.clone()
            } else {
                NodeId::parse(&format!("{base}-{n}")).map_err(anyhow::Error::msg)?
            };
            if let Some(node) = Self::claim_id(id, config, store).await? {
                return Ok(node);
            }
        }
        anyhow::bail!(
            "{MAX_DEFAULT_IDS} processes of this host run with its default node ids already; set `[cluster] node_id`"
        )
    }

    /// `None` when another live process holds `id`.
    async fn claim_id(id: NodeId, config: &Config, store: &Store) -> Result<Option<Node>> {
        let Some(lock) = store.lock_node(id.as_str(), &config.data_dir.join("nodes")).await? else {
            return Ok(None);
        };
        let owner = store.owner_name(id.as_str());
        let released = store.release_node_leftovers(id.as_str(), &owner).await?;
        if released > 0 {
            tracing::info!(node = %id, jobs = released, "resuming the jobs an earlier start of this node left running");
        }
        Ok(Some(Node { id, owner, lock: tokio::sync::Mutex::new(lock) }))
    }

    /// Says in the database that this node runs (`intake nodes`).
    pub async fn register(&self, store: &Store, sftp_addr: Option<std::net::SocketAddr>) -> Result<()> {
        store
            .register_node(&NodeStart {
                node_id: self.id.to_string(),
                owner: self.owner.clone(),
                host: hostname(),
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                sftp_addr: sftp_addr.map(|a| a.to_string()),
            })
            .await?;
        Ok(())
    }

    /// Heartbeats every `heartbeat`, releases the jobs of nodes seen dead,
    /// forgets expired login failures; at `shutdown`, says the node stopped.
    pub async fn run(
        self: std::sync::Arc<Self>,
        store: Store,
        heartbeat: Duration,
        login_window: Duration,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.beat(&store, login_window, heartbeat * 2).await;
        }
        if let Err(e) = store.node_stopped(self.id.as_str(), &self.owner).await {
            tracing::warn!(error = %e, "cannot record that this node stopped");
        }
    }

    /// One beat; a node whose lock is gone is seen dead once it has not
    /// beaten for `quiet` either (a database restart ends every lock).
    async fn beat(&self, store: &Store, login_window: Duration, quiet: Duration) {
        match store.node_heartbeat(self.id.as_str(), &self.owner).await {
            Ok(true) => {}
            Ok(false) => {
                // A row replaced by hand, or lost: say again that this node runs.
                tracing::warn!(node = %self.id, "this node's row was gone or changed; registering it again");
                if let Err(e) = self.register(store, None).await {
                    tracing::warn!(error = %e, "cannot register this node");
                }
            }
            Err(e) => tracing::warn!(error = %e, "node heartbeat failed"),
        }
        self.keep_lock(store).await;
        match store.dead_node_owners_after(quiet).await {
            Ok(owners) => {
                for owner in owners.into_iter().filter(|o| *o != self.owner) {
                    tracing::info!(owner = %owner, "a node died (its database session is gone): resuming its jobs");
                    match store.release_owner(&owner, false).await {
                        // Said once: the node is marked stopped (`intake nodes`).
                        Ok(()) => {
                            if let Err(e) = store.owner_stopped(&owner).await {
                                tracing::warn!(error = %e, owner = %owner, "cannot mark a dead node stopped");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, owner = %owner, "cannot release a dead node's jobs"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for dead nodes"),
        }
        if let Err(e) = store.prune_login_failures(login_window.as_secs_f64()).await {
            tracing::debug!(error = %e, "cannot prune login failures");
        }
    }

    /// A PostgreSQL node lock lives on its own connection: if that broke,
    /// the lock is gone (other nodes see this one dead and take its jobs,
    /// which fencing makes safe); take it again.
    async fn keep_lock(&self, store: &Store) {
        let mut lock = self.lock.lock().await;
        let NodeLock::Postgres(pg) = &*lock else { return };
        if pg.alive().await {
            return;
        }
        match store.lock_node(self.id.as_str(), Path::new("")).await {
            Ok(Some(again)) => {
                tracing::warn!(node = %self.id, "the node lock's database connection broke; lock taken again");
                *lock = again;
            }
            Ok(None) => tracing::error!(node = %self.id, "another process took this node's id while its lock was lost"),
            Err(e) => tracing::warn!(error = %e, "cannot take the node lock again"),
        }
    }
}

/// A command that takes an upload in and runs it (`intake ingest`, `intake
/// jobs retry`) is a node of its own while it runs, so that no daemon
/// settles its upload as a crashed arrival while it is being copied, and
/// none takes its job over while it heartbeats.
pub struct CommandNode {
    pub node: std::sync::Arc<Node>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl CommandNode {
    pub async fn start(config: &Config, store: &Store) -> Result<CommandNode> {
        let raw = format!("cmd-{}-{}", std::process::id(), sanitized_host());
        let id = NodeId::parse(&raw[..raw.len().min(NodeId::MAX_BYTES)]).map_err(anyhow::Error::msg)?;
        let node = Node::claim_id(id.clone(), config, store).await?;
        let node = std::sync::Arc::new(node.with_context(|| format!("node id `{id}` is in use"))?);
        node.register(store, None).await?;
        let stop = CancellationToken::new();
        let heartbeat = config.cluster.heartbeat();
        let login_window = Duration::from_secs(config.sftp.login_penalty_secs);
        let task = tokio::spawn(node.clone().run(store.clone(), heartbeat, login_window, stop.clone()));
        Ok(CommandNode { node, stop, task })
    }

    pub fn owner(&self) -> &str {
        &self.node.owner
    }

    /// Stops the heartbeat and says the node stopped.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn sanitized_host() -> String {
    let host: String = hostname()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .take(NodeId::MAX_BYTES - 12)
        .collect();
    if host.is_empty() {
        "node".to_owned()
    } else {
        host
    }
}

/// The host name and a random suffix, chosen once per host and data
/// directory and kept in `DATA_DIR/nodes/HOST.id`, so a restart is the same node.
fn default_node_id(data_dir: &Path) -> Result<NodeId> {
    let host = sanitized_host();
    let dir = data_dir.join("nodes");
    std::fs::create_dir_all(&dir).with_context(|| format!("while creating {}", dir.display()))?;
    let path = dir.join(format!("{host}.id"));
    if let Ok(kept) = std::fs::read_to_string(&path) {
        return NodeId::parse(kept.trim()).map_err(anyhow::Error::msg).with_context(|| path.display().to_string());
    }
    let id = format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let part = dir.join(format!(".{host}.id.{}", std::process::id()));
    std::fs::write(&part, format!("{id}\n")).with_context(|| format!("while writing {}", part.display()))?;
    // Two processes starting at once: the first name kept wins.
    let kept = std::fs::hard_link(&part, &path);
    let _ = std::fs::remove_file(&part);
    match kept {
        Ok(()) => NodeId::parse(&id).map_err(anyhow::Error::msg),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => default_node_id(data_dir),
        Err(e) => Err(e).with_context(|| format!("while writing {}", path.display())),
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_node_id_is_kept_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let first = default_node_id(dir.path()).unwrap();
        assert_eq!(default_node_id(dir.path()).unwrap(), first);
        assert!(first.as_str().len() <= NodeId::MAX_BYTES);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(default_node_id(other.path()).unwrap(), first, "another data directory, another node");
    }
}
