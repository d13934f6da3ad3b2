//! Client paths → places in the account's jail. Pure: touches no file system.
//!
//! Every client path is normalised as if the account root were `/` (a `..`
//! above it stays at the root, as in a chroot), so no path can name anything
//! outside the root. Names starting with [`crate::mailbox::RESERVED_PREFIX`]
//! (upload temp files, the daemon's own temp files) are reserved and never
//! reachable; any other hidden name (`.in.x.csv`) is the client's.

use std::path::{Path, PathBuf};

pub(crate) use crate::mailbox::Folder;

/// What a client path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// `/`: the account root, which shows the three folders.
    Root,
    /// `/customers`, `/outbox`, `/archive`.
    Folder(Folder),
    /// Something inside a folder; `rel` is never empty and holds no `.`/`..`
    /// and no reserved name.
    Entry { folder: Folder, rel: Vec<String> },
}

/// Why a client path names nothing the client may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JailError {
    /// Outside the three folders, e.g. `/etc` (or `/../etc`, which is the same).
    NotFound,
    /// A name starting with `.intake-`: reserved for the server's own files.
    Reserved,
    /// NUL byte or over-long name.
    Invalid,
}

/// A resolved client path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VirtualPath {
    pub(crate) place: Place,
    /// The normalised absolute path as the client sees it (`/customers/a.csv`).
    pub(crate) display: String,
}

impl VirtualPath {
    /// The path on disk under `root` (the account root).
    pub(crate) fn on_disk(&self, root: &Path) -> PathBuf {
        match &self.place {
            Place::Root => root.to_path_buf(),
            Place::Folder(f) => root.join(f.name()),
            Place::Entry { folder, rel } => {
                let mut p = root.join(folder.name());
                p.extend(rel);
                p
            }
        }
    }
}

const MAX_NAME_BYTES: usize = 255;
const MAX_PATH_BYTES: usize = 4096;

/// Normalises a client path into its components, clamped at the root.
/// Relative paths are relative to `/` (the account root is the home folder).
pub(crate) fn normalise(path: &str) -> Result<Vec<String>, JailError> {
    if path.contains('\0') || path.len() > MAX_PATH_BYTES {
        return Err(JailError::Invalid);
    }
    let mut parts: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name if name.len() > MAX_NAME_BYTES => return Err(JailError::Invalid),
            name => parts.push(name.to_owned()),
        }
    }
    Ok(parts)
}

/// Resolves a client path to a place in the jail.
pub(crate) fn resolve(path: &str) -> Result<VirtualPath, JailError> {
    let parts = normalise(path)?;
    let display = format!("/{}", parts.join("/"));
    let mut iter = parts.into_iter();
    let place = match iter.next() {
        None => Place::Root,
        Some(first) => {
            let folder = Folder::from_name(&first).ok_or(JailError::NotFound)?;
            let rel: Vec<String> = iter.collect();
            if rel.is_empty() {
                Place::Folder(folder)
            } else {
                if rel.iter().any(|name| crate::mailbox::is_reserved_name(name)) {
                    return Err(JailError::Reserved);
                }
                Place::Entry { folder, rel }
            }
        }
    };
    Ok(VirtualPath { place, display })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(folder: Folder, names: &[&str]) -> Place {
        Place::Entry { folder, rel: names.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn the_root_and_its_folders_resolve() {
        for p in ["", ".", "/", "//", "/..", "../..", "/./"] {
            assert_eq!(resolve(p).unwrap().place, Place::Root, "{p:?}");
            assert_eq!(resolve(p).unwrap().display, "/");
        }
        assert_eq!(resolve("customers").unwrap().place, Place::Folder(Folder::Customers));
        assert_eq!(resolve("/outbox/").unwrap().place, Place::Folder(Folder::Outbox));
        assert_eq!(resolve("/archive/..//archive").unwrap().display, "/archive");
    }

    #[test]
    fn dot_dot_never_climbs_above_the_account_root() {
        for p in ["/../etc/passwd", "../../../../etc/passwd", "/customers/../../etc/passwd"] {
            assert_eq!(resolve(p), Err(JailError::NotFound), "{p:?}");
        }
        assert_eq!(resolve("/customers/../../../customers/a.csv").unwrap().place, entry(Folder::Customers, &["a.csv"]));
    }

    #[test]
    fn another_accounts_path_names_nothing() {
        assert_eq!(resolve("/../other/customers/a.csv"), Err(JailError::NotFound));
        assert_eq!(resolve("/accounts/other"), Err(JailError::NotFound));
    }

    #[test]
    fn only_intakes_own_names_are_reserved() {
        assert_eq!(resolve("/customers/.intake-upload.abc"), Err(JailError::Reserved));
        assert_eq!(resolve("/outbox/.intake-tmp.x"), Err(JailError::Reserved));
        assert_eq!(resolve("/customers/.in.a.csv").unwrap().place, entry(Folder::Customers, &[".in.a.csv"]));
        assert_eq!(resolve("/validate/a.csv").unwrap().place, entry(Folder::Validate, &["a.csv"]));
    }

    proptest::proptest! {
        /// Whatever a client sends, resolving it never panics, never leaves
        /// the three folders, and an upload name the server accepts has
        /// every name derived from it within the file system's limit.
        #[test]
        fn any_path_resolves_safely_and_accepted_upload_names_fit(path in "\\PC{0,300}", raw in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            use crate::mailbox::{archive_name, upload_name_problem, upload_temp_name, is_upload_name, MAX_NAME_BYTES};
            let lossy = String::from_utf8_lossy(&raw).into_owned();
            for p in [path.as_str(), lossy.as_str()] {
                let Ok(v) = resolve(p) else { continue };
                let on_disk = v.on_disk(Path::new("/data/acme"));
                proptest::prop_assert!(on_disk.starts_with("/data/acme"));
                proptest::prop_assert!(!v.display.contains("/../"));
                if let Place::Entry { folder, rel } = &v.place {
                    if !folder.takes_uploads() {
                        continue;
                    }
                    let name = rel.last().unwrap();
                    if upload_name_problem(name).is_none() {
                        proptest::prop_assert!(name.len() <= MAX_NAME_BYTES);
                        proptest::prop_assert!(upload_temp_name(&"n".repeat(crate::domain::NodeId::MAX_BYTES), "0123456789abcdef").len() <= MAX_NAME_BYTES);
                        if is_upload_name(name) {
                            for dry_run in [false, true] {
                                let names = crate::mailbox::ReportNames::of(name, dry_run);
                                for report in [names.results, names.summary, names.progress, names.failed] {
                                    proptest::prop_assert!(report.len() <= MAX_NAME_BYTES, "{}", report);
                                }
                            }
                            let archived = archive_name("20261126T100000Z", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", name);
                            proptest::prop_assert!(archived.len() <= MAX_NAME_BYTES);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nul_bytes_and_long_names_are_invalid() {
        assert_eq!(resolve("/customers/a\0b"), Err(JailError::Invalid));
        assert_eq!(resolve(&format!("/customers/{}", "x".repeat(256))), Err(JailError::Invalid));
    }

    #[test]
    fn an_entry_maps_under_the_root_on_disk() {
        let v = resolve("/customers/a.csv").unwrap();
        assert_eq!(v.on_disk(Path::new("/data/acme")), PathBuf::from("/data/acme/customers/a.csv"));
    }
}
