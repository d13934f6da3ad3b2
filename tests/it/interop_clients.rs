//! Every client merchants use, against the real `intake serve`, through a
//! loopback proxy that adds 10 ms each way (a 20 ms round trip). Each test
//! uploads one file and asserts what the merchant sees: the client exits 0,
//! exactly one job and one report for the upload, and the report is right.
//!
//! A client that is not installed fails its test with what to install
//! (`.ci/run` installs them all); nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

use crate::support::{
    describe, eventually, read_results, write_customers, DelayProxy, TestAccount, TestDaemon, TestDb,
};

const ROWS: usize = 40;
const PASSWORD: &str = "merchant-pw-1";
const REPORT: Duration = Duration::from_secs(120);

/// Fails with what to install when `program` is missing.
pub(crate) fn require(program: &str, install: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(found, "`{program}` is not installed: {install} (.ci/run installs every client)");
}

fn require_python_module(module: &str) {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "python module `{module}` is not installed: pip install {module} (.ci/run installs it)");
}

pub(crate) fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// A daemon with account `acme` (key and password), a file of ROWS rows, and
/// the delay proxy in front of the SFTP port.
struct Interop {
    daemon: TestDaemon,
    db: TestDb,
    proxy: DelayProxy,
    local: PathBuf,
}

impl Interop {
    /// The daemon in this process: what the clients see is all that counts.
    async fn start(db: TestDb) -> Self {
        Self::start_with(db, false).await
    }

    /// The daemon as its own process, for a test that reads its log.
    async fn start_process(db: TestDb) -> Self {
        Self::start_with(db, true).await
    }

    async fn start_with(db: TestDb, process: bool) -> Self {
        let mut account = TestAccount::new("acme");
        account.password = Some(PASSWORD);
        // A short visible window keeps the tests quick; clients look at the
        // file within milliseconds of publishing it.
        let settings = [("INTAKE_KEEP_VISIBLE_SECS", "2")];
        let daemon = if process {
            TestDaemon::spawn(&db, &[account], &settings).await
        } else {
            TestDaemon::spawn_in_process(&db, &[account], &settings).await
        };
        let target = daemon.addr.as_ref().unwrap().parse().unwrap();
        let proxy = DelayProxy::start(target, Duration::from_millis(10)).await;
        let local = daemon.dir.join("upload").join("May.csv");
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        write_customers(&local, "may-", ROWS);
        Self { daemon, db, proxy, local }
    }

    fn port(&self) -> String {
        self.proxy.port.to_string()
    }

    fn key(&self) -> String {
        self.daemon.key.display().to_string()
    }

    fn ssh_options(&self) -> Vec<String> {
        crate::interop_sftp::ssh_options(Path::new(&self.key()))
    }

    async fn run(&self, program: &str, args: &[String]) -> Output {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(&self.daemon.dir).stdin(std::process::Stdio::null()).kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("{program} hung\n{}", self.daemon.log()))
            .unwrap()
    }

    /// Asserts that `out` succeeded, then that the upload became exactly one
    /// job with one complete report of ROWS created rows, and that the
    /// upload ended up archived, with nothing left in /customers.
    async fn assert_one_report(&self, what: &str, out: &Output, stem: &str) {
        assert!(out.status.success(), "{what} failed: {}\n--- daemon log ---\n{}", describe(out), self.daemon.log());
        let summary = self.daemon.summary("acme", stem, REPORT).await;
        assert_eq!(summary["status"], "completed", "{what}: {summary}");
        assert_eq!(summary["created"], ROWS, "{what}: {summary}");
        assert_eq!(summary["failed"], 0, "{what}: {summary}");
        let results = read_results(&self.daemon.outbox("acme").join(format!("{stem}.results.csv")));
        assert_eq!(results.len(), ROWS + 1, "{what}: one result per row");
        assert!(results.iter().skip(1).all(|r| r[2] == "created"), "{what}: {results:?}");
        let archive = self.daemon.data_dir.join("accounts/acme/archive");
        let customers = self.daemon.customers("acme");
        eventually(Duration::from_secs(60), &format!("{what}: the upload archived and /customers empty"), || {
            let archived = std::fs::read_dir(&archive).ok()?.count();
            let left = std::fs::read_dir(&customers).ok()?.count();
            (archived >= 1 && left == 0).then_some(())
        })
        .await;
        // Long enough for a client retry or a second job to have shown up.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let jobs = self.db.store().await.find_jobs(Some("acme"), None, 100).await.unwrap();
        assert_eq!(jobs.len(), 1, "{what}: exactly one job for one upload: {jobs:?}\n{}", self.daemon.log());
        let archived: Vec<_> = std::fs::read_dir(&archive).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(archived.len(), 1, "{what}: one archived upload: {archived:?}");
        let summaries = std::fs::read_dir(self.daemon.outbox("acme"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".summary.json"))
            .count();
        assert_eq!(summaries, 1, "{what}: one report");
    }
}

