//! The operators' screens: every account's jobs, a job and its retry, the
//! audit log of what operators did (who, what, when, from where).

use super::auth::{field, Operator, Source};
use super::merchant::{errors_by_code, own_job, summary_of, upload_of};
use super::pages::{self, AuditRow, JobRow};
use super::{ConsoleState, PageError};
use crate::ingest::arrival::{Arrival, Take, Uploader};
use crate::store::{AuditEntry, JobStatus};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

#[derive(serde::Deserialize)]
pub(super) struct AdminQuery {
    status: Option<String>,
    notice: Option<String>,
    /// Only jobs running (or retrying) for longer than this many minutes
    /// since they started: the ones that may be stuck.
    longer_than: Option<String>,
}

pub(super) async fn jobs(
    State(state): State<ConsoleState>,
    operator: Operator,
    Query(query): Query<AdminQuery>,
) -> Result<Response, PageError> {
    let status = match query.status.as_deref().filter(|s| !s.is_empty()).map(JobStatus::parse) {
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => return Err(PageError::new(StatusCode::BAD_REQUEST, "There is no such job status.")),
        None => None,
    };
    let longer_than = match query.longer_than.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(raw) => match raw.parse::<u32>() {
            Ok(minutes) => Some(minutes),
            Err(_) => {
                return Err(PageError::new(StatusCode::BAD_REQUEST, "Minutes: a whole number, such as 30."));
            }
        },
        None => None,
    };
    let mut found = match (status, longer_than) {
        (None, Some(_)) => {
            // Started and not over: running, or waiting for a retry.
            let mut both = state.store().find_jobs(None, Some(JobStatus::Running), 500).await?;
            both.extend(state.store().find_jobs(None, Some(JobStatus::Retrying), 500).await?);
            both
        }
        _ => state.store().find_jobs(None, status, 500).await?,
    };
    if let Some(minutes) = longer_than {
        let before = crate::clock::now() - time::Duration::minutes(i64::from(minutes));
        found.retain(|job| !job.status.is_final() && job.started_at.is_some_and(|at| at < before));
        found.sort_by_key(|job| job.started_at);
    }
    let page = pages::AdminJobs {
        chrome: operator.chrome(),
        rows: found.iter().map(JobRow::of).collect(),
        statuses: pages::status_choices(status.map(|s| s.as_str()).unwrap_or_default()),
        longer_than: longer_than.map(|m| m.to_string()).unwrap_or_default(),
    };
    Ok(pages::html(&page).into_response())
}

pub(super) async fn job(
    State(state): State<ConsoleState>,
    operator: Operator,
    Path(id): Path<String>,
    Query(query): Query<AdminQuery>,
) -> Result<Response, PageError> {
    let job = own_job(&state, None, &id).await?;
    let page = pages::AdminJob {
        chrome: operator.chrome(),
        row: JobRow::of(&job),
        summary: summary_of(&job),
        by_code: errors_by_code(&job),
        retryable: job.status == JobStatus::Aborted,
        last_error: job.last_error.clone(),
        notice: (query.notice.as_deref() == Some("retried")).then(|| "Queued: a retry of an aborted job.".to_owned()),
    };
    Ok(pages::html(&page).into_response())
}

/// `POST /admin/jobs/{id}/retry`: what `intake jobs retry` does — an
/// aborted job's upload arrives again as a new job.
pub(super) async fn retry(
    State(state): State<ConsoleState>,
    operator: Operator,
    Source(ip): Source,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    operator.check_csrf(field(&form, "csrf"))?;
    let job = own_job(&state, None, &id).await?;
    if job.status != JobStatus::Aborted {
        return Err(PageError::new(StatusCode::CONFLICT, "Only an aborted job can be retried."));
    }
    let Some(source) = upload_of(&state, &job) else {
        return Err(PageError::new(
            StatusCode::GONE,
            format!(
                "The upload of this job is no longer kept (archived uploads are deleted after {} days).",
                state.inner.archive_days
            ),
        ));
    };
    let arrival = Arrival {
        account: &job.account,
        source: &source,
        file_name: &job.file_name,
        kind: job.kind,
        uploader: Uploader::Operator { scopes: job.scopes },
        take: Take::Copy,
        job_id: None,
        mapping: None,
    };
    let new = crate::ingest::arrival::arrive(state.ctx(), arrival).await.map_err(PageError::internal)?;
    let entry = AuditEntry {
        at: 0,
        operator: operator.name.clone(),
        action: "retry".into(),
        target: format!("job {} ({}) as job {}", job.job_id, job.account, new.job_id),
        source: ip.map(|ip| ip.to_string()),
    };
    state.store().audit(&entry).await?;
    tracing::info!(operator = %operator.name, job_id = %job.job_id, new_job_id = %new.job_id, "job retried in the web console");
    Ok(Redirect::to(&format!("/admin/jobs/{}?notice=retried", new.job_id)).into_response())
}

pub(super) async fn audit(State(state): State<ConsoleState>, operator: Operator) -> Result<Response, PageError> {
    let entries = state.store().audit_log(500).await?;
    let rows = entries
        .into_iter()
        .map(|e| AuditRow {
            at: time::OffsetDateTime::from_unix_timestamp(e.at)
                .map(crate::clock::format_rfc3339)
                .unwrap_or_else(|_| e.at.to_string()),
            operator: e.operator,
            action: e.action,
            target: e.target,
            source: e.source.unwrap_or_else(|| "-".into()),
        })
        .collect();
    Ok(pages::html(&pages::Audit { chrome: operator.chrome(), rows }).into_response())
}
