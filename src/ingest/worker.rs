//! Workers: take jobs from the database and process them one batch at a time,
//! round-robin across jobs (one job per account at a time), so one account's
//! huge upload never starves another account's small one.
//!
//! A fault stays in its job: every step runs in its own task, so a panic
//! ends that job (`aborted`), never a worker; a transient error puts the job
//! aside (`retrying`, exponential backoff) without holding up other accounts;
//! a job whose processing keeps killing the process is aborted after
//! `max_attempts` starts instead of being resumed forever.

use super::job::{Context, Fault, IngestError, JobRunner, Step};
use super::publish;
use crate::store::Job;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Jobs open at once (round-robin); each holds an open file.
const MAX_ACTIVE_JOBS: usize = 64;
/// How often visible uploads of finished jobs are looked for.
const HOUSEKEEPING: Duration = Duration::from_secs(2);
/// The longest wait before a transient failure is retried.
const MAX_BACKOFF_SECS: u64 = 300;

struct Shared {
    /// Jobs waiting for their next batch.
    queue: std::sync::Mutex<VecDeque<JobRunner>>,
    /// Accounts with a job open (queued here or being stepped).
    accounts: std::sync::Mutex<Vec<String>>,
    claiming: Mutex<()>,
}

/// Runs `workers` workers until `shutdown`; a batch in flight is finished
/// (committed) first, so a stop loses nothing.
pub async fn run(
    ctx: Arc<Context>,
    workers: usize,
    keep_visible_secs: u64,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared { queue: Default::default(), accounts: Default::default(), claiming: Mutex::new(()) });
    let housekeeping = tokio::spawn(housekeeping(ctx.clone(), keep_visible_secs, shutdown.clone()));
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let (ctx, shared, wake, shutdown) = (ctx.clone(), shared.clone(), wake.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move { work(ctx, shared, wake, shutdown).await }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a worker stopped with a fault");
        }
    }
    let _ = housekeeping.await;
    // Jobs opened but not finished are resumed by the next start (or another
    // process) at once; a clean stop is no failed attempt.
    if let Err(e) = ctx.store.release_owner(&ctx.owner, true).await {
        tracing::warn!(error = %e, "cannot release this process's jobs; they resume after the heartbeat timeout");
    }
}

/// Settles arriving jobs of crashed takes, removes visible copies of
/// processed uploads (the node's heartbeat is `cluster::Node::run`).
async fn housekeeping(ctx: Arc<Context>, keep_visible_secs: u64, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    let mut last_settled = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = super::job::remove_visible_uploads(&ctx, keep_visible_secs).await {
            tracing::warn!(error = %e, "cannot remove the visible copies of processed uploads");
        }
        if last_settled.elapsed() < ctx.heartbeat {
            continue;
        }
        last_settled = tokio::time::Instant::now();
        if let Err(e) = super::job::recover_arriving(&ctx, ctx.takeover_after).await {
            tracing::warn!(error = %e, "cannot settle arriving jobs");
        }
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

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

async fn work(ctx: Arc<Context>, shared: Arc<Shared>, wake: Arc<Notify>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let woken = wake.notified();
        let admitted = admit(&ctx, &shared).await;
        match &admitted {
            Ok(_) => crate::telemetry::pulse::claims_answered(),
            Err(_) => crate::telemetry::pulse::claims_failed(),
        }
        if let Err(e) = admitted {
            tracing::error!(error = %e, "cannot take jobs from the database; retrying");
            pause(&shutdown, Duration::from_secs(2)).await;
            continue;
        }
        let next = shared.queue.lock().expect("queue lock").pop_front();
        let Some(mut runner) = next else {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = woken => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        };
        let job = runner.job().clone();
        let step_ctx = ctx.clone();
        let span = job_span(&job);
        let stepped = contained(
            async move {
                let step = runner.step(&step_ctx).await;
                (runner, step)
            }
            .instrument(span.clone()),
        )
        .await;
        match stepped {
            Ok((runner, Ok(Step::More))) => shared.queue.lock().expect("queue lock").push_back(runner),
            Ok((_, Ok(Step::Done(_)))) => release_account(&shared, &job.account),
            Ok((_, Err(e))) | Err(e) => {
                // Settled first: until then no worker may claim the job again.
                handle_failure(&ctx, &job, e).instrument(span).await;
                release_account(&shared, &job.account);
            }
        }
    }
}

