//! Where things live under the data directory.
//!
//! `accounts/<AVID>/{customers,outbox,archive}` is what SFTP users see;
//! `spool/<job_id>/` holds a job's upload and its report while it is processed.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    data_dir: PathBuf,
}

impl Layout {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Layout { data_dir: data_dir.into() }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn accounts_root(&self) -> PathBuf {
        self.data_dir.join("accounts")
    }

    pub fn customers(&self, avid: &str) -> PathBuf {
        self.accounts_root().join(avid).join("customers")
    }

    pub fn outbox(&self, avid: &str) -> PathBuf {
        self.accounts_root().join(avid).join("outbox")
    }

    pub fn archive(&self, avid: &str) -> PathBuf {
        self.accounts_root().join(avid).join("archive")
    }

    pub fn spool(&self, job_id: &str) -> PathBuf {
        self.data_dir.join("spool").join(job_id)
    }

    /// Creates an account's three folders (and the spool) if missing.
    pub fn ensure_account(&self, avid: &str) -> io::Result<()> {
        for dir in [self.customers(avid), self.outbox(avid), self.archive(avid)] {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::create_dir_all(self.data_dir.join("spool"))
    }
}

/// `May.CSV` → `May`: the upload's name without its `.csv` extension (any case).
pub fn report_stem(file_name: &str) -> &str {
    let n = file_name.len();
    if n > 4 && file_name[n - 4..].eq_ignore_ascii_case(".csv") {
        &file_name[..n - 4]
    } else {
        file_name
    }
}

/// Whether a name in `/customers` is an upload to process: `*.csv` (any case), not hidden.
pub fn is_upload_name(file_name: &str) -> bool {
    !file_name.starts_with('.') && file_name.len() > 4 && file_name[file_name.len() - 4..].eq_ignore_ascii_case(".csv")
}

/// Writes `bytes` next to `target` and renames it into place, so readers see all or nothing.
pub fn publish_atomically(target: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = target.parent().ok_or_else(|| io::Error::other("target has no folder"))?;
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("report");
    let temp = dir.join(format!(".intake-tmp.{}.{name}", uuid::Uuid::new_v4().simple()));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&temp, target)
}

/// The extended attribute that names the SFTP user who uploaded a file.
const UPLOADER_XATTR: &[u8] = b"user.intake.uploader\0";

/// Records who uploaded `path` (best effort: a file system without user
/// extended attributes leaves the upload anonymous, treated as the operator's).
pub fn set_uploader(path: &Path, username: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both pointers are valid NUL-terminated or length-delimited buffers for the call.
    let rc = unsafe {
        libc::setxattr(c_path.as_ptr(), UPLOADER_XATTR.as_ptr().cast(), username.as_ptr().cast(), username.len(), 0)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The SFTP user who uploaded `path`: `None` when no login is recorded (a
/// file placed by an operator or another server); an error when one may be
/// recorded but cannot be read, so that callers fail closed.
pub fn uploader(path: &Path) -> io::Result<Option<String>> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut buf = [0u8; 1024];
    // SAFETY: `buf` is writable for its whole length; the name is NUL-terminated.
    let n =
        unsafe { libc::getxattr(c_path.as_ptr(), UPLOADER_XATTR.as_ptr().cast(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
            _ => Err(e),
        };
    }
    String::from_utf8(buf[..n as usize].to_vec()).map(Some).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_name_drops_the_csv_extension_in_any_case() {
        assert_eq!(report_stem("May.CSV"), "May");
        assert_eq!(report_stem("a.b.csv"), "a.b");
        assert_eq!(report_stem(".csv"), ".csv");
    }

    #[test]
    fn only_visible_csv_names_are_uploads() {
        assert!(is_upload_name("May.CSV"));
        assert!(!is_upload_name(".intake-upload.x.May.csv"));
        assert!(!is_upload_name("May.csv.filepart"));
        assert!(!is_upload_name(".csv"));
    }
}
