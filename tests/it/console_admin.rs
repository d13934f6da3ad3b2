//! The operators' account, user, token, node and webhook screens through the
//! real daemon (in process): each action a plain form, CSRF-checked and
//! audited; "disabled" refused by every way in (SFTP, API tokens, console
//! sign-in and sessions) and undone by enabling; other accounts' users and
//! tokens 404; a merchant sees none of it. Then one headless-Chromium pass
//! with axe-core over the new screens.

use crate::console::{
    account, axe, client, csrf_of, css, operator_sign_in, screenshot, sign_in, totp_code, try_sign_in, unix_now,
    wait_path, Chromedriver,
};
use crate::support::{describe, TestDaemon, TestDb};
use reqwest::header::LOCATION;

const ADMIN_PAGES: &[&str] =
    &["/admin/accounts", "/admin/accounts/acme", "/admin/accounts/nope", "/admin/nodes", "/admin/webhooks"];
const ADMIN_FORMS: &[&str] = &[
    "/admin/accounts",
    "/admin/accounts/acme/disable",
    "/admin/accounts/acme/enable",
    "/admin/accounts/acme/users",
    "/admin/accounts/acme/users/disable",
    "/admin/accounts/acme/users/enable",
    "/admin/accounts/acme/users/password",
    "/admin/accounts/acme/tokens/revoke",
];

/// A token for `user` from `intake token create`: (id, value).
async fn token(daemon: &TestDaemon, user: &str) -> (String, String) {
    let out = daemon.cli(&["token", "create", user], "").await;
    assert!(out.status.success(), "token create: {}", describe(&out));
    let value = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim().to_owned();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let id = stderr.split_whitespace().find(|w| w.starts_with("tok_")).expect("a token id").to_owned();
    (id, value)
}

/// The API's answer to a token: 404 (known, no such customer) or 401.
async fn api_status(base: &str, avid: &str, token: &str) -> u16 {
    let url = format!("{base}/api/v1/accounts/{avid}/customers?ref=none");
    client().get(url).bearer_auth(token).send().await.unwrap().status().as_u16()
}

/// OpenSSH with the user's key, and the russh client with its password.
async fn sftp_ok(daemon: &TestDaemon, user: &str, password: &str) -> bool {
    let key = daemon.sftp(user, "ls /\n").await.status.success();
    let addr = format!("127.0.0.1:{}", daemon.port()).parse().unwrap();
    let with_password = crate::sftp::login_password(addr, user, password).await.is_ok();
    assert_eq!(key, with_password, "{user}: SFTP with a key and with a password");
    key
}

/// Whether `user` gets in everywhere (true) or nowhere (false); asserts it is one or the other.
async fn gets_in(daemon: &TestDaemon, base: &str, user: &str, password: &str, token: &str) -> bool {
    let console = try_sign_in(base, "/login", user, password).await.status().as_u16();
    let api = api_status(base, user, token).await;
    let sftp = sftp_ok(daemon, user, password).await;
    match (console, api, sftp) {
        (303, 404, true) => true,
        (401, 401, false) => false,
        other => panic!("{user}: console, API, SFTP = {other:?}"),
    }
}

