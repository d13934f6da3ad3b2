//! OpenPGP on the channel (spec §12) with the real `gpg` (2.2): keys made
//! by gpg in a temporary GNUPGHOME per test, the account's key imported
//! from `intake pgp show`, files encrypted and signed by gpg uploaded with
//! OpenSSH `sftp`, and each PGP file error produced by a file gpg made.

use crate::support::{describe, read_results, TestAccount, TestDaemon, TestDb};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A gpg home of its own, with helpers for what the tests do with it.
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn new(dir: &Path, name: &str) -> Gpg {
        let home = dir.join(format!("gnupg-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Gpg { home }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &self.home)
            .args(["--batch", "--yes", "--no-tty", "--trust-model", "always", "--pinentry-mode", "loopback"])
            .args(["--passphrase", ""])
            .args(args)
            .output()
            .expect("gpg runs (apt-get install gnupg)");
        assert!(out.status.success(), "gpg {args:?} failed: {}", describe(&out));
        out
    }

    /// A merchant key as gpg makes one: Ed25519 primary (signs) and a
    /// Curve25519 subkey (encrypts), no passphrase; its fingerprint.
    fn make_key(&self, uid: &str) -> String {
        self.run(&["--quick-gen-key", uid, "ed25519", "sign", "2y"]);
        let fingerprint = self.fingerprint(uid);
        self.run(&["--quick-add-key", &fingerprint, "cv25519", "encr", "2y"]);
        fingerprint
    }

    fn fingerprint(&self, uid: &str) -> String {
        let out = self.run(&["--with-colons", "--list-keys", uid]);
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines().find_map(|l| l.strip_prefix("fpr:")).map(|l| l.trim_matches(':').to_lowercase()).unwrap()
    }

    fn import(&self, key: &Path) {
        self.run(&["--import", key.to_str().unwrap()]);
    }

    fn export(&self, uid: &str, to: &Path) {
        self.run(&["--armor", "--output", to.to_str().unwrap(), "--export", uid]);
    }
}

/// A daemon with account `acme`, its key in a gpg home with a merchant key
/// (uploaded into /keys over SFTP); (daemon, gpg, intake's fingerprint,
/// merchant's fingerprint).
async fn setup(db: &TestDb) -> (TestDaemon, Gpg, String, String) {
    setup_with(db, TestAccount::new("acme"), &[]).await
}

/// [`setup`] with the account and environment given.
async fn setup_with(db: &TestDb, acme: TestAccount, env: &[(&str, &str)]) -> (TestDaemon, Gpg, String, String) {
    let daemon = TestDaemon::spawn(db, &[acme], env).await;
    let gpg = Gpg::new(&daemon.dir, "merchant");
    let merchant = gpg.make_key("Merchant <ops@merchant.example>");
    let shown = daemon.cli(&["pgp", "show", "acme"], "").await;
    assert!(shown.status.success(), "{}", describe(&shown));
    let intake_key = daemon.dir.join("intake.asc");
    std::fs::write(&intake_key, &shown.stdout).unwrap();
    gpg.import(&intake_key);
    let intake = gpg.fingerprint("intake account acme");
    // The account's key over SFTP is the one `intake pgp show` printed.
    let fetched = daemon.dir.join("fetched.asc");
    let out = daemon.sftp("acme", &format!("get /keys/intake.asc {}\n", fetched.display())).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&fetched).unwrap(), shown.stdout);
    // The merchant's public key, uploaded into /keys.
    let exported = daemon.dir.join("merchant.asc");
    gpg.export("Merchant <ops@merchant.example>", &exported);
    let out = daemon.sftp("acme", &format!("put {} /keys/merchant.asc\n", exported.display())).await;
    assert!(out.status.success(), "{}\n{}", describe(&out), daemon.log());
    let listed = daemon.cli(&["pgp", "list", "acme"], "").await;
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains(&merchant) && listed.contains(&intake), "{listed}");
    (daemon, gpg, intake, merchant)
}

