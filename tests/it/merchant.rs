//! What a merchant sees beyond the report, through the real daemon and
//! OpenSSH `sftp`: progress while a file runs, the failed records ready to
//! fix and upload again, dry runs in `/validate`, compressed uploads and
//! reports with a BOM for Excel.

use crate::support::{describe, eventually, intake, read_results, write_customers, TestAccount, TestDaemon, TestDb};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const REPORT: Duration = Duration::from_secs(300);

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

fn json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

async fn put(d: &TestDaemon, local: &Path, remote: &str) {
    let out = d.sftp("acme", &format!("put {} {remote}\n", local.display())).await;
    assert!(out.status.success(), "upload to {remote} failed: {}\n{}", describe(&out), d.log());
}

/// Waits for a report file of the account's outbox.
async fn report(d: &TestDaemon, name: &str) -> serde_json::Value {
    let path = d.outbox("acme").join(name);
    let text = eventually(REPORT, name, || std::fs::read_to_string(&path).ok()).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}\n{}", d.log()))
}

/// A file of `rows` new customers, one in twenty of them invalid.
fn write_mixed(path: &Path, prefix: &str, rows: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "ref,email,phone,metadata.name").unwrap();
    for i in 0..rows {
        if i % 20 == 7 {
            writeln!(out, "{prefix}{i},not-an-email,+1555{:07},Customer {i}", i % 10_000_000).unwrap();
        } else {
            writeln!(out, "{prefix}{i},c{i}@example.com,+1555{:07},Customer {i}", i % 10_000_000).unwrap();
        }
    }
}

