//! What a hostile (or merely international) merchant can send, through the
//! real daemon: each input ends its own unit of work — a report, a clear
//! refusal — while the daemon stays the same process, its memory stays
//! bounded, and another account's upload is processed meanwhile.

use crate::support::{
    describe, eventually, openssh_sftp, read_results, write_customers, DelayProxy, TestAccount, TestDaemon, TestDb,
};
use intake::store::{JobStatus, NewJob, Store};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const REPORT: Duration = Duration::from_secs(120);

fn accounts() -> [TestAccount; 2] {
    [TestAccount::new("acme"), TestAccount::new("other")]
}

/// Another account's small upload is processed while the daemon is the same
/// process it was: proof that a hostile input stopped nothing else.
async fn others_still_served(d: &TestDaemon, pid: u32, stem: &str) {
    let file = d.dir.join(format!("{stem}.csv"));
    write_customers(&file, &format!("{stem}-"), 3);
    d.upload("other", &file, &format!("{stem}.csv")).await;
    let summary = d.summary("other", stem, REPORT).await;
    assert_eq!(summary["created"], 3, "{summary}");
    assert_eq!(d.pid(), pid, "the daemon is the same process");
}

fn write_file(path: &Path, parts: &[&[u8]]) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for part in parts {
        out.write_all(part).unwrap();
    }
}

async fn names_that_end_inside_a_character_are_processed_or_ignored(db: TestDb) {
    let d = TestDaemon::spawn(&db, &accounts(), &[]).await;
    let pid = d.pid();
    let file = d.dir.join("a.csv");
    write_customers(&file, "u-", 2);
    for name in ["顧客", "客户", "x€€", "顧客.csv"] {
        d.upload("acme", &file, name).await;
    }
    // Placed by another server, too: the watcher and the start-up scan read it.
    d.place("acme", "客户.CSV", |p| write_customers(p, "p-", 1));
    assert_eq!(d.summary("acme", "顧客", REPORT).await["created"], 2);
    assert_eq!(d.summary("acme", "客户", REPORT).await["status"], "completed");
    assert!(d.customers("acme").join("x€€").exists(), "a name that is not .csv is left alone");
    others_still_served(&d, pid, "after-names").await;
}

