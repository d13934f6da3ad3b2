//! The SSH side: listener, connection limits, login, the `sftp` subsystem and
//! the few exec commands of [`super::exec`] (legacy scp, checksums). Shell,
//! pty, env, forwarding and every other command are refused.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use russh::keys::{Algorithm, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, Preferred, SshId};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::auth::{key_is_authorized, PasswordChecker};
use super::config::MaxStartups;
use super::fs::{AccountFs, FsShared, OpenFiles, SessionUser, MAX_CLIENT_PACKET};
use super::guard::{Counter, Slot, Startups};
use super::jail::Folder;
use super::{exec, host_key, LoginLimit, SftpError, SftpSettings, UserDirectory, UPLOAD_TEMP_PREFIX};
use crate::domain::user::SftpUser;
use crate::penalties::Penalties;

/// How long `run` waits for sessions to close after shutdown before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a trusted balancer may take to send a connection's PROXY header.
const PROXY_HEADER_WAIT: Duration = Duration::from_secs(10);
/// How often the sweeper looks for abandoned client temp files, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// Per-channel SSH window and packet size. The packet size is the largest
/// russh takes (a TCP segment's): a client's 32 KiB SFTP write then travels
/// as one SSH message instead of 32 KiB plus a small tail, which a
/// stop-and-wait client otherwise sends only after the first part's ACK
/// (see BENCHMARKS.md).
const WINDOW_SIZE: u32 = 2 * 1024 * 1024;
const MAXIMUM_PACKET_SIZE: u32 = 65535;

/// The embedded SFTP server, bound and ready to [`run`](SftpServer::run).
pub struct SftpServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    stale_after: Duration,
    /// How long open sessions may go on after a stop before they are cut.
    drain: Duration,
}

/// State shared by all connections.
struct Shared {
    users: Arc<dyn UserDirectory>,
    accounts_root: PathBuf,
    allow_ssh_rsa_sha1: bool,
    passwords: Arc<PasswordChecker>,
    /// Failed logins counted by this process (with the API's token
    /// failures, see [`SftpServer::share_penalties`]); `users` may share
    /// them with other nodes (PostgreSQL).
    penalties: Arc<Penalties>,
    login_limit: LoginLimit,
    /// Connections not logged in yet, per source address.
    per_source: Arc<Counter<IpAddr>>,
    /// Connections not logged in yet, all together (MaxStartups).
    startups: Arc<Startups>,
    /// Open channels (sessions) per account, all connections together.
    per_account: Arc<Counter<String>>,
    max_channels_per_connection: usize,
    login_grace: Duration,
    /// How long a connection may take to send its SSH identification.
    ident_timeout: Duration,
    /// Balancers whose connections start with a PROXY protocol header.
    proxies: Vec<IpAddr>,
    /// The methods every rejection offers again (see `reject`).
    methods: MethodSet,
    fs: Arc<FsShared>,
}

impl Shared {
    /// Refused by this process's count, or by the count all nodes share.
    async fn refused(&self, ip: IpAddr) -> bool {
        if self.penalties.is_penalised(ip) {
            return true;
        }
        if self.login_limit.max_failures == 0 {
            return false;
        }
        match self.users.login_refused(ip, self.login_limit).await {
            Ok(Some(true)) => {
                tracing::info!(source = %ip, "login refused: too many failed logins from this address on the nodes");
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the login failures nodes share; counting this node's only");
                false
            }
        }
    }

    /// Counts a failed login here and for all nodes; whether it is refused now.
    async fn record_failure(&self, ip: IpAddr) -> bool {
        let here = self.penalties.record_failure(ip);
        self.record_shared_failure(ip).await || here
    }

    async fn record_shared_failure(&self, ip: IpAddr) -> bool {
        if self.login_limit.max_failures == 0 {
            return false;
        }
        match self.users.record_login_failure(ip, self.login_limit).await {
            Ok(refused) => refused.unwrap_or(false),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count a failed login for all nodes; counted on this node");
                false
            }
        }
    }
}

