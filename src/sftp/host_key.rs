//! The server's Ed25519 host key: generated once, kept with mode 0600, reused.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::RngCore;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;

use super::SftpError;

/// Loads the host key at `path`, or generates and stores a new one if the file
/// does not exist.
pub(crate) fn load_or_generate(path: &Path) -> Result<PrivateKey, SftpError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = PrivateKey::from_openssh(&text)
                .map_err(|e| SftpError::HostKey { path: path.display().to_string(), detail: e.to_string() })?;
            // Tighten a key left readable by others (e.g. restored from a backup).
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "SSH host key was readable by others; setting mode 0600");
                    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
                }
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate(path),
        Err(e) => Err(SftpError::HostKey { path: path.display().to_string(), detail: e.to_string() }),
    }
}

fn generate(path: &Path) -> Result<PrivateKey, SftpError> {
    let write_err = |source| SftpError::HostKeyWrite { path: path.display().to_string(), source };
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| SftpError::HostKey { path: path.display().to_string(), detail: e.to_string() })?;
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
    tracing::info!(path = %path.display(), "generated a new SSH host key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_host_key_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/ssh_host_ed25519_key");
        let first = load_or_generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = load_or_generate(&path).unwrap();
        assert_eq!(first.public_key().key_data(), second.public_key().key_data());
    }
}
