//! Issue 21, the rest: an empty upload its client gave up gets no report;
//! `/healthz` and `/readyz` report a store that takes no writes; user text
//! never forges a log line or reaches a terminal raw. Through the real daemon.

use crate::raw_sftp::{RawSftp, CREAT, NO_SUCH_FILE, TRUNC, WRITE};
use crate::support::{describe, eventually, TestAccount, TestDaemon, TestDb};
use serde_json::Value;
use std::time::Duration;

const REPORT: Duration = Duration::from_secs(120);

/// Runs a store call from a polling closure.
fn block<T>(f: impl std::future::Future<Output = Result<T, intake::store::StoreError>>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f)).unwrap()
}

/// Old sshfs (and sshfs with `max_conns`, whose LSTAT may go on another
/// connection): OPEN, an LSTAT of the name that says no such file, CLOSE
/// with nothing written. The client gave up on it: nothing is published,
/// no `empty_file` report. A deliberate empty upload (OpenSSH `put` of an
/// empty file; sshfs `touch`, whose LSTAT on its own session finds the
/// upload) still gets its `empty_file` report.
async fn an_empty_upload_given_up_by_its_client_gets_no_report(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    let started = std::time::Instant::now();
    let mut a = RawSftp::connect(&d.key, &d.port(), "acme").await;
    let mut b = RawSftp::connect(&d.key, &d.port(), "acme").await;
    let handle = a.open("/customers/gone.csv", WRITE | CREAT | TRUNC).await.unwrap();
    assert_eq!(b.lstat("/customers/gone.csv").await.map_err(|s| s.0), Err(NO_SUCH_FILE));
    let (code, message) = a.close(&handle).await;
    assert_ne!(code, 0, "the CLOSE says it was not published");
    assert!(message.contains("not published"), "{message}");
    assert!(!d.customers("acme").join("gone.csv").exists(), "nothing published");

    // sshfs `touch`: its LSTAT on the same session answers from the upload.
    let handle = a.open("/customers/touched.csv", WRITE | CREAT | TRUNC).await.unwrap();
    assert_eq!(a.lstat("/customers/touched.csv").await, Ok(0));
    assert_eq!(a.close(&handle).await.0, 0);
    let empty = d.dir.join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let out = d.sftp("acme", &format!("put {} /customers/empty.csv\n", empty.display())).await;
    assert!(out.status.success(), "{}", describe(&out));
    for stem in ["touched", "empty"] {
        let summary = d.summary("acme", stem, REPORT).await;
        assert_eq!(summary["error"]["code"], "empty_file", "{summary}");
    }
    let jobs = block(db.store().await.find_jobs(Some("acme"), None, 10));
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(jobs.iter().all(|j| j.file_name != "gone.csv"), "{jobs:?}");
    measured(&d, "empty upload given up, beside two deliberate ones", started);
}

crate::on_both_backends!(an_empty_upload_given_up_by_its_client_gets_no_report);

/// Prints a figure for BENCHMARKS.md: seconds since `started`, the daemon's peak RSS.
fn measured(d: &TestDaemon, what: &str, started: std::time::Instant) {
    eprintln!("measured: {what}: {:.1} s, peak RSS {} MiB", started.elapsed().as_secs_f64(), d.peak_rss_mib());
}

/// Holds the store's write lock (SQLite: an exclusive transaction of
/// another process; PostgreSQL: the probe table locked), until dropped.
enum WriteBlock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteBlock {
    async fn hold(db: &TestDb) -> WriteBlock {
        use sqlx::Connection;
        if db.url.starts_with("sqlite") {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::raw_sql("BEGIN EXCLUSIVE").execute(&mut conn).await.unwrap();
            WriteBlock::Sqlite(conn)
        } else {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::raw_sql("BEGIN; LOCK TABLE write_probe IN ACCESS EXCLUSIVE MODE").execute(&mut conn).await.unwrap();
            WriteBlock::Postgres(conn)
        }
    }

    async fn release(self) {
        match self {
            WriteBlock::Sqlite(mut c) => sqlx::raw_sql("ROLLBACK").execute(&mut c).await.map(drop).unwrap(),
            WriteBlock::Postgres(mut c) => sqlx::raw_sql("ROLLBACK").execute(&mut c).await.map(drop).unwrap(),
        }
    }
}

