//! Turns complete uploads in `accounts/*/customers/` (imports) and
//! `accounts/*/validate/` (dry runs) into jobs.
//!
//! A file is complete when it is renamed to its final `*.csv` name (intake's
//! own SFTP server, WinSCP-style clients, OpenSSH's sftp-server whose link()
//! shows as a create) or closed after writing in place (external writers).
//! A create with no close is taken once the file has been quiet for
//! `settle`. A full scan runs at start, when the kernel reports lost events,
//! and periodically as a safety net. Knows nothing about SFTP.

use super::arrival::{arrive, Arrival, Take, Uploader};
use super::context::{Context, IngestError};
use super::driver::contained;
use crate::mailbox::{is_upload_name, Folder};
use crate::store::{JobKind, StoreError};
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

enum Seen {
    /// Renamed into place or closed after writing: take it now.
    Complete(PathBuf),
    /// Created or written: take it once quiet.
    Touched(PathBuf),
    /// Events were lost: scan everything.
    Rescan,
}

/// Watches the accounts' upload folders until `shutdown`; `wake` is notified
/// after each new job.
pub async fn run(
    ctx: Arc<Context>,
    settle: Duration,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let root = ctx.layout.accounts_root();
    std::fs::create_dir_all(&root)?;
    // Events name absolute paths; compare like with like.
    let root = std::fs::canonicalize(&root)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res| forward(&tx, res))?;
    watcher.watch(&root, RecursiveMode::Recursive)?;
    tracing::info!(root = %root.display(), "watching account upload folders");

    let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
    // Files written in place by another server may still be growing: those
    // touched within `settle` wait their turn like a fresh create.
    for path in scan(&ctx, &root, settle, &wake).await {
        pending.insert(path, Instant::now() + settle);
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_scan = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            seen = rx.recv() => match seen {
                None => break,
                Some(Seen::Complete(path)) => {
                    pending.remove(&path);
                    if upload_folder(&root, &path).is_some() {
                        take_contained(&ctx, &path, &wake).await;
                    }
                }
                Some(Seen::Touched(path)) => {
                    if upload_folder(&root, &path).is_some() {
                        pending.insert(path, Instant::now() + settle);
                    }
                }
                Some(Seen::Rescan) => {
                    for path in scan(&ctx, &root, settle, &wake).await {
                        pending.entry(path).or_insert_with(|| Instant::now() + settle);
                    }
                    last_scan = Instant::now();
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let due: Vec<PathBuf> = pending.iter().filter(|(_, at)| **at <= now).map(|(p, _)| p.clone()).collect();
                for path in due {
                    pending.remove(&path);
                    take_contained(&ctx, &path, &wake).await;
                }
                if last_scan.elapsed() > Duration::from_secs(30) {
                    for path in scan(&ctx, &root, settle, &wake).await {
                        pending.entry(path).or_insert_with(|| Instant::now() + settle);
                    }
                    last_scan = Instant::now();
                }
            }
        }
    }
    drop(watcher);
    Ok(())
}

/// Turns one kernel event into what the watcher does about it.
fn forward(tx: &mpsc::UnboundedSender<Seen>, res: notify::Result<notify::Event>) {
    let event = match res {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(error = %e, "file watcher error; rescanning");
            let _ = tx.send(Seen::Rescan);
            return;
        }
    };
    if event.need_rescan() {
        let _ = tx.send(Seen::Rescan);
        return;
    }
    tracing::trace!(?event, "file event");
    for path in event.paths {
        let seen = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => Seen::Complete(path),
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both | RenameMode::Any)) => {
                Seen::Complete(path)
            }
            EventKind::Create(CreateKind::File | CreateKind::Any) => Seen::Touched(path),
            EventKind::Create(CreateKind::Folder) => {
                // A new account: its files may predate the watch on it.
                let _ = tx.send(Seen::Rescan);
                continue;
            }
            EventKind::Modify(_) => Seen::Touched(path),
            _ => continue,
        };
        let _ = tx.send(seen);
    }
}

/// The upload folder of `accounts/<AVID>/<customers|validate>/<name.csv>`,
/// a visible upload name. A name that is not UTF-8 (only another server can
/// write one) is read lossily.
fn upload_folder(root: &Path, path: &Path) -> Option<Folder> {
    let name_ok = path.file_name().is_some_and(|n| is_upload_name(&n.to_string_lossy()));
    let parent = path.parent()?;
    let folder = Folder::from_name(parent.file_name()?.to_str()?).filter(|f| f.takes_uploads())?;
    (name_ok && parent.parent().and_then(Path::parent) == Some(root)).then_some(folder)
}

