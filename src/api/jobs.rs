//! Bulk jobs over HTTP, on the SFTP uploads' engine: an open job is a hidden
//! file in the account's `/customers` (or `/validate` for a dry run) with a
//! small record beside it, both on the data directory every node shares;
//! `complete` hands the file to the same arrival as an SFTP upload, under
//! the id chosen at create. Reports go to the account's `/outbox`.

use super::auth::Caller;
use super::problem::{Problem, ProblemBody};
use super::ApiState;
use crate::domain::JobId;
use crate::ingest::arrival::{Arrival, Take, Uploader};
use crate::mailbox::{Folder, PublishedReports, ReportNames};
use crate::store::{Job, JobKind, JobStatus};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// The prefix of an open job's data file (and `.json` record) in the folder.
const OPEN_PREFIX: &str = ".intake-api.";

/// What `POST …/jobs` records about an open job.
#[derive(serde::Serialize, serde::Deserialize)]
struct OpenJob {
    file: String,
    dry_run: bool,
    username: String,
    create: bool,
    update: bool,
    /// The mapping profile the file is read with (`None`: chosen as for an
    /// SFTP upload).
    #[serde(default)]
    mapping: Option<String>,
}

fn folder(dry_run: bool) -> Folder {
    if dry_run {
        Folder::Validate
    } else {
        Folder::Customers
    }
}

/// A job id from a path: only what `JobId::generate` makes (a UUID).
fn job_id(raw: &str) -> Result<JobId, Problem> {
    uuid::Uuid::try_parse(raw).map_err(|_| Problem::not_found("job"))?;
    Ok(JobId::from(raw.to_ascii_lowercase()))
}

/// The data file and record of an open job, in whichever folder it is.
fn open_paths(state: &ApiState, avid: &str, id: &JobId) -> Option<(PathBuf, PathBuf, OpenJob)> {
    let layout = &state.ctx.as_ref()?.layout;
    for dry_run in [false, true] {
        let dir = layout.folder(avid, folder(dry_run));
        let record = dir.join(format!("{OPEN_PREFIX}{id}.json"));
        if let Ok(text) = std::fs::read_to_string(&record) {
            let open: OpenJob = serde_json::from_str(&text).ok()?;
            return Some((dir.join(format!("{OPEN_PREFIX}{id}")), record, open));
        }
    }
    None
}

/// An open job held by one request at a time (complete, a PUT, discard):
/// an exclusive `flock` on its record, which the kernel releases when the
/// process dies, so a crash never leaves a job held.
struct Held(#[allow(dead_code)] std::fs::File);

/// Takes the job's lock, waiting up to `wait` for another request to let
/// it go; `Ok(None)` if the record is gone (completed or discarded meanwhile).
async fn hold(record: &std::path::Path, wait: std::time::Duration) -> Result<Option<Held>, Problem> {
    use rustix::fs::{flock, FlockOperation};
    let Ok(file) = std::fs::File::open(record) else { return Ok(None) };
    let deadline = std::time::Instant::now() + wait;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "job_busy",
                    "another request is writing or completing this job; try again when it has ended",
                ));
            }
            Err(e) => return Err(Problem::internal(e)),
        }
    }
    // Held, but removed by the holder before us: the job is not open any more.
    Ok(record.exists().then_some(Held(file)))
}

/// The name a completing job's data has between `complete`'s steps.
fn completing_path(data: &std::path::Path, id: &JobId) -> PathBuf {
    data.with_file_name(format!("{OPEN_PREFIX}{id}.completing"))
}

