//! Shared test fixtures: fresh databases (SQLite always, PostgreSQL when
//! TEST_DATABASE_URL is set), the real `intake` binary as a daemon, real
//! OpenSSH clients, and polling with deadlines.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The variable that names the PostgreSQL server for the PostgreSQL legs.
pub const PG_ENV: &str = "TEST_DATABASE_URL";

/// A fresh, empty database for one test; a PostgreSQL one is dropped
/// when the test ends.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    /// (admin URL, database name) of a PostgreSQL test database.
    pg: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else { return };
        // Drop runs inside the test's runtime: a thread of its own may block.
        let dropped = std::thread::spawn(move || {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await?;
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("note: the test database was not dropped: {e}");
        }
    }
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        TestDb { url, _dir: Some(dir), pg: None }
    }

    /// A new database on the server of TEST_DATABASE_URL; `None` (and a
    /// note) when the variable is not set.
    pub async fn postgres() -> Option<TestDb> {
        use sqlx::Connection;
        let Ok(admin) = std::env::var(PG_ENV) else {
            // In CI a missing database is a failure, never a silent skip.
            assert!(std::env::var_os("CI").is_none(), "{PG_ENV} must be set in CI (.ci/run sets it)");
            eprintln!("skipped: {PG_ENV} is not set, so the PostgreSQL leg of this test did not run");
            return None;
        };
        let name = format!("intake_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to TEST_DATABASE_URL");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        Some(TestDb { url: format!("{base}/{name}"), _dir: None, pg: Some((admin.clone(), name)) })
    }

    /// Another fresh database of the same kind.
    pub async fn another(&self) -> TestDb {
        if self.url.starts_with("sqlite") {
            TestDb::sqlite()
        } else {
            TestDb::postgres().await.expect("a PostgreSQL test database")
        }
    }

    pub async fn store(&self) -> intake::store::Store {
        intake::store::Store::connect(&self.url).await.unwrap()
    }
}

/// Runs one async test body against SQLite and, when configured, PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::TestDb::sqlite()).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(db) = $crate::support::TestDb::postgres().await {
                        super::$name(db).await
                    }
                }
            }
        )*
    };
}

/// Waits for `check` to return Some, polling; panics with `what` after `limit`.
pub async fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn intake_bin() -> &'static str {
    env!("CARGO_BIN_EXE_intake")
}

/// Runs `intake` with a config file and environment; returns its output.
pub async fn intake(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut cmd = Command::new(intake_bin());
    cmd.args(args).current_dir(cwd).stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(300), cmd.output()).await.expect("intake finished in time").unwrap()
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An ed25519 client key made by ssh-keygen: (private key path, public line).
pub fn client_key(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("id_ed25519");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_owned())
}

/// One account of a test daemon, with its SFTP user (same name) and key.
pub struct TestAccount {
    pub avid: String,
    pub scopes: Vec<&'static str>,
    /// A password for the user too (clients that cannot use an Ed25519 key).
    pub password: Option<&'static str>,
}

impl TestAccount {
    pub fn new(avid: &str) -> Self {
        TestAccount { avid: avid.into(), scopes: vec!["customers:create", "customers:update"], password: None }
    }
}

/// The real `intake serve` as a child process: a temp data dir, SFTP on a
/// free loopback port, SQLite in the data dir or a given database.
pub struct TestDaemon {
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub key: PathBuf,
    pub env: Vec<(String, String)>,
    pub child: Option<Child>,
    pub addr: Option<String>,
    /// The daemon started in this process instead (`spawn_in_process`).
    app: Option<intake::app::RunningApp>,
    _temp: Option<tempfile::TempDir>,
}

impl TestDaemon {
    /// Writes a config with the accounts (each with a key-login user of the
    /// same name) and starts the daemon.
    pub async fn spawn(db: &TestDb, accounts: &[TestAccount], extra_env: &[(&str, &str)]) -> TestDaemon {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let mut daemon = TestDaemon::prepare(&dir, db, accounts, extra_env);
        daemon._temp = Some(temp);
        daemon.start().await;
        daemon
    }

    /// The config and key in `dir`, without starting.
    pub fn prepare(dir: &Path, db: &TestDb, accounts: &[TestAccount], extra_env: &[(&str, &str)]) -> TestDaemon {
        let (key, public) = if dir.join("id_ed25519").exists() {
            let public = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap();
            (dir.join("id_ed25519"), public.trim().to_owned())
        } else {
            client_key(dir)
        };
        let data_dir = dir.join("data");
        let mut toml = String::from(
            "[sftp]\nlisten = \"127.0.0.1:0\"\nauth_rejection_millis = 0\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\n",
        );
        for a in accounts {
            toml += &format!("\n[[accounts]]\navid = \"{}\"\n", a.avid);
        }
        for a in accounts {
            toml += &format!(
                "\n[[users]]\nusername = \"{0}\"\naccount = \"{0}\"\nkeys = [\"{1}\"]\nscopes = {2:?}\n",
                a.avid, public, a.scopes
            );
            if let Some(password) = a.password {
                toml += &format!("password = \"{password}\"\n");
            }
        }
        let config = dir.join("config.toml");
        std::fs::write(&config, toml).unwrap();
        let mut env = vec![
            ("INTAKE_DATA_DIR".to_owned(), data_dir.display().to_string()),
            ("INTAKE_DATABASE_URL".to_owned(), db.url.clone()),
            ("INTAKE_LOG".to_owned(), "info".to_owned()),
        ];
        env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        TestDaemon {
            dir: dir.to_path_buf(),
            data_dir,
            config,
            key,
            env,
            child: None,
            addr: None,
            app: None,
            _temp: None,
        }
    }

