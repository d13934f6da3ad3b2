//! `intake serve`: wires the SFTP server, the watcher and the workers, runs
//! them until SIGTERM/SIGINT, then stops accepting, lets the batch in flight
//! commit, and returns.

use crate::config::{Config, UserDecl};
use crate::domain::user::{Scopes, SftpUser};
use crate::domain::{AccountId, AccountSettings};
use crate::ingest::{arrival, watcher, worker, Context};
use crate::mailbox::Layout;
use crate::sftp::{DirectoryError, LoginLimit, SftpServer, SftpSettings, UserDirectory};
use crate::store::Store;
use anyhow::{Context as _, Result};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// SFTP logins look users up in the database at every attempt, so users and
/// keys added while the daemon runs work at once.
struct StoreUsers(Store, crate::keyring::Keyring);

#[async_trait::async_trait]
impl UserDirectory for StoreUsers {
    async fn find_user(&self, username: &str) -> Result<Option<SftpUser>, DirectoryError> {
        Ok(self.0.find_user(username).await?)
    }

    /// PostgreSQL: every node counts the same failures.
    async fn record_login_failure(&self, source: IpAddr, limit: LoginLimit) -> Result<Option<bool>, DirectoryError> {
        Ok(self.0.record_login_failure(&source.to_string(), limit.max_failures, limit.window.as_secs_f64()).await?)
    }

    async fn login_refused(&self, source: IpAddr, limit: LoginLimit) -> Result<Option<bool>, DirectoryError> {
        Ok(self.0.login_refused(&source.to_string(), limit.max_failures, limit.window.as_secs_f64()).await?)
    }

    async fn list_mappings(&self, account: &str) -> anyhow::Result<Vec<(String, String)>> {
        Ok(self.0.list_mappings(account).await?.into_iter().map(|m| (m.name, m.text)).collect())
    }

    async fn put_mapping(&self, account: &str, name: &str, text: &[u8]) -> anyhow::Result<Result<(), String>> {
        let stored = crate::ingest::mappings::store_profile(&self.0, account, name, text).await?;
        Ok(stored.map(|_| ()).map_err(|refused| refused.to_string()))
    }

    async fn remove_mapping(&self, account: &str, name: &str) -> anyhow::Result<bool> {
        Ok(self.0.remove_mapping(account, name).await?)
    }

    async fn account_pgp_key(&self, account: &str) -> anyhow::Result<Option<String>> {
        Ok(Some(self.1.public_armored(account).await?))
    }

    async fn list_pgp_keys(&self, account: &str) -> anyhow::Result<Vec<(String, String)>> {
        let keys = self.1.list(account).await?.into_iter();
        Ok(keys.filter(|k| k.role == crate::store::PgpRole::Merchant).map(|k| (k.fingerprint, k.armored)).collect())
    }

