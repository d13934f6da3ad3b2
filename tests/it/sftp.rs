//! The SFTP server in-process on 127.0.0.1:0 with a real Rust SSH/SFTP client:
//! the jail, atomic publish, limits and login. The user source is a HashMap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use intake::domain::user::{Scopes, SftpUser};
use intake::sftp::{hash_password, SftpServer, SftpSettings, UserDirectory};
use rand::RngCore;
use russh::client;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use russh::ChannelMsg;
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// A HashMap user directory.
#[derive(Default)]
pub(crate) struct Users(Mutex<HashMap<String, SftpUser>>);

impl Users {
    pub(crate) fn add(&self, user: SftpUser) {
        self.0.lock().unwrap().insert(user.username.clone(), user);
    }
}

#[async_trait::async_trait]
impl UserDirectory for Users {
    async fn find_user(&self, username: &str) -> Result<Option<SftpUser>, intake::sftp::DirectoryError> {
        Ok(self.0.lock().unwrap().get(username).cloned())
    }
}

pub(crate) fn user(name: &str, account: &str) -> SftpUser {
    SftpUser {
        username: name.to_owned(),
        account: intake::domain::AccountId::parse(account).unwrap(),
        public_keys: vec![],
        password_hash: None,
        scopes: Scopes { create: true, update: true },
    }
}

/// Settings for tests: ephemeral port, fast rejections.
pub(crate) fn test_settings() -> SftpSettings {
    SftpSettings { listen: "127.0.0.1:0".to_owned(), auth_rejection_millis: 10, ..SftpSettings::default() }
}

