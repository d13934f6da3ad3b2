//! The merchant's screens: their jobs, a job (summary, errors, the failed
//! rows to fix and resubmit, downloads), uploading a file. Only the signed-in
//! user's account: another account's job id is answered as if it did not
//! exist.

use super::auth::{field, Merchant};
use super::pages::{self, Chart, GridCell, GridRow, JobRow, Summary};
use super::rows::{self, PAGE};
use super::{ConsoleState, PageError};
use crate::domain::JobId;
use crate::ingest::arrival::{Arrival, Take, Uploader};
use crate::mailbox::{Folder, PublishedReports, ReportNames};
use crate::store::{Job, JobKind, JobStatus};
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde_json::Value;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// The prefix of an upload being received from the browser, hidden in its folder.
const RECEIVING_PREFIX: &str = ".intake-console.";
/// Jobs a list shows, newest first.
const LISTED: usize = 200;
/// Jobs a name filter looks through, newest first.
const SEARCHED: u32 = 5000;

pub(super) async fn home(merchant: Result<Merchant, super::auth::SignIn>) -> Redirect {
    match merchant {
        Ok(_) => Redirect::to("/jobs"),
        Err(_) => Redirect::to("/login"),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct JobsQuery {
    status: Option<String>,
    name: Option<String>,
}

pub(super) async fn jobs(
    State(state): State<ConsoleState>,
    merchant: Merchant,
    Query(query): Query<JobsQuery>,
) -> Result<Response, PageError> {
    let status = query.status.as_deref().filter(|s| !s.is_empty());
    let status = match status.map(JobStatus::parse) {
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => return Err(PageError::new(StatusCode::BAD_REQUEST, "There is no such job status.")),
        None => None,
    };
    let name = query.name.as_deref().unwrap_or_default().trim().to_owned();
    let limit = if name.is_empty() { LISTED as u32 + 1 } else { SEARCHED };
    let found = state.store().find_jobs(Some(merchant.account.as_str()), status, limit).await?;
    let needle = name.to_lowercase();
    let mut rows: Vec<JobRow> = found
        .iter()
        .filter(|j| j.status != JobStatus::Arriving)
        .filter(|j| needle.is_empty() || j.file_name.to_lowercase().contains(&needle))
        .map(JobRow::of)
        .take(LISTED + 1)
        .collect();
    let more = rows.len() > LISTED;
    rows.truncate(LISTED);
    let live = rows.iter().any(|r| matches!(r.status, "queued" | "running" | "retrying" | "arriving"));
    let refresh = format!("/jobs?status={}&name={}", status.map(|s| s.as_str()).unwrap_or_default(), url_encode(&name));
    let page = pages::Jobs {
        chrome: merchant.chrome(),
        rows,
        statuses: pages::status_choices(status.map(|s| s.as_str()).unwrap_or_default()),
        name,
        live,
        refresh,
        more,
    };
    Ok(pages::html(&page).into_response())
}

/// Percent-encodes a query value.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A job id from a URL: only what `JobId::generate` makes.
fn job_id(raw: &str) -> Result<JobId, PageError> {
    uuid::Uuid::try_parse(raw).map_err(|_| PageError::not_found())?;
    Ok(JobId::from(raw.to_ascii_lowercase()))
}

/// The job, if it is the merchant's account's.
pub(super) async fn own_job(state: &ConsoleState, account: Option<&str>, raw: &str) -> Result<Job, PageError> {
    let id = job_id(raw)?;
    match state.store().get_job(id.as_str()).await? {
        Some(job) if account.is_none_or(|a| a == job.account) && job.status != JobStatus::Arriving => Ok(job),
        _ => Err(PageError::not_found()),
    }
}

/// A job's report files, if the outbox's are still this job's (a later
/// upload of the same name replaces them).
pub(super) struct Reports {
    pub results: PathBuf,
    pub failed: Option<PathBuf>,
    /// The account encrypts its reports (`.pgp` files, never shown as rows).
    pub encrypted: bool,
}

pub(super) fn reports_of(state: &ConsoleState, job: &Job) -> Option<Reports> {
    if !job.status.is_final() {
        return None;
    }
    let names = ReportNames::of(&job.file_name, job.kind.is_dry_run());
    let outbox = state.ctx().layout.outbox(&job.account);
    let text = std::fs::read_to_string(outbox.join(&names.summary)).ok()?;
    let summary: Value = serde_json::from_str(&text).ok()?;
    if summary["job_id"] != job.job_id.as_str() {
        return None;
    }
    let published = PublishedReports::of(&names, &summary);
    let failed = outbox.join(&published.failed);
    Some(Reports {
        results: outbox.join(&published.results),
        failed: failed.is_file().then_some(failed),
        encrypted: published.encrypted,
    })
}

/// Where the job's upload is kept: archived, or still in its spool.
pub(super) fn upload_of(state: &ConsoleState, job: &Job) -> Option<PathBuf> {
    let name = crate::mailbox::archive_name(&crate::clock::compact(job.received_at), &job.job_id, &job.file_name);
    let archived = state.ctx().layout.archive(&job.account).join(name);
    [archived, PathBuf::from(&job.spool_path)].into_iter().find(|p| p.is_file())
}

pub(super) fn summary_of(job: &Job) -> Summary {
    let error = job.outcome.as_ref().and_then(|o| o.error.as_ref()).map(|e| (e.code.clone(), e.message.clone()));
    Summary {
        status: job.status.as_str(),
        kind: if job.kind.is_dry_run() { "dry run (nothing written)" } else { "import" },
        rows: job.rows_total.max(job.progress.records_done),
        created: job.progress.created,
        updated: job.progress.updated,
        unchanged: job.progress.unchanged,
        failed: job.progress.failed,
        received: crate::clock::format_rfc3339(job.received_at),
        finished: job.finished_at.map(crate::clock::format_rfc3339),
        error,
    }
}

pub(super) fn errors_by_code(job: &Job) -> Vec<(String, u64)> {
    let mut by_code: Vec<(String, u64)> = job
        .outcome
        .as_ref()
        .map(|o| o.errors_by_code.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default();
    by_code.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    by_code
}

#[derive(serde::Deserialize)]
pub(super) struct JobQuery {
    page: Option<u64>,
    notice: Option<String>,
}

pub(super) async fn job(
    State(state): State<ConsoleState>,
    merchant: Merchant,
    Path(id): Path<String>,
    Query(query): Query<JobQuery>,
) -> Result<Response, PageError> {
    let job = own_job(&state, Some(merchant.account.as_str()), &id).await?;
    let reports = reports_of(&state, &job);
    let (index, grid, page, pages) = match &reports {
        // Encrypted rows are for the merchant's key only: no grid.
        Some(r) if r.encrypted => (None, Vec::new(), 0, 1),
        Some(r) => {
            let (results, failed) = (r.results.clone(), r.failed.clone());
            let requested = query.page.unwrap_or(0);
            let st = state.clone();
            let loaded = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                let index = st.inner.rows_index.get(&results, failed.as_deref())?;
                let pages = index.failed.div_ceil(PAGE).max(1);
                let page = requested.min(pages - 1);
                let rows = rows::page(&index, &results, failed.as_deref(), page * PAGE)?;
                Ok((index, rows, page, pages))
            })
            .await
            .map_err(PageError::internal)?
            .map_err(PageError::internal)?;
            let (index, rows, page, pages) = loaded;
            let grid = grid_of(&index.header, rows, page);
            (Some(index), grid, page, pages)
        }
        None => (None, Vec::new(), 0, 1),
    };
    let by_code = errors_by_code(&job);
    let (from, to) = state.store().resubmissions(job.job_id.as_str()).await?;
    let notice = match query.notice.as_deref() {
        Some("resubmitted") => Some("The rows were resubmitted as this new job.".to_owned()),
        Some("uploaded") => Some("Uploaded: the file is a job now.".to_owned()),
        _ => None,
    };
    let page = pages::Job {
        chrome: merchant.chrome(),
        id: job.job_id.to_string(),
        file: job.file_name.clone(),
        live: !job.status.is_final(),
        summary: summary_of(&job),
        reports: reports.is_some(),
        has_failed_file: reports.as_ref().is_some_and(|r| r.failed.is_some()),
        encrypted: reports.as_ref().is_some_and(|r| r.encrypted),
        has_upload: upload_of(&state, &job).is_some(),
        chart: Chart::of(&by_code),
        by_code,
        by_column: index.as_ref().map(|i| i.by_column.clone()).unwrap_or_default(),
        header: index.as_ref().map(|i| i.header.clone()).unwrap_or_default(),
        failed_total: index.as_ref().map_or(0, |i| i.failed),
        grid,
        page,
        pages,
        from,
        to,
        notice,
    };
    Ok(pages::html(&page).into_response())
}

fn grid_of(header: &[String], rows: Vec<rows::FailedRow>, page: u64) -> Vec<GridRow> {
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            let width = header.len().max(row.cells.len());
            let cells = (0..width)
                .map(|c| {
                    let column = header.get(c).cloned().unwrap_or_else(|| format!("column {}", c + 1));
                    let bad = !row.field.is_empty() && column.trim().eq_ignore_ascii_case(&row.field);
                    GridCell { value: row.cells.get(c).cloned().unwrap_or_default(), column, bad }
                })
                .collect();
            GridRow {
                index: page as usize * PAGE as usize + i,
                line: row.line,
                code: row.code,
                field: row.field,
                message: row.message,
                cells,
            }
        })
        .collect()
}

