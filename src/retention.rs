//! Retention: uploads (`archive/`) and reports (`outbox/`) carry customer
//! data, so files older than `[retention] archive_days` / `outbox_days` are
//! deleted (0 keeps them). The database keeps its jobs: `intake jobs` still
//! shows them, `intake jobs show` says their files are gone. Reports that a
//! process which died left written aside (`.intake-tmp.*`) go too.

use crate::config::RetentionSettings;
use crate::mailbox::Layout;
use crate::store::Store;
use std::path::Path;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Files deleted by one sweep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub archive: u64,
    pub outbox: u64,
    /// Reports written aside by a process that died before renaming them
    /// into place (whatever the retention days).
    pub temps: u64,
}

/// How old a report written aside must be before it is taken for a dead
/// process's leftover: writing one takes milliseconds.
pub const STALE_PUBLISH_TEMP: Duration = Duration::from_secs(3600);

/// Deletes the files older than the settings say, in every account's folders,
/// and the reports that dead processes left written aside.
pub fn sweep(layout: &Layout, settings: &RetentionSettings) -> Swept {
    let mut swept = Swept::default();
    let Ok(accounts) = std::fs::read_dir(layout.accounts_root()) else { return swept };
    let days = |days: u64| Duration::from_secs(days * 86_400);
    for account in accounts.flatten() {
        if !account.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let avid = account.file_name().to_string_lossy().into_owned();
        let (archive, outbox) = (layout.archive(&avid), layout.outbox(&avid));
        if settings.archive_days > 0 {
            swept.archive += delete_older(&archive, days(settings.archive_days), |_| true);
        }
        if settings.outbox_days > 0 {
            swept.outbox += delete_older(&outbox, days(settings.outbox_days), |_| true);
        }
        for dir in [&archive, &outbox] {
            swept.temps += delete_older(dir, STALE_PUBLISH_TEMP, crate::mailbox::is_publish_temp);
        }
    }
    swept
}

/// Deletes the regular files of `dir` that `this` names, last modified more
/// than `age` ago.
fn delete_older(dir: &Path, age: Duration, this: impl Fn(&str) -> bool) -> u64 {
    let Some(cutoff) = SystemTime::now().checked_sub(age) else { return 0 };
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut deleted = 0;
    for entry in entries.flatten() {
        if !this(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || meta.modified().map_or(true, |m| m >= cutoff) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => deleted += 1,
            Err(e) => tracing::warn!(folder = %dir.display(), error = %e, "retention cannot delete a file"),
        }
    }
    deleted
}

/// Sweeps at start and every `sweep_every_secs` until `shutdown`; with
/// `outbox_days`, also forgets webhook events (delivered or given up) as old
/// as the reports they announced.
pub async fn run(
    layout: Layout,
    store: Store,
    settings: RetentionSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let (l, s) = (layout.clone(), settings.clone());
        let swept = tokio::task::spawn_blocking(move || sweep(&l, &s)).await?;
        let m = crate::telemetry::metrics();
        m.retention_deleted("archive", swept.archive);
        m.retention_deleted("outbox", swept.outbox);
        if swept.temps > 0 {
            tracing::info!(files = swept.temps, "removed reports that a process which died left written aside");
        }
        if swept.archive + swept.outbox > 0 {
            tracing::info!(
                archive = swept.archive,
                outbox = swept.outbox,
                archive_days = settings.archive_days,
                outbox_days = settings.outbox_days,
                "retention deleted old files"
            );
        }
        if settings.outbox_days > 0 {
            let before = crate::clock::seconds_ago_rfc3339((settings.outbox_days * 86_400) as i64);
            match store.prune_deliveries(&before).await {
                Ok(0) => {}
                Ok(events) => {
                    tracing::info!(events, outbox_days = settings.outbox_days, "retention forgot old webhook events")
                }
                Err(e) => tracing::warn!(error = %e, "retention cannot forget old webhook events"),
            }
        }
        // OpenPGP keys about to expire: warned about once a day at most
        // (the database keeps when), checked with every sweep.
        if let Err(e) = crate::keyring::warn_expiring(&store).await {
            tracing::warn!(error = %e, "cannot check the OpenPGP keys' expiry");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(settings.sweep_every_secs.max(1))) => {}
        }
    }
}