/// A running in-process SFTP server over a temp dir.
pub(crate) struct TestSftp {
    pub(crate) addr: SocketAddr,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) users: Arc<Users>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestSftp {
    pub(crate) async fn start(settings: SftpSettings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let users = Arc::new(Users::default());
        let server = SftpServer::bind(
            &settings,
            &dir.path().join("ssh_host_ed25519_key"),
            dir.path().join("accounts"),
            users.clone(),
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { server.run(token).await.unwrap() });
        Self { addr, dir, users, shutdown, task: Some(task) }
    }

    pub(crate) fn account_dir(&self, account: &str) -> PathBuf {
        self.dir.path().join("accounts").join(account)
    }

    /// Creates an account's folders, as a login would, to plant files first.
    pub(crate) fn folder(&self, account: &str, folder: &str) -> PathBuf {
        let dir = self.account_dir(account).join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(crate) async fn stop(&mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("server stops within its grace").unwrap();
    }
}

impl Drop for TestSftp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub(crate) fn new_key() -> PrivateKey {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

pub(crate) fn authorized_line(key: &PrivateKey) -> String {
    key.public_key().to_openssh().unwrap()
}

pub(crate) struct Client;

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

type Conn = client::Handle<Client>;

async fn connect(addr: SocketAddr) -> Result<Conn, russh::Error> {
    client::connect(Arc::new(client::Config::default()), addr, Client).await
}

pub(crate) async fn login_key(addr: SocketAddr, name: &str, key: &PrivateKey) -> Result<Conn, String> {
    let mut conn = connect(addr).await.map_err(|e| e.to_string())?;
    let auth = conn
        .authenticate_publickey(name, PrivateKeyWithHashAlg::new(Arc::new(key.clone()), None))
        .await
        .map_err(|e| e.to_string())?;
    if auth.success() {
        Ok(conn)
    } else {
        Err("refused".to_owned())
    }
}

pub(crate) async fn login_password(addr: SocketAddr, name: &str, password: &str) -> Result<Conn, String> {
    let mut conn = connect(addr).await.map_err(|e| e.to_string())?;
    let auth = conn.authenticate_password(name, password).await.map_err(|e| e.to_string())?;
    if auth.success() {
        Ok(conn)
    } else {
        Err("refused".to_owned())
    }
}

pub(crate) async fn open_sftp(conn: &Conn) -> Result<SftpSession, String> {
    let channel = conn.channel_open_session().await.map_err(|e| e.to_string())?;
    channel.request_subsystem(true, "sftp").await.map_err(|e| e.to_string())?;
    SftpSession::new(channel.into_stream()).await.map_err(|e| e.to_string())
}

/// A server with user `alice` (account `acme`, key) and returns her session.
async fn alice(settings: SftpSettings) -> (TestSftp, Conn, SftpSession) {
    let server = TestSftp::start(settings).await;
    let key = new_key();
    let mut u = user("alice", "acme");
    u.public_keys = vec![authorized_line(&key)];
    server.users.add(u);
    let conn = login_key(server.addr, "alice", &key).await.unwrap();
    let sftp = open_sftp(&conn).await.unwrap();
    (server, conn, sftp)
}

/// The SFTP status code of a failed request.
fn status<T>(result: Result<T, russh_sftp::client::error::Error>) -> StatusCode {
    match result {
        Ok(_) => panic!("expected an error status, got success"),
        Err(russh_sftp::client::error::Error::Status(s)) => s.status_code,
        Err(other) => panic!("expected an SFTP status, got {other:?}"),
    }
}

fn visible_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

async fn list(sftp: &SftpSession, path: &str) -> Vec<String> {
    let mut names: Vec<String> = sftp.read_dir(path).await.unwrap().map(|e| e.file_name()).collect();
    names.sort();
    names
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_login_lands_in_the_account_root_with_exactly_six_folders() {
    let (server, _conn, sftp) = alice(test_settings()).await;
    assert_eq!(sftp.canonicalize(".").await.unwrap(), "/");
    assert_eq!(sftp.canonicalize("/customers/../outbox").await.unwrap(), "/outbox");
    assert_eq!(list(&sftp, "/").await, ["archive", "customers", "keys", "mappings", "outbox", "validate"]);
    assert_eq!(list(&sftp, ".").await, ["archive", "customers", "keys", "mappings", "outbox", "validate"]);
    let meta = sftp.metadata("/customers").await.unwrap();
    assert!(meta.is_dir());
    for folder in ["customers", "validate", "outbox", "archive"] {
        assert!(server.account_dir("acme").join(folder).is_dir());
    }
}

#[tokio::test]
async fn validate_takes_uploads_like_customers_but_files_never_move_between_them() {
    let (server, _conn, sftp) = alice(test_settings()).await;
    let validate = server.account_dir("acme").join("validate");
    let mut file = sftp.create("/validate/.May.csv.part").await.unwrap();
    file.write_all(b"ref,address\na1,+15555001234\n").await.unwrap();
    file.shutdown().await.unwrap();
    sftp.rename("/validate/.May.csv.part", "/validate/May.csv").await.unwrap();
    assert_eq!(visible_names(&validate), ["May.csv"]);
    assert_eq!(list(&sftp, "/validate").await, ["May.csv"]);
    assert_eq!(status(sftp.rename("/validate/May.csv", "/customers/May.csv").await), StatusCode::PermissionDenied);
    assert_eq!(status(sftp.rename("/validate/May.csv", "/outbox/May.csv").await), StatusCode::PermissionDenied);
    assert_eq!(visible_names(&validate), ["May.csv"], "left where it was");
    sftp.remove_file("/validate/May.csv").await.unwrap();
    assert!(visible_names(&validate).is_empty());
    let long = format!("/validate/{}.csv.gz", "x".repeat(230));
    assert_eq!(status(sftp.create(long.as_str()).await), StatusCode::Failure, "the name rules hold here too");
}

#[tokio::test]
async fn an_upload_is_published_under_its_name_only_when_closed() {
    let (server, _conn, sftp) = alice(test_settings()).await;
    let customers = server.account_dir("acme").join("customers");
    let mut file = sftp.create("/customers/May.csv").await.unwrap();
    file.write_all(b"ref,address\n").await.unwrap();
    file.flush().await.unwrap();
    // While open: only the hidden temp file exists, and no listing shows it.
    let names = visible_names(&customers);
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with(".intake-upload."), "{names:?}");
    assert!(list(&sftp, "/customers").await.is_empty());
    let hidden = format!("/customers/{}", names[0]);
    assert_eq!(status(sftp.metadata(hidden.as_str()).await), StatusCode::NoSuchFile);
    assert_eq!(status(sftp.open(hidden.as_str()).await), StatusCode::NoSuchFile);

    file.write_all(b"a1,+15555001234\n").await.unwrap();
    file.shutdown().await.unwrap();
    assert_eq!(visible_names(&customers), ["May.csv"]);
    assert_eq!(std::fs::read(customers.join("May.csv")).unwrap(), b"ref,address\na1,+15555001234\n");
    let meta = sftp.metadata("/customers/May.csv").await.unwrap();
    assert_eq!(meta.size, Some(28));
    assert_eq!(sftp.read("/customers/May.csv").await.unwrap().len(), 28);

    // A second upload with the same name replaces the first atomically on
    // close, once the first was taken (as the watcher does: marked, linked
    // into its job's spool); until then the close waits.
    let mut again = sftp.create("/customers/May.csv").await.unwrap();
    again.write_all(b"ref,address\n").await.unwrap();
    again.flush().await.unwrap();
    assert_eq!(std::fs::read(customers.join("May.csv")).unwrap().len(), 28);
    let spooled = server.dir.path().join("spooled.csv");
    let taker = {
        let (first, spooled) = (customers.join("May.csv"), spooled.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            intake::mailbox::set_taken_by(&first, "job-1").unwrap();
            std::fs::hard_link(&first, &spooled).unwrap();
        })
    };
    again.shutdown().await.unwrap();
    taker.await.unwrap();
    assert_eq!(std::fs::read(customers.join("May.csv")).unwrap(), b"ref,address\n");
    assert_eq!(std::fs::read(&spooled).unwrap().len(), 28, "the taken upload is its job's still");
    assert_eq!(visible_names(&customers), ["May.csv"]);
}

/// An upload never replaces an earlier one of its name that was not taken:
/// after `publish_wait_secs` it is refused with a status that says why, by
/// CLOSE and by RENAME alike, and the earlier one stays.
#[tokio::test]
async fn an_upload_over_an_untaken_one_of_its_name_is_refused_after_the_wait() {
    let (server, _conn, sftp) = alice(SftpSettings { publish_wait_secs: 1, ..test_settings() }).await;
    let customers = server.account_dir("acme").join("customers");
    std::fs::write(customers.join("x.csv"), b"first").unwrap();
    let mut file = sftp.create("/customers/x.csv").await.unwrap();
    file.write_all(b"second").await.unwrap();
    let refused = file.shutdown().await;
    assert!(refused.is_err(), "the close is refused");
    let mut part = sftp.create("/customers/x.csv.part").await.unwrap();
    part.write_all(b"third").await.unwrap();
    part.shutdown().await.unwrap();
    match sftp.rename("/customers/x.csv.part", "/customers/x.csv").await {
        Err(russh_sftp::client::error::Error::Status(s)) => {
            assert_eq!(s.status_code, StatusCode::Failure);
            assert!(s.error_message.contains("earlier upload of this name"), "{}", s.error_message);
        }
        other => panic!("the rename must be refused: {other:?}"),
    }
    assert_eq!(std::fs::read(customers.join("x.csv")).unwrap(), b"first");
    assert_eq!(visible_names(&customers), ["x.csv", "x.csv.part"]);
}

/// A disconnect mid-upload publishes nothing: the part received is kept
/// under a hidden reserved name, for resuming (`tests/it/resume.rs`), and
/// with resuming off (`resume_keep_secs = 0`) nothing at all is left.
#[tokio::test]
async fn a_disconnect_mid_upload_publishes_nothing() {
    for keep in [86_400, 0] {
        let (server, conn, sftp) = alice(SftpSettings { resume_keep_secs: keep, ..test_settings() }).await;
        let customers = server.account_dir("acme").join("customers");
        let mut file = sftp.create("/customers/big.csv").await.unwrap();
        file.write_all(&vec![b'x'; 100_000]).await.unwrap();
        file.flush().await.unwrap();
        assert_eq!(visible_names(&customers).len(), 1);
        conn.disconnect(russh::Disconnect::ByApplication, "bye", "en").await.unwrap();
        drop(file);
        drop(sftp);
        wait_until("the temp file is gone", || {
            !visible_names(&customers).iter().any(|n| n.starts_with(".intake-upload."))
        })
        .await;
        let names = visible_names(&customers);
        if keep == 0 {
            assert!(names.is_empty(), "{names:?}");
        } else {
            assert!(names.len() == 1 && names[0].starts_with(".intake-partial."), "kept hidden: {names:?}");
            assert_eq!(std::fs::metadata(customers.join(&names[0])).unwrap().len(), 100_000);
        }
    }
}

#[tokio::test]
async fn an_upload_to_a_temp_name_is_published_by_the_rename() {
    let (server, _conn, sftp) = alice(test_settings()).await;
    let customers = server.account_dir("acme").join("customers");
    // An earlier upload of the name that a job took (marked, linked into its spool).
    std::fs::write(customers.join("x.csv"), b"old").unwrap();
    intake::mailbox::set_taken_by(&customers.join("x.csv"), "job-1").unwrap();
    std::fs::hard_link(customers.join("x.csv"), server.dir.path().join("spooled.csv")).unwrap();
    let mut file = sftp.create("/customers/x.csv.filepart").await.unwrap();
    file.write_all(b"ref,address\n").await.unwrap();
    file.shutdown().await.unwrap();
    assert_eq!(visible_names(&customers), ["x.csv", "x.csv.filepart"]);
    sftp.rename("/customers/x.csv.filepart", "/customers/x.csv").await.unwrap();
    assert_eq!(visible_names(&customers), ["x.csv"]);
    assert_eq!(std::fs::read(customers.join("x.csv")).unwrap(), b"ref,address\n");
    // Relative paths resolve from the root too.
    sftp.rename("customers/x.csv", "customers/y.csv").await.unwrap();
    assert_eq!(visible_names(&customers), ["y.csv"]);
}

#[tokio::test]
async fn an_upload_over_the_size_limit_fails_clearly_and_publishes_nothing() {
    let settings = SftpSettings { max_upload_bytes: 1000, ..test_settings() };
    let (server, _conn, sftp) = alice(settings).await;
    let customers = server.account_dir("acme").join("customers");
    let mut file = sftp.create("/customers/huge.csv").await.unwrap();
    let write = async {
        file.write_all(&vec![b'x'; 5000]).await?;
        file.shutdown().await
    };
    let err = write.await.unwrap_err();
    assert!(err.to_string().contains("maximum upload size"), "{err}");
    drop(file);
    wait_until("nothing is left", || visible_names(&customers).is_empty()).await;

    // At the limit is fine.
    let mut ok = sftp.create("/customers/fits.csv").await.unwrap();
    ok.write_all(&vec![b'x'; 1000]).await.unwrap();
    ok.shutdown().await.unwrap();
    assert_eq!(visible_names(&customers), ["fits.csv"]);
}

#[tokio::test]
async fn every_escape_attempt_is_refused_and_other_accounts_are_invisible() {
    let (server, _conn, sftp) = alice(test_settings()).await;
    // Another account with a secret, and a symlink to it planted in acme's outbox.
    let secret = server.folder("other", "outbox").join("secret.csv");
    std::fs::write(&secret, b"secret").unwrap();
    let outbox = server.account_dir("acme").join("outbox");
    std::os::unix::fs::symlink(&secret, outbox.join("link.csv")).unwrap();
    std::os::unix::fs::symlink(server.account_dir("other"), outbox.join("linkdir")).unwrap();
    std::fs::write(outbox.join("mine.csv"), b"mine").unwrap();

    let secret_abs = secret.display().to_string();
    let reads = [
        "/../other/outbox/secret.csv",
        "../../other/outbox/secret.csv",
        "/customers/../../other/outbox/secret.csv",
        "/outbox/../../../../../../etc/passwd",
        "/etc/passwd",
        secret_abs.as_str(),
        "/outbox/link.csv",
        "/outbox/linkdir/outbox/secret.csv",
        "/other/outbox/secret.csv",
    ];
    for path in reads {
        assert!(sftp.read(path).await.is_err(), "read {path}");
        assert!(sftp.metadata(path).await.is_err(), "stat {path}");
        assert!(sftp.symlink_metadata(path).await.is_err(), "lstat {path}");
    }
    for path in ["/..", "/../other", "/outbox/linkdir", "/etc", "/../../"] {
        let names = sftp.read_dir(path).await.map(|d| d.map(|e| e.file_name()).collect::<Vec<_>>());
        // `/..` and `/../../` are the root itself; everything else is refused.
        if let Ok(names) = names {
            assert_eq!(names.len(), 6, "{path} lists {names:?}");
        }
    }
    // Symlinks on disk are never shown.
    assert_eq!(list(&sftp, "/outbox").await, ["mine.csv"]);

    // Writing anywhere outside /customers, or via escapes, is refused.
    for path in [
        "/a.csv",
        "/../other/customers/a.csv",
        "/outbox/a.csv",
        "/archive/a.csv",
        "/etc/a.csv",
        "/customers/../a.csv",
        "/customers/.intake-upload.x",
        "/customers/sub/a.csv",
    ] {
        assert!(sftp.create(path).await.is_err(), "create {path}");
    }
    // No links, no folders.
    assert_eq!(status(sftp.symlink("/customers/l.csv", "/outbox/mine.csv").await), StatusCode::PermissionDenied);
    assert!(!sftp.hardlink("/outbox/mine.csv", "/customers/h.csv").await.unwrap_or(false));
    assert_eq!(status(sftp.create_dir("/customers/sub").await), StatusCode::PermissionDenied);
    assert_eq!(status(sftp.create_dir("/new").await), StatusCode::PermissionDenied);
    assert_eq!(status(sftp.remove_dir("/customers").await), StatusCode::PermissionDenied);
    // A rename cannot leave /customers nor rename the folders.
    std::fs::write(server.account_dir("acme").join("customers/c.csv"), b"c").unwrap();
    for (from, to) in [
        ("/customers/c.csv", "/../other/customers/c.csv"),
        ("/customers/c.csv", "/outbox/c.csv"),
        ("/customers/c.csv", "/customers/.intake-upload.x"),
        ("/customers", "/x"),
        ("/outbox/link.csv", "/customers/stolen.csv"),
    ] {
        assert!(sftp.rename(from, to).await.is_err(), "rename {from} -> {to}");
    }
    // Nothing moved: the other account still has its file, nothing leaked in.
    assert!(secret.exists());
    assert_eq!(visible_names(&server.account_dir("other").join("outbox")), ["secret.csv"]);
    assert_eq!(visible_names(&server.account_dir("acme").join("customers")), ["c.csv"]);
    // Error messages never carry server paths.
    let err = sftp.read("/outbox/nope.csv").await.unwrap_err().to_string();
    assert!(!err.contains(&server.dir.path().display().to_string()), "{err}");
}

#[tokio::test]
async fn outbox_and_archive_are_read_only_except_deleting_results() {
    let (server, _conn, sftp) = alice(test_settings()).await;
    std::fs::write(server.folder("acme", "outbox").join("May.results.csv"), b"results").unwrap();
    std::fs::write(server.folder("acme", "archive").join("May.csv"), b"upload").unwrap();

    assert_eq!(sftp.read("/outbox/May.results.csv").await.unwrap(), b"results");
    assert_eq!(sftp.read("/archive/May.csv").await.unwrap(), b"upload");
    assert_eq!(status(sftp.rename("/outbox/May.results.csv", "/outbox/x.csv").await), StatusCode::PermissionDenied);
    assert_eq!(status(sftp.rename("/archive/May.csv", "/archive/x.csv").await), StatusCode::PermissionDenied);
    assert_eq!(status(sftp.remove_file("/archive/May.csv").await), StatusCode::PermissionDenied);
    assert_eq!(status(sftp.create("/outbox/new.csv").await), StatusCode::PermissionDenied);
    assert_eq!(status(sftp.create("/archive/May.csv").await), StatusCode::PermissionDenied);
    sftp.remove_file("/outbox/May.results.csv").await.unwrap();
    assert!(list(&sftp, "/outbox").await.is_empty());
    assert_eq!(list(&sftp, "/archive").await, ["May.csv"]);
    assert_eq!(status(sftp.remove_file("/outbox/gone.csv").await), StatusCode::NoSuchFile);
}

#[tokio::test]
async fn a_login_without_the_create_scope_cannot_change_customers() {
    let server = TestSftp::start(test_settings()).await;
    let key = new_key();
    let mut u = user("viewer", "acme");
    u.public_keys = vec![authorized_line(&key)];
    u.scopes = Scopes { create: false, update: false };
    server.users.add(u);
    std::fs::write(server.folder("acme", "customers").join("a.csv"), b"a").unwrap();
    std::fs::write(server.folder("acme", "outbox").join("a.results.csv"), b"r").unwrap();
    let conn = login_key(server.addr, "viewer", &key).await.unwrap();
    let sftp = open_sftp(&conn).await.unwrap();

    assert_eq!(status(sftp.create("/customers/b.csv").await), StatusCode::PermissionDenied);
    assert_eq!(status(sftp.remove_file("/customers/a.csv").await), StatusCode::PermissionDenied);
    assert_eq!(status(sftp.rename("/customers/a.csv", "/customers/b.csv").await), StatusCode::PermissionDenied);
    assert_eq!(list(&sftp, "/customers").await, ["a.csv"]);
    assert_eq!(sftp.read("/outbox/a.results.csv").await.unwrap(), b"r");
    assert_eq!(visible_names(&server.account_dir("acme").join("customers")), ["a.csv"]);
}

#[tokio::test]
async fn key_and_password_logins_succeed_and_wrong_credentials_look_alike() {
    let server = TestSftp::start(test_settings()).await;
    let key = new_key();
    let mut u = user("alice", "acme");
    u.public_keys = vec![format!("# alice's laptop\n{}", authorized_line(&key))];
    u.password_hash = Some(hash_password("correct horse").unwrap());
    server.users.add(u);
    server.users.add(user("nopass", "acme"));

    assert!(login_key(server.addr, "alice", &key).await.is_ok());
    assert_eq!(login_key(server.addr, "alice", &new_key()).await.err().as_deref(), Some("refused"));
    assert_eq!(login_key(server.addr, "mallory", &key).await.err().as_deref(), Some("refused"));
    let conn = login_password(server.addr, "alice", "correct horse").await.unwrap();
    assert_eq!(list(&open_sftp(&conn).await.unwrap(), "/").await.len(), 6);
    for (name, password) in [("alice", "wrong"), ("mallory", "correct horse"), ("nopass", ""), ("alice", "")] {
        assert_eq!(login_password(server.addr, name, password).await.err().as_deref(), Some("refused"), "{name}");
    }
}

#[tokio::test]
async fn a_source_that_keeps_failing_is_refused_even_with_the_right_password() {
    let settings = SftpSettings { max_login_failures_per_source: 3, ..test_settings() };
    let server = TestSftp::start(settings).await;
    let mut u = user("alice", "acme");
    u.password_hash = Some(hash_password("right").unwrap());
    server.users.add(u);
    for _ in 0..3 {
        assert!(login_password(server.addr, "alice", "wrong").await.is_err());
    }
    assert!(login_password(server.addr, "alice", "right").await.is_err());
}

#[tokio::test]
async fn sessions_per_account_and_connections_per_source_are_capped() {
    let settings = SftpSettings { max_sessions_per_account: 1, max_connections_per_source: 2, ..test_settings() };
    let (server, conn, _sftp) = alice(settings).await;
    let key = new_key();
    let mut bob = user("bob", "acme");
    bob.public_keys = vec![authorized_line(&key)];
    server.users.add(bob);
    // Same account, second session: refused at channel open.
    let second = login_key(server.addr, "bob", &key).await.unwrap();
    assert!(open_sftp(&second).await.is_err());
    drop(second);
    drop(conn);
}

#[tokio::test]
async fn an_oversized_packet_closes_the_session() {
    let server = TestSftp::start(test_settings()).await;
    let key = new_key();
    let mut u = user("alice", "acme");
    u.public_keys = vec![authorized_line(&key)];
    server.users.add(u);
    let conn = login_key(server.addr, "alice", &key).await.unwrap();
    let mut channel = conn.channel_open_session().await.unwrap();
    channel.request_subsystem(true, "sftp").await.unwrap();
    // SSH_FXP_INIT v3, then a packet announcing 1 MiB.
    channel.data_bytes(vec![0, 0, 0, 5, 1, 0, 0, 0, 3]).await.unwrap();
    let mut junk = (1u32 << 20).to_be_bytes().to_vec();
    junk.extend_from_slice(&[6u8; 1024]);
    channel.data_bytes(junk).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut exit = None;
    loop {
        let msg =
            tokio::time::timeout_at(deadline.into(), channel.wait()).await.expect("the server closes the channel");
        match msg {
            Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some(exit_status),
            Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    assert_eq!(exit, Some(1));
}

/// Waits for the server's answer to a channel request: true if it said failure.
async fn refused(channel: &mut russh::Channel<client::Msg>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline.into(), channel.wait()).await.expect("an answer") {
            Some(ChannelMsg::Failure) | Some(ChannelMsg::Close) | None => return true,
            Some(ChannelMsg::Success) => return false,
            Some(_) => {}
        }
    }
}

#[tokio::test]
async fn shell_exec_pty_and_other_subsystems_are_refused() {
    let server = TestSftp::start(test_settings()).await;
    let key = new_key();
    let mut u = user("alice", "acme");
    u.public_keys = vec![authorized_line(&key)];
    server.users.add(u);
    let conn = login_key(server.addr, "alice", &key).await.unwrap();
    let marker = server.dir.path().join("ran");

    let (exit, _, stderr) = exec(&conn, &format!("touch {}", marker.display()), b"").await;
    assert_eq!(exit, Some(1));
    assert!(stderr.contains("runs no shell"), "{stderr}");
    let mut channel = conn.channel_open_session().await.unwrap();
    channel.request_shell(true).await.unwrap();
    assert!(refused(&mut channel).await, "shell");
    let mut channel = conn.channel_open_session().await.unwrap();
    channel.request_pty(true, "xterm", 80, 24, 0, 0, &[]).await.unwrap();
    assert!(refused(&mut channel).await, "pty");
    channel.request_subsystem(true, "not-sftp").await.unwrap();
    assert!(refused(&mut channel).await, "subsystem");
    assert!(conn.channel_open_direct_tcpip("127.0.0.1", 22, "127.0.0.1", 5000).await.is_err());
    assert!(!marker.exists());
}

#[tokio::test]
async fn shutdown_disconnects_sessions_publishes_no_unfinished_upload_and_returns() {
    let (mut server, _conn, sftp) = alice(SftpSettings { shutdown_drain_secs: 0, ..test_settings() }).await;
    let customers = server.account_dir("acme").join("customers");
    let mut file = sftp.create("/customers/cut.csv").await.unwrap();
    file.write_all(b"ref,address\n").await.unwrap();
    file.flush().await.unwrap();
    assert_eq!(visible_names(&customers).len(), 1);
    let started = Instant::now();
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(8));
    // Nothing is published; the part is kept hidden for resuming.
    wait_until("the temp file is gone", || {
        let names = visible_names(&customers);
        names.len() == 1 && names[0].starts_with(".intake-partial.")
    })
    .await;
    assert!(connect(server.addr).await.is_err());
}

