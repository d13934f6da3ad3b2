//! Workers: take jobs from the database and process them one batch at a time,
//! round-robin across jobs (one job per account at a time), so one account's
//! huge upload never starves another account's small one.

use super::job::{Context, IngestError, JobRunner, Step};
use crate::clock;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

/// Jobs open at once (round-robin); each holds an open file.
const MAX_ACTIVE_JOBS: usize = 64;
/// A job whose owner has not heartbeated for this long may be taken over.
pub const STALE_AFTER_SECS: i64 = 60;
const HEARTBEAT: Duration = Duration::from_secs(10);

struct Shared {
    /// Jobs waiting for their next batch.
    queue: std::sync::Mutex<VecDeque<JobRunner>>,
    /// Accounts with a job open (queued here or being stepped).
    accounts: std::sync::Mutex<Vec<String>>,
    claiming: Mutex<()>,
}

/// Runs `workers` workers until `shutdown`; a batch in flight is finished
/// (committed) first, so a stop loses nothing.
pub async fn run(ctx: Arc<Context>, workers: usize, wake: Arc<Notify>, shutdown: CancellationToken) {
    let shared = Arc::new(Shared { queue: Default::default(), accounts: Default::default(), claiming: Mutex::new(()) });
    let heartbeat = {
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = ctx.store.heartbeat(&ctx.owner, &clock::now_rfc3339()).await {
                            tracing::warn!(error = %e, "job heartbeat failed");
                        }
                        release_dead_local_owners(&ctx).await;
                        let older_than = clock::seconds_ago_rfc3339(STALE_AFTER_SECS);
                        if let Err(e) = super::job::recover_arriving(&ctx, &older_than).await {
                            tracing::warn!(error = %e, "cannot settle arriving jobs");
                        }
                    }
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let (ctx, shared, wake, shutdown) = (ctx.clone(), shared.clone(), wake.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move { work(ctx, shared, wake, shutdown).await }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let _ = heartbeat.await;
}

async fn work(ctx: Arc<Context>, shared: Arc<Shared>, wake: Arc<Notify>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let woken = wake.notified();
        if let Err(e) = admit(&ctx, &shared).await {
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
        match runner.step(&ctx).await {
            Ok(Step::More) => shared.queue.lock().expect("queue lock").push_back(runner),
            Ok(Step::Done(_)) => release_account(&shared, &runner.job().account),
            Err(e) => {
                let job = runner.job();
                tracing::error!(account = %job.account, file = %job.file_name, job_id = %job.job_id, error = %e,
                    "job interrupted; it resumes from its last committed batch");
                release_account(&shared, &job.account.clone());
                pause(&shutdown, Duration::from_secs(2)).await;
            }
        }
    }
}

/// Opens claimable jobs while there is room, one per account at a time. Only
/// the claim is serialised: opening a job (its first pass over the file) runs
/// beside the other workers' batches.
async fn admit(ctx: &Context, shared: &Shared) -> Result<(), IngestError> {
    loop {
        let job = {
            let _one_at_a_time = shared.claiming.lock().await;
            let busy = shared.accounts.lock().expect("accounts lock").clone();
            if busy.len() >= MAX_ACTIVE_JOBS {
                return Ok(());
            }
            let stale = clock::seconds_ago_rfc3339(STALE_AFTER_SECS);
            let Some(job) = ctx.store.claim_job(&ctx.owner, &clock::now_rfc3339(), &stale, &busy).await? else {
                return Ok(());
            };
            shared.accounts.lock().expect("accounts lock").push(job.account.clone());
            job
        };
        let account = job.account.clone();
        match JobRunner::open(ctx, job).await {
            Ok(runner) => shared.queue.lock().expect("queue lock").push_back(runner),
            Err(e) => {
                release_account(shared, &account);
                return Err(e);
            }
        }
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

/// This process's name in the jobs table: `host:pid:nonce`. The nonce keeps
/// two processes apart even when they share a host name and a PID (containers).
pub fn owner_name() -> String {
    format!("{}:{}:{}", hostname(), std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Jobs owned by an intake process of this host that no longer runs (killed)
/// can be resumed at once, without waiting for their heartbeat to go stale.
pub async fn release_dead_local_owners(ctx: &Context) {
    let Ok(owners) = ctx.store.running_owners().await else { return };
    let host = hostname();
    for owner in owners {
        let mut parts = owner.rsplitn(3, ':');
        let (Some(_nonce), Some(pid), Some(owner_host)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let alive = std::path::Path::new("/proc").join(pid).exists();
        if owner_host == host && !alive && owner != ctx.owner {
            tracing::info!(owner = %owner, "resuming the jobs of an intake process that stopped");
            let _ = ctx.store.release_owner(&owner).await;
        }
    }
}