/// An encrypted report's content type.
const PGP: &str = "application/pgp-encrypted";

/// A report file as a download, streamed.
async fn download(path: Option<PathBuf>, name: String, kind: &'static str) -> Result<Response, PageError> {
    let file = match path {
        Some(p) => tokio::fs::File::open(p).await.map_err(|_| PageError::not_found())?,
        None => return Err(PageError::not_found()),
    };
    let disposition = format!("attachment; filename=\"{}\"", safe_file_name(&name));
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok((
        [(header::CONTENT_TYPE, kind.to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A file name for `Content-Disposition`: ASCII letters, digits and `._-`.
fn safe_file_name(name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    safe.trim_start_matches('.').chars().take(200).collect()
}

pub(super) async fn download_results(
    State(state): State<ConsoleState>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let job = own_job(&state, Some(merchant.account.as_str()), &id).await?;
    let names = ReportNames::of(&job.file_name, job.kind.is_dry_run());
    match reports_of(&state, &job) {
        Some(r) if r.encrypted => download(Some(r.results), format!("{}.pgp", names.results), PGP).await,
        r => download(r.map(|r| r.results), names.results, "text/csv; charset=utf-8").await,
    }
}

pub(super) async fn download_failed(
    State(state): State<ConsoleState>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let job = own_job(&state, Some(merchant.account.as_str()), &id).await?;
    let names = ReportNames::of(&job.file_name, job.kind.is_dry_run());
    match reports_of(&state, &job) {
        Some(r) if r.encrypted => download(r.failed, format!("{}.pgp", names.failed), PGP).await,
        r => download(r.and_then(|r| r.failed), names.failed, "text/csv").await,
    }
}

pub(super) async fn download_upload(
    State(state): State<ConsoleState>,
    merchant: Merchant,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let job = own_job(&state, Some(merchant.account.as_str()), &id).await?;
    download(upload_of(&state, &job), job.file_name.clone(), "application/octet-stream").await
}

pub(super) async fn upload_form(State(state): State<ConsoleState>, merchant: Merchant) -> Response {
    upload_page(&state, &merchant, StatusCode::OK, None)
}

fn upload_page(state: &ConsoleState, merchant: &Merchant, status: StatusCode, error: Option<String>) -> Response {
    let page = pages::Upload {
        chrome: merchant.chrome(),
        csrf: merchant.csrf.clone(),
        error,
        max_bytes: state.ctx().limits.max_file_bytes,
        drop_js: super::assets::drop_path(),
    };
    (status, pages::html(&page)).into_response()
}

/// Removes a partly received upload when dropped (an error, a cut connection).
struct Receiving(Option<PathBuf>);

impl Drop for Receiving {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The name a browser gave a file, without any folder it may carry.
fn base_name(raw: &str) -> &str {
    raw.rsplit(['/', '\\']).next().unwrap_or(raw)
}

/// `POST /upload` (multipart: `csrf`, `folder`, then `file`): the file is
/// streamed into a hidden name in the folder, then arrives as an SFTP
/// upload's does (same names, same limits).
pub(super) async fn upload(
    State(state): State<ConsoleState>,
    merchant: Merchant,
    mut form: Multipart,
) -> Result<Response, PageError> {
    let bad = |m: &str| Ok(upload_page(&state, &merchant, StatusCode::UNPROCESSABLE_ENTITY, Some(m.to_owned())));
    let mut csrf = None;
    let mut folder = None;
    let max = state.ctx().limits.max_file_bytes;
    loop {
        let Some(mut part) =
            form.next_field().await.map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "The upload was cut."))?
        else {
            return bad("Choose a file to upload.");
        };
        match part.name() {
            Some("csrf") => csrf = Some(part.text().await.map_err(|_| PageError::not_found())?),
            Some("folder") => folder = Some(part.text().await.map_err(|_| PageError::not_found())?),
            Some("file") => {
                merchant.check_csrf(csrf.as_deref())?;
                let (folder, kind) = match folder.as_deref() {
                    Some("customers") => (Folder::Customers, JobKind::Import),
                    Some("validate") => (Folder::Validate, JobKind::Validation),
                    _ => return bad("Choose /customers or /validate."),
                };
                let name = base_name(part.file_name().unwrap_or_default()).to_owned();
                if !crate::mailbox::is_upload_name(&name) {
                    return bad("The file's name must end in .csv or .csv.gz.");
                }
                if let Some(problem) = crate::mailbox::upload_name_problem(&name) {
                    return bad(&problem);
                }
                let id = JobId::generate();
                let dir = state.ctx().layout.folder(merchant.account.as_str(), folder);
                let temp = dir.join(format!("{RECEIVING_PREFIX}{id}"));
                let mut guard = Receiving(Some(temp.clone()));
                let mut file = tokio::fs::File::create(&temp).await.map_err(PageError::internal)?;
                let mut written = 0u64;
                while let Some(chunk) =
                    part.chunk().await.map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "The upload was cut."))?
                {
                    written += chunk.len() as u64;
                    if written > max {
                        return Ok(upload_page(
                            &state,
                            &merchant,
                            StatusCode::PAYLOAD_TOO_LARGE,
                            Some(format!("The file is over the limit of {max} bytes.")),
                        ));
                    }
                    file.write_all(&chunk).await.map_err(PageError::internal)?;
                }
                file.flush().await.map_err(PageError::internal)?;
                file.sync_all().await.map_err(PageError::internal)?;
                drop(file);
                let job = arrive(&state, &merchant, &temp, &name, kind, id, None).await?;
                guard.0 = None;
                tracing::info!(account = %merchant.account, job_id = %job.job_id, user = %merchant.username,
                    bytes = written, "a file was uploaded in the web console");
                return Ok(Redirect::to(&format!("/jobs/{}?notice=uploaded", job.job_id)).into_response());
            }
            _ => continue,
        }
    }
}

/// Makes a job of a complete file in a folder, as the API's bulk jobs do.
async fn arrive(
    state: &ConsoleState,
    merchant: &Merchant,
    source: &std::path::Path,
    name: &str,
    kind: JobKind,
    id: JobId,
    mapping: Option<std::sync::Arc<crate::domain::mapping::Profile>>,
) -> Result<Job, PageError> {
    let arrival = Arrival {
        account: merchant.account.as_str(),
        source,
        file_name: name,
        kind,
        uploader: Uploader::Operator { scopes: merchant.scopes },
        take: Take::Move,
        job_id: Some(id),
        mapping,
    };
    crate::ingest::arrival::arrive(state.ctx(), arrival).await.map_err(PageError::internal)
}

/// `POST /jobs/{id}/resubmit`: the rows of the grid's page (edited, those
/// kept) with `failed.csv`'s header become a new file and job, linked to
/// this one; with `all=1`, every failed row of the job does (streamed from
/// `failed.csv`), the page's edits applied and the rows it leaves out left
/// out. The new file is read with the mapping profile the job was read with
/// (its columns are the upload's, whatever its new name matches).
/// Whether a job made from this one's failed rows is still arriving, queued
/// or running (all of them again would only queue the same work twice).
async fn resubmission_pending(state: &ConsoleState, job: &Job) -> Result<bool, PageError> {
    let (_, made) = state.store().resubmissions(job.job_id.as_str()).await?;
    for id in made {
        if state.store().get_job(&id).await?.is_some_and(|j| !j.status.is_final()) {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(super) async fn resubmit(
    State(state): State<ConsoleState>,
    merchant: Merchant,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    merchant.check_csrf(field(&form, "csrf"))?;
    let job = own_job(&state, Some(merchant.account.as_str()), &id).await?;
    let reports = reports_of(&state, &job).filter(|r| !r.encrypted).ok_or_else(PageError::not_found)?;
    let all = field(&form, "all") == Some("1");
    let nothing = || {
        Err(PageError::new(StatusCode::UNPROCESSABLE_ENTITY, "This job has no failed rows to resubmit: nothing to do."))
    };
    let Some(failed) = reports.failed.clone() else {
        return if all { nothing() } else { Err(PageError::not_found()) };
    };
    let st = state.clone();
    let results = reports.results.clone();
    let failed_path = failed.clone();
    let index = tokio::task::spawn_blocking(move || st.inner.rows_index.get(&results, Some(&failed_path)))
        .await
        .map_err(PageError::internal)?
        .map_err(PageError::internal)?;
    if all && index.failed == 0 {
        return nothing();
    }
    if all && resubmission_pending(&state, &job).await? {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            "An earlier resubmission of this job's failed rows is still being processed: wait for it to finish, \
             then fix what still fails from its page.",
        ));
    }
    let edits = page_edits(&form, index.header.len());
    let rows: Vec<Vec<String>> = edits.values().filter_map(|r| r.clone()).collect();
    if !all && rows.is_empty() {
        return Err(PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "No row was kept for resubmission: nothing to do.",
        ));
    }
    let mapping = crate::ingest::context::job_settings(state.ctx(), &job)
        .await
        .map_err(PageError::internal)?
        .mapping
        .applied()
        .map(|a| a.profile.clone());
    let dry_run = field(&form, "dry_run") == Some("1");
    let new_id = JobId::generate();
    let stem = crate::mailbox::report_stem(&job.file_name);
    let stem: String = stem.chars().take(100).collect();
    let name = format!("{stem}.fix-{}.csv", &new_id.as_str()[..8]);
    let (folder, kind) =
        if dry_run { (Folder::Validate, JobKind::Validation) } else { (Folder::Customers, JobKind::Import) };
    let dir = state.ctx().layout.folder(merchant.account.as_str(), folder);
    let temp = dir.join(format!("{RECEIVING_PREFIX}{new_id}"));
    let mut guard = Receiving(Some(temp.clone()));
    let path = temp.clone();
    let written = if all {
        tokio::task::spawn_blocking(move || rows::write_all_failed(&index, &failed, &edits, &path))
            .await
            .map_err(PageError::internal)?
            .map_err(PageError::internal)?
    } else {
        let header = index.header.clone();
        let n = rows.len() as u64;
        tokio::task::spawn_blocking(move || write_csv(&path, &header, &rows))
            .await
            .map_err(PageError::internal)?
            .map_err(PageError::internal)?;
        n
    };
    if written == 0 {
        return Err(PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "No row was kept for resubmission: nothing to do.",
        ));
    }
    let new = arrive(&state, &merchant, &temp, &name, kind, new_id, mapping).await?;
    guard.0 = None;
    state.store().record_resubmission(new.job_id.as_str(), job.job_id.as_str()).await?;
    tracing::info!(account = %merchant.account, job_id = %new.job_id, from = %job.job_id, user = %merchant.username,
        rows = written, all, "failed rows resubmitted in the web console");
    Ok(Redirect::to(&format!("/jobs/{}?notice=resubmitted", new.job_id)).into_response())
}

/// The rows a grid form showed (`lineI`, `cI_J`) by index: those kept
/// (`keepI`) with their cells, the others `None`.
fn page_edits(form: &[(String, String)], width: usize) -> rows::PageEdits {
    let shown: std::collections::BTreeSet<u64> =
        form.iter().filter_map(|(key, _)| key.strip_prefix("line").and_then(|i| i.parse::<u64>().ok())).collect();
    let mut edits: rows::PageEdits = shown.into_iter().map(|i| (i, None)).collect();
    for (i, row) in edited_rows(form, width) {
        edits.insert(i as u64, Some(row));
    }
    edits
}

/// The kept rows of a grid form (`keepI`, `cI_J`), in row order; cells
/// past the header that are empty are dropped, missing ones are empty.
fn edited_rows(form: &[(String, String)], width: usize) -> Vec<(usize, Vec<String>)> {
    let mut rows: std::collections::BTreeMap<usize, Vec<(usize, String)>> = Default::default();
    let mut kept = std::collections::BTreeSet::new();
    for (key, value) in form {
        if let Some(i) = key.strip_prefix("keep").and_then(|i| i.parse::<usize>().ok()) {
            kept.insert(i);
        } else if let Some((i, j)) = key.strip_prefix('c').and_then(|rest| rest.split_once('_')) {
            if let (Ok(i), Ok(j)) = (i.parse::<usize>(), j.parse::<usize>()) {
                if j < 4096 {
                    rows.entry(i).or_default().push((j, value.clone()));
                }
            }
        }
    }
    rows.into_iter()
        .filter(|(i, _)| kept.contains(i))
        .map(|(i, cells)| {
            let len = cells.iter().map(|(j, _)| j + 1).max().unwrap_or(0);
            let mut row = vec![String::new(); len];
            for (j, v) in cells {
                row[j] = v;
            }
            while row.len() > width && row.last().is_some_and(|c| c.is_empty()) {
                row.pop();
            }
            // A cell the form did not send is empty (the row keeps the header's width).
            if row.len() < width {
                row.resize(width, String::new());
            }
            (i, row)
        })
        .collect()
}

fn write_csv(path: &std::path::Path, header: &[String], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut out = csv::WriterBuilder::new().flexible(true).from_path(path)?;
    out.write_record(header)?;
    for row in rows {
        out.write_record(row)?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kept_rows_are_resubmitted_in_order_with_their_edits() {
        let form: Vec<(String, String)> = [
            ("csrf", "t"),
            ("keep51", "1"),
            ("c51_0", "b"),
            ("c51_1", "+15555001234"),
            ("c50_0", "a"),
            ("c50_1", "bad"),
            ("keep50", "1"),
            ("c52_0", "dropped"),
            ("c50_2", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let rows = edited_rows(&form, 2);
        assert_eq!(
            rows,
            vec![(50, vec!["a".to_owned(), "bad".to_owned()]), (51, vec!["b".to_owned(), "+15555001234".to_owned()])]
        );
        let mut shown = form.clone();
        shown.extend([("line52".to_owned(), "9".to_owned()), ("line50".to_owned(), "7".to_owned())]);
        let edits = page_edits(&shown, 2);
        assert_eq!(edits.len(), 3);
        assert_eq!(edits[&50], Some(vec!["a".to_owned(), "bad".to_owned()]));
        assert_eq!(edits[&51], Some(vec!["b".to_owned(), "+15555001234".to_owned()]), "kept without its line field");
        assert_eq!(edits[&52], None, "shown and not kept: left out");
        let sparse: Vec<(String, String)> =
            [("keep0", "1"), ("c0_0", "a")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        assert_eq!(edited_rows(&sparse, 3), vec![(0, vec!["a".to_owned(), String::new(), String::new()])]);
    }

    #[test]
    fn a_download_name_is_plain_ascii() {
        assert_eq!(safe_file_name("../\"x\"\r\n.csv"), "__x___.csv");
        assert_eq!(base_name("C:\\Users\\a\\May.csv"), "May.csv");
        assert_eq!(url_encode("a b&c"), "a%20b%26c");
    }
}
