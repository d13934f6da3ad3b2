//! The `[sftp]` configuration section.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[sftp]` config section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftpSettings {
    /// Run the SFTP server at all. Default `true`.
    pub enabled: bool,
    /// Address to listen on (`INTAKE_SFTP__LISTEN`). Default `127.0.0.1:2222`.
    pub listen: String,
    /// Ed25519 host key file (`INTAKE_SFTP__HOST_KEY`); generated (mode 0600)
    /// on first start. `None` means `<data_dir>/ssh_host_ed25519_key`.
    pub host_key: Option<PathBuf>,
    /// Largest file a client may upload, in bytes; a write past it fails with
    /// a clear status message. Default 5 GiB.
    pub max_upload_bytes: u64,
    /// Concurrent SSH sessions per account (all its users together). Default 10.
    pub max_sessions_per_account: usize,
    /// Concurrent TCP connections from one source IP address. Default 20.
    pub max_connections_per_source: usize,
    /// Accept `ssh-rsa` (RSA with SHA-1) user-key signatures, for old libssh2
    /// clients. OpenSSH refuses them since 8.8. Default `false`.
    pub allow_ssh_rsa_sha1: bool,
    /// Close a connection with no traffic for this many seconds. Default 600.
    pub idle_timeout_secs: u64,
    /// Send an SSH keepalive after this many quiet seconds; a peer that misses
    /// three in a row is dropped. 0 disables. Default 30.
    pub keepalive_secs: u64,
    /// Failed logins from one source address before it is refused. Default 10.
    pub max_login_failures_per_source: u32,
    /// How long a source that reached `max_login_failures_per_source` is
    /// refused, and the window in which failures are counted, in seconds.
    /// Default 300.
    pub login_penalty_secs: u64,
    /// Minimum time a rejected login attempt takes, in milliseconds, so that
    /// timing tells nothing about why. Default 1000.
    pub auth_rejection_millis: u64,
    /// Password (Argon2id) verifications run at once; more wait their turn.
    /// Default 2.
    pub max_concurrent_password_checks: usize,
}

impl Default for SftpSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:2222".to_owned(),
            host_key: None,
            max_upload_bytes: 5 * 1024 * 1024 * 1024,
            max_sessions_per_account: 10,
            max_connections_per_source: 20,
            allow_ssh_rsa_sha1: false,
            idle_timeout_secs: 600,
            keepalive_secs: 30,
            max_login_failures_per_source: 10,
            login_penalty_secs: 300,
            auth_rejection_millis: 1000,
            max_concurrent_password_checks: 2,
        }
    }
}
