//! The real clients merchants use, against the in-process server: OpenSSH
//! `sftp -b`, `scp`, `ssh`, and curl (libssh2). A client that is not
//! installed fails the test with what to install; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use intake::sftp::hash_password;
use tokio::process::Command;

use crate::sftp::{test_settings, user, TestSftp};

/// Panics with what to install when `program` is missing.
fn installed(program: &str) -> bool {
    let package = if program == "curl" { "curl" } else { "openssh-client" };
    crate::interop_clients::require(program, &format!("apt-get install {package}"));
    true
}

/// Runs a client with a deadline; a hang is a test failure, not a stuck CI job.
async fn run(program: &str, args: &[String], cwd: &Path) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd).kill_on_drop(true);
    cmd.stdin(std::process::Stdio::null());
    tokio::time::timeout(Duration::from_secs(45), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} hung"))
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Generates a client key with ssh-keygen; returns (private key path, public line).
async fn keygen(dir: &Path, name: &str, kind: &[&str]) -> (PathBuf, String) {
    let path = dir.join(name);
    let mut args: Vec<String> = vec!["-q".into(), "-N".into(), String::new(), "-f".into()];
    args.push(path.display().to_string());
    args.extend(kind.iter().map(|s| s.to_string()));
    let out = run("ssh-keygen", &args, dir).await;
    assert!(out.status.success(), "{}", text(&out));
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_owned())
}

