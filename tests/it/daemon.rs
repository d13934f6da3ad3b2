//! `intake serve` end to end: the real binary, the real OpenSSH `sftp` client,
//! a real database. Upload → report; files present at start; kill -9 and
//! restart; fairness; same-name re-upload; external writers; two processes.

use crate::support::{eventually, read_results, write_customers, TestAccount, TestDaemon, TestDb};
use intake::store::JobStatus;
use std::collections::HashSet;
use std::time::Duration;

const REPORT: Duration = Duration::from_secs(120);

/// Every line of a report is a created customer that the database holds
/// with the same id, and the report covers exactly `rows` records in order.
async fn assert_report_matches_database(d: &TestDaemon, db: &TestDb, avid: &str, stem: &str, rows: usize) {
    let store = db.store().await;
    let results = read_results(&d.outbox(avid).join(format!("{stem}.results.csv")));
    assert_eq!(results.len(), rows + 1, "one result per record plus the header");
    for (i, row) in results.iter().skip(1).enumerate() {
        assert_eq!(row[0], (i + 2).to_string(), "lines in input order");
        assert_eq!(row[2], "created", "{row:?}");
        let stored =
            store.get_customer(avid, &row[1]).await.unwrap().unwrap_or_else(|| panic!("{} not stored", row[1]));
        assert_eq!(stored.customer_id, row[3]);
    }
    assert_eq!(store.count_customers(avid).await.unwrap(), rows as u64, "the database holds exactly the report");
}

async fn an_sftp_upload_gets_its_report_and_the_database_agrees(db: TestDb) {
    let d = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme")], &[]).await;
    let file = d.dir.join("May.CSV");
    write_customers(&file, "m-", 25);
    d.upload("acme", &file, "May.CSV").await;
    let summary = d.summary("acme", "May", REPORT).await;
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["created"], 25);
    assert_report_matches_database(&d, &db, "acme", "May", 25).await;

    // The merchant downloads the report and sees the upload archived.
    let out = d.sftp("acme", "get /outbox/May.results.csv got.csv\nls -l /archive\nls /customers\n").await;
    assert!(out.status.success(), "{}", crate::support::describe(&out));
    assert_eq!(
        std::fs::read(d.dir.join("got.csv")).unwrap(),
        std::fs::read(d.outbox("acme").join("May.results.csv")).unwrap()
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("May.CSV"), "{listing}");
}

async fn a_create_only_login_cannot_update_existing_customers(db: TestDb) {
    let mut create_only = TestAccount::new("acme");
    create_only.scopes = vec!["customers:create"];
    let d = TestDaemon::spawn_in_process(&db, &[create_only], &[]).await;
    let file = d.dir.join("c.csv");
    write_customers(&file, "c-", 3);
    d.upload("acme", &file, "first.csv").await;
    assert_eq!(d.summary("acme", "first", REPORT).await["created"], 3);
    // WinSCP style: a temporary name, then a rename to the final one.
    let out = d
        .sftp(
            "acme",
            &format!(
                "put {} /customers/second.csv.filepart\nrename /customers/second.csv.filepart /customers/second.csv\n",
                file.display()
            ),
        )
        .await;
    assert!(out.status.success(), "{}", crate::support::describe(&out));
    let summary = d.summary("acme", "second", REPORT).await;
    assert_eq!(summary["failed"], 3, "{summary}");
    let results = read_results(&d.outbox("acme").join("second.results.csv"));
    assert!(results.iter().skip(1).all(|r| r[4] == "ref_exists"), "{results:?}");
}

async fn files_already_waiting_are_processed_at_start(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::prepare(dir.path(), &db, &[TestAccount::new("acme")], &[]);
    std::fs::create_dir_all(d.customers("acme")).unwrap();
    write_customers(&d.customers("acme").join("early.csv"), "e-", 7);
    d.start().await;
    let summary = d.summary("acme", "early", REPORT).await;
    assert_eq!(summary["created"], 7);
    // Placed by another server (no uploader recorded): moved at once.
    assert!(!d.customers("acme").join("early.csv").exists(), "picked-up files leave /customers");
}