async fn deep_nesting_rejects_the_file_with_a_message_naming_the_limit(db: TestDb) {
    let d = TestDaemon::spawn(&db, &accounts(), &[]).await;
    let pid = d.pid();
    for (stem, depth) in [("deep7000", 7000), ("deep200", 200)] {
        let path = d.dir.join(format!("{stem}.csv"));
        let column = format!("metadata{}", ".a".repeat(depth));
        write_file(&path, &[format!("ref,address,{column}\nc1,+15555001234,x\n").as_bytes()]);
        d.upload("acme", &path, &format!("{stem}.csv")).await;
        let summary = d.summary("acme", stem, REPORT).await;
        assert_eq!(summary["status"], "rejected", "{summary}");
        let message = summary["error"]["message"].as_str().unwrap();
        // 7,000 levels: its name alone is over the header-name limit.
        let limit = if depth > 500 { "the limit is 1024" } else { "the limit is 32" };
        assert!(message.contains(limit), "{message}");
    }
    // A JSON cell nested too deep fails its row, and the file goes on.
    let path = d.dir.join("json.csv");
    let deep = format!("\"{}{}\"", "{\"\"a\"\":".repeat(5000), "1}".repeat(5000));
    write_file(&path, &[format!("ref,address,metadata\nj1,+15555001234,{deep}\nj2,+15555001234,\n").as_bytes()]);
    d.upload("acme", &path, "json.csv").await;
    let summary = d.summary("acme", "json", REPORT).await;
    assert_eq!((summary["failed"].as_u64(), summary["created"].as_u64()), (Some(1), Some(1)), "{summary}");
    let results = read_results(&d.outbox("acme").join("json.results.csv"));
    assert_eq!(results[1][4], "invalid_metadata");
    assert!(results[1][6].contains("the limit is 32"), "{:?}", results[1]);
    others_still_served(&d, pid, "after-deep").await;

    // `intake check` says so too, and exits 2 (rejected), never 134.
    let deep = d.dir.join("deep7000.csv");
    let out = crate::support::intake(&["check", deep.to_str().unwrap()], &[], &d.dir).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

async fn a_long_name_placed_by_another_server_gets_a_shortened_report(db: TestDb) {
    let d = TestDaemon::spawn(&db, &accounts(), &[]).await;
    let pid = d.pid();
    // 214 bytes (once enough to wedge the account): it fits now.
    let name = format!("{}.csv", "顧".repeat(70));
    d.place("acme", &name, |p| write_customers(p, "l-", 2));
    let stem = intake::mailbox::report_stem(&name);
    assert_eq!(d.summary("acme", &stem, REPORT).await["created"], 2);
    // 252 bytes: no report name fits it, so it is shortened; never retried.
    let name = format!("{}.csv", "顧".repeat(82));
    d.place("acme", &name, |p| write_customers(p, "m-", 2));
    let stem = intake::mailbox::report_stem(&name);
    assert!(stem.len() < name.len() && stem.contains('~'));
    assert_eq!(d.summary("acme", &stem, REPORT).await["created"], 2);
    // The account is not wedged: its next upload is processed.
    others_still_served(&d, pid, "after-long").await;
    let file = d.dir.join("next.csv");
    write_customers(&file, "n-", 1);
    d.upload("acme", &file, "next.csv").await;
    assert_eq!(d.summary("acme", "next", REPORT).await["created"], 1);
}

/// Files whose size or shape once cost gigabytes: each is rejected (or
/// reported) and the daemon's peak memory stays bounded.
async fn oversized_records_and_blank_runs_cost_bounded_memory(db: TestDb) {
    let d = TestDaemon::spawn(&db, &accounts(), &[]).await;
    let pid = d.pid();
    let base = d.peak_rss_mib();
    // A sparse file: 17 bytes at 4 GiB (8 KiB on disk), placed by another server.
    d.place("acme", "sparse.csv", |p| {
        let f = std::fs::File::create(p).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"ref,address\nx,y\n\n", 4 << 30).unwrap();
    });
    let summary = d.summary("acme", "sparse", REPORT).await;
    assert_eq!(summary["error"]["code"], "not_text", "{summary}");
    // One 64 MB line without a line break; a 20 MB unclosed quote.
    let long = d.dir.join("long.csv");
    write_file(&long, &[b"ref,address\n", &vec![b'a'; 64 << 20]]);
    d.upload("acme", &long, "long.csv").await;
    let summary = d.summary("acme", "long", REPORT).await;
    assert_eq!(summary["error"]["code"], "record_too_large", "{summary}");
    assert!(summary["error"]["message"].as_str().unwrap().contains("line 2"), "{summary}");
    let quote = d.dir.join("quote.csv");
    write_file(&quote, &[b"ref,address\nq1,+15555001234\nq2,\"", &b"x,\n".repeat(7 << 20)]);
    d.upload("acme", &quote, "quote.csv").await;
    let summary = d.summary("acme", "quote", REPORT).await;
    assert_eq!(summary["error"]["code"], "record_too_large", "{summary}");
    assert!(summary["error"]["message"].as_str().unwrap().contains("line 3"), "{summary}");
    // 32 MB of blank lines around one row.
    let blank = d.dir.join("blank.csv");
    write_file(&blank, &[b"ref,address\n", &b"\n".repeat(32 << 20), b"b1,+15555001234\n"]);
    d.upload("acme", &blank, "blank.csv").await;
    let summary = d.summary("acme", "blank", REPORT).await;
    assert_eq!(summary["created"], 1, "{summary}");
    let results = read_results(&d.outbox("acme").join("blank.results.csv"));
    assert_eq!(results[1][0], (2 + (32 << 20)).to_string(), "the line counts every blank line");
    // 1,000 rows with 56 KB metadata objects: batches are bounded by bytes.
    let big = d.dir.join("bigmeta.csv");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        writeln!(out, "ref,address,metadata").unwrap();
        let object = format!(
            "\"{{{}\"\"z\"\":1}}\"",
            (0..2800).map(|i| format!("\"\"k{i:04}\"\":\"\"v{i:08}\"\",")).collect::<String>()
        );
        for i in 0..1000 {
            writeln!(out, "bm{i},+15555001234,{object}").unwrap();
        }
    }
    d.upload("acme", &big, "bigmeta.csv").await;
    assert_eq!(d.summary("acme", "bigmeta", REPORT).await["created"], 1000);
    let peak = d.peak_rss_mib();
    assert!(peak < base + 300, "peak RSS {peak} MiB (at start {base} MiB)");
    others_still_served(&d, pid, "after-big").await;
}