fn caller_account(caller: &Caller, avid: &str) -> Result<(), Problem> {
    caller.check_account(avid)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateJob {
    file: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    mapping: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/accounts/{avid}/jobs",
    tag = "jobs",
    params(("avid" = String, Path, description = "The account's AVID")),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 201, description = "The open job", body = Object),
        (status = 403, description = "The token lacks customers:create", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "The body is over max_json_bytes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid job: file name (invalid_file_name), a mapping profile the account does not have (unknown_mapping)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the token's) or job", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token attempts from this address, or the token is over its request rate (Retry-After)", body = ProblemBody, content_type = "application/problem+json")
    )
)]
/// `POST /api/v1/accounts/{avid}/jobs`.
pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    Path(avid): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    caller_account(&caller, &avid)?;
    caller.require_create()?;
    let request: CreateJob = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_job", format!("the job is invalid: {e}"))
    })?;
    if let Some(name) = &request.mapping {
        mapping_profile(&state, &avid, name).await?;
    }
    if !crate::mailbox::is_upload_name(&request.file) || request.file.contains('/') {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_file_name",
            "file must be a name ending in .csv or .csv.gz (no folders)",
        ));
    }
    if let Some(problem) = crate::mailbox::upload_name_problem(&request.file) {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_file_name", problem));
    }
    let ctx = state.ctx.as_ref().ok_or_else(|| Problem::internal("no job context"))?;
    let id = JobId::generate();
    let dir = ctx.layout.folder(&avid, folder(request.dry_run));
    let open = OpenJob {
        file: request.file.clone(),
        dry_run: request.dry_run,
        username: caller.username.clone(),
        create: caller.scopes.create,
        update: caller.scopes.update,
        mapping: request.mapping.clone(),
    };
    let record = serde_json::to_vec(&open).map_err(Problem::internal)?;
    std::fs::File::create(dir.join(format!("{OPEN_PREFIX}{id}"))).map_err(Problem::internal)?;
    crate::mailbox::publish_atomically(&dir.join(format!("{OPEN_PREFIX}{id}.json")), &record)
        .map_err(Problem::internal)?;
    let location = format!("/api/v1/accounts/{avid}/jobs/{id}");
    let body = json!({"id": id.as_str(), "file": request.file, "state": "open", "dry_run": request.dry_run, "bytes_received": 0});
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(body)).into_response())
}

/// The account's mapping profile (or enabled preset) called `name`, as an
/// SFTP upload whose name its `files` glob matches is read with it.
async fn mapping_profile(
    state: &ApiState,
    avid: &str,
    name: &str,
) -> Result<std::sync::Arc<crate::domain::mapping::Profile>, Problem> {
    let found = crate::ingest::mappings::named(&state.store, avid, name).await.map_err(Problem::internal)?;
    found.ok_or_else(|| {
        let shown = crate::domain::customer::quote(name);
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_mapping",
            format!("the account has no mapping profile {shown} (its own, or an enabled preset)"),
        )
    })
}

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, Problem> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else { return Ok(None) };
    let bad = || {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_content_range", "Content-Range must be bytes START-END/TOTAL")
    };
    let text = value.to_str().map_err(|_| bad())?;
    let range = text.strip_prefix("bytes ").ok_or_else(bad)?;
    let (span, _total) = range.split_once('/').ok_or_else(bad)?;
    let (start, end) = span.split_once('-').ok_or_else(bad)?;
    let (start, end): (u64, u64) = (start.parse().map_err(|_| bad())?, end.parse().map_err(|_| bad())?);
    if end < start {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

#[utoipa::path(
    put,
    path = "/api/v1/accounts/{avid}/jobs/{id}/data",
    tag = "jobs",
    params(("avid" = String, Path, description = "The account's AVID"), ("id" = String, Path, description = "The job's id"), ("Content-Range" = Option<String>, Header, description = "bytes START-END/TOTAL: appends where the last piece ended")),
    responses(
        (status = 200, description = "Bytes received so far", body = Object),
        (status = 400, description = "A bad Content-Range or a body shorter than it", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The job is completed (job_not_open), or another request is writing it (job_busy)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Over max_file_bytes", body = ProblemBody, content_type = "application/problem+json"),
        (status = 416, description = "The piece does not start where the last ended", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the token's) or job", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token attempts from this address, or the token is over its request rate (Retry-After)", body = ProblemBody, content_type = "application/problem+json")
    )
)]
/// `PUT /api/v1/accounts/{avid}/jobs/{id}/data`: the file's bytes, streamed
/// to disk; with `Content-Range` appended where the last piece ended.
pub(super) async fn put_data(
    State(state): State<ApiState>,
    caller: Caller,
    Path((avid, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    caller_account(&caller, &avid)?;
    let id = job_id(&id)?;
    let Some((data, record, _)) = open_paths(&state, &avid, &id) else {
        return Err(not_open(&state, &avid, &id).await);
    };
    // One writer at a time, and never while the job is being completed.
    let Some(_held) = hold(&record, std::time::Duration::ZERO).await? else {
        return Err(not_open(&state, &avid, &id).await);
    };
    let max = state.ctx.as_ref().map_or(u64::MAX, |c| c.limits.max_file_bytes);
    let Ok(meta) = tokio::fs::metadata(&data).await else {
        // Taken by a complete that did not finish: it is completed on retry.
        return Err(not_open(&state, &avid, &id).await);
    };
    let have = meta.len();
    let range = content_range(&headers)?;
    let file = match range {
        Some((start, _)) if start != have => {
            return Err(Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_contiguous",
                format!("the job has {have} bytes: the next piece starts at byte {have}"),
            ));
        }
        Some(_) => tokio::fs::OpenOptions::new().append(true).open(&data).await,
        None => tokio::fs::OpenOptions::new().write(true).truncate(true).open(&data).await,
    }
    .map_err(Problem::internal)?;
    // Written in large pieces: each write of a tokio file is a hop to the
    // blocking pool, and a body comes in frames of a few KiB.
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut written = if range.is_some() { have } else { 0 };
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // Cut: what came is kept, so the client resumes from bytes_received.
            file.flush().await.map_err(Problem::internal)?;
            return Err(Problem::new(StatusCode::BAD_REQUEST, "body_incomplete", "the body ended early"));
        };
        let Ok(bytes) = frame.into_data() else { continue };
        written += bytes.len() as u64;
        if written > max {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "file_too_large",
                format!("the file is over max_file_bytes ({max} bytes)"),
            ));
        }
        file.write_all(&bytes).await.map_err(Problem::internal)?;
    }
    file.flush().await.map_err(Problem::internal)?;
    if let Some((start, end)) = range {
        if written != end + 1 {
            let got = written - start;
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_content_range",
                format!("Content-Range announced {} bytes; {got} came", end - start + 1),
            ));
        }
    }
    Ok(Json(json!({"id": id.as_str(), "state": "open", "bytes_received": written})).into_response())
}