impl SftpServer {
    /// Loads or generates (mode 0600) the host keys (the Ed25519 key at
    /// host_key_path and an ECDSA P-256 key beside it, or `settings.host_keys`),
    /// binds settings.listen (may be 127.0.0.1:0 in tests).
    pub async fn bind(
        settings: &SftpSettings,
        host_key_path: &Path,
        accounts_root: PathBuf,
        users: Arc<dyn UserDirectory>,
    ) -> Result<Self, SftpError> {
        let host_keys = host_key::load_all(&host_key::paths(&settings.host_keys, host_key_path))?;
        let max_startups = MaxStartups::parse(&settings.max_startups).ok_or_else(|| {
            SftpError::Config(format!("max_startups `{}` is not start:rate:full", settings.max_startups))
        })?;
        std::fs::create_dir_all(&accounts_root)
            .map_err(|source| SftpError::AccountsRoot { path: accounts_root.display().to_string(), source })?;
        let node_id = if settings.node_id.is_empty() { "local".to_owned() } else { settings.node_id.clone() };
        remove_stale_uploads(&accounts_root, &node_id);

        let listener = TcpListener::bind(settings.listen.as_str())
            .await
            .map_err(|source| SftpError::Bind { addr: settings.listen.clone(), source })?;
        let local_addr =
            listener.local_addr().map_err(|source| SftpError::Bind { addr: settings.listen.clone(), source })?;

        let methods = login_methods();
        let login_limit = LoginLimit {
            max_failures: settings.max_login_failures_per_source,
            window: Duration::from_secs(settings.login_penalty_secs),
        };
        let config = ssh_config(settings, host_keys, methods.clone());

        let shared = Arc::new(Shared {
            users: Arc::clone(&users),
            accounts_root,
            allow_ssh_rsa_sha1: settings.allow_ssh_rsa_sha1,
            passwords: PasswordChecker::new(settings.max_concurrent_password_checks),
            penalties: Arc::new(Penalties::new(login_limit.max_failures, login_limit.window)),
            login_limit,
            per_source: Counter::new(settings.max_connections_per_source.max(1)),
            startups: Startups::new(max_startups),
            per_account: Counter::new(settings.max_sessions_per_account.max(1)),
            max_channels_per_connection: settings.max_channels_per_connection.max(1),
            login_grace: Duration::from_secs(settings.login_grace_secs.max(1)),
            ident_timeout: Duration::from_secs(settings.ident_timeout_secs.max(1)),
            proxies: settings.proxy_protocol_from.clone(),
            methods,
            fs: Arc::new(FsShared {
                max_upload_bytes: settings.max_upload_bytes,
                handles_per_account: Counter::new(settings.max_handles_per_account.max(1)),
                open_files: Arc::new(OpenFiles::default()),
                node_id: node_id.clone(),
                directory: Arc::clone(&users),
                publisher: Default::default(),
                publish_wait: Duration::from_secs(settings.publish_wait_secs),
                partials: super::partial::Limits {
                    keep_for: Duration::from_secs(settings.resume_keep_secs),
                    max_count: settings.max_partial_uploads_per_account,
                    max_bytes: settings.max_partial_bytes_per_account,
                },
            }),
        });
        tracing::info!(listen = %local_addr, "SFTP server listening");
        let stale_after = Duration::from_secs(settings.stale_temp_secs.max(1));
        let drain = Duration::from_secs(settings.shutdown_drain_secs);
        Ok(Self { listener, local_addr, config: Arc::new(config), shared, stale_after, drain })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The per-source count of failed logins this server refuses by.
    pub fn penalties(&self) -> Arc<Penalties> {
        Arc::clone(&self.shared.penalties)
    }

    /// Serves until `shutdown` is cancelled: then stops accepting, and returns once sessions are closed or after a short grace.
    ///
    /// Open sessions are disconnected at shutdown; their unfinished uploads
    /// are discarded (clients retry), finished ones are already published.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SftpError> {
        let Self { listener, config, shared, stale_after, drain, .. } = self;
        // Ended after the drain, not at `shutdown`: transfers under way may finish.
        let sessions = CancellationToken::new();
        let mut connections = JoinSet::new();
        // Which peer each connection task serves, to name it if it panics.
        let mut peers: HashMap<tokio::task::Id, SocketAddr> = HashMap::new();
        let sweeper = tokio::spawn(sweep_client_temps(Arc::clone(&shared), stale_after, shutdown.clone()));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(done) = connections.join_next_with_id(), if !connections.is_empty() => {
                    let id = match &done { Ok((id, ())) => *id, Err(e) => e.id() };
                    let peer = peers.remove(&id);
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::error!(peer = ?peer, "an SSH connection's task panicked; that connection was dropped, the server goes on");
                        }
                    }
                }
                accepted = listener.accept() => {
                    let (socket, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(error = %e, "SFTP accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let (shared, config) = (Arc::clone(&shared), Arc::clone(&config));
                    let task = connections.spawn(accept_connection(shared, config, socket, peer, sessions.child_token()));
                    peers.insert(task.id(), peer);
                }
            }
        }
        sweeper.abort();
        drop(listener);
        tracing::info!(
            sessions = connections.len(),
            drain_secs = drain.as_secs(),
            "SFTP server stopping: no new connections; open sessions may finish their transfers"
        );
        let _ = tokio::time::timeout(drain, async { while connections.join_next().await.is_some() {} }).await;
        sessions.cancel();
        let drained =
            tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            connections.abort_all();
            while connections.join_next().await.is_some() {}
        }
        Ok(())
    }
}