/// Opens claimable jobs while there is room, one per account at a time. Only
/// the claim is serialised: opening a job (its first pass over the file) runs
/// beside the other workers' batches. A job that cannot be opened is handled
/// as its own failure; the jobs after it are still admitted.
async fn admit(ctx: &Arc<Context>, shared: &Shared) -> Result<(), IngestError> {
    loop {
        let job = {
            let _one_at_a_time = shared.claiming.lock().await;
            let busy = shared.accounts.lock().expect("accounts lock").clone();
            if busy.len() >= MAX_ACTIVE_JOBS {
                return Ok(());
            }
            let Some(job) = ctx.store.claim_job(&ctx.owner, ctx.takeover_after, &busy).await? else {
                return Ok(());
            };
            shared.accounts.lock().expect("accounts lock").push(job.account.clone());
            job
        };
        if job.attempts > ctx.policy.max_attempts {
            let reason = format!(
                "its processing was started {} times without getting further (each start ended the process)",
                job.attempts - 1
            );
            end_aborted(ctx, &job, &reason).instrument(job_span(&job)).await;
            release_account(shared, &job.account);
            continue;
        }
        let (open_ctx, claimed) = (ctx.clone(), job.clone());
        let span = job_span(&job);
        match contained(async move { JobRunner::open(&open_ctx, claimed).await }.instrument(span.clone())).await {
            Ok(Ok(runner)) => shared.queue.lock().expect("queue lock").push_back(runner),
            Ok(Err(e)) | Err(e) => {
                handle_failure(ctx, &job, e).instrument(span).await;
                release_account(shared, &job.account);
            }
        }
    }
}

/// The span every log line of a job's processing is in (its ids, in the
/// text and the JSON log format alike).
fn job_span(job: &Job) -> tracing::Span {
    tracing::info_span!("job", account = %job.account, job_id = %job.job_id, file = %job.file_name)
}

/// Decides what a failed step or open means for its job.
async fn handle_failure(ctx: &Context, job: &Job, error: IngestError) {
    let (account, file, job_id) = (&job.account, &job.file_name, &job.job_id);
    match error.fault() {
        Fault::LostOwnership => {
            tracing::info!(account = %account, file = %file, job_id = %job_id, "another process took the job over");
            super::progress::remove_lost(ctx, job).await;
        }
        Fault::Transient if job.retries < ctx.policy.max_retries => {
            let retries = job.retries + 1;
            let wait = 2u64.saturating_pow(retries).min(MAX_BACKOFF_SECS);
            let message = format!("{error}");
            tracing::warn!(account = %account, file = %file, job_id = %job_id, error = %message, retries, wait_secs = wait,
                "job interrupted by a transient fault; it resumes from its last committed batch");
            if let Err(e) = ctx.store.retry_job(job_id, &ctx.owner, retries, Duration::from_secs(wait), &message).await
            {
                tracing::warn!(job_id = %job_id, error = %e, "cannot record the retry; the job resumes after its heartbeat times out");
            } else if let Ok(Some(job)) = ctx.store.get_job(job_id).await {
                // How far its committed rows reach, in proportion.
                let done = job.bytes.saturating_mul(job.progress.records_done) / job.rows_total.max(1);
                super::progress::publish_owned(ctx, &job, super::progress::ProgressState::Retrying, done).await;
            }
        }
        Fault::Transient => {
            let reason = format!("gave up after {} retries; the last error: {error}", job.retries);
            end_aborted(ctx, job, &reason).await;
        }
        Fault::Deterministic => end_aborted(ctx, job, &format!("{error}")).await,
    }
}

async fn end_aborted(ctx: &Context, job: &Job, reason: &str) {
    if let Err(e) = publish::abort(ctx, &job.job_id, reason).await {
        tracing::error!(account = %job.account, file = %job.file_name, job_id = %job.job_id, error = %e,
            "the aborted job's report could not be published");
    }
}

fn release_account(shared: &Shared, account: &str) {
    let mut accounts = shared.accounts.lock().expect("accounts lock");
    if let Some(i) = accounts.iter().position(|a| a == account) {
        accounts.swap_remove(i);
    }
}

async fn pause(shutdown: &CancellationToken, how_long: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(how_long) => {}
    }
}