fn write_csv(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::from("ref,address\n");
    for i in 0..50 {
        text += &format!("{name}-{i},+1555555{i:04}\n");
    }
    text += "bad,not a phone\n";
    std::fs::write(&path, text).unwrap();
    path
}

async fn upload_and_summary(daemon: &TestDaemon, local: &Path, remote: &str, stem: &str) -> serde_json::Value {
    daemon.upload("acme", local, remote).await;
    daemon.summary("acme", stem, LIMIT).await
}

crate::on_both_backends!(a_gpg_encrypted_and_signed_upload_imports_and_names_its_signer);
async fn a_gpg_encrypted_and_signed_upload_imports_and_names_its_signer(db: TestDb) {
    let (daemon, gpg, intake, merchant) = setup(&db).await;
    let plain = write_csv(&daemon.dir, "may.csv");
    let sealed = daemon.dir.join("may.csv.gpg");
    gpg.run(&[
        "-r",
        &intake,
        "-u",
        &merchant,
        "--sign",
        "--encrypt",
        "-o",
        sealed.to_str().unwrap(),
        plain.to_str().unwrap(),
    ]);
    let summary = upload_and_summary(&daemon, &sealed, "May.csv.gpg", "May").await;
    assert_eq!(summary["status"], "completed", "{summary}\n{}", daemon.log());
    assert_eq!(
        (summary["rows"].as_u64(), summary["created"].as_u64(), summary["failed"].as_u64()),
        (Some(51), Some(50), Some(1))
    );
    assert_eq!(summary["pgp"]["signer"], merchant.as_str(), "{summary}");
    assert_eq!(summary["file"], "May.csv.gpg");
    let results = read_results(&daemon.outbox("acme").join("May.results.csv"));
    assert_eq!(results.len(), 52);
    assert_eq!(results[1][2], "created");
    // gzip inside, armoured, encrypted only: the same rows, now unchanged.
    let gz = daemon.dir.join("june.csv.gz");
    let status = Command::new("gzip").arg("-k").arg("-c").arg(&plain).output().unwrap();
    std::fs::write(&gz, status.stdout).unwrap();
    let sealed = daemon.dir.join("june.csv.gz.asc");
    gpg.run(&["--armor", "-r", &intake, "--encrypt", "-o", sealed.to_str().unwrap(), gz.to_str().unwrap()]);
    let summary = upload_and_summary(&daemon, &sealed, "June.csv.gz.asc", "June").await;
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!((summary["unchanged"].as_u64(), summary["failed"].as_u64()), (Some(50), Some(1)), "{summary}");
    assert!(summary.get("pgp").is_none(), "not signed: no signer: {summary}");
    // The archive keeps the upload as it came: encrypted.
    let archive = daemon.data_dir.join("accounts/acme/archive");
    let archived: Vec<_> = std::fs::read_dir(&archive).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(
        archived.iter().any(|p| std::fs::read(p).unwrap().starts_with(b"-----BEGIN PGP MESSAGE-----")),
        "{archived:?}"
    );
}