    async fn put_pgp_key(&self, account: &str, bytes: &[u8]) -> anyhow::Result<Result<String, String>> {
        use crate::keyring::KeyringError;
        match self.1.add_merchant_key(account, bytes).await {
            Ok(key) => Ok(Ok(key.fingerprint)),
            Err(e @ (KeyringError::Refused(_) | KeyringError::TooManyKeys { .. })) => Ok(Err(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    async fn remove_pgp_key(&self, account: &str, fingerprint: &str) -> anyhow::Result<bool> {
        let merchant = self
            .1
            .list(account)
            .await?
            .into_iter()
            .any(|k| k.role == crate::store::PgpRole::Merchant && k.fingerprint == fingerprint);
        Ok(merchant && self.0.remove_pgp_key(account, fingerprint).await?)
    }
}

/// Opens the configured database (creating the SQLite file's folder).
pub async fn open_store(config: &Config) -> Result<Store> {
    let url = config.database_url();
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
        }
    }
    Store::connect_with(&url, config.cluster.takeover_after())
        .await
        .with_context(|| format!("while opening the database {}", crate::store::redact_url(&url)))
}

/// Creates or updates the accounts and users that `config.toml` declares.
pub async fn apply_declared(config: &Config, store: &Store) -> Result<()> {
    for a in &config.accounts {
        let settings = AccountSettings {
            report_bom: a.report_bom,
            pgp: crate::domain::PgpRules {
                require_encryption: a.pgp_require_encryption,
                require_signature: a.pgp_require_signature,
                encrypt_reports: a.pgp_encrypt_reports,
            },
            ..AccountSettings::from_text(
                &a.avid,
                a.default_region.as_deref(),
                a.encoding.as_deref(),
                a.phone_check.as_deref(),
            )?
        };
        store.put_account(&settings).await.with_context(|| format!("while applying account {}", a.avid))?;
        apply_declared_webhook(a, store).await?;
    }
    for u in &config.users {
        let user = declared_user(u).with_context(|| format!("in the config's user {}", u.username))?;
        store.put_user(&user).await.with_context(|| format!("while applying user {}", u.username))?;
    }
    Ok(())
}

/// A webhook declared with its account; none declared leaves the stored one.
async fn apply_declared_webhook(a: &crate::config::AccountDecl, store: &Store) -> Result<()> {
    match (&a.webhook_url, &a.webhook_secret) {
        (None, None) => Ok(()),
        (Some(url), Some(secret)) => {
            let secret = crate::store::WebhookSecret::new(secret.0.clone());
            store
                .set_webhook(&a.avid, url, &secret)
                .await
                .with_context(|| format!("while applying the webhook of {}", a.avid))
        }
        _ => anyhow::bail!("account {} in the config: webhook_url and webhook_secret go together", a.avid),
    }
}

fn declared_user(u: &UserDecl) -> Result<SftpUser> {
    let mut public_keys = Vec::new();
    if !u.keys.is_empty() {
        public_keys.extend(crate::sftp::authorized_keys(&u.keys.join("\n"), "the config's `keys`")?);
    }
    for file in &u.key_files {
        public_keys.extend(crate::sftp::read_authorized_keys(file)?);
    }
    let password_hash = match (&u.password_hash, &u.password) {
        (Some(hash), _) => Some(hash.clone()),
        (None, Some(password)) => Some(crate::sftp::hash_password(password)?),
        (None, None) => None,
    };
    let scopes = match &u.scopes {
        None => Scopes::ALL,
        Some(names) => Scopes::parse(names.iter().map(String::as_str))?,
    };
    let account = AccountId::parse(&u.account)?;
    Ok(SftpUser { username: u.username.clone(), account, public_keys, password_hash, scopes })
}

/// The daemon, started: its parts run until [`RunningApp::stop`].
pub struct RunningApp {
    /// Where the SFTP server listens (when enabled).
    pub sftp_addr: Option<std::net::SocketAddr>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (when enabled).
    pub http_addr: Option<std::net::SocketAddr>,
    /// Where the public API is served (when enabled).
    pub api_addr: Option<std::net::SocketAddr>,
    shutdown: CancellationToken,
    tasks: Parts,
}

impl RunningApp {
    /// Asks every part to stop: no new connections, the batch in flight is
    /// committed first.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Waits until every part has stopped; the first failure of a part
    /// (which stops the others) is the error.
    pub async fn wait(mut self) -> Result<()> {
        let mut failure = None;
        while let Some(done) = self.tasks.join_next().await {
            let outcome = done.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = outcome {
                tracing::error!(error = %format!("{e:#}"), "a part of the daemon failed; stopping");
                failure.get_or_insert(e);
                self.shutdown.cancel();
            }
        }
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}

/// `intake serve`: starts the daemon, stops it on SIGTERM or SIGINT.
pub async fn serve(config: Config, _config_path: &Path) -> Result<()> {
    let data_dir = config.data_dir.clone();
    let app = start(config).await?;
    // For operators' scripts and the tests: where the listeners are bound.
    if let Some(addr) = app.sftp_addr {
        let _ = std::fs::write(data_dir.join("sftp.addr"), addr.to_string());
    }
    if let Some(addr) = app.http_addr {
        let _ = std::fs::write(data_dir.join("http.addr"), addr.to_string());
    }
    if let Some(addr) = app.api_addr {
        let _ = std::fs::write(data_dir.join("api.addr"), addr.to_string());
    }
    let shutdown = app.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: no new connections; the batch in flight is committed first");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        shutdown.cancel();
    });
    // systemd (Type=notify): the database is open and the listeners are bound.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell systemd that intake is ready");
    }
    app.wait().await
}