/// One accepted connection: the client it serves (from the PROXY header when
/// it comes from a trusted balancer), the admission checks, the session.
async fn accept_connection(
    shared: Arc<Shared>,
    config: Arc<russh::server::Config>,
    mut socket: tokio::net::TcpStream,
    peer: SocketAddr,
    sessions: CancellationToken,
) {
    let mut startup = None;
    let client = if shared.proxies.contains(&peer.ip()) {
        // Counted among the connections not logged in while its header is awaited.
        let Some(admitted) = shared.startups.try_admit(peer.ip()) else {
            tracing::warn!(balancer = %peer, "connection dropped: too many connections are not logged in (max_startups)");
            return;
        };
        startup = Some(admitted);
        match super::proxy::read_header(&mut socket, PROXY_HEADER_WAIT).await {
            Ok(client) => client.unwrap_or(peer),
            Err(e) => {
                tracing::info!(balancer = %peer, error = %e, "connection dropped: no valid PROXY protocol header");
                return;
            }
        }
    } else {
        peer
    };
    let Some(pre_auth) = admit(&shared, client, startup) else { return };
    let authed = CancellationToken::new();
    let watch = PreAuthWatch {
        progress: pre_auth.startup.progress.clone(),
        evicted: pre_auth.startup.evicted.clone(),
        ident_timeout: shared.ident_timeout,
    };
    let handler = SshSession::new(Arc::clone(&shared), client, pre_auth, authed.clone());
    let span = handler.span.clone();
    serve_connection(config, socket, handler, sessions, authed, shared.login_grace, watch).instrument(span).await
}

/// The checks a connection passes before its SSH handshake: the source's
/// penalty, its connections not logged in, MaxStartups.
fn admit(shared: &Shared, client: SocketAddr, startup: Option<super::guard::Startup>) -> Option<PreAuth> {
    if shared.penalties.is_penalised(client.ip()) {
        tracing::info!(peer = %client, "connection refused: too many failed logins from this address");
        return None;
    }
    let Some(source_slot) = shared.per_source.try_acquire(client.ip()) else {
        tracing::warn!(peer = %client, "connection refused: too many connections from this address are not logged in");
        return None;
    };
    let Some(startup) = startup.or_else(|| shared.startups.try_admit(client.ip())) else {
        tracing::warn!(peer = %client, "connection dropped: too many connections are not logged in (max_startups)");
        return None;
    };
    Some(PreAuth { _source: source_slot, startup })
}

/// What a connection holds until it logs in: its place in the per-source
/// and the global (MaxStartups) counts of connections not logged in.
struct PreAuth {
    _source: Slot<IpAddr>,
    startup: super::guard::Startup,
}

/// What `serve_connection` watches until the login: how far the connection
/// came, whether a newcomer evicted it, how long it may take to identify.
struct PreAuthWatch {
    progress: Arc<std::sync::atomic::AtomicU8>,
    evicted: CancellationToken,
    ident_timeout: Duration,
}

