//! The console's pages: one askama template each (`templates/`, checked at
//! compile time, HTML-escaped by default) and the values they show. Merchant
//! text (file names, cells, messages) is only ever template data: escaped,
//! never markup, never a URL.

use askama::Template;
use axum::response::Html;

/// Renders a page; a template that cannot render is a bug, logged and shown
/// as a short error.
pub(super) fn html(page: &impl Template) -> Html<String> {
    match page.render() {
        Ok(body) => Html(body),
        Err(e) => {
            tracing::error!(error = %e, "a console template failed to render");
            Html("<!doctype html><title>Error</title><p>Something went wrong.</p>".into())
        }
    }
}

/// What the layout around every page needs.
pub(super) struct Chrome {
    pub signed_in: bool,
    pub who: String,
    pub csrf: String,
    pub operator: bool,
    pub css: &'static str,
    pub htmx: &'static str,
}

impl Chrome {
    pub(super) fn signed_out() -> Chrome {
        Chrome {
            signed_in: false,
            who: String::new(),
            csrf: String::new(),
            operator: false,
            css: super::assets::css_path(),
            htmx: super::assets::HTMX_PATH,
        }
    }

    pub(super) fn signed_in(who: String, csrf: &str, operator: bool) -> Chrome {
        Chrome { signed_in: true, who, csrf: csrf.to_owned(), operator, ..Chrome::signed_out() }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct Login<'a> {
    pub chrome: Chrome,
    pub action: &'a str,
    pub title: &'a str,
    pub csrf: &'a str,
    pub error: Option<&'a str>,
    /// The user's name again when the code is asked for.
    pub username: &'a str,
    /// TOTP is on for this user: the form asks for the code (`totp`).
    pub ask_totp: bool,
}

#[derive(Template)]
#[template(path = "totp.html")]
pub(super) struct Totp {
    pub chrome: Chrome,
    pub enabled: bool,
    pub secret: String,
    pub url: String,
    pub qr_size: usize,
    pub qr_path: String,
    /// Shown once, right after the enrolment is confirmed.
    pub recovery: Vec<String>,
    pub error: Option<String>,
    pub notice: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
pub(super) struct ErrorPage<'a> {
    pub chrome: Chrome,
    pub status: u16,
    pub message: &'a str,
}

/// One job in a list.
pub(super) struct JobRow {
    pub id: String,
    pub account: String,
    pub file: String,
    pub status: &'static str,
    pub kind: &'static str,
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub received: String,
}

impl JobRow {
    pub(super) fn of(job: &crate::store::Job) -> JobRow {
        JobRow {
            id: job.job_id.to_string(),
            account: job.account.clone(),
            file: job.file_name.clone(),
            status: job.status.as_str(),
            kind: if job.kind.is_dry_run() { "dry run" } else { "import" },
            rows: job.rows_total.max(job.progress.records_done),
            created: job.progress.created,
            updated: job.progress.updated,
            unchanged: job.progress.unchanged,
            failed: job.progress.failed,
            received: crate::clock::format_rfc3339(job.received_at),
        }
    }
}

/// A `<select>` option.
pub(super) struct Choice {
    pub value: &'static str,
    pub selected: bool,
}

pub(super) fn status_choices(selected: &str) -> Vec<Choice> {
    ["", "queued", "running", "retrying", "completed", "rejected", "aborted"]
        .into_iter()
        .map(|value| Choice { value, selected: value == selected })
        .collect()
}

#[derive(Template)]
#[template(path = "jobs.html")]
pub(super) struct Jobs {
    pub chrome: Chrome,
    pub rows: Vec<JobRow>,
    pub statuses: Vec<Choice>,
    pub name: String,
    /// Some job is not finished: the list refreshes itself.
    pub live: bool,
    /// The list's own URL (for the refresh), filters included.
    pub refresh: String,
    pub more: bool,
}

/// A bar of the errors-by-code chart.
pub(super) struct Bar {
    pub label: String,
    pub count: u64,
    pub y: u32,
    pub text_y: u32,
    pub width: u32,
}

/// Errors by code as a horizontal bar chart (SVG made here, not in the browser).
pub(super) struct Chart {
    pub height: u32,
    pub bars: Vec<Bar>,
}

impl Chart {
    pub(super) const BAR: u32 = 300;

