//! What operators do to accounts, users and tokens, one function each, called
//! by both the CLI (`intake account|user|token ...`) and the console's
//! operator screens, so that both validate and act alike.

use crate::domain::user::{Scopes, SftpUser};
use crate::domain::{AccountId, AccountSettings};
use crate::mailbox::Layout;
use crate::store::{PrincipalKind, Store, StoreError};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// Something given is not acceptable; the message says what (safe to show).
    #[error("{0}")]
    Invalid(String),
    /// There is no such account, user or token (the message names it).
    #[error("no {0}")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("while creating the account's folders: {0}")]
    Folders(std::io::Error),
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(what) => ManageError::AlreadyExists(what),
            StoreError::NotFound(what) => ManageError::NotFound(what),
            other => ManageError::Store(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, ManageError>;

/// An account's AVID as `intake account add` takes it.
pub fn parse_avid(raw: &str) -> Result<AccountId> {
    AccountId::parse(raw).map_err(|e| ManageError::Invalid(e.to_string()))
}

/// Creates an account with these settings and its folders under `data_dir`:
/// the folders first (making them again is harmless), so that an account is
/// never recorded without them.
pub async fn create_account(store: &Store, data_dir: &Path, settings: &AccountSettings) -> Result<()> {
    Layout::new(data_dir).ensure_account(settings.avid.as_str()).map_err(ManageError::Folders)?;
    store.add_account(settings).await?;
    Ok(())
}

/// A new user's name: not empty, at most 256 characters, no spaces or
/// control characters (it is an SFTP login and a console username).
pub fn check_username(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 256 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ManageError::Invalid(
            "a username is 1 to 256 characters, without spaces or control characters".into(),
        ));
    }
    Ok(())
}

/// An Argon2id hash of a password, off the async runtime.
pub async fn hash_password(password: &str) -> Result<String> {
    if password.is_empty() {
        return Err(ManageError::Invalid("the password is empty".into()));
    }
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || crate::sftp::hash_password(&password))
        .await
        .map_err(|e| ManageError::Hash(e.to_string()))?
        .map_err(|e| ManageError::Hash(e.to_string()))
}

/// A new user as `intake user add` makes it.
pub struct NewUser<'a> {
    pub username: &'a str,
    pub account: &'a str,
    pub public_keys: Vec<String>,
    pub password: Option<&'a str>,
    /// None: the default, every scope.
    pub scopes: Option<Scopes>,
}

/// Adds a user to an existing account; it needs a key or a password.
pub async fn create_user(store: &Store, new: NewUser<'_>) -> Result<SftpUser> {
    check_username(new.username)?;
    let account = parse_avid(new.account)?;
    let password_hash = match new.password {
        Some(p) => Some(hash_password(p).await?),
        None => None,
    };
    if new.public_keys.is_empty() && password_hash.is_none() {
        return Err(ManageError::Invalid("give the user a way to log in: a key and/or a password".into()));
    }
    let user = SftpUser {
        username: new.username.to_owned(),
        account,
        public_keys: new.public_keys,
        password_hash,
        scopes: new.scopes.unwrap_or(Scopes::ALL),
    };
    store.add_user(&user).await?;
    Ok(user)
}

/// Sets a user's password (SFTP and console); the user's console sessions
/// end. How many ended.
pub async fn set_password(store: &Store, username: &str, password: &str) -> Result<u64> {
    let hash = hash_password(password).await?;
    if !store.set_user_password(username, &hash).await? {
        return Err(ManageError::NotFound(format!("user `{username}`")));
    }
    Ok(store.delete_sessions_of(PrincipalKind::User, username).await?)
}

/// A password to give a user once: 24 characters from a 62-letter
/// alphabet (about 143 bits).
pub fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..24).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

/// Disables (or enables) a user: disabled, it cannot sign in over SFTP or
/// to the console, its API tokens are refused and its console sessions end.
pub async fn set_user_disabled(store: &Store, username: &str, disabled: bool) -> Result<()> {
    if !store.set_user_disabled(username, disabled).await? {
        return Err(ManageError::NotFound(format!("user `{username}`")));
    }
    if disabled {
        store.delete_sessions_of(PrincipalKind::User, username).await?;
    }
    Ok(())
}

/// Disables (or enables) an account: every user of a disabled account is
/// refused as a disabled user is, and their console sessions end.
pub async fn set_account_disabled(store: &Store, avid: &str, disabled: bool) -> Result<()> {
    if !store.set_account_disabled(avid, disabled).await? {
        return Err(ManageError::NotFound(format!("account `{avid}`")));
    }
    if disabled {
        if let Some((_, users)) = store.account_users(avid).await? {
            for u in users {
                store.delete_sessions_of(PrincipalKind::User, &u.user.username).await?;
            }
        }
    }
    Ok(())
}

/// Revokes a token; with `account`, only one of that account's (another's
/// is as if it did not exist).
pub async fn revoke_token(store: &Store, account: Option<&str>, token_id: &str) -> Result<()> {
    if let Some(avid) = account {
        if !store.list_tokens(Some(avid)).await?.iter().any(|t| t.token_id == token_id) {
            return Err(ManageError::NotFound(format!("token {token_id}")));
        }
    }
    if !store.revoke_token(token_id).await? {
        return Err(ManageError::NotFound(format!("token {token_id}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_and_generated_passwords() {
        assert!(check_username("acme-ops").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("a b").is_err());
        assert!(check_username("a\u{7}").is_err());
        assert!(check_username(&"x".repeat(257)).is_err());
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
