//! Drives a job's runner with containment and the failure policy: each
//! open and step runs in a task of its own, so a panic ends that job
//! (`aborted`), never its caller; a transient error puts the job aside
//! (`retrying`, exponential backoff); a job whose processing keeps killing
//! the process is aborted after `max_attempts` starts instead of being
//! resumed forever. The worker pool steps many jobs through it, round-robin;
//! `intake ingest` runs one to its end ([`run_one`]).

use super::context::{panic_message, Context, Fault, IngestError};
use super::job::{JobRunner, Step};
use super::progress::{self, ProgressState};
use super::publish;
use crate::domain::Summary;
use crate::store::{Claimed, Job};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The longest wait before a transient failure is retried.
const MAX_BACKOFF_SECS: u64 = 300;

/// What became of a job after one open or step.
pub enum Stepped {
    /// It goes on: step it again.
    More(Box<JobRunner>),
    /// It ended with its report published.
    Done(Box<Summary>),
    /// It failed, and the failure was handled (retried later, taken over by
    /// another process, or aborted with its report).
    Failed,
}

/// Opens a claimed job, or aborts it when its processing was started too
/// often without getting further.
pub async fn open(ctx: &Arc<Context>, claimed: Claimed) -> Stepped {
    let job = claimed.job.clone();
    let span = job_span(&job);
    if job.attempts > ctx.policy.max_attempts {
        let reason = format!(
            "its processing was started {} times without getting further (each start ended the process)",
            job.attempts - 1
        );
        let publish_ctx = ctx.clone();
        let aborted = contained(async move { publish::abort(&publish_ctx, claimed.lease, &reason).await }).await;
        if let Err(e) | Ok(Err(e)) = aborted {
            tracing::error!(parent: &span, error = %e, "the aborted job's report could not be published");
        }
        return Stepped::Failed;
    }
    let open_ctx = ctx.clone();
    match contained(async move { JobRunner::open(&open_ctx, claimed).await }.instrument(span.clone())).await {
        Ok(Ok(runner)) => Stepped::More(Box::new(runner)),
        Ok(Err(e)) | Err(e) => {
            handle_failure(ctx, &job, e).instrument(span).await;
            Stepped::Failed
        }
    }
}

/// Processes one batch of a job (or one step of its end).
pub async fn step(ctx: &Arc<Context>, runner: Box<JobRunner>) -> Stepped {
    let job = runner.job().clone();
    let (step_ctx, span) = (ctx.clone(), job_span(&job));
    match contained(async move { runner.step(&step_ctx).await }.instrument(span.clone())).await {
        Ok(Ok(Step::More(runner))) => Stepped::More(runner),
        Ok(Ok(Step::Done(summary))) => Stepped::Done(summary),
        Ok(Err(e)) | Err(e) => {
            // Settled first: until then no worker may claim the job again.
            handle_failure(ctx, &job, e).instrument(span).await;
            Stepped::Failed
        }
    }
}

/// Runs a claimed job to its end, as a worker would; `on_step` sees the
/// runner after each batch. Returns the published summary, or `None` when
/// the job failed (then it was handled as a worker handles it: retried
/// later by a daemon, or aborted with its report).
pub async fn run_one(ctx: &Arc<Context>, claimed: Claimed, mut on_step: impl FnMut(&JobRunner)) -> Option<Summary> {
    let mut stepped = open(ctx, claimed).await;
    loop {
        stepped = match stepped {
            Stepped::More(runner) => {
                on_step(&runner);
                step(ctx, runner).await
            }
            Stepped::Done(summary) => return Some(*summary),
            Stepped::Failed => return None,
        };
    }
}

/// Runs `work` in a task of its own, so that a panic in it becomes an error
/// of this one unit of work.
pub(crate) async fn contained<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, IngestError> {
    tokio::spawn(work).await.map_err(|e| match e.try_into_panic() {
        Ok(panic) => IngestError::Panic(panic_message(&*panic)),
        Err(e) => IngestError::Task(e),
    })
}

/// The span every log line of a job's processing is in (its ids, in the
/// text and the JSON log format alike).
pub(crate) fn job_span(job: &Job) -> tracing::Span {
    tracing::info_span!("job", account = %job.account, job_id = %job.job_id, file = %job.file_name)
}

