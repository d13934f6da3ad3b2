//! Partial uploads kept for resuming (SFTPGo's "atomic with resume").
//!
//! An upload cut by a dropped connection, or left open by a session that
//! ended without CLOSE, is not thrown away: its bytes received in order
//! from the start are kept under a hidden, reserved name derived from the
//! name it was uploaded as (`.intake-partial.<hash>`, in the same folder of
//! the same account). The watcher never takes it (hidden, reserved) and no
//! listing shows it; the account's STAT of the name answers with its size,
//! and an OPEN of the name without TRUNCATE (APPEND, or a write at the size)
//! takes it back as that upload's start. Only the CLOSE publishes, as for
//! any upload. Kept ones are bounded in age (swept by mtime) and, per
//! account, in number and bytes (the oldest go first).

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::jail::Folder;
use crate::mailbox::RESERVED_PREFIX;

/// How partial uploads are bounded (`[sftp] resume_keep_secs`,
/// `max_partial_uploads_per_account`, `max_partial_bytes_per_account`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Kept this long after its last byte arrived; zero: none is kept.
    pub(crate) keep_for: Duration,
    pub(crate) max_count: usize,
    pub(crate) max_bytes: u64,
}

impl Limits {
    pub(crate) fn enabled(&self) -> bool {
        !self.keep_for.is_zero() && self.max_count > 0 && self.max_bytes > 0
    }
}

/// The reserved prefix of a kept partial upload's name.
fn prefix() -> String {
    format!("{RESERVED_PREFIX}partial.")
}

/// Where the partial upload of `name` in `dir` is kept: a hash of the name,
/// so that any name (up to the longest upload name) fits.
pub(crate) fn path_for(dir: &Path, name: &str) -> PathBuf {
    let digest = Sha256::digest(name.as_bytes());
    dir.join(format!("{}{}", prefix(), hex::encode(&digest[..16])))
}

/// The kept partial upload of `name` in `dir`, if there is one.
pub(crate) fn metadata(dir: &Path, name: &str) -> Option<Metadata> {
    std::fs::symlink_metadata(path_for(dir, name)).ok().filter(|m| m.file_type().is_file())
}

/// Takes the kept partial upload of `name` in `dir` back as an upload in
/// progress: renamed to `temp` (atomically: of two sessions resuming at
/// once one gets it, the other starts afresh) and opened. `None` when there
/// is none.
pub(crate) fn claim(dir: &Path, name: &str, temp: &Path) -> io::Result<Option<File>> {
    match std::fs::rename(path_for(dir, name), temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let file = OpenOptions::new().write(true).read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(temp)?;
    // Written to again from now on: not stale while the client resumes.
    let _ = file.set_modified(SystemTime::now());
    Ok(Some(file))
}

/// Removes the kept partial upload of `name` in `dir`; whether there was one.
pub(crate) fn remove(dir: &Path, name: &str) -> io::Result<bool> {
    match std::fs::remove_file(path_for(dir, name)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Keeps the upload at `temp` (its first `complete` bytes, those received
/// in order) as the partial upload of `name` in `dir` (replacing an older
/// one of that name), then trims the account's partial uploads to the
/// limits, oldest first. Returns whether it was kept; when it is not (empty,
/// bigger than the limit, or resuming is off) `temp` is removed.
pub(crate) fn keep(temp: &Path, dir: &Path, name: &str, complete: u64, account_root: &Path, limits: &Limits) -> bool {
    let kept = (|| {
        if !limits.enabled() || complete == 0 || complete > limits.max_bytes {
            return Ok(false);
        }
        let file = OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(temp)?;
        if file.metadata()?.len() > complete {
            file.set_len(complete)?;
        }
        drop(file);
        std::fs::rename(temp, path_for(dir, name))?;
        Ok::<_, io::Error>(true)
    })()
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot keep a partial upload for resuming; it is discarded");
        false
    });
    if !kept {
        let _ = std::fs::remove_file(temp);
        return false;
    }
    trim(account_root, limits, &path_for(dir, name));
    true
}

/// Removes the account's oldest partial uploads (by mtime) beyond the
/// limits; `newest` (the one just kept) counts first.
fn trim(account_root: &Path, limits: &Limits, newest: &Path) {
    let mut kept: Vec<(PathBuf, SystemTime, u64)> = Vec::new();
    for dir in Folder::UPLOADS.map(|f| account_root.join(f.name())) {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if !entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix())) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.file_type().is_file() {
                kept.push((entry.path(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len()));
            }
        }
    }
    kept.sort_by(|a, b| (b.0 == newest).cmp(&(a.0 == newest)).then(b.1.cmp(&a.1)));
    let (mut count, mut bytes) = (0usize, 0u64);
    for (path, _, len) in kept {
        if count < limits.max_count && bytes.saturating_add(len) <= limits.max_bytes {
            count += 1;
            bytes += len;
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            let account = account_root.file_name().unwrap_or_default().to_string_lossy();
            tracing::info!(account = %account, bytes = len,
                "a partial upload was removed: the account's limit of cut uploads kept for resuming was reached");
        }
    }
}

