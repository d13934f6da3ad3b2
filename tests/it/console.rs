//! The web console through the real daemon (in process) and real clients:
//! reqwest for sign-in, sessions, CSRF, cross-account URLs, escaping and
//! paging; headless Chromium over WebDriver (chromedriver, fantoccini) for
//! the merchant's whole flow, with axe-core checking each screen.

use crate::support::{TestAccount, TestDaemon, TestDb};
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use std::time::{Duration, Instant};

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The value of the first hidden `csrf` input of a page.
pub(crate) fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap_or_else(|| panic!("no csrf input in {page}"));
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// `NAME=VALUE` of a `Set-Cookie` header named `name`.
fn cookie_of(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response.headers().get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        let pair = v.split(';').next()?;
        let (k, _) = pair.split_once('=')?;
        (k == name).then(|| (pair.to_owned(), v.to_owned()))
    })
}

/// A signed-in browser, as far as HTTP goes: its session cookie and token.
pub(crate) struct Signed {
    pub(crate) base: String,
    pub(crate) cookie: String,
    pub(crate) csrf: String,
}

impl Signed {
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        client().get(format!("{}{path}", self.base)).header(COOKIE, &self.cookie).send().await.unwrap()
    }

    pub(crate) async fn page(&self, path: &str) -> (u16, String) {
        let response = self.get(path).await;
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        client().post(format!("{}{path}", self.base)).header(COOKIE, &self.cookie).form(form).send().await.unwrap()
    }

    /// Uploads through the console's form (multipart, as a browser sends it).
    pub(crate) async fn upload(&self, folder: &str, name: &str, body: &[u8], csrf: Option<&str>) -> reqwest::Response {
        let boundary = "----intake-test-boundary-7d3f";
        let mut data = Vec::new();
        if let Some(csrf) = csrf {
            data.extend(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n").as_bytes(),
            );
        }
        data.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\n{folder}\r\n").as_bytes(),
        );
        data.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/csv\r\n\r\n"
            )
            .as_bytes(),
        );
        data.extend_from_slice(body);
        data.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
        client()
            .post(format!("{}/upload", self.base))
            .header(COOKIE, &self.cookie)
            .header(CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(data)
            .send()
            .await
            .unwrap()
    }

    /// Uploads and returns the new job's id.
    pub(crate) async fn upload_job(&self, name: &str, body: &[u8]) -> String {
        let response = self.upload("customers", name, body, Some(&self.csrf)).await;
        assert_eq!(response.status().as_u16(), 303, "{}", response.text().await.unwrap());
        job_of(&response)
    }

    /// Waits until the job's page shows it finished; its page.
    pub(crate) async fn finished(&self, id: &str) -> String {
        self.finished_within(id, Duration::from_secs(120)).await
    }

    /// Waits up to `limit` until the job's page shows it finished; its page.
    pub(crate) async fn finished_within(&self, id: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let (status, page) = self.page(&format!("/jobs/{id}")).await;
            assert_eq!(status, 200, "{page}");
            if ["completed", "rejected", "aborted"].iter().any(|s| page.contains(&format!("status status-{s}\">"))) {
                return page;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish: {page}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The job id a redirect to `/jobs/{id}` names.
pub(crate) fn job_of(response: &reqwest::Response) -> String {
    let location = response.headers().get(LOCATION).unwrap().to_str().unwrap();
    let id = location.strip_prefix("/jobs/").unwrap_or_else(|| panic!("{location}"));
    id.split('?').next().unwrap().to_owned()
}

/// The sign-in form's token and cookie.
async fn login_form(base: &str, path: &str) -> (String, String) {
    let response = client().get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (cookie, _) = cookie_of(&response, "intake_login").expect("a sign-in form cookie");
    let page = response.text().await.unwrap();
    assert!(page.contains("name=\"username\"") && page.contains("name=\"password\""), "{page}");
    (csrf_of(&page), cookie)
}

pub(crate) async fn try_sign_in(base: &str, path: &str, user: &str, password: &str) -> reqwest::Response {
    let (csrf, cookie) = login_form(base, path).await;
    client()
        .post(format!("{base}{path}"))
        .header(COOKIE, cookie)
        .form(&[("csrf", csrf.as_str()), ("username", user), ("password", password)])
        .send()
        .await
        .unwrap()
}

async fn sign_in_at(base: &str, path: &str, user: &str, password: &str) -> Signed {
    let response = try_sign_in(base, path, user, password).await;
    assert_eq!(response.status().as_u16(), 303, "sign-in of {user}: {:?}", response.text().await);
    let (cookie, full) = cookie_of(&response, "intake_session").expect("a session cookie");
    assert!(full.contains("HttpOnly") && full.contains("SameSite=Strict"), "{full}");
    let landing = response.headers().get(LOCATION).unwrap().to_str().unwrap().to_owned();
    let mut signed = Signed { base: base.to_owned(), cookie, csrf: String::new() };
    let (status, page) = signed.page(&landing).await;
    assert_eq!(status, 200, "{page}");
    signed.csrf = csrf_of(&page);
    signed
}

pub(crate) async fn sign_in(base: &str, user: &str, password: &str) -> Signed {
    sign_in_at(base, "/login", user, password).await
}

pub(crate) fn account(avid: &str, password: &'static str) -> TestAccount {
    TestAccount { password: Some(password), ..TestAccount::new(avid) }
}

async fn sessions_csrf_and_sign_out_hold_and_the_api_is_unchanged(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[account("acme", "acme-pw")], &[]).await;
    let base = format!("http://{}", daemon.api_addr().await);

    // Not signed in: to the sign-in page; the page is framed by nobody.
    let home = client().get(format!("{base}/jobs")).send().await.unwrap();
    assert_eq!(home.status().as_u16(), 303);
    assert_eq!(home.headers()[LOCATION], "/login");
    let login = client().get(format!("{base}/login")).send().await.unwrap();
    let h = login.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");

    // The sign-in form needs its token; a wrong password is refused.
    let forged = client()
        .post(format!("{base}/login"))
        .form(&[("username", "acme"), ("password", "acme-pw")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert!(cookie_of(&forged, "intake_session").is_none());
    assert_eq!(try_sign_in(&base, "/login", "acme", "wrong").await.status().as_u16(), 401);
    assert_eq!(try_sign_in(&base, "/login", "nobody", "acme-pw").await.status().as_u16(), 401);

    let tab = sign_in(&base, "acme", "acme-pw").await;
    let (status, page) = tab.page("/jobs").await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"jobs\""), "{page}");
    let css = page.split("href=\"/assets/console-").nth(1).unwrap().split('"').next().unwrap();
    let asset = client().get(format!("{base}/assets/console-{css}")).send().await.unwrap();
    assert_eq!(asset.status().as_u16(), 200);
    assert!(asset.headers()["cache-control"].to_str().unwrap().contains("max-age=31536000"));
    let htmx = client().get(format!("{base}/assets/htmx-2.0.11.min.js")).send().await.unwrap();
    assert_eq!(htmx.status().as_u16(), 200);
    assert!(htmx.text().await.unwrap().contains("htmx"));

    // A form without the session's token is refused, and changes nothing.
    assert_eq!(tab.post("/logout", &[]).await.status().as_u16(), 403);
    assert_eq!(tab.post("/logout", &[("csrf", "0".repeat(64).as_str())]).await.status().as_u16(), 403);
    assert_eq!(tab.page("/jobs").await.0, 200);
    let no_token = tab.upload("customers", "x.csv", b"ref,address\na,+15555001234\n", None).await;
    assert_eq!(no_token.status().as_u16(), 403);

    // Sign-out ends the session: the cookie, replayed, signs nobody in.
    let out = tab.post("/logout", &[("csrf", tab.csrf.as_str())]).await;
    assert_eq!(out.status().as_u16(), 303);
    let stolen = tab.get("/jobs").await;
    assert_eq!(stolen.status().as_u16(), 303, "a cookie after sign-out");

    // Sign-out everywhere ends the other browsers' sessions too.
    let a = sign_in(&base, "acme", "acme-pw").await;
    let b = sign_in(&base, "acme", "acme-pw").await;
    assert_eq!(a.post("/logout-everywhere", &[("csrf", a.csrf.as_str())]).await.status().as_u16(), 303);
    assert_eq!(b.get("/jobs").await.status().as_u16(), 303);

    // A new password (`intake user passwd`) ends sessions; the old one is refused.
    let c = sign_in(&base, "acme", "acme-pw").await;
    let out = daemon.cli(&["user", "passwd", "acme", "--password-stdin"], "new-pw\n").await;
    assert!(out.status.success(), "{}", crate::support::describe(&out));
    assert_eq!(c.get("/jobs").await.status().as_u16(), 303);
    assert_eq!(try_sign_in(&base, "/login", "acme", "acme-pw").await.status().as_u16(), 401);
    sign_in(&base, "acme", "new-pw").await;

    // The API answers as before, beside the console.
    let doc = client().get(format!("{base}/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(doc.status().as_u16(), 200);
    let missing = client().get(format!("{base}/no/such/route")).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert!(missing.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("application/problem+json"));
    let unauthorized = client().get(format!("{base}/api/v1/accounts/acme/jobs")).send().await.unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
}

async fn wrong_passwords_from_one_address_are_refused_as_sftp_logins_are(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process_with(
        &db,
        &[account("acme", "acme-pw")],
        &[],
        &[("sftp", "max_login_failures_per_source = 5\nlogin_penalty_secs = 600")],
    )
    .await;
    let base = format!("http://{}", daemon.api_addr().await);
    for _ in 0..5 {
        assert_eq!(try_sign_in(&base, "/login", "acme", "guess").await.status().as_u16(), 401);
    }
    // Refused now, even with the right password, and the operators' sign-in too.
    assert_eq!(try_sign_in(&base, "/login", "acme", "acme-pw").await.status().as_u16(), 429);
    assert_eq!(try_sign_in(&base, "/admin/login", "root", "x").await.status().as_u16(), 429);
    if db.url.starts_with("postgres") {
        // Counted where the SFTP server and the other nodes read.
        let store = db.store().await;
        assert_eq!(store.login_refused("127.0.0.1", 5, 600.0).await.unwrap(), Some(true));
    }
}

/// Cells a browser must show as text, never run.
const HOSTILE: &[&str] = &[
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(2)>",
    "javascript:alert(3)",
    "abc\u{202E}cba",
    "=HYPERLINK(\"http://evil.example\",\"x\")",
];

fn hostile_file(failed: usize) -> Vec<u8> {
    let mut csv = String::from("ref,phone,metadata.note\n");
    csv += "ok-1,+15555001234,fine\n";
    for i in 0..failed {
        let cell = HOSTILE[i % HOSTILE.len()].replace('"', "\"\"");
        let phone = if i % 2 == 0 { HOSTILE[i % HOSTILE.len()].replace('"', "\"\"") } else { format!("bad{i}") };
        csv += &format!("r{i},\"{phone}\",\"{cell}\"\n");
    }
    csv.into_bytes()
}

async fn job_pages_escape_hostile_cells_page_failed_rows_and_hide_other_accounts(db: TestDb) {
    let daemon =
        TestDaemon::spawn_in_process(&db, &[account("acme", "acme-pw"), account("other", "other-pw")], &[]).await;
    let base = format!("http://{}", daemon.api_addr().await);
    let acme = sign_in(&base, "acme", "acme-pw").await;
    let name = "<img src=x onerror=alert(9)>.csv";
    let id = acme.upload_job(name, &hostile_file(120)).await;
    let page = acme.finished(&id).await;

    for hook in [
        "id=\"summary\"",
        "id=\"errors-by-code\"",
        "id=\"failed-rows\"",
        "id=\"download-results\"",
        "id=\"download-failed\"",
    ] {
        assert!(page.contains(hook), "{hook} missing");
    }
    assert!(page.contains("<svg class=\"chart\""), "the chart is drawn on the server");
    assert!(page.contains("invalid_phone"));
    for raw in ["<script>alert", "<img src=x", "href=\"javascript:", "onerror=alert(2)>"] {
        assert!(!page.contains(raw), "{raw} reached the page unescaped");
    }
    assert!(page.contains("&#60;script&#62;alert(1)&#60;/script&#62;") || page.contains("&lt;script&gt;"), "{page}");
    assert!(page.contains("<bdi>"), "merchant text is isolated from the page's direction");
    // The list: newest first, a link whose text is the (escaped) file name.
    let (_, list) = acme.page("/jobs").await;
    assert!(list.contains(&format!("href=\"/jobs/{id}\"")));
    assert!(list.contains("&#60;img src=x onerror=alert(9)&#62;.csv") || list.contains("&lt;img"), "{list}");
    assert!(!list.contains("<img src=x"));

    // 120 failed rows: three pages of 50, the last with 20; past the end is the last.
    assert!(page.contains("page 1 of 3"), "{page}");
    let (_, last) = acme.page(&format!("/jobs/{id}?page=2")).await;
    assert!(last.contains("page 3 of 3"));
    assert_eq!(last.matches("<tr data-line=").count(), 20);
    assert!(last.contains("data-line=\"122\""), "the last failed row (line 122)");
    let (_, past) = acme.page(&format!("/jobs/{id}?page=999999")).await;
    assert!(past.contains("page 3 of 3"));
    assert_eq!(page.matches("<tr data-line=").count(), 50);

    // Downloads are the outbox's files as they are (CSV-injection protection kept).
    let results = acme.get(&format!("/jobs/{id}/results.csv")).await;
    assert_eq!(results.status().as_u16(), 200);
    assert!(results.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    let body = results.bytes().await.unwrap();
    let stem = "<img src=x onerror=alert(9)>";
    assert_eq!(body.as_ref(), std::fs::read(daemon.outbox("acme").join(format!("{stem}.results.csv"))).unwrap());
    let failed = acme.get(&format!("/jobs/{id}/failed.csv")).await.bytes().await.unwrap();
    assert_eq!(failed.as_ref(), std::fs::read(daemon.outbox("acme").join(format!("{stem}.failed.csv"))).unwrap());
    assert_eq!(acme.get(&format!("/jobs/{id}/upload.csv")).await.bytes().await.unwrap().as_ref(), hostile_file(120));

    // Another account: every URL with this job's id is a 404, and shows nothing of it.
    let other = sign_in(&base, "other", "other-pw").await;
    for path in ["", "/results.csv", "/failed.csv", "/upload.csv", "?page=1"] {
        let (status, body) = other.page(&format!("/jobs/{id}{path}")).await;
        assert_eq!(status, 404, "/jobs/{id}{path}");
        assert!(!body.contains("onerror") && !body.contains("invalid_phone"), "{body}");
    }
    let forged =
        other.post(&format!("/jobs/{id}/resubmit"), &[("csrf", &other.csrf), ("keep0", "1"), ("c0_0", "x")]).await;
    assert_eq!(forged.status().as_u16(), 404);
    let (_, others) = other.page("/jobs").await;
    assert!(!others.contains(&id));
    assert_eq!(other.page("/admin").await.0, 404, "a merchant never sees the operators' pages");
    assert_eq!(other.page("/jobs/not-a-uuid").await.0, 404);

    // Fix two rows and resubmit them: a new job, linked both ways.
    let fixes = [
        ("csrf", acme.csrf.as_str()),
        ("keep0", "1"),
        ("c0_0", "r0"),
        ("c0_1", "+15555001000"),
        ("c0_2", "<script>alert(1)</script>"),
        ("keep1", "1"),
        ("c1_0", "r1"),
        ("c1_1", "+15555001001"),
        ("c1_2", "x"),
        ("c2_0", "r2"),
        ("c2_1", "still bad"),
    ];
    let without_token = acme.post(&format!("/jobs/{id}/resubmit"), &fixes[1..]).await;
    assert_eq!(without_token.status().as_u16(), 403);
    let resubmitted = acme.post(&format!("/jobs/{id}/resubmit"), &fixes).await;
    assert_eq!(resubmitted.status().as_u16(), 303);
    let new = job_of(&resubmitted);
    let new_page = acme.finished(&new).await;
    assert!(new_page.contains(&format!("href=\"/jobs/{id}\" id=\"resubmitted-from\"")), "{new_page}");
    assert!(new_page.contains("<dt>Created</dt><dd>2</dd>"), "{new_page}");
    assert!(new_page.contains("<dt>Failed</dt><dd>0</dd>"), "{new_page}");
    let (_, old_page) = acme.page(&format!("/jobs/{id}")).await;
    assert!(old_page.contains(&format!("href=\"/jobs/{new}\" class=\"resubmitted-as\"")));
    // A second tab submitting the same fixes: another job, the rows unchanged by it.
    let again = acme.post(&format!("/jobs/{id}/resubmit"), &fixes).await;
    assert_eq!(again.status().as_u16(), 303);
    let again_page = acme.finished(&job_of(&again)).await;
    assert!(again_page.contains("<dt>Unchanged</dt><dd>2</dd>"), "{again_page}");
    // Rows edited into one ref: the second fails as a duplicate, as in any file.
    let dup = [
        ("csrf", acme.csrf.as_str()),
        ("keep2", "1"),
        ("c2_0", "d-1"),
        ("c2_1", "+15555001002"),
        ("keep3", "1"),
        ("c3_0", "d-1"),
        ("c3_1", "+15555001003"),
    ];
    let dup_page = acme.finished(&job_of(&acme.post(&format!("/jobs/{id}/resubmit"), &dup).await)).await;
    assert!(dup_page.contains("duplicate_ref") && dup_page.contains("<dt>Created</dt><dd>1</dd>"), "{dup_page}");
    // Nothing kept: nothing to submit.
    let empty = acme.post(&format!("/jobs/{id}/resubmit"), &[("csrf", acme.csrf.as_str()), ("c0_0", "x")]).await;
    assert_eq!(empty.status().as_u16(), 422);

    // A dry run of the upload form goes to /validate.
    let dry = acme.upload("validate", "dry.csv", b"ref,address\nd1,+15555001234\n", Some(&acme.csrf)).await;
    assert_eq!(dry.status().as_u16(), 303);
    let dry_page = acme.finished(&job_of(&dry)).await;
    assert!(dry_page.contains("dry run"), "{dry_page}");
    assert!(daemon.outbox("acme").join("dry.validation.json").is_file());
    let bad_name = acme.upload("customers", "notes.txt", b"x", Some(&acme.csrf)).await;
    assert_eq!(bad_name.status().as_u16(), 422);

    // The list's filters: by file name and by status.
    let (_, named) = acme.page("/jobs?name=ONERROR").await;
    assert!(named.contains(&id) && named.contains(&new), "a name filter ignores case");
    let (_, fixes_only) = acme.page("/jobs?name=.FIX-").await;
    assert!(fixes_only.contains(&new) && !fixes_only.contains(&format!("/jobs/{id}\"")));
    let (_, none) = acme.page("/jobs?status=rejected").await;
    assert!(!none.contains(&id));
    assert_eq!(acme.page("/jobs?status=bogus").await.0, 400);

    // A cell of 70,000 characters fails its row and comes back whole in the grid, as text.
    let long = format!("<b>{}", "x".repeat(70_000));
    let big = acme.upload_job("long.csv", format!("ref,phone\nlong-1,\"{long}\"\n").as_bytes()).await;
    let big_page = acme.finished(&big).await;
    assert!(big_page.contains("field_too_long"), "{}", &big_page[..2000]);
    assert!(big_page.contains(&format!("&#60;b&#62;{}", "x".repeat(70_000))) || big_page.contains("&lt;b&gt;xxxx"));
    let fixed = acme
        .post(
            &format!("/jobs/{big}/resubmit"),
            &[("csrf", acme.csrf.as_str()), ("keep0", "1"), ("c0_0", "long-1"), ("c0_1", &long)],
        )
        .await;
    assert_eq!(fixed.status().as_u16(), 303, "a page with a long cell can be resubmitted");
}

/// An operator's first sign-in: the password, then the two-factor enrolment
/// every operator must make before any operator page.
pub(crate) async fn operator_sign_in(base: &str, name: &str, password: &str) -> Signed {
    let response = try_sign_in(base, "/admin/login", name, password).await;
    assert_eq!(response.status().as_u16(), 303);
    let (cookie, _) = cookie_of(&response, "intake_session").expect("a session cookie");
    let mut signed = Signed { base: base.to_owned(), cookie, csrf: String::new() };
    let admin = signed.get("/admin").await;
    assert_eq!(admin.status().as_u16(), 303);
    assert_eq!(admin.headers()[LOCATION], "/account/totp", "an operator without a second factor enrols first");
    let (_, page) = signed.page("/account/totp").await;
    signed.csrf = csrf_of(&page);
    let secret = page.split("id=\"totp-secret\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    let code = totp_code(&secret, unix_now());
    let on = signed.post("/account/totp", &[("csrf", signed.csrf.as_str()), ("code", code.as_str())]).await;
    assert_eq!(on.status().as_u16(), 200);
    assert_eq!(signed.page("/admin").await.0, 200);
    signed
}

async fn operators_see_every_account_and_their_actions_are_audited(db: TestDb) {
    let daemon =
        TestDaemon::spawn_in_process(&db, &[account("acme", "acme-pw"), account("other", "other-pw")], &[]).await;
    let base = format!("http://{}", daemon.api_addr().await);
    let acme = sign_in(&base, "acme", "acme-pw").await;
    let id = acme.upload_job("a.csv", b"ref,address\na1,+15555001234\n").await;
    acme.finished(&id).await;
    let other = sign_in(&base, "other", "other-pw").await;
    let other_id = other.upload_job("b.csv", b"ref,address\nb1,+15555001234\n").await;
    other.finished(&other_id).await;

    let out = daemon.cli(&["admin", "add", "root", "--password-stdin"], "root-pw\n").await;
    assert!(out.status.success(), "{}", crate::support::describe(&out));
    // An SFTP user's password is no operator's, and an operator is no merchant.
    assert_eq!(try_sign_in(&base, "/admin/login", "acme", "acme-pw").await.status().as_u16(), 401);
    assert_eq!(try_sign_in(&base, "/login", "root", "root-pw").await.status().as_u16(), 401);
    let root = operator_sign_in(&base, "root", "root-pw").await;
    let (status, all) = root.page("/admin").await;
    assert_eq!(status, 200);
    assert!(all.contains(&id) && all.contains(&other_id), "{all}");
    let (_, completed) = root.page("/admin?status=completed").await;
    assert!(completed.contains(&id));
    let (_, aborted) = root.page("/admin?status=aborted").await;
    assert!(!aborted.contains(&id));
    // Running longer than N minutes: only jobs started and not over.
    let (status, stuck) = root.page("/admin?longer_than=0").await;
    assert_eq!(status, 200);
    assert!(stuck.contains("value=\"0\"") && !stuck.contains(&id) && !stuck.contains(&other_id), "{stuck}");
    assert_eq!(root.page("/admin?longer_than=soon").await.0, 400);
    let (status, detail) = root.page(&format!("/admin/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert!(detail.contains("id=\"summary\""));
    assert!(!detail.contains("id=\"retry\""), "only an aborted job offers a retry");
    let refused = root.post(&format!("/admin/jobs/{id}/retry"), &[("csrf", root.csrf.as_str())]).await;
    assert_eq!(refused.status().as_u16(), 409);
    let forged = root.post(&format!("/admin/jobs/{id}/retry"), &[]).await;
    assert_eq!(forged.status().as_u16(), 403);
    assert_eq!(root.get("/jobs").await.status().as_u16(), 303, "an operator's session is no merchant's");

    // An aborted job (made so in the database: aborting one for real takes a
    // fault) is retried from its archived upload, as `intake jobs retry` does.
    let abort = "UPDATE jobs SET status = 'aborted' WHERE job_id = $1";
    if db.url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::query(abort).bind(&other_id).execute(&pool).await.unwrap();
    } else {
        let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        sqlx::query(abort).bind(&other_id).execute(&pool).await.unwrap();
    }
    let (_, detail) = root.page(&format!("/admin/jobs/{other_id}")).await;
    assert!(detail.contains("id=\"retry\""), "{detail}");
    let retried = root.post(&format!("/admin/jobs/{other_id}/retry"), &[("csrf", root.csrf.as_str())]).await;
    assert_eq!(retried.status().as_u16(), 303);
    let location = retried.headers()[LOCATION].to_str().unwrap().to_owned();
    let new_id = location.strip_prefix("/admin/jobs/").unwrap().split('?').next().unwrap().to_owned();
    assert_ne!(new_id, other_id);
    // The merchant sees the retry finish: the same rows, unchanged now.
    let page = other.finished(&new_id).await;
    assert!(page.contains("<dt>Unchanged</dt><dd>1</dd>"), "{page}");

    let (_, audit) = root.page("/admin/audit").await;
    assert!(audit.contains("<td>root</td><td>sign-in</td>"), "{audit}");
    assert!(
        audit.contains(&format!(
            "<td>root</td><td>retry</td><td><bdi>job {other_id} (other) as job {new_id}</bdi></td>"
        )),
        "{audit}"
    );
    assert!(audit.contains("127.0.0.1"));
}

/// `chromedriver` on a free port in a process group of its own: dropped
/// (a test done or failed), the group is killed, the browsers it started too.
pub(crate) struct Chromedriver {
    child: tokio::process::Child,
    url: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32)) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Chromedriver {
    pub(crate) async fn start() -> Chromedriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("chromedriver is installed (Debian's chromium-driver; .ci/run installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client().get(format!("{url}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Chromedriver { child, url }
    }

    pub(crate) async fn browser(&self) -> fantoccini::Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
            }),
        );
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a headless Chromium session")
    }
}

