//! Running intake as a production service (issue 11), end to end with the
//! real binary: `/metrics` scraped with a real HTTP client and parsed as
//! Prometheus text, `/readyz` when the database goes away, signed webhooks
//! against a real local HTTP receiver that fails, is down across a kill -9,
//! or is slow; retention with backdated files; job control; systemd.

use crate::support::{describe, eventually, write_customers, TestAccount, TestDaemon, TestDb, PG_ENV};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

const REPORT: Duration = Duration::from_secs(120);

/// Prints the daemon's log when the test fails.
struct LogOnPanic<'a>(&'a TestDaemon);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- the daemon's log:\n{}", self.0.log());
        }
    }
}
const SECRET: &str = "whsec_test_0123456789";

// ---------------------------------------------------------------- metrics

/// The samples of one scrape by metric name and labels.
struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Scrape(prometheus_parse::Scrape::parse(lines).expect("the exposition parses"))
    }

    /// The value of `metric` with exactly these labels (absent: `None`).
    fn get(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        use prometheus_parse::Value as V;
        self.0
            .samples
            .iter()
            .find(|s| {
                s.metric == metric
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| match &s.value {
                V::Counter(v) | V::Gauge(v) | V::Untyped(v) => *v,
                V::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
                V::Summary(_) => panic!("no summaries are exported"),
            })
    }

    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(metric, labels).unwrap_or(0.0)
    }
}

/// Scrapes in the classic text format (what `curl` gets), checked with
/// `promtool check metrics` where it is installed (`.ci/run` installs it).
async fn scrape(d: &TestDaemon) -> Scrape {
    let (status, text) = d.http_get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    if let Ok(promtool) = which("promtool") {
        use std::io::Write;
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "promtool check metrics: {}\n{text}", describe(&out));
    } else {
        assert!(std::env::var_os("CI").is_none(), "promtool must be installed in CI (.ci/run installs it)");
    }
    Scrape::parse(&text)
}

/// What Prometheus itself asks for: OpenMetrics, the same samples.
async fn scrape_openmetrics(d: &TestDaemon) -> (String, Scrape) {
    let url = format!("http://{}/metrics", d.http_addr().await);
    let response = reqwest::Client::new()
        .get(&url)
        .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    let text = response.text().await.unwrap();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(text.trim_end().ends_with("# EOF"), "an OpenMetrics exposition ends with # EOF:\n{text}");
    (text.clone(), Scrape::parse(&text))
}