async fn progress_shows_while_a_file_runs_and_is_gone_with_its_summary(db: TestDb) {
    let d = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme")], &[("INTAKE_BATCH_SIZE", "2000")]).await;
    let (big, small) = (d.dir.join("big.csv"), d.dir.join("small.csv"));
    write_mixed(&big, "b-", 300_000);
    write_customers(&small, "s-", 3);
    put(&d, &big, "/customers/big.csv").await;
    put(&d, &small, "/customers/small.csv").await;
    let (outbox, mut seen, mut queued) = (d.outbox("acme"), Vec::new(), None);
    let deadline = Instant::now() + REPORT;
    while !outbox.join("big.summary.json").exists() {
        assert!(Instant::now() < deadline, "no summary in time\n{}", d.log());
        if let Some(p) = json(&outbox.join("big.progress.json")) {
            seen.push(p);
        }
        if let Some(p) = json(&outbox.join("small.progress.json")) {
            queued.get_or_insert(p);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running: Vec<_> = seen.iter().filter(|p| p["state"] == "running").collect();
    let done: Vec<u64> = running.iter().map(|p| p["rows_done"].as_u64().unwrap()).collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "rows_done never goes back: {done:?}");
    let moving: std::collections::BTreeSet<_> = done.iter().filter(|&&n| n > 0 && n < 300_000).collect();
    assert!(moving.len() >= 2, "rows_done grows while the file runs: {done:?}");
    let last = running.last().unwrap();
    assert_eq!(last["file"], "big.csv");
    assert_eq!(last["rows_total"], 300_000);
    assert_eq!(last["bytes_total"], std::fs::metadata(&big).unwrap().len());
    assert!(last["bytes_done"].as_u64().unwrap() > 0);
    let counts = ["created", "updated", "unchanged", "failed"].map(|k| last[k].as_u64().unwrap());
    assert_eq!(counts.iter().sum::<u64>(), last["rows_done"].as_u64().unwrap(), "{last}");
    assert!(last["failed"].as_u64().unwrap() > 0, "the counts so far: {last}");
    let queued = queued.expect("the second upload had a progress file while it waited");
    assert_eq!(queued["state"], "queued", "{queued}");
    assert_eq!(queued["rows_done"], 0);
    let summary = report(&d, "small.summary.json").await;
    assert_eq!(summary["created"], 3);
    for name in ["big.progress.json", "small.progress.json"] {
        eventually(Duration::from_secs(10), &format!("{name} gone"), || (!outbox.join(name).exists()).then_some(()))
            .await;
    }
}

/// The bytes of each record of `upload` that starts on one of `lines`, as
/// a plain CSV reader sees them (the BOM and header apart).
fn records_on_lines(upload: &[u8], lines: &[u64]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let body = upload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(upload);
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(body);
    let mut record = csv::ByteRecord::new();
    let (mut header, mut found) = (None, Vec::new());
    while reader.read_byte_record(&mut record).unwrap() {
        let (start, end) = (record.position().unwrap().byte() as usize, reader.position().byte() as usize);
        let raw = body[start..end].to_vec();
        let trimmed = String::from_utf8_lossy(&raw).trim_matches(['\r', '\n']).as_bytes().to_vec();
        let line = record.position().unwrap().line();
        if header.is_none() {
            header = Some(trimmed);
        } else if lines.contains(&line) {
            found.push(trimmed);
        }
    }
    (header.unwrap(), found)
}

async fn failed_records_come_back_as_uploaded_and_fixed_they_are_created(db: TestDb) {
    let d = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme")], &[]).await;
    let upload = samples().join("errors.csv");
    put(&d, &upload, "/customers/errors.csv").await;
    let summary = report(&d, "errors.summary.json").await;
    let results = read_results(&d.outbox("acme").join("errors.results.csv"));
    let failed_lines: Vec<u64> =
        results[1..].iter().filter(|r| r[2] == "failed").map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(summary["failed"], failed_lines.len() as u64);
    assert!(failed_lines.len() > 10);
    // errors_by_code matches the results.
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for row in results[1..].iter().filter(|r| !r[4].is_empty()) {
        *counts.entry(row[4].clone()).or_default() += 1;
    }
    assert_eq!(summary["errors_by_code"], serde_json::json!(counts));
    assert_eq!(summary["failed_file"], "errors.failed.csv");
    // The failed records, byte for byte, in input order, nothing else.
    let failed = std::fs::read(d.outbox("acme").join("errors.failed.csv")).unwrap();
    // (samples/errors.csv has LF line breaks, none inside quotes.)
    let (header, records) = records_on_lines(&std::fs::read(&upload).unwrap(), &failed_lines);
    assert_eq!(records.len(), failed_lines.len());
    let mut expected = header.clone();
    expected.push(b'\n');
    for r in &records {
        expected.extend_from_slice(r);
        expected.push(b'\n');
    }
    assert_eq!(String::from_utf8_lossy(&failed), String::from_utf8_lossy(&expected));
    // A scripted fix: each failed record gets a fresh ref and a valid address.
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(&failed[..]);
    let columns = reader.headers().unwrap().len();
    let fixed_path = d.dir.join("errors-fixed.csv");
    let mut fixed = csv::Writer::from_path(&fixed_path).unwrap();
    fixed.write_record(reader.headers().unwrap()).unwrap();
    let mut n = 0;
    for (i, record) in reader.byte_records().enumerate() {
        record.unwrap();
        let mut cells = vec![String::new(); columns];
        cells[0] = format!("fixed-{i}");
        cells[1] = format!("+1555500{i:04}");
        fixed.write_record(&cells).unwrap();
        n += 1;
    }
    fixed.flush().unwrap();
    assert_eq!(n, failed_lines.len());
    put(&d, &fixed_path, "/customers/errors-fixed.csv").await;
    let again = report(&d, "errors-fixed.summary.json").await;
    assert_eq!(again["created"], n as u64, "{again}");
    assert_eq!(again["failed"], 0);
    assert_eq!(again["failed_file"], serde_json::Value::Null);
    assert!(!d.outbox("acme").join("errors-fixed.failed.csv").exists(), "no failed file when nothing failed");
    // The fixed file under the first one's name: its failed records go.
    put(&d, &fixed_path, "/customers/errors.csv").await;
    let summary_path = d.outbox("acme").join("errors.summary.json");
    eventually(REPORT, "the second errors.csv report", || {
        json(&summary_path).filter(|s| s["job_id"] != summary["job_id"] && s["failed"] == 0)
    })
    .await;
    assert!(!d.outbox("acme").join("errors.failed.csv").exists(), "an older upload's failed records are removed");
}

async fn a_dry_run_predicts_the_import_and_writes_no_customer(db: TestDb) {
    // Two records per batch: claims and duplicates cross batches.
    let d = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme")], &[("INTAKE_BATCH_SIZE", "2")]).await;
    let base = d.dir.join("base.csv");
    std::fs::write(&base, "ref,email\ne1,e1@example.com\ne2,e2@example.com\ne3,e3@example.com\n").unwrap();
    put(&d, &base, "/customers/base.csv").await;
    assert_eq!(report(&d, "base.summary.json").await["created"], 3);
    let file = d.dir.join("x.csv");
    std::fs::write(
        &file,
        "ref,email\ne1,e1@example.com\ne2,changed@example.com\nn1,n1@example.com\nbad,nope\nn1,again@example.com\n\
         e3,e3@example.com\nn2,n2@example.com\ne2,twice@example.com\n",
    )
    .unwrap();
    let store = db.store().await;
    let before = store.get_customer("acme", "e2").await.unwrap().unwrap();
    put(&d, &file, "/validate/x.csv").await;
    let dry = report(&d, "x.validation.json").await;
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["status"], "completed");
    assert_eq!([&dry["created"], &dry["updated"], &dry["unchanged"], &dry["failed"]], [2, 1, 2, 3], "{dry}");
    assert_eq!(store.count_customers("acme").await.unwrap(), 3, "nothing written");
    assert_eq!(store.get_customer("acme", "e2").await.unwrap().unwrap(), before);
    assert!(!d.outbox("acme").join("x.summary.json").exists(), "a dry run never takes an import's names");
    assert!(!d.outbox("acme").join("x.results.csv").exists());
    let predicted = read_results(&d.outbox("acme").join("x.validation.csv"));
    let failed = std::fs::read_to_string(d.outbox("acme").join("x.validation-failed.csv")).unwrap();
    assert_eq!(failed, "ref,email\nbad,nope\nn1,again@example.com\ne2,twice@example.com\n");
    // The same file imported does exactly what the dry run said.
    put(&d, &file, "/customers/x.csv").await;
    let real = report(&d, "x.summary.json").await;
    assert_eq!(real["dry_run"], false);
    let results = read_results(&d.outbox("acme").join("x.results.csv"));
    assert_eq!(predicted.len(), results.len());
    for (p, r) in predicted.iter().zip(&results).skip(1) {
        assert_eq!((&p[0], &p[1], &p[2], &p[4], &p[5], &p[6]), (&r[0], &r[1], &r[2], &r[4], &r[5], &r[6]));
        if p[2] == "created" {
            assert!(p[3].is_empty() && !r[3].is_empty(), "a dry run creates no id: {p:?}");
        } else {
            assert_eq!(p[3], r[3], "{p:?}");
        }
    }
    for key in ["created", "updated", "unchanged", "failed", "rows", "errors_by_code"] {
        assert_eq!(dry[key], real[key], "{key}");
    }
    assert_eq!(store.count_customers("acme").await.unwrap(), 5);
    // The dry run's upload is archived like any other (the archive follows
    // the summary).
    let archive = d.data_dir.join("accounts/acme/archive");
    eventually(REPORT, "three uploads archived", || (std::fs::read_dir(&archive).ok()?.count() == 3).then_some(()))
        .await;
}

