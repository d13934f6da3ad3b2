//! One SFTP session's view of its account root: the jail's rules applied to
//! every request, uploads written aside and published on close.
//!
//! russh-sftp answers one request at a time per session, so every handler
//! here does only cheap, local file-system work; folder listings, which can
//! be big, run on the blocking pool. Errors reach the client as short status
//! messages without server paths; each one is also logged at INFO with the
//! user, the operation and the virtual path (rate-limited per session).
//!
//! Also used by the exec commands (`scp`, `md5sum`, ...), so that every way
//! in shares one set of rules.

use std::collections::HashMap;
use std::fs::{File as StdFile, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File, FileAttributes, FileMode, Handle, Name, OpenFlags, Packet, Status, StatusCode,
    Version,
};
use russh_sftp::server::StatusReply;

use super::guard::{Counter, Slot};
use super::jail::{self, Folder, JailError, Place, VirtualPath};
use super::publish::PublishError;
use crate::mailbox::{is_upload_name, upload_name_problem, upload_temp_name};

/// Largest SFTP packet a client may send (russh-sftp's own limit).
pub(crate) const MAX_CLIENT_PACKET: u32 = 256 * 1024;
/// Largest write we advertise: OpenSSH's own maximum (256 KiB - 1 KiB).
const MAX_WRITE: u64 = 261_120;
/// Read replies are capped at 64 KiB: bigger replies can stall the channel
/// (russh stops reading the socket while the SFTP task waits for window).
pub(crate) const MAX_READ: u32 = 64 * 1024;
/// Open handles per session, also advertised in `limits@openssh.com`.
pub(crate) const MAX_HANDLES: usize = 64;
/// How far past the bytes received so far a write may start. Pipelining
/// clients send writes out of order within their window (OpenSSH: 64 x 32 KiB,
/// WinSCP and rclone similar); anything further would leave a hole, and a
/// sparse file costs the job its full size in reading while it costs the
/// client nothing (17 bytes at 4 GiB).
pub(crate) const MAX_WRITE_AHEAD: u64 = 8 * 1024 * 1024;
/// The uid and gid every entry is shown with; `users-groups-by-id@openssh.com`
/// names them as the listing's long names do (the login and its account).
const SHOWN_ID: u32 = 1000;
/// Error statuses logged per session per minute; further ones are counted.
const ERROR_LOGS_PER_MINUTE: u32 = 30;
/// Names per SSH_FXP_NAME reply, to stay well under the client's packet limit.
const NAMES_PER_REPLY: usize = 128;

type Reply<T> = Result<T, StatusReply>;

fn no_such_file() -> StatusReply {
    StatusCode::NoSuchFile.with_message("No such file or folder")
}
fn denied(message: &str) -> StatusReply {
    StatusCode::PermissionDenied.with_message(message)
}
fn unsupported(message: &str) -> StatusReply {
    StatusCode::OpUnsupported.with_message(message)
}
fn failure(message: &str) -> StatusReply {
    StatusCode::Failure.with_message(message)
}
fn ok(id: u32) -> Status {
    Status { id, status_code: StatusCode::Ok, error_message: "Ok".to_owned(), language_tag: "en-US".to_owned() }
}

/// State the sessions of all connections share.
pub(crate) struct FsShared {
    pub(crate) max_upload_bytes: u64,
    /// Open handles per account, all sessions and connections together.
    pub(crate) handles_per_account: Arc<Counter<String>>,
    /// Files some session has open, so that the sweeper leaves them alone.
    pub(crate) open_files: Arc<OpenFiles>,
    /// Names this node's upload temps (see `mailbox::upload_temp_name`).
    pub(crate) node_id: String,
    /// Where `/mappings` keeps the account's mapping profiles.
    pub(crate) directory: Arc<dyn super::UserDirectory>,
    /// Puts uploads under their final names, never over an untaken one.
    pub(crate) publisher: super::publish::Publisher,
    /// How long a publish waits for an earlier upload of its name to be taken.
    pub(crate) publish_wait: Duration,
    /// How partial uploads kept for resuming are bounded.
    pub(crate) partials: super::partial::Limits,
}

/// The `/mappings` folder: mapping profiles, kept in the database.
#[path = "mappings.rs"]
mod mappings;

/// The `/keys` folder: OpenPGP keys, kept in the database (spec §12).
#[path = "keys.rs"]
mod keys;

/// Paths on disk that some session has open (reading or uploading).
#[derive(Default)]
pub(crate) struct OpenFiles(Mutex<OpenPaths>);

#[derive(Default)]
struct OpenPaths {
    count: HashMap<PathBuf, usize>,
    /// Open paths a STAT or LSTAT (of any session) found missing: an upload
    /// there that gets no byte was given up by its client (see `finish_upload`).
    missed: std::collections::HashSet<PathBuf>,
}

/// One registration in [`OpenFiles`], removed when dropped.
pub(crate) struct OpenFile {
    files: Arc<OpenFiles>,
    path: PathBuf,
}

impl OpenFiles {
    pub(crate) fn register(self: &Arc<Self>, path: &Path) -> OpenFile {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *open.count.entry(path.to_path_buf()).or_insert(0) += 1;
        OpenFile { files: Arc::clone(self), path: path.to_path_buf() }
    }

    pub(crate) fn is_open(&self, path: &Path) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).count.contains_key(path)
    }

    /// A STAT or LSTAT found `path` missing; noted while it is open.
    fn note_missed(&self, path: &Path) {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if open.count.contains_key(path) {
            open.missed.insert(path.to_path_buf());
        }
    }

    /// Whether a STAT or LSTAT found `path` missing since it was opened; forgets it.
    fn take_missed(&self, path: &Path) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).missed.remove(path)
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        let mut open = self.files.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.count.get_mut(&self.path) {
            *n -= 1;
            if *n == 0 {
                open.count.remove(&self.path);
                open.missed.remove(&self.path);
            }
        }
    }
}

/// Who is logged in to this session and what they may do.
pub(crate) struct SessionUser {
    pub(crate) username: String,
    pub(crate) account: String,
    /// Scope `customers:create`: may write, rename and delete in /customers.
    pub(crate) can_upload: bool,
}

struct Upload {
    file: StdFile,
    temp: PathBuf,
    target: PathBuf,
    display: String,
    /// The highest byte written so far.
    size: u64,
    /// Bytes received in writes (overwrites count twice): bounds how far
    /// ahead a write may start.
    received: u64,
    /// A write failed (e.g. over the size limit): the upload is never published.
    failed: Option<&'static str>,
    /// The bytes received in order from the start: what is kept for
    /// resuming when the session ends without a CLOSE.
    in_order: super::partial::InOrder,
    /// Opened with APPEND: every write goes at the end, whatever its offset.
    append: bool,
    /// Resumes a kept partial upload and nothing was written yet: a first
    /// write before its end starts over from there (a client writing the
    /// file from the start without TRUNCATE), never leaving old bytes behind.
    resumed: bool,
    /// Kept for resuming when cut (not a mapping profile's upload).
    resumable: bool,
    _open: OpenFile,
}