fn screenshots() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) async fn screenshot(browser: &fantoccini::Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// axe-core (npm, tests/clients) on the page: no serious or critical violation.
pub(crate) async fn axe(browser: &fantoccini::Client, screen: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/node_modules/axe-core/axe.min.js");
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (npm ci --prefix tests/clients installs axe-core)", path.display()));
    browser.execute(&source, vec![]).await.unwrap();
    let found = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document).then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
               nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))))
             .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e)}]));",
            vec![],
        )
        .await
        .unwrap();
    let serious: Vec<&serde_json::Value> = found
        .as_array()
        .expect("a list of violations")
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    assert!(serious.is_empty(), "axe-core on {screen}: {serious:#?}");
}

/// The element `selector` finds, waiting for it up to 30 s (a click's page
/// load may still be on its way on a loaded machine).
pub(crate) async fn css(browser: &fantoccini::Client, selector: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(fantoccini::Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
}

/// Waits until the job page in the browser (which refreshes itself) shows
/// the job finished; its status.
pub(crate) async fn wait_finished(browser: &fantoccini::Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(status) = browser.find(fantoccini::Locator::Css("#summary dd.status")).await {
            if let Ok(text) = status.text().await {
                if ["completed", "rejected", "aborted"].contains(&text.trim()) {
                    return text.trim().to_owned();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the job did not finish in the browser: {}",
            browser.source().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the browser is at a path that `want` accepts (a click's
/// navigation may end after the click returns); the path.
pub(crate) async fn wait_path(browser: &fantoccini::Client, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let path = browser.current_url().await.unwrap().path().to_owned();
        if want(&path) {
            return path;
        }
        assert!(Instant::now() < deadline, "the browser stayed at {path}: {}", browser.source().await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_merchant_uploads_fixes_two_rows_and_resubmits_in_a_real_browser(db: TestDb) {
    let backend = if db.url.starts_with("postgres") { "postgres" } else { "sqlite" };
    let daemon = TestDaemon::spawn_in_process(&db, &[account("acme", "acme-pw")], &[]).await;
    let base = format!("http://{}", daemon.api_addr().await);
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;

    browser.goto(&format!("{base}/")).await.unwrap();
    assert!(browser.current_url().await.unwrap().path().ends_with("/login"));
    axe(&browser, "sign-in").await;
    screenshot(&browser, &format!("{backend}-1-sign-in")).await;
    css(&browser, "#username").await.send_keys("acme").await.unwrap();
    css(&browser, "#password").await.send_keys("acme-pw").await.unwrap();
    css(&browser, "form.login button[type=submit]").await.click().await.unwrap();
    wait_path(&browser, |p| p == "/jobs").await;

    // Upload a file with two bad phone numbers.
    let file = daemon.dir.join("May.csv");
    std::fs::write(
        &file,
        "ref,phone,metadata.note\nb1,+15555001234,ok\nb2,+15555001235,ok\nb3,not a phone,fix me\nb4,12,fix me too\n",
    )
    .unwrap();
    browser.goto(&format!("{base}/upload")).await.unwrap();
    axe(&browser, "upload").await;
    screenshot(&browser, &format!("{backend}-2-upload")).await;
    css(&browser, "#file").await.send_keys(&file.display().to_string()).await.unwrap();
    css(&browser, "form[action='/upload'] button[type=submit]").await.click().await.unwrap();
    wait_path(&browser, |p| p.starts_with("/jobs/")).await;
    assert_eq!(wait_finished(&browser).await, "completed");
    let first_job = browser.current_url().await.unwrap().path().to_owned();
    assert_eq!(browser.find_all(fantoccini::Locator::Css("#failed-rows tbody tr")).await.unwrap().len(), 2);
    assert!(css(&browser, "#errors-by-code").await.text().await.unwrap().contains("invalid_phone"));
    css(&browser, "#download-results").await;
    css(&browser, "#download-failed").await;
    axe(&browser, "job").await;
    browser.set_window_size(1280, 1700).await.unwrap();
    screenshot(&browser, &format!("{backend}-3-job")).await;
    browser.set_window_size(1280, 1000).await.unwrap();

    // The jobs list has it, by its file name.
    browser.goto(&format!("{base}/jobs")).await.unwrap();
    let link = css(&browser, "#jobs tbody tr a").await;
    assert_eq!(link.text().await.unwrap(), "May.csv");
    axe(&browser, "jobs").await;
    screenshot(&browser, &format!("{backend}-4-jobs")).await;
    link.click().await.unwrap();
    wait_path(&browser, |p| p == first_job).await;

    // Fix the two rows in the grid and resubmit them.
    let phone = css(&browser, "input[name='c0_1']").await;
    phone.clear().await.unwrap();
    phone.send_keys("+15555002001").await.unwrap();
    let phone = css(&browser, "input[name='c1_1']").await;
    phone.clear().await.unwrap();
    phone.send_keys("+15555002002").await.unwrap();
    css(&browser, "#resubmit").await.click().await.unwrap();
    wait_path(&browser, |p| p != first_job).await;
    assert_eq!(wait_finished(&browser).await, "completed");
    let from = css(&browser, "#resubmitted-from").await;
    assert_eq!(from.attr("href").await.unwrap().as_deref(), Some(first_job.as_str()));
    let summary = css(&browser, "#summary").await.text().await.unwrap();
    assert!(summary.contains("Created\n2") || summary.contains("Created 2"), "{summary}");
    assert!(summary.contains("Failed\n0") || summary.contains("Failed 0"), "{summary}");
    axe(&browser, "resubmitted job").await;
    screenshot(&browser, &format!("{backend}-5-resubmitted")).await;

    // A phone's width.
    browser.set_window_size(390, 844).await.unwrap();
    browser.goto(&format!("{base}{first_job}")).await.unwrap();
    css(&browser, "a.resubmitted-as").await;
    screenshot(&browser, &format!("{backend}-6-job-phone")).await;
    browser.set_window_size(1280, 1000).await.unwrap();

    // Two-factor enrolment: a QR code drawn on the server.
    browser.goto(&format!("{base}/account/totp")).await.unwrap();
    css(&browser, "svg.qr").await;
    axe(&browser, "two-factor").await;
    screenshot(&browser, &format!("{backend}-8-two-factor")).await;

    // An operator signs in apart and sees the account's jobs.
    let out = daemon.cli(&["admin", "add", "root", "--password-stdin"], "root-pw\n").await;
    assert!(out.status.success(), "{}", crate::support::describe(&out));
    css(&browser, "form[action='/logout'] button").await.click().await.unwrap();
    wait_path(&browser, |p| p == "/login").await;
    browser.goto(&format!("{base}/admin/login")).await.unwrap();
    css(&browser, "#username").await.send_keys("root").await.unwrap();
    css(&browser, "#password").await.send_keys("root-pw").await.unwrap();
    css(&browser, "form.login button[type=submit]").await.click().await.unwrap();
    // Operators enrol a second factor first.
    wait_path(&browser, |p| p == "/account/totp").await;
    let secret = css(&browser, "#totp-secret").await.text().await.unwrap();
    css(&browser, "#code").await.send_keys(&totp_code(&secret, unix_now())).await.unwrap();
    css(&browser, "form[action='/account/totp'] button").await.click().await.unwrap();
    css(&browser, "#recovery-codes").await;
    css(&browser, "#continue").await.click().await.unwrap();
    wait_path(&browser, |p| p == "/admin").await;
    assert_eq!(browser.find_all(fantoccini::Locator::Css("#admin-jobs tbody tr")).await.unwrap().len(), 2);
    axe(&browser, "admin").await;
    screenshot(&browser, &format!("{backend}-7-admin")).await;
    browser.goto(&format!("{base}/admin/audit")).await.unwrap();
    axe(&browser, "audit").await;
    browser.close().await.unwrap();
}

async fn under_tls_the_session_cookie_is_secure(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let tls =
        format!("tls_cert = {:?}\ntls_key = {:?}", cert_path.display().to_string(), key_path.display().to_string());
    let daemon = TestDaemon::spawn_in_process_with(&db, &[account("acme", "acme-pw")], &[], &[("api", &tls)]).await;
    let addr: std::net::SocketAddr = daemon.api_addr().await.parse().unwrap();
    let https = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", addr.port());
    let form = https.get(format!("{base}/login")).send().await.unwrap();
    let (login_cookie, full) = cookie_of(&form, "intake_login").unwrap();
    assert!(full.contains("Secure"), "{full}");
    let page = form.text().await.unwrap();
    let signed = https
        .post(format!("{base}/login"))
        .header(COOKIE, login_cookie)
        .form(&[("csrf", csrf_of(&page).as_str()), ("username", "acme"), ("password", "acme-pw")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status().as_u16(), 303);
    let (session, full) = cookie_of(&signed, "intake_session").unwrap();
    assert!(full.contains("Secure") && full.contains("HttpOnly") && full.contains("SameSite=Strict"), "{full}");
    let jobs = https.get(format!("{base}/jobs")).header(COOKIE, session).send().await.unwrap();
    assert_eq!(jobs.status().as_u16(), 200);
}

/// The current TOTP code of a base32 secret (RFC 6238, SHA-1, 6 digits).
pub(crate) fn totp_code(secret_b32: &str, at: u64) -> String {
    use hmac::Mac;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut key, mut buffer, mut bits) = (Vec::new(), 0u32, 0);
    for c in secret_b32.bytes() {
        buffer = (buffer << 5) | alphabet.iter().position(|a| *a == c).unwrap() as u32;
        bits += 5;
        if bits >= 8 {
            key.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    let mut mac = <hmac::Hmac<sha1::Sha1> as Mac>::new_from_slice(&key).unwrap();
    mac.update(&(at / 30).to_be_bytes());
    let h = mac.finalize().into_bytes();
    let o = (h[19] & 0xf) as usize;
    let v = u32::from_be_bytes([h[o] & 0x7f, h[o + 1], h[o + 2], h[o + 3]]) % 1_000_000;
    format!("{v:06}")
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A sign-in with a second factor: its status.
pub(crate) async fn with_code(base: &str, totp: String) -> u16 {
    let (csrf, cookie) = login_form(base, "/login").await;
    client()
        .post(format!("{base}/login"))
        .header(COOKIE, cookie)
        .form(&[("csrf", csrf.as_str()), ("username", "acme"), ("password", "acme-pw"), ("totp", totp.as_str())])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn two_factor_sign_in_takes_a_code_or_a_recovery_code_once(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[account("acme", "acme-pw")], &[]).await;
    let base = format!("http://{}", daemon.api_addr().await);
    let acme = sign_in(&base, "acme", "acme-pw").await;
    let (status, page) = acme.page("/account/totp").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<svg class=\"qr\"") && page.contains("<path fill=\"#000000\" d=\"M"),
        "a QR code drawn on the server"
    );
    let secret = page.split("id=\"totp-secret\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    let wrong = acme.post("/account/totp", &[("csrf", acme.csrf.as_str()), ("code", "000000")]).await;
    assert_eq!(wrong.status().as_u16(), 422);
    let no_token = acme.post("/account/totp", &[("code", &totp_code(&secret, unix_now()))]).await;
    assert_eq!(no_token.status().as_u16(), 403);
    let enrolled_at = unix_now();
    let on =
        acme.post("/account/totp", &[("csrf", acme.csrf.as_str()), ("code", &totp_code(&secret, enrolled_at))]).await;
    assert_eq!(on.status().as_u16(), 200);
    let on = on.text().await.unwrap();
    let codes: Vec<String> = on.split("<li><code>").skip(1).map(|s| s.split('<').next().unwrap().to_owned()).collect();
    assert_eq!(codes.len(), 10, "{on}");

    // The password alone is no longer enough: the form asks for the code.
    let asked = try_sign_in(&base, "/login", "acme", "acme-pw").await;
    assert_eq!(asked.status().as_u16(), 401);
    assert!(cookie_of(&asked, "intake_session").is_none());
    assert!(asked.text().await.unwrap().contains("name=\"totp\""));
    assert_eq!(with_code(&base, "123456".into()).await, 401);
    // The enrolment's code was taken; the next step's signs in, once.
    assert_eq!(with_code(&base, totp_code(&secret, enrolled_at)).await, 401, "the enrolment's code is used");
    let next = totp_code(&secret, enrolled_at + 30);
    assert_eq!(with_code(&base, next.clone()).await, 303);
    assert_eq!(with_code(&base, next).await, 401, "a code signs in once");
    assert_eq!(with_code(&base, codes[0].clone()).await, 303, "a recovery code signs in");
    assert_eq!(with_code(&base, codes[0].clone()).await, 401, "once");
    assert_eq!(with_code(&base, codes[1].clone()).await, 303);
}

crate::on_both_backends!(
    sessions_csrf_and_sign_out_hold_and_the_api_is_unchanged,
    wrong_passwords_from_one_address_are_refused_as_sftp_logins_are,
    job_pages_escape_hostile_cells_page_failed_rows_and_hide_other_accounts,
    operators_see_every_account_and_their_actions_are_audited,
    a_merchant_uploads_fixes_two_rows_and_resubmits_in_a_real_browser,
    under_tls_the_session_cookie_is_secure,
    two_factor_sign_in_takes_a_code_or_a_recovery_code_once,
);
