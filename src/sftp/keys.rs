//! The `/keys` folder of every account root (spec §12): `intake.asc`, the
//! account's OpenPGP public key (read-only, made on first use), and the
//! merchant's public keys, kept in the database (through
//! [`super::super::UserDirectory`]) and shown as `FINGERPRINT.asc`. A key
//! uploaded as `NAME.asc`, `NAME.pgp` or `NAME.gpg` is written aside like
//! any upload and checked when it closes: a secret key, an expired or
//! revoked one, or no key at all is refused right there with a failure
//! status (never stored). Deleting a merchant key's file removes the key.
//! Reached from the `/mappings` hooks (`mappings.rs`), which try it first.

use super::mappings::attrs;
use super::*;
use std::io::{Read, Seek, Write};

/// The folder's name in the account root.
pub(super) const FOLDER: &str = "keys";
/// Marks an upload's target as a key (a name no folder on disk has).
const TARGET_MARK: &str = ".intake-keys";
/// The account's own public key.
const ACCOUNT_KEY: &str = "intake.asc";

/// What a client path names in `/keys`.
enum KeyPath {
    Folder,
    /// `intake.asc`.
    AccountKey,
    /// Any other `NAME.asc|.pgp|.gpg`: a merchant key's file (the stem).
    Merchant(String),
    BadName,
}

fn key_path(path: &str) -> Option<KeyPath> {
    let parts = jail::normalise(path).ok()?;
    match parts.as_slice() {
        [folder] if folder == FOLDER => Some(KeyPath::Folder),
        [folder, file] if folder == FOLDER => Some(if file == ACCOUNT_KEY {
            KeyPath::AccountKey
        } else {
            let lower = file.to_ascii_lowercase();
            let stem = [".asc", ".pgp", ".gpg"].iter().find_map(|ext| lower.strip_suffix(ext));
            match stem {
                Some(stem) if !stem.is_empty() && !file.starts_with('.') && file.len() <= 128 => {
                    KeyPath::Merchant(stem.to_owned())
                }
                _ => KeyPath::BadName,
            }
        }),
        [folder, ..] if folder == FOLDER => Some(KeyPath::BadName),
        _ => None,
    }
}

const BAD_NAME: &str = "A key is uploaded into /keys as NAME.asc, NAME.pgp or NAME.gpg (an OpenPGP public key)";

fn unavailable(e: anyhow::Error) -> StatusReply {
    tracing::warn!(error = %e, "the OpenPGP keys cannot be read or stored");
    failure("OpenPGP keys are not available right now; try again later")
}

/// `realpath` of a path in `/keys` (the folder exists on no disk).
pub(super) fn realpath(id: u32, path: &str) -> Option<Reply<Name>> {
    key_path(path)?;
    let parts = jail::normalise(path).ok()?;
    Some(Ok(Name { id, files: vec![File::dummy(format!("/{}", parts.join("/")))] }))
}

/// The root's entry for the folder.
pub(super) fn folder_entry(writable: bool, user: &str, group: &str) -> File {
    named(FOLDER, attrs(true, 0, writable, user, group), user, group)
}

