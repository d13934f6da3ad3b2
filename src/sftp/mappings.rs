//! The `/mappings` folder of every account root: the account's mapping
//! profiles, kept in the database (through [`super::super::UserDirectory`]),
//! shown as `NAME.toml` files. An upload is written aside like any other
//! and checked when it closes: an invalid profile is refused right there
//! with a failure status naming the line and the key, which OpenSSH `sftp`
//! prints. Listing shows the profiles as they are; deleting removes one.
//! Each hook asks `/keys` (`keys.rs`, the same kind of folder) first.

use super::*;
use crate::domain::mapping::{check_name, MAX_PROFILE_BYTES};
use std::io::{Read, Seek, Write};

/// The folder's name in the account root.
const FOLDER: &str = "mappings";
/// Marks an upload's target as a profile (a name no folder on disk has).
const TARGET_MARK: &str = ".intake-mappings";

/// What a client path names in `/mappings`.
enum MappingPath {
    Folder,
    /// A profile's file, `NAME.toml`: the profile `NAME` (checked).
    Profile(String),
    /// Inside `/mappings` but no profile's file name: the reason.
    BadName,
}

fn mapping_path(path: &str) -> Option<MappingPath> {
    let parts = jail::normalise(path).ok()?;
    match parts.as_slice() {
        [folder] if folder == FOLDER => Some(MappingPath::Folder),
        [folder, file] if folder == FOLDER => {
            let name = file.strip_suffix(".toml").unwrap_or("");
            Some(if check_name(name).is_ok() { MappingPath::Profile(name.to_owned()) } else { MappingPath::BadName })
        }
        [folder, ..] if folder == FOLDER => Some(MappingPath::BadName),
        _ => None,
    }
}

const BAD_NAME: &str = "A mapping is uploaded as NAME.toml, NAME being 1 to 64 letters, digits, '.', '_' or '-'";

fn unavailable(e: anyhow::Error) -> StatusReply {
    tracing::warn!(error = %e, "the mapping profiles cannot be read or stored");
    failure("Mapping profiles are not available right now; try again later")
}

/// Attributes of an entry of a folder kept in the database (`/mappings`,
/// `/keys`): no disk file behind it, so shown as made now.
pub(super) fn attrs(dir: bool, size: u64, writable: bool, user: &str, group: &str) -> FileAttributes {
    let (kind, mode) = match (dir, writable) {
        (true, true) => (FileMode::DIR, 0o755),
        (true, false) => (FileMode::DIR, 0o555),
        (false, true) => (FileMode::REG, 0o644),
        (false, false) => (FileMode::REG, 0o444),
    };
    let now = clamp_time(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64),
    );
    FileAttributes {
        size: Some(if dir { 4096 } else { size }),
        uid: Some(SHOWN_ID),
        user: Some(user.to_owned()),
        gid: Some(SHOWN_ID),
        group: Some(group.to_owned()),
        permissions: Some(kind.bits() | mode),
        atime: Some(now),
        mtime: Some(now),
    }
}

/// `realpath` of a path in `/mappings` (the folder exists on no disk), or
/// in `/keys`.
pub(super) fn realpath(id: u32, path: &str) -> Option<Reply<Name>> {
    if let Some(result) = super::keys::realpath(id, path) {
        return Some(result);
    }
    mapping_path(path)?;
    let parts = jail::normalise(path).ok()?;
    Some(Ok(Name { id, files: vec![File::dummy(format!("/{}", parts.join("/")))] }))
}

impl AccountFs {
    fn directory(&self) -> Arc<dyn crate::sftp::UserDirectory> {
        Arc::clone(&self.shared.directory)
    }

    async fn profile_text(&self, name: &str) -> Reply<Option<String>> {
        let all = self.directory().list_mappings(&self.view.user.account).await.map_err(unavailable)?;
        Ok(all.into_iter().find(|(n, _)| n == name).map(|(_, text)| text))
    }

