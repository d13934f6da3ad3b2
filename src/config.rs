//! Configuration: defaults, then `config.toml`, then `INTAKE_*` environment
//! variables (`__` between section and key). Unknown keys fail at start.

use crate::sftp::SftpSettings;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Accounts, spool and (by default) the SQLite database live here.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; default `sqlite://<data_dir>/intake.db`.
    pub database_url: Option<String>,
    /// Jobs processed at once (round-robin, one batch at a time).
    pub workers: usize,
    /// Records per batch, at most: one transaction each (its upserts,
    /// results and the job's progress commit together).
    pub batch_size: usize,
    /// Larger uploads are rejected with `file_too_large`.
    pub max_file_bytes: u64,
    /// Files with more records are rejected with `too_many_rows`.
    pub max_rows: u64,
    /// A record (one CSV row with all its cells) over this many bytes
    /// rejects the file with `record_too_large`.
    pub max_record_bytes: usize,
    /// A header with more columns rejects the file with `too_many_columns`.
    pub max_columns: usize,
    /// A gzip upload that decompresses to more than this many times its
    /// size is rejected with `file_too_large` (a gzip bomb).
    pub max_gzip_ratio: u64,
    /// Bytes of records per batch (besides `batch_size` records).
    pub batch_max_bytes: usize,
    /// Milliseconds a batch may take before it is committed (besides its
    /// records and bytes); on SQLite, ten times that for a job alone.
    pub batch_max_millis: u64,
    /// Starts of a job's processing without progress in between (each
    /// ended by a crash) after which the job is aborted, not resumed.
    pub max_job_attempts: u32,
    /// Transient failures in a row (retried with exponential backoff up to
    /// 5 minutes) after which the job is aborted.
    pub max_job_retries: u32,
    /// Seconds an upload stays visible in /customers after it was published
    /// (at least; it stays until its report is out).
    pub keep_visible_secs: u64,
    /// Log lines as `text` or `json`.
    pub log_format: LogFormat,
    pub sftp: SftpSettings,
    /// The operations endpoint: `/metrics`, `/healthz`, `/readyz`.
    pub http: HttpSettings,
    /// The public HTTP API.
    pub api: ApiSettings,
    /// The web console, on the API's listener.
    pub console: ConsoleSettings,
    /// Completion webhooks: delivery timeout and retries.
    pub webhooks: WebhookSettings,
    /// How long uploads and reports are kept.
    pub retention: RetentionSettings,
    /// Liveness of the processes that share one database.
    pub cluster: ClusterSettings,
    /// OpenPGP: where the passphrase that locks the accounts' server keys is.
    pub pgp: PgpSettings,
    /// Accounts applied at start.
    pub accounts: Vec<AccountDecl>,
    /// SFTP users applied at start.
    pub users: Vec<UserDecl>,
}

/// `[http]`: the operations endpoint beside the SFTP server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub enabled: bool,
    pub listen: String,
    /// Label job and row metrics with the account (only with few accounts:
    /// every account adds series).
    pub account_labels: bool,
    /// Connections open at once, in all and from one address.
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    /// Seconds to send a request's header; seconds without a byte moved.
    pub header_read_timeout_secs: u64,
    pub idle_timeout_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            enabled: true,
            listen: "127.0.0.1:9180".into(),
            account_labels: false,
            max_connections: 64,
            max_connections_per_source: 16,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 30,
        }
    }
}

impl HttpSettings {
    pub fn limits(&self) -> crate::serve_http::Limits {
        crate::serve_http::Limits {
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs.max(1)),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs.max(1)),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_streams: 16,
        }
    }
}

/// `[console]`: the web console, served at `/` on the `[api]` listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    pub enabled: bool,
    /// A session unused this long ends (seconds).
    pub session_idle_secs: u64,
    /// A session ends this long after sign-in, used or not (seconds).
    pub session_max_secs: u64,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings { enabled: true, session_idle_secs: 30 * 60, session_max_secs: 12 * 3600 }
    }
}

/// `[pgp]`: the secret parts of the accounts' server keys are kept in the
/// database locked (OpenPGP's own S2K protection, AES-256) with the
/// passphrase in this file; without the file they cannot be used.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgpSettings {
    /// Default `<data_dir>/pgp_passphrase`, generated (mode 0600) on first use.
    pub passphrase_file: Option<PathBuf>,
}

/// `[api]`: the public HTTP API listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    pub enabled: bool,
    pub listen: String,
    /// PEM certificate chain and private key: TLS on (both or neither).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Connections open at once, in all and from one address.
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    /// Seconds to send a request's header (and TLS handshake); seconds a
    /// connection may move no byte.
    pub header_read_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    /// Bytes of a request's header; header fields in one request.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Bytes of a JSON request body (a bulk job's data: `max_file_bytes`).
    pub max_json_bytes: usize,
    /// Requests a second each token may make on average (0: no limit), and
    /// at once; over it: 429 with `Retry-After`. Counted per process.
    pub rate_per_token: f64,
    pub burst_per_token: u32,
    /// Seconds an open bulk job may go untouched before it is discarded
    /// with its data (0: kept).
    pub open_job_expiry_secs: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            enabled: true,
            listen: "127.0.0.1:8080".into(),
            tls_cert: None,
            tls_key: None,
            max_connections: 1024,
            max_connections_per_source: 64,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_json_bytes: 1024 * 1024,
            rate_per_token: 50.0,
            burst_per_token: 100,
            open_job_expiry_secs: 24 * 3600,
        }
    }
}