/// Why a job is not open: unknown (404) or completed, maybe still arriving (409).
async fn not_open(state: &ApiState, avid: &str, id: &JobId) -> Problem {
    // Being completed: its file is taken but not yet a job (a job is recorded
    // before its file leaves the folder, so one of the two is seen).
    let completing = state.ctx.as_ref().is_some_and(|ctx| {
        [false, true].into_iter().any(|dry_run| {
            ctx.layout.folder(avid, folder(dry_run)).join(format!("{OPEN_PREFIX}{id}.completing")).exists()
        })
    });
    if completing {
        return Problem::new(StatusCode::CONFLICT, "job_not_open", "the job is completed: its data cannot change");
    }
    match state.store.get_job(id.as_str()).await {
        Ok(Some(job)) if job.account == avid => {
            Problem::new(StatusCode::CONFLICT, "job_not_open", "the job is completed: its data cannot change")
        }
        _ => Problem::not_found("job"),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/accounts/{avid}/jobs/{id}/complete",
    tag = "jobs",
    params(("avid" = String, Path, description = "The account's AVID"), ("id" = String, Path, description = "The job's id")),
    responses(
        (status = 202, description = "Queued (again the same for a repeated complete)", body = Object),
        (status = 409, description = "Another request holds the job (a PUT under way)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "The job's mapping profile was removed since it was created (unknown_mapping)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the token's) or job", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token attempts from this address, or the token is over its request rate (Retry-After)", body = ProblemBody, content_type = "application/problem+json")
    )
)]
/// `POST /api/v1/accounts/{avid}/jobs/{id}/complete`: the file becomes a job.
///
/// Idempotent and crash-safe: the steps are (1) the data file renamed to
/// `.completing`, (2) the job recorded and the file moved into its spool
/// (arrival), (3) the open job's record removed, all under the record's
/// lock. A complete repeated after any of them — by a client retrying, or
/// the loser of two racing — finds where the first stopped, finishes it,
/// and answers the same `202` for the one job.
pub(super) async fn complete(
    State(state): State<ApiState>,
    caller: Caller,
    Path((avid, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    caller_account(&caller, &avid)?;
    let id = job_id(&id)?;
    let ctx = state.ctx.clone().ok_or_else(|| Problem::internal("no job context"))?;
    if let Some(job) = queued_job(&state, &avid, &id).await? {
        forget_open(&state, &avid, &id);
        return Ok(accepted(&state, &avid, &job));
    }
    let Some((data, record, open)) = open_paths(&state, &avid, &id) else {
        return Err(not_open(&state, &avid, &id).await);
    };
    let Some(_held) = hold(&record, std::time::Duration::from_secs(10)).await? else {
        // Completed by the request that held it.
        return match queued_job(&state, &avid, &id).await? {
            Some(job) => Ok(accepted(&state, &avid, &job)),
            None => Err(not_open(&state, &avid, &id).await),
        };
    };
    // Under the lock, where an earlier complete stopped.
    let job = match state.store.get_job(id.as_str()).await.map_err(Problem::internal)? {
        Some(job) if job.account != avid => return Err(Problem::not_found("job")),
        Some(job) if job.status != JobStatus::Arriving => Some(job),
        // Recorded, its file not moved yet: forgotten, arrived again below.
        Some(job) if !std::path::Path::new(&job.spool_path).exists() => {
            let _ = std::fs::remove_dir_all(ctx.layout.spool(&id));
            state.store.delete_job(id.as_str()).await.map_err(Problem::internal)?;
            None
        }
        // Moved into its spool, not queued yet.
        Some(job) => {
            let scopes = crate::domain::user::Scopes { create: open.create, update: open.update };
            state.store.mark_queued(id.as_str(), None, scopes).await.map_err(Problem::internal)?;
            state.store.get_job(id.as_str()).await.map_err(Problem::internal)?.or(Some(job))
        }
        None => None,
    };
    let job = match job {
        Some(job) => job,
        None => {
            let taken = completing_path(&data, &id);
            if !taken.exists() {
                std::fs::rename(&data, &taken).map_err(Problem::internal)?;
            }
            let scopes = crate::domain::user::Scopes { create: open.create, update: open.update };
            let mapping = match &open.mapping {
                Some(name) => Some(mapping_profile(&state, &avid, name).await?),
                None => None,
            };
            let arrival = Arrival {
                account: &avid,
                source: &taken,
                file_name: &open.file,
                kind: if open.dry_run { JobKind::Validation } else { JobKind::Import },
                uploader: Uploader::Operator { scopes },
                take: Take::Move,
                job_id: Some(id.clone()),
                mapping,
            };
            let job = crate::ingest::arrival::arrive(&ctx, arrival).await.map_err(Problem::internal)?;
            // Taken at once by a worker of this process, not at its next look.
            ctx.wake.notify_one();
            tracing::info!(account = %avid, job_id = %job.job_id, file = %open.file, user = %open.username, "bulk job completed over the API");
            job
        }
    };
    forget_open(&state, &avid, &id);
    Ok(accepted(&state, &avid, &job))
}

/// The job `id` of `avid` once it is past arriving (queued or later).
async fn queued_job(state: &ApiState, avid: &str, id: &JobId) -> Result<Option<Job>, Problem> {
    Ok(state
        .store
        .get_job(id.as_str())
        .await
        .map_err(Problem::internal)?
        .filter(|job| job.account == avid && job.status != JobStatus::Arriving))
}

/// Removes what is left of an open job that is a job now.
fn forget_open(state: &ApiState, avid: &str, id: &JobId) {
    let Some(ctx) = state.ctx.as_ref() else { return };
    for dry_run in [false, true] {
        let dir = ctx.layout.folder(avid, folder(dry_run));
        let _ = std::fs::remove_file(dir.join(format!("{OPEN_PREFIX}{id}.json")));
    }
}

fn accepted(state: &ApiState, avid: &str, job: &Job) -> Response {
    let location = format!("/api/v1/accounts/{avid}/jobs/{}", job.job_id);
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(job_json(state, job))).into_response()
}

fn state_name(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Running => "running",
        JobStatus::Completed => "completed",
        JobStatus::Rejected => "rejected",
        JobStatus::Aborted => "aborted",
        _ => "queued",
    }
}

