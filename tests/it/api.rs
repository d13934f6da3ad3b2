//! The HTTP listeners and the public API through the real daemon (in
//! process), real clients (`reqwest`, raw TCP, `curl` over TLS and HTTP/2):
//! the serving limits, tokens, and the one-customer routes, every URL also
//! tried with another account's token.

use crate::support::{write_customers, TestAccount, TestDaemon, TestDb};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A token for `user` made with `intake token create`; the token is the
/// last line of standard output.
async fn token(daemon: &TestDaemon, user: &str, extra: &[&str]) -> String {
    let mut args = vec!["token", "create", user];
    args.extend_from_slice(extra);
    let out = daemon.cli(&args, "").await;
    assert!(out.status.success(), "token create: {}", crate::support::describe(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().expect("a line").trim().to_owned();
    assert!(token.starts_with("intake_"), "{stdout}");
    token
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Whether the server has closed the connection: a read sees EOF or a reset.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn a_silent_flood_on_the_ops_listener_is_capped_and_uploads_and_the_api_go_on(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process_with(
        &db,
        &[TestAccount::new("acme")],
        &[],
        &[("http", "max_connections = 64\nmax_connections_per_source = 32\nheader_read_timeout_secs = 3")],
    )
    .await;
    let ops = daemon.http_addr().await;
    let mut silent = Vec::new();
    for _ in 0..1100 {
        match TcpStream::connect(&ops).await {
            Ok(s) => silent.push(s),
            // The backlog may refuse some: that is a refusal too.
            Err(_) => continue,
        }
    }
    assert!(silent.len() >= 1000, "the test opened {} connections", silent.len());

    // While they are held: an SFTP upload is processed and the API answers.
    let file = daemon.dir.join("flood.csv");
    write_customers(&file, "fl-", 3);
    daemon.upload("acme", &file, "flood.csv").await;
    let summary = daemon.summary("acme", "flood", Duration::from_secs(120)).await;
    assert_eq!(summary["created"], 3, "{summary}");
    let api = daemon.api_addr().await;
    let t = token(&daemon, "acme", &[]).await;
    let got = client()
        .get(format!("http://{api}/api/v1/accounts/acme/customers?ref=fl-1"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status().as_u16(), 200);

    // Over the cap at once, the rest after the header read timeout: every
    // one is closed by the server.
    let started = Instant::now();
    for stream in &mut silent {
        let left = Duration::from_secs(30).saturating_sub(started.elapsed());
        assert!(closed_by_server(stream, left).await, "a silent connection was still open after 30 s");
    }
    // The listener serves again once the flood is gone.
    let (status, _) = daemon.http_get("/healthz").await;
    assert_eq!(status, 200);
}

async fn a_slowloris_client_is_cut_and_huge_headers_never_hold_the_server(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process_with(
        &db,
        &[TestAccount::new("acme")],
        &[],
        &[("api", "header_read_timeout_secs = 2")],
    )
    .await;
    let api = daemon.api_addr().await;

    // One header byte every 200 ms: cut at the header read timeout, long
    // before the request would be complete.
    let mut slow = TcpStream::connect(&api).await.unwrap();
    slow.write_all(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    let started = Instant::now();
    let mut cut = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow.write_all(b"a").await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await {
            // A 408 answer or a close: either ends the connection.
            if n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408") {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the slow client was not cut");
    assert!(started.elapsed() < Duration::from_secs(10), "cut after {:?}", started.elapsed());

    // 10,000 headers, and one header of 1 MB: 431 or a close, quickly.
    let many: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "a".repeat(1024 * 1024));
    for extra in [many, big] {
        let mut stream = TcpStream::connect(&api).await.unwrap();
        let request = format!("GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        let writer = tokio::spawn(async move {
            let _ = stream.write_all(request.as_bytes()).await;
            stream
        });
        let mut stream = tokio::time::timeout(Duration::from_secs(10), writer).await.expect("not held").unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(read.is_ok(), "the server held the connection");
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(200)]);
    }
    // And the server still answers.
    let t = token(&daemon, "acme", &[]).await;
    let ok = client()
        .get(format!("http://{api}/api/v1/accounts/acme/customers?ref=none"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 404);
}

async fn tls_serves_http2_to_curl_with_a_generated_certificate(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let tls =
        format!("tls_cert = {:?}\ntls_key = {:?}", cert_path.display().to_string(), key_path.display().to_string());
    let daemon = TestDaemon::spawn_in_process_with(&db, &[TestAccount::new("acme")], &[], &[("api", &tls)]).await;
    let port = daemon.api_addr().await.rsplit(':').next().unwrap().to_owned();
    let t = token(&daemon, "acme", &[]).await;
    let body = json!({"ref": "tls-1", "addresses": ["+15555001234"]}).to_string();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--http2", "--cacert"])
        .arg(&cert_path)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-H", &format!("Authorization: Bearer {t}"), "-H", "Content-Type: application/json"])
        .args(["-d", &body, "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
        .arg(format!("https://localhost:{port}/api/v1/accounts/acme/customers"))
        .output()
        .await
        .expect("curl runs (installed by .ci/run)");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl: {shown} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(shown, "2 201");

    // Plain HTTP on the TLS port is not served.
    let plain = client().get(format!("http://127.0.0.1:{port}/api/v1/openapi.json")).send().await;
    assert!(plain.is_err() || plain.unwrap().status().as_u16() >= 400);
}

async fn a_token_acts_as_its_user_and_revocation_and_expiry_hold_at_once(db: TestDb) {
    let mut create_only = TestAccount::new("shop");
    create_only.scopes = vec!["customers:create"];
    let daemon = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme"), create_only], &[]).await;
    let api = daemon.api_addr().await;
    let url = format!("http://{api}/api/v1/accounts/acme/customers");
    let acme = token(&daemon, "acme", &["--name", "ci", "--expires", "30"]).await;

    // A token never has more than its user.
    let out = daemon.cli(&["token", "create", "shop", "--scope", "customers:update"], "").await;
    assert!(!out.status.success(), "a token with a scope its user lacks was made");
    let shop = token(&daemon, "shop", &[]).await;

    let body = json!({"ref": "t-1", "addresses": ["ann@example.com"]});
    let created = client().post(&url).bearer_auth(&acme).json(&body).send().await.unwrap();
    assert_eq!(created.status().as_u16(), 201);
    // No token, a bad one: 401 with a problem document.
    for auth in [None, Some("intake_0000"), Some("garbage")] {
        let mut request = client().get(format!("{url}?ref=t-1"));
        if let Some(a) = auth {
            request = request.bearer_auth(a);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "unauthorized");
        assert_eq!(problem["status"], 401);
    }
    // Another account's token sees nothing of acme's.
    let other = client().get(format!("{url}?ref=t-1")).bearer_auth(&shop).send().await.unwrap();
    assert_eq!(other.status().as_u16(), 404);

    // The list shows the token, never its value.
    let listed = daemon.cli(&["token", "list", "--account", "acme", "--json"], "").await;
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(!listed.contains(&acme[7..]), "a token value was listed");
    let tokens: Value = serde_json::from_str(&listed).unwrap();
    let id = tokens[0]["token_id"].as_str().unwrap().to_owned();
    assert_eq!(tokens[0]["name"], "ci");
    assert_eq!(tokens.as_array().unwrap().len(), 1, "{tokens}");

    // Revoked: refused from the next request.
    let out = daemon.cli(&["token", "revoke", &id], "").await;
    assert!(out.status.success());
    let refused = client().get(format!("{url}?ref=t-1")).bearer_auth(&acme).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    // Expired (on the database's clock): refused too.
    let later = token(&daemon, "acme", &["--expires", "1"]).await;
    let ok = client().get(format!("{url}?ref=t-1")).bearer_auth(&later).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    expire_all_tokens(&db).await;
    let expired = client().get(format!("{url}?ref=t-1")).bearer_auth(&later).send().await.unwrap();
    assert_eq!(expired.status().as_u16(), 401);
}

/// Sets every token's expiry in the past, on the test's database.
async fn expire_all_tokens(db: &TestDb) {
    use sqlx::Connection;
    let sql = "UPDATE api_tokens SET expires_at = 1";
    if db.url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

async fn guessing_tokens_is_refused_per_source(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme")], &[]).await;
    let api = daemon.api_addr().await;
    let url = format!("http://{api}/api/v1/accounts/acme/customers?ref=x");
    let good = token(&daemon, "acme", &[]).await;
    let mut last = 0;
    for i in 0..12 {
        let guess = format!("intake_{:064x}", i);
        last = client().get(&url).bearer_auth(&guess).send().await.unwrap().status().as_u16();
    }
    assert_eq!(last, 429, "guesses were not limited");
    // Even the right token is refused from that address for the penalty.
    let refused = client().get(&url).bearer_auth(&good).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_failures");
}

async fn the_customer_routes_create_load_and_merge_like_a_csv_row(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme"), TestAccount::new("other")], &[]).await;
    let api = daemon.api_addr().await;
    let base = format!("http://{api}/api/v1/accounts/acme/customers");
    let acme = token(&daemon, "acme", &[]).await;
    let other = token(&daemon, "other", &[]).await;
    let c = client();

    let body = json!({
        "ref": " ann-1 ",
        "addresses": ["+15555001234", "Ann@EXAMPLE.com", "+15555001234"],
        "metadata": {"name": "Ann"},
        "appdata": {"crm": 7}
    });
    let created = c.post(&base).bearer_auth(&acme).json(&body).send().await.unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let customer: Value = created.json().await.unwrap();
    let id = customer["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/accounts/acme/customers/{id}"));
    assert_eq!(customer["ref"], "ann-1");
    assert_eq!(customer["addresses"], json!(["+15555001234", "Ann@example.com"]));
    assert_eq!(customer["appdata"], json!({"crm": 7}));
    assert!(customer["created_at"].as_str().unwrap().ends_with('Z'));

    // The same ref again: 409 whatever the scopes.
    let again = c.post(&base).bearer_auth(&acme).json(&body).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 409);
    let problem: Value = again.json().await.unwrap();
    assert_eq!(problem["code"], "ref_exists");

    // Every error of an invalid body, with the row codes.
    let bad = json!({"ref": "", "addresses": ["12", "not-an@", 5], "metadata": [1], "colour": "red"});
    let invalid = c.post(&base).bearer_auth(&acme).json(&bad).send().await.unwrap();
    assert_eq!(invalid.status().as_u16(), 422);
    assert_eq!(invalid.headers()["content-type"], "application/problem+json");
    let problem: Value = invalid.json().await.unwrap();
    let codes: Vec<&str> = problem["errors"].as_array().unwrap().iter().map(|e| e["code"].as_str().unwrap()).collect();
    for code in ["unknown_field", "invalid_phone", "invalid_metadata"] {
        assert!(codes.contains(&code), "{code} missing: {problem}");
    }
    let row = c.post(&base).bearer_auth(&acme).json(&json!({"ref": "", "addresses": ["12", "x@"]})).send().await;
    let problem: Value = row.unwrap().json().await.unwrap();
    let codes: Vec<&str> = problem["errors"].as_array().unwrap().iter().map(|e| e["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["missing_ref", "invalid_phone", "invalid_email"], "{problem}");
    // A ref of 10 MB is refused by the body limit before it is parsed.
    let huge = json!({"ref": "r".repeat(10 * 1024 * 1024), "addresses": ["+15555001234"]});
    // The server answers 413 as soon as the limit is passed and closes the
    // connection: a client still writing the rest may see the answer or a
    // broken pipe, depending on timing; never a parsed body.
    match c.post(&base).bearer_auth(&acme).json(&huge).send().await {
        Ok(too_big) => {
            assert_eq!(too_big.status().as_u16(), 413);
            assert_eq!(too_big.json::<Value>().await.unwrap()["code"], "payload_too_large");
        }
        Err(e) => assert!(e.is_request(), "only the body write may fail: {e}"),
    }
    assert!(!c.get(format!("{base}?ref=r")).bearer_auth(&acme).send().await.unwrap().status().is_server_error());
    // JSON nested 100,000 deep: an error, not a crash.
    let deep = format!(
        "{{\"ref\":\"d\",\"addresses\":[\"+15555001234\"],\"metadata\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let deep =
        c.post(&base).bearer_auth(&acme).header("content-type", "application/json").body(deep).send().await.unwrap();
    assert!(deep.status().is_client_error(), "{}", deep.status());

    // Loaded by id and by ref, appdata included.
    let by_id: Value = c.get(format!("{base}/{id}")).bearer_auth(&acme).send().await.unwrap().json().await.unwrap();
    assert_eq!(by_id, customer);
    let by_ref: Value =
        c.get(format!("{base}?ref=ann-1")).bearer_auth(&acme).send().await.unwrap().json().await.unwrap();
    assert_eq!(by_ref["id"], customer["id"]);
    assert_eq!(by_ref["appdata"], json!({"crm": 7}));

    // PATCH: the CSV merge: keys given set, others kept; addresses replaced.
    let patch = json!({"metadata": {"city": "Oslo"}, "appdata": {"crm": 8}});
    let patched = c.patch(format!("{base}/{id}")).bearer_auth(&acme).json(&patch).send().await.unwrap();
    assert_eq!(patched.status().as_u16(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["metadata"], json!({"name": "Ann", "city": "Oslo"}));
    assert_eq!(patched["appdata"], json!({"crm": 8}));
    assert_eq!(patched["addresses"], customer["addresses"]);
    let readdressed = c
        .patch(format!("{base}/{id}"))
        .bearer_auth(&acme)
        .json(&json!({"addresses": ["bob@example.com"]}))
        .send()
        .await
        .unwrap();
    let readdressed: Value = readdressed.json().await.unwrap();
    assert_eq!(readdressed["addresses"], json!(["bob@example.com"]));
    assert_eq!(readdressed["metadata"], json!({"name": "Ann", "city": "Oslo"}));

    // Another account's token, on every route: 404, never acme's data.
    let foreign = [
        c.get(format!("{base}/{id}")).bearer_auth(&other),
        c.get(format!("{base}?ref=ann-1")).bearer_auth(&other),
        c.patch(format!("{base}/{id}")).bearer_auth(&other).json(&patch),
        c.post(&base).bearer_auth(&other).json(&json!({"ref": "x", "addresses": ["+15555001234"]})),
    ];
    for request in foreign {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 404);
        let text = response.text().await.unwrap();
        assert!(!text.contains("ann-1") && !text.contains("Oslo"), "{text}");
    }
    // acme's customer id under the other account's path: not found.
    let crossed = c.get(format!("http://{api}/api/v1/accounts/other/customers/{id}")).bearer_auth(&other);
    assert_eq!(crossed.send().await.unwrap().status().as_u16(), 404);

    // Paths that could escape: never a path, never a 5xx.
    for path in [
        "/api/v1/accounts/../customers",
        "/api/v1/accounts/%2E%2E/customers?ref=ann-1",
        "/api/v1/accounts/acme%2F..%2Fother/customers?ref=ann-1",
        "/api/v1/accounts/acme/customers/..%2F..%2Fetc%2Fpasswd",
    ] {
        let response = c.get(format!("http://{api}{path}")).bearer_auth(&acme).send().await.unwrap();
        let status = response.status().as_u16();
        assert!(status == 404 || status == 400, "{path}: {status}");
    }
}

async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme"), TestAccount::new("other")], &[]).await;
    let api = daemon.api_addr().await;
    let base = format!("http://{api}/api/v1/accounts/acme/customers");
    let acme = token(&daemon, "acme", &[]).await;
    let c = client();
    let body = json!({"ref": "idem-1", "addresses": ["+15555001234"]});
    let send =
        |body: &Value, key: &str| c.post(&base).bearer_auth(&acme).header("Idempotency-Key", key).json(body).send();

    let first = send(&body, "k-1").await.unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let location = first.headers()["location"].clone();
    let first: Value = first.json().await.unwrap();
    // Replayed: the same 201 and customer, not a 409.
    let again = send(&body, "k-1").await.unwrap();
    assert_eq!(again.status().as_u16(), 201);
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    // Another body with the key: 422.
    let other_body = json!({"ref": "idem-2", "addresses": ["+15555001234"]});
    let reused = send(&other_body, "k-1").await.unwrap();
    assert_eq!(reused.status().as_u16(), 422);
    assert_eq!(reused.json::<Value>().await.unwrap()["code"], "idempotency_key_reused");
    // A new key for the same ref: the conflict, remembered too.
    let conflict = send(&body, "k-2").await.unwrap();
    assert_eq!(conflict.status().as_u16(), 409);
    assert_eq!(send(&body, "k-2").await.unwrap().status().as_u16(), 409);
    // Keys are per account: another account's same key is its own.
    let other = token(&daemon, "other", &[]).await;
    let theirs = c
        .post(format!("http://{api}/api/v1/accounts/other/customers"))
        .bearer_auth(&other)
        .header("Idempotency-Key", "k-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status().as_u16(), 201);
    assert_ne!(theirs.json::<Value>().await.unwrap()["id"], first["id"]);
    // A key that is not a key.
    let bad = send(&body, &"x".repeat(300)).await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}

/// The committed `docs/openapi.json` is what the server generates and
/// serves (run with `INTAKE_WRITE_OPENAPI=1` to write it after a change),
/// and every documented route and method is served.
async fn the_committed_openapi_document_is_the_served_one_and_documents_every_route(db: TestDb) {
    let committed_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let generated = intake::api::openapi_document();
    if std::env::var_os("INTAKE_WRITE_OPENAPI").is_some() {
        std::fs::create_dir_all(committed_path.parent().unwrap()).unwrap();
        std::fs::write(&committed_path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&committed_path).expect("docs/openapi.json is committed");
    assert!(
        committed == generated,
        "docs/openapi.json differs from the code's document: INTAKE_WRITE_OPENAPI=1 cargo test --test it openapi"
    );

    let daemon = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme")], &[]).await;
    let api = daemon.api_addr().await;
    let served = client().get(format!("http://{api}/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(served.status().as_u16(), 200);
    assert_eq!(served.text().await.unwrap(), generated);

    let document: Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(document["openapi"].as_str().unwrap().get(..3), Some("3.1"));
    let t = token(&daemon, "acme", &[]).await;
    let mut documented = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = format!("http://{api}{}", path.replace("{avid}", "acme").replace("{id}", "none"));
            let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let response = client().request(method.clone(), &url).bearer_auth(&t).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(status != 405 && body["detail"] != "no such route", "{method} {path} is documented, not served");
            documented += 1;
        }
    }
    assert_eq!(documented, 13, "{document}");
}

/// A 5 GB Content-Length and a body that never ends: 413 at the limit,
/// never read to the end, never held.
async fn an_endless_or_oversized_body_gets_413_at_the_limit(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme")], &[]).await;
    let api = daemon.api_addr().await;
    let t = token(&daemon, "acme", &[]).await;
    let head = |framing: &str| {
        format!(
            "POST /api/v1/accounts/acme/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\
             Content-Type: application/json\r\n{framing}\r\n"
        )
    };
    for framing in ["Content-Length: 5000000000\r\n", "Transfer-Encoding: chunked\r\n"] {
        let stream = TcpStream::connect(&api).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let request = head(framing);
        let chunked = framing.starts_with("Transfer");
        // Writes until the server stops reading (at most 64 MiB).
        let writer = tokio::spawn(async move {
            write.write_all(request.as_bytes()).await?;
            let piece = vec![b' '; 64 * 1024];
            for _ in 0..1024 {
                if chunked {
                    write.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await?;
                    write.write_all(&piece).await?;
                    write.write_all(b"\r\n").await?;
                } else {
                    write.write_all(&piece).await?;
                }
            }
            Ok::<_, std::io::Error>(())
        });
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(20), read.read(&mut answer))
            .await
            .expect("an answer before the body ends")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{framing}: {answer}");
        assert!(answer.contains("payload_too_large"), "{answer}");
        writer.abort();
    }
}

/// results.csv with the customer_id column blanked (ids differ per account).
fn without_ids(text: &str) -> String {
    text.lines()
        .map(|line| {
            let mut cells: Vec<&str> = line.split(',').collect();
            if cells.len() > 3 {
                cells[3] = "";
            }
            cells.join(",")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn a_bulk_job_over_http_resumes_completes_once_and_reports_as_sftp_does(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme"), TestAccount::new("other")], &[]).await;
    let api = daemon.api_addr().await;
    let acme = token(&daemon, "acme", &[]).await;
    let other = token(&daemon, "other", &[]).await;
    let c = client();
    let file = daemon.dir.join("bulk.csv");
    write_customers(&file, "bk-", 50);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(b"bad-1,not-a-phone\n");
    std::fs::write(&file, &bytes).unwrap();

    // The same file over SFTP, by the other account.
    daemon.upload("other", &file, "bulk.csv").await;
    let sftp_summary = daemon.summary("other", "bulk", Duration::from_secs(120)).await;

    let jobs = format!("http://{api}/api/v1/accounts/acme/jobs");
    let created = c.post(&jobs).bearer_auth(&acme).json(&json!({"file": "bulk.csv"})).send().await.unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let job: Value = created.json().await.unwrap();
    assert_eq!(job["state"], "open");
    let id = job["id"].as_str().unwrap().to_owned();
    let url = format!("{jobs}/{id}");
    // Another account sees nothing of it.
    for u in [url.clone(), format!("{url}/results")] {
        assert_eq!(c.get(&u).bearer_auth(&other).send().await.unwrap().status().as_u16(), 404);
    }
    let crossed = c.get(format!("http://{api}/api/v1/accounts/other/jobs/{id}")).bearer_auth(&other).send().await;
    assert_eq!(crossed.unwrap().status().as_u16(), 404);

    // Two pieces; a gap is refused with 416.
    let total = bytes.len();
    let half = total / 2;
    let piece = |start: usize, end: usize| {
        c.put(format!("{url}/data"))
            .bearer_auth(&acme)
            .header("Content-Range", format!("bytes {start}-{}/{total}", end - 1))
            .body(bytes[start..end].to_vec())
            .send()
    };
    assert_eq!(piece(0, half).await.unwrap().status().as_u16(), 200);
    // Refusals get small pieces: answered before the body is read, a large
    // one could meet the closed connection mid-write.
    assert_eq!(piece(half + 1, half + 2).await.unwrap().status().as_u16(), 416);
    assert_eq!(piece(half, total).await.unwrap().status().as_u16(), 200);
    let open: Value = c.get(&url).bearer_auth(&acme).send().await.unwrap().json().await.unwrap();
    assert_eq!(open["bytes_received"], total);

    // Two completes: the one job, the same answer to both.
    let (a, b) = tokio::join!(
        c.post(format!("{url}/complete")).bearer_auth(&acme).send(),
        c.post(format!("{url}/complete")).bearer_auth(&acme).send()
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!([a.status().as_u16(), b.status().as_u16()], [202, 202]);
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_eq!((a["id"].as_str(), b["id"].as_str()), (Some(id.as_str()), Some(id.as_str())));
    assert_eq!(piece(0, 1).await.unwrap().status().as_u16(), 409, "a PUT after complete");

    let summary = daemon.summary("acme", "bulk", Duration::from_secs(120)).await;
    assert_eq!(summary["job_id"], id.as_str());
    // The summary is published before the job's row says so: poll.
    let mut done = Value::Null;
    for _ in 0..100 {
        done = c.get(&url).bearer_auth(&acme).send().await.unwrap().json().await.unwrap();
        if done["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["created"], sftp_summary["created"]);
    assert_eq!(done["failed"], 1);
    let results = c.get(format!("{url}/results")).bearer_auth(&acme).send().await.unwrap();
    assert_eq!(results.status().as_u16(), 200);
    let over_http = results.text().await.unwrap();
    let over_sftp = std::fs::read_to_string(daemon.outbox("other").join("bulk.results.csv")).unwrap();
    assert_eq!(without_ids(&over_http), without_ids(&over_sftp));
    assert_eq!(over_http, std::fs::read_to_string(daemon.outbox("acme").join("bulk.results.csv")).unwrap());
    let failed = c.get(format!("{url}/failed")).bearer_auth(&acme).send().await.unwrap();
    assert_eq!(failed.status().as_u16(), 200);
    assert!(failed.text().await.unwrap().contains("bad-1"));

    // The job is listed by `intake jobs`, with the same id.
    let listed = daemon.cli(&["jobs", "--account", "acme", "--json"], "").await;
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&id));

    // A job from SFTP can be read over HTTP by its account.
    let sftp_id = sftp_summary["job_id"].as_str().unwrap();
    let theirs = c.get(format!("http://{api}/api/v1/accounts/other/jobs/{sftp_id}")).bearer_auth(&other).send().await;
    let theirs: Value = theirs.unwrap().json().await.unwrap();
    assert_eq!(theirs["state"], "completed");

    // Listed newest first, with a cursor.
    let first_page: Value =
        c.get(format!("{jobs}?limit=1")).bearer_auth(&acme).send().await.unwrap().json().await.unwrap();
    assert_eq!(first_page["jobs"][0]["id"], id.as_str());
    let completed: Value =
        c.get(format!("{jobs}?status=completed")).bearer_auth(&acme).send().await.unwrap().json().await.unwrap();
    assert_eq!(completed["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(completed["next_cursor"], Value::Null);
    let theirs_listed: Value = c
        .get(format!("http://{api}/api/v1/accounts/other/jobs"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!theirs_listed.to_string().contains(&id), "another account's job listed");

    // An open job can be discarded.
    let second: Value =
        c.post(&jobs).bearer_auth(&acme).json(&json!({"file": "x.csv"})).send().await.unwrap().json().await.unwrap();
    let second_url = format!("{jobs}/{}", second["id"].as_str().unwrap());
    assert_eq!(c.delete(&second_url).bearer_auth(&acme).send().await.unwrap().status().as_u16(), 204);
    assert_eq!(c.get(&second_url).bearer_auth(&acme).send().await.unwrap().status().as_u16(), 404);
    // Names that are not uploads are refused.
    for name in ["../x.csv", "x.txt", ".hidden.csv"] {
        let refused = c.post(&jobs).bearer_auth(&acme).json(&json!({"file": name})).send().await.unwrap();
        assert_eq!(refused.status().as_u16(), 422, "{name}");
    }
}

crate::on_both_backends!(
    a_bulk_job_over_http_resumes_completes_once_and_reports_as_sftp_does,
    an_endless_or_oversized_body_gets_413_at_the_limit,
    the_committed_openapi_document_is_the_served_one_and_documents_every_route,
    an_idempotency_key_replays_the_first_answer_and_refuses_another_body,
    a_silent_flood_on_the_ops_listener_is_capped_and_uploads_and_the_api_go_on,
    a_slowloris_client_is_cut_and_huge_headers_never_hold_the_server,
    tls_serves_http2_to_curl_with_a_generated_certificate,
    a_token_acts_as_its_user_and_revocation_and_expiry_hold_at_once,
    guessing_tokens_is_refused_per_source,
    the_customer_routes_create_load_and_merge_like_a_csv_row,
);
