//! One SFTP session's view of its account root: the jail's rules applied to
//! every request, uploads written aside and published on close.
//!
//! russh-sftp answers one request at a time per session, so every handler
//! here does only cheap, local file-system work. Errors reach the client as
//! short status messages without server paths; detail goes to the log.

use std::collections::HashMap;
use std::fs::{File as StdFile, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File, FileAttributes, FileMode, Handle, Name, OpenFlags, Packet, Status, StatusCode,
    Version,
};
use russh_sftp::server::StatusReply;

use super::jail::{self, Folder, JailError, Place, VirtualPath};
use super::UPLOAD_TEMP_PREFIX;

/// Largest SFTP packet a client may send (russh-sftp's own limit).
pub(crate) const MAX_CLIENT_PACKET: u32 = 256 * 1024;
/// Largest write we advertise: OpenSSH's own maximum (256 KiB - 1 KiB).
const MAX_WRITE: u64 = 261_120;
/// Read replies are capped at 64 KiB: bigger replies can stall the channel
/// (russh stops reading the socket while the SFTP task waits for window).
pub(crate) const MAX_READ: u32 = 64 * 1024;
/// Open handles per session, also advertised in `limits@openssh.com`.
const MAX_HANDLES: usize = 64;
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
    size: u64,
    /// A write failed (e.g. over the size limit): the upload is never published.
    failed: Option<&'static str>,
}

enum OpenHandle {
    Read(StdFile),
    Upload(Upload),
    Dir { entries: Vec<File>, pos: usize },
}

/// The russh-sftp handler for one session.
pub(crate) struct AccountFs {
    root: PathBuf,
    user: SessionUser,
    max_upload_bytes: u64,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
}

const TOO_LARGE: &str = "File too large: over the maximum upload size";

impl AccountFs {
    pub(crate) fn new(root: PathBuf, user: SessionUser, max_upload_bytes: u64) -> Self {
        Self { root, user, max_upload_bytes, handles: HashMap::new(), next_handle: 0 }
    }

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

    fn writable(&self, folder: Folder) -> bool {
        match folder {
            Folder::Customers => self.user.can_upload,
            Folder::Outbox | Folder::Archive => false,
        }
    }