impl ApiSettings {
    pub fn limits(&self) -> crate::serve_http::Limits {
        crate::serve_http::Limits {
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs.max(1)),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs.max(1)),
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            max_streams: 100,
        }
    }
}

/// `[webhooks]`: how completion webhooks are delivered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Seconds one delivery attempt may take before it counts as failed.
    pub timeout_secs: u64,
    /// The wait before the first retry; it doubles with each failure.
    pub retry_first_secs: u64,
    /// The longest wait between two attempts.
    pub retry_max_secs: u64,
    /// Hours after which an undelivered event is given up (`failed`).
    pub give_up_hours: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings { timeout_secs: 10, retry_first_secs: 10, retry_max_secs: 3600, give_up_hours: 24 }
    }
}

/// `[cluster]`: how processes sharing one database see each other alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// This node's name among the processes sharing the database and the
    /// data directory (1–64 of `A-Z a-z 0-9 . _ -`); by default the host
    /// name and a random suffix kept in `DATA_DIR/nodes/HOST.id`.
    pub node_id: Option<String>,
    /// Seconds between two heartbeats of a process for the jobs it runs.
    pub heartbeat_secs: u64,
    /// A job whose owner has not heartbeated for this long (on the
    /// database's clock) is taken over by another process; a PostgreSQL
    /// session idle inside a transaction this long (a frozen process) is
    /// ended, so its locks never hold up the one taking over.
    pub takeover_after_secs: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings { node_id: None, heartbeat_secs: 3, takeover_after_secs: 12 }
    }
}

impl ClusterSettings {
    pub fn heartbeat(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.heartbeat_secs.max(1))
    }

    /// At least two heartbeats.
    pub fn takeover_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.takeover_after_secs.max(2 * self.heartbeat_secs.max(1)))
    }
}

/// `[retention]`: days after which files are deleted (0 = kept for ever).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Archived uploads (`archive/`).
    pub archive_days: u64,
    /// Reports (`outbox/`).
    pub outbox_days: u64,
    /// Seconds between two sweeps (one also runs at start).
    pub sweep_every_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings { archive_days: 30, outbox_days: 30, sweep_every_secs: 3600 }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountDecl {
    pub avid: String,
    pub default_region: Option<String>,
    pub encoding: Option<String>,
    pub phone_check: Option<String>,
    /// Start the CSV reports with a UTF-8 BOM (for Excel).
    #[serde(default)]
    pub report_bom: bool,
    /// OpenPGP rules (spec §12): reject plain uploads, unsigned uploads;
    /// encrypt the reports to the merchant's keys.
    #[serde(default)]
    pub pgp_require_encryption: bool,
    #[serde(default)]
    pub pgp_require_signature: bool,
    #[serde(default)]
    pub pgp_encrypt_reports: bool,
    /// The completion webhook (with `webhook_secret`); when absent, the one
    /// set with `intake account set` is kept.
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<Secret>,
}

/// A secret read from the config: never shown in `Debug`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDecl {
    pub username: String,
    pub account: String,
    /// OpenSSH public keys (authorized_keys lines).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Files holding OpenSSH public keys, relative to the config file.
    #[serde(default)]
    pub key_files: Vec<PathBuf>,
    /// A plain password (for demos) — prefer `password_hash`.
    pub password: Option<String>,
    /// An Argon2id PHC string.
    pub password_hash: Option<String>,
    /// Default: customers:create and customers:update.
    pub scopes: Option<Vec<String>>,
}

impl fmt::Debug for UserDecl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserDecl")
            .field("username", &self.username)
            .field("account", &self.account)
            .field("keys", &self.keys.len())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_hash", &self.password_hash.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            workers: 4,
            batch_size: 100_000,
            max_file_bytes: 5 * 1024 * 1024 * 1024,
            max_rows: 50_000_000,
            max_record_bytes: 1024 * 1024,
            max_columns: 1000,
            max_gzip_ratio: 100,
            batch_max_bytes: 32 * 1024 * 1024,
            batch_max_millis: 1000,
            max_job_attempts: 3,
            max_job_retries: 12,
            keep_visible_secs: 10,
            log_format: LogFormat::Text,
            sftp: SftpSettings::default(),
            http: HttpSettings::default(),
            api: ApiSettings::default(),
            console: ConsoleSettings::default(),
            webhooks: WebhookSettings::default(),
            retention: RetentionSettings::default(),
            cluster: ClusterSettings::default(),
            pgp: PgpSettings::default(),
            accounts: Vec::new(),
            users: Vec::new(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_deref().map(crate::store::redact_url))
            .field("workers", &self.workers)
            .field("batch_size", &self.batch_size)
            .field("accounts", &self.accounts)
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

