//! Embedded SFTP server: the merchants' only way in.
//!
//! Owns SSH login (public keys, Argon2id passwords, per-source penalties,
//! MaxStartups, login grace), the per-account jail (`/customers`, `/outbox`,
//! `/archive`), the atomic publish of uploads (hidden temp file, renamed on
//! close; a cut upload kept hidden for resuming), legacy `scp` and checksum commands over exec (parsed in Rust, no
//! shell), and the sweeping of client temp files left behind. Knows nothing about CSV,
//! jobs or the database: users come through [`UserDirectory`], and the only
//! thing it hands to the rest of the system is a complete file appearing under
//! its final name in `<accounts_root>/<AVID>/customers/`.

mod auth;
mod config;
mod exec;
mod fs;
mod guard;
mod host_key;
mod jail;
mod partial;
mod proxy;
mod publish;
mod server;

pub use auth::{authorized_keys, hash_password, read_authorized_keys, KeyFileError};
pub use config::SftpSettings;
pub use server::SftpServer;

pub use crate::mailbox::UPLOAD_TEMP_PREFIX;
use std::net::IpAddr;

/// Why the user directory could not answer (the database is unreachable):
/// the login is refused and the cause logged.
pub type DirectoryError = Box<dyn std::error::Error + Send + Sync>;

/// Where the SFTP server looks users up; the daemon implements it over the database.
///
/// Called on every login attempt, so users and keys added while the server
/// runs work at once.
#[async_trait::async_trait]
pub trait UserDirectory: Send + Sync + 'static {
    async fn find_user(&self, username: &str) -> Result<Option<crate::domain::user::SftpUser>, DirectoryError>;

    /// Counts a failed login of `source` for every node sharing this
    /// directory; `Some(refused now)`, or `None` when failures are kept per
    /// process (the default: the server counts them in memory either way).
    async fn record_login_failure(&self, _source: IpAddr, _limit: LoginLimit) -> Result<Option<bool>, DirectoryError> {
        Ok(None)
    }

    /// Whether another node has refused `source`; `None` as above.
    async fn login_refused(&self, _source: IpAddr, _limit: LoginLimit) -> Result<Option<bool>, DirectoryError> {
        Ok(None)
    }

    /// An account's mapping profiles as (name, text), by name: the
    /// `/mappings` folder's listing.
    async fn list_mappings(&self, _account: &str) -> anyhow::Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    /// Checks and stores a profile uploaded into `/mappings`; `Ok(Err(why))`
    /// when it is refused (the line and key, said to the client).
    async fn put_mapping(&self, _account: &str, _name: &str, _text: &[u8]) -> anyhow::Result<Result<(), String>> {
        Ok(Err("mapping profiles are not kept by this server".to_owned()))
    }

    /// Removes a profile; whether there was one.
    async fn remove_mapping(&self, _account: &str, _name: &str) -> anyhow::Result<bool> {
        Ok(false)
    }

    /// The account's own OpenPGP public key, armoured (made on first use):
    /// `/keys/intake.asc`.
    async fn account_pgp_key(&self, _account: &str) -> anyhow::Result<Option<String>> {
        Ok(None)
    }

    /// The merchant's OpenPGP public keys as (fingerprint, armoured), the
    /// rest of `/keys`'s listing.
    async fn list_pgp_keys(&self, _account: &str) -> anyhow::Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    /// Checks and keeps a key uploaded into `/keys`: its fingerprint, or
    /// `Ok(Err(why))` when it is refused (a secret key, expired, revoked).
    async fn put_pgp_key(&self, _account: &str, _bytes: &[u8]) -> anyhow::Result<Result<String, String>> {
        Ok(Err("OpenPGP keys are not kept by this server".to_owned()))
    }

    /// Removes a merchant key; whether there was one.
    async fn remove_pgp_key(&self, _account: &str, _fingerprint: &str) -> anyhow::Result<bool> {
        Ok(false)
    }
}

/// Failed logins a source may make within `window` before it is refused for
/// a whole `window` (`[sftp] max_login_failures_per_source`, `login_penalty_secs`).
#[derive(Debug, Clone, Copy)]
pub struct LoginLimit {
    pub max_failures: u32,
    pub window: std::time::Duration,
}

/// Errors of the SFTP front-end that reach its caller (start-up problems).
/// Per-request errors never leave a session: they become SFTP status replies.
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    #[error("cannot bind the SFTP listener on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot read the SSH host key {path}: {detail}")]
    HostKey { path: String, detail: String },
    #[error("cannot write the SSH host key {path}: {source}")]
    HostKeyWrite { path: String, source: std::io::Error },
    #[error("cannot prepare the accounts directory {path}: {source}")]
    AccountsRoot { path: String, source: std::io::Error },
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    #[error("invalid [sftp] setting: {0}")]
    Config(String),
}

/// The jail's resolution of a client path (the path as the client sees it),
/// for the fuzz targets and property tests; `None` when it is refused.
#[doc(hidden)]
pub fn resolve_for_fuzzing(path: &str) -> Option<String> {
    jail::resolve(path).ok().map(|v| v.display)
}