/// The report file of a job, if the one in the outbox is this job's (a
/// later upload of the same name replaces the reports), and whether it is
/// encrypted (then the plain name is never served).
fn report_of(state: &ApiState, job: &Job, failed: bool) -> Option<(PathBuf, String, bool)> {
    let ctx = state.ctx.as_ref()?;
    let names = ReportNames::of(&job.file_name, job.kind.is_dry_run());
    let outbox = ctx.layout.outbox(&job.account);
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(outbox.join(&names.summary)).ok()?).ok()?;
    if summary["job_id"] != job.job_id.as_str() {
        return None;
    }
    let published = PublishedReports::of(&names, &summary);
    let name = if failed { published.failed } else { published.results };
    Some((outbox.join(&name), name, published.encrypted))
}

fn job_json(state: &ApiState, job: &Job) -> Value {
    let mut out = serde_json::Map::new();
    let ctx = state.ctx.as_ref();
    let names = ReportNames::of(&job.file_name, job.kind.is_dry_run());
    let report = if job.status.is_final() { &names.summary } else { &names.progress };
    if let Some(outbox) = ctx.map(|c| c.layout.outbox(&job.account)) {
        if let Ok(Value::Object(keys)) =
            std::fs::read_to_string(outbox.join(report)).map(|t| serde_json::from_str(&t).unwrap_or(Value::Null))
        {
            if keys.get("job_id").and_then(Value::as_str) == Some(job.job_id.as_str()) {
                out.extend(keys);
            }
        }
    }
    out.insert("id".into(), json!(job.job_id.as_str()));
    out.insert("file".into(), json!(job.file_name));
    out.insert("state".into(), json!(state_name(job.status)));
    Value::Object(out)
}