    /// The daemon started in this test's process through `app::start`, with
    /// the same config, for tests that need no process of its own (no crash,
    /// signal, memory figure or log of it). `settings` are `INTAKE_*`
    /// variables, written into its config instead of the environment.
    pub async fn spawn_in_process(db: &TestDb, accounts: &[TestAccount], settings: &[(&str, &str)]) -> TestDaemon {
        TestDaemon::spawn_in_process_with(db, accounts, settings, &[]).await
    }

    /// As `spawn_in_process`, with TOML lines added to sections of the
    /// config: `("api", "tls_cert = \"...\"")` (sections `sftp`, `http`, `api`).
    pub async fn spawn_in_process_with(
        db: &TestDb,
        accounts: &[TestAccount],
        settings: &[(&str, &str)],
        sections: &[(&str, &str)],
    ) -> TestDaemon {
        let temp = tempfile::tempdir().unwrap();
        let mut daemon = TestDaemon::prepare(temp.path(), db, accounts, &[]);
        let mut toml = std::fs::read_to_string(&daemon.config).unwrap();
        for (section, lines) in sections {
            let head = format!("[{section}]\n");
            let at = toml.find(&head).unwrap_or_else(|| panic!("no [{section}] in the test config")) + head.len();
            toml.insert_str(at, &format!("{lines}\n"));
        }
        std::fs::write(&daemon.config, toml).unwrap();
        daemon._temp = Some(temp);
        let mut top = format!("data_dir = {:?}\ndatabase_url = {:?}\n", daemon.data_dir.display().to_string(), db.url);
        for (name, value) in settings {
            let key = name.strip_prefix("INTAKE_").expect("an INTAKE_ variable").to_ascii_lowercase();
            assert!(!key.contains("__"), "only top-level settings in process: {name}");
            let value = if value.parse::<i64>().is_ok() || *value == "true" || *value == "false" {
                value.to_string()
            } else {
                format!("{value:?}")
            };
            top += &format!("{key} = {value}\n");
        }
        let rest = std::fs::read_to_string(&daemon.config).unwrap();
        std::fs::write(&daemon.config, top + &rest).unwrap();
        let config = intake::config::Config::load(&daemon.config, true).unwrap();
        let app = intake::app::start(config).await.expect("the daemon starts in process");
        daemon.addr = app.sftp_addr.map(|a| a.to_string());
        daemon.app = Some(app);
        daemon
    }

