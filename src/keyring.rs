//! An account's OpenPGP keys (spec §12) between the store and their use:
//! the server key made on first use and kept with its secret parts locked
//! by the operator's passphrase (a file named in the config, generated on
//! first use), merchant keys checked before they are kept, and what opening
//! an upload or sealing a report needs. The passphrase never reaches a log.

use crate::domain::PgpRules;
use crate::openpgp::{self, KeyError, MerchantKey, Opening};
use crate::store::{PgpRole, Store, StoreError, StoredPgpKey};
use pgp::composed::{SignedPublicKey, SignedSecretKey};
use pgp::types::Password;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("while reading the PGP passphrase file {path}: {source}")]
    Passphrase { path: PathBuf, source: std::io::Error },
    #[error("the account's PGP key {fingerprint} cannot be used: {message}")]
    Unusable { fingerprint: String, message: String },
    #[error("could not make a PGP key: {0}")]
    Generate(String),
    #[error(transparent)]
    Refused(#[from] KeyError),
    #[error("the account has {max} merchant keys already, the limit; remove one first")]
    TooManyKeys { max: usize },
}

/// The store and the passphrase that unlocks the accounts' server keys.
#[derive(Clone)]
pub struct Keyring {
    store: Store,
    passphrase_file: PathBuf,
    passphrase: Arc<OnceLock<String>>,
}

/// Reads the passphrase (its file's first line), generating the file
/// (random, mode 0600) when it does not exist.
fn read_or_make_passphrase(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let line = text.lines().next().unwrap_or("").trim().to_owned();
            if line.is_empty() {
                return Err(std::io::Error::other("the file is empty"));
            }
            Ok(line)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::RngCore;
            let mut bytes = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut file) => {
                    writeln!(file, "{}", hex::encode(bytes))?;
                    file.sync_all()?;
                    read_or_make_passphrase(path)
                }
                // Another process made it first.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_or_make_passphrase(path),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

impl Keyring {
    pub fn new(store: Store, passphrase_file: PathBuf) -> Keyring {
        Keyring { store, passphrase_file, passphrase: Arc::new(OnceLock::new()) }
    }

    fn passphrase(&self) -> Result<String, KeyringError> {
        if let Some(p) = self.passphrase.get() {
            return Ok(p.clone());
        }
        let read = read_or_make_passphrase(&self.passphrase_file)
            .map_err(|source| KeyringError::Passphrase { path: self.passphrase_file.clone(), source })?;
        Ok(self.passphrase.get_or_init(|| read).clone())
    }

    /// The account's server keys, oldest first; one is made when it has none.
    pub async fn server_keys(&self, account: &str) -> Result<Vec<SignedSecretKey>, KeyringError> {
        let stored = self.stored(account, PgpRole::Server).await?;
        if !stored.is_empty() {
            return stored.iter().map(unlockable).collect();
        }
        self.init(account).await?;
        let stored = self.stored(account, PgpRole::Server).await?;
        stored.iter().map(unlockable).collect()
    }

    /// Makes a new server key for the account (the first, or the next one:
    /// the older ones still decrypt); its fingerprint.
    pub async fn init(&self, account: &str) -> Result<String, KeyringError> {
        let passphrase = self.passphrase()?;
        let avid = account.to_owned();
        let key = tokio::task::spawn_blocking(move || openpgp::generate_server_key(&avid, &passphrase))
            .await
            .map_err(|e| KeyringError::Generate(e.to_string()))?
            .map_err(KeyringError::Generate)?;
        let fingerprint = openpgp::fingerprint_hex(&key.primary_key);
        let armored = openpgp::armored_secret(&key).map_err(KeyringError::Generate)?;
        self.store.add_pgp_key(account, &fingerprint, PgpRole::Server, &armored, None).await?;
        Ok(fingerprint)
    }

    /// The public key merchants encrypt to: the account's newest server key
    /// (made on first use), armoured. After a rotation the older ones still
    /// decrypt until they are removed.
    pub async fn public_armored(&self, account: &str) -> Result<String, KeyringError> {
        let keys = self.server_keys(account).await?;
        let newest = keys.last().expect("a server key was made");
        openpgp::armored_public(&newest.to_public_key()).map_err(KeyringError::Generate)
    }

    /// Checks and keeps a merchant's public key; refused ones are never stored.
    pub async fn add_merchant_key(&self, account: &str, bytes: &[u8]) -> Result<MerchantKey, KeyringError> {
        let key = openpgp::parse_merchant_key(bytes, crate::clock::now().unix_timestamp())?;
        let current = self.stored(account, PgpRole::Merchant).await?;
        if current.len() >= openpgp::MAX_KEYS_PER_ACCOUNT && !current.iter().any(|k| k.fingerprint == key.fingerprint) {
            return Err(KeyringError::TooManyKeys { max: openpgp::MAX_KEYS_PER_ACCOUNT });
        }
        let armored = openpgp::armored_public(&key.key).map_err(KeyringError::Generate)?;
        self.store.remove_pgp_key(account, &key.fingerprint).await?;
        self.store.add_pgp_key(account, &key.fingerprint, PgpRole::Merchant, &armored, key.expires_at).await?;
        Ok(key)
    }

