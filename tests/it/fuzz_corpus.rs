//! Replays the fuzz corpus and every saved crash under plain `cargo test`
//! (stable toolchain), with the very checks the fuzz targets run: the
//! targets' bodies live in `fuzz/src/lib.rs`, included here.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod checks;

use std::path::{Path, PathBuf};

/// The inputs of `fuzz/corpus/<target>` and `fuzz/regressions/<target>`.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else { continue };
        for entry in entries {
            let path = entry.expect("a readable corpus folder").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` over every input of `target`; names every input that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
    let failing: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("a readable corpus file");
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failing.is_empty(),
        "inputs failing the `{target}` check (rerun one with `cargo fuzz run {target} FILE`): {failing:#?}"
    );
}

#[test]
fn rows() {
    replay("rows", checks::rows);
}

#[test]
fn names() {
    replay("names", checks::names);
}

#[test]
fn jail() {
    replay("jail", checks::jail);
}

#[test]
fn addresses() {
    replay("addresses", checks::addresses);
}

#[test]
fn pgp() {
    replay("pgp", checks::pgp);
}

/// The `pgp` seeds, made by gpg, sq and rnp to the fixture key: each one
/// opens as its maker meant (a replay that only checks "no panic" would
/// pass with decryption broken).
#[test]
fn pgp_seeds_open_as_made() {
    use intake::domain::{AccountId, AccountSettings};
    use intake::ingest::rows::{scan_with, FileLimits};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/pgp");
    let account = AccountSettings::new(AccountId::parse("fuzz").unwrap());
    let outcome = |name: &str| {
        let data = std::fs::read(dir.join(name)).unwrap();
        let scanned = scan_with(&data[..], &account, FileLimits::default(), &checks::pgp_opening()).unwrap();
        (scanned.rejection.map(|r| r.code.code()), scanned.records)
    };
    for name in [
        "gpg-encrypted",
        "gpg-armoured",
        "gpg-signed",
        "gpg-uncompressed",
        "gpg-gzip-inside",
        "gpg-signed-only",
        "rnp-zip",
        "sq-default",
        "plain-csv",
    ] {
        assert_eq!(outcome(name), (None, 2), "{name}");
    }
    assert_eq!(outcome("gpg-no-mdc").0, Some("integrity_missing"));
    assert_eq!(outcome("gpg-truncated").0, Some("decrypt_failed"));
    assert_eq!(outcome("bad-armour").0, Some("decrypt_failed"));
    assert_eq!(outcome("gpg-compression-bomb").0, Some("file_too_large"));
}