async fn openssh_sftp_put(db: TestDb) {
    require("sftp", "apt-get install openssh-client");
    let t = Interop::start(db).await;
    let batch = t.daemon.dir.join("batch");
    std::fs::write(&batch, format!("put {} /customers/May.csv\nls -l /customers\n", t.local.display())).unwrap();
    let mut args = t.ssh_options();
    args.extend(["-P".into(), t.port(), "-b".into(), batch.display().to_string(), "acme@127.0.0.1".into()]);
    let out = t.run("sftp", &args).await;
    t.assert_one_report("sftp put", &out, "May").await;
}

async fn openssh_scp_over_sftp_and_legacy_scp(db: TestDb) {
    require("scp", "apt-get install openssh-client");
    for (legacy, stem) in [(false, "New"), (true, "Legacy")] {
        let t = Interop::start(db.another().await).await;
        let mut args = t.ssh_options();
        if legacy {
            args.push("-O".into());
        }
        args.extend(["-p".into(), "-P".into(), t.port(), t.local.display().to_string()]);
        args.push(format!("acme@127.0.0.1:/customers/{stem}.csv"));
        let out = t.run("scp", &args).await;
        t.assert_one_report(if legacy { "scp -O" } else { "scp" }, &out, stem).await;
        if legacy {
            // Download the report back over legacy scp, and see -r refused.
            let mut args = t.ssh_options();
            args.extend(["-O".into(), "-P".into(), t.port()]);
            args.extend([format!("acme@127.0.0.1:/outbox/{stem}.results.csv"), "back.csv".into()]);
            let out = t.run("scp", &args).await;
            assert!(out.status.success(), "scp -O download: {}", describe(&out));
            assert_eq!(
                std::fs::read(t.daemon.dir.join("back.csv")).unwrap(),
                std::fs::read(t.daemon.outbox("acme").join(format!("{stem}.results.csv"))).unwrap()
            );
            let mut args = t.ssh_options();
            args.extend(["-O".into(), "-r".into(), "-P".into(), t.port()]);
            args.extend([t.local.parent().unwrap().display().to_string(), "acme@127.0.0.1:/customers/".into()]);
            let out = t.run("scp", &args).await;
            assert!(!out.status.success(), "scp -O -r must fail: {}", describe(&out));
            assert!(String::from_utf8_lossy(&out.stderr).contains("-r"), "{}", describe(&out));
        }
    }
}

/// A dry run and a compressed upload, over the same 20 ms round trip: the
/// validation is predicted before the import, in the order they arrived.
async fn openssh_sftp_dry_run_then_a_compressed_upload(db: TestDb) {
    require("sftp", "apt-get install openssh-client");
    require("gzip", "apt-get install gzip");
    let t = Interop::start(db).await;
    let gz = t.daemon.dir.join("upload").join("May.csv.gz");
    let zipped = std::process::Command::new("gzip").arg("-c").arg(&t.local).output().unwrap();
    assert!(zipped.status.success());
    std::fs::write(&gz, zipped.stdout).unwrap();
    let batch = t.daemon.dir.join("batch");
    std::fs::write(
        &batch,
        format!("put {} /validate/Dry.csv\nput {} /customers/May.csv.gz\n", t.local.display(), gz.display()),
    )
    .unwrap();
    let mut args = t.ssh_options();
    args.extend(["-P".into(), t.port(), "-b".into(), batch.display().to_string(), "acme@127.0.0.1".into()]);
    let out = t.run("sftp", &args).await;
    assert!(out.status.success(), "sftp: {}\n{}", describe(&out), t.daemon.log());
    let outbox = t.daemon.outbox("acme");
    let dry =
        eventually(REPORT, "the dry run's report", || std::fs::read_to_string(outbox.join("Dry.validation.json")).ok())
            .await;
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(
        (dry["dry_run"].clone(), dry["created"].clone()),
        (serde_json::json!(true), serde_json::json!(ROWS)),
        "{dry}"
    );
    let summary = t.daemon.summary("acme", "May", REPORT).await;
    assert_eq!(summary["file"], "May.csv.gz");
    assert_eq!(summary["created"], ROWS, "the dry run wrote nothing: {summary}");
    for folder in ["customers", "validate"] {
        let dir = t.daemon.data_dir.join("accounts/acme").join(folder);
        eventually(Duration::from_secs(60), &format!("/{folder} empty"), || {
            (std::fs::read_dir(&dir).ok()?.count() == 0).then_some(())
        })
        .await;
    }
}