    pub async fn list(&self, account: &str) -> Result<Vec<StoredPgpKey>, KeyringError> {
        Ok(self.store.pgp_keys(account).await?)
    }

    async fn stored(&self, account: &str, role: PgpRole) -> Result<Vec<StoredPgpKey>, KeyringError> {
        Ok(self.store.pgp_keys(account).await?.into_iter().filter(|k| k.role == role).collect())
    }

    /// The account's merchant keys that have not expired.
    pub async fn merchant_keys(&self, account: &str) -> Result<Vec<SignedPublicKey>, KeyringError> {
        let now = crate::clock::now().unix_timestamp();
        let stored = self.stored(account, PgpRole::Merchant).await?;
        let current = stored.iter().filter(|k| k.expires_at.is_none_or(|at| at > now));
        current
            .map(|k| {
                openpgp::parse_merchant_key(k.armored.as_bytes(), now)
                    .map(|m| m.key)
                    .map_err(|e| KeyringError::Unusable { fingerprint: k.fingerprint.clone(), message: e.to_string() })
            })
            .collect()
    }

    /// Whether the account's reports will be encrypted ([`Keyring::sealing`]
    /// would give some): it says so and has a merchant key that has not
    /// expired. Reads the stored keys only (nothing is parsed or unlocked).
    pub async fn seals(&self, account: &str, rules: PgpRules) -> Result<bool, KeyringError> {
        if !rules.encrypt_reports {
            return Ok(false);
        }
        let now = crate::clock::now().unix_timestamp();
        let stored = self.stored(account, PgpRole::Merchant).await?;
        Ok(stored.iter().any(|k| k.expires_at.is_none_or(|at| at > now)))
    }

    /// What opening the account's uploads needs.
    pub async fn opening(&self, account: &str, rules: PgpRules) -> Result<Opening, KeyringError> {
        Ok(Opening {
            secret_keys: self.server_keys(account).await?,
            passphrase: Password::from(self.passphrase()?.as_str()),
            merchant_keys: self.merchant_keys(account).await?,
            require_signature: rules.require_signature,
            require_encryption: rules.require_encryption,
        })
    }

    /// What sealing the account's reports needs, when it encrypts them and
    /// has a current merchant key: the recipients, the signing key and its
    /// passphrase.
    pub async fn sealing(&self, account: &str, rules: PgpRules) -> Result<Option<Sealing>, KeyringError> {
        if !rules.encrypt_reports {
            return Ok(None);
        }
        let recipients = self.merchant_keys(account).await?;
        if recipients.is_empty() {
            return Ok(None);
        }
        let signer = self.server_keys(account).await?.into_iter().next_back().expect("a server key was made");
        Ok(Some(Sealing { recipients, signer, passphrase: self.passphrase()? }))
    }
}

/// Reports encrypted to the merchant's keys, signed by the account's.
pub struct Sealing {
    pub recipients: Vec<SignedPublicKey>,
    pub signer: SignedSecretKey,
    pub passphrase: String,
}

fn unlockable(k: &StoredPgpKey) -> Result<SignedSecretKey, KeyringError> {
    openpgp::read_secret_key(&k.armored)
        .map_err(|message| KeyringError::Unusable { fingerprint: k.fingerprint.clone(), message })
}

/// How far ahead a key's expiry is warned about.
pub const EXPIRY_WARNING_SECS: i64 = 30 * 86_400;
/// At most one warning per key in this long (cluster-wide: claimed in the
/// database).
const EXPIRY_WARNING_EVERY_SECS: i64 = 86_400;

/// Warns about every key (a merchant's, or an account's server key) that
/// expires within 30 days: a log warning and a `pgp.key_expiring` webhook
/// event, at most once per key per day whichever node checks (run at start
/// and with every retention sweep). The number of keys warned about.
pub async fn warn_expiring(store: &Store) -> Result<usize, StoreError> {
    let now = crate::clock::now().unix_timestamp();
    let mut warned = 0;
    for key in store.pgp_keys_expiring(now, now + EXPIRY_WARNING_SECS).await? {
        if !store.claim_expiry_warning(&key.account, &key.fingerprint, now, EXPIRY_WARNING_EVERY_SECS).await? {
            continue;
        }
        let days_left = (key.expires_at.unwrap_or(now) - now).max(0) / 86_400;
        tracing::warn!(account = %key.account, fingerprint = %key.fingerprint, key = key.role.as_str(), days_left,
            "an OpenPGP key expires within 30 days: have a new one added (intake pgp add-key / init)");
        crate::webhooks::key_expiring(store, &key, now).await?;
        warned += 1;
    }
    Ok(warned)
}
