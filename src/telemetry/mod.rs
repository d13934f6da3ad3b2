//! What an operator watches: the Prometheus metrics (one registry for the
//! process, counted where things happen with one-line calls) and the HTTP
//! endpoint that serves them with the health checks (`http`). Counts events,
//! never their content: no file names, no customer data, and no account
//! label unless `[http] account_labels` asks for one.

pub mod http;
pub mod logs;
pub mod pulse;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::OnceLock;
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    account_labels: AtomicBool,
    pub sftp_connections: Gauge,
    sftp_logins: Family<Labels, Counter>,
    sftp_bytes_received: Counter,
    sftp_uploads: Family<Labels, Counter>,
    jobs_finished: Family<Labels, Counter>,
    rows: Family<Labels, Counter>,
    job_duration: Histogram,
    batch_commit: Histogram,
    pub jobs_arriving: Gauge,
    pub jobs_queued: Gauge,
    pub jobs_running: Gauge,
    pub jobs_retrying: Gauge,
    pub oldest_queued_age: Gauge<f64, AtomicU64>,
    webhook_deliveries: Family<Labels, Counter>,
    pub webhooks_pending: Gauge,
    retention_deletions: Family<Labels, Counter>,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("intake"),
            account_labels: AtomicBool::new(false),
            sftp_connections: Gauge::default(),
            sftp_logins: Family::default(),
            sftp_bytes_received: Counter::default(),
            sftp_uploads: Family::default(),
            jobs_finished: Family::default(),
            rows: Family::default(),
            // 0.1 s .. about 55 min
            job_duration: Histogram::new(exponential_buckets(0.1, 2.0, 16)),
            // 1 ms .. about 33 s
            batch_commit: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            jobs_arriving: Gauge::default(),
            jobs_queued: Gauge::default(),
            jobs_running: Gauge::default(),
            jobs_retrying: Gauge::default(),
            oldest_queued_age: Gauge::default(),
            webhook_deliveries: Family::default(),
            webhooks_pending: Gauge::default(),
            retention_deletions: Family::default(),
        };
        let r = &mut m.registry;
        r.register("sftp_connections", "SSH connections open now", m.sftp_connections.clone());
        r.register("sftp_logins", "SFTP login attempts by result", m.sftp_logins.clone());
        r.register("sftp_received_bytes", "Bytes written by SFTP clients", m.sftp_bytes_received.clone());
        r.register("sftp_uploads", "Uploads completed over SFTP", m.sftp_uploads.clone());
        r.register("jobs_finished", "Jobs ended, by final status and kind", m.jobs_finished.clone());
        r.register("rows", "Rows processed, by outcome and job kind", m.rows.clone());
        r.register("job_duration_seconds", "From a job's start to its end", m.job_duration.clone());
        r.register("batch_commit_seconds", "Time to commit one batch", m.batch_commit.clone());
        r.register("jobs_arriving", "Jobs whose upload is being taken in", m.jobs_arriving.clone());
        r.register("jobs_queued", "Jobs waiting for a worker", m.jobs_queued.clone());
        r.register("jobs_running", "Jobs being processed", m.jobs_running.clone());
        r.register("jobs_retrying", "Jobs waiting to retry after a transient fault", m.jobs_retrying.clone());
        r.register(
            "oldest_queued_job_age_seconds",
            "How long the oldest queued job has waited (0: none waits)",
            m.oldest_queued_age.clone(),
        );
        r.register("webhook_deliveries", "Webhook delivery attempts, by result", m.webhook_deliveries.clone());
        r.register("webhooks_pending", "Webhook events not yet delivered", m.webhooks_pending.clone());
        r.register("retention_deleted_files", "Files deleted by retention, by folder", m.retention_deletions.clone());
        let build: Family<Labels, Gauge> = Family::default();
        build.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())]).set(1);
        r.register("build_info", "The running intake's version", build);
        m
    }

    /// Labels job, row, upload and webhook metrics with the account.
    pub fn set_account_labels(&self, on: bool) {
        self.account_labels.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn labels(&self, account: &str, more: &[(&'static str, &str)]) -> Labels {
        let mut labels: Labels = more.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        if self.account_labels.load(std::sync::atomic::Ordering::Relaxed) {
            labels.push(("account", account.to_owned()));
        }
        labels
    }

    /// The OpenMetrics text exposition (what Prometheus asks for).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// The classic Prometheus text format (0.0.4), for scrapers and tools
    /// that do not ask for OpenMetrics (`curl`, `promtool check metrics`):
    /// the same samples; a counter's HELP and TYPE name its `_total` series,
    /// and there is no `# EOF`.
    pub fn encode_prometheus_text(&self) -> String {
        classic_text(&self.encode())
    }

    /// An SSH connection opened: counted until the guard drops.
    pub fn sftp_connection(&'static self) -> ConnectionGuard {
        self.sftp_connections.inc();
        ConnectionGuard(self)
    }

    /// A login attempt: `result` is `success` or `failure`.
    pub fn sftp_login(&self, result: &str) {
        self.sftp_logins.get_or_create(&vec![("result", result.to_owned())]).inc();
    }

    pub fn sftp_received(&self, bytes: usize) {
        self.sftp_bytes_received.inc_by(bytes as u64);
    }

    pub fn sftp_upload(&self, account: &str) {
        self.sftp_uploads.get_or_create(&self.labels(account, &[])).inc();
    }

    /// A job ended: its status, rows by outcome, and how long it ran.
    pub fn job_finished(&self, summary: &crate::domain::Summary) {
        let account = &summary.account;
        // A dry run (`/validate`) writes nothing: its rows are what would be.
        let kind = if summary.dry_run { "validation" } else { "import" };
        self.jobs_finished
            .get_or_create(&self.labels(account, &[("status", summary.status.as_str()), ("kind", kind)]))
            .inc();
        for (outcome, n) in [
            ("created", summary.created),
            ("updated", summary.updated),
            ("unchanged", summary.unchanged),
            ("failed", summary.failed),
        ] {
            self.rows.get_or_create(&self.labels(account, &[("outcome", outcome), ("kind", kind)])).inc_by(n);
        }
        self.job_duration.observe((summary.finished_at - summary.started_at).as_seconds_f64().max(0.0));
    }

    pub fn batch_committed(&self, took: Duration) {
        self.batch_commit.observe(took.as_secs_f64());
    }

    /// A webhook attempt: `delivered`, `failed` (will retry), `gave_up`.
    pub fn webhook_delivery(&self, account: &str, result: &str) {
        self.webhook_deliveries.get_or_create(&self.labels(account, &[("result", result)])).inc();
    }

    pub fn retention_deleted(&self, folder: &str, files: u64) {
        self.retention_deletions.get_or_create(&vec![("folder", folder.to_owned())]).inc_by(files);
    }
}

/// Holds one count of `intake_sftp_connections`.
pub struct ConnectionGuard(&'static Metrics);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.sftp_connections.dec();
    }
}

/// OpenMetrics text as the classic Prometheus text format.
fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta.and_then(|(p, rest)| Some((p, rest.split_once(' ')?))) {
            Some((prefix, (name, tail))) if counters.contains(name) => {
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn seconds_between(from: &str, to: &str) -> Option<f64> {
    use time::format_description::well_known::Rfc3339;
    let from = time::OffsetDateTime::parse(from, &Rfc3339).ok()?;
    let to = time::OffsetDateTime::parse(to, &Rfc3339).ok()?;
    Some((to - from).as_seconds_f64().max(0.0))
}

/// Seconds from an RFC 3339 time to now (0 for a time in the future).
pub fn age_seconds(at: &str) -> Option<f64> {
    seconds_between(at, &crate::clock::now_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_text_names_counters_by_their_total_series_and_has_no_eof() {
        let om = "# HELP x_uploads Uploads.\n# TYPE x_uploads counter\nx_uploads_total 3\n\
                  # HELP x_open Open.\n# TYPE x_open gauge\nx_open 1\n# EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP x_uploads_total Uploads.\n# TYPE x_uploads_total counter\nx_uploads_total 3\n\
             # HELP x_open Open.\n# TYPE x_open gauge\nx_open 1\n"
        );
    }
}