async fn curl_sftp_upload(db: TestDb) {
    require("curl", "apt-get install curl");
    let t = Interop::start(db).await;
    let args: Vec<String> = vec![
        "-sS".into(),
        "--insecure".into(),
        "-u".into(),
        "acme:".into(),
        "--key".into(),
        t.key(),
        "--pubkey".into(),
        format!("{}.pub", t.key()),
        "-T".into(),
        t.local.display().to_string(),
        format!("sftp://127.0.0.1:{}/customers/May.csv", t.port()),
    ];
    let out = t.run("curl", &args).await;
    t.assert_one_report("curl", &out, "May").await;
}

async fn lftp_put(db: TestDb, use_temp_file: bool) {
    require("lftp", "apt-get install lftp");
    let t = Interop::start(db).await;
    let connect = format!(
        "ssh -a -x -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
         -o IdentitiesOnly=yes -i {}",
        t.key()
    );
    let script = format!(
        "set sftp:connect-program \"{connect}\"; set xfer:use-temp-file {}; set net:max-retries 1; \
         open -u acme, -p {} sftp://127.0.0.1; put {} -o /customers/May.csv; bye",
        if use_temp_file { "yes" } else { "no" },
        t.port(),
        t.local.display()
    );
    let out = t.run("lftp", &["-c".into(), script]).await;
    t.assert_one_report(if use_temp_file { "lftp use-temp-file" } else { "lftp" }, &out, "May").await;
}

async fn lftp_put_plain(db: TestDb) {
    lftp_put(db, false).await;
}

async fn lftp_put_with_a_temp_file_and_rename(db: TestDb) {
    lftp_put(db, true).await;
}

async fn rclone_copy(db: TestDb, checksum: bool) {
    require("rclone", "apt-get install rclone");
    // The checksum leg reads the daemon's log for the md5sum it ran.
    let t = if checksum { Interop::start_process(db).await } else { Interop::start(db).await };
    let config = t.daemon.dir.join("rclone.conf");
    std::fs::write(&config, "").unwrap();
    let remote = format!(":sftp,host=127.0.0.1,port={},user=acme,key_file={}:/customers", t.port(), t.key());
    let mut args: Vec<String> = vec!["copy".into(), "--config".into(), config.display().to_string()];
    if checksum {
        args.push("--checksum".into());
    }
    args.extend([t.local.display().to_string(), remote]);
    let out = t.run("rclone", &args).await;
    let what = if checksum { "rclone copy --checksum" } else { "rclone copy" };
    t.assert_one_report(what, &out, "May").await;
    if checksum {
        let log = t.daemon.log();
        assert!(log.contains("md5sum /customers/May.csv"), "rclone verified the upload with md5sum over exec\n{log}");
    }
}

async fn rclone_copy_default(db: TestDb) {
    rclone_copy(db, false).await;
}

async fn rclone_copy_checksum(db: TestDb) {
    rclone_copy(db, true).await;
}

/// The daemon's Ed25519 host key fingerprint (`SHA256:...`) and a PuTTY key.
async fn putty_setup(t: &Interop) -> (String, String) {
    require("puttygen", "apt-get install putty-tools");
    let host_key = t.daemon.data_dir.join("ssh_host_ed25519_key");
    let out = t
        .run("ssh-keygen", &["-l".into(), "-E".into(), "sha256".into(), "-f".into(), host_key.display().to_string()])
        .await;
    assert!(out.status.success(), "{}", describe(&out));
    let fingerprint = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap().to_owned();
    let ppk = t.daemon.dir.join("id.ppk");
    let out =
        t.run("puttygen", &[t.key(), "-O".into(), "private".into(), "-o".into(), ppk.display().to_string()]).await;
    assert!(out.status.success(), "{}", describe(&out));
    (fingerprint, ppk.display().to_string())
}

async fn putty_psftp_put(db: TestDb) {
    require("psftp", "apt-get install putty-tools");
    let t = Interop::start(db).await;
    let (fingerprint, ppk) = putty_setup(&t).await;
    let script = t.daemon.dir.join("psftp.txt");
    std::fs::write(&script, format!("put {} /customers/May.csv\n", t.local.display())).unwrap();
    let args: Vec<String> = vec![
        "-batch".into(),
        "-P".into(),
        t.port(),
        "-i".into(),
        ppk,
        "-hostkey".into(),
        fingerprint,
        "-b".into(),
        script.display().to_string(),
        "acme@127.0.0.1".into(),
    ];
    let out = t.run("psftp", &args).await;
    t.assert_one_report("psftp", &out, "May").await;
}