async fn serve_connection(
    config: Arc<russh::server::Config>,
    socket: tokio::net::TcpStream,
    handler: SshSession,
    shutdown: CancellationToken,
    authed: CancellationToken,
    login_grace: Duration,
    watch: PreAuthWatch,
) {
    let peer = handler.peer;
    let _counted = crate::telemetry::metrics().sftp_connection();
    if let Err(e) = socket.set_nodelay(true) {
        tracing::debug!(peer = %peer, error = %e, "set_nodelay failed");
    }
    // The login grace time counts from accept and covers the handshake too.
    let grace = tokio::time::sleep(login_grace);
    tokio::pin!(grace);
    let PreAuthWatch { progress, evicted, ident_timeout } = watch;
    let session = tokio::select! {
        s = tokio::time::timeout(ident_timeout, russh::server::run_stream(config, socket, handler)) => match s {
            Ok(s) => s,
            Err(_) => {
                tracing::info!(peer = %peer, ident_timeout_secs = ident_timeout.as_secs(), "connection dropped: no SSH identification in time");
                return;
            }
        },
        _ = evicted.cancelled() => return,
        _ = shutdown.cancelled() => return,
        _ = &mut grace => {
            tracing::info!(peer = %peer, grace_secs = login_grace.as_secs(), "connection dropped: no login within the login grace time");
            return;
        }
    };
    let session = match session {
        Ok(session) => session,
        Err(e) => {
            log_connection_error(peer, &e, "SSH handshake failed");
            return;
        }
    };
    progress.fetch_max(super::guard::progress::IDENTIFIED, std::sync::atomic::Ordering::Relaxed);
    let handle = session.handle();
    tokio::pin!(session);
    let mut grace_over = false;
    loop {
        tokio::select! {
            result = &mut session => {
                if let Err(e) = result {
                    log_connection_error(peer, &e, "SSH connection ended with an error");
                }
                return;
            }
            _ = &mut grace, if !grace_over => {
                grace_over = true;
                if !authed.is_cancelled() {
                    tracing::info!(peer = %peer, grace_secs = login_grace.as_secs(), "connection dropped: no login within the login grace time");
                    let _ = handle
                        .disconnect(russh::Disconnect::ByApplication, "login grace time over".into(), "en".into())
                        .await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut session).await;
                    return;
                }
            }
            _ = evicted.cancelled(), if !authed.is_cancelled() => {
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, "too many connections not logged in".into(), "en".into())
                    .await;
                return;
            }
            _ = shutdown.cancelled() => {
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, "server shutting down".into(), "en".into())
                    .await;
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut session).await;
                return;
            }
        }
    }
}

/// A failed algorithm negotiation is logged at INFO with what the client
/// offered, so support can tell why a client cannot connect; other
/// connection errors (resets, timeouts) only at debug.
fn log_connection_error(peer: SocketAddr, error: &russh::Error, what: &str) {
    match error {
        russh::Error::NoCommonAlgo { kind, ours, theirs } => tracing::info!(
            peer = %peer, kind = ?kind, client_offered = %theirs.join(","), server_offers = %ours.join(","),
            "SSH algorithm negotiation failed: no algorithm in common with the client"
        ),
        other => tracing::debug!(peer = %peer, error = %other, "{what}"),
    }
}

/// Removes abandoned client temp files and expired partial uploads now and
/// then, until `shutdown`.
async fn sweep_client_temps(shared: Arc<Shared>, stale_after: Duration, shutdown: CancellationToken) {
    let keep_partials = shared.fs.partials.keep_for;
    let shortest = if keep_partials.is_zero() { stale_after } else { stale_after.min(keep_partials) };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep((shortest / 4).clamp(Duration::from_secs(1), SWEEP_EVERY)) => {}
        }
        let (root, open) = (shared.accounts_root.clone(), Arc::clone(&shared.fs.open_files));
        let _ = tokio::task::spawn_blocking(move || {
            sweep_stale_client_temps(&root, &open, stale_after);
            super::partial::sweep_expired(&root, keep_partials);
        })
        .await;
    }
}

/// Public keys and passwords.
fn login_methods() -> MethodSet {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    methods.push(MethodKind::Password);
    methods
}

