//! Workers: take jobs from the database and process them one batch at a time,
//! round-robin across jobs (one job per account at a time), so one account's
//! huge upload never starves another account's small one. A fault stays in
//! its job: each open and step goes through the driver (`driver.rs`).

use super::context::{Context, IngestError};
use super::driver::{self, Stepped};
use super::job::JobRunner;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

/// Jobs open at once (round-robin); each holds an open file.
const MAX_ACTIVE_JOBS: usize = 64;
/// How often visible uploads of finished jobs are looked for.
const HOUSEKEEPING: Duration = Duration::from_secs(2);

struct Shared {
    /// Jobs waiting for their next batch.
    queue: std::sync::Mutex<VecDeque<Box<JobRunner>>>,
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
        if let Err(e) = super::arrival::remove_visible_uploads(&ctx, keep_visible_secs).await {
            tracing::warn!(error = %e, "cannot remove the visible copies of processed uploads");
        }
        if last_settled.elapsed() < ctx.heartbeat {
            continue;
        }
        last_settled = tokio::time::Instant::now();
        if let Err(e) = super::arrival::recover_arriving(&ctx, ctx.takeover_after).await {
            tracing::warn!(error = %e, "cannot settle arriving jobs");
        }
    }
}

async fn work(ctx: Arc<Context>, shared: Arc<Shared>, wake: Arc<Notify>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let woken = wake.notified();
        crate::telemetry::pulse::claims_asked();
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
        let Some(runner) = next else {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = woken => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        };
        let account = runner.job().account.clone();
        match driver::step(&ctx, runner).await {
            Stepped::More(runner) => shared.queue.lock().expect("queue lock").push_back(runner),
            Stepped::Done(_) | Stepped::Failed => release_account(&ctx, &shared, &account),
        }
    }
}

/// Opens claimable jobs while there is room, one per account at a time. Only
/// the claim is serialised: opening a job (its first pass over the file) runs
/// beside the other workers' batches. A job that cannot be opened is handled
/// as its own failure; the jobs after it are still admitted.
async fn admit(ctx: &Arc<Context>, shared: &Shared) -> Result<(), IngestError> {
    loop {
        let claimed = {
            let _one_at_a_time = shared.claiming.lock().await;
            let busy = shared.accounts.lock().expect("accounts lock").clone();
            if busy.len() >= MAX_ACTIVE_JOBS {
                return Ok(());
            }
            let Some(claimed) = ctx.store.claim_job(&ctx.owner, ctx.takeover_after, &busy).await? else {
                return Ok(());
            };
            let mut accounts = shared.accounts.lock().expect("accounts lock");
            accounts.push(claimed.job.account.clone());
            ctx.jobs_open.store(accounts.len(), std::sync::atomic::Ordering::Relaxed);
            drop(accounts);
            claimed
        };
        let account = claimed.job.account.clone();
        match driver::open(ctx, claimed).await {
            Stepped::More(runner) => shared.queue.lock().expect("queue lock").push_back(runner),
            Stepped::Done(_) | Stepped::Failed => release_account(ctx, shared, &account),
        }
    }
}

fn release_account(ctx: &Context, shared: &Shared, account: &str) {
    let mut accounts = shared.accounts.lock().expect("accounts lock");
    if let Some(i) = accounts.iter().position(|a| a == account) {
        accounts.swap_remove(i);
    }
    ctx.jobs_open.store(accounts.len(), std::sync::atomic::Ordering::Relaxed);
}

async fn pause(shutdown: &CancellationToken, how_long: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(how_long) => {}
    }
}