impl Upload {
    /// An upload that is sent whole, never resumed (a mapping profile, a key).
    fn whole(file: StdFile, temp: PathBuf, target: PathBuf, display: String, open: OpenFile) -> Upload {
        Upload {
            file,
            temp,
            target,
            display,
            size: 0,
            received: 0,
            failed: None,
            in_order: Default::default(),
            append: false,
            resumed: false,
            resumable: false,
            _open: open,
        }
    }
}

enum Open {
    Read { file: StdFile, display: String, _open: OpenFile },
    Upload(Upload),
    Dir { entries: Vec<File>, pos: usize },
}

struct OpenHandle {
    open: Open,
    /// Counts toward the account's `max_handles_per_account`.
    _slot: Slot<String>,
}

/// What one session sees: the account root and the login. Cheap to clone,
/// so that listings can run on the blocking pool.
#[derive(Clone)]
struct View {
    root: PathBuf,
    user: Arc<SessionUser>,
}

/// Rate limit for logging the error statuses a session sends.
struct ErrorLog {
    since: Instant,
    logged: u32,
    suppressed: u32,
}

/// The russh-sftp handler for one session.
pub(crate) struct AccountFs {
    view: View,
    shared: Arc<FsShared>,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
    errors: ErrorLog,
    /// When the login was last found still allowed (not removed, not
    /// disabled, nor its account): checked again at an open after `RECHECK`.
    allowed_at: Instant,
}

/// How long a session goes on trusting its login before an open asks the
/// directory again (a user or account disabled meanwhile ends its sessions'
/// opens within this).
const RECHECK: Duration = Duration::from_secs(5);

const TOO_LARGE: &str = "File too large: over the maximum upload size";
const BUSY: &str =
    "Upload refused: an earlier upload of this name is still waiting to be processed; try again in a minute";
const HOLE: &str = "Write refused: it would leave a hole in the file (write it in order)";
const ABANDONED: &str = "Empty upload not published: its name was reported missing while it was open";
const NO_APPEND: &str =
    "Appending to an upload already complete is not supported; upload the whole file again (only an upload cut \
     before its end can be resumed)";

impl View {
    fn resolve(&self, path: &str) -> Reply<VirtualPath> {
        jail::resolve(path).map_err(|e| match e {
            JailError::NotFound | JailError::Reserved => no_such_file(),
            JailError::Invalid => failure("Invalid file name"),
        })
    }