crate::on_both_backends!(each_pgp_file_error_comes_from_a_file_gpg_made);
async fn each_pgp_file_error_comes_from_a_file_gpg_made(db: TestDb) {
    let (daemon, gpg, intake, merchant) = setup(&db).await;
    let other = gpg.make_key("Other <other@example.com>");
    let plain = write_csv(&daemon.dir, "x.csv");
    let file = |name: &str| daemon.dir.join(name);
    let p = |path: &PathBuf| path.to_str().unwrap().to_owned();
    let expect = |summary: &serde_json::Value, code: &str| {
        assert_eq!(summary["status"], "rejected", "{summary}");
        assert_eq!(summary["error"]["code"], code, "{summary}");
        assert_eq!(summary["rows"], 0, "{summary}");
    };
    // Encrypted to another key.
    let to_other = file("a.csv.pgp");
    gpg.run(&["-r", &other, "--encrypt", "-o", &p(&to_other), &p(&plain)]);
    expect(&upload_and_summary(&daemon, &to_other, "a.csv.pgp", "a").await, "decrypt_failed");
    // Truncated in the middle.
    let whole = file("whole.pgp");
    gpg.run(&["-r", &intake, "-z", "0", "--encrypt", "-o", &p(&whole), &p(&plain)]);
    let bytes = std::fs::read(&whole).unwrap();
    let cut = file("b.csv.pgp");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    expect(&upload_and_summary(&daemon, &cut, "b.csv.pgp", "b").await, "decrypt_failed");
    // No integrity protection (gpg --rfc2440 writes no MDC).
    let no_mdc = file("c.csv.pgp");
    gpg.run(&["-r", &intake, "--rfc2440", "--encrypt", "-o", &p(&no_mdc), &p(&plain)]);
    expect(&upload_and_summary(&daemon, &no_mdc, "c.csv.pgp", "c").await, "integrity_missing");
    // Signed by a key that is not the merchant's.
    let by_other = file("d.csv.pgp");
    gpg.run(&["-r", &intake, "-u", &other, "--sign", "--encrypt", "-o", &p(&by_other), &p(&plain)]);
    expect(&upload_and_summary(&daemon, &by_other, "d.csv.pgp", "d").await, "bad_signature");
    // The account requires signatures: an unsigned upload is refused.
    let set = daemon.cli(&["account", "set", "acme", "--pgp-require-signature"], "").await;
    assert!(set.status.success(), "{}", describe(&set));
    let unsigned = file("e.csv.pgp");
    gpg.run(&["-r", &intake, "--encrypt", "-o", &p(&unsigned), &p(&plain)]);
    expect(&upload_and_summary(&daemon, &unsigned, "e.csv.pgp", "e").await, "signature_required");
    // The account requires encryption: a plain upload is refused.
    let set =
        daemon.cli(&["account", "set", "acme", "--pgp-require-signature=false", "--pgp-require-encryption"], "").await;
    assert!(set.status.success(), "{}", describe(&set));
    expect(&upload_and_summary(&daemon, &plain, "f.csv", "f").await, "encryption_required");
    // ... and a signed-only message (not encrypted) too.
    let signed_only = file("g.csv.gpg");
    gpg.run(&["-u", &merchant, "--sign", "-o", &p(&signed_only), &p(&plain)]);
    expect(&upload_and_summary(&daemon, &signed_only, "g.csv.gpg", "g").await, "encryption_required");
    // A secret key uploaded into /keys is refused with a clear status and never stored.
    let secret = file("secret.asc");
    gpg.run(&["--armor", "--output", &p(&secret), "--export-secret-keys", &other]);
    let out = daemon.sftp("acme", &format!("put {} /keys/mine.asc\n", secret.display())).await;
    assert!(!out.status.success() && describe(&out).contains("close remote: Failure"), "{}", describe(&out));
    // OpenSSH prints the status code only; the status's message says why.
    let message = close_message(&daemon, "/keys/mine.asc", &std::fs::read(&secret).unwrap()).await;
    assert!(message.contains("secret key"), "{message}");
    let listed = daemon.cli(&["pgp", "list", "acme"], "").await;
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&other), "{}", describe(&listed));
    // intake.asc is read-only.
    let out = daemon.sftp("acme", &format!("put {} /keys/intake.asc\n", p(&plain))).await;
    assert!(!out.status.success(), "{}", describe(&out));
}