/// Decides what a failed open or step means for its job.
async fn handle_failure(ctx: &Context, job: &Job, error: IngestError) {
    let (account, file, job_id) = (&job.account, &job.file_name, &job.job_id);
    let fault = error.fault();
    if fault == Fault::LostOwnership {
        tracing::info!(account = %account, file = %file, job_id = %job_id, "another process took the job over");
        progress::remove_lost(ctx, job).await;
        return;
    }
    let lease = match ctx.store.lease_owned(job_id, &ctx.owner).await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            tracing::info!(account = %account, file = %file, job_id = %job_id, error = %error,
                "the job failed after another process took it over");
            return;
        }
        Err(e) => {
            tracing::warn!(job_id = %job_id, error = %e, failure = %error,
                "cannot settle the failed job; it resumes after its heartbeat times out");
            return;
        }
    };
    let reason = match fault {
        Fault::Transient if job.retries < ctx.policy.max_retries => {
            let retries = job.retries + 1;
            let wait = 2u64.saturating_pow(retries).min(MAX_BACKOFF_SECS);
            let message = format!("{error}");
            tracing::warn!(account = %account, file = %file, job_id = %job_id, error = %message, retries,
                wait_secs = wait, "job interrupted by a transient fault; it resumes from its last committed batch");
            // Published while this process still owns the job: once the
            // retry is recorded the job has no owner and another node may
            // take it, so a later write could overwrite its progress.
            if let Ok(Some(mut job)) = ctx.store.get_job(job_id).await {
                job.retries = retries;
                job.retry_at = Some(crate::clock::now() + Duration::from_secs(wait));
                // How far its committed rows reach, in proportion.
                let done = job.bytes.saturating_mul(job.progress.records_done) / job.rows_total.max(1);
                progress::publish_owned(ctx, &job, &job.progress, ProgressState::Retrying, done).await;
            }
            if let Err(e) = ctx.store.retry_job(lease, retries, Duration::from_secs(wait), &message).await {
                tracing::warn!(job_id = %job_id, error = %e,
                    "cannot record the retry; the job resumes after its heartbeat times out");
            }
            return;
        }
        Fault::Transient => format!("gave up after {} retries; the last error: {error}", job.retries),
        Fault::Deterministic | Fault::LostOwnership => format!("{error}"),
    };
    if let Err(e) = publish::abort(ctx, lease, &reason).await {
        tracing::error!(account = %account, file = %file, job_id = %job_id, error = %e,
            "the aborted job's report could not be published");
    }
}

#[cfg(test)]
mod tests {
    //! The job lifecycle without a daemon: a SQLite store in a temporary
    //! directory, arrivals and leases as every front end makes them.
    use super::*;
    use crate::domain::user::Scopes;
    use crate::domain::{AccountId, AccountSettings, JobStatus};
    use crate::ingest::arrival::{arrive, arrive_and_take, Arrival, Take, Uploader};
    use crate::store::{JobPhase, Store};

    async fn context(dir: &std::path::Path, owner: &str) -> Arc<Context> {
        let mut config = crate::config::Config { data_dir: dir.to_path_buf(), ..Default::default() };
        config.batch_size = 2;
        let store = Store::connect(&format!("sqlite://{}/intake.db", dir.display())).await.unwrap();
        store.add_account(&AccountSettings::new(AccountId::parse("acme").unwrap())).await.ok();
        let ctx = Context::new(&config, store, owner.to_owned());
        ctx.layout.ensure_account("acme").unwrap();
        Arc::new(ctx)
    }