    /// The path on disk for `v`, after checking that every folder on the way
    /// is a real directory (never a symlink). The last name is not checked:
    /// callers use lstat / O_NOFOLLOW on it.
    fn disk_path(&self, v: &VirtualPath) -> Reply<PathBuf> {
        let mut dir = self.root.clone();
        let parents: Vec<&str> = match &v.place {
            Place::Root => return Ok(dir),
            Place::Folder(_) => vec![],
            Place::Entry { folder, rel } => {
                std::iter::once(folder.name()).chain(rel[..rel.len() - 1].iter().map(String::as_str)).collect()
            }
        };
        for name in parents {
            dir.push(name);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => return Err(no_such_file()),
                Err(e) => return Err(self.io_error("lstat", &v.display, e)),
            }
        }
        Ok(v.on_disk(&self.root))
    }

    fn io_error(&self, op: &'static str, shown: &str, err: std::io::Error) -> StatusReply {
        match err.kind() {
            ErrorKind::NotFound => no_such_file(),
            ErrorKind::PermissionDenied => denied("Permission denied"),
            _ if err.raw_os_error() == Some(libc::ELOOP) => no_such_file(),
            _ if err.raw_os_error() == Some(libc::ENOSPC) => failure("No space left on the server"),
            _ => {
                tracing::warn!(
                    account = %self.user.account, user = %self.user.username,
                    op, path = %shown, error = %err, "SFTP operation failed"
                );
                failure("Operation failed")
            }
        }
    }

    /// What the login may do with entries of `folder`, as the modes show it.
    fn access(&self, folder: Option<Folder>) -> Access {
        match folder {
            None => Access::ReadOnly,
            Some(Folder::Customers | Folder::Validate) if self.user.can_upload => Access::Writable,
            Some(Folder::Customers | Folder::Validate | Folder::Archive) => Access::ReadOnly,
            Some(Folder::Outbox) => Access::Deletable,
        }
    }

    fn names(&self) -> (&str, &str) {
        (self.user.username.as_str(), self.user.account.as_str())
    }

    /// Attributes of what `v` names, or no-such-file for anything a client
    /// must not see (symlinks, devices, reserved names).
    fn attrs_of(&self, v: &VirtualPath) -> Reply<FileAttributes> {
        let path = self.disk_path(v)?;
        let meta = std::fs::symlink_metadata(&path).map_err(|e| self.io_error("lstat", &v.display, e))?;
        let (user, group) = self.names();
        visible_attrs(&meta, self.access(folder_of(&v.place)), user, group).ok_or_else(no_such_file)
    }

    fn list(&self, v: &VirtualPath) -> Reply<Vec<File>> {
        let (user, group) = self.names();
        if v.place == Place::Root {
            let mut entries = Vec::new();
            for folder in Folder::ALL {
                let meta = std::fs::symlink_metadata(self.root.join(folder.name()))
                    .map_err(|e| self.io_error("lstat", &v.display, e))?;
                if let Some(attrs) = visible_attrs(&meta, self.access(Some(folder)), user, group) {
                    entries.push(named(folder.name(), attrs, user, group));
                }
            }
            return Ok(entries);
        }
        let access = self.access(folder_of(&v.place));
        let path = self.disk_path(v)?;
        let meta = std::fs::symlink_metadata(&path).map_err(|e| self.io_error("lstat", &v.display, e))?;
        if !meta.file_type().is_dir() {
            return Err(if meta.file_type().is_file() { failure("Not a folder") } else { no_such_file() });
        }
        let reader = std::fs::read_dir(&path).map_err(|e| self.io_error("opendir", &v.display, e))?;
        let mut entries = Vec::new();
        for entry in reader {
            let entry = entry.map_err(|e| self.io_error("readdir", &v.display, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if crate::mailbox::is_reserved_name(&name) {
                continue;
            }
            // DirEntry::metadata does not follow symlinks.
            let Ok(meta) = entry.metadata() else { continue };
            if let Some(attrs) = visible_attrs(&meta, access, user, group) {
                entries.push(named(&name, attrs, user, group));
            }
        }
        entries.sort_by(|a, b| a.filename.cmp(&b.filename));
        Ok(entries)
    }

    /// The part kept from a cut upload to `v`, for a login that may upload.
    fn partial_of(&self, v: &VirtualPath) -> Option<Metadata> {
        let name = match &v.place {
            Place::Entry { folder: Folder::Customers | Folder::Validate, rel } if rel.len() == 1 => &rel[0],
            _ => return None,
        };
        if !self.user.can_upload {
            return None;
        }
        let target = self.disk_path(v).ok()?;
        super::partial::metadata(target.parent()?, name)
    }

    /// Checks that `v` may receive an upload and returns (folder on disk, name).
    fn upload_target(&self, v: &VirtualPath) -> Reply<(PathBuf, String)> {
        match &v.place {
            Place::Entry { folder: Folder::Customers | Folder::Validate, rel } if rel.len() == 1 => {
                if !self.user.can_upload {
                    return Err(denied("Permission denied: this login may not upload (scope customers:create)"));
                }
                if let Some(problem) = upload_name_problem(&rel[0]) {
                    return Err(failure(&problem));
                }
                let target = self.disk_path(v)?;
                let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
                Ok((dir, rel[0].clone()))
            }
            Place::Entry { folder: Folder::Customers | Folder::Validate, .. } => Err(no_such_file()),
            _ => Err(denied("Permission denied: uploads go into /customers (or /validate for a dry run)")),
        }
    }
}

impl AccountFs {
    pub(crate) fn new(root: PathBuf, user: SessionUser, shared: Arc<FsShared>) -> Self {
        Self {
            view: View { root, user: Arc::new(user) },
            shared,
            handles: HashMap::new(),
            next_handle: 0,
            errors: ErrorLog { since: Instant::now(), logged: 0, suppressed: 0 },
            allowed_at: Instant::now(),
        }
    }

    /// Whether the login may still open files: a user removed or disabled
    /// (or its account disabled) since the session began may not. Asked of
    /// the directory at most every `RECHECK`; a directory that cannot answer
    /// leaves the session as it is (the login was checked when it began).
    async fn still_allowed(&mut self) -> bool {
        if self.allowed_at.elapsed() < RECHECK {
            return true;
        }
        match self.shared.directory.find_user(&self.view.user.username).await {
            Ok(Some(user)) if user.account.as_str() == self.view.user.account => {
                self.allowed_at = Instant::now();
                true
            }
            Ok(_) => {
                tracing::info!(account = %self.view.user.account, user = %self.view.user.username,
                    "SFTP open refused: the login was disabled or removed during the session");
                false
            }
            Err(e) => {
                tracing::warn!(user = %self.view.user.username, error = %e, "cannot check the login again; the session goes on");
                true
            }
        }
    }

    /// Reserves room for one more handle (this session's and the account's
    /// limits), before anything is created for it.
    fn handle_slot(&self) -> Reply<Slot<String>> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(failure("Too many open files in this session"));
        }
        self.shared
            .handles_per_account
            .try_acquire(self.view.user.account.clone())
            .ok_or_else(|| failure("Too many open files for this account"))
    }

    fn new_handle(&mut self, open: Open, slot: Slot<String>) -> String {
        self.next_handle += 1;
        let id = self.next_handle.to_string();
        self.handles.insert(id.clone(), OpenHandle { open, _slot: slot });
        id
    }

    /// Logs an error status sent to the client (not EOF, which ends every
    /// read and listing), at most [`ERROR_LOGS_PER_MINUTE`] per session.
    fn noted<T>(&mut self, op: &'static str, path: &str, result: Reply<T>) -> Reply<T> {
        let Err(reply) = &result else { return result };
        if reply.status_code == StatusCode::Eof {
            return result;
        }
        if self.errors.since.elapsed() >= Duration::from_secs(60) {
            if self.errors.suppressed > 0 {
                tracing::info!(user = %self.view.user.username, suppressed = self.errors.suppressed, "more SFTP errors were sent to this client than logged");
            }
            self.errors = ErrorLog { since: Instant::now(), logged: 0, suppressed: 0 };
        }
        if self.errors.logged >= ERROR_LOGS_PER_MINUTE {
            self.errors.suppressed += 1;
            return result;
        }
        self.errors.logged += 1;
        let shown: String = path.chars().take(300).collect();
        tracing::info!(
            user = %self.view.user.username, account = %self.view.user.account, op, path = %shown.escape_debug(),
            status = ?reply.status_code, message = reply.error_message.as_deref().unwrap_or(""),
            "SFTP request refused"
        );
        result
    }

    fn open_upload(&mut self, v: &VirtualPath, pflags: OpenFlags) -> Reply<String> {
        let (dir, name) = self.view.upload_target(v)?;
        let append = pflags.contains(OpenFlags::APPEND);
        // Without TRUNCATE a client may continue a kept partial upload.
        let resumes = !pflags.contains(OpenFlags::TRUNCATE) && self.shared.partials.enabled();
        let target = dir.join(&name);
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_dir() => return Err(failure("A folder has that name")),
            Ok(_) if pflags.contains(OpenFlags::EXCLUDE) => return Err(failure("File already exists")),
            Ok(_) if append && super::partial::metadata(&dir, &name).is_none() => {
                return Err(unsupported(NO_APPEND));
            }
            _ => {}
        }
        // Room for the handle first: a refused OPEN leaves no file behind.
        let slot = self.handle_slot()?;
        let mut random = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut random);
        let temp = dir.join(upload_temp_name(&self.shared.node_id, &hex(&random)));
        let claimed = if resumes {
            super::partial::claim(&dir, &name, &temp).map_err(|e| self.view.io_error("resume", &v.display, e))?
        } else {
            None
        };
        let resumed = claimed.is_some();
        let file = match claimed {
            Some(file) => file,
            None => OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .mode(0o640)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&temp)
                .map_err(|e| self.view.io_error("create", &v.display, e))?,
        };
        let size =
            if resumed { file.metadata().map_err(|e| self.view.io_error("fstat", &v.display, e))?.len() } else { 0 };
        if resumed {
            tracing::info!(account = %self.view.user.account, user = %self.view.user.username,
                file = %v.display.escape_debug(), bytes = size, "upload resumed from the part kept");
        } else {
            tracing::debug!(account = %self.view.user.account, file = %v.display.escape_debug(), "upload started");
        }
        let open = self.shared.open_files.register(&target);
        let upload = Upload {
            file,
            temp,
            target,
            display: v.display.clone(),
            size,
            received: size,
            failed: None,
            in_order: super::partial::InOrder::starting_at(size),
            append,
            resumed,
            resumable: true,
            _open: open,
        };
        Ok(self.new_handle(Open::Upload(upload), slot))
    }

    fn open_read(&mut self, v: &VirtualPath) -> Reply<String> {
        if !matches!(v.place, Place::Entry { .. }) {
            return Err(failure("Is a folder"));
        }
        let slot = self.handle_slot()?;
        let path = self.view.disk_path(v)?;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| self.view.io_error("open", &v.display, e))?;
        let meta = file.metadata().map_err(|e| self.view.io_error("fstat", &v.display, e))?;
        if meta.file_type().is_dir() {
            return Err(failure("Is a folder"));
        }
        if !meta.file_type().is_file() {
            return Err(no_such_file());
        }
        let open = self.shared.open_files.register(&path);
        Ok(self.new_handle(Open::Read { file, display: v.display.clone(), _open: open }, slot))
    }

    async fn finish_upload(&self, upload: Upload) -> Reply<()> {
        let Upload { file, temp, target, display: shown, size, failed, received, _open, .. } = upload;
        drop(file);
        if let Some(reason) = failed {
            let _ = std::fs::remove_file(&temp);
            return Err(failure(reason));
        }
        // An empty upload whose name a STAT or LSTAT found missing meanwhile
        // was given up by its client (old sshfs: OPEN, LSTAT fails, CLOSE,
        // and "No such file" to its user): no file, so no `empty_file` report.
        // A deliberate empty upload (no failed STAT while open) is published.
        if self.shared.open_files.take_missed(&target) && size == 0 && received == 0 {
            let _ = std::fs::remove_file(&temp);
            tracing::info!(account = %self.view.user.account, user = %self.view.user.username,
                file = %shown.escape_debug(), "an empty upload given up by its client (a STAT of it failed) is not published");
            return Err(failure(ABANDONED));
        }
        // Who uploaded it decides whether existing refs may be updated: an
        // upload whose login cannot be recorded is refused, not guessed.
        if let Err(e) = crate::mailbox::set_uploader(&temp, &self.view.user.username) {
            let _ = std::fs::remove_file(&temp);
            tracing::error!(user = %self.view.user.username, error = %e, "cannot record the uploader on the file");
            return Err(failure("Upload failed: the server could not store it; try again later"));
        }
        let guarded = target.file_name().is_some_and(|n| is_upload_name(&n.to_string_lossy()));
        match self.shared.publisher.publish(&temp, &target, guarded, self.shared.publish_wait).await {
            Ok(()) => {}
            Err(PublishError::Busy) => {
                let _ = std::fs::remove_file(&temp);
                tracing::warn!(account = %self.view.user.account, user = %self.view.user.username, file = %shown,
                    "upload refused: an earlier upload of its name is still waiting to be taken");
                return Err(failure(BUSY));
            }
            Err(PublishError::Io(e)) => {
                let _ = std::fs::remove_file(&temp);
                return Err(self.view.io_error("publish", &shown, e));
            }
        }
        // A part of this name kept from a cut upload is superseded.
        if let (Some(dir), Some(name)) = (target.parent(), target.file_name().and_then(|n| n.to_str())) {
            let _ = super::partial::remove(dir, name);
        }
        tracing::info!(
            account = %self.view.user.account, user = %self.view.user.username,
            file = %shown.escape_debug(), bytes = size, "upload complete"
        );
        crate::telemetry::metrics().sftp_upload(&self.view.user.account);
        Ok(())
    }

    async fn do_rename(&self, oldpath: &str, newpath: &str) -> Reply<()> {
        let (src, dst, from, to) = self.view.rename_checked(oldpath, newpath)?;
        let guarded = dst.file_name().is_some_and(|n| is_upload_name(&n.to_string_lossy()));
        match self.shared.publisher.publish(&src, &dst, guarded, self.shared.publish_wait).await {
            Ok(()) => {}
            Err(PublishError::Busy) => return Err(failure(BUSY)),
            Err(PublishError::Io(e)) => return Err(self.view.io_error("rename", &from.display, e)),
        }
        let user = &self.view.user;
        tracing::info!(
            account = %user.account, user = %user.username,
            from = %from.display, to = %to.display, "file renamed"
        );
        Ok(())
    }
}