async fn a_row_with_thousands_of_bad_addresses_gets_a_short_report(db: TestDb) {
    let d = TestDaemon::spawn(&db, &accounts(), &[]).await;
    let path = d.dir.join("many.csv");
    // 30,000 bad values: the same one (checked once), or all different.
    let same = "x,".repeat(30_000);
    let different: String = (0..8_000).map(|i| format!("x{i},")).collect();
    write_file(&path, &[format!("ref,addresses\nm0,\"{same}\"\nm1,\"{different}\"\nm2,+15555001234\n").as_bytes()]);
    d.upload("acme", &path, "many.csv").await;
    let summary = d.summary("acme", "many", REPORT).await;
    assert_eq!((summary["failed"].as_u64(), summary["created"].as_u64()), (Some(2), Some(1)), "{summary}");
    let report = std::fs::metadata(d.outbox("acme").join("many.results.csv")).unwrap().len();
    assert!(report < 4096, "the report is {report} bytes for a 200 KB upload");
    let results = read_results(&d.outbox("acme").join("many.results.csv"));
    assert!(results[2][6].contains("7995 more values of addresses not checked"), "{:?}", results[2]);
    // 20,000 columns: rejected at once, naming the limit (100,000 make a
    // header over the record limit: record_too_large).
    let path = d.dir.join("wide.csv");
    let header: Vec<String> = (0..20_000).map(|i| format!("metadata.k{i}")).collect();
    write_file(&path, &[format!("ref,address,{}\n", header.join(",")).as_bytes()]);
    d.upload("acme", &path, "wide.csv").await;
    let summary = d.summary("acme", "wide", REPORT).await;
    assert_eq!(summary["error"]["code"], "too_many_columns", "{summary}");
}

/// Jobs whose upload cannot be read (gone, or not a file) end `aborted` with
/// a report, and do not stop the next job of any account from being taken.
async fn an_unreadable_spool_file_aborts_its_job_only(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::prepare(dir.path(), &db, &accounts(), &[]);
    let store = db.store().await;
    // Accounts first, as the daemon's config would create them.
    intake::app::apply_declared(&intake::config::Config::load(&d.config, true).unwrap(), &store).await.unwrap();
    let not_a_file = d.data_dir.join("spool/dir-job");
    std::fs::create_dir_all(&not_a_file).unwrap();
    for (id, name, path) in [
        ("00000000-0000-7000-8000-000000000001", "gone.csv", d.data_dir.join("spool/nothing/upload.csv")),
        ("00000000-0000-7000-8000-000000000002", "dir.csv", not_a_file.clone()),
    ] {
        queue_job(&store, id, "acme", name, &path).await;
    }
    d.start().await;
    for stem in ["gone", "dir"] {
        let summary = d.summary("acme", stem, REPORT).await;
        assert_eq!(summary["status"], "aborted", "{summary}");
        assert_eq!(summary["error"]["code"], "internal_error");
        assert!(summary["error"]["message"].as_str().unwrap().contains(summary["job_id"].as_str().unwrap()));
        assert_eq!(summary["rows"], 0);
        let results = read_results(&d.outbox("acme").join(format!("{stem}.results.csv")));
        assert_eq!(results.len(), 1, "the header only");
    }
    let pid = d.pid();
    others_still_served(&d, pid, "after-spool").await;
    // The account's next upload starts.
    let file = d.dir.join("next.csv");
    write_customers(&file, "n-", 2);
    d.upload("acme", &file, "next.csv").await;
    assert_eq!(d.summary("acme", "next", REPORT).await["created"], 2);
}

async fn queue_job(store: &Store, job_id: &str, account: &str, name: &str, path: &Path) {
    let job = NewJob {
        job_id: job_id.into(),
        account: account.into(),
        file_name: name.into(),
        spool_path: path.display().to_string(),
        sha256: String::new(),
        bytes: 0,
        uploader: None,
        scopes: intake::domain::user::Scopes::ALL,
        source_key: None,
        kind: Default::default(),
        owner: None,
    };
    store.create_job(&job).await.unwrap();
    store.mark_queued(job_id, None, intake::domain::user::Scopes::ALL).await.unwrap();
}