crate::on_both_backends!(an_encrypted_report_decrypts_with_gpg_and_is_signed_by_the_account);
async fn an_encrypted_report_decrypts_with_gpg_and_is_signed_by_the_account(db: TestDb) {
    let (daemon, gpg, intake, _merchant) = setup(&db).await;
    let set = daemon.cli(&["account", "set", "acme", "--pgp-encrypt-reports"], "").await;
    assert!(set.status.success(), "{}", describe(&set));
    let plain = write_csv(&daemon.dir, "july.csv");
    let sealed = daemon.dir.join("july.csv.pgp");
    gpg.run(&["-r", &intake, "--encrypt", "-o", sealed.to_str().unwrap(), plain.to_str().unwrap()]);
    let summary = upload_and_summary(&daemon, &sealed, "July.csv.pgp", "July").await;
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(summary["pgp"]["results_file"], "July.results.csv.pgp", "{summary}");
    assert_eq!(summary["failed_file"], "July.failed.csv.pgp", "{summary}");
    let outbox = daemon.outbox("acme");
    let listed: Vec<_> = std::fs::read_dir(&outbox).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!outbox.join("July.results.csv").exists() && !outbox.join("July.failed.csv").exists(), "{listed:?}");
    // The merchant decrypts them with gpg; the signature is the account's key's.
    let decrypt = |name: &str| {
        let out = daemon.dir.join(format!("{name}.plain"));
        let run = gpg.run(&[
            "--status-fd",
            "2",
            "--decrypt",
            "-o",
            out.to_str().unwrap(),
            outbox.join(name).to_str().unwrap(),
        ]);
        let status = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(status.contains(&format!("VALIDSIG {}", intake.to_uppercase())), "{status}");
        out
    };
    let results = read_results(&decrypt("July.results.csv.pgp"));
    assert_eq!(results[0][..3], ["line", "ref", "status"]);
    assert_eq!(results.len(), 52);
    assert_eq!(results.iter().filter(|r| r[2] == "created").count(), 50);
    assert_eq!(results[51][2], "failed");
    let failed = std::fs::read_to_string(decrypt("July.failed.csv.pgp")).unwrap();
    assert_eq!(failed, "ref,address\nbad,not a phone\n");
    // The same file uploaded plain to an account that does not encrypt gets
    // the same report in plain text (the rows now unchanged).
    let set = daemon.cli(&["account", "set", "acme", "--pgp-encrypt-reports=false"], "").await;
    assert!(set.status.success(), "{}", describe(&set));
    let first = summary["job_id"].as_str().unwrap().to_owned();
    daemon.upload("acme", &plain, "July.csv").await;
    let path = outbox.join("July.summary.json");
    let summary: serde_json::Value = crate::support::eventually(LIMIT, "the second July summary", || {
        let text = std::fs::read_to_string(&path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        (v["job_id"] != first.as_str()).then_some(v)
    })
    .await;
    assert!(summary.get("pgp").is_none(), "{summary}");
    let again = read_results(&outbox.join("July.results.csv"));
    let key =
        |rows: &[Vec<String>]| rows.iter().map(|r| (r[0].clone(), r[1].clone(), r[3].clone())).collect::<Vec<_>>();
    assert_eq!(key(&again), key(&results), "same lines, refs and customer ids");
    assert!(!outbox.join("July.results.csv.pgp").exists(), "an older encrypted report does not stay beside it");
}

/// The message of the failure status a CLOSE of `path` written with `bytes` gets.
async fn close_message(d: &TestDaemon, path: &str, bytes: &[u8]) -> String {
    use russh_sftp::protocol::{FileAttributes, OpenFlags};
    let key = russh::keys::load_secret_key(&d.key, None).unwrap();
    let addr: std::net::SocketAddr = d.addr.as_ref().unwrap().parse().unwrap();
    let conn = crate::sftp::login_key(addr, "acme", &key).await.unwrap();
    let channel = conn.channel_open_session().await.unwrap();
    channel.request_subsystem(true, "sftp").await.unwrap();
    let raw = russh_sftp::client::RawSftpSession::new(channel.into_stream());
    raw.init().await.unwrap();
    let flags = OpenFlags::CREATE | OpenFlags::WRITE | OpenFlags::TRUNCATE;
    let handle = raw.open(path, flags, FileAttributes::default()).await.unwrap().handle;
    raw.write(handle.clone(), 0, bytes.to_vec()).await.unwrap();
    match raw.close(handle).await {
        Err(russh_sftp::client::error::Error::Status(s)) => s.error_message,
        other => panic!("the close was not refused: {other:?}"),
    }
}

/// Runs a tool (sq, rnp) in `dir`; asserts it succeeded.
fn tool(dir: &Path, program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (apt-get install {program}): {e}"));
    assert!(out.status.success(), "{program} {args:?} failed: {}", describe(&out));
    out
}

