//! The server's host keys: Ed25519 and ECDSA P-256, each generated once, kept
//! with mode 0600, reused. No RSA host key (the `rsa` crate's open timing
//! advisory); clients that know neither algorithm cannot connect.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, EcdsaCurve, PrivateKey};

use super::SftpError;

/// The host key files to offer: `configured` if it names any, else the
/// Ed25519 key at `ed25519` and `ssh_host_ecdsa_key` beside it.
pub(crate) fn paths(configured: &[PathBuf], ed25519: &Path) -> Vec<PathBuf> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    let ecdsa = ed25519.with_file_name("ssh_host_ecdsa_key");
    vec![ed25519.to_path_buf(), ecdsa]
}

/// Loads every host key in `paths`, generating those that do not exist.
pub(crate) fn load_all(paths: &[PathBuf]) -> Result<Vec<PrivateKey>, SftpError> {
    paths.iter().map(|p| load_or_generate(p)).collect()
}

/// The algorithm a missing key file is generated with: ECDSA P-256 when its
/// name says `ecdsa`, Ed25519 otherwise.
fn algorithm_for(path: &Path) -> Algorithm {
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if name.contains("ecdsa") {
        Algorithm::Ecdsa { curve: EcdsaCurve::NistP256 }
    } else {
        Algorithm::Ed25519
    }
}

/// Loads the host key at `path`, or generates and stores a new one if the file
/// does not exist.
pub(crate) fn load_or_generate(path: &Path) -> Result<PrivateKey, SftpError> {
    let key_error = |detail: String| SftpError::HostKey { path: path.display().to_string(), detail };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = PrivateKey::from_openssh(&text).map_err(|e| key_error(e.to_string()))?;
            if matches!(key.algorithm(), Algorithm::Rsa { .. }) {
                return Err(key_error("RSA host keys are not supported; use Ed25519 or ECDSA P-256".to_owned()));
            }
            // Tighten a key left readable by others (e.g. restored from a backup).
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "SSH host key was readable by others; setting mode 0600");
                    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
                }
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate(path, algorithm_for(path)),
        Err(e) => Err(key_error(e.to_string())),
    }
}

fn generate(path: &Path, algorithm: Algorithm) -> Result<PrivateKey, SftpError> {
    let write_err = |source| SftpError::HostKeyWrite { path: path.display().to_string(), source };
    let key_error = |detail: String| SftpError::HostKey { path: path.display().to_string(), detail };
    let key = PrivateKey::random(&mut rand10::rng(), algorithm.clone()).map_err(|e| key_error(e.to_string()))?;
    let pem = key.to_openssh(LineEnding::LF).map_err(|e| key_error(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    // Written aside and renamed, so a crash never leaves a truncated key.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_err)?;
    file.write_all(pem.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(write_err)?;
    tracing::info!(path = %path.display(), algorithm = %algorithm, "generated a new SSH host key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_generated_host_keys_are_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ed = dir.path().join("keys/ssh_host_ed25519_key");
        let all = paths(&[], &ed);
        let first = load_all(&all).unwrap();
        assert_eq!(first[0].algorithm(), Algorithm::Ed25519);
        assert_eq!(first[1].algorithm(), Algorithm::Ecdsa { curve: EcdsaCurve::NistP256 });
        for path in &all {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        let second = load_all(&all).unwrap();
        for (a, b) in first.iter().zip(&second) {
            assert_eq!(a.public_key().key_data(), b.public_key().key_data());
        }
    }
}