    fn new_handle(&mut self, open: OpenHandle) -> Reply<String> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(failure("Too many open files"));
        }
        self.next_handle += 1;
        let id = self.next_handle.to_string();
        self.handles.insert(id.clone(), open);
        Ok(id)
    }

    /// Attributes of what `v` names, or no-such-file for anything a client
    /// must not see (symlinks, devices, hidden names).
    fn attrs_of(&self, v: &VirtualPath) -> Reply<FileAttributes> {
        let path = self.disk_path(v)?;
        let meta = std::fs::symlink_metadata(&path).map_err(|e| self.io_error("lstat", &v.display, e))?;
        let writable = match &v.place {
            Place::Root => false,
            Place::Folder(f) | Place::Entry { folder: f, .. } => self.writable(*f),
        };
        visible_attrs(&meta, writable).ok_or_else(no_such_file)
    }

    fn list(&self, v: &VirtualPath) -> Reply<Vec<File>> {
        let (user, group) = (self.user.username.as_str(), self.user.account.as_str());
        if v.place == Place::Root {
            let mut entries = Vec::new();
            for folder in Folder::ALL {
                let meta = std::fs::symlink_metadata(self.root.join(folder.name()))
                    .map_err(|e| self.io_error("lstat", &v.display, e))?;
                if let Some(attrs) = visible_attrs(&meta, self.writable(folder)) {
                    entries.push(named(folder.name(), attrs, user, group));
                }
            }
            return Ok(entries);
        }
        let writable = match &v.place {
            Place::Folder(f) | Place::Entry { folder: f, .. } => self.writable(*f),
            Place::Root => false,
        };
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
            if name.starts_with('.') {
                continue;
            }
            // DirEntry::metadata does not follow symlinks.
            let Ok(meta) = entry.metadata() else { continue };
            if let Some(attrs) = visible_attrs(&meta, writable) {
                entries.push(named(&name, attrs, user, group));
            }
        }
        entries.sort_by(|a, b| a.filename.cmp(&b.filename));
        Ok(entries)
    }

    /// Checks that `v` may receive an upload and returns (folder on disk, name).
    fn upload_target(&self, v: &VirtualPath) -> Reply<(PathBuf, String)> {
        match &v.place {
            Place::Entry { folder: Folder::Customers, rel } if rel.len() == 1 => {
                if !self.user.can_upload {
                    return Err(denied("Permission denied: this login may not upload (scope customers:create)"));
                }
                let target = self.disk_path(v)?;
                let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
                Ok((dir, rel[0].clone()))
            }
            Place::Entry { folder: Folder::Customers, .. } => Err(no_such_file()),
            _ => Err(denied("Permission denied: uploads go into /customers")),
        }
    }

    fn open_upload(&mut self, v: &VirtualPath, pflags: OpenFlags) -> Reply<String> {
        let (dir, name) = self.upload_target(v)?;
        if pflags.contains(OpenFlags::APPEND) {
            return Err(unsupported("Appending to or resuming an upload is not supported"));
        }
        let target = dir.join(&name);
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_dir() => return Err(failure("A folder has that name")),
            Ok(_) if pflags.contains(OpenFlags::EXCLUDE) => return Err(failure("File already exists")),
            _ => {}
        }
        let mut random = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut random);
        let temp = dir.join(format!("{UPLOAD_TEMP_PREFIX}{}.{name}", hex(&random)));
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
            .map_err(|e| self.io_error("create", &v.display, e))?;
        tracing::debug!(account = %self.user.account, file = %v.display, "upload started");
        self.new_handle(OpenHandle::Upload(Upload {
            file,
            temp,
            target,
            display: v.display.clone(),
            size: 0,
            failed: None,
        }))
    }

    fn open_read(&mut self, v: &VirtualPath) -> Reply<String> {
        if !matches!(v.place, Place::Entry { .. }) {
            return Err(failure("Is a folder"));
        }
        let path = self.disk_path(v)?;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| self.io_error("open", &v.display, e))?;
        let meta = file.metadata().map_err(|e| self.io_error("fstat", &v.display, e))?;
        if meta.file_type().is_dir() {
            return Err(failure("Is a folder"));
        }
        if !meta.file_type().is_file() {
            return Err(no_such_file());
        }
        self.new_handle(OpenHandle::Read(file))
    }

    fn finish_upload(&self, upload: Upload) -> Reply<()> {
        let Upload { file, temp, target, display: shown, size, failed } = upload;
        drop(file);
        if let Some(reason) = failed {
            let _ = std::fs::remove_file(&temp);
            return Err(failure(reason));
        }
        // Who uploaded it decides whether existing refs may be updated: an
        // upload whose login cannot be recorded is refused, not guessed.
        if let Err(e) = crate::mailbox::set_uploader(&temp, &self.user.username) {
            let _ = std::fs::remove_file(&temp);
            tracing::error!(user = %self.user.username, error = %e, "cannot record the uploader on the file");
            return Err(failure("Upload failed: the server could not store it; try again later"));
        }
        if let Err(e) = std::fs::rename(&temp, &target) {
            let _ = std::fs::remove_file(&temp);
            return Err(self.io_error("publish", &shown, e));
        }
        tracing::info!(
            account = %self.user.account, user = %self.user.username,
            file = %shown, bytes = size, "upload complete"
        );
        Ok(())
    }

    fn do_rename(&self, oldpath: &str, newpath: &str) -> Reply<()> {
        let reserved = |e| match e {
            JailError::Reserved => denied("Permission denied: names starting with '.' are reserved"),
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
                Place::Entry { folder: Folder::Customers, .. } => {}
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
        if let Err(e) = crate::mailbox::set_uploader(&src, &self.user.username) {
            tracing::error!(user = %self.user.username, error = %e, "cannot record the uploader on the file");
            return Err(failure("Rename failed: the server could not store it; try again later"));
        }
        std::fs::rename(&src, &dst).map_err(|e| self.io_error("rename", &from.display, e))?;
        tracing::info!(
            account = %self.user.account, user = %self.user.username,
            from = %from.display, to = %to.display, "file renamed"
        );
        Ok(())
    }
}

impl Drop for AccountFs {
    fn drop(&mut self) {
        // A session that ends with uploads still open (disconnect, kill, oversized
        // packet) publishes nothing: its temp files go.
        let mut abandoned = 0;
        for (_, open) in self.handles.drain() {
            if let OpenHandle::Upload(upload) = open {
                drop(upload.file);
                let _ = std::fs::remove_file(&upload.temp);
                abandoned += 1;
            }
        }
        if abandoned > 0 {
            tracing::info!(account = %self.user.account, user = %self.user.username, abandoned, "session ended with unfinished uploads; discarded");
        }
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
        Ok(version)
    }

