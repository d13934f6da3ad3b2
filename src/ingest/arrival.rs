//! Arrival: how a complete upload becomes a job, whichever way it came in
//! (the watcher for SFTP and files placed in `/customers` or `/validate`,
//! `intake ingest`, `intake jobs retry`). The job is recorded first
//! (`arriving`), then its file brought into the job's spool, so a new upload
//! of the same name never disturbs it, then it is queued (or taken at once).
//! Also the settling of what a crash leaves between those steps, and the
//! removal of uploads left visible for clients once their report is out.

use super::context::{io_err, Context, IngestError};
use super::progress::{self, ProgressState};
use crate::domain::user::Scopes;
use crate::domain::JobId;
use crate::store::{Claimed, Job, JobKind, StoreError};
use std::fs::File;
use std::path::Path;
use std::time::Duration;

/// Who is behind an upload, which decides whether existing refs may be updated.
pub enum Uploader {
    /// An operator (`intake ingest`): as given.
    Operator { scopes: Scopes },
    /// A file in `/customers`: the SFTP login recorded on it by intake's SFTP
    /// server, or none (another server or an operator placed it: may update).
    Recorded,
}

/// How an upload gets into its job's spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Copied (an operator's file, which stays theirs).
    Copy,
    /// Moved: the upload leaves `/customers` at once (files placed by another server).
    Move,
    /// Hard-linked: the upload stays visible in `/customers` until its report
    /// is out (clients stat and timestamp a file right after uploading it),
    /// marked as taken so that it is never taken twice.
    Link,
}

/// A complete upload to make a job of.
pub struct Arrival<'a> {
    pub account: &'a str,
    /// Where the upload is.
    pub source: &'a Path,
    /// Its name as the merchant gave it.
    pub file_name: &'a str,
    pub kind: JobKind,
    pub uploader: Uploader,
    pub take: Take,
    /// The job's id when the front end chose it before the file was complete
    /// (an HTTP bulk job); otherwise a new one.
    pub job_id: Option<JobId>,
    /// The mapping profile the file must be read with, as if its `files`
    /// glob matched (an HTTP bulk job's `mapping`); otherwise chosen when
    /// the job starts. Kept in the job's spool.
    pub mapping: Option<std::sync::Arc<crate::domain::mapping::Profile>>,
}

/// Makes a queued job of a complete upload (its progress file says so).
pub async fn arrive(ctx: &Context, arrival: Arrival<'_>) -> Result<Job, IngestError> {
    let (job, _) = record(ctx, arrival, false).await?;
    Ok(job)
}

/// Makes a job of a complete upload and takes it at once for this process
/// (an operator's `intake ingest` runs it in the foreground).
pub async fn arrive_and_take(ctx: &Context, arrival: Arrival<'_>) -> Result<Claimed, IngestError> {
    let (job, lease) = record(ctx, arrival, true).await?;
    Ok(Claimed { lease: lease.expect("a job taken at once has a lease"), job })
}

/// Records the job (`arriving`), then brings the file into its spool, then
/// reads who uploaded it from the spooled file and queues the job, or with
/// `take` runs it as this process's. A crash in between is settled by
/// `recover_arriving`.
async fn record(
    ctx: &Context,
    arrival: Arrival<'_>,
    take_now: bool,
) -> Result<(Job, Option<crate::store::JobLease>), IngestError> {
    let Arrival { account, source, file_name, kind, uploader, take, job_id, mapping } = arrival;
    let job_id = job_id.unwrap_or_else(JobId::generate);
    let spool = ctx.layout.spool(&job_id);
    let upload = spool.join("upload.csv");
    let new = crate::store::NewJob {
        job_id: job_id.clone(),
        account: account.to_owned(),
        file_name: file_name.to_owned(),
        spool_path: upload.to_string_lossy().into_owned(),
        sha256: String::new(),
        bytes: 0,
        uploader: None,
        scopes: Scopes::CREATE_ONLY,
        source_key: if take == Take::Link {
            Some(source_key(source).map_err(io_err("while taking the upload"))?)
        } else {
            None
        },
        kind,
        owner: Some(ctx.owner.clone()),
    };
    ctx.store.create_job(&new).await?;
    let (from, into, id) = (source.to_path_buf(), spool.clone(), job_id.clone());
    let moved = tokio::task::spawn_blocking(move || {
        if let Some(profile) = &mapping {
            super::mappings::keep_requested(&into, profile)?;
        }
        bring_into_spool(&from, &into, &id, take)
    })
    .await?;
    if let Err(e) = moved {
        let spool = spool.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(spool)).await;
        ctx.store.delete_job(&job_id).await?;
        return Err(io_err(format!("while taking the upload {file_name}"))(e));
    }
    if take == Take::Link {
        ctx.store.set_visible(&job_id, Some(&source.to_string_lossy())).await?;
    }
    let (who, scopes) = match uploader {
        Uploader::Operator { scopes } => (None, scopes),
        Uploader::Recorded => recorded_uploader(ctx, &upload).await,
    };
    let lease = if take_now {
        Some(ctx.store.mark_running(&job_id, &ctx.owner, who.as_deref(), scopes).await?)
    } else {
        ctx.store.mark_queued(&job_id, who.as_deref(), scopes).await?;
        None
    };
    let job = ctx.store.get_job(&job_id).await?.ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))?;
    if !take_now {
        progress::publish_or_log(ctx, &job, &job.progress, ProgressState::Queued, 0).await;
    }
    Ok((job, lease))
}