async fn metrics_follow_an_upload_from_login_to_report(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[("INTAKE_BATCH_SIZE", "10")]).await;
    assert_eq!(d.http_get("/healthz").await.0, 200);
    let (status, body) = d.http_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], "ready");

    let before = scrape(&d).await;
    assert_eq!(before.value("intake_sftp_uploads_total", &[]), 0.0);
    assert_eq!(before.value("intake_jobs_finished_total", &[("status", "completed"), ("kind", "import")]), 0.0);
    assert_eq!(before.get("intake_jobs_queued", &[]), Some(0.0), "the queue gauges are always exported");
    assert_eq!(before.get("intake_oldest_queued_job_age_seconds", &[]), Some(0.0));
    assert_eq!(before.get("intake_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));

    let file = d.dir.join("m.csv");
    write_customers(&file, "m-", 45);
    let size = std::fs::metadata(&file).unwrap().len() as f64;
    d.upload("acme", &file, "m.csv").await;
    // During: the upload is counted as soon as it is complete.
    let during = scrape(&d).await;
    assert_eq!(during.value("intake_sftp_uploads_total", &[]), 1.0);
    assert!(during.value("intake_sftp_received_bytes_total", &[]) >= size);
    assert!(during.value("intake_sftp_logins_total", &[("result", "success")]) >= 1.0);

    let summary = d.summary("acme", "m", REPORT).await;
    assert_eq!(summary["created"], 45);
    // The summary is out just before the job is closed and counted.
    eventually_async(REPORT, "the job to be counted", || async {
        let m = scrape(&d).await;
        (m.value("intake_jobs_finished_total", &[("status", "completed"), ("kind", "import")]) > 0.0).then_some(m)
    })
    .await;
    // Scraped again: a scrape reads the job gauges from the database before
    // it renders the counters, so the one that first saw the job counted may
    // have read its row while it was still running.
    let after = scrape(&d).await;
    assert_eq!(after.value("intake_jobs_finished_total", &[("status", "completed"), ("kind", "import")]), 1.0);
    assert_eq!(after.value("intake_rows_total", &[("outcome", "created"), ("kind", "import")]), 45.0);
    assert_eq!(after.value("intake_rows_total", &[("outcome", "failed"), ("kind", "import")]), 0.0);
    assert_eq!(after.value("intake_job_duration_seconds_count", &[]), 1.0);
    assert_eq!(after.value("intake_batch_commit_seconds_count", &[]), 5.0, "45 rows in batches of 10");
    assert_eq!(after.value("intake_jobs_queued", &[]), 0.0);
    assert_eq!(after.value("intake_jobs_running", &[]), 0.0);
    assert!(
        after.0.samples.iter().all(|s| s.labels.get("account").is_none()),
        "no account label unless account_labels is set"
    );
    let (_, openmetrics) = scrape_openmetrics(&d).await;
    assert_eq!(openmetrics.value("intake_rows_total", &[("outcome", "created"), ("kind", "import")]), 45.0);
    assert_eq!(openmetrics.value("intake_sftp_uploads_total", &[]), 1.0);
}

async fn account_labels_are_opt_in(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[("INTAKE_HTTP__ACCOUNT_LABELS", "true")]).await;
    let file = d.dir.join("a.csv");
    write_customers(&file, "a-", 3);
    d.upload("acme", &file, "a.csv").await;
    d.summary("acme", "a", REPORT).await;
    let after = eventually_async(REPORT, "the job to be counted", || async {
        let m = scrape(&d).await;
        (m.value("intake_jobs_finished_total", &[("status", "completed"), ("kind", "import"), ("account", "acme")])
            > 0.0)
            .then_some(m)
    })
    .await;
    assert_eq!(
        after.value("intake_jobs_finished_total", &[("status", "completed"), ("kind", "import"), ("account", "acme")]),
        1.0
    );
    assert_eq!(
        after.value("intake_rows_total", &[("outcome", "created"), ("kind", "import"), ("account", "acme")]),
        3.0
    );
}

async fn readyz_turns_503_when_the_database_goes_away(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    assert_eq!(d.http_get("/readyz").await.0, 200);
    drop_database(&db).await;
    let body = eventually_async(REPORT, "/readyz to fail", || async {
        let (status, body) = d.http_get("/readyz").await;
        (status == 503).then_some(body)
    })
    .await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "not ready");
    assert!(body["failed"]["database"].is_string(), "{body}");
    assert!(body["failed"].get("data_dir").is_none() && body["failed"].get("sftp").is_none(), "{body}");
    // Liveness names a store that takes no writes (PostgreSQL: the database
    // is gone); SQLite's pool still writes to the removed file: alive.
    let (status, health) = d.http_get("/healthz").await;
    let health: Value = serde_json::from_str(&health).unwrap();
    if body["failed"]["database_write"].is_string() {
        assert_eq!((status, health["failed"]["database_write"].is_string()), (503, true), "{health}");
    } else {
        assert_eq!(status, 200, "{health}");
    }
}

/// Takes the test's database away under the running daemon.
async fn drop_database(db: &TestDb) {
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    } else {
        use sqlx::Connection;
        let admin = std::env::var(PG_ENV).unwrap();
        let name = db.url.rsplit('/').next().unwrap();
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut conn).await.unwrap();
    }
}

async fn eventually_async<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// --------------------------------------------------------------- webhooks

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    delivery_id: String,
    event: String,
    body: String,
    /// The signature verified against the body with the shared secret.
    signed: bool,
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Answer 500 to this many requests first.
    fail_first: usize,
    /// Hold requests for this upload until `release` (or 60 s).
    hold_file: Option<String>,
    released: bool,
}