async fn operators_manage_accounts_users_and_tokens_and_disabled_holds_everywhere(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process_with(
        &db,
        &[account("acme", "acme-pw"), account("other", "other-pw")],
        &[],
        &[("sftp", "max_login_failures_per_source = 1000")],
    )
    .await;
    let base = format!("http://{}", daemon.api_addr().await);
    let out = daemon.cli(&["admin", "add", "root", "--password-stdin"], "root-pw\n").await;
    assert!(out.status.success(), "{}", describe(&out));
    let root = operator_sign_in(&base, "root", "root-pw").await;
    let acme = sign_in(&base, "acme", "acme-pw").await;

    // A merchant's session reaches no operator page or form.
    for path in ADMIN_PAGES {
        assert_eq!(acme.get(path).await.status().as_u16(), 404, "GET {path} as a merchant");
    }
    for path in ADMIN_FORMS {
        let answer = acme.post(path, &[("csrf", acme.csrf.as_str()), ("username", "acme"), ("avid", "x")]).await;
        assert_eq!(answer.status().as_u16(), 404, "POST {path} as a merchant");
    }

    let (status, list) = root.page("/admin/accounts").await;
    assert_eq!(status, 200);
    assert!(list.contains("data-avid=\"acme\"") && list.contains("data-avid=\"other\""), "{list}");
    for nav in ["/admin/accounts", "/admin/nodes", "/admin/webhooks", "/admin/audit"] {
        assert!(list.contains(&format!("<a href=\"{nav}\">")), "nav link {nav}");
    }

    // Forged forms (no token) change nothing.
    for path in ADMIN_FORMS {
        let forged = root.post(path, &[("username", "acme"), ("avid", "forged"), ("password", "x")]).await;
        assert_eq!(forged.status().as_u16(), 403, "POST {path} without the CSRF token");
    }
    assert_eq!(root.get("/admin/accounts/forged").await.status().as_u16(), 404);

    // An account, validated as `intake account add` does.
    let csrf = root.csrf.as_str();
    let bad = root.post("/admin/accounts", &[("csrf", csrf), ("avid", "../etc")]).await;
    assert_eq!(bad.status().as_u16(), 422);
    assert!(bad.text().await.unwrap().contains("invalid account id"));
    let made = root.post("/admin/accounts", &[("csrf", csrf), ("avid", "newco")]).await;
    assert_eq!(made.status().as_u16(), 303);
    assert_eq!(made.headers()[LOCATION], "/admin/accounts/newco?notice=account-created");
    assert!(daemon.customers("newco").is_dir(), "its folders are made");
    let again = root.post("/admin/accounts", &[("csrf", csrf), ("avid", "newco")]).await;
    assert_eq!(again.status().as_u16(), 409);

    // A user with a password and the CLI's default scopes; it signs in.
    let form = [("csrf", csrf), ("username", "newco-ops"), ("password", "newco-pw")];
    assert_eq!(root.post("/admin/accounts/newco/users", &form).await.status().as_u16(), 303);
    let (_, page) = root.page("/admin/accounts/newco").await;
    assert!(page.contains("data-username=\"newco-ops\""), "{page}");
    assert!(page.contains("customers:create customers:update"), "{page}");
    sign_in(&base, "newco-ops", "newco-pw").await;
    let clash = [("csrf", csrf), ("username", "acme"), ("password", "x")];
    assert_eq!(root.post("/admin/accounts/newco/users", &clash).await.status().as_u16(), 409);
    let nowhere = [("csrf", csrf), ("username", "ghost"), ("password", "x")];
    assert_eq!(root.post("/admin/accounts/nope/users", &nowhere).await.status().as_u16(), 404);

    // Another account's user, an unknown user or account: 404, nothing done.
    for (path, user) in [
        ("/admin/accounts/newco/users/disable", "acme"),
        ("/admin/accounts/acme/users/disable", "ghost"),
        ("/admin/accounts/nope/users/disable", "acme"),
        ("/admin/accounts/newco/users/password", "acme"),
    ] {
        let answer = root.post(path, &[("csrf", csrf), ("username", user), ("password", "stolen")]).await;
        assert_eq!(answer.status().as_u16(), 404, "{path} {user}");
    }
    assert_eq!(root.post("/admin/accounts/nope/disable", &[("csrf", csrf)]).await.status().as_u16(), 404);

    // Disabling a user: refused everywhere, its session ended; enabled: back.
    let (token_id, token_value) = token(&daemon, "acme").await;
    assert!(gets_in(&daemon, &base, "acme", "acme-pw", &token_value).await);
    assert_eq!(acme.page("/jobs").await.0, 200);
    let user = [("csrf", csrf), ("username", "acme")];
    assert_eq!(root.post("/admin/accounts/acme/users/disable", &user).await.status().as_u16(), 303);
    let (_, page) = root.page("/admin/accounts/acme").await;
    assert!(page.contains("status-aborted\">disabled"), "{page}");
    assert_eq!(acme.get("/jobs").await.status().as_u16(), 303, "the disabled user's session ended");
    assert!(!gets_in(&daemon, &base, "acme", "acme-pw", &token_value).await);
    assert!(sftp_ok(&daemon, "other", "other-pw").await, "other accounts are untouched");
    assert_eq!(root.post("/admin/accounts/acme/users/enable", &user).await.status().as_u16(), 303);
    assert!(gets_in(&daemon, &base, "acme", "acme-pw", &token_value).await);

    // A session open before the user is disabled opens nothing more once the
    // server has looked again (every 5 s at most).
    let addr = format!("127.0.0.1:{}", daemon.port()).parse().unwrap();
    let conn = crate::sftp::login_password(addr, "acme", "acme-pw").await.unwrap();
    let open = crate::sftp::open_sftp(&conn).await.unwrap();
    drop(open.create("/customers/before.csv").await.expect("an open while the user is enabled"));
    assert_eq!(root.post("/admin/accounts/acme/users/disable", &user).await.status().as_u16(), 303);
    tokio::time::sleep(std::time::Duration::from_millis(5_500)).await;
    let refused = open.create("/customers/after.csv").await;
    assert!(refused.is_err(), "a disabled user's open session may not upload");
    assert!(open.read_dir("/").await.is_ok(), "it may still look around until it leaves");
    drop(open);
    assert_eq!(root.post("/admin/accounts/acme/users/enable", &user).await.status().as_u16(), 303);

    // Disabling the account: the same for its users, and back.
    let acme = sign_in(&base, "acme", "acme-pw").await;
    assert_eq!(root.post("/admin/accounts/acme/disable", &[("csrf", csrf)]).await.status().as_u16(), 303);
    let (_, list) = root.page("/admin/accounts").await;
    assert!(list.contains("id=\"enable-acme\""), "{list}");
    assert_eq!(acme.get("/jobs").await.status().as_u16(), 303, "the account's sessions ended");
    assert!(!gets_in(&daemon, &base, "acme", "acme-pw", &token_value).await);
    assert_eq!(root.post("/admin/accounts/acme/enable", &[("csrf", csrf)]).await.status().as_u16(), 303);
    assert!(gets_in(&daemon, &base, "acme", "acme-pw", &token_value).await);

    // Password reset: typed, then generated and shown once.
    let acme = sign_in(&base, "acme", "acme-pw").await;
    let typed = [("csrf", csrf), ("username", "acme"), ("password", "typed-pw")];
    assert_eq!(root.post("/admin/accounts/acme/users/password", &typed).await.status().as_u16(), 303);
    assert_eq!(acme.get("/jobs").await.status().as_u16(), 303, "a reset ends the user's sessions");
    assert_eq!(try_sign_in(&base, "/login", "acme", "acme-pw").await.status().as_u16(), 401);
    sign_in(&base, "acme", "typed-pw").await;
    let generate = [("csrf", csrf), ("username", "acme"), ("password", "")];
    let shown = root.post("/admin/accounts/acme/users/password", &generate).await;
    assert_eq!(shown.status().as_u16(), 200);
    let page = shown.text().await.unwrap();
    let generated = page.split("id=\"generated-password\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    assert_eq!(generated.len(), 24, "{page}");
    sign_in(&base, "acme", &generated).await;
    assert!(!root.page("/admin/accounts/acme").await.1.contains(&generated), "shown once");

    // Tokens: listed with their account; another account's is 404; revoked: 401.
    let (_, page) = root.page("/admin/accounts/acme").await;
    assert!(page.contains(&format!("data-token-id=\"{token_id}\"")), "{page}");
    assert!(!root.page("/admin/accounts/other").await.1.contains(&token_id));
    let revoke = [("csrf", csrf), ("token", token_id.as_str())];
    assert_eq!(root.post("/admin/accounts/other/tokens/revoke", &revoke).await.status().as_u16(), 404);
    assert_eq!(api_status(&base, "acme", &token_value).await, 404);
    assert_eq!(root.post("/admin/accounts/acme/tokens/revoke", &revoke).await.status().as_u16(), 303);
    assert_eq!(api_status(&base, "acme", &token_value).await, 401);
    let (_, page) = root.page("/admin/accounts/acme").await;
    assert!(page.contains("<td>revoked</td>"), "{page}");

    // Nodes and webhooks as the CLI shows them.
    let (status, nodes) = root.page("/admin/nodes").await;
    assert_eq!(status, 200);
    assert!(nodes.contains("<td>live</td>"), "this daemon is a live node: {nodes}");
    let (status, hooks) = root.page("/admin/webhooks").await;
    assert_eq!(status, 200);
    assert!(hooks.contains("id=\"webhooks\""), "{hooks}");

    // Every change is in the audit log: who, what, which, from where.
    let (_, audit) = root.page("/admin/audit").await;
    for (action, target) in [
        ("account-create", "account newco".to_owned()),
        ("user-create", "user newco-ops (newco)".to_owned()),
        ("user-disable", "user acme (acme)".to_owned()),
        ("user-enable", "user acme (acme)".to_owned()),
        ("account-disable", "account acme".to_owned()),
        ("account-enable", "account acme".to_owned()),
        ("user-password", "user acme (acme), typed".to_owned()),
        ("user-password", "user acme (acme), generated".to_owned()),
        ("token-revoke", format!("token {token_id} (acme)")),
    ] {
        let row = format!("<td>root</td><td>{action}</td><td><bdi>{target}</bdi></td><td>127.0.0.1</td>");
        assert!(audit.contains(&row), "{row} in {audit}");
    }
    assert!(!audit.contains(&generated) && !audit.contains("typed-pw"), "no password in the audit log");
    assert!(!audit.contains("forged"), "forged forms did nothing");
}

/// `intake user|account disable|enable` do what the console's forms do.
async fn the_cli_disables_and_enables_users_and_accounts(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[account("acme", "acme-pw")], &[]).await;
    let base = format!("http://{}", daemon.api_addr().await);
    let (_, token_value) = token(&daemon, "acme").await;
    let session = sign_in(&base, "acme", "acme-pw").await;
    for (noun, name) in [("user", "acme"), ("account", "acme")] {
        let out = daemon.cli(&[noun, "disable", name], "").await;
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(session.get("/jobs").await.status().as_u16(), 303);
        assert!(!gets_in(&daemon, &base, "acme", "acme-pw", &token_value).await);
        let listed = daemon.cli(&[noun, "list"], "").await;
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        assert!(listed.lines().any(|l| l.starts_with("acme ") && l.contains(" disabled")), "{listed}");
        let out = daemon.cli(&[noun, "enable", name], "").await;
        assert!(out.status.success(), "{}", describe(&out));
        assert!(gets_in(&daemon, &base, "acme", "acme-pw", &token_value).await);
    }
    let out = daemon.cli(&["user", "disable", "ghost"], "").await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user `ghost`"), "{}", describe(&out));
}