crate::on_both_backends!(uploads_encrypted_by_sq_and_rnp_import_too);
async fn uploads_encrypted_by_sq_and_rnp_import_too(db: TestDb) {
    let (daemon, _gpg, _intake, _merchant) = setup(&db).await;
    let dir = daemon.dir.clone();
    let intake_key = dir.join("intake.asc");
    // sq: a merchant key of its own (uploaded into /keys), signs and encrypts.
    tool(&dir, "sq", &["key", "generate", "--userid", "<sq@merchant.example>", "--export", "sq-key.pgp"]);
    tool(&dir, "sq", &["key", "extract-cert", "sq-key.pgp", "--output", "sq-cert.asc"]);
    let inspected = String::from_utf8(tool(&dir, "sq", &["inspect", "sq-cert.asc"]).stdout).unwrap();
    let sq_fingerprint = inspected
        .lines()
        .find_map(|l| l.trim().strip_prefix("Fingerprint: "))
        .map(|f| f.trim().to_lowercase())
        .unwrap();
    let out = daemon.sftp("acme", &format!("put {} /keys/sq.asc\n", dir.join("sq-cert.asc").display())).await;
    assert!(out.status.success(), "{}", describe(&out));
    let plain = write_csv(&dir, "sq.csv");
    tool(
        &dir,
        "sq",
        &[
            "encrypt",
            "--recipient-cert",
            intake_key.to_str().unwrap(),
            "--signer-key",
            "sq-key.pgp",
            "--output",
            "sq.csv.pgp",
            plain.to_str().unwrap(),
        ],
    );
    let summary = upload_and_summary(&daemon, &dir.join("sq.csv.pgp"), "Sq.csv.pgp", "Sq").await;
    assert_eq!(summary["status"], "completed", "{summary}\n{}", daemon.log());
    assert_eq!(summary["created"], 50, "{summary}");
    assert_eq!(summary["pgp"]["signer"], sq_fingerprint.as_str(), "{summary}");
    // rnp: encrypts to the key file, armoured, zlib-compressed.
    let plain = write_csv(&dir, "rnp.csv");
    tool(
        &dir,
        "rnp",
        &[
            "--keyfile",
            intake_key.to_str().unwrap(),
            "--encrypt",
            "-r",
            "intake account acme",
            "--zlib",
            "--armor",
            "--output",
            "rnp.csv.asc",
            plain.to_str().unwrap(),
        ],
    );
    let summary = upload_and_summary(&daemon, &dir.join("rnp.csv.asc"), "Rnp.csv.asc", "Rnp").await;
    assert_eq!(summary["status"], "completed", "{summary}\n{}", daemon.log());
    assert_eq!(summary["created"], 50, "{summary}");
}

crate::on_both_backends!(expired_and_revoked_merchant_keys_are_refused);
async fn expired_and_revoked_merchant_keys_are_refused(db: TestDb) {
    let daemon = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    let gpg = Gpg::new(&daemon.dir, "old");
    // Made in 2020 with a one-day expiry.
    gpg.run(&[
        "--faked-system-time",
        "20200101T000000",
        "--quick-gen-key",
        "Old <old@example.com>",
        "ed25519",
        "sign",
        "1d",
    ]);
    let old = gpg.fingerprint("Old <old@example.com>");
    gpg.run(&["--faked-system-time", "20200101T000000", "--quick-add-key", &old, "cv25519", "encr", "1d"]);
    let expired = daemon.dir.join("expired.asc");
    gpg.export("Old <old@example.com>", &expired);
    // Revoked with the revocation certificate gpg made with it.
    let current = gpg.make_key("Gone <gone@example.com>");
    let cert = gpg.home.join(format!("openpgp-revocs.d/{}.rev", current.to_uppercase()));
    let text = std::fs::read_to_string(&cert).unwrap().replace(":-----BEGIN", "-----BEGIN");
    std::fs::write(&cert, text).unwrap();
    gpg.import(&cert);
    let revoked = daemon.dir.join("revoked.asc");
    gpg.export("Gone <gone@example.com>", &revoked);
    for (file, why) in [(&expired, "expired"), (&revoked, "revoked")] {
        let out = daemon.cli(&["pgp", "add-key", "acme", file.to_str().unwrap()], "").await;
        assert!(!out.status.success() && describe(&out).contains(why), "{}", describe(&out));
        let message = close_message(&daemon, "/keys/k.asc", &std::fs::read(file).unwrap()).await;
        assert!(message.contains(why), "{message}");
    }
    let listed = daemon.cli(&["pgp", "list", "acme"], "").await;
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(!listed.contains(&old) && !listed.contains(&current), "{listed}");
}

