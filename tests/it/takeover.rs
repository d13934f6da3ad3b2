//! What a job keeps through a restart or a takeover: the account settings
//! its first pass read the file with, and results that only their owner
//! writes — a frozen former owner that wakes up changes nothing published.

use crate::support::{describe, eventually, read_results, TestAccount, TestDaemon, TestDb};
use std::io::Write;
use std::time::Duration;

const REPORT: Duration = Duration::from_secs(300);

/// `rows` customers in windows-1252, with an accented header and cells.
fn write_latin1(path: &std::path::Path, rows: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    out.write_all("ref,email,metadata.prénom\n".as_bytes()).unwrap();
    for i in 0..rows {
        writeln!(out, "l-{i},c{i}@example.com,Ren\u{e9}").unwrap();
    }
    out.flush().unwrap();
    drop(out);
    // The `é` written above as UTF-8, turned into its windows-1252 byte.
    let text = std::fs::read(path).unwrap();
    let latin1: Vec<u8> = String::from_utf8(text).unwrap().chars().map(|c| c as u32 as u8).collect();
    std::fs::write(path, latin1).unwrap();
}

async fn a_job_resumes_with_the_settings_it_began_with(db: TestDb) {
    const ROWS: usize = 150_000;
    let mut d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[("INTAKE_BATCH_SIZE", "1000")]).await;
    let set = d.cli(&["account", "set", "acme", "--encoding", "windows-1252"], "").await;
    assert!(set.status.success(), "{}", describe(&set));
    let file = d.dir.join("latin.csv");
    write_latin1(&file, ROWS);
    d.upload("acme", &file, "latin.csv").await;
    let progress = d.outbox("acme").join("latin.progress.json");
    eventually(REPORT, "rows committed before the kill", || {
        let p: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&progress).ok()?).ok()?;
        (p["rows_done"].as_u64()? > 0).then_some(())
    })
    .await;
    d.kill9().await;
    assert!(!d.outbox("acme").join("latin.summary.json").exists(), "killed before the end: the test proves nothing");
    // The restart applies the config again, whose account reads UTF-8.
    d.start().await;
    let summary = d.summary("acme", "latin", REPORT).await;
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(summary["created"], ROWS as u64, "{summary}");
    let store = db.store().await;
    assert_eq!(store.count_customers("acme").await.unwrap(), ROWS as u64);
    let c = store.get_customer("acme", "l-7").await.unwrap().unwrap();
    assert_eq!(c.metadata["prénom"], "René", "read as windows-1252 to the end");
}

async fn a_frozen_owner_that_wakes_up_changes_nothing_published(db: TestDb) {
    const ROWS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("stopped-once");
    let marker = marker.to_str().unwrap();
    let settings = [
        ("INTAKE_BATCH_SIZE", "500"),
        ("INTAKE_CLUSTER__HEARTBEAT_SECS", "1"),
        ("INTAKE_CLUSTER__TAKEOVER_AFTER_SECS", "3"),
        // Whichever process runs the job freezes itself after the upserts
        // of the batch holding this row, before writing its results.
        ("INTAKE_TEST_STOP_AT_REF", "t-5200"),
        ("INTAKE_TEST_STOP_MARKER", marker),
    ];
    // Two processes on one database and one data directory.
    let a = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &settings).await;
    let mut b = TestDaemon::prepare(&a.dir, &db, &[TestAccount::new("acme")], &settings);
    b.start().await;
    let file = a.dir.join("big.csv");
    crate::support::write_customers(&file, "t-", ROWS);
    a.upload("acme", &file, "big.csv").await;
    let frozen = eventually(REPORT, "a process frozen mid-batch", || {
        let pid: i32 = [&a, &b].iter().map(|d| d.pid() as i32).find(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('T')))
        })?;
        Some(pid)
    })
    .await;
    let summary = a.summary("acme", "big", REPORT).await;
    assert_eq!(summary["created"], ROWS as u64, "the other process finished the job: {summary}");
    let results = a.outbox("acme").join("big.results.csv");
    let published = std::fs::read(&results).unwrap();
    // SAFETY: a signal to our own child process.
    unsafe { libc::kill(frozen, libc::SIGCONT) };
    // The woken process writes its batch's results, then finds the job is
    // no longer its own.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(std::fs::read(&results).unwrap(), published, "the published results were not touched\n{}", a.log());
    let rows = read_results(&results);
    assert_eq!(rows.len(), ROWS + 1);
    assert!(rows[1..].iter().all(|r| r[2] == "created"), "every row once, as created");
    let store = db.store().await;
    assert_eq!(store.count_customers("acme").await.unwrap(), ROWS as u64);
}

crate::on_both_backends!(a_job_resumes_with_the_settings_it_began_with);

mod a_frozen_owner_that_wakes_up_changes_nothing_published {
    /// Several processes share a database only on PostgreSQL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(db) = crate::support::TestDb::postgres().await {
            super::a_frozen_owner_that_wakes_up_changes_nothing_published(db).await
        }
    }
}
