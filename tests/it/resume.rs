//! Resumable SFTP uploads: a connection cut mid-upload (in user space, by a
//! proxy that drops both sides after so many bytes) keeps the part received,
//! hidden; the same account resumes it with OpenSSH `reput`, lftp `put -c`,
//! or a `.filepart` resumed and renamed (WinSCP's way); the report has every
//! row exactly once.

use crate::raw_sftp::{RawSftp, CREAT, NO_SUCH_FILE, WRITE};
use crate::support::{describe, eventually, openssh_sftp, write_customers, TestAccount, TestDaemon, TestDb};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const REPORT: Duration = Duration::from_secs(120);
const ROWS: usize = 60_000;
/// Where the first connection is cut: well into the file, well before its end.
const CUT_AFTER: u64 = 1024 * 1024;

/// Runs a store call from a polling closure.
fn block<T>(f: impl std::future::Future<Output = Result<T, intake::store::StoreError>>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f)).unwrap()
}

/// A loopback TCP proxy that forwards both ways and drops both sides of a
/// connection once the client has sent `cut_after` bytes: a connection
/// lost mid-upload, made in user space.
struct CutProxy {
    port: String,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    async fn start(target: std::net::SocketAddr, cut_after: u64) -> CutProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cut);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = Arc::clone(&flag);
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let sent = AtomicU64::new(0);
                    let up = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let before = sent.fetch_add(n as u64, Ordering::Relaxed);
                            let allowed = (cut_after.saturating_sub(before) as usize).min(n);
                            if sw.write_all(&buf[..allowed]).await.is_err() {
                                return;
                            }
                            if allowed < n {
                                flag.store(true, Ordering::Relaxed);
                                return;
                            }
                        }
                    };
                    let down = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) if cw.write_all(&buf[..n]).await.is_err() => return,
                                Ok(_) => {}
                            }
                        }
                    };
                    // Either side ending drops all four halves: both connections close.
                    tokio::select! { _ = up => {}, _ = down => {} }
                });
            }
        });
        CutProxy { port, cut, task }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sftp_addr(d: &TestDaemon) -> std::net::SocketAddr {
    d.addr.as_ref().unwrap().parse().unwrap()
}

/// The partial uploads kept in `dir` (hidden, reserved names).
fn partials(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".intake-partial."))
        .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect()
}