/// A real HTTP server on loopback that checks each request's signature.
struct Receiver {
    port: u16,
    state: Arc<Mutex<ReceiverState>>,
    release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

type Shared = (Arc<Mutex<ReceiverState>>, Arc<Notify>);

impl Receiver {
    async fn start(port: u16, state: ReceiverState) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(state));
        let release = Arc::new(Notify::new());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state((state.clone(), release.clone()));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { port, state, release, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    fn release(&self) {
        self.state.lock().unwrap().released = true;
        self.release.notify_waiters();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State((state, release)): State<Shared>, headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let received = Received {
        delivery_id: header("intake-delivery"),
        event: header("intake-event"),
        signed: verify(&header("intake-signature"), &body),
        body: body.clone(),
    };
    let file = serde_json::from_str::<Value>(&body).ok().and_then(|v| v["file"].as_str().map(str::to_owned));
    let (hold, fail) = {
        let mut s = state.lock().unwrap();
        s.received.push(received);
        let hold = !s.released && s.hold_file.is_some() && s.hold_file == file;
        (hold, s.received.len() <= s.fail_first)
    };
    if hold {
        let _ = tokio::time::timeout(Duration::from_secs(60), release.notified()).await;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// Stripe's scheme: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
fn verify(header: &str, body: &str) -> bool {
    let parts: HashMap<&str, &str> = header.split(',').filter_map(|p| p.split_once('=')).collect();
    let (Some(t), Some(v1)) = (parts.get("t"), parts.get("v1")) else { return false };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    hex::decode(v1).is_ok_and(|given| mac.verify_slice(&given).is_ok())
}

const FAST_RETRIES: [(&str, &str); 2] =
    [("INTAKE_WEBHOOKS__RETRY_FIRST_SECS", "1"), ("INTAKE_WEBHOOKS__RETRY_MAX_SECS", "2")];

async fn set_webhook(d: &TestDaemon, url: &str) {
    let out = d
        .cli(&["account", "set", "acme", "--webhook-url", url, "--webhook-secret-stdin"], &format!("{SECRET}\n"))
        .await;
    assert!(out.status.success(), "{}", describe(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains(SECRET), "the secret is never printed: {shown}");
}

async fn cli_json(d: &TestDaemon, args: &[&str]) -> Value {
    let out = d.cli(args, "").await;
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)))
}

/// The summary file's content and the webhook's body are the same JSON.
fn same_json(body: &str, summary: &Value) -> bool {
    serde_json::from_str::<Value>(body).is_ok_and(|b| &b == summary)
}

async fn a_webhook_failing_three_times_is_retried_with_the_same_delivery_id(db: TestDb) {
    let receiver = Receiver::start(0, ReceiverState { fail_first: 3, ..Default::default() }).await;
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &FAST_RETRIES).await;
    let _log = LogOnPanic(&d);
    set_webhook(&d, &receiver.url()).await;
    let file = d.dir.join("w.csv");
    write_customers(&file, "w-", 4);
    d.upload("acme", &file, "w.csv").await;
    let summary = d.summary("acme", "w", REPORT).await;
    let job_id = summary["job_id"].as_str().unwrap().to_owned();

    let got = eventually(REPORT, "the fourth attempt", || {
        let got = receiver.received();
        (got.len() >= 4).then_some(got)
    })
    .await;
    for r in &got {
        assert!(r.signed, "every attempt is signed: {r:?}");
        assert_eq!(r.delivery_id, format!("evt_{job_id}"), "the same delivery id on every attempt");
        assert_eq!(r.event, "job.completed");
        assert!(same_json(&r.body, &summary), "the body is the summary: {}", r.body);
    }
    let deliveries = eventually_async(REPORT, "the delivery to be recorded", || async {
        let all = cli_json(&d, &["webhooks", "list", "--all", "--json"]).await;
        (all[0]["status"] == "delivered").then_some(all)
    })
    .await;
    assert_eq!(deliveries.as_array().unwrap().len(), 1, "{deliveries}");
    assert_eq!(deliveries[0]["attempts"], 4, "{deliveries}");
    let pending = cli_json(&d, &["webhooks", "list", "--json"]).await;
    assert_eq!(pending, Value::Array(vec![]), "nothing is pending once delivered");
    let shown = cli_json(&d, &["jobs", "show", &job_id, "--json"]).await;
    assert_eq!(shown["webhook"]["status"], "delivered", "{shown}");
    let m = scrape(&d).await;
    assert_eq!(m.value("intake_webhook_deliveries_total", &[("result", "failed")]), 3.0);
    assert_eq!(m.value("intake_webhook_deliveries_total", &[("result", "delivered")]), 1.0);
    assert!(!d.log().contains(SECRET), "the secret never reaches the log");
}

async fn a_webhook_survives_kill_9_while_the_receiver_is_down(db: TestDb) {
    // A port with nothing listening on it (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &FAST_RETRIES).await;
    set_webhook(&d, &format!("http://127.0.0.1:{port}/hook")).await;
    let file = d.dir.join("k.csv");
    write_customers(&file, "k-", 3);
    d.upload("acme", &file, "k.csv").await;
    // Ingestion does not wait for the receiver.
    let summary = d.summary("acme", "k", REPORT).await;
    let job_id = summary["job_id"].as_str().unwrap().to_owned();
    let store = db.store().await;
    eventually_async(REPORT, "a failed attempt", || async {
        let d = store.list_deliveries(Some("acme"), None, true, 10).await.unwrap();
        d.first().filter(|d| d.attempts >= 1 && d.last_error.is_some()).map(|_| ())
    })
    .await;
    d.kill9().await;

    let receiver = Receiver::start(port, ReceiverState::default()).await;
    d.start().await;
    let got = eventually(REPORT, "the event after the restart", || {
        let got = receiver.received();
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert!(got.iter().all(|r| r.signed && r.delivery_id == format!("evt_{job_id}")), "{got:?}");
    assert!(same_json(&got[0].body, &summary));
    let delivered = eventually_async(REPORT, "the delivery to be recorded", || async {
        let d = store.list_deliveries(Some("acme"), None, true, 10).await.unwrap();
        d.into_iter().next().filter(|d| d.status == intake::store::DeliveryStatus::Delivered)
    })
    .await;
    assert!(delivered.attempts >= 2, "{delivered:?}");
}

async fn a_slow_receiver_times_out_is_retried_and_never_holds_up_ingestion(db: TestDb) {
    let receiver = Receiver::start(0, ReceiverState { hold_file: Some("slow.csv".into()), ..Default::default() }).await;
    let mut env = FAST_RETRIES.to_vec();
    env.push(("INTAKE_WEBHOOKS__TIMEOUT_SECS", "1"));
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &env).await;
    set_webhook(&d, &receiver.url()).await;
    let file = d.dir.join("s.csv");
    write_customers(&file, "s-", 3);
    d.upload("acme", &file, "slow.csv").await;
    let slow = d.summary("acme", "slow", REPORT).await;
    // At least two attempts were held past the timeout.
    eventually(REPORT, "a retry after a timeout", || (receiver.received().len() >= 2).then_some(())).await;

    // While the receiver holds every attempt of the first event, the next
    // upload of the same account is processed and its own event delivered.
    d.upload("acme", &file, "next.csv").await;
    let next = d.summary("acme", "next", REPORT).await;
    assert_eq!(next["status"], "completed");
    eventually(REPORT, "the second event", || {
        receiver.received().iter().any(|r| same_json(&r.body, &next)).then_some(())
    })
    .await;
    let store = db.store().await;
    let slow_id = format!("evt_{}", slow["job_id"].as_str().unwrap());
    let first = store.list_deliveries(Some("acme"), slow["job_id"].as_str(), true, 1).await.unwrap();
    assert_eq!(first[0].status, intake::store::DeliveryStatus::Pending, "held: not delivered yet");
    assert!(first[0].last_error.as_deref().unwrap_or("").contains("timed out"), "{:?}", first[0]);

    receiver.release();
    eventually_async(REPORT, "the held event to be delivered", || async {
        let d = store.list_deliveries(Some("acme"), slow["job_id"].as_str(), true, 1).await.unwrap();
        d.into_iter().next().filter(|d| d.status == intake::store::DeliveryStatus::Delivered)
    })
    .await;
    let attempts: Vec<_> = receiver.received().into_iter().filter(|r| r.delivery_id == slow_id).collect();
    assert!(attempts.len() >= 3, "{attempts:?}");
    assert!(attempts.iter().all(|r| r.signed && same_json(&r.body, &slow)), "{attempts:?}");
}

async fn webhook_test_sends_a_signed_event_now(db: TestDb) {
    let receiver = Receiver::start(0, ReceiverState::default()).await;
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    let out = d.cli(&["webhook", "test", "acme"], "").await;
    assert!(!out.status.success(), "no webhook yet: {}", describe(&out));
    set_webhook(&d, &receiver.url()).await;
    let out = d.cli(&["webhook", "test", "acme"], "").await;
    assert!(out.status.success(), "{}", describe(&out));
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].signed && got[0].event == "test" && got[0].delivery_id.starts_with("evt_test_"), "{got:?}");
    // A changed secret is used from then on: the old one no longer verifies.
    let out = d.cli(&["account", "set", "acme", "--webhook-secret-stdin"], "another-secret\n").await;
    assert!(out.status.success(), "{}", describe(&out));
    let out = d.cli(&["webhook", "test", "acme"], "").await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!receiver.received()[1].signed, "signed with the new secret");

    // account add takes the same options; a URL that is not http(s) adds nothing.
    let out = d.cli(&["account", "add", "other", "--webhook-url", "ftp://h/x", "--webhook-secret-stdin"], "s\n").await;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(db.store().await.get_account("other").await.unwrap().is_none());
    let add = ["account", "add", "other", "--webhook-url", &receiver.url(), "--webhook-secret-stdin"];
    let out = d.cli(&add, &format!("{SECRET}\n")).await;
    assert!(out.status.success(), "{}", describe(&out));
    let out = d.cli(&["webhook", "test", "other"], "").await;
    assert!(out.status.success(), "{}", describe(&out));
    let last = receiver.received().pop().unwrap();
    assert!(last.signed && last.body.contains("\"other\""), "{last:?}");
}