/// Removes partial uploads whose last byte arrived more than `keep_for`
/// ago, in every account; returns how many.
pub(crate) fn sweep_expired(accounts_root: &Path, keep_for: Duration) -> usize {
    let Ok(accounts) = std::fs::read_dir(accounts_root) else { return 0 };
    let mut removed = 0;
    for account in accounts.flatten() {
        for dir in Folder::UPLOADS.map(|f| account.path().join(f.name())) {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if !entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix())) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                let age = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok());
                if meta.file_type().is_file()
                    && age.is_some_and(|a| a >= keep_for)
                    && std::fs::remove_file(entry.path()).is_ok()
                {
                    removed += 1;
                    tracing::info!(account = %account.file_name().to_string_lossy().escape_debug(), bytes = meta.len(),
                        "a partial upload kept for resuming expired; removed");
                }
            }
        }
    }
    removed
}

/// The bytes of an upload received in order from its start: what may be
/// kept for resuming. Writes that arrive ahead of a gap (pipelining clients
/// send out of order) are remembered, a bounded number of them; forgetting
/// one only makes the kept part shorter, never wrong.
#[derive(Debug, Default)]
pub(crate) struct InOrder {
    complete: u64,
    ahead: std::collections::BTreeMap<u64, u64>,
}

/// Ranges remembered ahead of a gap, at most.
const MAX_AHEAD: usize = 1024;

impl InOrder {
    pub(crate) fn starting_at(complete: u64) -> Self {
        InOrder { complete, ahead: Default::default() }
    }

    pub(crate) fn complete(&self) -> u64 {
        self.complete
    }

    /// Bytes `start..end` were written.
    pub(crate) fn written(&mut self, start: u64, end: u64) {
        if start > self.complete {
            if self.ahead.len() < MAX_AHEAD {
                let e = self.ahead.entry(start).or_insert(end);
                *e = (*e).max(end);
            }
            return;
        }
        self.complete = self.complete.max(end);
        while let Some((&s, &e)) = self.ahead.first_key_value() {
            if s > self.complete {
                break;
            }
            self.ahead.remove(&s);
            self.complete = self.complete.max(e);
        }
    }

    /// The file was cut (or extended) to `size`.
    pub(crate) fn truncated(&mut self, size: u64) {
        self.complete = self.complete.min(size);
        self.ahead.retain(|&s, _| s < size);
        for e in self.ahead.values_mut() {
            *e = (*e).min(size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bytes_received_in_order_count() {
        let mut o = InOrder::default();
        o.written(0, 10);
        o.written(20, 30);
        assert_eq!(o.complete(), 10, "a gap at 10..20");
        o.written(10, 20);
        assert_eq!(o.complete(), 30);
        o.written(5, 8);
        assert_eq!(o.complete(), 30);
        o.truncated(12);
        assert_eq!(o.complete(), 12);
        let mut r = InOrder::starting_at(100);
        r.written(100, 150);
        assert_eq!(r.complete(), 150);
    }

    #[test]
    fn partials_are_kept_claimed_and_trimmed_oldest_first() {
        let accounts = tempfile::tempdir().unwrap();
        let account = accounts.path().join("acme");
        let customers = account.join("customers");
        std::fs::create_dir_all(&customers).unwrap();
        let limits = Limits { keep_for: Duration::from_secs(60), max_count: 2, max_bytes: 100 };
        let put = |name: &str, bytes: &[u8], complete: u64| {
            let temp = customers.join(format!(".intake-upload.local.{name}"));
            std::fs::write(&temp, bytes).unwrap();
            keep(&temp, &customers, name, complete, &account, &limits)
        };
        assert!(put("a.csv", b"0123456789", 4));
        assert_eq!(metadata(&customers, "a.csv").unwrap().len(), 4, "cut to the bytes received in order");
        assert!(!put("empty.csv", b"", 0), "nothing to resume");
        assert!(!put("huge.csv", &[b'x'; 101], 101), "over the account's bytes");
        // A third one: the oldest goes.
        let old = SystemTime::now() - Duration::from_secs(30);
        File::options().write(true).open(path_for(&customers, "a.csv")).unwrap().set_modified(old).unwrap();
        assert!(put("b.csv", b"bb", 2));
        assert!(put("c.csv", b"cc", 2));
        assert!(metadata(&customers, "a.csv").is_none());
        assert!(metadata(&customers, "b.csv").is_some() && metadata(&customers, "c.csv").is_some());
        // Claimed once.
        let temp = customers.join(".intake-upload.local.x");
        assert!(claim(&customers, "b.csv", &temp).unwrap().is_some());
        assert!(claim(&customers, "b.csv", &customers.join(".intake-upload.local.y")).unwrap().is_none());
        // Expired ones go.
        File::options().write(true).open(path_for(&customers, "c.csv")).unwrap().set_modified(old).unwrap();
        assert_eq!(sweep_expired(accounts.path(), Duration::from_secs(10)), 1);
        assert!(metadata(&customers, "c.csv").is_none());
    }
}