async fn a_kill_9_at_any_moment_loses_and_doubles_nothing(db: TestDb) {
    const ROWS: usize = 80_000;
    let mut d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[("INTAKE_BATCH_SIZE", "500")]).await;
    let file = d.dir.join("big.csv");
    write_customers(&file, "k-", ROWS);
    d.upload("acme", &file, "big.csv").await;
    let store = db.store().await;
    // Kill at several moments of the job: each time some rows later.
    let mut last = 0;
    for round in 0..3 {
        let seen = eventually(REPORT, "progress before a kill", || {
            let jobs = futures_lite_block(store.find_jobs(Some("acme"), None, 1));
            let job = jobs.first()?.clone();
            (job.status == JobStatus::Completed || job.progress.records_done > last).then_some(job)
        })
        .await;
        if seen.status == JobStatus::Completed {
            assert!(round > 0, "the job finished before the first kill: the test proved nothing");
            eprintln!("job finished before kill round {round}");
            break;
        }
        assert!(seen.progress.records_done < ROWS as u64);
        last = seen.progress.records_done + 2_000;
        d.kill9().await;
        d.start().await;
    }
    let summary = d.summary("acme", "big", Duration::from_secs(300)).await;
    assert_eq!(summary["rows"], ROWS as u64);
    assert_eq!(summary["created"], ROWS as u64);
    assert_eq!(summary["failed"], 0);
    assert_report_matches_database(&d, &db, "acme", "big", ROWS).await;
    // Resumed from a committed batch, not from the start.
    let resumed = d
        .log()
        .lines()
        .filter_map(|l| l.split("resumed_at=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
        .max();
    assert!(resumed.is_some_and(|r| r > 0), "the job resumed from a committed batch: {resumed:?}");
}

/// Polls a store future from sync polling code.
fn futures_lite_block<T>(f: impl std::future::Future<Output = Result<T, intake::store::StoreError>>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f)).unwrap()
}

async fn a_small_file_is_not_starved_by_another_accounts_huge_one(db: TestDb) {
    let d =
        // Small batches: the huge job outlasts the small upload's SSH login
        // even on a machine loaded by the other tests.
        TestDaemon::spawn_in_process(&db, &[TestAccount::new("big"), TestAccount::new("small")], &[("INTAKE_BATCH_SIZE", "500")])
            .await;
    let big = d.dir.join("huge.csv");
    write_customers(&big, "h-", 400_000);
    let small = d.dir.join("tiny.csv");
    write_customers(&small, "t-", 10);
    d.upload("big", &big, "huge.csv").await;
    let store = db.store().await;
    eventually(REPORT, "the huge job to start", || {
        let jobs = futures_lite_block(store.find_jobs(Some("big"), None, 1));
        jobs.first().filter(|j| j.progress.records_done > 0).map(|_| ())
    })
    .await;
    d.upload("small", &small, "tiny.csv").await;
    let summary = d.summary("small", "tiny", REPORT).await;
    assert_eq!(summary["created"], 10);
    assert!(
        !d.outbox("big").join("huge.summary.json").exists(),
        "the small file finished while the huge one was still being processed"
    );
    d.summary("big", "huge", Duration::from_secs(300)).await;
}

/// A batch may hold a whole large upload (`batch_size` and the batch's time
/// and bytes raised far past it): another account's small upload still gets
/// through while it runs. On SQLite, with its one writer, the small one's
/// arrival, claim, batch and report would otherwise wait for the large
/// batch's commit, that is for the whole large job; the batch commits early
/// when others wait for the database instead.
async fn a_small_upload_is_not_held_behind_another_accounts_long_batch(db: TestDb) {
    let one_batch = [
        ("INTAKE_BATCH_SIZE", "100000000"),
        ("INTAKE_BATCH_MAX_BYTES", "10000000000"),
        ("INTAKE_BATCH_MAX_MILLIS", "3600000"),
    ];
    let accounts = [TestAccount::new("big"), TestAccount::new("small")];
    let d = TestDaemon::spawn_in_process(&db, &accounts, &one_batch).await;
    let rows = 400_000;
    let big = d.dir.join("huge.csv");
    write_customers(&big, "h-", rows);
    let small = d.dir.join("tiny.csv");
    write_customers(&small, "t-", 10);
    d.upload("big", &big, "huge.csv").await;
    // Its batch is open once results are written (before the batch commits).
    let store = db.store().await;
    let spool = d.data_dir.join("spool");
    eventually(REPORT, "the huge job's batch to be under way", || {
        let jobs = futures_lite_block(store.find_jobs(Some("big"), None, 1));
        let job = jobs.first()?;
        let results = std::fs::read_dir(spool.join(job.job_id.as_str())).ok()?.flatten().find(|f| {
            f.file_name().to_string_lossy().starts_with("results") && f.metadata().is_ok_and(|m| m.len() > 100_000)
        });
        results.map(|_| ())
    })
    .await;
    d.upload("small", &small, "tiny.csv").await;
    let summary = d.summary("small", "tiny", REPORT).await;
    assert_eq!(summary["created"], 10);
    let big_job = store.find_jobs(Some("big"), None, 1).await.unwrap().remove(0);
    assert!(
        big_job.progress.records_done < rows as u64 && big_job.status == JobStatus::Running,
        "the small upload's report came only once the huge job was done: {big_job:?}"
    );
    let summary = d.summary("big", "huge", Duration::from_secs(300)).await;
    assert_eq!(summary["created"], rows);
}