async fn a_webhook_declared_in_the_config_is_used(db: TestDb) {
    let receiver = Receiver::start(0, ReceiverState::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::prepare(dir.path(), &db, &[TestAccount::new("acme")], &[]);
    let config = std::fs::read_to_string(&d.config).unwrap().replacen(
        "avid = \"acme\"\n",
        &format!("avid = \"acme\"\nwebhook_url = \"{}\"\nwebhook_secret = \"{SECRET}\"\n", receiver.url()),
        1,
    );
    std::fs::write(&d.config, config).unwrap();
    d.start().await;
    let file = d.dir.join("c.csv");
    write_customers(&file, "c-", 2);
    d.upload("acme", &file, "c.csv").await;
    let summary = d.summary("acme", "c", REPORT).await;
    let got = eventually(REPORT, "the event", || receiver.received().into_iter().next()).await;
    assert!(got.signed && same_json(&got.body, &summary), "{got:?}");
    assert!(!d.log().contains(SECRET), "the secret never reaches the log");
}

async fn removing_the_webhook_gives_its_pending_events_up_and_retention_forgets_them(db: TestDb) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut env = FAST_RETRIES.to_vec();
    env.push(("INTAKE_RETENTION__SWEEP_EVERY_SECS", "1"));
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &env).await;
    let _log = LogOnPanic(&d);
    set_webhook(&d, &format!("http://127.0.0.1:{port}/hook")).await;
    let file = d.dir.join("g.csv");
    write_customers(&file, "g-", 2);
    d.upload("acme", &file, "g.csv").await;
    d.summary("acme", "g", REPORT).await;
    let pending = eventually_async(REPORT, "a failed attempt", || async {
        let listed = cli_json(&d, &["webhooks", "list", "--account", "acme", "--json"]).await;
        (listed[0]["attempts"].as_u64() >= Some(1)).then_some(listed)
    })
    .await;
    assert_eq!(pending[0]["status"], "pending", "{pending}");
    assert!(pending[0]["last_error"].as_str().unwrap().contains("cannot connect"), "{pending}");

    let out = d.cli(&["account", "set", "acme", "--no-webhook"], "").await;
    assert!(out.status.success(), "{}", describe(&out));
    let failed = eventually_async(REPORT, "the event to be given up", || async {
        let listed = cli_json(&d, &["webhooks", "list", "--json"]).await;
        (listed[0]["status"] == "failed").then_some(listed)
    })
    .await;
    assert!(failed[0]["last_error"].as_str().unwrap().contains("no webhook"), "{failed}");
    let m = scrape(&d).await;
    assert_eq!(m.value("intake_webhook_deliveries_total", &[("result", "gave_up")]), 1.0);
    assert_eq!(m.value("intake_webhooks_pending", &[]), 0.0);

    // Retention forgets events as old as outbox_days (30 by default).
    execute(&db, "UPDATE webhook_deliveries SET created_at = '2000-01-01T00:00:00Z'").await;
    eventually_async(REPORT, "the old event to be forgotten", || async {
        let listed = cli_json(&d, &["webhooks", "list", "--all", "--json"]).await;
        (listed == Value::Array(vec![])).then_some(())
    })
    .await;
}