    pub(super) fn of(counts: &[(String, u64)]) -> Chart {
        let max = counts.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
        let bars = counts
            .iter()
            .enumerate()
            .map(|(i, (label, count))| {
                let y = i as u32 * 26 + 4;
                Bar {
                    label: label.clone(),
                    count: *count,
                    y,
                    text_y: y + 15,
                    width: ((*count as f64 / max as f64) * Self::BAR as f64).round().max(1.0) as u32,
                }
            })
            .collect();
        Chart { height: counts.len() as u32 * 26 + 8, bars }
    }
}

/// A failed row of the grid: its line, errors and cells as uploaded.
pub(super) struct GridRow {
    pub index: usize,
    pub line: u64,
    pub code: String,
    pub field: String,
    pub message: String,
    pub cells: Vec<GridCell>,
}

pub(super) struct GridCell {
    pub column: String,
    pub value: String,
    /// The column the row's first error names.
    pub bad: bool,
}

pub(super) struct Summary {
    pub status: &'static str,
    pub kind: &'static str,
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub received: String,
    pub finished: Option<String>,
    pub error: Option<(String, String)>,
}

#[derive(Template)]
#[template(path = "job.html")]
pub(super) struct Job {
    pub chrome: Chrome,
    pub id: String,
    pub file: String,
    pub live: bool,
    pub summary: Summary,
    /// The job's reports are in the outbox (not replaced by a later upload).
    pub reports: bool,
    pub has_failed_file: bool,
    /// The account encrypts its reports: downloads only, no rows shown.
    pub encrypted: bool,
    pub has_upload: bool,
    pub by_code: Vec<(String, u64)>,
    pub chart: Chart,
    pub by_column: Vec<(String, u64)>,
    pub header: Vec<String>,
    pub grid: Vec<GridRow>,
    pub page: u64,
    pub pages: u64,
    pub failed_total: u64,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub notice: Option<String>,
}

#[derive(Template)]
#[template(path = "upload.html")]
pub(super) struct Upload {
    pub chrome: Chrome,
    pub csrf: String,
    pub error: Option<String>,
    pub max_bytes: u64,
    /// The drop zone's script (the form works without it).
    pub drop_js: &'static str,
}

#[derive(Template)]
#[template(path = "admin_jobs.html")]
pub(super) struct AdminJobs {
    pub chrome: Chrome,
    pub rows: Vec<JobRow>,
    pub statuses: Vec<Choice>,
    /// The "started longer ago than N minutes" filter as asked ("" for none).
    pub longer_than: String,
}

#[derive(Template)]
#[template(path = "admin_job.html")]
pub(super) struct AdminJob {
    pub chrome: Chrome,
    pub row: JobRow,
    pub summary: Summary,
    pub by_code: Vec<(String, u64)>,
    pub retryable: bool,
    pub last_error: Option<String>,
    pub notice: Option<String>,
}

pub(super) struct AuditRow {
    pub at: String,
    pub operator: String,
    pub action: String,
    pub target: String,
    pub source: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub(super) struct Audit {
    pub chrome: Chrome,
    pub rows: Vec<AuditRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_file_name_is_text_in_the_jobs_table() {
        let row = JobRow {
            id: "0192c1f4-0000-7000-8000-000000000000".into(),
            account: "acme".into(),
            file: "\"><img src=x onerror=alert(1)><script>alert(2)</script>\u{202e}vsc.exe.csv".into(),
            status: "completed",
            kind: "import",
            rows: 1,
            created: 1,
            updated: 0,
            unchanged: 0,
            failed: 0,
            received: "2026-01-01T00:00:00Z".into(),
        };
        let page = Jobs {
            chrome: Chrome::signed_in("acme".into(), "t", false),
            rows: vec![row],
            statuses: status_choices(""),
            name: "<b>".into(),
            live: false,
            refresh: "/jobs".into(),
            more: false,
        };
        let out = page.render().unwrap();
        assert!(!out.contains("<img"), "{out}");
        assert!(!out.contains("<script>alert"), "{out}");
        assert!(out.contains("&#60;img") || out.contains("&lt;img"), "{out}");
        assert!(!out.contains("<b>"));
        assert!(out.contains("<bdi>"), "file names are isolated from the page's text direction");
    }

    #[test]
    fn the_chart_scales_bars_to_the_largest_count() {
        let chart = Chart::of(&[("invalid_phone".into(), 10), ("missing_ref".into(), 5), ("x".into(), 0)]);
        assert_eq!(chart.bars[0].width, Chart::BAR);
        assert_eq!(chart.bars[1].width, Chart::BAR / 2);
        assert_eq!(chart.bars[2].width, 1, "a bar is never invisible");
        assert_eq!(chart.height, 3 * 26 + 8);
    }
}

/// One account in the operators' list.
pub(super) struct AccountRow {
    pub avid: String,
    pub users: u64,
    pub jobs: u64,
    pub disabled: bool,
}

#[derive(Template)]
#[template(path = "admin_accounts.html")]
pub(super) struct AdminAccounts {
    pub chrome: Chrome,
    pub rows: Vec<AccountRow>,
    pub notice: Option<&'static str>,
}

/// One user of an account.
pub(super) struct UserRow {
    pub username: String,
    pub has_password: bool,
    pub keys: usize,
    pub scopes: String,
    pub disabled: bool,
}

/// One API token of an account.
pub(super) struct TokenRow {
    pub id: String,
    pub username: String,
    pub name: String,
    pub scopes: String,
    pub created: String,
    pub expires: String,
    /// active, expired or revoked.
    pub state: &'static str,
}

#[derive(Template)]
#[template(path = "admin_account.html")]
pub(super) struct AdminAccount {
    pub chrome: Chrome,
    pub avid: String,
    pub disabled: bool,
    pub users: Vec<UserRow>,
    pub tokens: Vec<TokenRow>,
    pub notice: Option<&'static str>,
    /// A password just generated for this user: shown this once.
    pub generated: Option<(String, String)>,
}

/// One node as `intake nodes` shows it.
pub(super) struct NodeRow {
    pub id: String,
    pub state: &'static str,
    pub heartbeat: String,
    pub up: String,
    pub host: String,
    pub version: String,
    pub pid: u64,
    pub jobs: Vec<crate::store::OwnedJob>,
}

#[derive(Template)]
#[template(path = "admin_nodes.html")]
pub(super) struct AdminNodes {
    pub chrome: Chrome,
    pub rows: Vec<NodeRow>,
}

/// One webhook delivery not delivered yet or given up.
pub(super) struct DeliveryRow {
    pub account: String,
    pub event: String,
    pub job: String,
    pub status: &'static str,
    pub attempts: u32,
    pub last_error: String,
    pub next_attempt: String,
}

#[derive(Template)]
#[template(path = "admin_webhooks.html")]
pub(super) struct AdminWebhooks {
    pub chrome: Chrome,
    pub rows: Vec<DeliveryRow>,
}

/// One of the account's mapping profiles in the list.
pub(super) struct MappingRow {
    pub name: String,
    pub sha256: String,
    pub updated: String,
}

#[derive(Template)]
#[template(path = "mappings.html")]
pub(super) struct Mappings {
    pub chrome: Chrome,
    pub csrf: String,
    pub profiles: Vec<MappingRow>,
    /// The login may store profiles (`customers:create`).
    pub can_upload: bool,
    pub error: Option<String>,
    /// The name the refused upload asked for, shown again.
    pub name: String,
    pub max_bytes: usize,
    pub max_profiles: u32,
}

#[derive(Template)]
#[template(path = "mapping.html")]
pub(super) struct MappingView {
    pub chrome: Chrome,
    pub name: String,
    pub text: String,
    pub sha256: String,
    pub updated: String,
}
