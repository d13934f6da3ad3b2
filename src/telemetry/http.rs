//! The operations endpoint: `GET /metrics` (Prometheus, OpenMetrics text),
//! `GET /healthz` (the process is not wedged: the store commits a write and
//! workers take jobs) and `GET /readyz` (the database answers and commits a
//! write, the data directory takes writes, workers can take jobs, the SFTP
//! listener is bound): 200, else 503 naming the failed checks. Serves no
//! merchant data.

use super::metrics;
use crate::serve_http::{BoundedServer, Limits};
use crate::store::Store;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// What the endpoint looks at.
#[derive(Clone)]
pub struct Health {
    pub store: Store,
    pub database_url: String,
    pub data_dir: PathBuf,
    /// `None`: this process runs no SFTP server (nothing to check).
    pub sftp_bound: Option<Arc<AtomicBool>>,
}

/// The bound HTTP listener.
pub struct HttpServer {
    server: BoundedServer,
    health: Health,
}

impl HttpServer {
    pub async fn bind(listen: &str, limits: Limits, health: Health) -> std::io::Result<HttpServer> {
        let server = BoundedServer::bind("http", listen, limits, None).await?;
        Ok(HttpServer { server, health })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let app = Router::new()
            .route("/metrics", get(scrape))
            .route("/healthz", get(healthz))
            .route("/readyz", get(ready))
            .with_state(self.health);
        self.server.run(app, shutdown).await
    }
}

async fn scrape(State(health): State<Health>, headers: HeaderMap) -> Response {
    // The job gauges come from the database, so every node of a shared
    // database reports the same queue.
    let m = metrics();
    match tokio::time::timeout(CHECK_TIMEOUT, health.store.job_counts()).await {
        Ok(Ok(counts)) => {
            m.jobs_arriving.set(counts.arriving as i64);
            m.jobs_queued.set(counts.queued as i64);
            m.jobs_running.set(counts.running as i64);
            m.jobs_retrying.set(counts.retrying as i64);
            m.webhooks_pending.set(counts.webhooks_pending as i64);
            m.oldest_queued_age.set(counts.oldest_queued_secs.unwrap_or(0.0));
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot count jobs for the metrics"),
        Err(_) => tracing::warn!("counting jobs for the metrics timed out"),
    }
    // Prometheus asks for OpenMetrics; anything else gets the classic format.
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.encode_prometheus_text())
            .into_response()
    }
}

async fn ready(State(health): State<Health>) -> Response {
    let mut failed = serde_json::Map::new();
    if let Err(why) = database_ready(&health).await {
        failed.insert("database".into(), why.into());
    }
    if let Err(why) = data_dir_writable(&health).await {
        failed.insert("data_dir".into(), why.into());
    }
    if let Err(why) = database_writable(&health).await {
        failed.insert("database_write".into(), why.into());
    }
    if let Some(why) = super::pulse::jobs_problem() {
        failed.insert("jobs".into(), why.into());
    }
    if let Some(bound) = &health.sftp_bound {
        if !bound.load(Ordering::Relaxed) {
            failed.insert("sftp".into(), "the SFTP listener is not bound".into());
        }
    }
    if failed.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({ "status": "ready" }))).into_response()
    } else {
        let body = serde_json::json!({ "status": "not ready", "failed": failed });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// Liveness: what a restart could mend. The store commits a write (a
/// poisoned pool, a wedged connection fail it; so do a full disk or a
/// read-only database, which a restart does not mend, but which stop every
/// job all the same) and workers take jobs. The data directory and the SFTP
/// listener are readiness only.
async fn healthz(State(health): State<Health>) -> Response {
    let mut failed = serde_json::Map::new();
    if let Err(why) = database_writable(&health).await {
        failed.insert("database_write".into(), why.into());
    }
    if let Some(why) = super::pulse::jobs_problem() {
        failed.insert("jobs".into(), why.into());
    }
    if failed.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({ "status": "ok" }))).into_response()
    } else {
        let body = serde_json::json!({ "status": "unhealthy", "failed": failed });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// The pool answers, and for SQLite the configured file can still be
/// opened (a pool keeps a removed file's connections working).
async fn database_ready(health: &Health) -> Result<(), String> {
    let check = async {
        health.store.ping().await.map_err(|e| e.to_string())?;
        if let Some(path) = health.database_url.strip_prefix("sqlite://") {
            use sqlx::{ConnectOptions, Connection};
            let path = path.split('?').next().unwrap_or(path);
            let conn = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(false)
                .read_only(true)
                .connect()
                .await
                .map_err(|e| format!("cannot open the database file: {e}"))?;
            let _ = conn.close().await;
        }
        Ok(())
    };
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

/// The store commits a write (a full disk or a read-only database fails
/// it, while reads still answer).
async fn database_writable(health: &Health) -> Result<(), String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let node = format!("{}:{}", host.trim(), health.data_dir.display());
    match tokio::time::timeout(CHECK_TIMEOUT, health.store.write_probe(&node)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the database takes no writes: {e}")),
        Err(_) => Err(format!("a write got no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

async fn data_dir_writable(health: &Health) -> Result<(), String> {
    let probe = health.data_dir.join(format!(".intake-ready-probe.{}", std::process::id()));
    let written = tokio::task::spawn_blocking(move || {
        let result = std::fs::write(&probe, b"ready");
        let _ = std::fs::remove_file(&probe);
        result
    })
    .await;
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot write in the data directory: {e}")),
        Err(e) => Err(format!("the check failed: {e}")),
    }
}