async fn the_operator_screens_pass_axe_in_a_real_browser(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[account("acme", "acme-pw")], &[]).await;
    let base = format!("http://{}", daemon.api_addr().await);
    let out = daemon.cli(&["admin", "add", "root", "--password-stdin"], "root-pw\n").await;
    assert!(out.status.success(), "{}", describe(&out));
    token(&daemon, "acme").await;
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    // Signs in and enrols a second factor, as an operator's first visit does.
    browser.goto(&format!("{base}/admin/login")).await.unwrap();
    css(&browser, "#username").await.send_keys("root").await.unwrap();
    css(&browser, "#password").await.send_keys("root-pw").await.unwrap();
    css(&browser, "form button[type=submit]").await.click().await.unwrap();
    wait_path(&browser, |p| p == "/account/totp").await;
    let secret = css(&browser, "#totp-secret").await.text().await.unwrap();
    let code = totp_code(secret.trim(), unix_now());
    css(&browser, "#code").await.send_keys(&code).await.unwrap();
    css(&browser, "form[action='/account/totp'] button[type=submit]").await.click().await.unwrap();
    css(&browser, "#recovery-codes").await;
    let backend = if db.url.starts_with("postgres") { "postgres" } else { "sqlite" };
    for (path, name) in [
        ("/admin/accounts", "admin-accounts"),
        ("/admin/accounts/acme", "admin-account"),
        ("/admin/nodes", "admin-nodes"),
        ("/admin/webhooks", "admin-webhooks"),
        ("/admin/audit", "admin-audit"),
    ] {
        browser.goto(&format!("{base}{path}")).await.unwrap();
        let source = browser.source().await.unwrap();
        assert!(source.contains("<h1>"), "{path}: {source}");
        assert_eq!(browser.current_url().await.unwrap().path(), path);
        screenshot(&browser, &format!("{name}-{backend}")).await;
        axe(&browser, path).await;
    }
    // A form without JavaScript's help: disable the account by its button.
    browser.goto(&format!("{base}/admin/accounts")).await.unwrap();
    browser.find(fantoccini::Locator::Css("#disable-acme")).await.unwrap().click().await.unwrap();
    css(&browser, "#account-toggle").await;
    let page = browser.source().await.unwrap();
    assert!(page.contains("Account disabled"), "{page}");
    assert!(csrf_of(&page).len() == 64);
    browser.close().await.unwrap();
}

crate::on_both_backends!(
    operators_manage_accounts_users_and_tokens_and_disabled_holds_everywhere,
    the_cli_disables_and_enables_users_and_accounts,
    the_operator_screens_pass_axe_in_a_real_browser,
);
