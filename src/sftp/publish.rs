//! Puts a finished upload under its final name without ever replacing a
//! visible upload that no job has taken yet.
//!
//! A plain `rename(temp, name)` replaces whatever has the name. When the
//! file there is an earlier upload the watcher has not taken yet (a burst of
//! uploads of one name, a client renaming onto it), that upload would be gone
//! although its CLOSE was answered OK. So an upload is placed only where no
//! file is (`RENAME_NOREPLACE`); a file there that a job has taken (marked and
//! hard-linked into the job's spool) is swapped out (`RENAME_EXCHANGE`) and
//! removed; one not taken yet is waited for, a bounded time, in the order the
//! uploads arrived (one lock per name). Every OK means one job.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rustix::fs::{renameat_with, RenameFlags, CWD};
use rustix::io::Errno;

/// How often it looks again meanwhile.
const POLL: Duration = Duration::from_millis(5);

/// Why an upload was not published.
#[derive(Debug)]
pub(crate) enum PublishError {
    /// An earlier upload of the name was not taken within the wait.
    Busy,
    Io(io::Error),
}

/// One lock per final name, held while an upload is put there, so that the
/// uploads of one name on this node are published one by one, in turn.
#[derive(Default)]
pub(crate) struct Publisher {
    locks: Mutex<HashMap<PathBuf, Weak<tokio::sync::Mutex<()>>>>,
}

impl Publisher {
    fn lock_for(&self, target: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = locks.get(target).and_then(Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(target.to_path_buf(), Arc::downgrade(&lock));
        lock
    }

    /// Moves the file at `from` to `target` (same folder). When `guarded`
    /// (`target` is a name the watcher takes), an earlier upload there that
    /// no job has taken is never replaced: this waits up to `wait` for it
    /// to be taken. On an error the file is still at `from`.
    pub(crate) async fn publish(
        &self,
        from: &Path,
        target: &Path,
        guarded: bool,
        wait: Duration,
    ) -> Result<(), PublishError> {
        if !guarded {
            return std::fs::rename(from, target).map_err(PublishError::Io);
        }
        let lock = self.lock_for(target);
        let _turn = lock.lock().await;
        let deadline = Instant::now() + wait;
        loop {
            match renameat_with(CWD, from, CWD, target, RenameFlags::NOREPLACE) {
                Ok(()) => return Ok(()),
                Err(Errno::EXIST) => {}
                Err(e) => return Err(PublishError::Io(e.into())),
            }
            if is_taken(target).map_err(PublishError::Io)? {
                match renameat_with(CWD, from, CWD, target, RenameFlags::EXCHANGE) {
                    // Gone meanwhile (its job removed it): place it again.
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(PublishError::Io(e.into())),
                    Ok(()) => {}
                }
                // `from` now holds what was at the name. Another node may
                // have put an untaken upload there since it was checked:
                // then that one is published in turn, in this loop.
                if is_taken(from).map_err(PublishError::Io)? {
                    match std::fs::remove_file(from) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(PublishError::Io(e)),
                        _ => return Ok(()),
                    }
                }
                tracing::warn!(file = %target.display(), "an upload published elsewhere meanwhile is published in turn");
                continue;
            }
            if Instant::now() >= deadline {
                return Err(PublishError::Busy);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Whether the visible upload at `path` was taken by a job: marked with the
/// job and hard-linked into its spool (or archive). A mark alone is not
/// enough: it is set just before the link, and stays when taking fails.
fn is_taken(path: &Path) -> io::Result<bool> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_file() {
        return Ok(false);
    }
    Ok(meta.nlink() >= 2 && crate::mailbox::taken_by(path)?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_untaken_upload_is_never_replaced_and_a_taken_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let (target, spool) = (dir.path().join("x.csv"), dir.path().join("spool.csv"));
        std::fs::write(&target, "first").unwrap();
        let second = dir.path().join("second");
        std::fs::write(&second, "second").unwrap();
        let publisher = Publisher::default();
        let refused = publisher.publish(&second, &target, true, Duration::from_millis(50)).await;
        assert!(matches!(refused, Err(PublishError::Busy)), "{refused:?}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "first");
        assert!(second.exists(), "the refused upload stays where it was");
        // Taken: marked and linked into a spool.
        crate::mailbox::set_taken_by(&target, "job-1").unwrap();
        std::fs::hard_link(&target, &spool).unwrap();
        publisher.publish(&second, &target, true, Duration::from_millis(50)).await.unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "second");
        assert_eq!(std::fs::read_to_string(&spool).unwrap(), "first", "the job keeps its file");
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["spool.csv", "x.csv"]);
    }
}