/// Brings an upload into the spool of job `job_id` as `upload.csv`, durably.
fn bring_into_spool(source: &Path, spool: &Path, job_id: &JobId, take: Take) -> std::io::Result<()> {
    let upload = spool.join("upload.csv");
    std::fs::create_dir_all(spool)?;
    match take {
        Take::Copy => {
            // Copied aside, then renamed: a partial copy never looks complete.
            let part = spool.join("upload.csv.part");
            std::fs::copy(source, &part)?;
            File::open(&part)?.sync_all()?;
            std::fs::rename(&part, &upload)?;
        }
        Take::Move => std::fs::rename(source, &upload)?,
        Take::Link => {
            // Marked first: a crash before the link leaves a mark naming a
            // job that `recover_arriving` forgets, and the file is taken again.
            crate::mailbox::set_taken_by(source, job_id)?;
            std::fs::hard_link(source, &upload)?;
        }
    }
    crate::mailbox::sync_dir(spool)
}

/// What identifies one visible upload: another upload under the same name
/// is another file (intake's SFTP server publishes by renaming a new file).
fn source_key(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)?;
    Ok(format!("{}:{}:{}.{}:{}", m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// The login recorded on a spooled upload and its scopes; anything
/// unreadable fails closed (no updates). A file no login is recorded on was
/// placed by an operator or another server: all scopes.
async fn recorded_uploader(ctx: &Context, upload: &Path) -> (Option<String>, Scopes) {
    match crate::mailbox::uploader(upload) {
        Ok(None) => (None, Scopes::ALL),
        Ok(Some(username)) => match ctx.store.find_user(&username).await {
            Ok(Some(user)) => (Some(username), user.scopes),
            Ok(None) => (Some(username), Scopes::CREATE_ONLY),
            Err(e) => {
                tracing::warn!(user = %username, error = %e, "cannot look up the uploader's scopes; no updates");
                (Some(username), Scopes::CREATE_ONLY)
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read who uploaded a file; no updates");
            (None, Scopes::CREATE_ONLY)
        }
    }
}

/// Settles jobs left `arriving` by a crash between recording a job and moving
/// its upload: queued if the upload reached the spool, forgotten otherwise
/// (the file is still in `/customers` and is picked up again).
pub async fn recover_arriving(ctx: &Context, older_than: Duration) -> Result<(), IngestError> {
    for job in ctx.store.arriving_jobs(older_than).await? {
        if Path::new(&job.spool_path).exists() {
            let (who, scopes) = recorded_uploader(ctx, Path::new(&job.spool_path)).await;
            ctx.store.mark_queued(&job.job_id, who.as_deref(), scopes).await?;
            progress::publish_or_log(ctx, &job, &job.progress, ProgressState::Queued, 0).await;
        } else {
            let _ = std::fs::remove_dir_all(ctx.layout.spool(&job.job_id));
            ctx.store.delete_job(&job.job_id).await?;
        }
    }
    Ok(())
}

/// Removes the visible copies of finished jobs' uploads once they have been
/// visible for `keep_visible_secs`: only the copy a job took, never a newer
/// upload that took its name meanwhile.
pub async fn remove_visible_uploads(ctx: &Context, keep_visible_secs: u64) -> Result<(), IngestError> {
    for job in ctx.store.visible_uploads(Duration::from_secs(keep_visible_secs)).await? {
        let Some(path) = job.visible_path.as_deref() else { continue };
        match crate::mailbox::remove_if_taken_by(Path::new(path), &job.job_id) {
            Ok(_) => ctx.store.set_visible(&job.job_id, None).await?,
            Err(e) => tracing::warn!(account = %job.account, file = %job.file_name, job_id = %job.job_id,
                error = %e, "cannot remove the visible copy of a processed upload"),
        }
    }
    Ok(())
}
