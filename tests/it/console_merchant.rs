//! The merchant's console beyond the first flow: resubmitting every failed
//! row of a job (100,000 of them, or none), a resubmission read with the
//! original job's mapping profile, and the mapping profile pages (reqwest,
//! and headless Chromium with axe-core).

use crate::console::{
    account, axe, client, css, job_of, operator_sign_in, screenshot, sign_in, totp_code, try_sign_in, unix_now,
    wait_finished, wait_path, with_code, Chromedriver, Signed,
};
use crate::support::{TestDaemon, TestDb};
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION};
use std::time::Duration;

/// The value of `<dt>{name}</dt><dd>…</dd>` in a job's summary.
fn summary_value(page: &str, name: &str) -> String {
    let key = format!("<dt>{name}</dt><dd>");
    let at = page.find(&key).unwrap_or_else(|| panic!("no {name} in {page}"));
    let rest = &page[at + key.len()..];
    rest[..rest.find('<').unwrap()].to_owned()
}

/// Posts a multipart form: text fields, then a file field `file`.
async fn multipart(signed: &Signed, path: &str, fields: &[(&str, &str)], file: (&str, &[u8])) -> reqwest::Response {
    let boundary = "----intake-test-boundary-mappings";
    let mut data = Vec::new();
    for (name, value) in fields {
        data.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    data.extend(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: text/plain\r\n\r\n",
            file.0
        )
        .as_bytes(),
    );
    data.extend_from_slice(file.1);
    data.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    client()
        .post(format!("{}{path}", signed.base))
        .header(COOKIE, &signed.cookie)
        .header(CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
        .body(data)
        .send()
        .await
        .unwrap()
}

async fn all_failed_rows_are_resubmitted_100000_of_them_or_none(db: TestDb) {
    let daemon =
        TestDaemon::spawn_in_process(&db, &[account("acme", "acme-pw"), account("other", "other-pw")], &[]).await;
    let base = format!("http://{}", daemon.api_addr().await);
    let acme = sign_in(&base, "acme", "acme-pw").await;

    // 100,000 rows, every one bad.
    let mut csv = String::from("ref,phone\n");
    for i in 0..100_000 {
        csv += &format!("r{i},bad{i}\n");
    }
    let id = acme.upload_job("big.csv", csv.as_bytes()).await;
    let page = acme.finished_within(&id, Duration::from_secs(600)).await;
    assert_eq!(summary_value(&page, "Failed"), "100000", "{}", &page[..3000.min(page.len())]);
    assert!(page.contains("id=\"resubmit-all\""), "the page offers every failed row");
    assert!(page.contains("Resubmit all 100000 failed rows"));

    // Every failed row, with the page's edits: two rows fixed, one left out.
    let form = [
        ("csrf", acme.csrf.as_str()),
        ("page", "0"),
        ("all", "1"),
        ("line0", "2"),
        ("keep0", "1"),
        ("c0_0", "r0"),
        ("c0_1", "+15555001000"),
        ("line1", "3"),
        ("keep1", "1"),
        ("c1_0", "r1"),
        ("c1_1", "+15555001001"),
        ("line2", "4"),
        ("c2_0", "r2"),
        ("c2_1", "bad2"),
    ];
    let other = sign_in(&base, "other", "other-pw").await;
    let theirs = other.post(&format!("/jobs/{id}/resubmit"), &[("csrf", other.csrf.as_str()), ("all", "1")]).await;
    assert_eq!(theirs.status().as_u16(), 404, "another account's job");
    let forged = acme.post(&format!("/jobs/{id}/resubmit"), &form[1..]).await;
    assert_eq!(forged.status().as_u16(), 403, "no token, no job");
    let resubmitted = acme.post(&format!("/jobs/{id}/resubmit"), &form).await;
    assert_eq!(resubmitted.status().as_u16(), 303, "{}", resubmitted.text().await.unwrap());
    let new = job_of(&resubmitted);
    // All of them again while that job is at work: refused, nothing queued twice.
    let again = acme.post(&format!("/jobs/{id}/resubmit"), &form).await;
    let again_status = again.status().as_u16();
    let again_text = again.text().await.unwrap();
    if again_status == 303 {
        panic!("a second resubmission of every row was queued while the first was at work");
    }
    assert_eq!(again_status, 409, "{again_text}");
    assert!(again_text.contains("still being processed"), "{again_text}");
    let new_page = acme.finished_within(&new, Duration::from_secs(600)).await;
    assert_eq!(summary_value(&new_page, "Rows"), "99999", "every failed row but the one left out");
    assert_eq!(summary_value(&new_page, "Created"), "2", "the page's edits applied");
    assert_eq!(summary_value(&new_page, "Failed"), "99997");
    assert!(new_page.contains(&format!("href=\"/jobs/{id}\" id=\"resubmitted-from\"")), "linked to the old job");
    let (_, old_page) = acme.page(&format!("/jobs/{id}")).await;
    assert!(old_page.contains(&format!("href=\"/jobs/{new}\" class=\"resubmitted-as\"")), "and back");
    let fixed = std::fs::read_dir(daemon.outbox("acme"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("big.fix-") && n.ends_with(".results.csv"));
    assert!(fixed.is_some(), "the new file is named after the old");

    // A job without failed rows: said so, and no job made.
    let clean = acme.upload_job("clean.csv", b"ref,phone\nc1,+15555001999\n").await;
    let clean_page = acme.finished(&clean).await;
    assert!(!clean_page.contains("id=\"resubmit-all\""));
    let before = acme.page("/jobs").await.1.matches("data-job-id=").count();
    let none = acme.post(&format!("/jobs/{clean}/resubmit"), &[("csrf", acme.csrf.as_str()), ("all", "1")]).await;
    assert_eq!(none.status().as_u16(), 422);
    assert!(none.text().await.unwrap().contains("no failed rows to resubmit"));
    assert_eq!(acme.page("/jobs").await.1.matches("data-job-id=").count(), before, "no job was made");
}

const PROFILE_V1: &str = "# Kundendatei <script>alert(1)</script>\nfiles = \"kunden.csv\"\n\n[columns]\n\"Kundennummer\" = \"ref\"\n\"Telefon\" = \"phone\"\n\n[constants]\n\"metadata.source\" = \"v1\"\n";
const PROFILE_V2: &str = "files = \"kunden.csv\"\n\n[columns]\n\"Kundennummer\" = \"ref\"\n\"Telefon\" = \"phone\"\n\n[constants]\n\"metadata.source\" = \"v2\"\n";

/// The SHA-256 a mapping profile's page shows.
async fn profile_sha(signed: &Signed, name: &str) -> String {
    let (status, page) = signed.page(&format!("/mappings/{name}")).await;
    assert_eq!(status, 200, "{page}");
    let at = page.find("<code class=\"hash\">").unwrap() + "<code class=\"hash\">".len();
    page[at..at + 64].to_owned()
}

/// The summary (JSON) in the outbox of job `id`, among files named `stem*`.
fn summary_of(daemon: &TestDaemon, stem: &str, id: &str) -> serde_json::Value {
    std::fs::read_dir(daemon.outbox("acme"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(stem) && n.ends_with(".json"))
        .filter_map(|n| {
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(daemon.outbox("acme").join(n)).ok()?).ok()
        })
        .find(|s| s["job_id"] == id)
        .unwrap_or_else(|| panic!("no summary of job {id}"))
}

async fn mapping_profiles_are_listed_viewed_and_uploaded_and_a_mapped_job_resubmits_with_its_profile(db: TestDb) {
    let daemon =
        TestDaemon::spawn_in_process(&db, &[account("acme", "acme-pw"), account("other", "other-pw")], &[]).await;
    let base = format!("http://{}", daemon.api_addr().await);
    let acme = sign_in(&base, "acme", "acme-pw").await;
    let (status, list) = acme.page("/mappings").await;
    assert_eq!(status, 200);
    assert!(list.contains("id=\"no-mappings\"") && list.contains("href=\"/mappings\""), "{list}");

    // Refused as the SFTP /mappings upload refuses it: the line and the key.
    let bad = "[columns]\n\"Mobile\" = \"telephone\"\n";
    let refused =
        multipart(&acme, "/mappings", &[("csrf", &acme.csrf), ("name", "kunden")], ("k.toml", bad.as_bytes())).await;
    assert_eq!(refused.status().as_u16(), 422);
    let page = refused.text().await.unwrap();
    let expected = intake::domain::mapping::Profile::parse("kunden", bad.as_bytes()).unwrap_err().to_string();
    assert!(page.contains("id=\"mapping-error\""), "{page}");
    assert!(page.contains("Mapping kunden refused: line 2, key `Mobile`"), "{page}");
    assert!(page.contains(&expected.replace('`', "&#96;")) || page.contains(&expected), "{expected} in {page}");
    let bad_name =
        multipart(&acme, "/mappings", &[("csrf", &acme.csrf), ("name", "../x")], ("k.toml", PROFILE_V1.as_bytes()))
            .await;
    assert_eq!(bad_name.status().as_u16(), 422);
    let no_token = multipart(&acme, "/mappings", &[("name", "kunden")], ("k.toml", PROFILE_V1.as_bytes())).await;
    assert_eq!(no_token.status().as_u16(), 403);
    assert!(acme.page("/mappings").await.1.contains("id=\"no-mappings\""), "nothing was stored");

    // Stored: the name from the file's when the field is empty; its text shown escaped.
    let stored =
        multipart(&acme, "/mappings", &[("csrf", &acme.csrf), ("name", "")], ("kunden.toml", PROFILE_V1.as_bytes()))
            .await;
    assert_eq!(stored.status().as_u16(), 303, "{}", stored.text().await.unwrap());
    assert_eq!(stored.headers()[LOCATION], "/mappings/kunden");
    let (_, view) = acme.page("/mappings/kunden").await;
    assert!(view.contains("id=\"mapping-text\""));
    assert!(!view.contains("<script>alert(1)"), "the text is escaped");
    assert!(view.contains("&#60;script&#62;alert(1)") || view.contains("&lt;script&gt;alert(1)"), "{view}");
    assert!(acme.page("/mappings").await.1.contains("href=\"/mappings/kunden\""));
    let v1 = profile_sha(&acme, "kunden").await;
    // Another account sees none of it.
    let other = sign_in(&base, "other", "other-pw").await;
    assert_eq!(other.page("/mappings/kunden").await.0, 404);
    assert!(!other.page("/mappings").await.1.contains("kunden"));
    assert_eq!(acme.page("/mappings/..%2Fetc").await.0, 404);

    // A mapped upload with two bad rows.
    let file = "Kundennummer,Telefon\nk1,+15555001234\nk2,bad\nk3,12\n";
    let id = acme.upload_job("kunden.csv", file.as_bytes()).await;
    let page = acme.finished(&id).await;
    assert_eq!(summary_value(&page, "Failed"), "2", "{page}");
    assert_eq!(summary_of(&daemon, "kunden.", &id)["mapping"]["sha256"], v1.as_str());
    // The profile changes after the job; its resubmission still reads as the job did.
    let v2 =
        multipart(&acme, "/mappings", &[("csrf", &acme.csrf), ("name", "kunden")], ("v2.toml", PROFILE_V2.as_bytes()))
            .await;
    assert_eq!(v2.status().as_u16(), 303);
    assert_ne!(profile_sha(&acme, "kunden").await, v1);

    // Every failed row, one fixed, as a dry run (into /validate).
    let dry = acme
        .post(
            &format!("/jobs/{id}/resubmit"),
            &[
                ("csrf", acme.csrf.as_str()),
                ("all", "1"),
                ("dry_run", "1"),
                ("line0", "3"),
                ("keep0", "1"),
                ("c0_0", "k2"),
                ("c0_1", "+15555001002"),
            ],
        )
        .await;
    assert_eq!(dry.status().as_u16(), 303, "{}", dry.text().await.unwrap());
    let dry_id = job_of(&dry);
    let dry_page = acme.finished(&dry_id).await;
    assert!(dry_page.contains("dry run"), "{dry_page}");
    assert!(dry_page.contains("status status-completed\">"), "{dry_page}");
    assert_eq!(summary_value(&dry_page, "Rows"), "2");
    assert_eq!(summary_value(&dry_page, "Failed"), "1");
    let dry_summary = summary_of(&daemon, "kunden.fix-", &dry_id);
    assert_eq!(dry_summary["dry_run"], true);
    assert_eq!(dry_summary["mapping"]["name"], "kunden");
    assert_eq!(dry_summary["mapping"]["sha256"], v1.as_str(), "read with the profile the job was read with");

    // The grid's page, both fixed: imported with the job's profile.
    let fixed = acme
        .post(
            &format!("/jobs/{id}/resubmit"),
            &[
                ("csrf", acme.csrf.as_str()),
                ("keep0", "1"),
                ("c0_0", "k2"),
                ("c0_1", "+15555001002"),
                ("keep1", "1"),
                ("c1_0", "k3"),
                ("c1_1", "+15555001003"),
            ],
        )
        .await;
    assert_eq!(fixed.status().as_u16(), 303);
    let fixed_id = job_of(&fixed);
    let fixed_page = acme.finished(&fixed_id).await;
    assert_eq!(summary_value(&fixed_page, "Created"), "2", "{fixed_page}");
    assert_eq!(summary_of(&daemon, "kunden.fix-", &fixed_id)["mapping"]["sha256"], v1.as_str());
}

async fn mapping_pages_in_a_real_browser(db: TestDb) {
    let backend = if db.url.starts_with("postgres") { "postgres" } else { "sqlite" };
    let daemon = TestDaemon::spawn_in_process(&db, &[account("acme", "acme-pw")], &[]).await;
    let base = format!("http://{}", daemon.api_addr().await);
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    browser.goto(&format!("{base}/login")).await.unwrap();
    css(&browser, "#username").await.send_keys("acme").await.unwrap();
    css(&browser, "#password").await.send_keys("acme-pw").await.unwrap();
    css(&browser, "form.login button[type=submit]").await.click().await.unwrap();
    wait_path(&browser, |p| p == "/jobs").await;

    css(&browser, "nav a[href='/mappings']").await.click().await.unwrap();
    wait_path(&browser, |p| p == "/mappings").await;
    css(&browser, "#no-mappings").await;
    axe(&browser, "mappings (empty)").await;

    // A refused profile: the reason on the page.
    let bad = daemon.dir.join("bad.toml");
    std::fs::write(&bad, "[columns]\n\"Mobile\" = \"telephone\"\n").unwrap();
    css(&browser, "#mapping-file").await.send_keys(&bad.display().to_string()).await.unwrap();
    css(&browser, "#upload-mapping").await.click().await.unwrap();
    let error = css(&browser, "#mapping-error").await.text().await.unwrap();
    assert!(error.contains("Mapping bad refused: line 2, key `Mobile`"), "{error}");
    axe(&browser, "mappings (refused)").await;
    screenshot(&browser, &format!("{backend}-mappings-refused")).await;

    let good = daemon.dir.join("kunden.toml");
    std::fs::write(&good, PROFILE_V1).unwrap();
    css(&browser, "#mapping-name").await.clear().await.unwrap();
    css(&browser, "#mapping-file").await.send_keys(&good.display().to_string()).await.unwrap();
    css(&browser, "#upload-mapping").await.click().await.unwrap();
    wait_path(&browser, |p| p == "/mappings/kunden").await;
    let text = css(&browser, "#mapping-text").await.text().await.unwrap();
    assert!(text.contains("<script>alert(1)</script>") && text.contains("\"Telefon\" = \"phone\""), "{text}");
    axe(&browser, "mapping").await;
    screenshot(&browser, &format!("{backend}-mapping")).await;
    browser.goto(&format!("{base}/mappings")).await.unwrap();
    assert_eq!(browser.find_all(fantoccini::Locator::Css("#mappings tbody tr")).await.unwrap().len(), 1);
    axe(&browser, "mappings").await;
    screenshot(&browser, &format!("{backend}-mappings")).await;
    browser.close().await.unwrap();
}

async fn a_file_dropped_on_the_upload_page_fills_its_input_in_a_real_browser(db: TestDb) {
    let backend = if db.url.starts_with("postgres") { "postgres" } else { "sqlite" };
    let daemon = TestDaemon::spawn_in_process(&db, &[account("acme", "acme-pw")], &[]).await;
    let base = format!("http://{}", daemon.api_addr().await);

    // Without JavaScript: a plain multipart form with a file input; the
    // script is a file of the console's own, under the same CSP.
    let acme = sign_in(&base, "acme", "acme-pw").await;
    let response = acme.get("/upload").await;
    let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    let form = response.text().await.unwrap();
    assert!(form.contains("enctype=\"multipart/form-data\"") && form.contains("type=\"file\" id=\"file\""));
    assert!(!form.contains("id=\"drop-zone\""), "the zone is the script's, not the page's");
    let script = form.split("<script src=\"").nth(2).expect("the drop script");
    let script = &script[..script.find('"').unwrap()];
    assert!(script.starts_with("/assets/drop-") && script.ends_with(".js"), "{script}");
    assert!(!form.contains("<script>"), "no inline script");
    let js = acme.get(script).await;
    assert_eq!(js.status().as_u16(), 200);
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));

    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    browser.goto(&format!("{base}/login")).await.unwrap();
    css(&browser, "#username").await.send_keys("acme").await.unwrap();
    css(&browser, "#password").await.send_keys("acme-pw").await.unwrap();
    css(&browser, "form.login button[type=submit]").await.click().await.unwrap();
    wait_path(&browser, |p| p == "/jobs").await;
    browser.goto(&format!("{base}/upload")).await.unwrap();
    css(&browser, "#drop-zone").await;
    axe(&browser, "upload with a drop zone").await;
    // A drop as a browser dispatches it: a DataTransfer holding a file.
    let dropped = browser
        .execute(
            "const dt = new DataTransfer();
             dt.items.add(new File(['ref,phone\\nd1,+15555001234\\nd2,nope\\n'], 'dropped.csv', {type: 'text/csv'}));
             const zone = document.getElementById('drop-zone');
             zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
             const over = zone.classList.contains('drop-over');
             zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
             const input = document.getElementById('file');
             return [over, input.files.length, input.files[0] && input.files[0].name,
                     document.getElementById('drop-zone-text').textContent];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(dropped, serde_json::json!([true, 1, "dropped.csv", "Chosen: dropped.csv"]), "{dropped}");
    screenshot(&browser, &format!("{backend}-upload-dropped")).await;
    css(&browser, "form[action='/upload'] button[type=submit]").await.click().await.unwrap();
    wait_path(&browser, |p| p.starts_with("/jobs/")).await;
    assert_eq!(wait_finished(&browser).await, "completed");
    let title = css(&browser, "h1").await.text().await.unwrap();
    assert!(title.contains("dropped.csv"), "{title}");
    let summary = css(&browser, "#summary").await.text().await.unwrap();
    assert!(summary.contains("Failed\n1") || summary.contains("Failed 1"), "{summary}");
    browser.close().await.unwrap();
}

/// Enrols `signed` in TOTP; its secret, the time of the code used and the recovery codes.
async fn enrol(signed: &Signed) -> (String, u64, Vec<String>) {
    let (_, page) = signed.page("/account/totp").await;
    let secret = page.split("id=\"totp-secret\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    let at = unix_now();
    let on = signed.post("/account/totp", &[("csrf", signed.csrf.as_str()), ("code", &totp_code(&secret, at))]).await;
    assert_eq!(on.status().as_u16(), 200);
    (secret, at, codes_of(&on.text().await.unwrap()))
}

fn codes_of(page: &str) -> Vec<String> {
    page.split("id=\"recovery-codes\">")
        .nth(1)
        .unwrap_or_default()
        .split("<li><code>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_owned())
        .collect()
}

async fn two_factor_can_be_turned_off_and_recovery_codes_renewed_but_not_by_operators(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[account("acme", "acme-pw")], &[]).await;
    let base = format!("http://{}", daemon.api_addr().await);
    let acme = sign_in(&base, "acme", "acme-pw").await;
    let (secret, at, old_codes) = enrol(&acme).await;
    assert_eq!(old_codes.len(), 10);
    let (_, page) = acme.page("/account/totp").await;
    assert!(page.contains("action=\"/account/totp/disable\"") && page.contains("action=\"/account/totp/recovery\""));

    // New recovery codes: a wrong password changes nothing; the right one
    // makes ten new ones and the old ones stop working.
    let csrf = acme.csrf.as_str();
    let wrong = acme.post("/account/totp/recovery", &[("csrf", csrf), ("password", "nope")]).await;
    assert_eq!(wrong.status().as_u16(), 422);
    let no_token = acme.post("/account/totp/recovery", &[("password", "acme-pw")]).await;
    assert_eq!(no_token.status().as_u16(), 403);
    let renewed = acme.post("/account/totp/recovery", &[("csrf", csrf), ("password", "acme-pw")]).await;
    assert_eq!(renewed.status().as_u16(), 200);
    let new_codes = codes_of(&renewed.text().await.unwrap());
    assert_eq!(new_codes.len(), 10);
    assert!(new_codes.iter().all(|c| !old_codes.contains(c)));
    assert_eq!(with_code(&base, old_codes[0].clone()).await, 401, "an old recovery code no longer signs in");
    assert_eq!(with_code(&base, new_codes[0].clone()).await, 303, "a new one does");

    // A code is taken once, whatever it is for.
    let next = totp_code(&secret, at + 30);
    assert_eq!(with_code(&base, next.clone()).await, 303);
    let replayed = acme.post("/account/totp/disable", &[("csrf", csrf), ("code", next.as_str())]).await;
    assert_eq!(replayed.status().as_u16(), 422, "a used code does not turn it off");
    let wrong = acme.post("/account/totp/disable", &[("csrf", csrf), ("password", "nope")]).await;
    assert_eq!(wrong.status().as_u16(), 422);
    assert!(wrong.text().await.unwrap().contains("still on"));
    let empty = acme.post("/account/totp/disable", &[("csrf", csrf)]).await;
    assert_eq!(empty.status().as_u16(), 422, "neither a password nor a code");
    assert_eq!(try_sign_in(&base, "/login", "acme", "acme-pw").await.status().as_u16(), 401, "still asked for a code");

    // Off with the password: the password alone signs in; the recovery codes are gone.
    let off = acme.post("/account/totp/disable", &[("csrf", csrf), ("password", "acme-pw")]).await;
    assert_eq!(off.status().as_u16(), 200);
    let off = off.text().await.unwrap();
    assert!(
        off.contains("id=\"totp-notice\"") && off.contains("id=\"totp-secret\""),
        "off, and a new enrolment offered"
    );
    assert_eq!(try_sign_in(&base, "/login", "acme", "acme-pw").await.status().as_u16(), 303);
    let again = acme.post("/account/totp/disable", &[("csrf", csrf), ("password", "acme-pw")]).await;
    assert_eq!(again.status().as_u16(), 409);
    // On again: a new secret; the old recovery codes stay dead.
    let (secret2, _, _) = enrol(&acme).await;
    assert_ne!(secret2, secret);
    assert_eq!(with_code(&base, new_codes[1].clone()).await, 401);

    // An operator may renew recovery codes but not turn the second factor off.
    let out = daemon.cli(&["admin", "add", "root", "--password-stdin"], "root-pw\n").await;
    assert!(out.status.success(), "{}", crate::support::describe(&out));
    let root = operator_sign_in(&base, "root", "root-pw").await;
    let (_, page) = root.page("/account/totp").await;
    assert!(!page.contains("action=\"/account/totp/disable\""), "no form to turn it off");
    let refused = root.post("/account/totp/disable", &[("csrf", root.csrf.as_str()), ("password", "root-pw")]).await;
    assert_eq!(refused.status().as_u16(), 403);
    assert_eq!(root.page("/admin").await.0, 200, "still on");
    let renewed = root.post("/account/totp/recovery", &[("csrf", root.csrf.as_str()), ("password", "root-pw")]).await;
    assert_eq!(renewed.status().as_u16(), 200);
    assert_eq!(codes_of(&renewed.text().await.unwrap()).len(), 10);
    let (_, audit) = root.page("/admin/audit").await;
    assert!(audit.contains("new recovery codes"), "an operator's renewal is audited: {audit}");
}

async fn resubmit_all_and_two_factor_settings_in_a_real_browser(db: TestDb) {
    let backend = if db.url.starts_with("postgres") { "postgres" } else { "sqlite" };
    let daemon = TestDaemon::spawn_in_process(&db, &[account("acme", "acme-pw")], &[]).await;
    let base = format!("http://{}", daemon.api_addr().await);
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    browser.goto(&format!("{base}/login")).await.unwrap();
    css(&browser, "#username").await.send_keys("acme").await.unwrap();
    css(&browser, "#password").await.send_keys("acme-pw").await.unwrap();
    css(&browser, "form.login button[type=submit]").await.click().await.unwrap();
    wait_path(&browser, |p| p == "/jobs").await;

    let file = daemon.dir.join("June.csv");
    std::fs::write(&file, "ref,phone\nj1,+15555001234\nj2,bad\nj3,12\nj4,nope\n").unwrap();
    browser.goto(&format!("{base}/upload")).await.unwrap();
    css(&browser, "#file").await.send_keys(&file.display().to_string()).await.unwrap();
    css(&browser, "form[action='/upload'] button[type=submit]").await.click().await.unwrap();
    wait_path(&browser, |p| p.starts_with("/jobs/")).await;
    assert_eq!(wait_finished(&browser).await, "completed");
    let first = browser.current_url().await.unwrap().path().to_owned();
    let all = css(&browser, "#resubmit-all").await;
    assert_eq!(all.text().await.unwrap(), "Resubmit all 3 failed rows");
    axe(&browser, "job with resubmit all").await;
    // One row fixed on the page, then every failed row resubmitted.
    let phone = css(&browser, "input[name='c0_1']").await;
    phone.clear().await.unwrap();
    phone.send_keys("+15555002001").await.unwrap();
    all.click().await.unwrap();
    wait_path(&browser, |p| p != first).await;
    assert_eq!(wait_finished(&browser).await, "completed");
    let summary = css(&browser, "#summary").await.text().await.unwrap();
    for want in ["Rows\n3", "Created\n1", "Failed\n2"] {
        assert!(summary.contains(want) || summary.contains(&want.replace('\n', " ")), "{want} in {summary}");
    }
    css(&browser, "#resubmitted-from").await;
    screenshot(&browser, &format!("{backend}-resubmitted-all")).await;

    // Two-factor on, then its settings: new recovery codes, turning it off.
    browser.goto(&format!("{base}/account/totp")).await.unwrap();
    let secret = css(&browser, "#totp-secret").await.text().await.unwrap();
    css(&browser, "#code").await.send_keys(&totp_code(&secret, unix_now())).await.unwrap();
    css(&browser, "form[action='/account/totp'] button").await.click().await.unwrap();
    css(&browser, "#recovery-codes").await;
    browser.goto(&format!("{base}/account/totp")).await.unwrap();
    css(&browser, "#totp-on").await;
    axe(&browser, "two-factor on").await;
    screenshot(&browser, &format!("{backend}-two-factor-on")).await;
    css(&browser, "#recovery-password").await.send_keys("acme-pw").await.unwrap();
    css(&browser, "#new-recovery-codes").await.click().await.unwrap();
    css(&browser, "#totp-notice").await;
    assert_eq!(browser.find_all(fantoccini::Locator::Css("#recovery-codes li")).await.unwrap().len(), 10);
    axe(&browser, "new recovery codes").await;
    browser.goto(&format!("{base}/account/totp")).await.unwrap();
    css(&browser, "#disable-password").await.send_keys("acme-pw").await.unwrap();
    css(&browser, "#disable-totp").await.click().await.unwrap();
    let notice = css(&browser, "#totp-notice").await.text().await.unwrap();
    assert!(notice.contains("off"), "{notice}");
    css(&browser, "#totp-secret").await;
    axe(&browser, "two-factor off").await;
    browser.close().await.unwrap();
}

crate::on_both_backends!(
    all_failed_rows_are_resubmitted_100000_of_them_or_none,
    mapping_profiles_are_listed_viewed_and_uploaded_and_a_mapped_job_resubmits_with_its_profile,
    mapping_pages_in_a_real_browser,
    a_file_dropped_on_the_upload_page_fills_its_input_in_a_real_browser,
    two_factor_can_be_turned_off_and_recovery_codes_renewed_but_not_by_operators,
    resubmit_all_and_two_factor_settings_in_a_real_browser,
);