/// A gzip stream of concatenated members: the header, then `copies` copies
/// of one compressed megabyte of rows (cheap to make, costly to unpack).
fn write_gzip_bomb(path: &Path, copies: usize) {
    use flate2::{write::GzEncoder, Compression};
    let gz = |bytes: &[u8]| {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    let rows = b"r1,+15555550001\n".repeat(64 * 1024);
    let (header, member) = (gz(b"ref,phone\n"), gz(&rows));
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    out.write_all(&header).unwrap();
    for _ in 0..copies {
        out.write_all(&member).unwrap();
    }
}

async fn a_compressed_upload_reports_as_the_plain_file_and_a_bomb_is_refused(db: TestDb) {
    let accounts = [TestAccount::new("acme"), TestAccount::new("plain")];
    let d = TestDaemon::spawn(&db, &accounts, &[]).await;
    let plain = d.dir.join("million.csv");
    write_mixed(&plain, "m-", 1_000_000);
    let status = std::process::Command::new("gzip").args(["-k", "-f"]).arg(&plain).status().unwrap();
    assert!(status.success());
    let compressed = d.dir.join("million.csv.gz");
    put(&d, &compressed, "/customers/million.csv.gz").await;
    let out = d.sftp("plain", &format!("put {} /customers/million.csv\n", plain.display())).await;
    assert!(out.status.success(), "{}", describe(&out));
    let gz_summary = report(&d, "million.summary.json").await;
    let plain_summary = d.summary("plain", "million", REPORT).await;
    assert_eq!(gz_summary["file"], "million.csv.gz");
    assert_eq!(gz_summary["bytes"], std::fs::metadata(&compressed).unwrap().len());
    for key in ["status", "rows", "created", "failed", "errors_by_code"] {
        assert_eq!(gz_summary[key], plain_summary[key], "{key}");
    }
    assert_eq!(gz_summary["rows"], 1_000_000);
    let [a, b] = ["acme", "plain"].map(|avid| read_results(&d.outbox(avid).join("million.results.csv")));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x[0], &x[1], &x[2], &x[4], &x[6]), (&y[0], &y[1], &y[2], &y[4], &y[6]));
    }
    drop((a, b));
    let failed = std::fs::read(d.outbox("acme").join("million.failed.csv")).unwrap();
    assert_eq!(failed, std::fs::read(d.outbox("plain").join("million.failed.csv")).unwrap());
    // The archive keeps the compressed original.
    let archive = d.data_dir.join("accounts/acme/archive");
    let kept = std::fs::read_dir(&archive).unwrap().next().unwrap().unwrap().path();
    assert!(kept.to_string_lossy().ends_with("million.csv.gz"));
    assert_eq!(std::fs::read(kept).unwrap(), std::fs::read(&compressed).unwrap());
    // 3 GiB of rows in a few megabytes: refused within the ratio, memory bounded.
    let bomb = d.dir.join("bomb.csv.gz");
    write_gzip_bomb(&bomb, 3 * 1024);
    assert!(std::fs::metadata(&bomb).unwrap().len() < 16 * 1024 * 1024);
    let rss_before = d.peak_rss_mib();
    put(&d, &bomb, "/customers/bomb.csv.gz").await;
    let summary = report(&d, "bomb.summary.json").await;
    assert_eq!(summary["status"], "rejected", "{summary}");
    assert_eq!(summary["error"]["code"], "file_too_large");
    let message = summary["error"]["message"].as_str().unwrap();
    assert!(message.contains("times its compressed size"), "{message}");
    let rss = d.peak_rss_mib();
    assert!(rss < rss_before.max(64) + 128, "peak RSS {rss} MiB after the bomb (was {rss_before} MiB)");
}