/// Takes every upload already in place that has not been written for
/// `quiet`; returns the ones written more recently.
async fn scan(ctx: &Arc<Context>, root: &Path, quiet: Duration, wake: &Arc<Notify>) -> Vec<PathBuf> {
    let mut recent = Vec::new();
    let Ok(accounts) = std::fs::read_dir(root) else { return recent };
    for folder in accounts.flatten().flat_map(|a| Folder::UPLOADS.map(|f| a.path().join(f.name()))) {
        let Ok(files) = std::fs::read_dir(folder) else { continue };
        for file in files.flatten() {
            let path = file.path();
            if upload_folder(root, &path).is_none() {
                continue;
            }
            let modified = file.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
            if modified.elapsed().unwrap_or_default() < quiet {
                recent.push(path);
                continue;
            }
            take_contained(ctx, &path, wake).await;
        }
    }
    recent
}

/// Takes one upload in a task of its own: a fault in it (a bug met by one
/// strange file) is logged and ends that one attempt, never the watcher.
async fn take_contained(ctx: &Arc<Context>, path: &Path, wake: &Arc<Notify>) {
    let (ctx, owned, wake) = (ctx.clone(), path.to_path_buf(), wake.clone());
    if let Err(e) = contained(async move { take(&ctx, &owned, &wake).await }).await {
        tracing::error!(file = %path.display(), error = %e, "taking an upload failed; the watcher goes on");
    }
}

/// Makes a job of one complete upload.
async fn take(ctx: &Arc<Context>, path: &Path, wake: &Notify) {
    // Every caller checked `upload_folder` already: the folder's name says the kind.
    let in_validate = path.parent().and_then(Path::file_name).is_some_and(|n| n == Folder::Validate.name());
    let kind = if in_validate { JobKind::Validation } else { JobKind::Import };
    let Ok(meta) = std::fs::symlink_metadata(path) else { return };
    if !meta.file_type().is_file() {
        return;
    }
    let (Some(name), Some(avid)) = (
        path.file_name().map(|n| n.to_string_lossy().into_owned()),
        path.parent().and_then(Path::parent).and_then(Path::file_name).and_then(|n| n.to_str()),
    ) else {
        return;
    };
    if already_taken(ctx, path).await {
        return;
    }
    match ctx.store.get_account(avid).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            tracing::warn!(account = %avid, file = %name, "upload for an unknown account left in place");
            return;
        }
        Err(e) => {
            tracing::error!(account = %avid, file = %name, error = %e, "cannot look up the account; will retry on the next scan");
            return;
        }
    }
    // Uploads through intake's SFTP server (they carry their uploader) stay
    // visible until their report is out; another server's files move at once.
    let how = match crate::mailbox::uploader(path) {
        Ok(Some(_)) => Take::Link,
        _ => Take::Move,
    };
    let arrival = Arrival {
        account: avid,
        source: path,
        file_name: &name,
        kind,
        uploader: Uploader::Recorded,
        take: how,
        job_id: None,
        mapping: None,
    };
    match arrive(ctx, arrival).await {
        Ok(job) => {
            tracing::info!(account = %avid, file = %name, job_id = %job.job_id, kind = kind.as_str(),
                uploader = job.uploader.as_deref().unwrap_or("-"), may_update = job.scopes.update, "upload received");
            wake.notify_waiters();
        }
        // Another intake process sharing the folder took it first.
        Err(IngestError::Store(StoreError::AlreadyExists(_))) => {}
        Err(e) => {
            // Or it was moved by one, or removed.
            if path.exists() && !already_taken(ctx, path).await {
                tracing::error!(account = %avid, file = %name, error = %e, "cannot take the upload; will retry on the next scan");
            }
        }
    }
}

/// Whether a job took the visible upload at `path` already. A mark naming
/// a job that does not exist (a crash before the upload reached the spool)
/// does not count.
async fn already_taken(ctx: &Context, path: &Path) -> bool {
    match crate::mailbox::taken_by(path) {
        Ok(None) => false,
        Ok(Some(job_id)) => match ctx.store.get_job(&job_id).await {
            Ok(found) => found.is_some(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot look up the job that took an upload");
                true
            }
        },
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read whether an upload was taken");
            true
        }
    }
}