/// A fault injected at one row (a test-only hook of debug builds): the job
/// ends `aborted` with the rows committed before it, the database holds
/// exactly those, and everything else goes on.
async fn a_panic_in_one_job_aborts_that_job_only(db: TestDb) {
    let d =
        TestDaemon::spawn(&db, &accounts(), &[("INTAKE_BATCH_SIZE", "10"), ("INTAKE_TEST_PANIC_AT_REF", "p-25")]).await;
    let pid = d.pid();
    let file = d.dir.join("p.csv");
    write_customers(&file, "p-", 50);
    d.upload("acme", &file, "p.csv").await;
    let summary = d.summary("acme", "p", REPORT).await;
    assert_eq!(summary["status"], "aborted", "{summary}");
    assert_eq!(summary["error"]["code"], "internal_error");
    assert_eq!(summary["rows"], 20, "the two batches committed before the faulty one: {summary}");
    let results = read_results(&d.outbox("acme").join("p.results.csv"));
    assert_eq!(results.len(), 21, "the committed rows, no more: {results:?}\n{}", d.log());
    let store = db.store().await;
    assert_eq!(store.count_customers("acme").await.unwrap(), 20, "the database holds what the report says");
    assert!(d.log().contains("fault injected at ref p-25"));
    others_still_served(&d, pid, "after-panic").await;
    // Uploading the file again is safe: done rows come back unchanged.
    let d2 = d;
    let again = d2.dir.join("p2.csv");
    write_customers(&again, "p-", 20);
    d2.upload("acme", &again, "p2.csv").await;
    assert_eq!(d2.summary("acme", "p2", REPORT).await["unchanged"], 20);
}

async fn eventually_gone(d: &TestDaemon, name: &str) -> bool {
    let path = d.customers("acme").join(name);
    eventually(Duration::from_secs(60), "the visible upload to be removed", || (!path.exists()).then_some(())).await;
    true
}

/// What cannot be caught in process (an abort, a stack overflow, an OOM
/// kill): the process dies, each start counts, and after three starts that
/// got no further the job is ended `aborted` instead of resumed again.
async fn a_job_that_keeps_killing_the_process_is_aborted_after_three_starts(db: TestDb) {
    let mut d =
        TestDaemon::spawn(&db, &accounts(), &[("INTAKE_BATCH_SIZE", "10"), ("INTAKE_TEST_ABORT_AT_REF", "k-15")]).await;
    let file = d.dir.join("k.csv");
    write_customers(&file, "k-", 30);
    d.upload("acme", &file, "k.csv").await;
    for start in 1..=3 {
        let status = d.wait_for_exit(REPORT).await;
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGABRT), "start {start} ended by the fault: {status:?}");
        d.start().await;
    }
    let summary = d.summary("acme", "k", REPORT).await;
    assert_eq!(summary["status"], "aborted", "{summary}");
    assert_eq!(summary["rows"], 10, "the batch committed before the fault: {summary}");
    assert!(summary["error"]["message"].as_str().unwrap().contains("started 3 times"), "{summary}");
    assert!(d.is_running(), "the fourth start keeps serving");
    let pid = d.pid();
    others_still_served(&d, pid, "after-crashes").await;
    let store = db.store().await;
    let job = store.find_jobs(Some("acme"), None, 1).await.unwrap().remove(0);
    assert_eq!(job.status, JobStatus::Aborted);
}