/// At a stop, new connections are refused at once, an upload under way may
/// finish within `shutdown_drain_secs` (it is published), and what is still
/// open after it is cut.
#[tokio::test]
async fn at_a_stop_an_upload_under_way_finishes_within_the_drain() {
    let (mut server, _conn, sftp) = alice(SftpSettings { shutdown_drain_secs: 3, ..test_settings() }).await;
    let customers = server.account_dir("acme").join("customers");
    let mut finishing = sftp.create("/customers/finishing.csv").await.unwrap();
    finishing.write_all(b"ref,address\n").await.unwrap();
    finishing.flush().await.unwrap();
    let mut cut = sftp.create("/customers/cut.csv").await.unwrap();
    cut.write_all(b"ref,address\n").await.unwrap();
    cut.flush().await.unwrap();
    server.shutdown.cancel();
    let deadline = Instant::now() + Duration::from_secs(5);
    while connect(server.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "new connections are refused at a stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    finishing.write_all(b"r1,r1@example.com\n").await.unwrap();
    finishing.shutdown().await.unwrap();
    assert!(customers.join("finishing.csv").exists(), "the upload under way was published");
    server.stop().await;
    wait_until("the cut upload's temp file is gone", || {
        visible_names(&customers).iter().all(|n| !n.starts_with(".intake-upload."))
    })
    .await;
    assert!(!customers.join("cut.csv").exists(), "the upload left open was not published");
}

/// Runs an exec command with `stdin`: (exit status, stdout, stderr).
async fn exec(conn: &Conn, command: &str, stdin: &[u8]) -> (Option<u32>, String, String) {
    let mut channel = conn.channel_open_session().await.unwrap();
    channel.exec(true, command).await.unwrap();
    if !stdin.is_empty() {
        channel.data(stdin).await.unwrap();
    }
    channel.eof().await.unwrap();
    let (mut exit, mut out, mut err) = (None, Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline.into(), channel.wait()).await.expect("the command ends") {
            Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some(exit_status),
            Some(ChannelMsg::Data { data }) => out.extend_from_slice(&data),
            Some(ChannelMsg::ExtendedData { data, .. }) => err.extend_from_slice(&data),
            Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    (exit, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned())
}

/// A user `alice` (account acme) with a key, on a server with `settings`.
async fn server_with_alice(settings: SftpSettings) -> (TestSftp, PrivateKey) {
    let server = TestSftp::start(settings).await;
    let key = new_key();
    let mut u = user("alice", "acme");
    u.public_keys = vec![authorized_line(&key)];
    u.password_hash = Some(hash_password("right").unwrap());
    server.users.add(u);
    (server, key)
}

#[tokio::test]
async fn checksums_over_exec_match_coreutils_for_files_and_standard_input() {
    use sha2::Digest;
    let (server, key) = server_with_alice(test_settings()).await;
    let data = b"ref,address\na1,+15555001234\n".repeat(3000);
    std::fs::write(server.folder("acme", "outbox").join("a b.csv"), &data).unwrap();
    let conn = login_key(server.addr, "alice", &key).await.unwrap();
    let md5 = hex::encode(md5::Md5::digest(&data));
    let (exit, out, err) = exec(&conn, "md5sum /outbox/a\\ b.csv", b"").await;
    assert_eq!((exit, out.as_str()), (Some(0), format!("{md5}  /outbox/a b.csv\n").as_str()), "{err}");
    let (exit, out, _) = exec(&conn, "sha1sum '/outbox/a b.csv'", b"").await;
    assert_eq!(exit, Some(0));
    assert_eq!(out, format!("{}  /outbox/a b.csv\n", hex::encode(sha1::Sha1::digest(&data))));
    let (exit, out, _) = exec(&conn, "sha256sum \"/outbox/a b.csv\"", b"").await;
    assert_eq!(exit, Some(0));
    assert_eq!(out, format!("{}  /outbox/a b.csv\n", hex::encode(sha2::Sha256::digest(&data))));
    // rclone's probe: md5sum of empty standard input.
    let (exit, out, _) = exec(&conn, "md5sum", b"").await;
    assert_eq!((exit, out.as_str()), (Some(0), "d41d8cd98f00b204e9800998ecf8427e  -\n"));
    let (exit, out, _) = exec(&conn, "sha1sum -", b"abc\n").await;
    assert_eq!((exit, out.as_str()), (Some(0), "03cfd743661f07975fa2f1220c5194cbaff48451  -\n"));
    // Outside the jail, missing, a folder, a pipeline: non-zero, no path of the server.
    for (cmd, says) in [
        ("md5sum /etc/passwd", "No such file"),
        ("md5sum /../../etc/passwd", "No such file"),
        ("md5sum /outbox/missing.csv", "No such file"),
        ("md5sum /outbox", "Is a directory"),
        ("echo 'abc' | md5sum", "not supported"),
        ("echo ${ShellId}%ComSpec%", "runs no shell"),
    ] {
        let (exit, out, err) = exec(&conn, cmd, b"").await;
        assert_eq!(exit, Some(1), "{cmd}: {out} {err}");
        assert!(err.contains(says), "{cmd}: {err}");
        assert!(!err.contains(&server.dir.path().display().to_string()), "{err}");
    }
}

#[tokio::test]
async fn a_second_password_attempt_on_one_connection_is_answered() {
    let (server, _key) = server_with_alice(test_settings()).await;
    let mut conn = connect(server.addr).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), conn.authenticate_password("alice", "wrong"))
        .await
        .expect("the first attempt is answered")
        .unwrap();
    assert!(!first.success());
    let second = tokio::time::timeout(Duration::from_secs(10), conn.authenticate_password("alice", "right"))
        .await
        .expect("the second attempt is answered")
        .unwrap();
    assert!(second.success(), "{second:?}");
    open_sftp(&conn).await.unwrap();
}

