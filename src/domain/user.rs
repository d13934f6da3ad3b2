//! SFTP users as the rest of the system sees them. Knows nothing about SSH.

/// What an SFTP user may do, from the payments API's scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes {
    /// `customers:create`: may upload into `/customers` at all.
    pub create: bool,
    /// `customers:update`: rows whose ref exists update the customer.
    pub update: bool,
}

impl Scopes {
    /// Both scopes: the default of a login, and an operator's `intake ingest`.
    pub const ALL: Scopes = Scopes { create: true, update: true };
    /// `customers:create` alone: existing refs fail with `ref_exists`.
    pub const CREATE_ONLY: Scopes = Scopes { create: true, update: false };

    pub const CREATE: &'static str = "customers:create";
    pub const UPDATE: &'static str = "customers:update";

    /// Parses scope names such as `customers:create`; unknown names are an error.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, super::SettingError> {
        let mut scopes = Scopes::default();
        for name in names {
            match name.trim() {
                Self::CREATE => scopes.create = true,
                Self::UPDATE => scopes.update = true,
                other => return Err(super::SettingError::Scope(other.to_owned())),
            }
        }
        Ok(scopes)
    }

    /// The scope names, space-separated, as stored and shown.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.create {
            names.push(Self::CREATE);
        }
        if self.update {
            names.push(Self::UPDATE);
        }
        names
    }
}

/// An SFTP login: a username that belongs to exactly one account.
#[derive(Clone, PartialEq, Eq)]
pub struct SftpUser {
    pub username: String,
    /// The account's AVID; the user's files live under this account's root.
    pub account: super::AccountId,
    /// OpenSSH public keys, one `authorized_keys` line each.
    pub public_keys: Vec<String>,
    /// Argon2id PHC string, if the user may log in with a password.
    pub password_hash: Option<String>,
    pub scopes: Scopes,
}

impl std::fmt::Debug for SftpUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpUser")
            .field("username", &self.username)
            .field("account", &self.account)
            .field("public_keys", &self.public_keys.len())
            .field("password_hash", &self.password_hash.as_ref().map(|_| "<redacted>"))
            .field("scopes", &self.scopes)
            .finish()
    }
}