impl View {
    /// Checks a RENAME and records the uploader on the file; returns the
    /// paths on disk (from, to) and as the client named them.
    fn rename_checked(&self, oldpath: &str, newpath: &str) -> Reply<(PathBuf, PathBuf, VirtualPath, VirtualPath)> {
        let reserved = |e| match e {
            JailError::Reserved => denied("Permission denied: names starting with '.intake-' are reserved"),
            JailError::NotFound => no_such_file(),
            JailError::Invalid => failure("Invalid file name"),
        };
        let from = jail::resolve(oldpath).map_err(|e| match e {
            JailError::Reserved => no_such_file(),
            other => reserved(other),
        })?;
        let to = jail::resolve(newpath).map_err(reserved)?;
        for v in [&from, &to] {
            match &v.place {
                Place::Entry { folder: Folder::Customers | Folder::Validate, .. } => {}
                Place::Entry { folder: Folder::Outbox, .. } => {
                    return Err(denied("Permission denied: files in /outbox cannot be renamed"))
                }
                Place::Entry { folder: Folder::Archive, .. } => {
                    return Err(denied("Permission denied: /archive is read-only"))
                }
                _ => return Err(denied("Permission denied: folders cannot be renamed")),
            }
        }
        let (_, _) = self.upload_target(&to)?;
        if folder_of(&from.place) != folder_of(&to.place) {
            return Err(denied("Permission denied: files cannot be moved between folders; upload the file again"));
        }
        if !matches!(&from.place, Place::Entry { rel, .. } if rel.len() == 1) {
            return Err(no_such_file());
        }
        let src = self.disk_path(&from)?;
        let dst = self.disk_path(&to)?;
        let meta = std::fs::symlink_metadata(&src).map_err(|e| self.io_error("lstat", &from.display, e))?;
        if !meta.file_type().is_file() {
            return Err(if meta.file_type().is_dir() { failure("Is a folder") } else { no_such_file() });
        }
        if let Ok(m) = std::fs::symlink_metadata(&dst) {
            if m.file_type().is_dir() {
                return Err(failure("A folder has that name"));
            }
        }
        // A visible upload whose job runs (or whose report is out) keeps its
        // name: the job removes it by that name, and under another it would
        // stay for ever, never processed.
        if crate::mailbox::taken_by(&src).map_or(true, |job| job.is_some()) {
            return Err(denied(
                "Permission denied: this upload is being processed under its name (its report will be in \
                 /outbox); upload the file again under the new name instead",
            ));
        }
        if let Err(e) = crate::mailbox::set_uploader(&src, &self.user.username) {
            tracing::error!(user = %self.user.username, error = %e, "cannot record the uploader on the file");
            return Err(failure("Rename failed: the server could not store it; try again later"));
        }
        Ok((src, dst, from, to))
    }
}