/// A database error is retried with backoff (`retrying`, shown by `intake
/// jobs`), and given up as `aborted` once the retries are spent.
async fn a_failing_write_is_retried_then_aborted(db: TestDb) {
    let d = TestDaemon::spawn(&db, &accounts(), &[("INTAKE_MAX_JOB_RETRIES", "2")]).await;
    let store = db.store().await;
    // A trigger refuses one ref, as a broken constraint or a full disk would.
    let trigger = if db.url.starts_with("sqlite") {
        vec!["CREATE TRIGGER refuse BEFORE INSERT ON customers WHEN NEW.ref = 'r-1' BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END".to_owned()]
    } else {
        vec![
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.ref = 'r-1' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql".to_owned(),
            "CREATE TRIGGER refuse BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION refuse()".to_owned(),
        ]
    };
    for sql in &trigger {
        execute(&db, sql).await;
    }
    let file = d.dir.join("r.csv");
    write_customers(&file, "r-", 3);
    d.upload("acme", &file, "r.csv").await;
    eventually(REPORT, "the job to be retrying", || {
        let jobs = futures_block(store.find_jobs(Some("acme"), None, 1));
        jobs.first().filter(|j| j.status == JobStatus::Retrying).map(|_| ())
    })
    .await;
    let env: Vec<(&str, &str)> = d.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = crate::support::intake(&["jobs", "--config", d.config.to_str().unwrap()], &env, &d.dir).await;
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("retrying (1 of 2)") && listing.contains("refused by a test trigger"), "{listing}");
    // The merchant sees it too: progress.json says when it is tried again.
    let progress_path = d.outbox("acme").join("r.progress.json");
    let progress = eventually(REPORT, "a retrying progress file", || {
        let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&progress_path).ok()?).ok()?;
        (p["state"] == "retrying").then_some(p)
    })
    .await;
    assert!(progress["retry_at"].is_string(), "{progress}");
    // Meanwhile other accounts are served.
    let pid = d.pid();
    others_still_served(&d, pid, "during-retry").await;
    let summary = d.summary("acme", "r", REPORT).await;
    assert_eq!(summary["status"], "aborted", "{summary}");
    assert!(summary["error"]["message"].as_str().unwrap().contains("gave up after 2 retries"), "{summary}");
}

/// Runs one statement on the test database, beside the daemon.
async fn execute(db: &TestDb, sql: &str) {
    use sqlx::Connection;
    if db.url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
}

fn futures_block<T>(f: impl std::future::Future<Output = Result<T, intake::store::StoreError>>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f)).unwrap()
}

/// `intake ingest` beside a running daemon on the same database: the
/// ingest's job is its own from the start, and its report agrees with the
/// database.
async fn ingest_beside_the_daemon_gives_a_report_the_database_agrees_with(db: TestDb) {
    let d = TestDaemon::spawn(&db, &accounts(), &[]).await;
    let file = d.dir.join("ops.csv");
    write_customers(&file, "o-", 5000);
    let env: Vec<(&str, &str)> = d.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = ["ingest", file.to_str().unwrap(), "--account", "acme", "--config", d.config.to_str().unwrap()];
    let out = crate::support::intake(&args, &env, &d.dir).await;
    assert!(out.status.success(), "{}", describe(&out));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.outbox("acme").join("ops.summary.json")).unwrap()).unwrap();
    assert_eq!(summary["created"], 5000, "{summary}");
    let store = db.store().await;
    assert_eq!(store.count_customers("acme").await.unwrap(), 5000);
    let job_id = summary["job_id"].as_str().unwrap();
    assert!(!d.log().contains(job_id), "the daemon never touched the ingest's job:\n{}", d.log());
}

/// A job `intake ingest` cannot finish (here a panic at one row, the debug
/// build's fault hook) ends as a daemon's would: `aborted`, with the report
/// of the rows committed before it, never left `running`.
async fn a_failed_cli_ingest_gets_the_aborted_report_a_daemon_gives(db: TestDb) {
    let d = TestDaemon::spawn(&db, &accounts(), &[("INTAKE_BATCH_SIZE", "100")]).await;
    let file = d.dir.join("bad.csv");
    write_customers(&file, "b-", 1000);
    let mut env: Vec<(&str, &str)> = d.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("INTAKE_TEST_PANIC_AT_REF", "b-500"));
    env.push(("INTAKE_BATCH_SIZE", "100"));
    let args = ["ingest", file.to_str().unwrap(), "--account", "acme", "--config", d.config.to_str().unwrap()];
    let out = crate::support::intake(&args, &env, &d.dir).await;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("aborted"), "{}", describe(&out));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.outbox("acme").join("bad.summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "aborted", "{summary}");
    assert_eq!(summary["error"]["code"], "internal_error", "{summary}");
    let done = summary["rows"].as_u64().unwrap();
    assert!(done < 1000, "only the rows committed before the fault are reported: {summary}");
    let store = db.store().await;
    let job = store.get_job(summary["job_id"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Aborted, "never left running for a daemon to take over");
    assert_eq!(store.count_customers("acme").await.unwrap(), done, "the database holds what the report says");
}

/// Uploads stay where the client put them until their report is out (and a
/// few seconds after): `ls` and `stat` by name work right after `put`; the
/// visible copy is never taken twice; then it leaves for /archive.
async fn an_upload_stays_visible_until_its_report_is_out(db: TestDb) {
    let d = TestDaemon::spawn(&db, &accounts(), &[("INTAKE_KEEP_VISIBLE_SECS", "3")]).await;
    let file = d.dir.join("v.csv");
    write_customers(&file, "v-", 5);
    let out = d.sftp("acme", &format!("put {} /customers/v.csv\nls -l /customers/v.csv\n", file.display())).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("v.csv"), "{}", describe(&out));
    let summary = d.summary("acme", "v", REPORT).await;
    assert_eq!(summary["created"], 5);
    eventually_gone(&d, "v.csv").await;
    // One upload, one job, one archived file: the visible copy was never taken again.
    let store = db.store().await;
    assert_eq!(store.find_jobs(Some("acme"), None, 10).await.unwrap().len(), 1);
    let archived: Vec<_> = std::fs::read_dir(d.data_dir.join("accounts/acme/archive")).unwrap().collect();
    assert_eq!(archived.len(), 1);
    // Deleting the visible file once it was taken does not cancel the job.
    let big = d.dir.join("w.csv");
    write_customers(&big, "w-", 20_000);
    d.upload("acme", &big, "w.csv").await;
    eventually(REPORT, "the upload to be taken", || {
        let jobs = futures_block(store.find_jobs(Some("acme"), None, 1));
        jobs.first().filter(|j| j.file_name == "w.csv").map(|_| ())
    })
    .await;
    let out = d.sftp("acme", "rm /customers/w.csv\n").await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(d.summary("acme", "w", REPORT).await["created"], 20_000);
}