/// Starts the daemon's parts in this runtime — the SFTP server, the HTTP
/// endpoint, the watcher, the workers, webhooks and retention — once the
/// database is open and migrated and the listeners are bound.
pub async fn start(config: Config) -> Result<RunningApp> {
    let store = open_store(&config).await?;
    apply_declared(&config, &store).await?;
    let layout = Layout::new(&config.data_dir);
    for account in store.list_accounts().await? {
        layout
            .ensure_account(&account.avid)
            .with_context(|| format!("while creating the folders of {}", account.avid))?;
    }
    std::fs::create_dir_all(layout.accounts_root()).context("while creating the accounts folder")?;
    raise_open_file_limit();
    // The node's lock first: nothing of an earlier start of this node (its
    // jobs, its upload temps) is touched while another process of it lives.
    let node = Arc::new(crate::cluster::Node::claim(&config, &store).await?);
    node.register(&store, None).await?;
    let ctx = Arc::new(Context::new(&config, store.clone(), node.owner.clone()));
    arrival::recover_arriving(&ctx, ctx.takeover_after).await?;

    let shutdown = CancellationToken::new();
    crate::telemetry::metrics().set_account_labels(config.http.account_labels);
    let sftp_bound = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let (sftp_addr, penalties) =
        start_sftp(&config, &node, &store, &layout, &mut tasks, &shutdown, &sftp_bound).await?;
    node.register(&store, sftp_addr).await?;
    {
        let (store, heartbeat, shutdown) = (store.clone(), ctx.heartbeat, shutdown.clone());
        let login_window = Duration::from_secs(config.sftp.login_penalty_secs);
        tasks.spawn(async move {
            node.run(store, heartbeat, login_window, shutdown).await;
            Ok(())
        });
    }
    let http_addr = start_http(&config, &store, &mut tasks, &shutdown, &sftp_bound).await?;
    let api_addr = crate::api::start(&config, &store, ctx.clone(), penalties, &mut tasks, &shutdown).await?;
    start_pipeline(&config, ctx, &store, layout, &mut tasks, &shutdown);
    Ok(RunningApp { sftp_addr, http_addr, api_addr, shutdown, tasks })
}

pub(crate) type Parts = tokio::task::JoinSet<Result<()>>;

/// The SFTP server, when enabled; returns where it listens and the count of
/// failed logins per source it refuses by (which the API shares).
async fn start_sftp(
    config: &Config,
    node: &crate::cluster::Node,
    store: &Store,
    layout: &Layout,
    tasks: &mut Parts,
    shutdown: &CancellationToken,
    sftp_bound: &Arc<std::sync::atomic::AtomicBool>,
) -> Result<(Option<std::net::SocketAddr>, Arc<crate::penalties::Penalties>)> {
    if !config.sftp.enabled {
        tracing::info!("SFTP server disabled; watching uploads written by another server");
        let window = Duration::from_secs(config.sftp.login_penalty_secs);
        let penalties = crate::penalties::Penalties::new(config.sftp.max_login_failures_per_source, window);
        return Ok((None, Arc::new(penalties)));
    }
    {
        check_uploader_records(layout)?;
        let settings = SftpSettings { node_id: node.id.to_string(), ..config.sftp.clone() };
        let server = SftpServer::bind(
            &settings,
            &config.host_key_path(),
            layout.accounts_root(),
            Arc::new(StoreUsers(
                store.clone(),
                crate::keyring::Keyring::new(store.clone(), config.pgp_passphrase_path()),
            )),
        )
        .await
        .context("while starting the SFTP server")?;
        let (addr, penalties) = (server.local_addr(), server.penalties());
        tracing::info!(%addr, database = store.backend(), data_dir = %config.data_dir.display(), "intake is serving SFTP");
        sftp_bound.store(true, std::sync::atomic::Ordering::Relaxed);
        let (shutdown, bound) = (shutdown.clone(), sftp_bound.clone());
        tasks.spawn(async move {
            let served = server.run(shutdown).await.map_err(anyhow::Error::from);
            bound.store(false, std::sync::atomic::Ordering::Relaxed);
            served
        });
        Ok((Some(addr), penalties))
    }
}