impl Drop for AccountFs {
    fn drop(&mut self) {
        // A session that ends with uploads still open (disconnect, kill, oversized
        // packet) publishes nothing: what each received in order is kept,
        // hidden, for the account to resume (see `partial`); the rest goes.
        let (mut kept, mut discarded) = (0, 0);
        for (_, handle) in self.handles.drain() {
            if let Open::Upload(upload) = handle.open {
                drop(upload.file);
                let place = upload.target.parent().zip(upload.target.file_name().and_then(|n| n.to_str()));
                let keep = match (upload.failed, place) {
                    (None, Some((dir, name))) if upload.resumable => super::partial::keep(
                        &upload.temp,
                        dir,
                        name,
                        upload.in_order.complete(),
                        &self.view.root,
                        &self.shared.partials,
                    ),
                    _ => false,
                };
                if keep {
                    kept += 1;
                    tracing::info!(account = %self.view.user.account, user = %self.view.user.username,
                        file = %upload.display.escape_debug(), bytes = upload.in_order.complete(),
                        "session ended before the upload was closed; its part is kept for resuming");
                } else {
                    let _ = std::fs::remove_file(&upload.temp);
                    discarded += 1;
                }
            }
        }
        if kept + discarded > 0 {
            tracing::info!(account = %self.view.user.account, user = %self.view.user.username, kept, discarded,
                "session ended with unfinished uploads");
        }
    }
}

/// The folder a place is in (`None` for the root).
fn folder_of(place: &Place) -> Option<Folder> {
    match place {
        Place::Root => None,
        Place::Folder(f) | Place::Entry { folder: f, .. } => Some(*f),
    }
}

impl AccountFs {
    fn handle_display(&self, handle: &str) -> String {
        match self.handles.get(handle).map(|h| &h.open) {
            Some(Open::Read { display, .. }) => display.clone(),
            Some(Open::Upload(up)) => up.display.clone(),
            Some(Open::Dir { .. }) => "(folder)".to_owned(),
            None => "(closed handle)".to_owned(),
        }
    }

    async fn do_open(&mut self, id: u32, filename: &str, pflags: OpenFlags) -> Reply<Handle> {
        let writes = pflags.intersects(OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE);
        let v = jail::resolve(filename).map_err(|e| match e {
            JailError::Reserved if writes => denied("Permission denied: names starting with '.intake-' are reserved"),
            JailError::NotFound if writes => denied("Permission denied: uploads go into /customers"),
            JailError::NotFound | JailError::Reserved => no_such_file(),
            JailError::Invalid => failure("Invalid file name"),
        })?;
        let handle = if writes { self.open_upload(&v, pflags)? } else { self.open_read(&v)? };
        Ok(Handle { id, handle })
    }

    async fn do_close(&mut self, id: u32, handle: &str) -> Reply<Status> {
        match self.handles.remove(handle) {
            Some(OpenHandle { open: Open::Upload(upload), .. }) => self.finish_upload(upload).await.map(|()| ok(id)),
            Some(_) => Ok(ok(id)),
            None => Err(failure("Invalid handle")),
        }
    }