/// Runs one statement on the test's database, as an operator's psql would.
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

async fn a_dry_run_is_counted_and_announced_as_a_validation(db: TestDb) {
    let receiver = Receiver::start(0, ReceiverState::default()).await;
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[]).await;
    let _log = LogOnPanic(&d);
    set_webhook(&d, &receiver.url()).await;
    let file = d.dir.join("v.csv");
    write_customers(&file, "v-", 3);
    let out = d.sftp("acme", &format!("put {} /validate/v.csv\n", file.display())).await;
    assert!(out.status.success(), "{}", describe(&out));
    let path = d.outbox("acme").join("v.validation.json");
    let text = eventually(REPORT, "the dry run's summary", || std::fs::read_to_string(&path).ok()).await;
    let dry: Value = serde_json::from_str(&text).unwrap();
    let got = eventually(REPORT, "the event", || receiver.received().into_iter().next()).await;
    assert_eq!(got.event, "validation.completed", "{got:?}");
    assert!(got.signed && same_json(&got.body, &dry), "{got:?}");
    let m = eventually_async(REPORT, "the dry run to be counted", || async {
        let m = scrape(&d).await;
        (m.value("intake_jobs_finished_total", &[("status", "completed"), ("kind", "validation")]) > 0.0).then_some(m)
    })
    .await;
    assert_eq!(m.value("intake_rows_total", &[("outcome", "created"), ("kind", "validation")]), 3.0);
    assert_eq!(m.value("intake_rows_total", &[("outcome", "created"), ("kind", "import")]), 0.0, "nothing imported");
}