#[tokio::test]
async fn only_connections_not_logged_in_count_per_source() {
    let settings = SftpSettings { max_connections_per_source: 2, max_sessions_per_account: 50, ..test_settings() };
    let (server, key) = server_with_alice(settings).await;
    // 20 logged-in sessions from one address (an office NAT), then a 21st login.
    let mut sessions = Vec::new();
    for _ in 0..21 {
        let conn = login_key(server.addr, "alice", &key).await.expect("a login from the busy address");
        sessions.push(conn);
    }
    // Two connections that never log in fill the address's pre-login quota...
    let idle: Vec<_> = futures_join_all_connect(server.addr, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(login_key(server.addr, "alice", &key).await.is_err(), "a third pending connection is refused");
    // ...and free it when they go.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    login_key(server.addr, "alice", &key).await.expect("a login once the idle connections are gone");
    drop(sessions);
}

async fn futures_join_all_connect(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    out
}

#[tokio::test]
async fn max_startups_drops_connections_past_full() {
    let settings = SftpSettings { max_startups: "2".to_owned(), max_connections_per_source: 100, ..test_settings() };
    let (server, key) = server_with_alice(settings).await;
    let idle = futures_join_all_connect(server.addr, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(connect(server.addr).await.is_err(), "dropped: two connections are already waiting to log in");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    login_key(server.addr, "alice", &key).await.unwrap();
}

#[tokio::test]
async fn a_connection_that_does_not_log_in_within_the_grace_time_is_dropped() {
    use tokio::io::AsyncReadExt;
    let settings = SftpSettings { login_grace_secs: 1, ..test_settings() };
    let (server, key) = server_with_alice(settings).await;
    // Silent from accept: closed after the grace time.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the silent connection was closed");
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    // Handshake done, no login: dropped too.
    let mut conn = connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = conn.authenticate_password("alice", "right").await.map(|a| a.success()).unwrap_or(false);
    assert!(!late, "a login after the grace time is refused");
    // A login within the grace time stays.
    let conn = login_key(server.addr, "alice", &key).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    open_sftp(&conn).await.expect("a logged-in connection outlives the grace time");
}

#[tokio::test]
async fn channels_per_connection_count_started_sftp_sessions_too() {
    let settings = SftpSettings { max_channels_per_connection: 3, ..test_settings() };
    let (server, key) = server_with_alice(settings).await;
    let conn = login_key(server.addr, "alice", &key).await.unwrap();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(open_sftp(&conn).await.unwrap());
    }
    assert!(conn.channel_open_session().await.is_err(), "a fourth channel is refused");
}

#[tokio::test]
async fn handles_per_account_are_capped_across_connections_and_a_refused_open_leaves_no_file() {
    let settings = SftpSettings { max_handles_per_account: 3, ..test_settings() };
    let (server, key) = server_with_alice(settings).await;
    let first = login_key(server.addr, "alice", &key).await.unwrap();
    let second = login_key(server.addr, "alice", &key).await.unwrap();
    let (a, b) = (open_sftp(&first).await.unwrap(), open_sftp(&second).await.unwrap());
    let _f1 = a.create("/customers/1.csv").await.unwrap();
    let _f2 = a.create("/customers/2.csv").await.unwrap();
    let _f3 = b.create("/customers/3.csv").await.unwrap();
    let customers = server.account_dir("acme").join("customers");
    assert_eq!(visible_names(&customers).len(), 3);
    for _ in 0..20 {
        match b.create("/customers/4.csv").await {
            Err(russh_sftp::client::error::Error::Status(s)) => {
                assert!(s.error_message.contains("Too many open files"), "{s:?}")
            }
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(visible_names(&customers).len(), 3, "refused opens left no file");
}

#[tokio::test]
async fn a_write_that_would_leave_a_hole_is_refused_and_nothing_is_published() {
    use russh_sftp::protocol::OpenFlags;
    let (server, _conn, sftp) = alice(test_settings()).await;
    let customers = server.account_dir("acme").join("customers");
    // Out of order within the window: fine.
    let file = sftp.create("/customers/ok.csv").await.unwrap();
    drop(file);
    let session = sftp;
    let mut f = session
        .open_with_flags("/customers/pipelined.csv", OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE)
        .await
        .unwrap();
    use tokio::io::AsyncSeekExt;
    f.seek(std::io::SeekFrom::Start(64 * 1024)).await.unwrap();
    f.write_all(b"later").await.unwrap();
    f.seek(std::io::SeekFrom::Start(0)).await.unwrap();
    f.write_all(&vec![b'x'; 64 * 1024]).await.unwrap();
    f.shutdown().await.unwrap();
    assert!(customers.join("pipelined.csv").is_file());
    // 17 bytes at 4 GiB: refused.
    let mut f = session.create("/customers/sparse.csv").await.unwrap();
    f.seek(std::io::SeekFrom::Start(4 << 30)).await.unwrap();
    let wrote = async {
        f.write_all(b"ref,address\na,b\n").await?;
        f.flush().await?;
        f.shutdown().await
    }
    .await;
    assert!(wrote.is_err(), "the write past the hole limit fails");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!customers.join("sparse.csv").exists(), "nothing published");
}

#[tokio::test]
async fn names_that_cannot_be_processed_are_refused_with_a_clear_status() {
    let (server, _conn, sftp) = alice(test_settings()).await;
    let long = format!("/customers/{}.csv", "顧".repeat(80));
    for (path, says) in [(long.as_str(), "File name too long"), ("/customers/a\u{1}b.csv", "control characters")] {
        match sftp.create(path).await {
            Err(russh_sftp::client::error::Error::Status(s)) => assert!(s.error_message.contains(says), "{s:?}"),
            other => panic!("{path:?}: expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
    // The rename target is checked too.
    let mut f = sftp.create("/customers/x.csv.filepart").await.unwrap();
    f.write_all(b"ref,address\n").await.unwrap();
    f.shutdown().await.unwrap();
    match sftp.rename("/customers/x.csv.filepart", long.as_str()).await {
        Err(russh_sftp::client::error::Error::Status(s)) => {
            assert!(s.error_message.contains("File name too long"), "{s:?}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let customers = server.account_dir("acme").join("customers");
    assert_eq!(visible_names(&customers), ["x.csv.filepart"]);
}

#[tokio::test]
async fn client_temp_names_hidden_or_not_can_be_uploaded_and_renamed() {
    let (server, _conn, sftp) = alice(test_settings()).await;
    for temp in [".in.a.csv", "b.csv.part", ".c.csv.swp"] {
        let mut f = sftp.create(format!("/customers/{temp}")).await.unwrap();
        f.write_all(b"ref,address\n").await.unwrap();
        f.shutdown().await.unwrap();
    }
    assert!(list(&sftp, "/customers").await.contains(&".in.a.csv".to_owned()));
    sftp.rename("/customers/.in.a.csv", "/customers/a.csv").await.unwrap();
    sftp.rename("/customers/b.csv.part", "/customers/b.csv").await.unwrap();
    let customers = server.account_dir("acme").join("customers");
    assert_eq!(visible_names(&customers), [".c.csv.swp", "a.csv", "b.csv"]);
    assert_eq!(status(sftp.create("/customers/.intake-mine").await), StatusCode::PermissionDenied);
}

#[tokio::test]
async fn abandoned_client_temp_files_are_swept_unless_open() {
    let settings = SftpSettings { stale_temp_secs: 2, ..test_settings() };
    let (server, _conn, sftp) = alice(settings).await;
    let customers = server.account_dir("acme").join("customers");
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for name in ["gone.csv.filepart", ".in.gone.csv", "open.csv.part", "kept.csv"] {
        let f = std::fs::File::create(customers.join(name)).unwrap();
        f.set_modified(old).unwrap();
    }
    let open = sftp.open("/customers/open.csv.part").await.unwrap();
    wait_until("the stale temp files are swept", || !customers.join("gone.csv.filepart").exists()).await;
    wait_until("the hidden one too", || !customers.join(".in.gone.csv").exists()).await;
    assert!(customers.join("open.csv.part").exists(), "a file a session has open stays");
    assert!(customers.join("kept.csv").exists(), "an upload name is the watcher's, never swept");
    drop(open);
    wait_until("the closed one is swept later", || !customers.join("open.csv.part").exists()).await;
}

/// Legacy `scp -t`: a transfer the client declares failed after sending its
/// bytes (status 1 or 2: OpenSSH's scp pads the declared size when its local
/// read fails, then reports the error), a short read and a channel that ends
/// before the final status are never published; a whole one is.
#[tokio::test]
async fn an_scp_transfer_the_client_declares_failed_is_never_published() {
    let (server, key) = server_with_alice(test_settings()).await;
    let conn = login_key(server.addr, "alice", &key).await.unwrap();
    let customers = server.folder("acme", "customers");
    let padded = b"ref,address\na1,+15555001234\n\0\0\0\0\0\0\0\0".to_vec();
    let file = |name: &str, size: usize| format!("C0644 {size} {name}\n").into_bytes();
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "error.csv",
            [file("error.csv", padded.len()), padded.clone(), b"\x01scp: error.csv: Input/output error\n".to_vec()]
                .concat(),
        ),
        (
            "fatal.csv",
            [file("fatal.csv", padded.len()), padded.clone(), b"\x02scp: fatal.csv: Input/output error\n".to_vec()]
                .concat(),
        ),
        ("short.csv", [file("short.csv", 1000), padded.clone()].concat()),
        ("nostatus.csv", [file("nostatus.csv", padded.len()), padded.clone()].concat()),
    ];
    for (name, stdin) in cases {
        let (exit, _, err) = exec(&conn, "scp -t /customers", &stdin).await;
        assert_ne!(exit, Some(0), "{name}: {err}");
        assert!(!customers.join(name).exists(), "{name} was published although the client declared it failed");
    }
    let whole = [file("whole.csv", padded.len()), padded.clone(), vec![0]].concat();
    let (exit, _, err) = exec(&conn, "scp -t /customers", &whole).await;
    assert_eq!(exit, Some(0), "{err}");
    assert_eq!(std::fs::read(customers.join("whole.csv")).unwrap(), padded);
    assert_eq!(visible_names(&customers), ["whole.csv"], "no temp file is left behind");
}