#[utoipa::path(
    get,
    path = "/api/v1/accounts/{avid}/jobs/{id}",
    tag = "jobs",
    params(("avid" = String, Path, description = "The account's AVID"), ("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "id, file, state and the keys of progress.json / summary.json", body = Object),
        (status = 401, description = "No valid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the token's) or job", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token attempts from this address, or the token is over its request rate (Retry-After)", body = ProblemBody, content_type = "application/problem+json")
    )
)]
/// `GET /api/v1/accounts/{avid}/jobs/{id}`.
pub(super) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path((avid, id)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    caller_account(&caller, &avid)?;
    let id = job_id(&id)?;
    if let Some(job) = queued_job(&state, &avid, &id).await? {
        return Ok(Json(job_json(&state, &job)));
    }
    if let Some((data, _, open)) = open_paths(&state, &avid, &id) {
        let bytes = std::fs::metadata(&data)
            .or_else(|_| std::fs::metadata(completing_path(&data, &id)))
            .map(|m| m.len())
            .unwrap_or(0);
        return Ok(Json(
            json!({"id": id.as_str(), "file": open.file, "state": "open", "dry_run": open.dry_run, "bytes_received": bytes}),
        ));
    }
    match state.store.get_job(id.as_str()).await.map_err(Problem::internal)? {
        Some(job) if job.account == avid => Ok(Json(job_json(&state, &job))),
        _ => Err(Problem::not_found("job")),
    }
}

