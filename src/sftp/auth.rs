//! Credentials: Argon2id password hashes and OpenSSH `authorized_keys` lines.
//! Never logs a password or a hash.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use russh::keys::PublicKey;
use tokio::sync::Semaphore;

use super::SftpError;

/// Argon2id PHC string for a password (used by `intake user add --password-stdin`).
pub fn hash_password(password: &str) -> Result<String, SftpError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| SftpError::PasswordHash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| SftpError::PasswordHash(e.to_string()))
}

/// Verifies passwords off the async runtime, a bounded number at a time.
pub(crate) struct PasswordChecker {
    permits: Semaphore,
}

/// Hash compared against when the user is unknown or has no password, so that
/// such a login costs as much as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut random);
        hash_password(&format!("{random:?}")).unwrap_or_default()
    })
}

impl PasswordChecker {
    pub(crate) fn new(max_concurrent: usize) -> Arc<Self> {
        Arc::new(Self { permits: Semaphore::new(max_concurrent.max(1)) })
    }

    /// True if `password` matches `hash`. `None` (unknown user, or no
    /// password set) does the same work and returns false.
    pub(crate) async fn verify(&self, password: &str, hash: Option<&str>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let password = password.to_owned();
        let (hash, real) = match hash {
            Some(h) => (h.to_owned(), true),
            None => (String::new(), false),
        };
        tokio::task::spawn_blocking(move || {
            let hash = if real { hash.as_str() } else { decoy_hash() };
            let ok = match PasswordHash::new(hash) {
                Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
                Err(_) => {
                    tracing::error!("a stored password hash is not a valid PHC string");
                    false
                }
            };
            ok && real
        })
        .await
        .unwrap_or(false)
    }
}

/// Parses one `authorized_keys` line: `[options] keytype base64 [comment]`.
/// Blank lines and comments give `None`.
pub(crate) fn parse_authorized_key(line: &str) -> Option<PublicKey> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    if let Ok(key) = PublicKey::from_openssh(line) {
        return Some(key);
    }
    // Leading options (`from="..."`, `no-pty`): try from each later field.
    let mut rest = line;
    while let Some(idx) = rest.find(char::is_whitespace) {
        rest = rest[idx..].trim_start();
        if let Ok(key) = PublicKey::from_openssh(rest) {
            return Some(key);
        }
    }
    None
}

/// Why a set of `authorized_keys` lines cannot be a user's keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("while reading the key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{origin}, line {line}, is not an OpenSSH public key (an authorized_keys line)")]
    NotAKey { origin: String, line: usize },
    #[error("{origin} holds no public key")]
    Empty { origin: String },
}

/// The keys of `authorized_keys` text (`origin` names it in errors): every
/// line that is not blank or a comment must be a key, options allowed.
pub fn authorized_keys(text: &str, origin: &str) -> Result<Vec<String>, KeyFileError> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim().starts_with('#')) {
        if parse_authorized_key(line).is_none() {
            return Err(KeyFileError::NotAKey { origin: origin.to_owned(), line: i + 1 });
        }
        keys.push(line.trim().to_owned());
    }
    if keys.is_empty() {
        return Err(KeyFileError::Empty { origin: origin.to_owned() });
    }
    Ok(keys)
}

/// The keys of an `authorized_keys` file.
pub fn read_authorized_keys(path: &std::path::Path) -> Result<Vec<String>, KeyFileError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read { path: origin.clone(), source })?;
    authorized_keys(&text, &origin)
}

/// Whether `offered` is one of `authorized` (`authorized_keys` lines).
pub(crate) fn key_is_authorized(authorized: &[String], offered: &PublicKey) -> bool {
    authorized
        .iter()
        .flat_map(|entry| entry.lines())
        .filter_map(parse_authorized_key)
        .any(|key| key.key_data() == offered.key_data())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti foo@bar.com";

    #[test]
    fn a_key_file_takes_options_comments_and_blank_lines_and_nothing_else() {
        let text = format!("# keys\n\n{ED25519}\nno-pty {ED25519}\n");
        assert_eq!(authorized_keys(&text, "f").unwrap().len(), 2);
        let bad = format!("{ED25519}\nssh-ed25519 notbase64\n");
        assert!(matches!(authorized_keys(&bad, "f"), Err(KeyFileError::NotAKey { line: 2, .. })));
        assert!(matches!(authorized_keys("# none\n", "f"), Err(KeyFileError::Empty { .. })));
    }

    #[test]
    fn an_authorized_keys_line_parses_with_or_without_options() {
        assert!(parse_authorized_key(ED25519).is_some());
        assert!(parse_authorized_key(&format!("no-pty,from=\"10.0.0.1\" {ED25519}")).is_some());
        assert!(parse_authorized_key("# comment").is_none());
        assert!(parse_authorized_key("ssh-ed25519 garbage").is_none());
    }

    #[test]
    fn a_key_matches_only_its_own_line() {
        let key = parse_authorized_key(ED25519).unwrap();
        assert!(key_is_authorized(&[ED25519.to_owned()], &key));
        assert!(!key_is_authorized(&[], &key));
    }

    #[tokio::test]
    async fn a_password_verifies_against_its_hash_only() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let checker = PasswordChecker::new(1);
        assert!(checker.verify("correct horse", Some(&hash)).await);
        assert!(!checker.verify("wrong", Some(&hash)).await);
        assert!(!checker.verify("correct horse", None).await);
    }
}