/// The HTTP endpoint, when enabled; returns where it listens.
async fn start_http(
    config: &Config,
    store: &Store,
    tasks: &mut Parts,
    shutdown: &CancellationToken,
    sftp_bound: &Arc<std::sync::atomic::AtomicBool>,
) -> Result<Option<std::net::SocketAddr>> {
    if !config.http.enabled {
        return Ok(None);
    }
    {
        let health = crate::telemetry::http::Health {
            store: store.clone(),
            database_url: config.database_url(),
            data_dir: config.data_dir.clone(),
            sftp_bound: config.sftp.enabled.then(|| sftp_bound.clone()),
        };
        let http = crate::telemetry::http::HttpServer::bind(&config.http.listen, config.http.limits(), health)
            .await
            .with_context(|| format!("while binding the HTTP listener ([http] listen = {})", config.http.listen))?;
        let addr = http.local_addr()?;
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz over HTTP");
        let shutdown = shutdown.clone();
        tasks.spawn(async move { http.run(shutdown).await.context("the HTTP server failed") });
        Ok(Some(addr))
    }
}

/// Webhooks, retention, the watcher and the workers.
fn start_pipeline(
    config: &Config,
    ctx: Arc<Context>,
    store: &Store,
    layout: Layout,
    tasks: &mut Parts,
    shutdown: &CancellationToken,
) {
    {
        let (store, settings, stop) = (store.clone(), config.webhooks.clone(), shutdown.clone());
        tasks.spawn(supervised("webhooks", shutdown.clone(), move || {
            crate::webhooks::run(store.clone(), settings.clone(), stop.clone())
        }));
    }
    {
        let (layout, store, settings, stop) =
            (layout.clone(), store.clone(), config.retention.clone(), shutdown.clone());
        tasks.spawn(supervised("retention", shutdown.clone(), move || {
            crate::retention::run(layout.clone(), store.clone(), settings.clone(), stop.clone())
        }));
    }
    let wake = ctx.wake.clone();
    {
        let (ctx, wake, shutdown) = (ctx.clone(), wake.clone(), shutdown.clone());
        tasks.spawn(supervised("watcher", shutdown.clone(), move || {
            let (ctx, wake, shutdown) = (ctx.clone(), wake.clone(), shutdown.clone());
            async move { watcher::run(ctx, Duration::from_secs(3), wake, shutdown).await }
        }));
    }
    {
        let (ctx, shutdown, workers, keep) = (ctx.clone(), shutdown.clone(), config.workers, config.keep_visible_secs);
        tasks.spawn(async move {
            worker::run(ctx, workers, keep, wake, shutdown).await;
            Ok(())
        });
    }
}

/// Runs a part of the daemon until `shutdown`, starting it again (after a
/// pause) whenever it fails or panics: one bad event never stops the daemon.
async fn supervised<F, Fut>(name: &'static str, shutdown: CancellationToken, start: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    while !shutdown.is_cancelled() {
        let failure = match tokio::spawn(start()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("{e:#}"),
            Err(e) => format!("{e}"),
        };
        tracing::error!(part = name, error = %failure, "a part of the daemon failed; starting it again");
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    Ok(())
}

/// Raises the soft limit of open files to the hard limit: every SFTP
/// session, upload and job holds file descriptors.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(limit = ?limit.maximum, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
}

/// The SFTP server records who uploaded each file in an extended attribute
/// and refuses uploads it cannot label; say so at start, not at the first upload.
fn check_uploader_records(layout: &Layout) -> Result<()> {
    let probe = layout.accounts_root().join(format!(".intake-xattr-probe.{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("while writing {}", probe.display()))?;
    let labelled = crate::mailbox::set_uploader(&probe, "probe");
    let _ = std::fs::remove_file(&probe);
    labelled.with_context(|| {
        format!(
            "the file system of {} does not take user extended attributes, which intake's SFTP server \
             needs to record who uploaded a file; put data_dir on ext4, xfs, btrfs or tmpfs (Linux >= 6.6)",
            layout.data_dir().display()
        )
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