crate::on_both_backends!(after_a_rotation_the_new_key_is_offered_and_the_old_one_still_decrypts);
async fn after_a_rotation_the_new_key_is_offered_and_the_old_one_still_decrypts(db: TestDb) {
    let (daemon, gpg, old, _merchant) = setup(&db).await;
    let plain = write_csv(&daemon.dir, "old.csv");
    let to_old = daemon.dir.join("old.csv.pgp");
    gpg.run(&["-r", &old, "--encrypt", "-o", to_old.to_str().unwrap(), plain.to_str().unwrap()]);
    let rotated = daemon.cli(&["pgp", "init", "acme"], "").await;
    assert!(rotated.status.success(), "{}", describe(&rotated));
    let shown = daemon.cli(&["pgp", "show", "acme"], "").await;
    let new_key = daemon.dir.join("new.asc");
    std::fs::write(&new_key, &shown.stdout).unwrap();
    let gpg_new = Gpg::new(&daemon.dir, "new");
    gpg_new.import(&new_key);
    let new = gpg_new.fingerprint("intake account acme");
    assert_ne!(new, old, "the new key is offered");
    let summary = upload_and_summary(&daemon, &to_old, "Old.csv.pgp", "Old").await;
    assert_eq!(summary["status"], "completed", "encrypted to the old key: {summary}");
    let to_new = daemon.dir.join("new.csv.pgp");
    let plain = write_csv(&daemon.dir, "new.csv");
    gpg_new.run(&["-r", &new, "--encrypt", "-o", to_new.to_str().unwrap(), plain.to_str().unwrap()]);
    let summary = upload_and_summary(&daemon, &to_new, "New.csv.pgp", "New").await;
    assert_eq!(summary["status"], "completed", "encrypted to the new key: {summary}");
    let listed = daemon.cli(&["pgp", "list", "acme"], "").await;
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains(&old) && listed.contains(&new), "{listed}");
}