// -------------------------------------------------------------- retention

fn backdate(path: &std::path::Path, days: u32) {
    let status =
        std::process::Command::new("touch").arg("-d").arg(format!("{days} days ago")).arg(path).status().unwrap();
    assert!(status.success());
}

async fn retention_deletes_old_archive_and_outbox_files_and_jobs_still_show(db: TestDb) {
    let mut d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[("INTAKE_RETENTION__ARCHIVE_DAYS", "7")]).await;
    let file = d.dir.join("r.csv");
    write_customers(&file, "r-", 3);
    d.upload("acme", &file, "old.csv").await;
    let old = d.summary("acme", "old", REPORT).await;
    d.upload("acme", &file, "new.csv").await;
    d.summary("acme", "new", REPORT).await;
    let archive = d.data_dir.join("accounts/acme/archive");
    let outbox = d.outbox("acme");
    // The upload is archived beside its summary being published: wait for it (10 s at most).
    let archived = |needle: &'static str| {
        let archive = archive.clone();
        eventually(Duration::from_secs(10), needle, move || {
            std::fs::read_dir(&archive)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().contains(needle))
        })
    };
    let (old_upload, new_upload) = (archived("old.csv").await, archived("new.csv").await);
    let old_job = old["job_id"].as_str().unwrap().to_owned();
    let shown = cli_json(&d, &["jobs", "show", &old_job, "--json"]).await;
    assert_eq!(shown["files"]["archived_upload"]["present"], true, "{shown}");
    assert_eq!(shown["outcome"], old, "the decided summary is the published one");
    assert!(d.terminate().await.success(), "SIGTERM stops the HTTP server and the loops too");

    backdate(&old_upload, 8); // past archive_days = 7
    backdate(&new_upload, 6); // within
    backdate(&outbox.join("old.results.csv"), 31); // past the default outbox_days = 30
    backdate(&outbox.join("old.summary.json"), 29); // within

    // A report a killed process left written aside, and one being written.
    let (left, writing) = (outbox.join(".intake-tmp.0123abcd"), outbox.join(".intake-tmp.4567ef01"));
    std::fs::write(&left, "job_id,").unwrap();
    std::fs::write(&writing, "job_id,").unwrap();
    let status = std::process::Command::new("touch").args(["-d", "2 hours ago"]).arg(&left).status().unwrap();
    assert!(status.success());
    d.start().await;
    eventually(REPORT, "the sweep at start", || (!old_upload.exists()).then_some(())).await;
    eventually(REPORT, "the old report to go", || (!outbox.join("old.results.csv").exists()).then_some(())).await;
    assert!(new_upload.exists() && outbox.join("old.summary.json").exists() && outbox.join("new.results.csv").exists());
    assert!(!left.exists(), "a report left written aside an hour ago and more is removed");
    assert!(writing.exists(), "a fresh one may be a report being published");
    assert!(d.log().contains("left written aside"), "{}", d.log());
    let m = scrape(&d).await;
    assert_eq!(m.value("intake_retention_deleted_files_total", &[("folder", "archive")]), 1.0);
    assert_eq!(m.value("intake_retention_deleted_files_total", &[("folder", "outbox")]), 1.0);
    assert!(d.log().contains("retention deleted old files"));

    // The jobs stay: listed, shown with their files gone.
    let jobs = cli_json(&d, &["jobs", "--account", "acme", "--json"]).await;
    assert_eq!(jobs.as_array().unwrap().len(), 2, "{jobs}");
    let shown = cli_json(&d, &["jobs", "show", &old_job, "--json"]).await;
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["files"]["archived_upload"]["present"], false, "{shown}");
    assert_eq!(shown["files"]["results"]["present"], false, "{shown}");
    let out = d.cli(&["jobs", "show", &old_job], "").await;
    assert!(out.status.success(), "{}", describe(&out));
}