    fn upload(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("upload-source.csv");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn arrival<'a>(source: &'a std::path::Path) -> Arrival<'a> {
        Arrival {
            account: "acme",
            source,
            file_name: "may.csv",
            kind: Default::default(),
            uploader: Uploader::Operator { scopes: Scopes::ALL },
            take: Take::Copy,
            job_id: None,
            mapping: None,
        }
    }

    const FILE: &str = "ref,address\nc1,+15555001234\nc2,not a phone\nc3,ann@example.com\nc1,+15555001235\n";

    #[tokio::test]
    async fn a_job_runs_from_arrival_to_its_published_report_under_one_lease() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), "node-a:1").await;
        let source = upload(dir.path(), FILE);
        let claimed = arrive_and_take(&ctx, arrival(&source)).await.unwrap();
        assert_eq!(claimed.lease.owner(), "node-a:1");
        let job_id = claimed.job.job_id.clone();
        let mut seen = Vec::new();
        let summary = run_one(&ctx, claimed, |runner| seen.push(runner.records_done())).await.unwrap();
        assert_eq!((summary.status, summary.rows, summary.created, summary.failed), (JobStatus::Completed, 4, 2, 2));
        assert_eq!(seen.first(), Some(&0));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress only grows: {seen:?}");
        let job = ctx.store.get_job(&job_id).await.unwrap().unwrap();
        assert_eq!((job.status, job.phase, job.progress.records_done), (JobStatus::Completed, JobPhase::Done, 4));
        let json = |s: &crate::domain::Summary| serde_json::to_string(s).unwrap();
        assert_eq!(job.outcome.as_ref().map(json), Some(json(&summary)), "the decided outcome is what was published");
        assert!(job.finished_at >= job.started_at);
        let outbox = ctx.layout.outbox("acme");
        let published: crate::domain::Summary =
            serde_json::from_slice(&std::fs::read(outbox.join("may.summary.json")).unwrap()).unwrap();
        assert_eq!(json(&published), json(&summary));
        assert!(outbox.join("may.failed.csv").exists());
        assert!(!outbox.join("may.progress.json").exists());
        assert!(!ctx.store.owns_job(&job_id, "node-a:1").await.unwrap(), "the lease ended with the job");
    }

    #[tokio::test]
    async fn a_runner_whose_job_was_taken_over_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), "node-a:1").await;
        let source = upload(dir.path(), FILE);
        let queued = arrive(&ctx, arrival(&source)).await.unwrap();
        let claimed = ctx.store.claim_job("node-a:1", Duration::from_secs(3600), &[]).await.unwrap().unwrap();
        let Stepped::More(runner) = open(&ctx, claimed).await else { panic!("the job opens") };
        // Another process takes it over (node-a looks stale to it).
        tokio::time::sleep(Duration::from_millis(20)).await;
        let other = ctx.store.claim_job("node-b:1", Duration::ZERO, &[]).await.unwrap().unwrap();
        assert_eq!(other.job.job_id, queued.job_id);
        assert!(matches!(step(&ctx, runner).await, Stepped::Failed), "its next batch is fenced off");
        let job = ctx.store.get_job(&queued.job_id).await.unwrap().unwrap();
        assert_eq!((job.status, job.progress.records_done), (JobStatus::Running, 0));
        assert!(ctx.store.owns_job(&queued.job_id, "node-b:1").await.unwrap(), "the new owner keeps it");
    }

    #[tokio::test]
    async fn a_job_started_too_often_is_aborted_with_a_report_of_what_was_committed() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), "node-a:1").await;
        let source = upload(dir.path(), FILE);
        let queued = arrive(&ctx, arrival(&source)).await.unwrap();
        // Each claim without committed progress is one more start.
        for _ in 0..ctx.policy.max_attempts {
            let claimed = ctx.store.claim_job("node-a:1", Duration::from_secs(3600), &[]).await.unwrap().unwrap();
            drop(claimed);
            ctx.store.release_owner("node-a:1", false).await.unwrap();
        }
        let claimed = ctx.store.claim_job("node-a:1", Duration::from_secs(3600), &[]).await.unwrap().unwrap();
        assert!(claimed.job.attempts > ctx.policy.max_attempts);
        assert!(matches!(open(&ctx, claimed).await, Stepped::Failed));
        let job = ctx.store.get_job(&queued.job_id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Aborted);
        assert_eq!(job.error_code.as_deref(), Some(publish::INTERNAL_ERROR));
        let summary = std::fs::read_to_string(ctx.layout.outbox("acme").join("may.summary.json")).unwrap();
        assert!(summary.contains("\"status\": \"aborted\""), "{summary}");
    }
}