    pub(super) async fn mapping_stat(&mut self, _id: u32, path: &str) -> Option<Reply<Attrs>> {
        if let Some(result) = self.key_stat(_id, path).await {
            return Some(result);
        }
        let place = mapping_path(path)?;
        let (user, group) = self.view.names();
        let writable = self.view.user.can_upload;
        Some(match place {
            MappingPath::Folder => Ok(Attrs { id: _id, attrs: attrs(true, 0, writable, user, group) }),
            MappingPath::BadName => Err(no_such_file()),
            MappingPath::Profile(name) => match self.profile_text(&name).await {
                Ok(Some(text)) => {
                    let (user, group) = self.view.names();
                    Ok(Attrs { id: _id, attrs: attrs(false, text.len() as u64, writable, user, group) })
                }
                Ok(None) => Err(no_such_file()),
                Err(e) => Err(e),
            },
        })
    }

    /// `/mappings` lists the profiles; the root lists the folder too.
    pub(super) async fn mapping_opendir(&mut self, id: u32, path: &str) -> Option<Reply<Handle>> {
        if jail::normalise(path).ok()?.is_empty() {
            let handle = match self.do_opendir(id, path).await {
                Ok(h) => h,
                Err(e) => return Some(Err(e)),
            };
            let (user, group) = self.view.names();
            let entry = named(FOLDER, attrs(true, 0, self.view.user.can_upload, user, group), user, group);
            let keys = super::keys::folder_entry(self.view.user.can_upload, user, group);
            if let Some(OpenHandle { open: Open::Dir { entries, .. }, .. }) = self.handles.get_mut(&handle.handle) {
                entries.push(entry);
                entries.push(keys);
                entries.sort_by(|a, b| a.filename.cmp(&b.filename));
            }
            return Some(Ok(handle));
        }
        if let Some(result) = self.key_opendir(id, path).await {
            return Some(result);
        }
        match mapping_path(path)? {
            MappingPath::Folder => {}
            _ => return Some(Err(failure("Not a folder"))),
        }
        let slot = match self.handle_slot() {
            Ok(slot) => slot,
            Err(e) => return Some(Err(e)),
        };
        let listed = match self.directory().list_mappings(&self.view.user.account).await {
            Ok(all) => all,
            Err(e) => return Some(Err(unavailable(e))),
        };
        let (user, group) = self.view.names();
        let writable = self.view.user.can_upload;
        let entries = listed
            .iter()
            .map(|(name, text)| {
                named(&format!("{name}.toml"), attrs(false, text.len() as u64, writable, user, group), user, group)
            })
            .collect();
        Some(Ok(Handle { id, handle: self.new_handle(Open::Dir { entries, pos: 0 }, slot) }))
    }

    /// A write opens an upload written aside (checked at close); a read
    /// opens the profile's current text.
    pub(super) async fn mapping_open(&mut self, id: u32, path: &str, pflags: OpenFlags) -> Option<Reply<Handle>> {
        if let Some(result) = self.key_open(id, path, pflags).await {
            return Some(result);
        }
        let place = mapping_path(path)?;
        let writes = pflags.intersects(OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE);
        let name = match place {
            MappingPath::Profile(name) => name,
            MappingPath::Folder => return Some(Err(failure("Is a folder"))),
            MappingPath::BadName if writes => return Some(Err(failure(BAD_NAME))),
            MappingPath::BadName => return Some(Err(no_such_file())),
        };
        let display = format!("/{FOLDER}/{name}.toml");
        Some(if writes {
            self.open_profile_upload(id, &name, &display, pflags)
        } else {
            self.open_profile_read(id, &name, &display).await
        })
    }

    fn open_profile_upload(&mut self, id: u32, name: &str, display: &str, pflags: OpenFlags) -> Reply<Handle> {
        if !self.view.user.can_upload {
            return Err(denied("Permission denied: this login may not change mappings (scope customers:create)"));
        }
        if pflags.contains(OpenFlags::APPEND) {
            return Err(unsupported("Appending to a mapping is not supported: upload it whole"));
        }
        let slot = self.handle_slot()?;
        let (file, temp) = self.temp_file(display)?;
        let target = self.view.root.join(TARGET_MARK).join(format!("{name}.toml"));
        let open = self.shared.open_files.register(&temp);
        let upload = Upload::whole(file, temp, target, display.to_owned(), open);
        Ok(Handle { id, handle: self.new_handle(Open::Upload(upload), slot) })
    }