async fn a_same_name_upload_during_processing_disturbs_nothing(db: TestDb) {
    let d = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme")], &[("INTAKE_BATCH_SIZE", "1000")]).await;
    let first = d.dir.join("first.csv");
    write_customers(&first, "a-", 40_000);
    let second = d.dir.join("second.csv");
    write_customers(&second, "b-", 3);
    d.upload("acme", &first, "daily.csv").await;
    let store = db.store().await;
    eventually(REPORT, "the first upload to start", || {
        let jobs = futures_lite_block(store.find_jobs(Some("acme"), None, 1));
        jobs.first().filter(|j| j.progress.records_done > 0).map(|_| ())
    })
    .await;
    d.upload("acme", &second, "daily.csv").await;
    eventually(Duration::from_secs(300), "both jobs to finish", || {
        let jobs = futures_lite_block(store.find_jobs(Some("acme"), None, 10));
        (jobs.len() == 2 && jobs.iter().all(|j| j.status == JobStatus::Completed)).then_some(())
    })
    .await;
    let jobs = store.find_jobs(Some("acme"), None, 10).await.unwrap();
    let mut counts: Vec<u64> = jobs.iter().map(|j| j.progress.created).collect();
    counts.sort();
    assert_eq!(counts, [3, 40_000]);
    let archived = std::fs::read_dir(d.data_dir.join("accounts/acme/archive")).unwrap().count();
    assert_eq!(archived, 2, "both uploads archived under names that do not clash");
    // One job per account at a time: the later upload ran second, and its
    // report replaced the first one's.
    let summary = d.summary("acme", "daily", REPORT).await;
    let later = jobs.iter().find(|j| j.progress.created == 3).unwrap();
    assert_eq!(summary["job_id"], later.job_id.as_str());
    assert_eq!(read_results(&d.outbox("acme").join("daily.results.csv")).len(), 4);
}

async fn an_external_sftp_server_writing_the_folders_is_watched(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[("INTAKE_SFTP__ENABLED", "false")]).await;
    let customers = d.customers("acme");
    eventually(REPORT, "account folders", || customers.is_dir().then_some(())).await;
    // In place, in several writes, then closed (close-write).
    {
        use std::io::Write;
        let mut f = std::fs::File::create(customers.join("inplace.csv")).unwrap();
        f.write_all(b"ref,address\n").unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        f.write_all(b"x1,+15555001234\n").unwrap();
    }
    // OpenSSH sftp-server's rename: link() to the final name, unlink() the temp.
    let temp = customers.join(".upload-tmp");
    std::fs::write(&temp, "ref,address\ny1,ann@example.com\ny2,+15555001235\n").unwrap();
    std::fs::hard_link(&temp, customers.join("linked.csv")).unwrap();
    std::fs::remove_file(&temp).unwrap();
    assert_eq!(d.summary("acme", "inplace", REPORT).await["created"], 1);
    assert_eq!(d.summary("acme", "linked", REPORT).await["created"], 2);
    // Not *.csv: left alone.
    std::fs::write(customers.join("notes.txt"), "hello").unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(customers.join("notes.txt").exists());
}

async fn sigterm_stops_promptly_and_cleanly(db: TestDb) {
    let mut d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    let status = d.terminate().await;
    assert!(status.success(), "exit status {status:?}\n{}", d.log());
    assert!(d.log().contains("stopped"));
}

crate::on_both_backends!(
    an_sftp_upload_gets_its_report_and_the_database_agrees,
    a_create_only_login_cannot_update_existing_customers,
    files_already_waiting_are_processed_at_start,
    a_kill_9_at_any_moment_loses_and_doubles_nothing,
    a_small_file_is_not_starved_by_another_accounts_huge_one,
    a_small_upload_is_not_held_behind_another_accounts_long_batch,
    a_same_name_upload_during_processing_disturbs_nothing,
    an_external_sftp_server_writing_the_folders_is_watched,
    sigterm_stops_promptly_and_cleanly,
);

/// Two `intake serve` processes on one PostgreSQL database and one data
/// directory: every upload is processed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_postgres_never_take_the_same_job() {
    let Some(db) = TestDb::postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let accounts: Vec<TestAccount> = (0..4).map(|i| TestAccount::new(&format!("m{i}"))).collect();
    let mut one = TestDaemon::prepare(dir.path(), &db, &accounts, &[]);
    one.start().await;
    let mut two = TestDaemon::prepare(dir.path(), &db, &accounts, &[]);
    two.start().await;
    let mut names = HashSet::new();
    for i in 0..12 {
        let avid = format!("m{}", i % 4);
        let file = dir.path().join(format!("f{i}.csv"));
        write_customers(&file, &format!("p{i}-"), 200);
        std::fs::rename(&file, one.customers(&avid).join(format!("f{i}.csv"))).unwrap();
        names.insert((avid, format!("f{i}")));
    }
    for (avid, stem) in &names {
        let s = one.summary(avid, stem, REPORT).await;
        assert_eq!(s["created"], 200, "{avid}/{stem}: {s}");
    }
    let store = db.store().await;
    let jobs = store.find_jobs(None, None, 100).await.unwrap();
    assert_eq!(jobs.len(), 12, "one job per upload");
    assert!(jobs.iter().all(|j| j.status == JobStatus::Completed && j.progress.created == 200));
    let owners = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(owners.matches("job finished").count() == 12, "{owners}");
    drop(two);
}