    fn do_read(&mut self, id: u32, handle: &str, offset: u64, len: u32) -> Reply<Data> {
        let file = match self.handles.get(handle).map(|h| &h.open) {
            Some(Open::Read { file, .. }) => file,
            Some(_) => return Err(denied("Permission denied: not open for reading")),
            None => return Err(failure("Invalid handle")),
        };
        let mut buf = vec![0u8; len.min(MAX_READ) as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset.saturating_add(filled as u64)) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.view.io_error("read", "handle", e)),
            }
        }
        if filled == 0 && len > 0 {
            return Err(StatusCode::Eof.into());
        }
        buf.truncate(filled);
        Ok(Data { id, data: buf })
    }

    fn do_write(&mut self, id: u32, handle: &str, offset: u64, data: &[u8]) -> Reply<Status> {
        let max = self.shared.max_upload_bytes;
        let account = self.view.user.account.clone();
        let upload = match self.handles.get_mut(handle).map(|h| &mut h.open) {
            Some(Open::Upload(upload)) => upload,
            Some(_) => return Err(denied("Permission denied: not open for writing")),
            None => return Err(failure("Invalid handle")),
        };
        if let Some(reason) = upload.failed {
            return Err(failure(reason));
        }
        // APPEND: at the end, whatever the offset (as O_APPEND does).
        let offset = if upload.append { upload.size } else { offset };
        let end = offset.saturating_add(data.len() as u64);
        if end > max {
            upload.failed = Some(TOO_LARGE);
            tracing::warn!(account = %account, file = %upload.display, max_upload_bytes = max, "upload refused: over the size limit");
            return Err(failure(TOO_LARGE));
        }
        if offset > upload.received.saturating_add(MAX_WRITE_AHEAD) {
            upload.failed = Some(HOLE);
            tracing::warn!(account = %account, file = %upload.display, offset, received = upload.received, "upload refused: a write far past the data received");
            return Err(failure(HOLE));
        }
        if std::mem::take(&mut upload.resumed) && offset < upload.size {
            // Written from before the kept part's end: from there on it is
            // this upload's bytes, not the old ones.
            if let Err(e) = upload.file.set_len(offset) {
                upload.failed = Some("Upload failed on the server");
                let display = upload.display.clone();
                return Err(self.view.io_error("truncate", &display, e));
            }
            upload.size = offset;
            upload.in_order.truncated(offset);
        }
        if let Err(e) = upload.file.write_all_at(data, offset) {
            upload.failed = Some("Upload failed on the server");
            let display = upload.display.clone();
            return Err(self.view.io_error("write", &display, e));
        }
        upload.size = upload.size.max(end);
        upload.received = upload.received.saturating_add(data.len() as u64);
        upload.in_order.written(offset, end);
        Ok(ok(id))
    }

    fn do_fsetstat(&mut self, id: u32, handle: &str, attrs: &FileAttributes) -> Reply<Status> {
        let max = self.shared.max_upload_bytes;
        match self.handles.get_mut(handle).map(|h| &mut h.open) {
            Some(Open::Upload(upload)) => {
                if let Some(size) = attrs.size {
                    if size > max {
                        upload.failed = Some(TOO_LARGE);
                        return Err(failure(TOO_LARGE));
                    }
                    if size > upload.size && size > upload.received.saturating_add(MAX_WRITE_AHEAD) {
                        return Err(failure(HOLE));
                    }
                    if let Err(e) = upload.file.set_len(size) {
                        let display = upload.display.clone();
                        return Err(self.view.io_error("truncate", &display, e));
                    }
                    upload.size = size;
                    upload.resumed = false;
                    upload.in_order.truncated(size);
                }
                Ok(ok(id))
            }
            Some(Open::Read { .. }) if attrs.size.is_some() => Err(denied("Permission denied: not open for writing")),
            Some(_) => Ok(ok(id)),
            None => Err(failure("Invalid handle")),
        }
    }

    fn do_fstat(&self, id: u32, handle: &str) -> Reply<Attrs> {
        let (meta, access) = match self.handles.get(handle).map(|h| &h.open) {
            Some(Open::Read { file, display, .. }) => {
                let folder = jail::resolve(display).ok().and_then(|v| folder_of(&v.place));
                (file.metadata(), self.view.access(folder))
            }
            Some(Open::Upload(up)) => (up.file.metadata(), Access::Writable),
            Some(Open::Dir { .. }) => return Err(failure("Is a folder")),
            None => return Err(failure("Invalid handle")),
        };
        let meta = meta.map_err(|e| self.view.io_error("fstat", "handle", e))?;
        let (user, group) = self.view.names();
        Ok(Attrs { id, attrs: visible_attrs(&meta, access, user, group).ok_or_else(no_such_file)? })
    }

    fn do_setstat(&self, id: u32, path: &str, attrs: &FileAttributes) -> Reply<Status> {
        // A path this session is uploading counts (sshfs `touch`, `cp -p`).
        self.path_attrs(path)?;
        if attrs.size.is_some() {
            return Err(unsupported("Changing a file's size is not supported"));
        }
        // Permissions and times are accepted and ignored (`put -p`, `scp -p`,
        // WinSCP, FileZilla and rclone send them right after an upload).
        Ok(ok(id))
    }

    async fn do_opendir(&mut self, id: u32, path: &str) -> Reply<Handle> {
        let v = self.view.resolve(path)?;
        let slot = self.handle_slot()?;
        // A big folder takes a while to read: not on the async runtime.
        let view = self.view.clone();
        let entries =
            tokio::task::spawn_blocking(move || view.list(&v)).await.map_err(|_| failure("Operation failed"))??;
        Ok(Handle { id, handle: self.new_handle(Open::Dir { entries, pos: 0 }, slot) })
    }

    fn do_readdir(&mut self, id: u32, handle: &str) -> Reply<Name> {
        match self.handles.get_mut(handle).map(|h| &mut h.open) {
            Some(Open::Dir { entries, pos }) => {
                if *pos >= entries.len() {
                    return Err(StatusCode::Eof.into());
                }
                let end = (*pos + NAMES_PER_REPLY).min(entries.len());
                let files = entries[*pos..end].to_vec();
                *pos = end;
                Ok(Name { id, files })
            }
            Some(_) => Err(failure("Not a folder")),
            None => Err(failure("Invalid handle")),
        }
    }

    fn do_remove(&self, id: u32, filename: &str) -> Reply<Status> {
        let view = &self.view;
        let v = view.resolve(filename)?;
        match &v.place {
            Place::Entry { folder: folder @ (Folder::Customers | Folder::Validate), .. } if !view.user.can_upload => {
                return Err(denied(&format!("Permission denied: this login may not change /{}", folder.name())))
            }
            Place::Entry { folder: Folder::Customers | Folder::Validate | Folder::Outbox, .. } => {}
            Place::Entry { folder: Folder::Archive, .. } => {
                return Err(denied("Permission denied: /archive is read-only"))
            }
            _ => return Err(denied("Permission denied: folders cannot be removed")),
        }
        let path = view.disk_path(&v)?;
        let meta = match std::fs::symlink_metadata(&path) {
            // Only a part kept from a cut upload has the name: the client gives up resuming it.
            Err(e) if e.kind() == ErrorKind::NotFound && view.partial_of(&v).is_some() => {
                let (dir, name) = view.upload_target(&v)?;
                super::partial::remove(&dir, &name).map_err(|e| view.io_error("remove", &v.display, e))?;
                tracing::info!(account = %view.user.account, user = %view.user.username,
                    file = %v.display.escape_debug(), "partial upload removed");
                return Ok(ok(id));
            }
            other => other.map_err(|e| view.io_error("lstat", &v.display, e))?,
        };
        if meta.file_type().is_dir() {
            return Err(failure("Is a folder"));
        }
        if !meta.file_type().is_file() {
            return Err(no_such_file());
        }
        std::fs::remove_file(&path).map_err(|e| view.io_error("remove", &v.display, e))?;
        tracing::info!(account = %view.user.account, user = %view.user.username, file = %v.display, "file removed");
        Ok(ok(id))
    }

    async fn do_extended(&self, id: u32, request: &str, data: &[u8]) -> Reply<Packet> {
        match request {
            "limits@openssh.com" => {
                let mut reply = Vec::with_capacity(32);
                for value in [
                    u64::from(MAX_CLIENT_PACKET),
                    MAX_WRITE.min(u64::from(MAX_CLIENT_PACKET)),
                    u64::from(MAX_READ),
                    MAX_HANDLES as u64,
                ] {
                    reply.extend_from_slice(&value.to_be_bytes());
                }
                Ok(Packet::ExtendedReply(ExtendedReply { id, data: reply }))
            }
            "posix-rename@openssh.com" => {
                let mut rest = data;
                let (Some(old), Some(new)) = (take_string(&mut rest), take_string(&mut rest)) else {
                    return Err(StatusCode::BadMessage.with_message("Malformed request"));
                };
                self.do_rename(&old, &new).await.map(|()| Packet::Status(ok(id)))
            }
            "users-groups-by-id@openssh.com" => {
                let mut rest = data;
                let (Some(uids), Some(gids)) = (take_bytes(&mut rest), take_bytes(&mut rest)) else {
                    return Err(StatusCode::BadMessage.with_message("Malformed request"));
                };
                let (user, group) = self.view.names();
                let names = |ids: &[u8], name: &str| {
                    let mut out = Vec::new();
                    for id in ids.chunks_exact(4).take(1024) {
                        let known = u32::from_be_bytes(id.try_into().unwrap_or_default()) == SHOWN_ID;
                        put_string(&mut out, if known { name.as_bytes() } else { b"" });
                    }
                    out
                };
                let mut reply = Vec::new();
                put_string(&mut reply, &names(uids, user));
                put_string(&mut reply, &names(gids, group));
                Ok(Packet::ExtendedReply(ExtendedReply { id, data: reply }))
            }
            "hardlink@openssh.com" => Err(denied("Permission denied: links cannot be created")),
            _ => Err(unsupported("Operation not supported")),
        }
    }

    /// Attributes of `path`; a path this session is uploading to answers
    /// from the upload in progress (its size growing): FUSE clients (sshfs)
    /// stat a file right after creating it and give up when it is missing.
    fn path_attrs(&self, path: &str) -> Reply<FileAttributes> {
        let v = self.view.resolve(path)?;
        if let Some(meta) = self.uploading(&v) {
            let meta = meta.map_err(|e| self.view.io_error("fstat", &v.display, e))?;
            let (user, group) = self.view.names();
            return visible_attrs(&meta, Access::Writable, user, group).ok_or_else(no_such_file);
        }
        // A part kept from a cut upload answers for its name: resuming
        // clients (`reput`, `put -a`, lftp `put -c`, WinSCP) ask its size.
        if let Some(meta) = self.view.partial_of(&v) {
            let (user, group) = self.view.names();
            return visible_attrs(&meta, Access::Writable, user, group).ok_or_else(no_such_file);
        }
        let result = self.view.attrs_of(&v);
        if matches!(&result, Err(e) if e.status_code == StatusCode::NoSuchFile)
            && matches!(v.place, Place::Entry { .. })
        {
            self.shared.open_files.note_missed(&v.on_disk(&self.view.root));
        }
        result
    }

    /// The metadata of this session's upload in progress to `v`, if any.
    fn uploading(&self, v: &VirtualPath) -> Option<std::io::Result<Metadata>> {
        if !matches!(v.place, Place::Entry { .. }) {
            return None;
        }
        let target = v.on_disk(&self.view.root);
        self.handles.values().find_map(|h| match &h.open {
            Open::Upload(up) if up.target == target => Some(up.file.metadata()),
            _ => None,
        })
    }

    pub(crate) fn max_upload_bytes(&self) -> u64 {
        self.shared.max_upload_bytes
    }

    /// The exec commands' way to stat a path (`scp -f`).
    pub(crate) fn stat_path(&self, path: &str) -> Reply<FileAttributes> {
        let v = self.view.resolve(path)?;
        self.view.attrs_of(&v)
    }

    /// The exec commands' way in: the same requests, checks and logs as SFTP.
    pub(crate) async fn exec_open(&mut self, path: &str, write: bool) -> Reply<String> {
        let flags = if write { OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE } else { OpenFlags::READ };
        let result = self.do_open(0, path, flags).await.map(|h| h.handle);
        self.noted(if write { "scp upload" } else { "open" }, path, result)
    }

    pub(crate) fn exec_write(&mut self, handle: &str, offset: u64, data: &[u8]) -> Reply<()> {
        let shown = self.handle_display(handle);
        let result = self.do_write(0, handle, offset, data).map(|_| ());
        self.noted("write", &shown, result)
    }

    pub(crate) fn exec_read(&mut self, handle: &str, offset: u64, len: u32) -> Reply<Vec<u8>> {
        let shown = self.handle_display(handle);
        match self.do_read(0, handle, offset, len) {
            Ok(data) => Ok(data.data),
            Err(e) if e.status_code == StatusCode::Eof => Ok(Vec::new()),
            Err(e) => self.noted("read", &shown, Err(e)),
        }
    }

    pub(crate) async fn exec_close(&mut self, handle: &str) -> Reply<()> {
        let shown = self.handle_display(handle);
        let result = self.do_close(0, handle).await.map(|_| ());
        self.noted("close", &shown, result)
    }

    /// Ends an upload without publishing it: its temp file goes.
    pub(crate) fn exec_discard(&mut self, handle: &str) {
        if let Some(OpenHandle { open: Open::Upload(upload), .. }) = self.handles.remove(handle) {
            drop(upload.file);
            let _ = std::fs::remove_file(&upload.temp);
            tracing::info!(account = %self.view.user.account, user = %self.view.user.username,
                file = %upload.display.escape_debug(), "upload discarded: the client reported it failed or went away");
        }
    }

    /// Logs a refusal the exec commands send in their own words.
    pub(crate) fn exec_refused(&mut self, op: &'static str, path: &str, message: &str) {
        let _ = self.noted::<()>(op, path, Err(failure(message)));
    }
}