    async fn realpath(&mut self, id: u32, path: String) -> Reply<Name> {
        let v = self.resolve(&path)?;
        Ok(Name { id, files: vec![File::dummy(v.display)] })
    }

    async fn stat(&mut self, id: u32, path: String) -> Reply<Attrs> {
        let v = self.resolve(&path)?;
        Ok(Attrs { id, attrs: self.attrs_of(&v)? })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Reply<Attrs> {
        let v = self.resolve(&path)?;
        Ok(Attrs { id, attrs: self.attrs_of(&v)? })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Reply<Attrs> {
        let (meta, writable) = match self.handles.get(&handle) {
            Some(OpenHandle::Read(file)) => (file.metadata(), false),
            Some(OpenHandle::Upload(up)) => (up.file.metadata(), true),
            Some(OpenHandle::Dir { .. }) => return Err(failure("Is a folder")),
            None => return Err(failure("Invalid handle")),
        };
        let meta = meta.map_err(|e| self.io_error("fstat", "handle", e))?;
        Ok(Attrs { id, attrs: visible_attrs(&meta, writable).ok_or_else(no_such_file)? })
    }

    async fn open(&mut self, _id: u32, filename: String, pflags: OpenFlags, _attrs: FileAttributes) -> Reply<Handle> {
        let writes = pflags.intersects(OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE);
        let v = jail::resolve(&filename).map_err(|e| match e {
            JailError::Reserved if writes => denied("Permission denied: names starting with '.' are reserved"),
            JailError::NotFound if writes => denied("Permission denied: uploads go into /customers"),
            JailError::NotFound | JailError::Reserved => no_such_file(),
            JailError::Invalid => failure("Invalid file name"),
        })?;
        let handle = if writes { self.open_upload(&v, pflags)? } else { self.open_read(&v)? };
        Ok(Handle { id: _id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Reply<Status> {
        match self.handles.remove(&handle) {
            Some(OpenHandle::Upload(upload)) => self.finish_upload(upload).map(|()| ok(id)),
            Some(_) => Ok(ok(id)),
            None => Err(failure("Invalid handle")),
        }
    }

    async fn read(&mut self, id: u32, handle: String, offset: u64, len: u32) -> Reply<Data> {
        let file = match self.handles.get(&handle) {
            Some(OpenHandle::Read(file)) => file,
            Some(_) => return Err(denied("Permission denied: not open for reading")),
            None => return Err(failure("Invalid handle")),
        };
        let mut buf = vec![0u8; len.min(MAX_READ) as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error("read", "handle", e)),
            }
        }
        if filled == 0 && len > 0 {
            return Err(StatusCode::Eof.into());
        }
        buf.truncate(filled);
        Ok(Data { id, data: buf })
    }

    async fn write(&mut self, id: u32, handle: String, offset: u64, data: Vec<u8>) -> Reply<Status> {
        let max = self.max_upload_bytes;
        let upload = match self.handles.get_mut(&handle) {
            Some(OpenHandle::Upload(upload)) => upload,
            Some(_) => return Err(denied("Permission denied: not open for writing")),
            None => return Err(failure("Invalid handle")),
        };
        if let Some(reason) = upload.failed {
            return Err(failure(reason));
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > max {
            upload.failed = Some(TOO_LARGE);
            tracing::warn!(account = %self.user.account, file = %upload.display, max_upload_bytes = max, "upload refused: over the size limit");
            return Err(failure(TOO_LARGE));
        }
        if let Err(e) = upload.file.write_all_at(&data, offset) {
            upload.failed = Some("Upload failed on the server");
            let display = upload.display.clone();
            return Err(self.io_error("write", &display, e));
        }
        upload.size = upload.size.max(end);
        Ok(ok(id))
    }

    async fn fsetstat(&mut self, id: u32, handle: String, attrs: FileAttributes) -> Reply<Status> {
        let max = self.max_upload_bytes;
        match self.handles.get_mut(&handle) {
            Some(OpenHandle::Upload(upload)) => {
                if let Some(size) = attrs.size {
                    if size > max {
                        upload.failed = Some(TOO_LARGE);
                        return Err(failure(TOO_LARGE));
                    }
                    if let Err(e) = upload.file.set_len(size) {
                        let display = upload.display.clone();
                        return Err(self.io_error("truncate", &display, e));
                    }
                    upload.size = size;
                }
                Ok(ok(id))
            }
            Some(OpenHandle::Read(_)) if attrs.size.is_some() => Err(denied("Permission denied: not open for writing")),
            Some(_) => Ok(ok(id)),
            None => Err(failure("Invalid handle")),
        }
    }

    async fn setstat(&mut self, id: u32, path: String, attrs: FileAttributes) -> Reply<Status> {
        let v = self.resolve(&path)?;
        self.attrs_of(&v)?;
        if attrs.size.is_some() {
            return Err(unsupported("Changing a file's size is not supported"));
        }
        // Permissions and times are ignored (`put -p`, `scp -p` send them).
        Ok(ok(id))
    }

    async fn opendir(&mut self, _id: u32, path: String) -> Reply<Handle> {
        let v = self.resolve(&path)?;
        let entries = self.list(&v)?;
        let handle = self.new_handle(OpenHandle::Dir { entries, pos: 0 })?;
        Ok(Handle { id: _id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Reply<Name> {
        match self.handles.get_mut(&handle) {
            Some(OpenHandle::Dir { entries, pos }) => {
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

    async fn remove(&mut self, id: u32, filename: String) -> Reply<Status> {
        let v = self.resolve(&filename)?;
        match &v.place {
            Place::Entry { folder: Folder::Customers, .. } if !self.user.can_upload => {
                return Err(denied("Permission denied: this login may not change /customers"))
            }
            Place::Entry { folder: Folder::Customers | Folder::Outbox, .. } => {}
            Place::Entry { folder: Folder::Archive, .. } => {
                return Err(denied("Permission denied: /archive is read-only"))
            }
            _ => return Err(denied("Permission denied: folders cannot be removed")),
        }
        let path = self.disk_path(&v)?;
        let meta = std::fs::symlink_metadata(&path).map_err(|e| self.io_error("lstat", &v.display, e))?;
        if meta.file_type().is_dir() {
            return Err(failure("Is a folder"));
        }
        if !meta.file_type().is_file() {
            return Err(no_such_file());
        }
        std::fs::remove_file(&path).map_err(|e| self.io_error("remove", &v.display, e))?;
        tracing::info!(account = %self.user.account, user = %self.user.username, file = %v.display, "file removed");
        Ok(ok(id))
    }

    async fn rename(&mut self, id: u32, oldpath: String, newpath: String) -> Reply<Status> {
        self.do_rename(&oldpath, &newpath).map(|()| ok(id))
    }

    async fn mkdir(&mut self, _id: u32, _path: String, _attrs: FileAttributes) -> Reply<Status> {
        Err(denied("Permission denied: folders cannot be created"))
    }

    async fn rmdir(&mut self, _id: u32, _path: String) -> Reply<Status> {
        Err(denied("Permission denied: folders cannot be removed"))
    }

    async fn readlink(&mut self, _id: u32, _path: String) -> Reply<Name> {
        Err(unsupported("Links are not supported"))
    }

    async fn symlink(&mut self, _id: u32, _linkpath: String, _targetpath: String) -> Reply<Status> {
        Err(denied("Permission denied: links cannot be created"))
    }

    async fn extended(&mut self, id: u32, request: String, data: Vec<u8>) -> Reply<Packet> {
        match request.as_str() {
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
                let mut rest = data.as_slice();
                let (Some(old), Some(new)) = (take_string(&mut rest), take_string(&mut rest)) else {
                    return Err(StatusCode::BadMessage.with_message("Malformed request"));
                };
                self.do_rename(&old, &new).map(|()| Packet::Status(ok(id)))
            }
            "hardlink@openssh.com" => Err(denied("Permission denied: links cannot be created")),
            _ => Err(unsupported("Operation not supported")),
        }
    }
}

/// Reads one SSH string (u32 length + bytes) as UTF-8.
fn take_string(buf: &mut &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let bytes = buf.get(4..4 + len)?;
    *buf = &buf[4 + len..];
    String::from_utf8(bytes.to_vec()).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Attributes shown to clients, or `None` for anything that is neither a
/// regular file nor a folder (symlinks, devices): those are never shown.
/// Modes say what this login may do; owner and group are not revealed.
fn visible_attrs(meta: &Metadata, writable: bool) -> Option<FileAttributes> {
    let ft = meta.file_type();
    let (kind, mode) = if ft.is_dir() {
        (FileMode::DIR, if writable { 0o755 } else { 0o555 })
    } else if ft.is_file() {
        (FileMode::REG, if writable { 0o644 } else { 0o444 })
    } else {
        return None;
    };
    Some(FileAttributes {
        size: Some(if ft.is_dir() { 4096 } else { meta.len() }),
        uid: Some(0),
        user: None,
        gid: Some(0),
        group: None,
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