/// The SSH transport's settings: algorithms, windows, timeouts.
fn ssh_config(
    settings: &SftpSettings,
    host_keys: Vec<russh::keys::PrivateKey>,
    methods: MethodSet,
) -> russh::server::Config {
    let mut preferred = Preferred::default();
    // server-sig-algs is derived from this list: advertise ssh-rsa (SHA-1)
    // only when it is allowed.
    if !settings.allow_ssh_rsa_sha1 {
        preferred.key =
            Cow::Owned(preferred.key.iter().filter(|a| **a != Algorithm::Rsa { hash: None }).cloned().collect());
    }
    preferred.compression = Cow::Borrowed(&[russh::compression::NONE]);
    // ecdh-sha2-nistp256 for clients that know neither curve25519 nor
    // group-exchange with big groups (JSch 0.1.5x, old Java and .NET stacks).
    let mut kex: Vec<russh::kex::Name> = preferred.kex.to_vec();
    let at = kex.iter().position(|k| *k == russh::kex::EXTENSION_SUPPORT_AS_CLIENT).unwrap_or(kex.len());
    kex.insert(at, russh::kex::ECDH_SHA2_NISTP256);
    preferred.kex = Cow::Owned(kex);
    russh::server::Config {
        server_id: SshId::Standard(Cow::Borrowed("SSH-2.0-intake")),
        methods: methods.clone(),
        auth_rejection_time: Duration::from_millis(settings.auth_rejection_millis),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: host_keys,
        window_size: WINDOW_SIZE,
        maximum_packet_size: MAXIMUM_PACKET_SIZE,
        // Room for a whole window of queued messages: with the default (100)
        // large downloads could deadlock (see fs::MAX_READ).
        channel_buffer_size: 1024,
        max_auth_attempts: 6,
        inactivity_timeout: Some(Duration::from_secs(settings.idle_timeout_secs.max(1))),
        keepalive_interval: (settings.keepalive_secs > 0).then(|| Duration::from_secs(settings.keepalive_secs)),
        keepalive_max: 3,
        // Without it libssh2/curl uploads crawl at ~1.5 MB/s.
        nodelay: true,
        preferred,
        ..Default::default()
    }
}

/// Removes client temp files (names the watcher never processes, such as
/// `x.csv.filepart` or `.in.x.csv`) and upload temps of any node left in
/// `/customers` longer than `stale_after` by mtime (an upload being written
/// is never that old), unless a session has them open. Returns how many.
pub(crate) fn sweep_stale_client_temps(accounts_root: &Path, open: &OpenFiles, stale_after: Duration) -> usize {
    let Ok(accounts) = std::fs::read_dir(accounts_root) else {
        return 0;
    };
    let mut removed = 0;
    for folder in accounts.flatten().flat_map(|a| Folder::UPLOADS.map(|f| a.path().join(f.name()))) {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let account = folder.parent().and_then(Path::file_name).unwrap_or_default().to_string_lossy().into_owned();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else { continue };
            // Upload temps count too: a node that died leaves its own behind.
            let upload_temp = name.starts_with(UPLOAD_TEMP_PREFIX);
            if crate::mailbox::is_upload_name(&name) || (crate::mailbox::is_reserved_name(&name) && !upload_temp) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let age = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok());
            if !meta.file_type().is_file() || age.is_none_or(|a| a < stale_after) {
                continue;
            }
            let path = entry.path();
            if open.is_open(&path) {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                removed += 1;
                tracing::info!(account = %account, file = %name.escape_debug(), "removed an abandoned client temp file");
            }
        }
    }
    removed
}