// ------------------------------------------------------------ job control

async fn an_aborted_job_is_retried_from_its_archived_upload(db: TestDb) {
    let mut d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[("INTAKE_TEST_PANIC_AT_REF", "p-3")]).await;
    let file = d.dir.join("p.csv");
    write_customers(&file, "p-", 6);
    d.upload("acme", &file, "p.csv").await;
    let aborted = d.summary("acme", "p", REPORT).await;
    assert_eq!(aborted["status"], "aborted", "{aborted}");
    let job_id = aborted["job_id"].as_str().unwrap().to_owned();

    let listed = cli_json(&d, &["jobs", "--status", "aborted", "--json"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["job_id"], job_id.as_str());
    assert_eq!(cli_json(&d, &["jobs", "--status", "completed", "--json"]).await, Value::Array(vec![]));
    let shown = cli_json(&d, &["jobs", "show", &job_id, "--json"]).await;
    assert_eq!(shown["error_code"], "internal_error", "{shown}");
    assert!(shown["attempts"].as_u64().unwrap() >= 1, "{shown}");
    let out = d.cli(&["jobs", "--status", "bogus"], "").await;
    assert!(!out.status.success());

    // Without the fault, the retry processes the same upload as a new job.
    d.terminate().await;
    d.env.retain(|(k, _)| k != "INTAKE_TEST_PANIC_AT_REF");
    d.start().await;
    let out = d.cli(&["jobs", "retry", &job_id], "").await;
    assert!(out.status.success(), "{}", describe(&out));
    let retried = eventually_async(REPORT, "the retry to complete", || async {
        let jobs = cli_json(&d, &["jobs", "--status", "completed", "--json"]).await;
        jobs.as_array().unwrap().first().cloned()
    })
    .await;
    assert_ne!(retried["job_id"], job_id.as_str());
    assert_eq!(retried["created"], 6, "{retried}");
    assert_eq!(retried["file"], "p.csv");
    assert_eq!(db.store().await.count_customers("acme").await.unwrap(), 6);

    // Only an aborted job is retried.
    let out = d.cli(&["jobs", "retry", retried["job_id"].as_str().unwrap()], "").await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only an aborted job can be retried"), "{}", describe(&out));
    let out = d.cli(&["jobs", "retry", "no-such-job"], "").await;
    assert!(!out.status.success());
}