crate::on_both_backends!(encrypted_reports_are_named_in_progress_and_served_only_encrypted_over_http);
async fn encrypted_reports_are_named_in_progress_and_served_only_encrypted_over_http(db: TestDb) {
    let acme = crate::console::account("acme", "acme-pw");
    let (daemon, gpg, intake, _merchant) = setup_with(&db, acme, &[("INTAKE_BATCH_SIZE", "1000")]).await;
    let set = daemon.cli(&["account", "set", "acme", "--pgp-encrypt-reports"], "").await;
    assert!(set.status.success(), "{}", describe(&set));
    // Big enough to be seen running: progress.json names the encrypted files.
    let plain = daemon.dir.join("big.csv");
    let mut text = String::from("ref,address\n");
    for i in 0..60_000 {
        text += &format!("b-{i},+1555{i:07}\n");
    }
    text += "bad,not a phone\n";
    std::fs::write(&plain, text).unwrap();
    daemon.upload("acme", &plain, "Big.csv").await;
    let outbox = daemon.outbox("acme");
    let (mut seen, deadline) = (Vec::new(), std::time::Instant::now() + LIMIT);
    while !outbox.join("Big.summary.json").exists() {
        assert!(std::time::Instant::now() < deadline, "no summary in time\n{}", daemon.log());
        let progress = std::fs::read(outbox.join("Big.progress.json")).ok();
        if let Some(p) = progress.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()) {
            seen.push(p);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!seen.is_empty(), "no progress.json seen");
    for p in &seen {
        assert_eq!(p["pgp"]["results_file"], "Big.results.csv.pgp", "{p}");
        assert_eq!(p["pgp"]["failed_file"], "Big.failed.csv.pgp", "{p}");
    }
    let summary = daemon.summary("acme", "Big", LIMIT).await;
    assert_eq!(summary["pgp"]["results_file"], "Big.results.csv.pgp", "{summary}");
    let id = summary["job_id"].as_str().unwrap().to_owned();

    // Over the API: the encrypted files as they are in the outbox, never plain.
    let api = daemon.api_addr().await;
    let out = daemon.cli(&["token", "create", "acme"], "").await;
    assert!(out.status.success(), "{}", describe(&out));
    let token = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim().to_owned();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let decrypt = |name: &str, bytes: &[u8]| {
        let (sealed, out) = (daemon.dir.join(format!("{name}.got")), daemon.dir.join(format!("{name}.plain")));
        std::fs::write(&sealed, bytes).unwrap();
        let run = gpg.run(&["--status-fd", "2", "--decrypt", "-o", out.to_str().unwrap(), sealed.to_str().unwrap()]);
        let status = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(status.contains(&format!("VALIDSIG {}", intake.to_uppercase())), "{status}");
        out
    };
    for (route, name) in [("results", "Big.results.csv.pgp"), ("failed", "Big.failed.csv.pgp")] {
        let got = client
            .get(format!("http://{api}/api/v1/accounts/acme/jobs/{id}/{route}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(got.status().as_u16(), 200, "{route}");
        let header = |h: reqwest::header::HeaderName| got.headers().get(h).unwrap().to_str().unwrap().to_owned();
        assert_eq!(header(reqwest::header::CONTENT_TYPE), "application/pgp-encrypted");
        assert_eq!(header(reqwest::header::CONTENT_DISPOSITION), format!("attachment; filename=\"{name}\""));
        let body = got.bytes().await.unwrap();
        assert_eq!(body[..], std::fs::read(outbox.join(name)).unwrap()[..], "{route}: the outbox file");
        let over_http = std::fs::read(decrypt(&format!("http-{route}"), &body)).unwrap();
        let in_outbox = std::fs::read(decrypt(&format!("outbox-{route}"), &std::fs::read(outbox.join(name)).unwrap()));
        assert_eq!(over_http, in_outbox.unwrap(), "{route}: the same rows");
        if route == "results" {
            let rows = read_results(&daemon.dir.join("http-results.plain"));
            assert_eq!(rows.len(), 60_002, "the header and every record");
            assert_eq!(rows[60_001][2], "failed");
        } else {
            assert_eq!(String::from_utf8(over_http).unwrap(), "ref,address\nbad,not a phone\n");
        }
    }

    // In the console: encrypted downloads, a note instead of the rows.
    let base = format!("http://{api}");
    let signed = crate::console::sign_in(&base, "acme", "acme-pw").await;
    let (status, page) = signed.page(&format!("/jobs/{id}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("id=\"reports-encrypted\"") && page.contains("reports are encrypted; download them"),
        "{page}"
    );
    assert!(!page.contains("id=\"failed-rows\"") && !page.contains("not a phone"), "no rows shown: {page}");
    for (route, name) in [("results.csv", "Big.results.csv.pgp"), ("failed.csv", "Big.failed.csv.pgp")] {
        let got = signed.get(&format!("/jobs/{id}/{route}")).await;
        assert_eq!(got.status().as_u16(), 200, "{route}");
        let header = |h: reqwest::header::HeaderName| got.headers().get(h).unwrap().to_str().unwrap().to_owned();
        assert_eq!(header(reqwest::header::CONTENT_TYPE), "application/pgp-encrypted");
        assert_eq!(header(reqwest::header::CONTENT_DISPOSITION), format!("attachment; filename=\"{name}\""));
        assert_eq!(got.bytes().await.unwrap()[..], std::fs::read(outbox.join(name)).unwrap()[..], "{route}");
    }
}

/// A webhook receiver that keeps every request's body and answers 204.
async fn recording_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = got.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let (mut request, mut buf) = (Vec::new(), [0u8; 4096]);
                let body = loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_owned))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break request[end + 4..end + 4 + length].to_vec();
                        }
                    }
                };
                kept.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
                let _ = socket.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await;
            });
        }
    });
    (url, got)
}