async fn report(state: &ApiState, caller: &Caller, avid: &str, id: &str, failed: bool) -> Result<Response, Problem> {
    caller_account(caller, avid)?;
    let id = job_id(id)?;
    let job = match state.store.get_job(id.as_str()).await.map_err(Problem::internal)? {
        Some(job) if job.account == avid => job,
        _ => return Err(Problem::not_found("job")),
    };
    let found = report_of(state, &job, failed);
    let Some(((file, name), encrypted)) =
        found.and_then(|(p, name, encrypted)| Some(((std::fs::File::open(p).ok()?, name), encrypted)))
    else {
        return Err(Problem::not_found(if failed { "failed rows file" } else { "results file (yet)" }));
    };
    let stream = Body::from_stream(tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file)));
    if !encrypted {
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], stream).into_response());
    }
    // The account encrypts its reports: the `.pgp` file as it is in the
    // outbox, named as an attachment (unsafe characters replaced).
    let disposition = format!("attachment; filename=\"{}\"", attachment_name(&name));
    Ok((
        [(header::CONTENT_TYPE, "application/pgp-encrypted".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        stream,
    )
        .into_response())
}

/// A file name for `Content-Disposition`: ASCII letters, digits and `._-`.
fn attachment_name(name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    safe.trim_start_matches('.').chars().take(200).collect()
}

#[utoipa::path(
    get,
    path = "/api/v1/accounts/{avid}/jobs/{id}/results",
    tag = "jobs",
    params(("avid" = String, Path, description = "The account's AVID"), ("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "results.csv; when the account encrypts its reports (summary.json's pgp.results_file), NAME.results.csv.pgp as an attachment, encrypted to the merchant's keys (never the plain file)", content(
            (String = "text/csv"),
            (Vec<u8> = "application/pgp-encrypted")
        )),
        (status = 401, description = "No valid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the token's) or job", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token attempts from this address, or the token is over its request rate (Retry-After)", body = ProblemBody, content_type = "application/problem+json")
    )
)]
/// `GET /api/v1/accounts/{avid}/jobs/{id}/results`.
pub(super) async fn results(
    State(state): State<ApiState>,
    caller: Caller,
    Path((avid, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    report(&state, &caller, &avid, &id, false).await
}

#[utoipa::path(
    get,
    path = "/api/v1/accounts/{avid}/jobs/{id}/failed",
    tag = "jobs",
    params(("avid" = String, Path, description = "The account's AVID"), ("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "failed.csv (404 if no row failed); when the account encrypts its reports, NAME.failed.csv.pgp as an attachment, encrypted to the merchant's keys (never the plain file)", content(
            (String = "text/csv"),
            (Vec<u8> = "application/pgp-encrypted")
        )),
        (status = 401, description = "No valid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the token's) or job", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token attempts from this address, or the token is over its request rate (Retry-After)", body = ProblemBody, content_type = "application/problem+json")
    )
)]
/// `GET /api/v1/accounts/{avid}/jobs/{id}/failed`.
pub(super) async fn failed(
    State(state): State<ApiState>,
    caller: Caller,
    Path((avid, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    report(&state, &caller, &avid, &id, true).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/accounts/{avid}/jobs/{id}",
    tag = "jobs",
    params(("avid" = String, Path, description = "The account's AVID"), ("id" = String, Path, description = "The job's id")),
    responses(
        (status = 204, description = "Discarded"),
        (status = 409, description = "Completed already (job_not_open), or another request is writing it (job_busy)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the token's) or job", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token attempts from this address, or the token is over its request rate (Retry-After)", body = ProblemBody, content_type = "application/problem+json")
    )
)]
/// `DELETE /api/v1/accounts/{avid}/jobs/{id}`: discards an open job.
pub(super) async fn discard(
    State(state): State<ApiState>,
    caller: Caller,
    Path((avid, id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    caller_account(&caller, &avid)?;
    let id = job_id(&id)?;
    let Some((data, record, _)) = open_paths(&state, &avid, &id) else {
        return Err(not_open(&state, &avid, &id).await);
    };
    let Some(_held) = hold(&record, std::time::Duration::ZERO).await? else {
        return Err(not_open(&state, &avid, &id).await);
    };
    if queued_job(&state, &avid, &id).await?.is_some() {
        return Err(not_open(&state, &avid, &id).await);
    }
    discard_files(&data, &record, &id);
    Ok(StatusCode::NO_CONTENT)
}

/// Removes an open job's files (its record last: the job stays open, and
/// discardable, until all are gone).
fn discard_files(data: &std::path::Path, record: &std::path::Path, id: &JobId) {
    let _ = std::fs::remove_file(data);
    let _ = std::fs::remove_file(completing_path(data, id));
    let _ = std::fs::remove_file(record);
}

/// Discards the open jobs of every account that nobody touched (no PUT,
/// no complete) for `expiry`, and the records left by completed ones.
/// Returns how many were discarded.
pub(super) async fn sweep_open_jobs(state: &ApiState, expiry: std::time::Duration) -> Result<usize, Problem> {
    let Some(ctx) = state.ctx.clone() else { return Ok(0) };
    let mut discarded = 0;
    for account in state.store.list_accounts().await.map_err(Problem::internal)? {
        let avid = account.avid.as_str();
        for dry_run in [false, true] {
            let dir = ctx.layout.folder(avid, folder(dry_run));
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_prefix(OPEN_PREFIX).and_then(|n| n.strip_suffix(".json")) else { continue };
                let Ok(id) = job_id(id) else { continue };
                let (record, data) = (entry.path(), dir.join(format!("{OPEN_PREFIX}{id}")));
                if queued_job(state, avid, &id).await?.is_some() {
                    forget_open(state, avid, &id);
                    continue;
                }
                let untouched = [&record, &data, &completing_path(&data, &id)]
                    .iter()
                    .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
                    .filter_map(|t| t.elapsed().ok())
                    .min()
                    .is_some_and(|age| age >= expiry);
                if !untouched {
                    continue;
                }
                // Not while a request holds it (a slow PUT is not abandoned).
                let Ok(Some(_held)) = hold(&record, std::time::Duration::ZERO).await else { continue };
                if queued_job(state, avid, &id).await?.is_some() {
                    continue;
                }
                discard_files(&data, &record, &id);
                tracing::info!(account = %avid, job_id = %id, "an open bulk job untouched for [api] open_job_expiry_secs was discarded");
                discarded += 1;
            }
        }
    }
    Ok(discarded)
}

/// A job's state, as listed.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) enum JobState {
    #[schema(rename = "queued")]
    Queued,
    #[schema(rename = "running")]
    Running,
    #[schema(rename = "completed")]
    Completed,
    #[schema(rename = "rejected")]
    Rejected,
    #[schema(rename = "aborted")]
    Aborted,
}

#[derive(serde::Deserialize)]
pub(super) struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn invalid_cursor() -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_cursor",
        "cursor is not a next_cursor of this account's listing",
    )
}