async fn job_log_lines_carry_the_job_span_in_json(db: TestDb) {
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[("INTAKE_LOG_FORMAT", "json")]).await;
    let file = d.dir.join("j.csv");
    write_customers(&file, "j-", 2);
    d.upload("acme", &file, "j.csv").await;
    let summary = d.summary("acme", "j", REPORT).await;
    // Logged once the job is closed, just after its summary is out.
    let _log = LogOnPanic(&d);
    let finished = eventually(REPORT, "a JSON log line for the job's end", || {
        d.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["fields"]["message"] == "job finished")
    })
    .await;
    assert_eq!(finished["span"]["name"], "job", "{finished}");
    assert_eq!(finished["span"]["job_id"], summary["job_id"], "{finished}");
    assert_eq!(finished["span"]["account"], "acme");
    assert_eq!(finished["span"]["file"], "j.csv");
    // The login is logged in the SSH connection's span.
    let login = d
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "SFTP login")
        .expect("a JSON line for the login");
    let session = &login["spans"][0];
    assert_eq!(session["name"], "sftp_session", "{login}");
    assert_eq!(session["user"], "acme", "{login}");
    assert_eq!(session["account"], "acme", "{login}");
    assert!(session["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{login}");
}

// ---------------------------------------------------------------- systemd

async fn the_daemon_tells_systemd_when_it_is_ready(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let socket_env = socket_path.display().to_string();
    let d = TestDaemon::spawn(&db, &[TestAccount::new("acme")], &[("NOTIFY_SOCKET", &socket_env)]).await;
    let mut buf = [0u8; 256];
    let n = tokio::task::spawn_blocking(move || socket.recv(&mut buf).map(|n| buf[..n].to_vec())).await.unwrap();
    let message = String::from_utf8(n.expect("a notification")).unwrap();
    assert!(message.lines().any(|l| l == "READY=1"), "{message}");
    // Ready means listening.
    assert_eq!(d.http_get("/readyz").await.0, 200);
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/intake.service")).unwrap();
    for key in [
        "Type=notify",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/intake",
        "NoNewPrivileges=true",
        "LimitNOFILE=",
    ] {
        assert!(unit.contains(key), "the unit sets {key}");
    }
    // Verified as installed, with the binary under test in place of /usr/local/bin/intake.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("intake.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/intake", crate::support::intake_bin())).unwrap();
    let out = std::process::Command::new(analyze).arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Without a booted systemd (a container) verify cannot load every unit it
    // refers to; what it says of intake.service itself must be clean.
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains("intake.service")).collect();
    assert!(about_unit.is_empty(), "systemd-analyze verify:\n{stderr}");
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
        .ok_or(())
}

crate::on_both_backends!(
    metrics_follow_an_upload_from_login_to_report,
    account_labels_are_opt_in,
    readyz_turns_503_when_the_database_goes_away,
    a_webhook_failing_three_times_is_retried_with_the_same_delivery_id,
    a_webhook_survives_kill_9_while_the_receiver_is_down,
    a_slow_receiver_times_out_is_retried_and_never_holds_up_ingestion,
    webhook_test_sends_a_signed_event_now,
    a_webhook_declared_in_the_config_is_used,
    a_dry_run_is_counted_and_announced_as_a_validation,
    removing_the_webhook_gives_its_pending_events_up_and_retention_forgets_them,
    retention_deletes_old_archive_and_outbox_files_and_jobs_still_show,
    an_aborted_job_is_retried_from_its_archived_upload,
    job_log_lines_carry_the_job_span_in_json,
    the_daemon_tells_systemd_when_it_is_ready,
);