    async fn open_profile_read(&mut self, id: u32, name: &str, display: &str) -> Reply<Handle> {
        let text = self.profile_text(name).await?.ok_or_else(no_such_file)?;
        let slot = self.handle_slot()?;
        let (mut file, temp) = self.temp_file(display)?;
        // Read from a file no one else can name: written, unlinked, rewound.
        let _ = std::fs::remove_file(&temp);
        file.write_all(text.as_bytes())
            .and_then(|()| file.rewind())
            .map_err(|e| self.view.io_error("write", display, e))?;
        let open = self.shared.open_files.register(&temp);
        Ok(Handle { id, handle: self.new_handle(Open::Read { file, display: display.to_owned(), _open: open }, slot) })
    }

    /// A hidden temp file in `/customers` (reserved name: no client sees
    /// it; one left by a crash is swept like an upload's).
    pub(super) fn temp_file(&self, display: &str) -> Reply<(StdFile, PathBuf)> {
        let mut random = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut random);
        let dir = self.view.root.join(Folder::Customers.name());
        let temp = dir.join(upload_temp_name(&self.shared.node_id, &hex(&random)));
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
            .map_err(|e| self.view.io_error("create", display, e))?;
        Ok((file, temp))
    }

    /// Closing a profile's upload checks and stores it, or refuses it with
    /// the reason (the line and the key).
    pub(super) async fn mapping_close(&mut self, id: u32, handle: &str) -> Option<Reply<Status>> {
        if let Some(result) = self.key_close(id, handle).await {
            return Some(result);
        }
        let is_profile = match self.handles.get(handle).map(|h| &h.open) {
            Some(Open::Upload(up)) => up.target.parent().and_then(|p| p.file_name()).is_some_and(|n| n == TARGET_MARK),
            _ => false,
        };
        if !is_profile {
            return None;
        }
        let Some(OpenHandle { open: Open::Upload(upload), .. }) = self.handles.remove(handle) else { return None };
        let Upload { mut file, temp, target, display, failed, .. } = upload;
        let _ = std::fs::remove_file(&temp);
        if let Some(reason) = failed {
            return Some(Err(failure(reason)));
        }
        let mut bytes = Vec::new();
        let read = file.rewind().and_then(|()| (&mut file).take(MAX_PROFILE_BYTES as u64 + 1).read_to_end(&mut bytes));
        if let Err(e) = read {
            return Some(Err(self.view.io_error("read", &display, e)));
        }
        let name = target.file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let account = self.view.user.account.clone();
        Some(match self.directory().put_mapping(&account, &name, &bytes).await {
            Ok(Ok(())) => {
                tracing::info!(account = %account, user = %self.view.user.username, mapping = %name, "mapping profile stored");
                Ok(ok(id))
            }
            Ok(Err(why)) => Err(failure(&format!("Mapping {name} refused: {why}"))),
            Err(e) => Err(unavailable(e)),
        })
    }

    pub(super) async fn mapping_remove(&mut self, id: u32, path: &str) -> Option<Reply<Status>> {
        if let Some(result) = self.key_remove(id, path).await {
            return Some(result);
        }
        let name = match mapping_path(path)? {
            MappingPath::Profile(name) => name,
            MappingPath::Folder => return Some(Err(denied("Permission denied: folders cannot be removed"))),
            MappingPath::BadName => return Some(Err(no_such_file())),
        };
        if !self.view.user.can_upload {
            return Some(Err(denied("Permission denied: this login may not change mappings (scope customers:create)")));
        }
        Some(match self.directory().remove_mapping(&self.view.user.account, &name).await {
            Ok(true) => {
                tracing::info!(account = %self.view.user.account, mapping = %name, "mapping profile removed");
                Ok(ok(id))
            }
            Ok(false) => Err(no_such_file()),
            Err(e) => Err(unavailable(e)),
        })
    }
}