    pub async fn start(&mut self) {
        let _ = std::fs::remove_file(self.data_dir.join("sftp.addr"));
        let _ = std::fs::remove_file(self.data_dir.join("http.addr"));
        let _ = std::fs::remove_file(self.data_dir.join("api.addr"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("serve.log")).unwrap();
        let mut cmd = Command::new(intake_bin());
        cmd.arg("serve").arg("--config").arg(&self.config).current_dir(&self.dir);
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("intake serve starts"));
        let sftp_enabled = !self.env.iter().any(|(k, v)| k == "INTAKE_SFTP__ENABLED" && v == "false");
        if sftp_enabled {
            let addr_file = self.data_dir.join("sftp.addr");
            let addr = eventually(Duration::from_secs(60), "the daemon to listen", || {
                std::fs::read_to_string(&addr_file).ok().filter(|a| !a.is_empty())
            })
            .await;
            self.addr = Some(addr);
        } else {
            // Ready as an operator's probe sees it: the database open, the
            // data directory writable.
            let deadline = Instant::now() + Duration::from_secs(60);
            while self.http_get("/readyz").await.0 != 200 {
                assert!(Instant::now() < deadline, "the daemon was not ready in time\n{}", self.log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The HTTP endpoint's address, as the daemon wrote it at start.
    pub async fn http_addr(&self) -> String {
        if let Some(app) = &self.app {
            return app.http_addr.expect("HTTP enabled").to_string();
        }
        let addr_file = self.data_dir.join("http.addr");
        eventually(Duration::from_secs(60), "the daemon's HTTP listener", || {
            std::fs::read_to_string(&addr_file).ok().filter(|a| !a.is_empty())
        })
        .await
    }

    /// The public API's address.
    pub async fn api_addr(&self) -> String {
        if let Some(app) = &self.app {
            return app.api_addr.expect("the API enabled").to_string();
        }
        let addr_file = self.data_dir.join("api.addr");
        eventually(Duration::from_secs(60), "the daemon's API listener", || {
            std::fs::read_to_string(&addr_file).ok().filter(|a| !a.is_empty())
        })
        .await
    }

    /// GETs `path` from the HTTP endpoint: (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.http_addr().await);
        let response = reqwest::get(&url).await.unwrap_or_else(|e| panic!("GET {url}: {e}\n{}", self.log()));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Runs an `intake` subcommand against this daemon's config and database,
    /// with `stdin` as its standard input.
    pub async fn cli(&self, args: &[&str], stdin: &str) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut cmd = Command::new(intake_bin());
        cmd.args(args).arg("--config").arg(&self.config).current_dir(&self.dir).kill_on_drop(true);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("intake runs");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("intake finished in time")
            .unwrap()
    }

    pub fn log(&self) -> String {
        if self.app.is_some() {
            return "(the daemon runs in this process: its log is not kept)".to_owned();
        }
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// SIGKILL, no chance to clean up.
    pub async fn kill9(&mut self) {
        assert!(self.app.is_none(), "a daemon in the test's process cannot be killed: use TestDaemon::spawn");
        if let Some(mut child) = self.child.take() {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
        }
    }

    /// SIGTERM; returns the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().unwrap() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("stops on SIGTERM").unwrap()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).expect("running")
    }

    /// The daemon's peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib / 1024
    }

    /// Waits for the daemon to exit by itself (a crash); returns how it ended.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        tokio::time::timeout(limit, child.wait()).await.expect("the daemon exited in time").unwrap()
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Places a file in an account's /customers as another server would
    /// (written aside, then renamed in; no uploader recorded).
    pub fn place(&self, avid: &str, name: &str, write: impl FnOnce(&Path)) {
        let customers = self.customers(avid);
        std::fs::create_dir_all(&customers).unwrap();
        let aside = self.dir.join(format!("placing-{}", uuid::Uuid::new_v4().simple()));
        write(&aside);
        std::fs::rename(&aside, customers.join(name)).unwrap();
    }

    pub fn port(&self) -> String {
        self.addr.as_ref().expect("SFTP enabled").rsplit(':').next().unwrap().to_owned()
    }

    pub fn outbox(&self, avid: &str) -> PathBuf {
        self.data_dir.join("accounts").join(avid).join("outbox")
    }

    pub fn customers(&self, avid: &str) -> PathBuf {
        self.data_dir.join("accounts").join(avid).join("customers")
    }

    /// Runs OpenSSH `sftp -b` as `user` with the given batch commands.
    pub async fn sftp(&self, user: &str, batch: &str) -> Output {
        openssh_sftp(&self.dir, &self.key, &self.port(), user, batch).await
    }

    /// Uploads `local` as `/customers/<remote>` with OpenSSH sftp and asserts success.
    pub async fn upload(&self, user: &str, local: &Path, remote: &str) {
        let out = self.sftp(user, &format!("put {} /customers/{remote}\n", local.display())).await;
        assert!(out.status.success(), "upload failed: {}\n{}", describe(&out), self.log());
    }

    /// Waits for `NAME.summary.json` in the account's outbox and returns it parsed.
    pub async fn summary(&self, avid: &str, stem: &str, limit: Duration) -> serde_json::Value {
        let path = self.outbox(avid).join(format!("{stem}.summary.json"));
        let log = self.dir.join("serve.log");
        let text = eventually(limit, &format!("{}", path.display()), || std::fs::read_to_string(&path).ok()).await;
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{e}: {text}\n{}", std::fs::read_to_string(log).unwrap_or_default()))
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        if let Some(app) = &self.app {
            app.stop();
        }
    }
}

/// Runs OpenSSH `sftp -b` with `batch` as `user` on a loopback port, with
/// the key at `key`, in `dir`.
pub async fn openssh_sftp(dir: &Path, key: &Path, port: &str, user: &str, batch: &str) -> Output {
    let batch_file = dir.join(format!("batch-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&batch_file, batch).unwrap();
    let mut cmd = Command::new("sftp");
    cmd.args(["-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-F", "/dev/null", "-i"])
        .arg(key)
        .args(["-P", port, "-b"])
        .arg(&batch_file)
        .arg(format!("{user}@127.0.0.1"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), cmd.output()).await.expect("sftp finished in time").unwrap()
}

/// Reads a results CSV into rows of strings (header included).
pub fn read_results(path: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_path(path).unwrap();
    reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect()
}

/// Writes a customer file of `rows` valid rows with refs `{prefix}{i}`.
pub fn write_customers(path: &Path, prefix: &str, rows: usize) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "ref,email,phone,metadata.name").unwrap();
    for i in 0..rows {
        writeln!(out, "{prefix}{i},c{i}@example.com,+1555{:07},Customer {i}", i % 10_000_000).unwrap();
    }
}

/// A loopback TCP proxy that delays every byte by `delay` in each direction,
/// as a real network does (10 ms each way: a 20 ms round trip), without
/// limiting throughput. Timing races that a bare loopback hides show here.
pub struct DelayProxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(target: std::net::SocketAddr, delay: Duration) -> DelayProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(delayed_pump(cr, sw, delay), delayed_pump(sr, cw, delay));
                });
            }
        });
        DelayProxy { port, task }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, each chunk sent `delay` after it was read.
async fn delayed_pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