/// A merchant key gpg makes expiring in `days` days, added with the CLI;
/// its fingerprint.
async fn add_key_expiring(daemon: &TestDaemon, gpg: &Gpg, uid: &str, days: u32) -> String {
    let expiry = format!("{days}d");
    gpg.run(&["--quick-gen-key", uid, "ed25519", "sign", &expiry]);
    let fingerprint = gpg.fingerprint(uid);
    gpg.run(&["--quick-add-key", &fingerprint, "cv25519", "encr", &expiry]);
    let file = daemon.dir.join(format!("{fingerprint}.asc"));
    gpg.export(uid, &file);
    let out = daemon.cli(&["pgp", "add-key", "acme", file.to_str().unwrap()], "").await;
    assert!(out.status.success(), "{}", describe(&out));
    fingerprint
}

crate::on_both_backends!(a_key_expiring_within_30_days_raises_one_webhook_event_a_day);
async fn a_key_expiring_within_30_days_raises_one_webhook_event_a_day(db: TestDb) {
    // A sweep (and so an expiry check) every second: many checks, one event.
    let mut daemon =
        TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[("INTAKE_RETENTION__SWEEP_EVERY_SECS", "1")]).await;
    let (url, got) = recording_receiver().await;
    let secret = intake::store::WebhookSecret::new("s3cret-acme".into());
    db.store().await.set_webhook("acme", &url, &secret).await.unwrap();
    let gpg = Gpg::new(&daemon.dir, "merchant");
    // A key with two years left raises nothing.
    gpg.make_key("Later <later@merchant.example>");
    let later = gpg.fingerprint("Later <later@merchant.example>");
    let file = daemon.dir.join("later.asc");
    gpg.export("Later <later@merchant.example>", &file);
    let out = daemon.cli(&["pgp", "add-key", "acme", file.to_str().unwrap()], "").await;
    assert!(out.status.success(), "{}", describe(&out));
    let soon = add_key_expiring(&daemon, &gpg, "Soon <soon@merchant.example>", 10).await;
    let events_of = |fingerprint: &str| {
        got.lock().unwrap().iter().filter(|e| e["fingerprint"] == fingerprint).cloned().collect::<Vec<_>>()
    };
    let first = crate::support::eventually(LIMIT, "the key_expiring event", || events_of(&soon).first().cloned()).await;
    assert_eq!(first["event"], "pgp.key_expiring", "{first}");
    assert_eq!(first["account"], "acme", "{first}");
    assert_eq!(first["key"], "merchant", "{first}");
    assert!(matches!(first["days_left"].as_i64(), Some(9 | 10)), "{first}");
    assert!(first["expires_at"].as_str().is_some_and(|t| t.len() >= 20), "{first}");
    let log = daemon.log();
    assert!(log.contains("expires within 30 days") && log.contains(&soon), "{log}");
    // Restarted within the day: a later key's event proves a check ran
    // since, and the first key got no second one.
    daemon.kill9().await;
    daemon.start().await;
    let sooner = add_key_expiring(&daemon, &gpg, "Sooner <sooner@merchant.example>", 5).await;
    crate::support::eventually(LIMIT, "the second key's event", || (!events_of(&sooner).is_empty()).then_some(()))
        .await;
    assert_eq!(events_of(&soon).len(), 1, "one event per key per day: {:?}", got.lock().unwrap());
    assert_eq!(events_of(&sooner).len(), 1, "{:?}", got.lock().unwrap());
    assert!(events_of(&later).is_empty(), "a key with two years left: {:?}", got.lock().unwrap());
    // The log warned once about each, across checks every second and the restart.
    let log = daemon.log();
    let warnings = |fingerprint: &str| {
        log.lines().filter(|l| l.contains("expires within 30 days") && l.contains(fingerprint)).count()
    };
    assert_eq!((warnings(&soon), warnings(&sooner), warnings(&later)), (1, 1, 0), "{log}");
}
