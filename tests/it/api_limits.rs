//! The HTTP API's per-token rate, the per-source penalty it shares with SFTP
//! logins, bulk jobs' crash safety (a complete repeated after a crash at
//! any step, abandoned open jobs swept), mapping and listing, and the worst
//! inputs `api.rs` does not cover, through the real listener.

use crate::support::{client_key, openssh_sftp, write_customers, TestAccount, TestDaemon, TestDb};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn token(daemon: &TestDaemon, user: &str) -> String {
    let out = daemon.cli(&["token", "create", user], "").await;
    assert!(out.status.success(), "token create: {}", crate::support::describe(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().expect("a line").trim().to_owned()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

async fn a_token_over_its_rate_gets_429_with_retry_after_and_another_token_is_not_starved(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process_with(
        &db,
        &[TestAccount::new("acme")],
        &[],
        &[("api", "rate_per_token = 0.5\nburst_per_token = 5")],
    )
    .await;
    let api = daemon.api_addr().await;
    let url = format!("http://{api}/api/v1/accounts/acme/customers?ref=none");
    let (busy, quiet) = (token(&daemon, "acme").await, token(&daemon, "acme").await);
    let c = client();
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..12 {
        let response = c.get(&url).bearer_auth(&busy).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status().as_u16() == 429 && refused.is_none() {
            refused = Some(response);
        }
    }
    assert_eq!(&statuses[..5], [404; 5], "the burst is served: {statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "over the burst: {statuses:?}");
    let refused = refused.unwrap();
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    let wait: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    // Another integrator's token is not starved by the first.
    let other = c.get(&url).bearer_auth(&quiet).send().await.unwrap();
    assert_eq!(other.status().as_u16(), 404);
    // And the busy one is served again once its bucket refilled.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let again = c.get(&url).bearer_auth(&busy).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 404);
}

/// Whether an OpenSSH `ls` as `acme` with `key` logs in.
async fn sftp_logs_in(daemon: &TestDaemon, key: &std::path::Path) -> bool {
    openssh_sftp(&daemon.dir, key, &daemon.port(), "acme", "ls /\n").await.status.success()
}

async fn token_failures_refuse_sftp_logins_from_the_source_and_guessing_stays_cheap(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process_with(
        &db,
        &[TestAccount::new("acme")],
        &[],
        &[("sftp", "max_login_failures_per_source = 3")],
    )
    .await;
    let api = daemon.api_addr().await;
    let url = format!("http://{api}/api/v1/accounts/acme/customers?ref=none");
    let good = token(&daemon, "acme").await;
    assert!(sftp_logs_in(&daemon, &daemon.key).await, "SFTP works before");
    let c = client();
    for i in 0..3 {
        let guess = format!("intake_{i:064x}");
        assert_eq!(c.get(&url).bearer_auth(&guess).send().await.unwrap().status().as_u16(), 401);
    }
    assert_eq!(c.get(&url).bearer_auth(&good).send().await.unwrap().status().as_u16(), 429);
    assert!(!sftp_logs_in(&daemon, &daemon.key).await, "an SFTP login after 3 failed tokens was let in");

    // 10,000 guesses more: each answered at once (refused from memory).
    let started = Instant::now();
    let mut guessers = tokio::task::JoinSet::new();
    for g in 0..8 {
        let (c, url) = (c.clone(), url.clone());
        guessers.spawn(async move {
            let mut statuses = std::collections::BTreeSet::new();
            for i in 0..1250 {
                let guess = format!("intake_{g:032x}{i:032x}");
                statuses.insert(c.get(&url).bearer_auth(&guess).send().await.unwrap().status().as_u16());
            }
            statuses
        });
    }
    while let Some(statuses) = guessers.join_next().await {
        assert_eq!(statuses.unwrap().into_iter().collect::<Vec<_>>(), [429]);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(120), "10,000 refused guesses took {took:?}");
    eprintln!("10,000 refused guesses took {took:?}");
}

async fn sftp_login_failures_refuse_tokens_from_the_source(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process_with(
        &db,
        &[TestAccount::new("acme")],
        &[],
        &[("sftp", "max_login_failures_per_source = 3")],
    )
    .await;
    let api = daemon.api_addr().await;
    let url = format!("http://{api}/api/v1/accounts/acme/customers?ref=none");
    let good = token(&daemon, "acme").await;
    let c = client();
    assert_eq!(c.get(&url).bearer_auth(&good).send().await.unwrap().status().as_u16(), 404);
    let stranger = daemon.dir.join("stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    let (wrong_key, _) = client_key(&stranger);
    for _ in 0..3 {
        assert!(!sftp_logs_in(&daemon, &wrong_key).await, "a key acme does not have logged in");
    }
    // Counted when each refused connection ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = c.get(&url).bearer_auth(&good).send().await.unwrap();
        if response.status().as_u16() == 429 {
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["code"], "too_many_failures");
            break;
        }
        assert!(Instant::now() < deadline, "the token is still served after 3 failed SFTP logins");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Bulk {
    c: reqwest::Client,
    jobs: String,
    token: String,
}

impl Bulk {
    async fn new(daemon: &TestDaemon) -> Bulk {
        let api = daemon.api_addr().await;
        Bulk {
            c: client(),
            jobs: format!("http://{api}/api/v1/accounts/acme/jobs"),
            token: token(daemon, "acme").await,
        }
    }

    /// An open job with `bytes` sent; its id.
    async fn open_with(&self, file: &str, bytes: &[u8]) -> String {
        let created = self.c.post(&self.jobs).bearer_auth(&self.token).json(&json!({"file": file})).send().await;
        let created: Value = created.unwrap().json().await.unwrap();
        let id = created["id"].as_str().unwrap().to_owned();
        let put = self.c.put(format!("{}/{id}/data", self.jobs)).bearer_auth(&self.token).body(bytes.to_vec());
        assert_eq!(put.send().await.unwrap().status().as_u16(), 200);
        id
    }

    async fn complete(&self, id: &str) -> (u16, Value) {
        let response =
            self.c.post(format!("{}/{id}/complete", self.jobs)).bearer_auth(&self.token).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, id: &str) -> (u16, Value) {
        let response = self.c.get(format!("{}/{id}", self.jobs)).bearer_auth(&self.token).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }
}

/// The jobs `intake jobs` lists for acme with this id.
async fn jobs_listed(daemon: &TestDaemon, id: &str) -> usize {
    let out = daemon.cli(&["jobs", "--account", "acme", "--json"], "").await;
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    listed.as_array().unwrap().iter().filter(|j| j["job_id"] == id).count()
}

async fn a_complete_repeated_after_a_crash_at_any_step_makes_one_job_and_the_same_202(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme")], &[]).await;
    let bulk = Bulk::new(&daemon).await;
    let customers = daemon.customers("acme");
    let file = daemon.dir.join("crash.csv");

    // Crash after step 1: the data renamed to `.completing`, no job yet.
    write_customers(&file, "c1-", 20);
    let id = bulk.open_with("c1.csv", &std::fs::read(&file).unwrap()).await;
    let data = customers.join(format!(".intake-api.{id}"));
    std::fs::rename(&data, customers.join(format!(".intake-api.{id}.completing"))).unwrap();
    let (status, first) = bulk.complete(&id).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["id"], id.as_str());
    let (status, again) = bulk.complete(&id).await;
    assert_eq!((status, &again["id"]), (202, &first["id"]));
    assert_eq!(daemon.summary("acme", "c1", Duration::from_secs(120)).await["created"], 20);
    assert_eq!(jobs_listed(&daemon, &id).await, 1);

    // Crash during step 2: the job recorded (`arriving`), its file not moved.
    write_customers(&file, "c2-", 20);
    let id = bulk.open_with("c2.csv", &std::fs::read(&file).unwrap()).await;
    let data = customers.join(format!(".intake-api.{id}"));
    std::fs::rename(&data, customers.join(format!(".intake-api.{id}.completing"))).unwrap();
    let spool = intake::mailbox::Layout::new(&daemon.data_dir).spool(&id);
    let store = db.store().await;
    store
        .create_job(&intake::store::NewJob {
            job_id: intake::domain::JobId::from(id.clone()),
            account: "acme".into(),
            file_name: "c2.csv".into(),
            spool_path: spool.join("upload.csv").display().to_string(),
            sha256: String::new(),
            bytes: 0,
            uploader: None,
            scopes: intake::domain::user::Scopes::CREATE_ONLY,
            source_key: None,
            kind: intake::store::JobKind::Import,
            owner: Some("crashed-process".into()),
        })
        .await
        .unwrap();
    let (status, _) = bulk.complete(&id).await;
    assert_eq!(status, 202);
    assert_eq!(bulk.complete(&id).await.0, 202);
    assert_eq!(daemon.summary("acme", "c2", Duration::from_secs(120)).await["created"], 20);
    assert_eq!(jobs_listed(&daemon, &id).await, 1);

    // Crash after step 2: the job queued, the open job's record still there.
    write_customers(&file, "c3-", 20);
    let id = bulk.open_with("c3.csv", &std::fs::read(&file).unwrap()).await;
    let record = customers.join(format!(".intake-api.{id}.json"));
    let kept = std::fs::read(&record).unwrap();
    assert_eq!(bulk.complete(&id).await.0, 202);
    std::fs::write(&record, kept).unwrap();
    let (status, got) = bulk.get(&id).await;
    assert_eq!(status, 200);
    assert_ne!(got["state"], "open", "{got}");
    assert_eq!(bulk.complete(&id).await.0, 202);
    assert!(!record.exists(), "the leftover record was not removed");
    assert_eq!(daemon.summary("acme", "c3", Duration::from_secs(120)).await["created"], 20);
    assert_eq!(jobs_listed(&daemon, &id).await, 1);

    // Two completes racing: both answered 202 with the one job.
    write_customers(&file, "c4-", 20);
    let id = bulk.open_with("c4.csv", &std::fs::read(&file).unwrap()).await;
    let (a, b) = tokio::join!(bulk.complete(&id), bulk.complete(&id));
    assert_eq!((a.0, b.0), (202, 202));
    assert_eq!((&a.1["id"], &b.1["id"]), (&json!(id), &json!(id)));
    assert_eq!(daemon.summary("acme", "c4", Duration::from_secs(120)).await["created"], 20);
    assert_eq!(jobs_listed(&daemon, &id).await, 1);
    // Nothing of the open jobs is left in the folder.
    let left: Vec<String> = std::fs::read_dir(&customers)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".intake-api."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

async fn an_open_job_untouched_past_its_expiry_is_discarded_with_its_data(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process_with(
        &db,
        &[TestAccount::new("acme")],
        &[],
        &[("api", "open_job_expiry_secs = 3")],
    )
    .await;
    let bulk = Bulk::new(&daemon).await;
    let customers = daemon.customers("acme");
    let abandoned = bulk.open_with("gone.csv", b"ref,phone\n").await;
    // Kept alive by its pieces: one every second, with Content-Range.
    let kept = bulk.open_with("kept.csv", b"").await;
    let started = Instant::now();
    let mut sent = 0usize;
    loop {
        let (status, _) = bulk.get(&abandoned).await;
        if status == 404 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the abandoned job is still open");
        let piece = format!("r{sent},+1555500{:04}\n", sent % 10_000);
        let put = bulk
            .c
            .put(format!("{}/{kept}/data", bulk.jobs))
            .bearer_auth(&bulk.token)
            .header("Content-Range", format!("bytes {sent}-{}/*", sent + piece.len() - 1))
            .body(piece.clone());
        assert_eq!(put.send().await.unwrap().status().as_u16(), 200);
        sent += piece.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(2), "discarded before its expiry");
    assert!(!customers.join(format!(".intake-api.{abandoned}")).exists(), "its data is left");
    assert!(!customers.join(format!(".intake-api.{abandoned}.json")).exists());
    let (status, open) = bulk.get(&kept).await;
    assert_eq!((status, &open["state"]), (200, &json!("open")), "a job in use was discarded");
}

/// `mapping` names the profile a bulk job is read with, as a profile whose
/// `files` glob matches an SFTP upload's name; an unknown name is 422.
async fn a_bulk_job_is_read_with_the_mapping_profile_it_names(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme")], &[]).await;
    for (name, source, glob) in [("a-first", "a", "no-match-*.csv"), ("b-second", "b", "theirs-*.csv")] {
        let profile = format!(
            "files = \"{glob}\"\n[columns]\n\"Customer ID\" = \"ref\"\n\"Email Address\" = \"email\"\n\
             [constants]\n\"metadata.source\" = \"{source}\"\n"
        );
        let out = daemon.cli(&["mapping", "set", "acme", name, "--file", "-"], &profile).await;
        assert!(out.status.success(), "{}", crate::support::describe(&out));
    }
    let bulk = Bulk::new(&daemon).await;
    let file = "Customer ID,Email Address\nm-1,ann@example.com\nm-2,bob@example.com\n";
    let refused = bulk.c.post(&bulk.jobs).bearer_auth(&bulk.token).json(&json!({"file": "x.csv", "mapping": "nope"}));
    let refused = refused.send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    assert_eq!(refused.json::<Value>().await.unwrap()["code"], "unknown_mapping");

    // Without `mapping` the first that fits is chosen; with it, the one named.
    let mut summaries = Vec::new();
    for (stem, mapping) in [("plain", Value::Null), ("named", json!("b-second"))] {
        let created = bulk.c.post(&bulk.jobs).bearer_auth(&bulk.token);
        let created = created.json(&json!({"file": format!("{stem}.csv"), "mapping": mapping})).send().await.unwrap();
        assert_eq!(created.status().as_u16(), 201);
        let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let rows = file.replace("m-", &format!("{stem}-"));
        let put = bulk.c.put(format!("{}/{id}/data", bulk.jobs)).bearer_auth(&bulk.token).body(rows);
        assert_eq!(put.send().await.unwrap().status().as_u16(), 200);
        assert_eq!(bulk.complete(&id).await.0, 202);
        summaries.push(daemon.summary("acme", stem, Duration::from_secs(120)).await);
    }
    assert_eq!(summaries[0]["mapping"]["name"], "a-first", "{}", summaries[0]);
    assert_eq!(summaries[1]["mapping"]["name"], "b-second", "{}", summaries[1]);
    assert_eq!(summaries[1]["created"], 2);
    // The same as an SFTP upload that profile's glob picks.
    let local = daemon.dir.join("theirs-1.csv");
    std::fs::write(&local, file.replace("m-", "s-")).unwrap();
    daemon.upload("acme", &local, "theirs-1.csv").await;
    let over_sftp = daemon.summary("acme", "theirs-1", Duration::from_secs(120)).await;
    assert_eq!(over_sftp["mapping"], summaries[1]["mapping"]);
    assert_eq!(over_sftp["created"], 2);
}

/// Runs `sql` on the test's database.
async fn execute(db: &TestDb, sql: &str) {
    use sqlx::Connection;
    if db.url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

/// Every page of `GET …/jobs` (with `query`), followed by its cursor.
async fn all_pages(bulk: &Bulk, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("{}?limit=100&cursor={c}{query}", bulk.jobs),
            None => format!("{}?limit=100{query}", bulk.jobs),
        };
        let page: Value = bulk.c.get(url).bearer_auth(&bulk.token).send().await.unwrap().json().await.unwrap();
        ids.extend(page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
    panic!("more than 100 pages");
}

async fn the_job_list_pages_through_all_of_an_accounts_jobs(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme"), TestAccount::new("other")], &[]).await;
    let bulk = Bulk::new(&daemon).await;
    let store = db.store().await;
    // 1,048 jobs of acme and 22 of another account, many received in the
    // same millisecond (the id breaks ties).
    let (mut made, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..1070 {
        let id = uuid::Uuid::new_v4().to_string();
        let account = if i % 50 == 0 { "other" } else { "acme" };
        store
            .create_job(&intake::store::NewJob {
                job_id: intake::domain::JobId::from(id.clone()),
                account: account.into(),
                file_name: format!("f{i}.csv"),
                spool_path: "/nonexistent/upload.csv".into(),
                sha256: String::new(),
                bytes: 0,
                uploader: None,
                scopes: intake::domain::user::Scopes::CREATE_ONLY,
                source_key: None,
                kind: intake::store::JobKind::Import,
                owner: Some("bulk-insert".into()),
            })
            .await
            .unwrap();
        if account == "acme" {
            made.push(id);
        } else {
            theirs.push(id);
        }
    }
    execute(&db, "UPDATE jobs SET status = 'completed'").await;
    let rejected: Vec<&String> = made.iter().step_by(20).collect();
    let list = rejected.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(",");
    execute(&db, &format!("UPDATE jobs SET status = 'rejected' WHERE job_id IN ({list})")).await;

    let ids = all_pages(&bulk, "").await;
    assert_eq!(ids.len(), made.len(), "every job of the account, once");
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), made.len());
    assert_eq!(unique, made.iter().collect(), "only the account's jobs");
    let only_rejected = all_pages(&bulk, "&status=rejected").await;
    assert_eq!(only_rejected.len(), rejected.len());
    // Another account's job as a cursor, or garbage: 422; an empty one is
    // the first page.
    assert_eq!(c_get(&bulk, &format!("?cursor={}", theirs[0])).await, 422);
    assert_eq!(c_get(&bulk, "?cursor=..%2F..").await, 422);
    assert_eq!(c_get(&bulk, "?cursor=").await, 200);
}

async fn c_get(bulk: &Bulk, query: &str) -> u16 {
    let response = bulk.c.get(format!("{}{query}", bulk.jobs)).bearer_auth(&bulk.token).send().await.unwrap();
    response.status().as_u16()
}

/// Reads until the server closes the connection (or `within` passes);
/// whether it did.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// An HTTP/2 frame: length, type, flags, stream, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

async fn an_http2_connection_that_never_completes_a_request_header_is_closed(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process_with(
        &db,
        &[TestAccount::new("acme")],
        &[],
        &[("api", "header_read_timeout_secs = 2\nidle_timeout_secs = 60")],
    )
    .await;
    let api = daemon.api_addr().await;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // Kept busy with a PING every 200 ms, never a request: closed at the
    // header read timeout, not the idle timeout.
    let mut pinger = TcpStream::connect(&api).await.unwrap();
    pinger.write_all(&[PREFACE, &frame(4, 0, 0, &[])[..]].concat()).await.unwrap();
    let started = Instant::now();
    let (mut read, mut write) = pinger.into_split();
    let pings = tokio::spawn(async move {
        for i in 0u64..300 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if write.write_all(&frame(6, 0, 0, &i.to_be_bytes())).await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(15), read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => continue,
            Err(_) => break false,
        }
    };
    pings.abort();
    assert!(closed, "an HTTP/2 connection sending only PINGs was kept");
    assert!(started.elapsed() < Duration::from_secs(10), "closed after {:?}", started.elapsed());

    // A HEADERS frame that never ends (no END_HEADERS, no CONTINUATION).
    let mut stuck = TcpStream::connect(&api).await.unwrap();
    let headers = frame(1, 0x1, 1, &[0x82, 0x84]);
    stuck.write_all(&[PREFACE, &frame(4, 0, 0, &[]), &headers].concat()).await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut stuck, Duration::from_secs(15)).await, "an unfinished HTTP/2 header was kept");
    assert!(started.elapsed() < Duration::from_secs(10), "closed after {:?}", started.elapsed());

    // A real HTTP/2 client is served (prior knowledge, plain).
    let t = token(&daemon, "acme").await;
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
        .args(["-H", &format!("Authorization: Bearer {t}")])
        .arg(format!("http://{api}/api/v1/accounts/acme/customers?ref=none"))
        .output()
        .await
        .expect("curl runs (installed by .ci/run)");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 404", "{}", String::from_utf8_lossy(&out.stderr));
}

async fn five_thousand_idle_keep_alive_connections_never_hold_the_api(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process_with(
        &db,
        &[TestAccount::new("acme")],
        &[],
        &[("api", "max_connections = 6000\nmax_connections_per_source = 6000\nheader_read_timeout_secs = 3")],
    )
    .await;
    let api = daemon.api_addr().await;
    let t = token(&daemon, "acme").await;
    // Each makes one request, reads its answer, then sits on the connection.
    let mut idle = Vec::new();
    for _ in 0..25 {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let api = api.clone();
            batch.spawn(async move {
                let mut stream = TcpStream::connect(&api).await.ok()?;
                stream.write_all(b"GET /api/v1/none HTTP/1.1\r\nHost: x\r\n\r\n").await.ok()?;
                let mut buf = [0u8; 1024];
                let n = stream.read(&mut buf).await.ok()?;
                String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404").then_some(stream)
            });
        }
        while let Some(done) = batch.join_next().await {
            idle.extend(done.unwrap());
        }
    }
    assert!(idle.len() >= 4500, "only {} connections were served", idle.len());
    // While they are held, a new client is served at once.
    let started = Instant::now();
    let served = client().get(format!("http://{api}/api/v1/accounts/acme/customers?ref=none")).bearer_auth(&t).send();
    assert_eq!(served.await.unwrap().status().as_u16(), 404);
    assert!(started.elapsed() < Duration::from_secs(5), "served after {:?}", started.elapsed());
    // Every idle one is closed by the server after the header read timeout.
    let started = Instant::now();
    for stream in &mut idle {
        let left = Duration::from_secs(30).saturating_sub(started.elapsed());
        assert!(closed_within(stream, left).await, "an idle keep-alive connection was open after 30 s");
    }
}

async fn a_megabyte_of_addresses_is_refused_with_a_short_answer(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme")], &[]).await;
    let api = daemon.api_addr().await;
    let t = token(&daemon, "acme").await;
    let addresses: Vec<String> = (0..69_000).map(|i| format!("+1555{i:07}")).collect();
    let body = json!({"ref": "many", "addresses": addresses}).to_string();
    assert!(body.len() > 1_000_000 && body.len() < 1_048_576, "{}", body.len());
    let started = Instant::now();
    let response = client()
        .post(format!("http://{api}/api/v1/accounts/acme/customers"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let answer = response.text().await.unwrap();
    assert!(answer.len() < 64 * 1024, "a {} byte answer", answer.len());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let problem: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(problem["errors"][0]["code"], "too_many_addresses", "{problem}");
}

async fn a_put_cut_midway_resumes_where_it_stopped_and_overlaps_are_416(db: TestDb) {
    let daemon = TestDaemon::spawn_in_process(&db, &[TestAccount::new("acme")], &[]).await;
    let bulk = Bulk::new(&daemon).await;
    let file = daemon.dir.join("cut.csv");
    write_customers(&file, "cut-", 2000);
    let bytes = std::fs::read(&file).unwrap();
    let total = bytes.len();
    let created = bulk.c.post(&bulk.jobs).bearer_auth(&bulk.token).json(&json!({"file": "cut.csv"})).send().await;
    let id = created.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let url = format!("{}/{id}", bulk.jobs);

    // The whole file announced, a third sent, then the connection cut.
    let api = url.split('/').nth(2).unwrap().to_owned();
    let mut stream = TcpStream::connect(&api).await.unwrap();
    let head = format!(
        "PUT /api/v1/accounts/acme/jobs/{id}/data HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {total}\r\nContent-Range: bytes 0-{}/{total}\r\n\r\n",
        bulk.token,
        total - 1
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&bytes[..total / 3]).await.unwrap();
    stream.flush().await.unwrap();
    // Cut once the server has read them (it answers nothing before the end).
    let mut probe = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut probe)).await;
    assert!(early.is_err(), "the server answered a PUT whose body had not ended");
    drop(stream);
    // What came is kept.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, open) = bulk.get(&id).await;
        if open["bytes_received"].as_u64() == Some((total / 3) as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "the bytes sent never arrived: {open}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Resumed from bytes_received (409 while the cut request still holds
    // the job); a piece overlapping what arrived, or leaving a hole: 416.
    let piece = |start: usize, end: usize| {
        bulk.c
            .put(format!("{url}/data"))
            .bearer_auth(&bulk.token)
            .header("Content-Range", format!("bytes {start}-{}/{total}", end - 1))
            .body(bytes[start..end].to_vec())
            .send()
    };
    let have = loop {
        let (_, open) = bulk.get(&id).await;
        let have = open["bytes_received"].as_u64().unwrap() as usize;
        if have > 0 {
            // Small pieces for the refusals: answered before their body is
            // read, a large one could meet a closed connection mid-write.
            match piece(have - 1, have + 1).await.unwrap().status().as_u16() {
                409 => {}
                416 => break have,
                other => panic!("an overlapping piece: {other}"),
            }
        }
        assert!(Instant::now() < deadline, "the cut request still holds the job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(piece(have + 1, have + 2).await.unwrap().status().as_u16(), 416, "a hole");
    let resumed = piece(have, total).await.unwrap();
    assert_eq!(resumed.status().as_u16(), 200);
    assert_eq!(resumed.json::<Value>().await.unwrap()["bytes_received"], total);
    assert_eq!(bulk.complete(&id).await.0, 202);
    let summary = daemon.summary("acme", "cut", Duration::from_secs(120)).await;
    assert_eq!(summary["created"], 2000, "{summary}");
}

crate::on_both_backends!(
    an_http2_connection_that_never_completes_a_request_header_is_closed,
    five_thousand_idle_keep_alive_connections_never_hold_the_api,
    a_megabyte_of_addresses_is_refused_with_a_short_answer,
    a_put_cut_midway_resumes_where_it_stopped_and_overlaps_are_416,
    the_job_list_pages_through_all_of_an_accounts_jobs,
    a_bulk_job_is_read_with_the_mapping_profile_it_names,
    a_token_over_its_rate_gets_429_with_retry_after_and_another_token_is_not_starved,
    token_failures_refuse_sftp_logins_from_the_source_and_guessing_stays_cheap,
    sftp_login_failures_refuse_tokens_from_the_source,
    a_complete_repeated_after_a_crash_at_any_step_makes_one_job_and_the_same_202,
    an_open_job_untouched_past_its_expiry_is_discarded_with_its_data,
);