/// Uploads `local` as `/customers/<remote>` through a proxy that cuts the
/// connection mid-file; waits until the part is kept and checks that it is
/// hidden: no job, not listed, its size known to STAT.
async fn cut_upload(d: &TestDaemon, db: &TestDb, local: &Path, remote: &str) -> u64 {
    let proxy = CutProxy::start(sftp_addr(d), CUT_AFTER).await;
    let out =
        openssh_sftp(&d.dir, &d.key, &proxy.port, "acme", &format!("put {} /customers/{remote}\n", local.display()))
            .await;
    assert!(!out.status.success(), "the cut upload fails: {}", describe(&out));
    assert!(proxy.cut.load(Ordering::Relaxed), "the proxy cut the connection");
    let full = std::fs::metadata(local).unwrap().len();
    // Kept once the server has seen the connection go: STAT of the name says so.
    let mut raw = RawSftp::connect(&d.key, &d.port(), "acme").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let kept = loop {
        if let Ok(size) = raw.lstat(&format!("/customers/{remote}")).await {
            break size;
        }
        assert!(std::time::Instant::now() < deadline, "the part received is never kept\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(kept > 0 && kept < full, "a part of it: {kept} of {full} bytes");
    assert!(partials(&d.customers("acme")).iter().any(|(_, len)| *len == kept), "kept hidden, under a reserved name");
    let store = db.store().await;
    let jobs = block(store.find_jobs(Some("acme"), None, 100));
    assert!(jobs.iter().all(|j| !remote.starts_with(j.file_name.as_str())), "a kept part is never a job: {jobs:?}");
    let listing = d.sftp("acme", "ls -la /customers\n").await;
    assert!(listing.status.success(), "{}", describe(&listing));
    let shown = String::from_utf8_lossy(&listing.stdout);
    assert!(!shown.contains(remote) && !shown.contains(".intake-"), "hidden from listings: {shown}");
    kept
}

/// Prints a figure for BENCHMARKS.md: seconds since `started`, the daemon's peak RSS.
fn measured(d: &TestDaemon, what: &str, started: std::time::Instant) {
    eprintln!("measured: {what}: {:.1} s, peak RSS {} MiB", started.elapsed().as_secs_f64(), d.peak_rss_mib());
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// The report of `stem` has every row of `local` exactly once, it is the
/// account's one job, the file imported is `local` byte for byte, and no
/// part is left.
async fn assert_imported_once(d: &TestDaemon, db: &TestDb, local: &Path, stem: &str) {
    let summary = d.summary("acme", stem, REPORT).await;
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(summary["rows"], ROWS as u64, "{summary}");
    assert_eq!(summary["created"], ROWS as u64, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["sha256"], sha256_hex(local), "the file as sent, byte for byte");
    let store = db.store().await;
    let jobs = block(store.find_jobs(Some("acme"), None, 10));
    assert_eq!(jobs.len(), 1, "published exactly once: {jobs:?}");
    assert_eq!(block(store.count_customers("acme")), ROWS as u64);
    assert!(partials(&d.customers("acme")).is_empty(), "the part was used up");
    assert!(d.log().contains("upload resumed from the part kept"), "resumed, not sent again\n{}", d.log());
}

/// OpenSSH `reput` after a cut: the part kept is resumed (STAT gives its
/// size, OPEN with APPEND, writes from there), published once on CLOSE.
/// Another account sees nothing of it and cannot resume it.
async fn a_cut_upload_resumes_with_openssh_reput(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme"), TestAccount::new("beta")], &[]).await;
    let local = d.dir.join("big.csv");
    write_customers(&local, "big-", ROWS);
    let started = std::time::Instant::now();
    cut_upload(&d, &db, &local, "big.csv").await;

    let mut other = RawSftp::connect(&d.key, &d.port(), "beta").await;
    assert_eq!(other.lstat("/customers/big.csv").await.map_err(|s| s.0), Err(NO_SUCH_FILE), "not another account's");
    let out = d.sftp("beta", &format!("reput {} /customers/big.csv\n", local.display())).await;
    assert!(!out.status.success(), "another account cannot resume it: {}", describe(&out));
    assert_eq!(partials(&d.customers("acme")).len(), 1, "and it is still kept");

    let out = d.sftp("acme", &format!("reput {} /customers/big.csv\n", local.display())).await;
    assert!(out.status.success(), "reput: {}\n{}", describe(&out), d.log());
    assert_imported_once(&d, &db, &local, "big").await;
    measured(&d, "cut at 1 MiB, reput, report", started);

    // A client that opens a kept part's name without TRUNCATE and writes
    // from the start replaces the part whole: none of its bytes are left.
    cut_upload(&d, &db, &local, "again.csv").await;
    let small = "ref,email\nsmall-1,s1@example.com\n";
    let mut raw = RawSftp::connect(&d.key, &d.port(), "acme").await;
    let handle = raw.open("/customers/again.csv", WRITE | CREAT).await.unwrap();
    assert_eq!(raw.write(&handle, 0, small.as_bytes()).await.0, 0);
    assert_eq!(raw.close(&handle).await.0, 0);
    let summary = d.summary("acme", "again", REPORT).await;
    assert_eq!((summary["rows"].as_u64(), summary["created"].as_u64()), (Some(1), Some(1)), "{summary}");
    assert_eq!(summary["bytes"], small.len() as u64, "{summary}");
}

crate::on_both_backends!(a_cut_upload_resumes_with_openssh_reput);

/// lftp `put -c` after a cut: STAT for the size, OPEN without TRUNCATE,
/// writes from the size on.
async fn a_cut_upload_resumes_with_lftp_put_c(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    let local = d.dir.join("big.csv");
    write_customers(&local, "big-", ROWS);
    let started = std::time::Instant::now();
    cut_upload(&d, &db, &local, "big.csv").await;
    let connect = format!(
        "ssh -a -x -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
         -o IdentitiesOnly=yes -i {}",
        d.key.display()
    );
    let script = format!(
        "set sftp:connect-program \"{connect}\"; set net:max-retries 1; \
         open -u acme, -p {} sftp://127.0.0.1; put -c {} -o /customers/big.csv; bye",
        d.port(),
        local.display()
    );
    let out = tokio::process::Command::new("lftp").args(["-c", &script]).current_dir(&d.dir).output().await.unwrap();
    assert!(out.status.success(), "lftp put -c: {}\n{}", describe(&out), d.log());
    assert_imported_once(&d, &db, &local, "big").await;
    measured(&d, "cut at 1 MiB, lftp put -c, report", started);
}

crate::on_both_backends!(a_cut_upload_resumes_with_lftp_put_c);

/// WinSCP's way: the upload goes to `NAME.filepart`, is cut, is resumed
/// (`put -a`: STAT, APPEND), and the `.filepart` is renamed to its name:
/// that rename publishes it, once.
async fn a_cut_filepart_upload_resumes_and_is_renamed(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    let local = d.dir.join("big.csv");
    write_customers(&local, "big-", ROWS);
    let started = std::time::Instant::now();
    cut_upload(&d, &db, &local, "big.csv.filepart").await;
    let out = d
        .sftp(
            "acme",
            &format!(
                "put -a {} /customers/big.csv.filepart\nrename /customers/big.csv.filepart /customers/big.csv\n",
                local.display()
            ),
        )
        .await;
    assert!(out.status.success(), "put -a and rename: {}\n{}", describe(&out), d.log());
    assert_imported_once(&d, &db, &local, "big").await;
    measured(&d, "cut .filepart at 1 MiB, put -a, rename, report", started);
}

crate::on_both_backends!(a_cut_filepart_upload_resumes_and_is_renamed);

/// A part kept past `resume_keep_secs` is removed and cannot be resumed.
async fn a_kept_part_expires(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[("INTAKE_SFTP__RESUME_KEEP_SECS", "3")]).await;
    let local = d.dir.join("big.csv");
    write_customers(&local, "big-", ROWS);
    let started = std::time::Instant::now();
    cut_upload(&d, &db, &local, "big.csv").await;
    eventually(Duration::from_secs(30), "the part to expire", || {
        partials(&d.customers("acme")).is_empty().then_some(())
    })
    .await;
    let out = d.sftp("acme", &format!("reput {} /customers/big.csv\n", local.display())).await;
    assert!(!out.status.success(), "nothing left to resume: {}", describe(&out));
    assert!(block(db.store().await.find_jobs(Some("acme"), None, 10)).is_empty(), "and it never became a job");
    measured(&d, "cut, kept 3 s, removed", started);
}

crate::on_both_backends!(a_kept_part_expires);

/// With `max_partial_uploads_per_account = 1`, keeping a second cut upload
/// removes the first: only the newest can be resumed, and STAT says so.
async fn only_the_newest_parts_within_the_account_limit_are_kept(db: TestDb) {
    let d =
        TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[("INTAKE_SFTP__MAX_PARTIAL_UPLOADS_PER_ACCOUNT", "1")])
            .await;
    let local = d.dir.join("big.csv");
    write_customers(&local, "big-", ROWS);
    let first = cut_upload(&d, &db, &local, "first.csv").await;
    let mut raw = RawSftp::connect(&d.key, &d.port(), "acme").await;
    assert_eq!(raw.lstat("/customers/first.csv").await, Ok(first));
    let second = cut_upload(&d, &db, &local, "second.csv").await;
    eventually(Duration::from_secs(10), "one part kept", || (partials(&d.customers("acme")).len() == 1).then_some(()))
        .await;
    assert_eq!(raw.lstat("/customers/first.csv").await.map_err(|s| s.0), Err(NO_SUCH_FILE), "the older part went");
    assert_eq!(raw.lstat("/customers/second.csv").await, Ok(second));
    let out = d.sftp("acme", &format!("reput {} /customers/second.csv\n", local.display())).await;
    assert!(out.status.success(), "reput: {}\n{}", describe(&out), d.log());
    assert_imported_once(&d, &db, &local, "second").await;
}

crate::on_both_backends!(only_the_newest_parts_within_the_account_limit_are_kept);