/// A visible upload that a job took keeps its name until the job removes
/// it: renamed, it would stay in /customers for ever, never processed. A
/// file not taken yet is renamed as before (the temp-name clients' flow).
/// OpenSSH sftp through the 20 ms round-trip delay proxy.
async fn a_visible_upload_being_processed_keeps_its_name(db: TestDb) {
    let d = TestDaemon::spawn(&db, &accounts(), &[("INTAKE_KEEP_VISIBLE_SECS", "60")]).await;
    let proxy = DelayProxy::start(d.addr.as_ref().unwrap().parse().unwrap(), Duration::from_millis(10)).await;
    let port = proxy.port.to_string();
    let sftp = |batch: String| {
        let (dir, key, port) = (d.dir.clone(), d.key.clone(), port.clone());
        async move { openssh_sftp(&dir, &key, &port, "acme", &batch).await }
    };
    let file = d.dir.join("k.csv");
    write_customers(&file, "k-", 5);
    let out = sftp(format!("put {} /customers/k.csv\n", file.display())).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(d.summary("acme", "k", REPORT).await["created"], 5);
    // Processed, still visible for a minute: the rename is refused.
    let out = sftp("-rename /customers/k.csv /customers/k2.csv\nls -1 /customers\n".into()).await;
    assert!(out.status.success(), "{}", describe(&out));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stderr.contains("Permission denied"), "{}", describe(&out));
    let listed: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("sftp>")).collect();
    assert_eq!(listed, ["/customers/k.csv"], "{}", describe(&out));
    assert!(!d.log().contains("file renamed"), "nothing was renamed\n{}", d.log());
    // A temp name renamed to its final name is an upload, as ever.
    let out =
        sftp(format!("put {} /customers/t.csv.part\nrename /customers/t.csv.part /customers/t.csv\n", file.display()))
            .await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(d.summary("acme", "t", REPORT).await["unchanged"], 5);
}

crate::on_both_backends!(
    a_visible_upload_being_processed_keeps_its_name,
    names_that_end_inside_a_character_are_processed_or_ignored,
    deep_nesting_rejects_the_file_with_a_message_naming_the_limit,
    a_long_name_placed_by_another_server_gets_a_shortened_report,
    oversized_records_and_blank_runs_cost_bounded_memory,
    a_row_with_thousands_of_bad_addresses_gets_a_short_report,
    an_unreadable_spool_file_aborts_its_job_only,
    a_panic_in_one_job_aborts_that_job_only,
    a_job_that_keeps_killing_the_process_is_aborted_after_three_starts,
    a_failing_write_is_retried_then_aborted,
    ingest_beside_the_daemon_gives_a_report_the_database_agrees_with,
    a_failed_cli_ingest_gets_the_aborted_report_a_daemon_gives,
    an_upload_stays_visible_until_its_report_is_out,
);