impl russh_sftp::server::Handler for AccountFs {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        unsupported("Operation not supported")
    }

    async fn init(&mut self, _version: u32, _extensions: HashMap<String, String>) -> Reply<Version> {
        let mut version = Version::new();
        version.extensions.insert("limits@openssh.com".to_owned(), "1".to_owned());
        version.extensions.insert("posix-rename@openssh.com".to_owned(), "1".to_owned());
        version.extensions.insert("users-groups-by-id@openssh.com".to_owned(), "1".to_owned());
        Ok(version)
    }

    async fn realpath(&mut self, id: u32, path: String) -> Reply<Name> {
        if let Some(result) = mappings::realpath(id, &path) {
            return self.noted("realpath", &path, result);
        }
        let result = self.view.resolve(&path).map(|v| Name { id, files: vec![File::dummy(v.display)] });
        self.noted("realpath", &path, result)
    }

    async fn stat(&mut self, id: u32, path: String) -> Reply<Attrs> {
        if let Some(result) = self.mapping_stat(id, &path).await {
            return self.noted("stat", &path, result);
        }
        let result = self.path_attrs(&path).map(|attrs| Attrs { id, attrs });
        self.noted("stat", &path, result)
    }

    async fn lstat(&mut self, id: u32, path: String) -> Reply<Attrs> {
        if let Some(result) = self.mapping_stat(id, &path).await {
            return self.noted("lstat", &path, result);
        }
        let result = self.path_attrs(&path).map(|attrs| Attrs { id, attrs });
        self.noted("lstat", &path, result)
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Reply<Attrs> {
        let shown = self.handle_display(&handle);
        let result = self.do_fstat(id, &handle);
        self.noted("fstat", &shown, result)
    }

    async fn open(&mut self, id: u32, filename: String, pflags: OpenFlags, _attrs: FileAttributes) -> Reply<Handle> {
        if !self.still_allowed().await {
            return self.noted("open", &filename, Err(denied("Permission denied: this login has been disabled")));
        }
        if let Some(result) = self.mapping_open(id, &filename, pflags).await {
            return self.noted("open", &filename, result);
        }
        let result = self.do_open(id, &filename, pflags).await;
        self.noted("open", &filename, result)
    }

    async fn close(&mut self, id: u32, handle: String) -> Reply<Status> {
        let shown = self.handle_display(&handle);
        if let Some(result) = self.mapping_close(id, &handle).await {
            return self.noted("close", &shown, result);
        }
        let result = self.do_close(id, &handle).await;
        self.noted("close", &shown, result)
    }

    async fn read(&mut self, id: u32, handle: String, offset: u64, len: u32) -> Reply<Data> {
        let result = self.do_read(id, &handle, offset, len);
        if result.is_err() {
            let shown = self.handle_display(&handle);
            return self.noted("read", &shown, result);
        }
        result
    }

    async fn write(&mut self, id: u32, handle: String, offset: u64, data: Vec<u8>) -> Reply<Status> {
        let result = self.do_write(id, &handle, offset, &data);
        if result.is_ok() {
            crate::telemetry::metrics().sftp_received(data.len());
        }
        if result.is_err() {
            let shown = self.handle_display(&handle);
            return self.noted("write", &shown, result);
        }
        result
    }

    async fn fsetstat(&mut self, id: u32, handle: String, attrs: FileAttributes) -> Reply<Status> {
        let shown = self.handle_display(&handle);
        let result = self.do_fsetstat(id, &handle, &attrs);
        self.noted("fsetstat", &shown, result)
    }

    async fn setstat(&mut self, id: u32, path: String, attrs: FileAttributes) -> Reply<Status> {
        let result = self.do_setstat(id, &path, &attrs);
        self.noted("setstat", &path, result)
    }

    async fn opendir(&mut self, id: u32, path: String) -> Reply<Handle> {
        if let Some(result) = self.mapping_opendir(id, &path).await {
            return self.noted("opendir", &path, result);
        }
        let result = self.do_opendir(id, &path).await;
        self.noted("opendir", &path, result)
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Reply<Name> {
        let result = self.do_readdir(id, &handle);
        self.noted("readdir", "(folder)", result)
    }

    async fn remove(&mut self, id: u32, filename: String) -> Reply<Status> {
        if let Some(result) = self.mapping_remove(id, &filename).await {
            return self.noted("remove", &filename, result);
        }
        let result = self.do_remove(id, &filename);
        self.noted("remove", &filename, result)
    }

    async fn rename(&mut self, id: u32, oldpath: String, newpath: String) -> Reply<Status> {
        let result = self.do_rename(&oldpath, &newpath).await.map(|()| ok(id));
        self.noted("rename", &format!("{oldpath} -> {newpath}"), result)
    }

    async fn mkdir(&mut self, _id: u32, path: String, _attrs: FileAttributes) -> Reply<Status> {
        self.noted("mkdir", &path, Err(denied("Permission denied: folders cannot be created")))
    }

    async fn rmdir(&mut self, _id: u32, path: String) -> Reply<Status> {
        self.noted("rmdir", &path, Err(denied("Permission denied: folders cannot be removed")))
    }

    async fn readlink(&mut self, _id: u32, path: String) -> Reply<Name> {
        self.noted("readlink", &path, Err(unsupported("Links are not supported")))
    }

    async fn symlink(&mut self, _id: u32, linkpath: String, _targetpath: String) -> Reply<Status> {
        self.noted("symlink", &linkpath, Err(denied("Permission denied: links cannot be created")))
    }

    async fn extended(&mut self, id: u32, request: String, data: Vec<u8>) -> Reply<Packet> {
        let result = self.do_extended(id, &request, &data).await;
        let op: String = request.chars().take(64).collect();
        self.noted("extended", &op, result)
    }
}

/// Reads one SSH string (u32 length + bytes).
fn take_bytes<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let bytes = buf.get(4..4usize.checked_add(len)?)?;
    *buf = &buf[4 + len..];
    Some(bytes)
}