#[utoipa::path(
    get,
    path = "/api/v1/accounts/{avid}/jobs",
    tag = "jobs",
    params(
        ("avid" = String, Path, description = "The account's AVID"),
        ("status" = Option<JobState>, Query, description = "Only jobs in this state"),
        ("limit" = Option<u32>, Query, description = "1-100 (default 50)", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")
    ),
    responses(
        (status = 200, description = "{jobs, next_cursor}: newest first, every channel, all of the account's jobs page by page", body = Object),
        (status = 400, description = "A bad status or limit", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A cursor that is not a next_cursor of this account's listing (invalid_cursor)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such account (or not the token's)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed token attempts from this address, or the token is over its request rate (Retry-After)", body = ProblemBody, content_type = "application/problem+json")
    )
)]
/// `GET /api/v1/accounts/{avid}/jobs?status=S&limit=N&cursor=C`: newest
/// first, every channel, keyset-paged (received time, then id).
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Path(avid): Path<String>,
    axum::extract::Query(query): axum::extract::Query<ListQuery>,
) -> Result<Json<Value>, Problem> {
    caller_account(&caller, &avid)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid_limit", "limit is 1 to 100"));
    }
    let states = ["queued", "running", "completed", "rejected", "aborted"];
    if let Some(status) = query.status.as_deref().filter(|s| !states.contains(s)) {
        let shown = crate::domain::customer::quote(status);
        return Err(Problem::new(StatusCode::BAD_REQUEST, "invalid_status", format!("{shown} is not a job state")));
    }
    let statuses: &[JobStatus] = match query.status.as_deref() {
        None => &[],
        Some("queued") => &[JobStatus::Arriving, JobStatus::Queued, JobStatus::Retrying],
        Some("running") => &[JobStatus::Running],
        Some("completed") => &[JobStatus::Completed],
        Some("rejected") => &[JobStatus::Rejected],
        Some(_) => &[JobStatus::Aborted],
    };
    // An empty cursor is the first page, as no cursor.
    let cursor = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(job_id(c).map_err(|_| invalid_cursor())?),
        None => None,
    };
    let page = state
        .store
        .account_jobs_page(&avid, statuses, cursor.as_ref().map(JobId::as_str), limit + 1)
        .await
        .map_err(Problem::internal)?
        .ok_or_else(invalid_cursor)?;
    let next = (page.len() > limit as usize).then(|| page[limit as usize - 1].job_id.to_string());
    let listed: Vec<Value> = page.iter().take(limit as usize).map(|j| job_json(&state, j)).collect();
    Ok(Json(json!({"jobs": listed, "next_cursor": next})))
}