async fn reports_start_with_a_bom_when_the_account_asks(db: TestDb) {
    let d = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme")], &[]).await;
    let env: Vec<(&str, &str)> = d.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = d.config.to_str().unwrap().to_owned();
    let set = intake(&["account", "set", "acme", "--report-bom", "--config", &config], &env, &d.dir).await;
    assert!(set.status.success(), "{}", describe(&set));
    let list = intake(&["account", "list", "--config", &config], &env, &d.dir).await;
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(listed.lines().any(|l| l.starts_with("acme") && l.trim_end().ends_with("yes")), "{listed}");
    let file = d.dir.join("ü.csv");
    std::fs::write(&file, "ref,email\nJürgen,j@example.com\nZoë,nope\n").unwrap();
    put(&d, &file, "/customers/ü.csv").await;
    put(&d, &file, "/validate/ü.csv").await;
    report(&d, "ü.summary.json").await;
    report(&d, "ü.validation.json").await;
    for name in ["ü.results.csv", "ü.validation.csv"] {
        let bytes = std::fs::read(d.outbox("acme").join(name)).unwrap();
        assert!(bytes.starts_with(b"\xEF\xBB\xBFline,ref,status"), "{name}: {:?}", &bytes[..12]);
    }
    // The failed records stay exactly as uploaded: no BOM added.
    let failed = std::fs::read(d.outbox("acme").join("ü.failed.csv")).unwrap();
    assert_eq!(failed, "ref,email\nZoë,nope\n".as_bytes());
    let unset = intake(&["account", "set", "acme", "--no-report-bom", "--config", &config], &env, &d.dir).await;
    assert!(unset.status.success(), "{}", describe(&unset));
    put(&d, &file, "/customers/plain.csv").await;
    report(&d, "plain.summary.json").await;
    let bytes = std::fs::read(d.outbox("acme").join("plain.results.csv")).unwrap();
    assert!(bytes.starts_with(b"line,ref,status"));
}

async fn a_kill_9_mid_job_leaves_no_stale_progress_after_the_restart(db: TestDb) {
    let mut d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[("INTAKE_BATCH_SIZE", "2000")]).await;
    let big = d.dir.join("big.csv");
    write_customers(&big, "k-", 200_000);
    put(&d, &big, "/customers/big.csv").await;
    let progress = d.outbox("acme").join("big.progress.json");
    eventually(REPORT, "progress past the first batches", || {
        json(&progress).filter(|p| p["state"] == "running" && p["rows_done"].as_u64() > Some(0))
    })
    .await;
    d.kill9().await;
    let stale = json(&progress).expect("the progress file outlives the killed process");
    assert_eq!(stale["state"], "running");
    d.start().await;
    let summary = report(&d, "big.summary.json").await;
    assert_eq!(summary["created"], 200_000, "{summary}");
    eventually(Duration::from_secs(10), "progress gone", || (!progress.exists()).then_some(())).await;
}

crate::on_both_backends!(
    progress_shows_while_a_file_runs_and_is_gone_with_its_summary,
    failed_records_come_back_as_uploaded_and_fixed_they_are_created,
    a_dry_run_predicts_the_import_and_writes_no_customer,
    a_compressed_upload_reports_as_the_plain_file_and_a_bomb_is_refused,
    reports_start_with_a_bom_when_the_account_asks,
    a_kill_9_mid_job_leaves_no_stale_progress_after_the_restart,
);