/// Removes the upload temp files an earlier start of this node left (killed
/// mid-upload); the node's lock says none is being written. Other nodes'
/// temps are theirs: the sweeper removes them once stale.
fn remove_stale_uploads(accounts_root: &Path, node_id: &str) {
    let Ok(accounts) = std::fs::read_dir(accounts_root) else {
        return;
    };
    for folder in accounts.flatten().flat_map(|a| Folder::UPLOADS.map(|f| a.path().join(f.name()))) {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let is_temp = entry.file_name().to_str().is_some_and(|n| crate::mailbox::is_upload_temp_of(n, node_id));
            if is_temp && entry.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// A logged-in user, ready to open the SFTP subsystem.
struct LoggedIn {
    user: SftpUser,
    root: PathBuf,
}

/// One SSH connection.
struct SshSession {
    shared: Arc<Shared>,
    peer: SocketAddr,
    logged_in: Option<LoggedIn>,
    /// Released at login: only connections not logged in count per source
    /// and toward MaxStartups.
    pre_auth: Option<PreAuth>,
    /// Cancelled at login (ends the login grace timer).
    authed: CancellationToken,
    /// Channels opened and not started yet.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// This connection's open channels, counted.
    channel_count: Arc<Counter<()>>,
    /// The slots of channels not started yet; a started channel's slots
    /// move into its task and are freed when it ends (russh reports no
    /// close for a channel the server closed first).
    channel_slots: HashMap<ChannelId, ChannelSlots>,
    /// `sftp_session{peer, user, account}`: the connection's own log lines,
    /// with user and account once logged in.
    span: tracing::Span,
    /// A key was offered and refused; counted as one failure if the
    /// connection ends without a login.
    key_refused: bool,
}

impl SshSession {
    fn new(shared: Arc<Shared>, peer: SocketAddr, pre_auth: PreAuth, authed: CancellationToken) -> Self {
        Self {
            shared: Arc::clone(&shared),
            peer,
            logged_in: None,
            pre_auth: Some(pre_auth),
            authed,
            channels: HashMap::new(),
            channel_count: Counter::new(shared.max_channels_per_connection),
            channel_slots: HashMap::new(),
            key_refused: false,
            span: tracing::info_span!("sftp_session", peer = %peer, user = tracing::field::Empty,
                account = tracing::field::Empty),
        }
    }

    /// A rejection that offers every method again. russh drops the method
    /// just tried from the list when told nothing (`proceed_with_methods:
    /// None`): after one wrong password the client is told "publickey"
    /// only, so it cannot retry the password it has, and clients that
    /// retry anyway (paramiko) are left waiting for an answer.
    fn reject(&self) -> Auth {
        Auth::Reject { proceed_with_methods: Some(self.shared.methods.clone()), partial_success: false }
    }

    async fn lookup(&self, username: &str) -> Option<SftpUser> {
        match self.shared.users.find_user(username).await {
            Ok(user) => user,
            Err(e) => {
                tracing::error!(user = %username, error = %e, "user lookup failed");
                None
            }
        }
    }

    fn rsa_sha1_refused(&self, algorithm: &Algorithm) -> bool {
        *algorithm == (Algorithm::Rsa { hash: None }) && !self.shared.allow_ssh_rsa_sha1
    }

    fn key_accepted(&self, user: &SftpUser, key: &PublicKey, algorithm: &Algorithm) -> bool {
        !self.rsa_sha1_refused(algorithm) && key_is_authorized(&user.public_keys, key)
    }

    /// The connection asked to log in: past the key exchange, it is no
    /// longer among the first to be evicted.
    fn authenticating(&self) {
        if let Some(pre_auth) = &self.pre_auth {
            let progress = super::guard::progress::AUTHENTICATING;
            pre_auth.startup.progress.fetch_max(progress, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Prepares the account root and records the login.
    fn log_in(&mut self, user: SftpUser, method: &'static str) -> Auth {
        // An `AccountId` names exactly one folder under the accounts root.
        let root = self.shared.accounts_root.join(&user.account);
        for folder in Folder::ALL {
            let dir = root.join(folder.name());
            if let Err(e) = std::fs::create_dir_all(&dir) {
                tracing::error!(account = %user.account, error = %e, "cannot create the account folders");
                return self.reject();
            }
        }
        // The root and its folders must be real directories, never symlinks.
        let real_dirs = std::iter::once(root.clone())
            .chain(Folder::ALL.iter().map(|f| root.join(f.name())))
            .all(|p| std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_dir()));
        if !real_dirs {
            tracing::error!(account = %user.account, "login refused: an account folder is not a plain directory");
            return self.reject();
        }
        self.span.record("user", user.username.as_str()).record("account", user.account.as_str());
        tracing::info!(user = %user.username, account = %user.account, peer = %self.peer, method, "SFTP login");
        crate::telemetry::metrics().sftp_login("success");
        self.logged_in = Some(LoggedIn { user, root });
        self.pre_auth = None;
        self.authed.cancel();
        Auth::Accept
    }
}

impl Drop for SshSession {
    fn drop(&mut self) {
        if self.logged_in.is_none() && self.key_refused {
            crate::telemetry::metrics().sftp_login("failure");
            self.shared.penalties.record_failure(self.peer.ip());
            // The count other nodes see, without holding up the drop.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (shared, ip) = (self.shared.clone(), self.peer.ip());
                runtime.spawn(async move { shared.record_shared_failure(ip).await });
            }
        }
    }
}

impl russh::server::Handler for SshSession {
    type Error = russh::Error;

    #[tracing::instrument(name = "ssh", parent = &self.span, skip_all)]
    async fn auth_publickey_offered(&mut self, user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        self.authenticating();
        if self.shared.refused(self.peer.ip()).await {
            return Ok(self.reject());
        }
        if self.rsa_sha1_refused(offer.algorithm) {
            tracing::info!(user = %user, peer = %self.peer, "ssh-rsa (SHA-1) signature refused; the client should use rsa-sha2-256/512");
            self.key_refused = true;
            return Ok(self.reject());
        }
        let found = self.lookup(user).await;
        if found.is_some_and(|u| key_is_authorized(&u.public_keys, offer.public_key)) {
            return Ok(Auth::Accept);
        }
        self.key_refused = true;
        Ok(self.reject())
    }

    #[tracing::instrument(name = "ssh", parent = &self.span, skip_all)]
    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        self.authenticating();
        if self.shared.refused(self.peer.ip()).await {
            return Ok(self.reject());
        }
        match self.lookup(user).await {
            Some(u) if self.key_accepted(&u, key.public_key, key.algorithm) => Ok(self.log_in(u, "publickey")),
            _ => {
                self.key_refused = true;
                Ok(self.reject())
            }
        }
    }

    #[tracing::instrument(name = "ssh", parent = &self.span, skip_all)]
    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        self.authenticating();
        if self.shared.refused(self.peer.ip()).await {
            return Ok(self.reject());
        }
        let found = self.lookup(user).await;
        let hash = found.as_ref().and_then(|u| u.password_hash.as_deref());
        // Unknown user, no password set, wrong password: the same work and
        // the same answer.
        let ok = self.shared.passwords.verify(password, hash).await;
        match found {
            Some(u) if ok => Ok(self.log_in(u, "password")),
            _ => {
                crate::telemetry::metrics().sftp_login("failure");
                let now_refused = self.shared.record_failure(self.peer.ip()).await;
                tracing::info!(user = %user, peer = %self.peer, "SFTP login failed (password)");
                if now_refused {
                    tracing::warn!(peer = %self.peer, "too many failed logins: refusing this address for a while");
                }
                Ok(self.reject())
            }
        }
    }

    #[tracing::instrument(name = "ssh", parent = &self.span, skip_all)]
    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(logged_in) = &self.logged_in else {
            reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        };
        // Every open channel counts, whether it has started SFTP or not.
        let Some(connection) = self.channel_count.try_acquire(()) else {
            tracing::info!(user = %logged_in.user.username, peer = %self.peer, "channel refused: too many channels on this connection");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        let account = logged_in.user.account.clone();
        let Some(slot) = self.shared.per_account.try_acquire(account.to_string()) else {
            tracing::warn!(account = %account, peer = %self.peer, "session refused: too many sessions for this account");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        self.channel_slots.insert(channel.id(), ChannelSlots { _connection: connection, _account: slot });
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    #[tracing::instrument(name = "ssh", parent = &self.span, skip_all)]
    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(logged_in), true) = (&self.logged_in, name == "sftp") else {
            tracing::info!(peer = %self.peer, subsystem = %name, "subsystem refused");
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        let Some(channel) = self.channels.remove(&channel_id) else {
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        session.channel_success(channel_id)?;
        let fs = self.account_fs(logged_in);
        let slots = self.channel_slots.remove(&channel_id);
        let end = ChannelEnd { handle: session.handle(), channel: channel_id, _slots: slots };
        let stream = PacketGuard::new(channel.into_stream(), MAX_CLIENT_PACKET, Some(end));
        let sftp_config = russh_sftp::server::Config { max_client_packet_len: MAX_CLIENT_PACKET };
        russh_sftp::server::run_with_config(stream, fs, sftp_config).await;
        Ok(())
    }

    #[tracing::instrument(name = "ssh", parent = &self.span, skip_all)]
    async fn exec_request(
        &mut self,
        channel_id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(logged_in), Some(channel)) = (&self.logged_in, self.channels.remove(&channel_id)) else {
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        let user = logged_in.user.username.clone();
        let command = exec::parse(data);
        if let Err(refusal) = &command {
            tracing::info!(user = %user, peer = %self.peer, command = %exec::shown(data), reason = %refusal, "exec refused");
        } else {
            tracing::info!(user = %user, peer = %self.peer, command = %exec::shown(data), "exec");
        }
        // The request is accepted either way: a refused command answers on
        // stderr with a non-zero exit status, as a shell would, so that the
        // client prints why instead of "exec request failed".
        session.channel_success(channel_id)?;
        let fs = self.account_fs(logged_in);
        let slots = self.channel_slots.remove(&channel_id);
        tokio::spawn(
            async move {
                exec::run(command, channel, fs).await;
                drop(slots);
            }
            .instrument(self.span.clone()),
        );
        Ok(())
    }

    #[tracing::instrument(name = "ssh", parent = &self.span, skip_all)]
    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        tracing::info!(peer = %self.peer, "shell refused: this server only provides SFTP");
        self.refuse(channel, session)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn channel_eof(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        // A channel that never started SFTP: nothing more will happen on it.
        if self.channels.remove(&channel).is_some() {
            self.channel_slots.remove(&channel);
            session.close(channel)?;
        }
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        self.channel_slots.remove(&channel);
        Ok(())
    }
}

impl SshSession {
    fn refuse(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), russh::Error> {
        session.channel_failure(channel)?;
        if self.channels.remove(&channel).is_some() {
            self.channel_slots.remove(&channel);
            session.close(channel)?;
        }
        Ok(())
    }

    fn account_fs(&self, logged_in: &LoggedIn) -> AccountFs {
        let user = SessionUser {
            username: logged_in.user.username.clone(),
            account: logged_in.user.account.to_string(),
            can_upload: logged_in.user.scopes.create,
        };
        AccountFs::new(logged_in.root.clone(), user, Arc::clone(&self.shared.fs))
    }
}

/// How to tell the SSH channel the SFTP session is over: exit-status, EOF,
/// close, in that order (`scp` exits 1 without the exit-status).
struct ChannelEnd {
    handle: russh::server::Handle,
    channel: ChannelId,
    /// Freed once the channel is closed.
    _slots: Option<ChannelSlots>,
}

/// What an open channel holds: its place in the connection's and in the
/// account's channel counts.
struct ChannelSlots {
    _connection: Slot<()>,
    _account: Slot<String>,
}

/// Watches the SFTP packet framing of the client's byte stream and ends the
/// stream at the first packet over the limit. russh-sftp would answer such a
/// packet with an error and then read its body as new packets, out of step
/// for good; ending the stream closes the session instead.
///
/// It also owns the end of the channel: when russh-sftp drops the stream,
/// the exit-status goes out before the channel stream's own close.
struct PacketGuard<S: Send + 'static> {
    /// Always `Some` until dropped.
    inner: Option<S>,
    max_len: u32,
    header: [u8; 4],
    header_len: usize,
    body_left: u64,
    poisoned: bool,
    end: Option<ChannelEnd>,
}

impl<S: Send + 'static> PacketGuard<S> {
    fn new(inner: S, max_len: u32, end: Option<ChannelEnd>) -> Self {
        Self { inner: Some(inner), max_len, header: [0; 4], header_len: 0, body_left: 0, poisoned: false, end }
    }

    fn inner(&mut self) -> Pin<&mut S>
    where
        S: Unpin,
    {
        Pin::new(self.inner.as_mut().expect("stream present until drop"))
    }

    /// Advances the framing over `bytes`; false if a packet is too long.
    fn track(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let take = bytes.len().min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                bytes = &bytes[take..];
                self.body_left -= take as u64;
                continue;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if self.header_len == 4 {
                self.header_len = 0;
                let len = u32::from_be_bytes(self.header);
                if len > self.max_len {
                    return false;
                }
                self.body_left = u64::from(len);
            }
        }
        true
    }
}