/// Both health endpoints within `limit`: `(healthz, readyz)` as (status, body).
async fn health_until(d: &TestDaemon, limit: Duration, done: impl Fn(&(u16, Value), &(u16, Value)) -> bool) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let (hs, hb) = d.http_get("/healthz").await;
        let (rs, rb) = d.http_get("/readyz").await;
        let health = (hs, serde_json::from_str(&hb).unwrap_or(Value::Null));
        let ready = (rs, serde_json::from_str(&rb).unwrap_or(Value::Null));
        if done(&health, &ready) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "health {health:?}, readiness {ready:?}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A store that answers reads but takes no write: `/healthz` and `/readyz`
/// both answer 503 naming `database_write`; both are 200 again once it
/// takes writes, with no restart.
async fn healthz_and_readyz_report_a_store_that_takes_no_writes(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    health_until(&d, Duration::from_secs(10), |h, r| h.0 == 200 && r.0 == 200).await;
    let lock = WriteBlock::hold(&db).await;
    let started = std::time::Instant::now();
    health_until(&d, Duration::from_secs(30), |h, r| {
        h.0 == 503
            && h.1["failed"]["database_write"].is_string()
            && r.0 == 503
            && r.1["failed"]["database_write"].is_string()
    })
    .await;
    measured(&d, "store write-locked: /healthz and /readyz 503", started);
    lock.release().await;
    let started = std::time::Instant::now();
    health_until(&d, Duration::from_secs(30), |h, r| h.0 == 200 && r.0 == 200).await;
    measured(&d, "lock released: both 200", started);
}

crate::on_both_backends!(healthz_and_readyz_report_a_store_that_takes_no_writes);

/// Whether `line` starts as the text log's lines do (`2026-12-07T08:...Z`).
fn starts_with_a_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T'
}

/// A file name with CR/LF and ESC (refused at upload over SFTP, or placed
/// by another server and taken as a job) and one with a bidi override
/// (accepted over SFTP) never forge a log line nor reach the log or
/// `intake jobs` raw: every log line is one of the daemon's.
async fn file_names_never_forge_a_log_line(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    let started = std::time::Instant::now();
    let forged = "\r\n2026-01-01T00:00:00.000000Z  INFO intake: upload complete file=forged.csv\x1b[2J";
    let mut raw = RawSftp::connect(&d.key, &d.port(), "acme").await;
    let refused = raw.open(&format!("/customers/x{forged}.csv"), WRITE | CREAT | TRUNC).await;
    assert!(refused.is_err(), "control characters are refused at upload");
    assert!(raw.lstat(&format!("/customers/y{forged}.csv")).await.is_err());
    let bidi = "invoice\u{202e}vsc.csv";
    let handle = raw.open(&format!("/customers/{bidi}"), WRITE | CREAT | TRUNC).await.unwrap();
    assert_eq!(raw.write(&handle, 0, b"ref,email\nb-1,b1@example.com\n").await.0, 0);
    assert_eq!(raw.close(&handle).await.0, 0);
    let placed = format!("placed{forged}.csv");
    d.place("acme", &placed, |p| std::fs::write(p, "ref,email\np-1,p1@example.com\n").unwrap());
    let store = db.store().await;
    eventually(REPORT, "both jobs to end", || {
        let jobs = block(store.find_jobs(Some("acme"), None, 10));
        (jobs.len() == 2 && jobs.iter().all(|j| j.status.is_final())).then_some(())
    })
    .await;
    let log = d.log();
    for line in log.lines() {
        assert!(starts_with_a_timestamp(line), "a line not written by the daemon: {line:?}\n{log}");
        assert!(!line.starts_with("2026-01-01T00:00:00.000000Z"), "a forged line: {line:?}\n{log}");
    }
    for raw_char in ['\r', '\x1b', '\u{202e}'] {
        assert!(!log.contains(raw_char), "{raw_char:?} reached the log raw\n{log}");
    }
    assert!(log.contains("\\u{202e}") && log.contains("\\u{1b}"), "escaped, not dropped\n{log}");
    let out = d.cli(&["jobs", "--account", "acme"], "").await;
    assert!(out.status.success(), "{}", describe(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(shown.lines().count(), 3, "a header and one line per job: {shown:?}");
    assert!(!shown.contains(['\r', '\x1b', '\u{202e}']), "{shown:?}");
    measured(&d, "names with CR/LF, ESC, bidi: no forged line", started);
}

crate::on_both_backends!(file_names_never_forge_a_log_line);