/// OpenSSH client options for a test login with `key` (no config, no known hosts).
pub(crate) fn ssh_options(key: &Path) -> Vec<String> {
    [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
        "-F",
        "/dev/null",
        "-i",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([key.display().to_string()])
    .collect()
}

/// A server with user `acme` (ed25519 key from ssh-keygen, password `s3cret`).
struct Fixture {
    server: TestSftp,
    work: tempfile::TempDir,
    key: PathBuf,
}

impl Fixture {
    async fn start() -> Self {
        let server = TestSftp::start(test_settings()).await;
        let work = tempfile::tempdir().unwrap();
        let (key, public) = keygen(work.path(), "id_ed25519", &["-t", "ed25519"]).await;
        let mut u = user("acme", "acme");
        u.public_keys = vec![public];
        u.password_hash = Some(hash_password("s3cret").unwrap());
        server.users.add(u);
        Self { server, work, key }
    }

    fn port(&self) -> String {
        self.server.addr.port().to_string()
    }

    fn customers(&self) -> PathBuf {
        self.server.folder("acme", "customers")
    }

    async fn sftp_batch(&self, key: &Path, extra: &[&str], batch: &str) -> Output {
        let batch_file = self.work.path().join("batch");
        std::fs::write(&batch_file, batch).unwrap();
        let mut args = ssh_options(key);
        args.extend(["-P".to_owned(), self.port(), "-b".to_owned(), batch_file.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("acme@127.0.0.1".to_owned());
        run("sftp", &args, self.work.path()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_sftp_puts_lists_gets_renames_and_removes() {
    if !installed("sftp") || !installed("ssh-keygen") {
        return;
    }
    let f = Fixture::start().await;
    std::fs::write(f.work.path().join("May.csv"), "ref,address\na1,+15555001234\n").unwrap();
    std::fs::write(f.server.folder("acme", "outbox").join("May.results.csv"), "line,ref\n").unwrap();
    let out = f
        .sftp_batch(
            &f.key,
            &[],
            "put May.csv /customers/\n\
             ls -l /customers\n\
             ls -l /\n\
             cd /outbox\n\
             ls -l\n\
             get May.results.csv results.csv\n\
             get /customers/May.csv back.csv\n\
             rename /customers/May.csv /customers/June.csv\n\
             ls /customers\n\
             -put May.csv /outbox/x.csv\n\
             -mkdir /customers/sub\n\
             -rename /outbox/May.results.csv /outbox/x.csv\n\
             rm /outbox/May.results.csv\n\
             rm /customers/June.csv\n\
             ls /customers\n",
        )
        .await;
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // OpenSSH's sftp names owner and group through users-groups-by-id@openssh.com
    // (the link count shows as `?`, as against OpenSSH's own server).
    let line = |name: &str| {
        stdout.lines().find(|l| !l.starts_with("sftp>") && l.ends_with(name)).unwrap_or_default().to_owned()
    };
    assert!(line("/customers/May.csv").starts_with("-rw-r--r--"), "{all}");
    assert!(line("/customers/May.csv").contains(" acme     acme           28 "), "{all}");
    assert!(line("/customers").starts_with("drwxr-xr-x") && line("/customers").contains(" acme     acme "), "{all}");
    assert!(line("/archive").starts_with("dr-xr-xr-x"), "{all}");
    // /outbox files can be deleted: shown writable so GUI clients offer Delete.
    assert!(line("May.results.csv").starts_with("-rw-r--r--"), "{all}");
    assert!(line("May.results.csv").contains(" acme     acme            9 "), "{all}");
    assert!(stdout.contains("June.csv"), "{all}");
    assert_eq!(std::fs::read(f.work.path().join("results.csv")).unwrap(), b"line,ref\n");
    assert_eq!(
        std::fs::read(f.work.path().join("back.csv")).unwrap(),
        std::fs::read(f.work.path().join("May.csv")).unwrap()
    );
    // Refused operations said so, and changed nothing.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Permission denied"), "{all}");
    assert!(!stderr.contains(&f.server.dir.path().display().to_string()), "{all}");
    assert_eq!(std::fs::read_dir(f.customers()).unwrap().count(), 0, "{all}");
    assert_eq!(std::fs::read_dir(f.server.folder("acme", "outbox")).unwrap().count(), 0, "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_uploads_exit_zero_and_publish_the_file() {
    if !installed("scp") || !installed("ssh-keygen") {
        return;
    }
    let f = Fixture::start().await;
    let data = "ref,address\n".repeat(50_000);
    std::fs::write(f.work.path().join("up.csv"), &data).unwrap();
    let mut args = ssh_options(&f.key);
    args.extend(["-P".to_owned(), f.port(), "up.csv".to_owned(), "acme@127.0.0.1:/customers/scp.csv".to_owned()]);
    let out = run("scp", &args, f.work.path()).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(f.customers().join("scp.csv")).unwrap(), data);
    // scp -p sends times and modes: accepted, and still exit 0.
    let mut args = ssh_options(&f.key);
    args.extend([
        "-p".to_owned(),
        "-P".to_owned(),
        f.port(),
        "up.csv".to_owned(),
        "acme@127.0.0.1:customers/".to_owned(),
    ]);
    let out = run("scp", &args, f.work.path()).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(f.customers().join("up.csv").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_with_a_key_and_with_a_password() {
    if !installed("curl") || !installed("ssh-keygen") {
        return;
    }
    let f = Fixture::start().await;
    // libssh2 wants a PEM key; ssh-keygen -m PEM for ed25519 still writes OpenSSH
    // format, which libssh2 1.10 with OpenSSL reads.
    std::fs::write(f.work.path().join("up.csv"), "ref,address\na1,+15555001234\n").unwrap();
    let url = |name: &str| format!("sftp://127.0.0.1:{}/customers/{name}", f.port());
    let key_args: Vec<String> = vec![
        "-sS".into(),
        "--insecure".into(),
        "-u".into(),
        "acme:".into(),
        "--key".into(),
        f.key.display().to_string(),
        "--pubkey".into(),
        f.key.with_extension("pub").display().to_string(),
        "-T".into(),
        "up.csv".into(),
        url("by-key.csv"),
    ];
    let out = run("curl", &key_args, f.work.path()).await;
    assert!(out.status.success(), "{}", text(&out));
    let pw_args: Vec<String> = vec![
        "-sS".into(),
        "--insecure".into(),
        "-u".into(),
        "acme:s3cret".into(),
        "-T".into(),
        "up.csv".into(),
        url("by-password.csv"),
    ];
    let out = run("curl", &pw_args, f.work.path()).await;
    assert!(out.status.success(), "{}", text(&out));
    let wrong: Vec<String> = vec![
        "-sS".into(),
        "--insecure".into(),
        "-u".into(),
        "acme:wrong".into(),
        "-T".into(),
        "up.csv".into(),
        url("wrong.csv"),
    ];
    let out = run("curl", &wrong, f.work.path()).await;
    assert!(!out.status.success(), "{}", text(&out));
    let mut names: Vec<_> =
        std::fs::read_dir(f.customers()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["by-key.csv", "by-password.csv"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_commands_and_forwarding_run_nothing() {
    if !installed("ssh") || !installed("ssh-keygen") {
        return;
    }
    let f = Fixture::start().await;
    let marker = f.work.path().join("ran");
    let mut args = ssh_options(&f.key);
    args.extend(["-p".to_owned(), f.port(), "acme@127.0.0.1".to_owned(), format!("touch {}", marker.display())]);
    let out = run("ssh", &args, f.work.path()).await;
    assert!(!out.status.success(), "{}", text(&out));
    let mut args = ssh_options(&f.key);
    args.extend(["-T".to_owned(), "-p".to_owned(), f.port(), "acme@127.0.0.1".to_owned()]);
    let out = run("ssh", &args, f.work.path()).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!marker.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_and_rsa_sha2_keys_log_in_and_ssh_rsa_sha1_is_refused() {
    if !installed("sftp") || !installed("ssh-keygen") {
        return;
    }
    let f = Fixture::start().await;
    let (ecdsa, ecdsa_pub) = keygen(f.work.path(), "id_ecdsa", &["-t", "ecdsa"]).await;
    let (rsa, rsa_pub) = keygen(f.work.path(), "id_rsa", &["-t", "rsa", "-b", "2048"]).await;
    let mut u = user("acme", "acme");
    u.public_keys = vec![ecdsa_pub, rsa_pub];
    f.server.users.add(u);
    for key in [&ecdsa, &rsa] {
        let out = f.sftp_batch(key, &[], "ls /\n").await;
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = f.sftp_batch(&rsa, &["-o", "PubkeyAcceptedAlgorithms=ssh-rsa"], "ls /\n").await;
    assert!(!out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mb_download_completes_with_default_and_255_kib_reads() {
    if !installed("sftp") || !installed("ssh-keygen") {
        return;
    }
    let f = Fixture::start().await;
    let mut data = vec![0u8; 64 * 1024 * 1024];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(f.server.folder("acme", "outbox").join("big.bin"), &data).unwrap();
    for (extra, local) in [(&[][..], "default.bin"), (&["-B", "261120"][..], "big-reads.bin")] {
        let out = f.sftp_batch(&f.key, extra, &format!("get /outbox/big.bin {local}\n")).await;
        assert!(out.status.success(), "{}", text(&out));
        let got = std::fs::read(f.work.path().join(local)).unwrap();
        assert!(got == data, "{local} differs ({} bytes)", got.len());
    }
}
