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

/// Runs `check` over every input of `target`, naming the input that fails.
/// A reproducer named `open-*` is a reported finding not fixed yet: it must
/// still fail `strict` (the check without the tolerance that lets fuzzing go
/// on past it), so that its fix is noticed and the tolerance dropped.
fn replay(target: &str, check: fn(&[u8]), strict: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
    for path in files {
        let data = std::fs::read(&path).expect("a readable corpus file");
        let open = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("open-"));
        if open {
            if std::panic::catch_unwind(|| strict(&data)).is_ok() {
                panic!(
                    "{} (an open finding) now passes the strict `{target}` check: rename it without `open-` and \
                     drop its tolerance in fuzz/src/lib.rs",
                    path.display()
                );
            }
        } else if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{} fails the `{target}` check (rerun: cargo fuzz run {target} {0})", path.display());
        }
    }
}

#[test]
fn rows() {
    replay("rows", checks::rows, checks::rows_strict);
}

#[test]
fn names() {
    replay("names", checks::names, checks::names);
}

#[test]
fn jail() {
    replay("jail", checks::jail, checks::jail);
}

#[test]
fn addresses() {
    replay("addresses", checks::addresses, checks::addresses_strict);
}