/// Top-level keys the environment may set; others with the prefix are ignored
/// (so `INTAKE_TEST_*` variables of a test run never break the config).
const ENV_KEYS: [&str; 22] = [
    "data_dir",
    "database_url",
    "workers",
    "batch_size",
    "max_file_bytes",
    "max_rows",
    "max_record_bytes",
    "max_columns",
    "max_gzip_ratio",
    "batch_max_bytes",
    "batch_max_millis",
    "max_job_attempts",
    "max_job_retries",
    "keep_visible_secs",
    "log_format",
    "sftp",
    "http",
    "api",
    "webhooks",
    "retention",
    "cluster",
    "pgp",
];

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(std::path::PathBuf),
    /// A key of the wrong type, an unknown key (a typo), a malformed file.
    #[error(transparent)]
    Invalid(Box<figment::Error>),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Invalid(Box::new(e))
    }
}

impl Config {
    /// Loads defaults, then the file (if it exists, or fails if it was named
    /// explicitly and is missing), then the environment.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        if explicit && !path.exists() {
            return Err(ConfigError::Missing(path.to_path_buf()));
        }
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            .merge(Env::prefixed("INTAKE_").split("__").filter(|k| {
                let key = k.as_str().to_ascii_lowercase();
                ENV_KEYS.contains(&key.split('.').next().unwrap_or(""))
            }))
            .extract()?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(config.resolve_key_files(base))
    }

    fn resolve_key_files(mut self, base: &Path) -> Self {
        for user in &mut self.users {
            for f in &mut user.key_files {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        }
        self
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("intake.db").display()))
    }

    /// The limits every file is read within.
    pub fn file_limits(&self) -> crate::domain::FileLimits {
        crate::domain::FileLimits {
            max_file_bytes: self.max_file_bytes,
            max_rows: self.max_rows,
            max_record_bytes: self.max_record_bytes.max(1024),
            max_columns: self.max_columns.max(2),
            max_gzip_ratio: self.max_gzip_ratio.max(1),
        }
    }

    pub fn pgp_passphrase_path(&self) -> PathBuf {
        self.pgp.passphrase_file.clone().unwrap_or_else(|| self.data_dir.join("pgp_passphrase"))
    }

    pub fn host_key_path(&self) -> PathBuf {
        self.sftp.host_key.clone().unwrap_or_else(|| self.data_dir.join("ssh_host_ed25519_key"))
    }
}

#[cfg(test)]
// figment's test jail takes closures that return its (large) error.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_override_the_file_and_unrelated_ones_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                "data_dir = \"/from/file\"\nmax_rows = 7\n[sftp]\nlisten = \"127.0.0.1:1\"\n",
            )?;
            jail.set_env("INTAKE_MAX_ROWS", "4");
            jail.set_env("INTAKE_SFTP__LISTEN", "127.0.0.1:0");
            jail.set_env("INTAKE_TEST_SOMETHING", "x");
            let config = Config::load(Path::new("config.toml"), true).map_err(|e| e.to_string())?;
            assert_eq!(config.max_rows, 4);
            assert_eq!(config.data_dir, PathBuf::from("/from/file"));
            assert_eq!(config.sftp.listen, "127.0.0.1:0");
            assert_eq!(config.database_url(), "sqlite:///from/file/intake.db");
            Ok(())
        });
    }

    #[test]
    fn a_typo_in_the_config_fails_at_start() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("config.toml", "max_row = 7\n")?;
            let err = Config::load(Path::new("config.toml"), true).unwrap_err().to_string();
            assert!(err.contains("max_row"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_webhook_secret_never_shows_in_debug() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                "[[accounts]]\navid = \"acme\"\nwebhook_url = \"https://h/x\"\nwebhook_secret = \"hunter2\"\n",
            )?;
            let config = Config::load(Path::new("config.toml"), true).map_err(|e| e.to_string())?;
            assert_eq!(config.accounts[0].webhook_secret, Some(Secret("hunter2".into())));
            assert!(!format!("{config:?}").contains("hunter2"));
            Ok(())
        });
    }

    #[test]
    fn the_shipped_config_loads_with_the_api_defaults() {
        // Inside a jail: the jail's lock keeps another test's INTAKE_* variables
        // (set in its own jail) out of this process's environment meanwhile.
        figment::Jail::expect_with(|_jail| {
            let shipped = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"));
            let config = Config::load(shipped, true).map_err(|e| e.to_string())?;
            let defaults = ApiSettings::default();
            assert_eq!(config.api.listen, defaults.listen);
            assert_eq!(config.api.max_connections, defaults.max_connections);
            assert_eq!(config.api.max_json_bytes, defaults.max_json_bytes);
            assert_eq!(config.http.max_connections, HttpSettings::default().max_connections);
            // Every [sftp] key the file sets says the default, as its comments claim.
            assert_eq!(config.sftp, crate::sftp::SftpSettings::default());
            Ok(())
        });
    }

    #[test]
    fn the_database_password_never_shows_in_debug() {
        let config = Config { database_url: Some("postgres://u:hunter2@h/db".into()), ..Config::default() };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