/// Reads one SSH string (u32 length + bytes) as UTF-8.
fn take_string(buf: &mut &[u8]) -> Option<String> {
    take_bytes(buf).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a login may do with a folder's entries, as the modes show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// `/archive`, and `/customers` for a login without `customers:create`.
    ReadOnly,
    /// `/outbox`: files can be deleted, never written. Shown `rw-r--r--`
    /// all the same: GUI clients (WinSCP, FileZilla, Cyberduck) hide or grey
    /// out Delete on an `r--r--r--` file, and deleting results is what
    /// merchants do there. A write is still refused, with a clear status.
    Deletable,
    /// `/customers` with `customers:create`.
    Writable,
}

/// Attributes shown to clients, or `None` for anything that is neither a
/// regular file nor a folder (symlinks, devices): those are never shown.
/// Modes say what this login may do; the owner is the login and the group its
/// account, under one made-up id (server uids are not revealed).
fn visible_attrs(meta: &Metadata, access: Access, user: &str, group: &str) -> Option<FileAttributes> {
    let ft = meta.file_type();
    let writable = access != Access::ReadOnly;
    let (kind, mode) = if ft.is_dir() {
        (FileMode::DIR, if writable { 0o755 } else { 0o555 })
    } else if ft.is_file() {
        (FileMode::REG, if writable { 0o644 } else { 0o444 })
    } else {
        return None;
    };
    Some(FileAttributes {
        size: Some(if ft.is_dir() { 4096 } else { meta.len() }),
        uid: Some(SHOWN_ID),
        user: Some(user.to_owned()),
        gid: Some(SHOWN_ID),
        group: Some(group.to_owned()),
        permissions: Some(kind.bits() | mode),
        atime: Some(clamp_time(meta.atime())),
        mtime: Some(clamp_time(meta.mtime())),
    })
}

fn clamp_time(t: i64) -> u32 {
    t.clamp(0, i64::from(u32::MAX)) as u32
}

/// A directory entry with an `ls -l` style long name, as OpenSSH prints it.
fn named(name: &str, attrs: FileAttributes, user: &str, group: &str) -> File {
    let longname = long_name(name, &attrs, user, group);
    File { filename: name.to_owned(), longname, attrs }
}

fn long_name(name: &str, attrs: &FileAttributes, user: &str, group: &str) -> String {
    let perms = attrs.permissions.unwrap_or(0);
    let mut mode = String::with_capacity(10);
    mode.push(if attrs.is_dir() { 'd' } else { '-' });
    for shift in [6u32, 3, 0] {
        let bits = (perms >> shift) & 7;
        mode.push(if bits & 4 != 0 { 'r' } else { '-' });
        mode.push(if bits & 2 != 0 { 'w' } else { '-' });
        mode.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let links = if attrs.is_dir() { 2 } else { 1 };
    let size = attrs.size.unwrap_or(0);
    let date = ls_date(i64::from(attrs.mtime.unwrap_or(0)));
    format!("{mode} {links:>3} {user:<8} {group:<8} {size:>8} {date} {name}")
}

/// `ls -l` date: `Nov 26 10:00` within six months, `Nov 26  2025` otherwise.
fn ls_date(mtime: i64) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(mtime) else {
        return "Jan  1  1970".to_owned();
    };
    let month = MONTHS[usize::from(u8::from(t.month())) - 1];
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if (now - mtime).abs() < 182 * 24 * 3600 {
        format!("{month} {:>2} {:02}:{:02}", t.day(), t.hour(), t.minute())
    } else {
        format!("{month} {:>2}  {}", t.day(), t.year())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_looks_like_ls_minus_l() {
        let attrs = FileAttributes {
            size: Some(1234),
            permissions: Some(FileMode::REG.bits() | 0o644),
            mtime: Some(0),
            ..Default::default()
        };
        let line = long_name("May.csv", &attrs, "acme", "acme");
        assert_eq!(line, "-rw-r--r--   1 acme     acme         1234 Jan  1  1970 May.csv");
    }

    #[test]
    fn an_ssh_string_is_read_and_consumed() {
        let mut data = Vec::new();
        for s in ["a.csv", "b.csv"] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        let mut rest = data.as_slice();
        assert_eq!(take_string(&mut rest).as_deref(), Some("a.csv"));
        assert_eq!(take_string(&mut rest).as_deref(), Some("b.csv"));
        assert_eq!(take_string(&mut rest), None);
    }
}
