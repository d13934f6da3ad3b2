//! Mapping profiles as the ingest side uses them: the profiles an upload may
//! be read with (the account's, by name, then its enabled presets), storing
//! a profile checked first (CLI and SFTP), and the profile suggested for a
//! rejected header. Knows nothing about SFTP.

use super::rows::{header_names, is_mappable, FileLimits};
use crate::domain::mapping::{presets, suggest, Profile};
use crate::domain::{FileEncoding, FileErrorCode};
use crate::store::{PutMapping, Store, StoreError};
use std::path::Path;
use std::sync::Arc;

/// Profiles per account, at most: a new name past it is refused.
pub const MAX_PROFILES_PER_ACCOUNT: u32 = 100;

/// The profiles an upload of `account` may be read with, in the order they
/// are tried: the account's by name, then its enabled presets. A stored
/// profile that no longer parses (stored by an older version) is skipped.
pub async fn candidates(store: &Store, account: &str) -> Result<Vec<Arc<Profile>>, StoreError> {
    let mut profiles = Vec::new();
    for stored in store.list_mappings(account).await? {
        match Profile::parse(&stored.name, stored.text.as_bytes()) {
            Ok(p) => profiles.push(Arc::new(p)),
            Err(e) => {
                tracing::warn!(account, mapping = %stored.name, error = %e, "a stored mapping profile no longer parses; skipped")
            }
        }
    }
    for name in store.get_presets(account).await? {
        if let Some(p) = presets::get(&name) {
            profiles.push(p);
        }
    }
    Ok(profiles)
}

/// The profile named `name` among those an upload of `account` may be read
/// with (its own, then its enabled presets), if any.
pub async fn named(store: &Store, account: &str, name: &str) -> Result<Option<Arc<Profile>>, StoreError> {
    Ok(candidates(store, account).await?.into_iter().find(|p| p.name == name))
}

/// The file in a job's spool that keeps the profile it was asked to be read with.
const REQUESTED: &str = "mapping.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Requested {
    name: String,
    preset: bool,
    text: String,
}

/// Keeps `profile` in the job's `spool` (written aside, then renamed, before
/// the upload: a job never runs without it).
pub(crate) fn keep_requested(spool: &Path, profile: &Profile) -> std::io::Result<()> {
    std::fs::create_dir_all(spool)?;
    let kept = Requested { name: profile.name.clone(), preset: profile.preset, text: profile.text().to_owned() };
    let json = serde_json::to_vec(&kept).map_err(std::io::Error::other)?;
    crate::mailbox::publish_atomically(&spool.join(REQUESTED), &json)
}

/// The profile a job in `spool` was asked to be read with, if any.
pub(crate) fn requested(spool: &Path) -> Result<Option<Arc<Profile>>, String> {
    let Ok(json) = std::fs::read(spool.join(REQUESTED)) else { return Ok(None) };
    let kept: Requested = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    let mut profile = Profile::parse(&kept.name, kept.text.as_bytes()).map_err(|e| e.to_string())?;
    profile.preset = kept.preset;
    Ok(Some(Arc::new(profile)))
}

/// Why a profile was not stored: said to whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Invalid(String),
    #[error("the account has {MAX_PROFILES_PER_ACCOUNT} mapping profiles, the limit; remove one first")]
    TooMany,
}

/// Checks `bytes` as a profile named `name` and stores it for `account`.
pub async fn store_profile(
    store: &Store,
    account: &str,
    name: &str,
    bytes: &[u8],
) -> Result<Result<Arc<Profile>, Refused>, StoreError> {
    let profile = match Profile::parse(name, bytes) {
        Ok(p) => p,
        Err(e) => return Ok(Err(Refused::Invalid(e.to_string()))),
    };
    match store.put_mapping(account, name, profile.text(), profile.sha256(), MAX_PROFILES_PER_ACCOUNT).await? {
        PutMapping::Stored => Ok(Ok(Arc::new(profile))),
        PutMapping::TooMany => Ok(Err(Refused::TooMany)),
    }
}

/// The profile suggested for an upload rejected with `code`: `None` when
/// the rejection is not about its columns or its header cannot be read.
pub fn suggestion(
    upload: &Path,
    file_name: &str,
    code: FileErrorCode,
    encoding: FileEncoding,
    limits: FileLimits,
    pgp: &std::sync::Arc<crate::openpgp::Opening>,
) -> std::io::Result<Option<String>> {
    if !is_mappable(code) {
        return Ok(None);
    }
    let content = super::upload::open(std::fs::File::open(upload)?, limits.max_gzip_ratio, pgp)?;
    let Some(names) = header_names(content.reader, encoding, limits)? else { return Ok(None) };
    Ok(Some(suggest::suggest(&names, file_name)))
}

/// The suggestion's name in `/outbox` for an upload.
pub fn suggestion_name(file_name: &str) -> String {
    format!("{}.mapping-suggestion.toml", crate::mailbox::report_stem(file_name))
}

/// The file error codes a suggestion is made for, from their text.
pub fn mappable_code(code: &str) -> Option<FileErrorCode> {
    [
        FileErrorCode::UnknownColumn,
        FileErrorCode::MissingHeader,
        FileErrorCode::MissingRefColumn,
        FileErrorCode::MissingAddressColumn,
    ]
    .into_iter()
    .find(|c| c.code() == code)
}