async fn putty_pscp_over_sftp_and_scp(db: TestDb) {
    require("pscp", "apt-get install putty-tools");
    for (mode, stem) in [("-sftp", "Sftp"), ("-scp", "Scp")] {
        let t = Interop::start(db.another().await).await;
        let (fingerprint, ppk) = putty_setup(&t).await;
        let args: Vec<String> = vec![
            "-batch".into(),
            mode.into(),
            "-P".into(),
            t.port(),
            "-i".into(),
            ppk,
            "-hostkey".into(),
            fingerprint,
            t.local.display().to_string(),
            format!("acme@127.0.0.1:/customers/{stem}.csv"),
        ];
        let out = t.run("pscp", &args).await;
        t.assert_one_report(&format!("pscp {mode}"), &out, stem).await;
    }
}

async fn python_client(db: TestDb, mode: &str, module: &str) {
    require("python3", "apt-get install python3");
    require_python_module(module);
    let t = Interop::start(db).await;
    let script = clients_dir().join("py_client.py").display().to_string();
    let args =
        vec![script, mode.into(), "127.0.0.1".into(), t.port(), "acme".into(), t.key(), t.local.display().to_string()];
    let mut args = args;
    args.push("/customers/May.csv".into());
    let out = t.run("python3", &args).await;
    t.assert_one_report(mode, &out, "May").await;
}

async fn paramiko_put_with_its_default_confirm(db: TestDb) {
    python_client(db, "paramiko", "paramiko").await;
}

async fn asyncssh_put_preserve(db: TestDb) {
    python_client(db, "asyncssh", "asyncssh").await;
}

async fn winscp_sequence_temp_name_rename_then_setstat(db: TestDb) {
    python_client(db, "winscp", "paramiko").await;
}

async fn filezilla_sequence_upload_then_setstat(db: TestDb) {
    python_client(db, "filezilla", "paramiko").await;
}

async fn jsch_put_with_a_password(db: TestDb) {
    require("javac", "apt-get install default-jdk-headless");
    let jsch = Path::new("/usr/share/java/jsch.jar");
    assert!(jsch.is_file(), "JSch is not installed: apt-get install libjsch-java (.ci/run installs it)");
    let t = Interop::start(db).await;
    let classes = t.daemon.dir.join("classes");
    std::fs::create_dir_all(&classes).unwrap();
    let source = clients_dir().join("JschPut.java");
    let out = t
        .run(
            "javac",
            &[
                "-cp".into(),
                jsch.display().to_string(),
                "-d".into(),
                classes.display().to_string(),
                source.display().to_string(),
            ],
        )
        .await;
    assert!(out.status.success(), "javac: {}", describe(&out));
    let classpath = format!("{}:{}", jsch.display(), classes.display());
    let args: Vec<String> = vec![
        "-cp".into(),
        classpath,
        "JschPut".into(),
        "127.0.0.1".into(),
        t.port(),
        "acme".into(),
        PASSWORD.into(),
        t.local.display().to_string(),
        "/customers/May.csv".into(),
    ];
    let out = t.run("java", &args).await;
    t.assert_one_report("JSch", &out, "May").await;
    // JSch knows no Ed25519: it got the ECDSA P-256 host key.
    assert!(String::from_utf8_lossy(&out.stdout).contains("ecdsa-sha2-nistp256"), "{}", describe(&out));
}

async fn ssh2_sftp_client(db: TestDb, mode: &str) {
    require("node", "apt-get install nodejs npm");
    let module = clients_dir().join("node_modules/ssh2-sftp-client");
    assert!(module.is_dir(), "ssh2-sftp-client is not installed: npm ci --prefix tests/clients (.ci/run does)");
    let t = Interop::start(db).await;
    let args: Vec<String> = vec![
        clients_dir().join("ssh2_put.js").display().to_string(),
        mode.into(),
        "127.0.0.1".into(),
        t.port(),
        "acme".into(),
        t.key(),
        t.local.display().to_string(),
        "/customers/May.csv".into(),
    ];
    let out = t.run("node", &args).await;
    t.assert_one_report(&format!("ssh2-sftp-client {mode}"), &out, "May").await;
}

async fn ssh2_sftp_client_put(db: TestDb) {
    ssh2_sftp_client(db, "put").await;
}

async fn ssh2_sftp_client_fast_put(db: TestDb) {
    ssh2_sftp_client(db, "fastPut").await;
}

crate::on_both_backends!(
    openssh_sftp_put,
    openssh_sftp_dry_run_then_a_compressed_upload,
    openssh_scp_over_sftp_and_legacy_scp,
    curl_sftp_upload,
    lftp_put_plain,
    lftp_put_with_a_temp_file_and_rename,
    rclone_copy_default,
    rclone_copy_checksum,
    putty_psftp_put,
    putty_pscp_over_sftp_and_scp,
    paramiko_put_with_its_default_confirm,
    asyncssh_put_preserve,
    winscp_sequence_temp_name_rename_then_setstat,
    filezilla_sequence_upload_then_setstat,
    jsch_put_with_a_password,
    ssh2_sftp_client_put,
    ssh2_sftp_client_fast_put,
);
