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
    /// Every host key offered, in order (`INTAKE_SFTP__HOST_KEYS`). A missing
    /// file is generated (mode 0600): ECDSA P-256 when its name contains
    /// `ecdsa`, Ed25519 otherwise. RSA host keys are refused. Empty (the
    /// default) means `host_key` and `ssh_host_ecdsa_key` beside it.
    pub host_keys: Vec<PathBuf>,
    /// Largest file a client may upload, in bytes; a write past it fails with
    /// a clear status message. Default 5 GiB.
    pub max_upload_bytes: u64,
    /// Concurrent SSH sessions per account (all its users together). Default 10.
    pub max_sessions_per_account: usize,
    /// Open files and folders per account, all its sessions together. Default 256.
    pub max_handles_per_account: usize,
    /// Channels (SFTP sessions, scp and checksum commands) open at once on one
    /// connection. Default 10.
    pub max_channels_per_connection: usize,
    /// Connections from one source IP address that have not logged in yet;
    /// logged-in sessions do not count (an office behind one NAT). Default 20.
    pub max_connections_per_source: usize,
    /// Connections not yet logged in, all sources together, as OpenSSH's
    /// `MaxStartups start:rate:full`: from `start` on, a new connection
    /// first evicts one that made least progress (no SSH identification for
    /// a second, then none begun to log in for 10 s; from the source holding
    /// most); when none may be evicted, it is dropped with probability
    /// `rate`% rising linearly to 100% at `full`. Default `"300:30:600"`,
    /// sized for hundreds of cron jobs logging in at the same minute
    /// (OpenSSH's 10:30:100 is sized for interactive logins).
    pub max_startups: String,
    /// Seconds from accept in which a connection must log in (the SSH
    /// handshake included), or it is dropped. Default 120.
    pub login_grace_secs: u64,
    /// Seconds from accept in which a connection must send its SSH
    /// identification line, or it is dropped (silent floods). Default 5.
    pub ident_timeout_secs: u64,
    /// A file a client left in /customers under a name that is never
    /// processed (a temp name such as `x.csv.filepart` or `.in.x.csv`,
    /// abandoned by a dropped connection) is removed once it is this many
    /// seconds old (by mtime) and no session has it open. Default 86400.
    pub stale_temp_secs: u64,
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
    /// Load balancers (IP addresses) whose connections start with a PROXY
    /// protocol header (v1 or v2, haproxy's `send-proxy-v2`): the client it
    /// names is the source for limits, penalties and logs. A connection from
    /// one of them without a valid header within 10 s is dropped; other
    /// addresses connect directly, without one. Default: none.
    pub proxy_protocol_from: Vec<std::net::IpAddr>,
    /// At a stop, new connections are refused at once; open sessions may go
    /// on this many seconds (an upload under way finishes), then are cut.
    /// Default 10.
    pub shutdown_drain_secs: u64,
    /// An upload (CLOSE, or RENAME onto an upload name) never replaces an
    /// earlier upload of that name the daemon has not taken yet: it waits
    /// up to this many seconds for it to be taken (in turn, per name), then
    /// is refused with a status saying so. Default 30.
    pub publish_wait_secs: u64,
    /// An upload cut by a dropped connection (or left open by a session that
    /// ended without CLOSE) is kept, hidden, this many seconds after its last
    /// byte, for the same account to resume (OpenSSH `reput`/`put -a`, lftp
    /// `put -c`, WinSCP's `.filepart`); then removed. 0: a cut upload is
    /// discarded. Default 86400.
    pub resume_keep_secs: u64,
    /// Cut uploads kept per account; beyond it the oldest is removed. Default 10.
    pub max_partial_uploads_per_account: usize,
    /// Bytes of cut uploads kept per account; beyond it the oldest are
    /// removed. Default 10 GiB.
    pub max_partial_bytes_per_account: u64,
    /// Set by the daemon from `[cluster] node_id` (not read from the file):
    /// names this node's upload temps in a data directory nodes share, so a
    /// node starting cleans up only its own.
    #[serde(skip)]
    pub node_id: String,
}

impl Default for SftpSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:2222".to_owned(),
            host_key: None,
            host_keys: Vec::new(),
            max_upload_bytes: 5 * 1024 * 1024 * 1024,
            max_sessions_per_account: 10,
            max_handles_per_account: 256,
            max_channels_per_connection: 10,
            max_connections_per_source: 20,
            max_startups: "300:30:600".to_owned(),
            login_grace_secs: 120,
            ident_timeout_secs: 5,
            stale_temp_secs: 24 * 3600,
            allow_ssh_rsa_sha1: false,
            idle_timeout_secs: 600,
            keepalive_secs: 30,
            max_login_failures_per_source: 10,
            login_penalty_secs: 300,
            auth_rejection_millis: 1000,
            max_concurrent_password_checks: 2,
            proxy_protocol_from: Vec::new(),
            shutdown_drain_secs: 10,
            publish_wait_secs: 30,
            resume_keep_secs: 24 * 3600,
            max_partial_uploads_per_account: 10,
            max_partial_bytes_per_account: 10 * 1024 * 1024 * 1024,
            node_id: String::new(),
        }
    }
}

/// OpenSSH's `MaxStartups start:rate:full`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MaxStartups {
    pub(crate) start: usize,
    pub(crate) rate: u32,
    pub(crate) full: usize,
}

impl MaxStartups {
    /// Parses `"10:30:100"` or a single number (`"10"`: refuse from 10 on).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.trim().split(':').collect();
        let (start, rate, full) = match parts.as_slice() {
            [n] => (n.parse().ok()?, 100, n.parse().ok()?),
            [s, r, f] => (s.parse().ok()?, r.parse().ok()?, f.parse().ok()?),
            _ => return None,
        };
        (start >= 1 && start <= full && rate <= 100).then_some(Self { start, rate, full })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_startups_parses_like_openssh() {
        assert_eq!(MaxStartups::parse("10:30:100"), Some(MaxStartups { start: 10, rate: 30, full: 100 }));
        assert_eq!(MaxStartups::parse("5"), Some(MaxStartups { start: 5, rate: 100, full: 5 }));
        for bad in ["", "a:b:c", "10:30", "0:30:100", "20:30:10", "10:101:100"] {
            assert_eq!(MaxStartups::parse(bad), None, "{bad:?}");
        }
    }
}