impl AccountFs {
    async fn account_key(&self) -> Reply<String> {
        let account = &self.view.user.account;
        match self.shared.directory.account_pgp_key(account).await {
            Ok(Some(text)) => Ok(text),
            Ok(None) => Err(no_such_file()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The merchant key whose file is `stem`.asc (its fingerprint).
    async fn merchant_key(&self, stem: &str) -> Reply<Option<(String, String)>> {
        let all = self.shared.directory.list_pgp_keys(&self.view.user.account).await.map_err(unavailable)?;
        Ok(all.into_iter().find(|(fingerprint, _)| fingerprint == stem))
    }

    pub(super) async fn key_stat(&mut self, id: u32, path: &str) -> Option<Reply<Attrs>> {
        let place = key_path(path)?;
        let writable = self.view.user.can_upload;
        let (user, group) = self.view.names();
        let (user, group) = (user.to_owned(), group.to_owned());
        Some(match place {
            KeyPath::Folder => Ok(Attrs { id, attrs: attrs(true, 0, writable, &user, &group) }),
            KeyPath::BadName => Err(no_such_file()),
            KeyPath::AccountKey => self
                .account_key()
                .await
                .map(|t| Attrs { id, attrs: attrs(false, t.len() as u64, false, &user, &group) }),
            KeyPath::Merchant(stem) => match self.merchant_key(&stem).await {
                Ok(Some((_, text))) => {
                    Ok(Attrs { id, attrs: attrs(false, text.len() as u64, writable, &user, &group) })
                }
                Ok(None) => Err(no_such_file()),
                Err(e) => Err(e),
            },
        })
    }

    pub(super) async fn key_opendir(&mut self, id: u32, path: &str) -> Option<Reply<Handle>> {
        match key_path(path)? {
            KeyPath::Folder => {}
            _ => return Some(Err(failure("Not a folder"))),
        }
        let slot = match self.handle_slot() {
            Ok(slot) => slot,
            Err(e) => return Some(Err(e)),
        };
        let account_key = match self.account_key().await {
            Ok(text) => text,
            Err(e) => return Some(Err(e)),
        };
        let listed = match self.shared.directory.list_pgp_keys(&self.view.user.account).await {
            Ok(all) => all,
            Err(e) => return Some(Err(unavailable(e))),
        };
        let (user, group) = self.view.names();
        let writable = self.view.user.can_upload;
        let mut entries =
            vec![named(ACCOUNT_KEY, attrs(false, account_key.len() as u64, false, user, group), user, group)];
        entries.extend(listed.iter().map(|(fingerprint, text)| {
            let a = attrs(false, text.len() as u64, writable, user, group);
            named(&format!("{fingerprint}.asc"), a, user, group)
        }));
        Some(Ok(Handle { id, handle: self.new_handle(Open::Dir { entries, pos: 0 }, slot) }))
    }

    /// A write opens an upload written aside (checked at close); a read
    /// opens the key's armour.
    pub(super) async fn key_open(&mut self, id: u32, path: &str, pflags: OpenFlags) -> Option<Reply<Handle>> {
        let place = key_path(path)?;
        let writes = pflags.intersects(OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE);
        let text = match place {
            KeyPath::Folder => return Some(Err(failure("Is a folder"))),
            KeyPath::BadName if writes => return Some(Err(failure(BAD_NAME))),
            KeyPath::BadName => return Some(Err(no_such_file())),
            KeyPath::AccountKey if writes => {
                return Some(Err(denied("Permission denied: intake.asc is the account's own key (read-only)")))
            }
            KeyPath::AccountKey => self.account_key().await,
            KeyPath::Merchant(_) if writes => return Some(self.open_key_upload(id, path, pflags)),
            KeyPath::Merchant(stem) => match self.merchant_key(&stem).await {
                Ok(Some((_, text))) => Ok(text),
                Ok(None) => Err(no_such_file()),
                Err(e) => Err(e),
            },
        };
        let display = format!("/{}", jail::normalise(path).unwrap_or_default().join("/"));
        Some(text.and_then(|text| self.open_text_read(id, &text, &display)))
    }

    fn open_key_upload(&mut self, id: u32, path: &str, pflags: OpenFlags) -> Reply<Handle> {
        if !self.view.user.can_upload {
            return Err(denied("Permission denied: this login may not change keys (scope customers:create)"));
        }
        if pflags.contains(OpenFlags::APPEND) {
            return Err(unsupported("Appending to a key is not supported: upload it whole"));
        }
        let display = format!("/{}", jail::normalise(path).unwrap_or_default().join("/"));
        let slot = self.handle_slot()?;
        let (file, temp) = self.temp_file(&display)?;
        let target = self.view.root.join(TARGET_MARK).join("key");
        let open = self.shared.open_files.register(&temp);
        let upload = Upload::whole(file, temp, target, display, open);
        Ok(Handle { id, handle: self.new_handle(Open::Upload(upload), slot) })
    }

    fn open_text_read(&mut self, id: u32, text: &str, display: &str) -> Reply<Handle> {
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

    /// Closing a key's upload checks and keeps it, or refuses it with the
    /// reason; a refused key is never stored.
    pub(super) async fn key_close(&mut self, id: u32, handle: &str) -> Option<Reply<Status>> {
        let is_key = match self.handles.get(handle).map(|h| &h.open) {
            Some(Open::Upload(up)) => up.target.parent().and_then(|p| p.file_name()).is_some_and(|n| n == TARGET_MARK),
            _ => false,
        };
        if !is_key {
            return None;
        }
        let Some(OpenHandle { open: Open::Upload(upload), .. }) = self.handles.remove(handle) else { return None };
        let Upload { mut file, temp, display, failed, .. } = upload;
        let _ = std::fs::remove_file(&temp);
        if let Some(reason) = failed {
            return Some(Err(failure(reason)));
        }
        let max = crate::openpgp::MAX_KEY_BYTES;
        let mut bytes = Vec::new();
        let read = file.rewind().and_then(|()| (&mut file).take(max as u64 + 1).read_to_end(&mut bytes));
        if let Err(e) = read {
            return Some(Err(self.view.io_error("read", &display, e)));
        }
        let account = self.view.user.account.clone();
        Some(match self.shared.directory.put_pgp_key(&account, &bytes).await {
            Ok(Ok(fingerprint)) => {
                tracing::info!(account = %account, user = %self.view.user.username, %fingerprint, "merchant OpenPGP key stored");
                Ok(ok(id))
            }
            Ok(Err(why)) => Err(failure(&format!("Key refused: {why}"))),
            Err(e) => Err(unavailable(e)),
        })
    }

    pub(super) async fn key_remove(&mut self, id: u32, path: &str) -> Option<Reply<Status>> {
        let stem = match key_path(path)? {
            KeyPath::Merchant(stem) => stem,
            KeyPath::AccountKey => {
                return Some(Err(denied("Permission denied: intake.asc is the account's own key (read-only)")))
            }
            KeyPath::Folder => return Some(Err(denied("Permission denied: folders cannot be removed"))),
            KeyPath::BadName => return Some(Err(no_such_file())),
        };
        if !self.view.user.can_upload {
            return Some(Err(denied("Permission denied: this login may not change keys (scope customers:create)")));
        }
        Some(match self.shared.directory.remove_pgp_key(&self.view.user.account, &stem).await {
            Ok(true) => {
                tracing::info!(account = %self.view.user.account, fingerprint = %stem, "merchant OpenPGP key removed");
                Ok(ok(id))
            }
            Ok(false) => Err(no_such_file()),
            Err(e) => Err(unavailable(e)),
        })
    }
}