impl<S: Send + 'static> Drop for PacketGuard<S> {
    fn drop(&mut self) {
        let (Some(inner), Some(end)) = (self.inner.take(), self.end.take()) else {
            return;
        };
        let status = u32::from(self.poisoned);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = end.handle.exit_status_request(end.channel, status).await;
                let _ = end.handle.eof(end.channel).await;
                let _ = end.handle.close(end.channel).await;
                // Dropping the channel stream sends its own (now redundant) close.
                drop(inner);
            });
        }
    }
}

impl<S: AsyncRead + Unpin + Send + 'static> AsyncRead for PacketGuard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.poisoned {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        match this.inner().poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = buf.filled()[before..].to_vec();
                if !this.track(&fresh) {
                    this.poisoned = true;
                    tracing::warn!("SFTP packet over the size limit; closing the session");
                    buf.set_filled(before);
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin + Send + 'static> AsyncWrite for PacketGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.inner().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packet_guard_follows_framing_across_reads() {
        let mut guard = PacketGuard::new((), 10, None);
        let mut stream = Vec::new();
        stream.extend_from_slice(&5u32.to_be_bytes());
        stream.extend_from_slice(b"hello");
        stream.extend_from_slice(&3u32.to_be_bytes());
        stream.extend_from_slice(b"abc");
        for chunk in stream.chunks(3) {
            assert!(guard.track(chunk));
        }
        let mut big = Vec::new();
        big.extend_from_slice(&11u32.to_be_bytes());
        assert!(!guard.track(&big[..2]) || !guard.track(&big[2..]));
    }
}
